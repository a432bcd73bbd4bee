#include "storage/value_pickle.h"

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <variant>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/state_dict.h"
#include "core/status.h"
#include "storage/pickle.h"

namespace dcp {
namespace {

using Kind = PickleValue::Kind;

// Paths stay short however long the keys and deep the nesting: each level
// holds its own path, so full paths would grow as depth times key length.
constexpr size_t kMaxPathBytes = 1024;
constexpr size_t kMaxPathKeyBytes = 64;

// `path` followed by `segment`, cut to about kMaxPathBytes.
std::string ChildPath(const std::string& path, absl::string_view segment) {
  if (path.size() >= kMaxPathBytes) return path;  // Already ends in "...".
  std::string child = absl::StrCat(path, segment);
  if (child.size() >= kMaxPathBytes) {
    child.resize(kMaxPathBytes - 3);
    child += "...";
  }
  return child;
}

std::string IndexPath(const std::string& path, size_t i) {
  return ChildPath(path, absl::StrCat("[", i, "]"));
}

// `path` followed by `["key"]` (or `[key]` for an int key), the key cut
// and C-escaped.
std::string KeyPath(const std::string& path, absl::string_view key,
                    bool is_int = false) {
  const bool cut = key.size() > kMaxPathKeyBytes;
  return ChildPath(path,
                   absl::StrCat("[", is_int ? "" : "\"",
                                absl::CEscape(key.substr(0, kMaxPathKeyBytes)),
                                cut ? "..." : "", is_int ? "" : "\"", "]"));
}

std::string Describe(const PickleValue& v) { return v.DebugString(120); }

// ---- Writing ----------------------------------------------------------------

// Pushes values onto a PickleWriter. Containers are written through
// callbacks that must each push one value, so an error cannot stop them:
// once one is recorded, every value still to come is written as None.
class ValueWriter {
 public:
  ValueWriter(PickleWriter& w, PickleTensorWriter write_tensor)
      : w_(w), write_tensor_(write_tensor) {}

  void Write(const Value& value, const std::string& path);
  void WriteDict(const StateDict& dict, const std::string& path);

  absl::Status status() const { return status_; }

 private:
  void Fail(absl::Status status) {
    if (status_.ok()) status_ = std::move(status);
    w_.WriteNone();
  }

  PickleWriter& w_;
  PickleTensorWriter write_tensor_;
  absl::Status status_;
};

void ValueWriter::WriteDict(const StateDict& dict, const std::string& path) {
  const auto& entries = dict.entries();
  w_.WriteDict(entries.size(), [&](size_t i) {
    w_.WriteString(entries[i].first);
    if (!status_.ok()) return w_.WriteNone();
    Write(entries[i].second, KeyPath(path, entries[i].first));
  });
}

void ValueWriter::Write(const Value& value, const std::string& path) {
  if (!status_.ok()) return w_.WriteNone();
  struct Visitor {
    ValueWriter& self;
    const std::string& path;
    PickleWriter& w = self.w_;
    void operator()(None) const { w.WriteNone(); }
    void operator()(bool b) const { w.WriteBool(b); }
    void operator()(int64_t i) const { w.WriteInt(i); }
    void operator()(double d) const { w.WriteFloat(d); }
    void operator()(const std::string& s) const { w.WriteString(s); }
    void operator()(const Bytes& b) const {
      if (!b.data.empty()) {
        w.WriteBytes(b.data);
        return;
      }
      // Python writes b"" as `__builtin__.bytes()`, which torch.load's
      // weights-only unpickler refuses; this is the same value.
      w.WriteGlobal("_codecs", "encode");
      w.WriteTuple(2, [&](size_t i) { w.WriteString(i == 0 ? "" : "latin1"); });
      w.EmitReduce();
    }
    void operator()(const at::Tensor& tensor) const {
      absl::Status status = self.write_tensor_(w, tensor, path);
      if (!status.ok()) {
        self.Fail(Annotate(status, absl::StrCat("cannot pickle ", path)));
      }
    }
    void operator()(const ShardedTensor&) const {
      self.Fail(absl::InvalidArgumentError(
          absl::StrCat("cannot pickle ", path,
                       ": it is a sharded tensor (unshard it into one tensor "
                       "first)")));
    }
    void operator()(const List& list) const { WriteItems(list, false); }
    void operator()(const Tuple& tuple) const { WriteItems(tuple.items, true); }
    void operator()(const StateDict& dict) const { self.WriteDict(dict, path); }

    void WriteItems(const List& items, bool tuple) const {
      auto write_item = [&](size_t i) {
        if (!self.status_.ok()) return w.WriteNone();
        self.Write(items[i], IndexPath(path, i));
      };
      if (tuple) {
        w.WriteTuple(items.size(), write_item);
      } else {
        w.WriteList(items.size(), write_item);
      }
    }
  };
  std::visit(Visitor{*this, path}, value.variant());
}

// ---- Reading ----------------------------------------------------------------

// Converts pickled values, charging each value it creates and each string
// it copies to the budget: shared (memoized) values are copied at every
// reference.
class ValueReader {
 public:
  ValueReader(absl::string_view what, DecodeBudget& budget,
              PickleTensorReader read_tensor)
      : what_(what), budget_(budget), read_tensor_(read_tensor) {}

