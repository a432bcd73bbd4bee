// -----------------------------------------------------------------------------
// File: storage/metadata_pickle.h
// -----------------------------------------------------------------------------
//
// The `.metadata` file of a PyTorch DCP checkpoint: a pickle of
// `torch.distributed.checkpoint.metadata.Metadata` (docs/format.md §4),
// converted to and from `dcp::Metadata` (core/metadata.h).
//
// Encoding writes what PyTorch 2.6 and newer unpickle (§4.5, §4.6):
//   * protocol 2, GLOBAL opcodes, no frames; each distinct str and global
//     written once and referenced with BINGET / LONG_BINGET after that
//     (`PickleWriterOptions::memoize`);
//   * dataclasses as `GLOBAL cls, EMPTY_TUPLE, NEWOBJ, {state}, BUILD`, with
//     the state keys in PyTorch's order (§4.4); `BytesStorageMetadata` has no
//     state and no BUILD;
//   * `TensorProperties` state as the 5-tuple (dtype global `torch.<name>`,
//     `torch.serialization._get_layout("torch.strided")`, requires_grad,
//     `_MEM_FORMAT_ENCODING(<int>)`, pin_memory);
//   * `torch.Size` as `torch.Size((dims...))`;
//   * `MetadataIndex` state {fqn, index[, offset]} (offset only if present);
//   * `_StorageInfo` (module `torch.distributed.checkpoint.filesystem`) state
//     {relative_path, offset, length};
//   * `StorageMeta` state {checkpoint_id, save_id, load_id[, modules]} with
//     `checkpoint_id` a plain str (or None), `modules` only when non-empty;
//   * `Metadata` state {state_dict_metadata, planner_data, storage_data,
//     storage_meta[, version]}: `planner_data` is {fqn: tuple path},
//     `storage_meta` is None when absent, `version` only when set.
// std::map order gives the entry order, so the output is deterministic.
//
// Decoding accepts what PyTorch 2.4 through the newest versions write (§4.7):
// protocols 2 to 5 with frames and memo; missing state keys take the Python
// defaults and unknown ones are ignored; both `_MEM_FORMAT_ENCODING` and
// `MEM_FORMAT_ENCODING`, and the pre-2.3
// `torch.distributed._shard.sharded_tensor.metadata` `TensorProperties` /
// `MEM_FORMAT_ENCODING`; `StorageMeta.checkpoint_id` as str, None, or a
// `pathlib` / `pathlib._local` `PosixPath` / `WindowsPath` (and the Pure*
// variants), whose parts are joined into a path string (Python 3.13 pickles
// the raw string, older Pythons the parts); a missing `storage_meta` (before
// 2.4); `_StorageInfo` with or without `transform_descriptors` (None or
// empty). Where the Python dict of a pickle would keep the last value of a
// repeated key, so does decoding.
//
// Shapes dcp::Metadata cannot hold:
//   * `planner_data` that is not a dict (None, or a custom planner's object)
//     decodes as empty: loading does not need it. A dict whose values are not
//     tuple paths of str/int is an error.
//   * `storage_data` that is not a dict of `MetadataIndex` -> `_StorageInfo`
//     (a custom storage's layout) is an error; None decodes as empty.
//
// Errors:
//   DataLoss         malformed or truncated pickle, trailing bytes after
//                    STOP, or a value of the wrong type where the schema
//                    needs a specific one (messages give the field path, e.g.
//                    `state_dict_metadata["w"].chunks[1].offsets`, and the
//                    pickle byte offset)
//   InvalidArgument  well-formed but unsupported: a global outside the
//                    accepted set (named), an unknown dtype (named), a layout
//                    other than torch.strided, storage transforms, custom
//                    storage_data; when encoding, a dtype without a PyTorch
//                    name, a non-strided layout, an invalid memory format or
//                    a string that is not UTF-8
//   ResourceExhausted  the pickle nests deeper than `DecodeLimits::max_depth`,
//                    or decodes to more than its budget
//                    (`DecodeLimits::BudgetFor` the pickle's size, by
//                    default 64 bytes per input byte + 64 KiB): the
//                    pickle's decoded size (storage/pickle.h, "Resource
//                    bounds") or the bytes the conversion copies, counting
//                    every string (an fqn, a path) at every reference and
//                    every chunk, index and entry it creates. Pickles
//                    PyTorch or dcp write reference each string a few times
//                    and stay far below it; a `.metadata` whose 20,000
//                    entries all name one memoized 1 MiB key does not
//                    ("... decodes to more than its budget of ... bytes").
//                    The limit holds memory to about the budget.
//
// Thread safety: free functions without shared state.
#ifndef DCP_STORAGE_METADATA_PICKLE_H_
#define DCP_STORAGE_METADATA_PICKLE_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/metadata.h"
#include "storage/pickle.h"

namespace dcp {

// The `.metadata` pickle of `metadata`, loadable by PyTorch 2.6 and newer.
absl::StatusOr<std::string> EncodeMetadataPickle(const Metadata& metadata);

// Parses a `.metadata` pickle written by PyTorch (2.4 or newer, and older
// files where noted above) or by EncodeMetadataPickle, within `limits`.
absl::StatusOr<Metadata> DecodeMetadataPickle(absl::string_view bytes,
                                              const DecodeLimits& limits = {});

}  // namespace dcp

#endif  // DCP_STORAGE_METADATA_PICKLE_H_
