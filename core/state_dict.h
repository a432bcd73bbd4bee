// -----------------------------------------------------------------------------
// File: core/state_dict.h
// -----------------------------------------------------------------------------
//
// `StateDict`: the model state one rank saves or loads, the C++ form of a
// PyTorch state dict. It is an insertion-ordered map from string keys to
// `Value`s, where a value is
//
//   * a plain tensor (`at::Tensor`): the same on every rank (replicated);
//   * a `ShardedTensor`: this rank's shard(s) of a global tensor, each with
//     its global offsets, plus the global shape (what a DTensor or a
//     ShardedTensor is on one rank);
//   * a non-tensor leaf: None, bool, int64, double, string, `Bytes`, or a
//     `Tuple` (Python's tuple, e.g. Adam's `betas`);
//   * a nested `StateDict`, or a `List` of values.
//
// Flattening to fully qualified names (planner/flatten.h) follows PyTorch
// 2.6 exactly, so `{"optim": {"state": {"0": {"exp_avg": t}}}}` saves as
// "optim.state.0.exp_avg", a list holding no tensor and no dict is one leaf,
// and a tuple is always one leaf (PyTorch never descends into tuples).
//
// Tensors are reference-counted handles: copying a `StateDict` copies
// handles, not data. Loading writes into the destination tensors in place.
//
// Thread safety: a value type; concurrent const access is safe.
#ifndef DCP_CORE_STATE_DICT_H_
#define DCP_CORE_STATE_DICT_H_

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "ATen/core/Tensor.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/metadata.h"

namespace dcp {

class Value;
class StateDict;

// Python's None.
struct None {
  friend bool operator==(None, None) { return true; }
  friend bool operator!=(None, None) { return false; }
};

// Python's bytes (distinct from str).
struct Bytes {
  std::string data;
  friend bool operator==(const Bytes& a, const Bytes& b) {
    return a.data == b.data;
  }
  friend bool operator!=(const Bytes& a, const Bytes& b) { return !(a == b); }
};

// One local box of a sharded tensor: `tensor` holds the elements of the
// global box starting at `offsets` with extent `tensor.sizes()`.
struct Shard {
  at::Tensor tensor;
  Shape offsets;
};

// This rank's part of a global tensor of shape `global_size`. Shards of all
// ranks together must cover the global tensor exactly once on save
// (replicas of the same box on several ranks are deduplicated). A rank may
// hold no shard at all.
struct ShardedTensor {
  Shape global_size;
  std::vector<Shard> local_shards;
};

using List = std::vector<Value>;

// Python's tuple. Distinct from `List` so that tuples round-trip with
// PyTorch as tuples (a saved tuple loads as a `Tuple`, a saved list as a
// `List`), and because flattening treats them differently: a tuple is always
// a leaf, even one holding a dict. Build one as `Tuple{{0.9, 0.999}}`.
struct Tuple {
  List items;
};

// An insertion-ordered string-keyed map of values, with hashed lookup.
//
// Set, Find, FindMutable and Contains take O(1) expected time; Erase takes
// O(n), because later entries shift down one position.
//
// Keys are unique. `mutable_entries()` hands out the entry vector itself, so
// a caller may change values, rename keys, reorder, erase or append through
// it, as long as keys stay unique. The key index is then re-checked on the
// next lookup and rebuilt once (O(n)) if the keys changed. The reference
// must not be kept across any other call on this `StateDict`: changes made
// through it after such a call may go unseen by lookups.
class StateDict {
 public:
  using Entry = std::pair<std::string, Value>;

  StateDict();
  // Set()s each entry in order: for a repeated key the last value wins, at
  // the key's first position.
  StateDict(std::initializer_list<Entry> entries);
  // Copies the entries: containers and strings deeply, tensors as handles.
  StateDict(const StateDict&);
  // Leaves the source empty and usable.
  StateDict(StateDict&&) noexcept;
  StateDict& operator=(const StateDict&);
  StateDict& operator=(StateDict&&) noexcept;
  ~StateDict();

