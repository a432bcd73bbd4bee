// Pieces of torch's tensor pickling shared by storage/torch_record.cc and
// storage/torch_save.cc: the dtype table (dtype <-> legacy storage class <->
// torch dtype name), and the writer and the parser of
// `torch._utils._rebuild_tensor_v2/_v3` calls with a persistent-id storage.
//
// Internal to //storage; not a public API.
//
// Thread safety: all functions are thread-compatible and touch only their
// arguments; the table is immutable.

#ifndef DCP_STORAGE_TORCH_PICKLE_H_
#define DCP_STORAGE_TORCH_PICKLE_H_

#include <c10/core/ScalarType.h>
#include <c10/util/ArrayRef.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/metadata.h"
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

// More dimensions than any real tensor; bounds work on hostile input.
inline constexpr size_t kMaxTensorDims = 1024;

// Whether `callable` is `torch._utils._rebuild_tensor_v2` or `_v3`.
bool IsRebuildTensor(const PickleValue& callable);

// What a `_rebuild_tensor_v2/_v3` call says, before its storage is matched
// with a zip entry.
struct PickledTensor {
  c10::ScalarType dtype = c10::ScalarType::Undefined;
  bool untyped_storage = false;
  int64_t storage_numel = 0;   // Elements, or bytes if untyped; >= 0.
  std::string key;             // The storage's entry is data/<key>.
  std::string location;        // e.g. "cpu".
  int64_t storage_offset = 0;  // Unchecked: see ValidateLayout's callers.
  Shape sizes;                 // At most kMaxTensorDims; values unchecked.
  Shape strides;
};

// Parses `rebuild`, a REDUCE whose callable is a rebuild function
// (IsRebuildTensor): the persistent id ('storage', <storage class>, key,
// location, numel), offset, sizes (a tuple or torch.Size) and strides, the
// dtype of `_v3`; requires_grad and backward hooks are ignored, a trailing
// metadata argument must be empty. Reads nothing outside `rebuild`.
// Messages say what is wrong, not where (callers add that). Errors:
// DataLoss for malformed calls (wrong types or counts, an unknown storage
// class, a negative numel, a typed storage whose dtype differs from `_v3`'s
// dtype); Unimplemented for tensors dcp does not support (Python state,
// tensor metadata, quantized storages, dtypes this libtorch lacks).
absl::StatusOr<PickledTensor> ParseRebuildTensor(const PickleValue& rebuild);

// Unpickles the `data.pkl` of a torch.save archive (`bytes`), within
// `limits`. Every global and persistent id is accepted and nothing is
// called: the caller's interpretation decides what is valid, so that its
// errors can name what was found. `what` names the archive in errors
// ("torch.save record", "torch.save file"). Errors: ResourceExhausted
// beyond the limits (annotated "<what>: data.pkl"); DataLoss
// "<what>: data.pkl: ..." if the bytes are not a pickle.
absl::StatusOr<PickleValue> UnpickleTorchData(absl::string_view bytes,
                                              const DecodeLimits& limits,
                                              absl::string_view what);

}  // namespace torch_pickle_internal
}  // namespace dcp

#endif  // DCP_STORAGE_TORCH_PICKLE_H_
