#include "core/state_dict.h"

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>  // NOLINT(build/c++11)
#include <ostream>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "ATen/ATen.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "core/metadata.h"
#include "core/torch_status.h"

namespace dcp {
namespace {

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

// Element-wise equality of two defined tensors of the same dtype and shape,
// with NaN == NaN. Complex tensors compare their real and imaginary parts
// separately, so (nan+1j) != (nan+2j).
absl::StatusOr<bool> SameElements(const at::Tensor& a, const at::Tensor& b) {
  return TorchCall("comparing tensors", [&]() -> bool {
    at::Tensor x = a.cpu().resolve_conj().resolve_neg().contiguous();
    at::Tensor y = b.cpu().resolve_conj().resolve_neg().contiguous();
    if (x.is_quantized()) {
      return x.qscheme() == y.qscheme() && at::equal(x.int_repr(), y.int_repr()) &&
             (x.qscheme() != at::kPerTensorAffine ||
              (x.q_scale() == y.q_scale() &&
               x.q_zero_point() == y.q_zero_point()));
    }
    if (x.is_complex()) {
      x = at::view_as_real(x);
      y = at::view_as_real(y);
    }
    if (x.is_floating_point()) {
      return (x.eq(y) | (x.isnan() & y.isnan())).all().item<bool>();
    }
    return at::equal(x, y);
  });
}

bool TensorsEqual(const at::Tensor& a, const at::Tensor& b) {
  if (!a.defined() || !b.defined()) return a.defined() == b.defined();
  if (a.scalar_type() != b.scalar_type()) return false;
  if (a.sizes() != b.sizes()) return false;
  if (a.numel() == 0) return true;
  absl::StatusOr<bool> same = SameElements(a, b);
  // A comparison libtorch cannot perform (an exotic dtype or layout) counts
  // as "not equal": this is a test/tool helper, and a false negative is loud.
  return same.ok() && *same;
}

bool ShardedTensorsEqual(const ShardedTensor& a, const ShardedTensor& b) {
  if (a.global_size != b.global_size) return false;
  if (a.local_shards.size() != b.local_shards.size()) return false;
  for (size_t i = 0; i < a.local_shards.size(); ++i) {
    if (a.local_shards[i].offsets != b.local_shards[i].offsets) return false;
    if (!TensorsEqual(a.local_shards[i].tensor, b.local_shards[i].tensor)) {
      return false;
    }
  }
  return true;
}

void PrintTensorSummary(std::ostream& os, const at::Tensor& t) {
  if (!t.defined()) {
    os << "undefined";
    return;
  }
  os << DtypeName(t.scalar_type());
  os << FormatShape(t.sizes());
}

}  // namespace

// ---- StateDict --------------------------------------------------------------

// `index` maps each key to its position in `entries`. It is exact unless
// `stale` is set, which mutable_entries() does because the caller may then
// change keys. Every hit is checked against `entries`; keys are unique, so a
// checked hit is right even in a stale index. A miss or a mismatch in a
// stale index rebuilds it, so each mutable_entries() costs at most one
// O(n) rebuild.
//
// Const lookups may run concurrently. They touch `index` without `mu` only
// while `stale` is clear, when nothing writes it; a lookup that sees `stale`
// takes `mu` and may rebuild, then clears `stale` with release order so that
// unlocked readers see the finished index. Non-const calls run alone and
// need no lock.
struct StateDict::Rep {
  std::vector<Entry> entries;
  // std::mutex, not absl::Mutex: TSan cannot see the happens-before edges
  // of Debian's uninstrumented libabsl (see core/future.h).
  mutable std::mutex mu;
  mutable std::atomic<bool> stale{false};
  mutable absl::flat_hash_map<std::string, size_t> index;

  // Whether `key` is at `pos` in `entries`.
  bool Checks(size_t pos, absl::string_view key) const {
    return pos < entries.size() && entries[pos].first == key;
  }

  // Position of `key` by `index` if `entries` agrees, else -1.
  ptrdiff_t CheckedLookup(absl::string_view key) const {
    auto it = index.find(key);
    if (it == index.end() || !Checks(it->second, key)) return -1;
    return static_cast<ptrdiff_t>(it->second);
  }

