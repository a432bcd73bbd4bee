// -----------------------------------------------------------------------------
// File: storage/torch_save.h
// -----------------------------------------------------------------------------
//
// Whole `torch.save` files of nested state dicts: what PyTorch's
// `dcp_to_torch_save` writes and `torch_save_to_dcp` reads, in both
// directions between dcp's `StateDict` and Python.
//
//   DCP_RETURN_IF_ERROR(WriteTorchSave(state_dict, "/tmp/model.pt"));
//   // python: sd = torch.load("/tmp/model.pt")   (weights_only=True is fine)
//   DCP_ASSIGN_OR_RETURN(StateDict back, ReadTorchSave("/tmp/model.pt"));
//
// Writing. One zip archive (storage/zip.h: stored entries, 64-byte aligned
// data, ZIP64 end records) with
//   archive/data.pkl        protocol-2 pickle of the nested structure
//   archive/byteorder       "little"
//   archive/data/<k>        one entry per tensor storage, k = 0, 1, ...
//   archive/version         "3\n"
//   archive/.data/serialization_id
// data.pkl holds dicts (plain `dict`s, keys in insertion order), lists,
// None/bool/int/float/str/bytes, and for each tensor
// `torch._utils._rebuild_tensor_v2(PERSID(("storage", torch.<X>Storage,
// "<k>", "cpu", <numel>)), offset, size, stride, False, OrderedDict())`
// (`_rebuild_tensor_v3` with an UntypedStorage for complex32, as torch does).
// Only globals that torch.load's weights-only unpickler accepts are used.
// A CPU tensor whose storage holds exactly its elements is saved as it is,
// strides included, and tensors that share such a storage share one entry;
// any other tensor (a view into a larger storage, an expanded or conjugate
// tensor, a non-CPU tensor) is first copied into a fresh contiguous tensor,
// as torch 2.6 does. Tensor bytes go from tensor memory to the file without
// an intermediate copy. The file is written as `<path>.tmp` and renamed
// over `path` once complete, so `path` never holds a partial file. Output
// is deterministic: the same state dict gives the same bytes.
//
// Reading. Accepts files written here and by Python's torch.save (zip
// format, any top-level directory name, data descriptors, memoized
// pickles): dicts and collections.OrderedDicts, lists (read as `List`s)
// and tuples (as `Tuple`s), None/bool/int/float/str/bytes, tensors
// (`_rebuild_tensor_v2` /
// `_v3`, any sizes, strides and storage offsets, storages shared between
// tensors) and `nn.Parameter`s (read as plain tensors). Every tensor is
// returned as a new contiguous CPU tensor (storage sharing is not kept).
// Dict keys must be str or int; int keys become their decimal strings, as
// in storage/torch_record.h (both convert values with
// storage/value_pickle.h). Peak memory is about the size of the tensors
// read plus the largest storage's bytes, and the tensors read total at
// most the decoded-size budget (`TorchSaveReadOptions::decode_limits`, 64
// times the file's size + 64 KiB by default): torch.save keeps an expanded
// tensor (stride 0) with its small storage, and every tensor read is
// materialised, so a few stored bytes cannot demand gigabytes.
//
// Errors:
//   InvalidArgument  writing: a `ShardedTensor` (unshard it first),
//                    unsupported tensors (sparse, quantized), invalid UTF-8;
//                    reading: a top-level object that is not a dict
//                    (ReadTorchSave; ReadTorchSaveValue accepts any)
//   DataLoss         reading: malformed zip, pickle or tensor layout, a
//                    missing storage entry, CRC mismatch (when verifying)
//   ResourceExhausted reading: data.pkl nests deeper than
//                    `decode_limits.max_depth`, or reading would allocate
//                    more than the decoded-size budget: shared (memoized)
//                    strings or tensors referenced too often, expanded
//                    (stride 0) tensors far larger than the file ("torch.save
//                    file at obj[3]: torch.save file decodes to more than
//                    its budget of ... bytes")
//   Unimplemented    reading: well-formed contents dcp does not represent
//                    (sets, ints beyond int64, arbitrary Python objects,
//                    quantized or sparse tensors, legacy non-zip files,
//                    big-endian files); messages name the object's path,
//                    e.g. `obj["optim"]["state"][0]`
//   File-system errors (NotFound, ...) as storage/file_system.h.
//
// Thread safety: free functions; safe to call concurrently on different
// files.
#ifndef DCP_STORAGE_TORCH_SAVE_H_
#define DCP_STORAGE_TORCH_SAVE_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/state_dict.h"
#include "storage/file_system.h"
#include "storage/pickle.h"

namespace dcp {

struct TorchSaveWriteOptions {
  // fsync the file (and its directory after the rename).
  bool sync = true;
};

// Writes `state_dict` as one torch.save file at `path` of `fs`.
absl::Status WriteTorchSave(const StateDict& state_dict, FileSystem& fs,
                            absl::string_view path,
                            const TorchSaveWriteOptions& options = {});
// The same on the local (POSIX) file system.
absl::Status WriteTorchSave(const StateDict& state_dict,
                            absl::string_view path,
                            const TorchSaveWriteOptions& options = {});
// The whole file in memory (for tests and small state dicts).
absl::StatusOr<std::string> SerializeTorchSave(const StateDict& state_dict);

struct TorchSaveReadOptions {
  // Check each storage entry's CRC-32 against the zip directory.
  bool verify_crc = true;
  // Nesting depth of data.pkl and the decoded-size budget, proportional to
  // the file's size (storage/pickle.h): what reading allocates (values,
  // string copies, and each tensor at every reference to it) may not
  // exceed `decode_limits.BudgetFor(file size)`, 64 bytes per file byte
  // + 64 KiB by default.
  DecodeLimits decode_limits;
};

// Reads a torch.save file whose top-level object is a dict.
absl::StatusOr<StateDict> ReadTorchSave(
    FileSystem& fs, absl::string_view path,
    const TorchSaveReadOptions& options = {});
absl::StatusOr<StateDict> ReadTorchSave(
    absl::string_view path, const TorchSaveReadOptions& options = {});
// From the file's bytes in memory.
absl::StatusOr<StateDict> ParseTorchSave(
    absl::string_view bytes, const TorchSaveReadOptions& options = {});

// Like ReadTorchSave, for any top-level object (a tensor, a list, ...).
absl::StatusOr<Value> ReadTorchSaveValue(
    FileSystem& fs, absl::string_view path,
    const TorchSaveReadOptions& options = {});
absl::StatusOr<Value> ParseTorchSaveValue(
    absl::string_view bytes, const TorchSaveReadOptions& options = {});

}  // namespace dcp

#endif  // DCP_STORAGE_TORCH_SAVE_H_
