#include "planner/flatten.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "core/metadata.h"
#include "core/state_dict.h"
#include "core/status.h"

namespace dcp {
namespace {

// Python's repr of a path tuple: ('optim', 'state', 0, 'exp_avg').
std::string PathRepr(const ObjectPath& path) {
  std::string out = "(";
  for (size_t i = 0; i < path.size(); ++i) {
    if (i > 0) absl::StrAppend(&out, ", ");
    if (const auto* key = std::get_if<std::string>(&path[i])) {
      absl::StrAppend(&out, "'", absl::CHexEscape(*key), "'");
    } else {
      absl::StrAppend(&out, std::get<int64_t>(path[i]));
    }
  }
  if (path.size() == 1) absl::StrAppend(&out, ",");
  absl::StrAppend(&out, ")");
  return out;
}

// `_traverse._is_terminal`: true if `value` is a leaf. A dict never is; a
// list is unless it holds a tensor, a dict, or a non-terminal list.
bool IsTerminal(const Value& value) {
  if (value.is<StateDict>()) return false;
  const List* list = value.get_if<List>();
  if (list == nullptr) return true;
  for (const Value& entry : *list) {
    if (entry.is<StateDict>()) return false;
    if (entry.is<List>() && !IsTerminal(entry)) return false;
    if (entry.is_tensor_like()) return false;
  }
  return true;
}

class Flattener {
 public:
  absl::Status Visit(ObjectPath& path, const Value& value) {
    if (const StateDict* dict = value.get_if<StateDict>()) {
      return VisitDict(path, *dict);
    }
    if (IsTerminal(value)) return AddLeaf(path, value);
    const List& list = value.get<List>();
    for (size_t i = 0; i < list.size(); ++i) {
      path.emplace_back(static_cast<int64_t>(i));
      absl::Status status = Visit(path, list[i]);
      path.pop_back();
      DCP_RETURN_IF_ERROR(status);
    }
    return absl::OkStatus();
  }

  absl::Status VisitDict(ObjectPath& path, const StateDict& dict) {
    for (const StateDict::Entry& entry : dict.entries()) {
      path.emplace_back(entry.first);
      absl::Status status = Visit(path, entry.second);
      path.pop_back();
      DCP_RETURN_IF_ERROR(status);
    }
    return absl::OkStatus();
  }

  // The leaves and their paths, in traversal order, and the positions of
  // the leaves sorted by FQN. Error on a duplicated FQN.
  absl::StatusOr<FlatLeaves> Release() && {
    leaves_.by_fqn.resize(leaves_.items.size());
    for (size_t i = 0; i < leaves_.by_fqn.size(); ++i) leaves_.by_fqn[i] = i;
    const auto& items = leaves_.items;
    std::stable_sort(leaves_.by_fqn.begin(), leaves_.by_fqn.end(),
                     [&items](size_t a, size_t b) {
                       return items[a].first < items[b].first;
                     });
    for (size_t k = 1; k < leaves_.by_fqn.size(); ++k) {
      const size_t first = leaves_.by_fqn[k - 1];
      const size_t second = leaves_.by_fqn[k];
      if (items[first].first == items[second].first) {
        return absl::InvalidArgumentError(absl::StrCat(
            "duplicated flatten key \"", absl::CHexEscape(items[first].first),
            "\": paths ", PathRepr(leaves_.paths[first]), " and ",
            PathRepr(leaves_.paths[second])));
      }
    }
    return std::move(leaves_);
  }

 private:
  absl::Status AddLeaf(const ObjectPath& path, const Value& value) {
    leaves_.items.emplace_back(FqnOf(path), &value);
    leaves_.paths.push_back(path);
    return absl::OkStatus();
  }