  // O(n). With duplicate keys (a broken mutable_entries() contract) the
  // first wins, as a front-to-back scan would find.
  void Rebuild() const {
    index.clear();
    index.reserve(entries.size());
    for (size_t i = 0; i < entries.size(); ++i) {
      index.try_emplace(entries[i].first, i);
    }
  }
};

StateDict::StateDict() : rep_(std::make_unique<Rep>()) {}

StateDict::StateDict(std::initializer_list<Entry> entries) : StateDict() {
  for (const Entry& entry : entries) Set(entry.first, entry.second);
}

// A copy starts with an empty stale index and builds it on its first lookup,
// so copies that are never searched (most nested ones) cost no hashing.
StateDict::StateDict(const StateDict& other) : StateDict() {
  rep_->entries = other.rep_->entries;
  rep_->stale.store(true, std::memory_order_relaxed);
}

// Allocates this dict's Rep, leaving `other` its own (empty) one; only a
// failed small allocation could make this terminate.
StateDict::StateDict(StateDict&& other) noexcept : StateDict() {
  *this = std::move(other);
}

StateDict& StateDict::operator=(const StateDict& other) {
  if (this != &other) {
    rep_->entries = other.rep_->entries;
    rep_->index.clear();
    rep_->stale.store(true, std::memory_order_relaxed);
  }
  return *this;
}

// Moves the vector's contents, not the vector, so that a reference from
// entries() keeps naming this dict's entries.
StateDict& StateDict::operator=(StateDict&& other) noexcept {
  if (this != &other) {
    Rep& from = *other.rep_;
    rep_->entries = std::move(from.entries);
    rep_->index = std::move(from.index);
    rep_->stale.store(from.stale.load(std::memory_order_relaxed),
                      std::memory_order_relaxed);
    from.entries.clear();
    from.index.clear();
    from.stale.store(false, std::memory_order_relaxed);
  }
  return *this;
}

StateDict::~StateDict() = default;

ptrdiff_t StateDict::IndexOf(absl::string_view key) const {
  const Rep& rep = *rep_;
  if (!rep.stale.load(std::memory_order_acquire)) {
    auto it = rep.index.find(key);
    // An exact index answers a miss by itself.
    if (it == rep.index.end()) return -1;
    if (rep.Checks(it->second, key)) return static_cast<ptrdiff_t>(it->second);
    // An exact index cannot mismatch unless a mutable_entries() reference
    // was used against the contract; rebuilding below still answers right.
  }
  std::lock_guard<std::mutex> lock(rep.mu);
  // Checked hits are right even in a stale index.
  const ptrdiff_t pos = rep.CheckedLookup(key);
  if (pos >= 0) return pos;
  // Another reader may have rebuilt the index while this one waited. It is
  // exact then, and being read without the lock, so a miss must not rebuild.
  if (!rep.stale.load(std::memory_order_relaxed) && !rep.index.contains(key)) {
    return -1;
  }
  rep.Rebuild();
  rep.stale.store(false, std::memory_order_release);
  return rep.CheckedLookup(key);
}

void StateDict::Set(std::string key, Value value) {
  Rep& rep = *rep_;
  ptrdiff_t pos;
  if (rep.stale.load(std::memory_order_relaxed)) {
    pos = IndexOf(key);  // On a miss this leaves the index exact.
  } else {
    // One hash in the common case, a new key. If the vector then fails to
    // grow, the dangling position fails its check later and is rebuilt.
    auto [it, inserted] = rep.index.try_emplace(key, rep.entries.size());
    if (inserted) {
      rep.entries.emplace_back(std::move(key), std::move(value));
      return;
    }
    pos = rep.Checks(it->second, key) ? static_cast<ptrdiff_t>(it->second) : -1;
    if (pos < 0) {
      // A failed append or a broken mutable_entries() contract.
      rep.Rebuild();
      pos = rep.CheckedLookup(key);
    }
  }
  if (pos >= 0) {
    rep.entries[pos].second = std::move(value);
    return;
  }
  rep.index.insert_or_assign(key, rep.entries.size());
  rep.entries.emplace_back(std::move(key), std::move(value));
}

bool StateDict::Contains(absl::string_view key) const {
  return IndexOf(key) >= 0;
}

const Value* StateDict::Find(absl::string_view key) const {
  const ptrdiff_t pos = IndexOf(key);
  return pos >= 0 ? &rep_->entries[pos].second : nullptr;
}

Value* StateDict::FindMutable(absl::string_view key) {
  const ptrdiff_t pos = IndexOf(key);
  return pos >= 0 ? &rep_->entries[pos].second : nullptr;
}

bool StateDict::Erase(absl::string_view key) {
  const ptrdiff_t pos = IndexOf(key);
  if (pos < 0) return false;
  std::vector<Entry>& entries = rep_->entries;
  rep_->index.erase(key);
  entries.erase(entries.begin() + pos);
  // The later entries moved up by one; keep their positions exact.
  for (size_t i = static_cast<size_t>(pos); i < entries.size(); ++i) {
    rep_->index.insert_or_assign(entries[i].first, i);
  }
  return true;
}

size_t StateDict::size() const { return rep_->entries.size(); }

bool StateDict::empty() const { return rep_->entries.empty(); }

std::vector<std::string> StateDict::Keys() const {
  std::vector<std::string> keys;
  keys.reserve(rep_->entries.size());
  for (const Entry& entry : rep_->entries) keys.push_back(entry.first);
  return keys;
}

const std::vector<StateDict::Entry>& StateDict::entries() const {
  return rep_->entries;
}

std::vector<StateDict::Entry>& StateDict::mutable_entries() {
  rep_->stale.store(true, std::memory_order_relaxed);
  return rep_->entries;
}

// ---- Value ------------------------------------------------------------------

absl::string_view Value::TypeName() const {
  return std::visit(
      Overloaded{
          [](const None&) -> absl::string_view { return "None"; },
          [](bool) -> absl::string_view { return "bool"; },
          [](int64_t) -> absl::string_view { return "int"; },
          [](double) -> absl::string_view { return "float"; },
          [](const std::string&) -> absl::string_view { return "str"; },
          [](const Bytes&) -> absl::string_view { return "bytes"; },
          [](const at::Tensor&) -> absl::string_view { return "tensor"; },
          [](const ShardedTensor&) -> absl::string_view {
            return "sharded tensor";
          },
          [](const List&) -> absl::string_view { return "list"; },
          [](const StateDict&) -> absl::string_view { return "dict"; },
          [](const Tuple&) -> absl::string_view { return "tuple"; },
      },
      v_);
}

// ---- Equality ---------------------------------------------------------------

namespace {

bool ListsEqual(const List& a, const List& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!ValuesEqual(a[i], b[i])) return false;
  }
  return true;
}