  // Inserts or replaces `key`; a replaced key keeps its position.
  void Set(std::string key, Value value);
  bool Contains(absl::string_view key) const;
  // nullptr if absent. Pointers are invalidated by Set, Erase and
  // mutable_entries().
  const Value* Find(absl::string_view key) const;
  // As Find, for changing the value in place.
  Value* FindMutable(absl::string_view key);
  // Returns false if absent. O(n): later entries move up one position.
  bool Erase(absl::string_view key);

  size_t size() const;
  bool empty() const;
  // Keys in insertion order.
  std::vector<std::string> Keys() const;
  // Entries in insertion order.
  const std::vector<Entry>& entries() const;
  // See the class comment: keys must stay unique, and the reference must not
  // be used across other calls on this StateDict.
  std::vector<Entry>& mutable_entries();

 private:
  // The entries and their key index; defined in state_dict.cc because Value
  // is incomplete here. Never null.
  struct Rep;

  // Position of `key` in the entries, or -1 if absent.
  ptrdiff_t IndexOf(absl::string_view key) const;

  std::unique_ptr<Rep> rep_;
};

// A state-dict value. See the file comment for the alternatives.
class Value {
 public:
  using Variant =
      std::variant<None, bool, int64_t, double, std::string, Bytes, at::Tensor,
                   ShardedTensor, List, StateDict, Tuple>;

  Value() : v_(None{}) {}
  Value(None v) : v_(v) {}                      // NOLINT: implicit by design
  Value(bool v) : v_(v) {}                      // NOLINT
  Value(int v) : v_(int64_t{v}) {}              // NOLINT
  Value(int64_t v) : v_(v) {}                   // NOLINT
  Value(double v) : v_(v) {}                    // NOLINT
  Value(const char* v) : v_(std::string(v)) {}  // NOLINT
  Value(std::string v) : v_(std::move(v)) {}    // NOLINT
  Value(Bytes v) : v_(std::move(v)) {}          // NOLINT
  Value(at::Tensor v) : v_(std::move(v)) {}     // NOLINT
  Value(ShardedTensor v) : v_(std::move(v)) {}  // NOLINT
  Value(List v) : v_(std::move(v)) {}           // NOLINT
  Value(StateDict v) : v_(std::move(v)) {}      // NOLINT
  Value(Tuple v) : v_(std::move(v)) {}          // NOLINT

  const Variant& variant() const { return v_; }
  Variant& mutable_variant() { return v_; }

  template <typename T>
  bool is() const {
    return std::holds_alternative<T>(v_);
  }
  // Precondition: is<T>().
  template <typename T>
  const T& get() const {
    return std::get<T>(v_);
  }
  template <typename T>
  T& get() {
    return std::get<T>(v_);
  }
  // nullptr unless is<T>().
  template <typename T>
  const T* get_if() const {
    return std::get_if<T>(&v_);
  }
  template <typename T>
  T* get_if() {
    return std::get_if<T>(&v_);
  }

  bool is_tensor_like() const {
    return is<at::Tensor>() || is<ShardedTensor>();
  }
  // "tensor", "sharded tensor", "int", "float", "str", "bytes", "bool",
  // "None", "list", "dict", "tuple": for error messages.
  absl::string_view TypeName() const;

 private:
  Variant v_;
};

// Deep equality for tests and tools: tensors compare by dtype, shape and
// every element (NaNs equal; device, strides and requires_grad are not
// compared; a comparison libtorch cannot make counts as unequal), sharded
// tensors by global size and shards in order, containers by order and
// contents (so dicts with the same entries in another order differ).
bool StateDictsEqual(const StateDict& a, const StateDict& b);
bool ValuesEqual(const Value& a, const Value& b);

// True if `value` is a tensor or sharded tensor, or a list, tuple or dict
// holding one at any depth. Bytes items must not: their containers are
// copied, not the tensors inside.
bool ContainsTensor(const Value& value);

// Python-like text for logs and test failures, e.g.
// `{"w": tensor(float32[2, 3]), "step": 3}`: tensors show dtype and shape
// only, never elements.
std::ostream& operator<<(std::ostream& os, const Value& value);
std::ostream& operator<<(std::ostream& os, const StateDict& state_dict);

}  // namespace dcp

#endif  // DCP_CORE_STATE_DICT_H_