  FlatLeaves leaves_;
};

absl::Status WrongContainer(const ObjectPath& path, size_t depth,
                            absl::string_view needed, const Value& found) {
  return absl::InvalidArgumentError(absl::StrCat(
      "cannot set element at path ", PathRepr(path), ": the value at ",
      PathRepr(ObjectPath(path.begin(), path.begin() + depth)),
      " has type '", found.TypeName(), "', but the next path element needs a ",
      needed));
}

// A fresh container for the path element `next`: a dict before a string key,
// a list before an int index.
Value NewContainerFor(const PathElement& next) {
  if (std::holds_alternative<std::string>(next)) return Value(StateDict());
  return Value(List());
}

const Value* FindIn(const StateDict& dict, const std::string& key) {
  return dict.Find(key);
}
Value* FindIn(StateDict& dict, const std::string& key) {
  return dict.FindMutable(key);
}

// Shared by GetElement and GetMutableElement; `DictT` is `StateDict` or
// `const StateDict`, and the result is correspondingly (const) Value*.
template <typename DictT>
auto GetElementImpl(DictT& root, const ObjectPath& path)
    -> absl::StatusOr<decltype(FindIn(root, std::string()))> {
  if (path.empty()) {
    return absl::InvalidArgumentError("cannot get element at an empty path");
  }
  auto not_found = [&](size_t depth, absl::string_view why) {
    return absl::NotFoundError(absl::StrCat(
        "no element at path ", PathRepr(path), ": ",
        PathRepr(ObjectPath(path.begin(), path.begin() + depth)), " ", why));
  };
  const auto* first_key = std::get_if<std::string>(&path[0]);
  if (first_key == nullptr) return not_found(1, "is not a string key");
  auto* current = FindIn(root, *first_key);
  if (current == nullptr) return not_found(1, "is missing");
  for (size_t i = 1; i < path.size(); ++i) {
    if (const auto* key = std::get_if<std::string>(&path[i])) {
      auto* dict = current->template get_if<StateDict>();
      if (dict == nullptr) {
        return not_found(i, absl::StrCat("has type '", current->TypeName(),
                                         "', not a dict"));
      }
      current = FindIn(*dict, *key);
      if (current == nullptr) return not_found(i + 1, "is missing");
    } else {
      const int64_t index = std::get<int64_t>(path[i]);
      auto* list = current->template get_if<List>();
      if (list == nullptr) {
        return not_found(i, absl::StrCat("has type '", current->TypeName(),
                                         "', not a list"));
      }
      if (index < 0 || static_cast<uint64_t>(index) >= list->size()) {
        return not_found(i + 1, absl::StrCat("is out of range for a list of ",
                                             list->size(), " elements"));
      }
      current = &(*list)[static_cast<size_t>(index)];
    }
  }
  return current;
}

}  // namespace

std::string FqnOf(const ObjectPath& path) {
  std::string fqn;
  for (size_t i = 0; i < path.size(); ++i) {
    if (i > 0) fqn.push_back('.');
    if (const auto* key = std::get_if<std::string>(&path[i])) {
      fqn.append(*key);
    } else {
      absl::StrAppend(&fqn, std::get<int64_t>(path[i]));
    }
  }
  return fqn;
}

absl::StatusOr<FlatLeaves> FlattenStateDictLeaves(const StateDict& state_dict) {
  Flattener flattener;
  ObjectPath path;
  DCP_RETURN_IF_ERROR(flattener.VisitDict(path, state_dict));
  return std::move(flattener).Release();
}

absl::StatusOr<FlatStateDict> FlattenStateDict(const StateDict& state_dict) {
  DCP_ASSIGN_OR_RETURN(FlatLeaves leaves, FlattenStateDictLeaves(state_dict));
  FlatStateDict flat;
  flat.items.reserve(leaves.items.size());
  for (size_t i = 0; i < leaves.items.size(); ++i) {
    flat.mappings.emplace(leaves.items[i].first, std::move(leaves.paths[i]));
    flat.items.emplace_back(std::move(leaves.items[i].first),
                            *leaves.items[i].second);
  }
  return flat;
}

absl::Status SetElement(StateDict& root, const ObjectPath& path, Value value) {
  if (path.empty()) {
    return absl::InvalidArgumentError("cannot set element at an empty path");
  }
  for (const PathElement& element : path) {
    const auto* index = std::get_if<int64_t>(&element);
    if (index != nullptr && (*index < 0 || *index > kMaxSetElementIndex)) {
      // Paths may come from a checkpoint's metadata: never pad a list to an
      // absurd length because of a corrupt index.
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot set element at path ", PathRepr(path), ": list index ",
          *index, " is outside [0, ", kMaxSetElementIndex, "]"));
    }
  }
  const auto* first_key = std::get_if<std::string>(&path[0]);
  if (first_key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot set element at path ", PathRepr(path),
                     ": the first element must be a string key"));
  }
  if (path.size() == 1) {
    root.Set(*first_key, std::move(value));
    return absl::OkStatus();
  }

  // Python: `cur = root.setdefault(path[0], {} or [])`.
  Value* current = root.FindMutable(*first_key);
  if (current == nullptr) {
    root.Set(*first_key, NewContainerFor(path[1]));
    current = root.FindMutable(*first_key);
  }
  // Invariant at the top of each iteration: `current` is the value at
  // path[0..i), and path[i] must index into it.
  for (size_t i = 1; i < path.size(); ++i) {
    const PathElement& element = path[i];
    const bool last = i + 1 == path.size();
    if (const auto* key = std::get_if<std::string>(&element)) {
      StateDict* dict = current->get_if<StateDict>();
      if (dict == nullptr) return WrongContainer(path, i, "dict", *current);
      if (last) {
        dict->Set(*key, std::move(value));
        return absl::OkStatus();
      }
      Value* next = dict->FindMutable(*key);
      if (next == nullptr) {
        // Python's setdefault: only a missing key gets a new container.
        dict->Set(*key, NewContainerFor(path[i + 1]));
        next = dict->FindMutable(*key);
      }
      current = next;
    } else {
      const auto index = static_cast<size_t>(std::get<int64_t>(element));
      List* list = current->get_if<List>();
      if (list == nullptr) return WrongContainer(path, i, "list", *current);
      if (list->size() <= index) list->resize(index + 1);  // Pads with None.
      Value& slot = (*list)[index];
      if (last) {
        slot = std::move(value);
        return absl::OkStatus();
      }
      // Python: a None element is replaced by a new container.
      if (slot.is<None>()) slot = NewContainerFor(path[i + 1]);
      current = &slot;
    }
  }
  // Unreachable: the loop returns at the last element.
  return absl::InternalError(
      absl::StrCat("SetElement fell off the path ", PathRepr(path)));
}

absl::StatusOr<const Value*> GetElement(const StateDict& root,
                                        const ObjectPath& path) {
  return GetElementImpl(root, path);
}

absl::StatusOr<Value*> GetMutableElement(StateDict& root,
                                         const ObjectPath& path) {
  return GetElementImpl(root, path);
}

absl::StatusOr<StateDict> UnflattenStateDict(const FlatStateDict& flat) {
  StateDict nested;
  for (const auto& [fqn, value] : flat.items) {
    auto it = flat.mappings.find(fqn);
    if (it == flat.mappings.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot unflatten: no object path for key \"",
          absl::CHexEscape(fqn), "\""));
    }
    DCP_RETURN_IF_ERROR(SetElement(nested, it->second, value));
  }
  return nested;
}

}  // namespace dcp