// Python's repr of the elements, without the brackets.
void PrintItems(std::ostream& os, const List& items) {
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) os << ", ";
    os << items[i];
  }
}

}  // namespace

bool ContainsTensor(const Value& value) {
  if (value.is_tensor_like()) return true;
  const List* items = value.get_if<List>();
  if (const Tuple* tuple = value.get_if<Tuple>()) items = &tuple->items;
  if (items != nullptr) {
    for (const Value& item : *items) {
      if (ContainsTensor(item)) return true;
    }
  }
  if (const StateDict* dict = value.get_if<StateDict>()) {
    for (const StateDict::Entry& entry : dict->entries()) {
      if (ContainsTensor(entry.second)) return true;
    }
  }
  return false;
}

bool ValuesEqual(const Value& a, const Value& b) {
  if (a.variant().index() != b.variant().index()) return false;
  return std::visit(
      Overloaded{
          [&](const None&) { return true; },
          [&](bool v) { return v == b.get<bool>(); },
          [&](int64_t v) { return v == b.get<int64_t>(); },
          // NaN == NaN, as for tensor elements.
          [&](double v) {
            const double w = b.get<double>();
            return v == w || (std::isnan(v) && std::isnan(w));
          },
          [&](const std::string& v) { return v == b.get<std::string>(); },
          [&](const Bytes& v) { return v == b.get<Bytes>(); },
          [&](const at::Tensor& v) {
            return TensorsEqual(v, b.get<at::Tensor>());
          },
          [&](const ShardedTensor& v) {
            return ShardedTensorsEqual(v, b.get<ShardedTensor>());
          },
          [&](const List& v) { return ListsEqual(v, b.get<List>()); },
          [&](const StateDict& v) {
            return StateDictsEqual(v, b.get<StateDict>());
          },
          [&](const Tuple& v) {
            return ListsEqual(v.items, b.get<Tuple>().items);
          },
      },
      a.variant());
}

bool StateDictsEqual(const StateDict& a, const StateDict& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    const StateDict::Entry& x = a.entries()[i];
    const StateDict::Entry& y = b.entries()[i];
    if (x.first != y.first || !ValuesEqual(x.second, y.second)) return false;
  }
  return true;
}

// ---- Printing ---------------------------------------------------------------

std::ostream& operator<<(std::ostream& os, const Value& value) {
  std::visit(Overloaded{
                 [&](const None&) { os << "None"; },
                 [&](bool v) { os << (v ? "True" : "False"); },
                 [&](int64_t v) { os << v; },
                 [&](double v) { os << v; },
                 [&](const std::string& v) {
                   os << "\"" << absl::CHexEscape(v) << "\"";
                 },
                 [&](const Bytes& v) {
                   os << "b\"" << absl::CHexEscape(v.data) << "\"";
                 },
                 [&](const at::Tensor& v) {
                   os << "tensor(";
                   PrintTensorSummary(os, v);
                   os << ")";
                 },
                 [&](const ShardedTensor& v) {
                   os << "sharded(global ";
                   os << FormatShape(v.global_size);
                   os << ", shards [";
                   for (size_t i = 0; i < v.local_shards.size(); ++i) {
                     if (i > 0) os << ", ";
                     os << "at ";
                     os << FormatShape(v.local_shards[i].offsets);
                     os << ": ";
                     PrintTensorSummary(os, v.local_shards[i].tensor);
                   }
                   os << "])";
                 },
                 [&](const List& v) {
                   os << "[";
                   PrintItems(os, v);
                   os << "]";
                 },
                 [&](const StateDict& v) { os << v; },
                 [&](const Tuple& v) {
                   // As Python: (x,) for one element.
                   os << "(";
                   PrintItems(os, v.items);
                   os << (v.items.size() == 1 ? ",)" : ")");
                 },
             },
             value.variant());
  return os;
}

std::ostream& operator<<(std::ostream& os, const StateDict& state_dict) {
  os << "{";
  bool first = true;
  for (const StateDict::Entry& entry : state_dict.entries()) {
    if (!first) os << ", ";
    first = false;
    os << "\"" << absl::CHexEscape(entry.first) << "\": " << entry.second;
  }
  return os << "}";
}

}  // namespace dcp
