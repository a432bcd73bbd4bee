// Pieces of torch's tensor pickling shared by storage/torch_record.cc and
// storage/torch_save.cc: the dtype table (dtype <-> legacy storage class <->
// torch dtype name) and the writer of `torch._utils._rebuild_tensor_v2/_v3`
// calls with a persistent-id storage.
//
// Internal to //storage; not a public API.
//
// Thread safety: all functions are thread-compatible and touch only their
// arguments; the table is immutable.

#ifndef DCP_STORAGE_TORCH_PICKLE_H_
#define DCP_STORAGE_TORCH_PICKLE_H_

#include <c10/core/ScalarType.h>
#include <c10/util/ArrayRef.h>

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "storage/pickle.h"

namespace dcp {
namespace torch_pickle_internal {

struct DtypeSpec {
  c10::ScalarType type;
  // The legacy storage class torch pickles for the dtype (`torch.<class>`),
  // or null if torch uses UntypedStorage and `_rebuild_tensor_v3`.
  const char* storage_class;
  // `torch.<name>`, as torch.dtype pickles itself.
  const char* name;
};

// The dtypes torch.save files may hold, or null if `type` is not one.
const DtypeSpec* FindDtype(c10::ScalarType type);

// The dtype whose legacy storage class is `torch.<storage_class>`, or null.
const DtypeSpec* FindDtypeByStorageClass(absl::string_view storage_class);

// The dtype named `torch.<name>` (metadata.h's DtypeFromName names, aliases
// included), or null if the name is unknown or not in the table.
const DtypeSpec* FindDtypeByName(absl::string_view name);

// Writes `torch._utils._rebuild_tensor_v2(...)` (or `_v3` for dtypes without
// a storage class) REDUCE: storage `('storage', <class>, storage_key, 'cpu',
// storage_numel)` as a BINPERSID, then offset, sizes, strides,
// requires_grad=False, an empty OrderedDict of hooks[, the dtype]. For `_v3`,
// `storage_numel` is the storage size in bytes.
void WriteRebuildTensor(PickleWriter& w, absl::string_view storage_key,
                        const DtypeSpec& dtype, int64_t storage_numel,
                        int64_t storage_offset, c10::IntArrayRef sizes,
                        c10::IntArrayRef strides);

// Paths of values in error messages (`obj["optim"][3]`) stay short however
// long the keys and deep the nesting (each level holds its own path, so
// full paths would grow as depth times key length): a key is cut at 64
// bytes, a path at about 1 KiB (ending in "...").
//
// `path` followed by `segment`, cut.
std::string ChildValuePath(const std::string& path, absl::string_view segment);
// `path` followed by `["key"]` (or `[key]` for an int key), the key cut
// and C-escaped.
std::string KeyValuePath(const std::string& path, absl::string_view key,
                         bool is_int = false);

}  // namespace torch_pickle_internal
}  // namespace dcp

#endif  // DCP_STORAGE_TORCH_PICKLE_H_