  absl::StatusOr<Value> Convert(const PickleValue& v, const std::string& path);

 private:
  absl::StatusOr<Value> ConvertDict(const PickleValue& dict,
                                    const std::string& path);
  absl::StatusOr<Value> ConvertObject(const PickleValue& v,
                                      const std::string& path);

  // `status` (an error) said of the value at `path`.
  absl::Status At(const absl::Status& status, const std::string& path) const {
    return Annotate(status, absl::StrCat(what_, " at ", path));
  }
  absl::Status Charge(uint64_t bytes, const std::string& path) {
    absl::Status status = budget_.Charge(bytes);
    if (status.ok()) return status;
    return At(status, path);
  }
  absl::Status Unsupported(absl::string_view type,
                           const std::string& path) const {
    return absl::UnimplementedError(
        absl::StrCat(what_, ": unsupported pickled type ", type, " at ", path));
  }
  absl::Status Malformed(absl::string_view message,
                         const std::string& path) const {
    return At(absl::DataLossError(message), path);
  }

  const absl::string_view what_;
  DecodeBudget& budget_;
  PickleTensorReader read_tensor_;
};

absl::StatusOr<Value> ValueReader::ConvertDict(const PickleValue& dict,
                                               const std::string& path) {
  StateDict out;
  std::map<std::string, bool> key_is_int;
  for (size_t i = 0; i < dict.num_entries(); ++i) {
    const PickleValue& k = dict.key(i);
    std::string key;
    bool is_int = false;
    if (k.kind() == Kind::kString) {
      // The key is copied into the dict and into `key_is_int`.
      DCP_RETURN_IF_ERROR(Charge(
          2 * (sizeof(StateDict::Entry) + k.string_value().size()), path));
      key = k.string_value();
    } else if (k.kind() == Kind::kInt) {
      DCP_RETURN_IF_ERROR(Charge(2 * sizeof(StateDict::Entry), path));
      key = absl::StrCat(k.int_value());
      is_int = true;
    } else {
      return Unsupported(absl::StrCat("dict key ", Describe(k)), path);
    }
    auto [it, inserted] = key_is_int.emplace(key, is_int);
    if (!inserted && it->second != is_int) {
      // `key` is the decimal string of an int here, so it is short.
      return absl::UnimplementedError(
          absl::StrCat(what_, ": dict at ", path, " has both the int key ", key,
                       " and the str key \"", key, "\""));
    }
    DCP_ASSIGN_OR_RETURN(Value item,
                         Convert(dict.value(i), KeyPath(path, key, is_int)));
    out.Set(std::move(key), std::move(item));  // Python: last value wins.
  }
  return Value(std::move(out));
}

absl::StatusOr<Value> ValueReader::ConvertObject(const PickleValue& v,
                                                 const std::string& path) {
  const PickleValue& callable = v.callable();
  if (callable.kind() != Kind::kGlobal) {
    return Unsupported(absl::StrCat("object ", Describe(v)), path);
  }
  const bool reduce = v.construction() == PickleValue::Construction::kReduce;
  const bool no_args =
      v.args().kind() == Kind::kTuple && v.args().num_items() == 0;
  if (reduce && callable.IsGlobal("collections", "OrderedDict") && no_args &&
      v.appended().num_items() == 0) {
    // torch.save of a module's state_dict() also sets `_metadata` on the
    // OrderedDict (BUILD with a dict of attributes); it only matters to
    // load_state_dict and is dropped. Any other state is not an attribute.
    if (v.has_state() && v.state().kind() != Kind::kDict) {
      return Unsupported(absl::StrCat("collections.OrderedDict with state ",
                                      Describe(v.state())),
                         path);
    }
    return ConvertDict(v.set_items(), path);
  }
  if (reduce && (callable.IsGlobal("torch._utils", "_rebuild_tensor_v2") ||
                 callable.IsGlobal("torch._utils", "_rebuild_tensor_v3"))) {
    absl::StatusOr<at::Tensor> tensor = read_tensor_(v, path);
    if (!tensor.ok()) return At(tensor.status(), path);
    return Value(*std::move(tensor));
  }
  if (reduce &&
      (callable.IsGlobal("torch._utils", "_rebuild_parameter") ||
       callable.IsGlobal("torch._utils", "_rebuild_parameter_with_state"))) {
    // (data, requires_grad, backward_hooks[, state]): the tensor is `data`.
    if (v.args().kind() != Kind::kTuple || v.args().num_items() < 1) {
      return Malformed(
          absl::StrCat(callable.name(), " arguments ", Describe(v.args())),
          path);
    }
    DCP_ASSIGN_OR_RETURN(Value data, Convert(v.args().item(0), path));
    if (!data.is<at::Tensor>()) {
      return Malformed(absl::StrCat("nn.Parameter whose data is a ",
                                    data.TypeName(), ", not a tensor"),
                       path);
    }
    return data;
  }
  const std::string name =
      absl::StrCat(callable.module(), ".", callable.name());
  if (absl::StartsWith(callable.module(), "torch") &&
      absl::StartsWith(callable.name(), "_rebuild")) {
    absl::string_view kind = "";
    if (callable.name() == "_rebuild_qtensor") {
      kind = ": a quantized tensor";
    } else if (absl::StrContains(callable.name(), "sparse")) {
      kind = ": a sparse tensor";
    } else if (callable.name() == "_rebuild_from_type_v2" ||
               callable.name() == "_rebuild_wrapper_subclass") {
      kind = ": a tensor subclass";
    }
    return Unsupported(absl::StrCat("torch.Tensor (", name, kind, ")"), path);
  }
  return Unsupported(name, path);
}

absl::StatusOr<Value> ValueReader::Convert(const PickleValue& v,
                                           const std::string& path) {
  DCP_RETURN_IF_ERROR(Charge(sizeof(Value), path));
  switch (v.kind()) {
    case Kind::kNone:
      return Value(None{});
    case Kind::kBool:
      return Value(v.bool_value());
    case Kind::kInt:
      return Value(v.int_value());
    case Kind::kBigInt:
      return Unsupported("int (outside the int64 range)", path);
    case Kind::kFloat:
      return Value(v.float_value());
    case Kind::kString:
      DCP_RETURN_IF_ERROR(Charge(v.string_value().size(), path));
      return Value(v.string_value());
    case Kind::kBytes:
      DCP_RETURN_IF_ERROR(Charge(v.string_value().size(), path));
      return Value(Bytes{v.string_value()});
    case Kind::kTuple:
    case Kind::kList: {
      List list;
      list.reserve(v.num_items());
      for (size_t i = 0; i < v.num_items(); ++i) {
        DCP_ASSIGN_OR_RETURN(Value item,
                             Convert(v.item(i), IndexPath(path, i)));
        list.push_back(std::move(item));
      }
      if (v.kind() == Kind::kTuple) return Value(Tuple{std::move(list)});
      return Value(std::move(list));
    }
    case Kind::kDict:
      return ConvertDict(v, path);
    case Kind::kSet:
      return Unsupported("set", path);
    case Kind::kFrozenSet:
      return Unsupported("frozenset", path);
    case Kind::kGlobal:
      return Unsupported(
          absl::StrCat("(a reference to ", v.module(), ".", v.name(), ")"),
          path);
    case Kind::kPersistentId:
      return Unsupported("torch storage (a bare persistent id)", path);
    case Kind::kObject:
      break;
  }
  return ConvertObject(v, path);
}

}  // namespace

absl::Status WriteValuePickle(PickleWriter& w, const Value& value,
                              const std::string& path,
                              PickleTensorWriter write_tensor) {
  ValueWriter writer(w, write_tensor);
  writer.Write(value, path);
  return writer.status();
}

absl::Status WriteStateDictPickle(PickleWriter& w, const StateDict& dict,
                                  const std::string& path,
                                  PickleTensorWriter write_tensor) {
  ValueWriter writer(w, write_tensor);
  writer.WriteDict(dict, path);
  return writer.status();
}

absl::StatusOr<Value> ValueFromPickle(const PickleValue& pickle,
                                      absl::string_view what,
                                      const std::string& path,
                                      DecodeBudget& budget,
                                      PickleTensorReader read_tensor) {
  return ValueReader(what, budget, read_tensor).Convert(pickle, path);
}

}  // namespace dcp
