// -----------------------------------------------------------------------------
// File: planner/flatten.h
// -----------------------------------------------------------------------------
//
// State-dict flattening exactly as PyTorch 2.6 does it
// (`torch.distributed.checkpoint._nested_dict.flatten_state_dict`,
// `_traverse.traverse_state_dict` and `set_element`; see
// docs/format.md §5.1). The default planners save and load flat
// {fully qualified name -> leaf} dicts and record, per name, the object path
// that leads to the leaf in the nested state dict.
//
// Traversal rules, for each top-level entry (path = (key,)):
//   * a nested `StateDict` is always descended, path element = its key; an
//     empty one produces nothing at all;
//   * a `List` is descended (path element = int index) only if some element
//     is a tensor (plain or sharded), a `StateDict` (even an empty one), or
//     a list that is itself descended; otherwise the whole list is one leaf;
//   * everything else is a leaf.
// The FQN is the path elements joined with ".". Example:
//
//   {"optim": {"state": {"0": {"exp_avg": t, "step": 3}},
//              "param_groups": [{"lr": 0.1, "params": [0, 1]}]}}
//
// flattens to "optim.state.0.exp_avg" -> t, "optim.state.0.step" -> 3,
// "optim.param_groups.0.lr" -> 0.1 and "optim.param_groups.0.params" ->
// [0, 1], with paths ("optim", "state", "0", "exp_avg"), ...,
// ("optim", "param_groups", 0, "params").
//
// Ownership: flattened leaves are copies of `Value`s. Tensors and sharded
// tensors are reference-counted handles, so a flattened tensor shares
// storage with the user's tensor: writing into it (as loading does) writes
// into the user's state dict.
//
// Thread safety: free functions over values; no shared state.
#ifndef DCP_PLANNER_FLATTEN_H_
#define DCP_PLANNER_FLATTEN_H_

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/metadata.h"
#include "core/state_dict.h"

namespace dcp {

// Python's `(flattened, mappings)` pair.
struct FlatStateDict {
  // FQN -> leaf, in traversal order (which is Python's dict order: keys in
  // insertion order, list elements by index, depth first). FQNs are unique.
  std::vector<std::pair<std::string, Value>> items;
  // FQN -> object path of the leaf in the nested state dict. This is what
  // the default save planner stores as `Metadata::planner_data`.
  std::map<std::string, ObjectPath> mappings;
};

// Flattens `state_dict` by the rules in the file comment.
//
// Errors: InvalidArgument "duplicated flatten key \"a.b\"" when two paths
// join to the same FQN (e.g. key "a.b" next to {"a": {"b": ...}}).
absl::StatusOr<FlatStateDict> FlattenStateDict(const StateDict& state_dict);

// The same flattening without the FQN -> path map, for callers that only
// walk the leaves (the save planner): no allocation per key beyond the
// FQN and the path.
struct FlatLeaves {
  // As FlatStateDict::items, with the values in the flattened state dict,
  // which must outlive these pointers.
  std::vector<std::pair<std::string, const Value*>> items;
  // paths[i] is the object path of items[i].
  std::vector<ObjectPath> paths;
  // Positions in `items`, ordered by FQN.
  std::vector<size_t> by_fqn;
};
// Errors: as FlattenStateDict.
absl::StatusOr<FlatLeaves> FlattenStateDictLeaves(const StateDict& state_dict);

// The largest list index SetElement accepts. Paths can come from a
// checkpoint's metadata; Python has no limit and would pad the list to any
// length a corrupt index asks for.
inline constexpr int64_t kMaxSetElementIndex = int64_t{1} << 24;

// Python's `set_element(root, path, value)`: stores `value` at `path`,
// creating containers on the way. Before a string element a `StateDict` is
// created, before an int element a `List`; lists are padded with None up to
// the index, and a None list element on the way is replaced by the new
// container. An existing value at the final position is replaced (a dict
// entry keeps its position).
//
// Errors: InvalidArgument naming the path when `path` is empty, when its
// first element is not a string, when an index is negative or above
// `kMaxSetElementIndex`, or when an existing value on the way is not the
// container kind the next element needs (an int element into a dict, a
// string element into a list, or descending through a leaf). Index and
// first-element errors change nothing; after a container-kind error the
// containers created before the failing element remain, as in Python.
absl::Status SetElement(StateDict& root, const ObjectPath& path, Value value);

// Python's `get_element`: the value at `path`. NotFound naming the path if
// a key or index is missing or a value on the way is not the container kind
// its next element needs; InvalidArgument if `path` is empty.
// The pointer is invalidated by any change to the containers on the path.
absl::StatusOr<const Value*> GetElement(const StateDict& root,
                                        const ObjectPath& path);
absl::StatusOr<Value*> GetMutableElement(StateDict& root,
                                         const ObjectPath& path);

// Python's `unflatten_state_dict`: a new nested state dict built by
// `SetElement(result, flat.mappings[fqn], value)` for every item in order.
// InvalidArgument if an item has no mapping, or as SetElement.
absl::StatusOr<StateDict> UnflattenStateDict(const FlatStateDict& flat);

// The FQN of `path`: its elements joined with "." (ints in decimal).
std::string FqnOf(const ObjectPath& path);

}  // namespace dcp

#endif  // DCP_PLANNER_FLATTEN_H_
