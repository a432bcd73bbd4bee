// -----------------------------------------------------------------------------
// File: storage/value_pickle.h
// -----------------------------------------------------------------------------
//
// The one conversion between dcp's `Value` (core/state_dict.h) and
// pickles, shared by value records (storage/torch_record.h) and whole
// torch.save files (storage/torch_save.h). What differs between the two is
// how tensors are stored, so tensors go through a callback: a value record
// holds no tensor (its callbacks refuse them), a torch.save file pickles
// each as a `_rebuild_tensor_v2` call on a storage entry of its zip.
//
// Writing. `WriteValuePickle` pushes one value onto a `PickleWriter`:
//   None, bool, int, float, str   as themselves
//   Bytes                         bytes (b"" as `_codecs.encode("", "latin1")`,
//                                 which torch.load's weights-only unpickler
//                                 accepts, unlike `__builtin__.bytes()`)
//   List, Tuple                   list, tuple
//   StateDict                     dict (plain, keys in insertion order)
//   at::Tensor                    whatever the tensor callback writes
//   ShardedTensor                 refused (InvalidArgument)
//
//   PickleWriter w;
//   DCP_RETURN_IF_ERROR(WriteValuePickle(w, value, "value",
//       [&](PickleWriter& w, const at::Tensor& t, const std::string& path) {
//         ...  // push exactly one value, or return an error having pushed none
//       }));
//   DCP_ASSIGN_OR_RETURN(std::string pkl, std::move(w).Finish());
//
// Reading. `ValueFromPickle` converts a `PickleValue` (`ReadPickle` with
// every global and persistent ids allowed: this code decides what is
// acceptable, so that errors name what was found) back:
//   None, bool, int (int64), float, str, bytes
//   list -> List, tuple -> Tuple
//   dict and collections.OrderedDict -> StateDict; int keys become their
//       decimal strings ({1: x} reads as {"1": x}); other key types are
//       refused, and so is an int key whose string equals a str key of the
//       same dict; a repeated key keeps its last value, as in Python. An
//       OrderedDict's instance attributes (`_metadata` of a module's
//       state_dict(), set with BUILD) are dropped.
//   torch._utils._rebuild_tensor_v2 / _v3 calls -> the tensor callback
//   torch._utils._rebuild_parameter[_with_state] (nn.Parameter) -> its data,
//       which must be a tensor
//   anything else (sets, ints beyond int64, other globals and objects,
//       other tensor kinds, bare persistent ids) -> Unimplemented
//
// Paths. Errors name where in the value the problem is, from a root the
// caller chooses: `obj["optim"]["state"][0]`. Keys are cut at 64 bytes and
// paths at about 1 KiB (ending in "..."), so messages stay short however
// long the keys and deep the nesting.
//
// Bounds. Reading charges `budget` (storage/pickle.h) before it allocates:
// each value converted, each string and bytes value at every reference that
// is copied (a memoized string referenced a thousand times counts a
// thousand times) and each dict key twice; a tensor callback charges what it
// allocates itself. Recursion follows the pickle's nesting, which
// `ReadPickle` bounds (`DecodeLimits::max_depth`). So hostile pickles fail
// with ResourceExhausted in memory bounded by the budget.
//
// Errors (`what` names the input, e.g. "value record", "torch.save file"):
//   InvalidArgument   writing: a ShardedTensor ("cannot pickle <path>: it
//                     is a sharded tensor ...")
//   Unimplemented     reading: "<what>: unsupported pickled type <type> at
//                     <path>", and a dict with both an int key and its
//                     string as a str key
//   DataLoss          reading: malformed objects, e.g. an nn.Parameter
//                     whose data is not a tensor ("<what>: <path>: ...")
//   ResourceExhausted reading: the budget is exceeded ("<what>: <path>:
//                     <what> decodes to more than its budget of ...")
//   Tensor callback errors keep their code, annotated "cannot pickle
//   <path>: <its message>" on writing and "<what> at <path>: <its message>"
//   on reading.
//
// Thread safety: thread-compatible functions; the callbacks run on the
// calling thread.
#ifndef DCP_STORAGE_VALUE_PICKLE_H_
#define DCP_STORAGE_VALUE_PICKLE_H_

#include <string>

#include "ATen/core/Tensor.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/state_dict.h"
#include "storage/pickle.h"

namespace dcp {

// Writes `tensor`, found at `path`, onto `w`. Must push exactly one value
// and return OK, or push nothing and return an error (which is annotated
// with the path; a callback that pushes something and then fails is a
// programmer error the writer CHECK-fails on).
using PickleTensorWriter = absl::FunctionRef<absl::Status(
    PickleWriter& w, const at::Tensor& tensor, const std::string& path)>;

// Pushes `value` onto `w` as one pickled value; `path` names it in errors.
// Returns the first error. After an error `w` still holds one value (None
// stands in for what was not written), so it stays usable, but its pickle
// is not `value` and must be discarded.
absl::Status WriteValuePickle(PickleWriter& w, const Value& value,
                              const std::string& path,
                              PickleTensorWriter write_tensor);

// The same for a whole state dict, pickled as a dict (without copying it
// into a `Value`).
absl::Status WriteStateDictPickle(PickleWriter& w, const StateDict& dict,
                                  const std::string& path,
                                  PickleTensorWriter write_tensor);

// Reads the tensor that `rebuild`, found at `path`, stands for: a REDUCE
// of `torch._utils._rebuild_tensor_v2` or `_v3` (the callable is checked,
// its arguments are the callback's to check). The callback charges the
// budget for what it allocates. Its errors need not name the path; they
// are annotated with it.
using PickleTensorReader = absl::FunctionRef<absl::StatusOr<at::Tensor>(
    const PickleValue& rebuild, const std::string& path)>;

// Converts `pickle`, whose root `path` names in errors, into a Value,
// charging what it materialises to `budget`. `what` names the input in
// error messages ("value record").
absl::StatusOr<Value> ValueFromPickle(const PickleValue& pickle,
                                      absl::string_view what,
                                      const std::string& path,
                                      DecodeBudget& budget,
                                      PickleTensorReader read_tensor);

}  // namespace dcp

#endif  // DCP_STORAGE_VALUE_PICKLE_H_
