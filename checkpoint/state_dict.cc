#include "checkpoint/state_dict.h"

#include <cmath>
#include <cstdint>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "ATen/ATen.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "checkpoint/metadata.h"
#include "checkpoint/torch_status.h"

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

void PrintShape(std::ostream& os, c10::IntArrayRef shape) {
  os << "[" << absl::StrJoin(shape, ", ") << "]";
}

void PrintTensorSummary(std::ostream& os, const at::Tensor& t) {
  if (!t.defined()) {
    os << "undefined";
    return;
  }
  os << DtypeName(t.scalar_type());
  PrintShape(os, t.sizes());
}

}  // namespace

// ---- StateDict --------------------------------------------------------------

StateDict::StateDict() : entries_(std::make_unique<std::vector<Entry>>()) {}

StateDict::StateDict(std::initializer_list<Entry> entries) : StateDict() {
  for (const Entry& entry : entries) Set(entry.first, entry.second);
}

StateDict::StateDict(const StateDict& other)
    : entries_(std::make_unique<std::vector<Entry>>(*other.entries_)) {}

// Allocates so that `other` keeps the never-null invariant; only a failed
// 24-byte allocation could make this terminate.
StateDict::StateDict(StateDict&& other) noexcept
    : entries_(std::make_unique<std::vector<Entry>>(
          std::move(*other.entries_))) {
  other.entries_->clear();
}

StateDict& StateDict::operator=(const StateDict& other) {
  if (this != &other) *entries_ = *other.entries_;
  return *this;
}

StateDict& StateDict::operator=(StateDict&& other) noexcept {
  if (this != &other) {
    *entries_ = std::move(*other.entries_);
    other.entries_->clear();
  }
  return *this;
}

StateDict::~StateDict() = default;

void StateDict::Set(std::string key, Value value) {
  if (Value* existing = FindMutable(key)) {
    *existing = std::move(value);
    return;
  }
  entries_->emplace_back(std::move(key), std::move(value));
}

bool StateDict::Contains(absl::string_view key) const {
  return Find(key) != nullptr;
}

const Value* StateDict::Find(absl::string_view key) const {
  for (const Entry& entry : *entries_) {
    if (entry.first == key) return &entry.second;
  }
  return nullptr;
}

Value* StateDict::FindMutable(absl::string_view key) {
  for (Entry& entry : *entries_) {
    if (entry.first == key) return &entry.second;
  }
  return nullptr;
}

bool StateDict::Erase(absl::string_view key) {
  for (auto it = entries_->begin(); it != entries_->end(); ++it) {
    if (it->first == key) {
      entries_->erase(it);
      return true;
    }
  }
  return false;
}

size_t StateDict::size() const { return entries_->size(); }

bool StateDict::empty() const { return entries_->empty(); }

std::vector<std::string> StateDict::Keys() const {
  std::vector<std::string> keys;
  keys.reserve(entries_->size());
  for (const Entry& entry : *entries_) keys.push_back(entry.first);
  return keys;
}

const std::vector<StateDict::Entry>& StateDict::entries() const {
  return *entries_;
}

std::vector<StateDict::Entry>& StateDict::mutable_entries() {
  return *entries_;
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
      },
      v_);
}

// ---- Equality ---------------------------------------------------------------

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
          [&](const List& v) {
            const List& w = b.get<List>();
            if (v.size() != w.size()) return false;
            for (size_t i = 0; i < v.size(); ++i) {
              if (!ValuesEqual(v[i], w[i])) return false;
            }
            return true;
          },
          [&](const StateDict& v) {
            return StateDictsEqual(v, b.get<StateDict>());
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
  std::visit(
      Overloaded{
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
            PrintShape(os, v.global_size);
            os << ", shards [";
            for (size_t i = 0; i < v.local_shards.size(); ++i) {
              if (i > 0) os << ", ";
              os << "at ";
              PrintShape(os, v.local_shards[i].offsets);
              os << ": ";
              PrintTensorSummary(os, v.local_shards[i].tensor);
            }
            os << "])";
          },
          [&](const List& v) {
            os << "[";
            for (size_t i = 0; i < v.size(); ++i) {
              if (i > 0) os << ", ";
              os << v[i];
            }
            os << "]";
          },
          [&](const StateDict& v) { os << v; },
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
