#include "storage/torch_pickle.h"

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/metadata.h"
#include "core/status.h"
#include "storage/pickle.h"

namespace dcp {
namespace torch_pickle_internal {
namespace {

constexpr DtypeSpec kDtypes[] = {
    {c10::ScalarType::Double, "DoubleStorage", "float64"},
    {c10::ScalarType::Float, "FloatStorage", "float32"},
    {c10::ScalarType::Half, "HalfStorage", "float16"},
    {c10::ScalarType::Long, "LongStorage", "int64"},
    {c10::ScalarType::Int, "IntStorage", "int32"},
    {c10::ScalarType::Short, "ShortStorage", "int16"},
    {c10::ScalarType::Char, "CharStorage", "int8"},
    {c10::ScalarType::Byte, "ByteStorage", "uint8"},
    {c10::ScalarType::Bool, "BoolStorage", "bool"},
    {c10::ScalarType::BFloat16, "BFloat16Storage", "bfloat16"},
    {c10::ScalarType::ComplexDouble, "ComplexDoubleStorage", "complex128"},
    {c10::ScalarType::ComplexFloat, "ComplexFloatStorage", "complex64"},
    {c10::ScalarType::ComplexHalf, nullptr, "complex32"},
};

void WriteIntTuple(PickleWriter& w, c10::IntArrayRef values) {
  w.WriteTuple(values.size(), [&](size_t i) { w.WriteInt(values[i]); });
}

}  // namespace

const DtypeSpec* FindDtype(c10::ScalarType type) {
  for (const DtypeSpec& d : kDtypes) {
    if (d.type == type) return &d;
  }
  return nullptr;
}

const DtypeSpec* FindDtypeByStorageClass(absl::string_view storage_class) {
  for (const DtypeSpec& d : kDtypes) {
    if (d.storage_class != nullptr && storage_class == d.storage_class) {
      return &d;
    }
  }
  return nullptr;
}

const DtypeSpec* FindDtypeByName(absl::string_view name) {
  absl::StatusOr<c10::ScalarType> type = DtypeFromName(name);
  if (!type.ok()) return nullptr;
  return FindDtype(*type);
}

void WriteRebuildTensor(PickleWriter& w, absl::string_view storage_key,
                        const DtypeSpec& dtype, int64_t storage_numel,
                        int64_t storage_offset, c10::IntArrayRef sizes,
                        c10::IntArrayRef strides) {
  const bool v3 = dtype.storage_class == nullptr;
  w.WriteGlobal("torch._utils",
                v3 ? "_rebuild_tensor_v3" : "_rebuild_tensor_v2");
  w.WriteTuple(v3 ? 7 : 6, [&](size_t i) {
    switch (i) {
      case 0:
        w.WriteTuple(5, [&](size_t j) {
          switch (j) {
            case 0:
              w.WriteString("storage");
              break;
            case 1:
              if (v3) {
                w.WriteGlobal("torch.storage", "UntypedStorage");
              } else {
                w.WriteGlobal("torch", dtype.storage_class);
              }
              break;
            case 2:
              w.WriteString(storage_key);
              break;
            case 3:
              w.WriteString("cpu");
              break;
            default:
              w.WriteInt(storage_numel);
              break;
          }
        });
        w.EmitBinPersId();
        break;
      case 1:
        w.WriteInt(storage_offset);
        break;
      case 2:
        WriteIntTuple(w, sizes);
        break;
      case 3:
        WriteIntTuple(w, strides);
        break;
      case 4:
        w.WriteBool(false);  // requires_grad: DCP saves detached tensors.
        break;
      case 5:
        w.WriteGlobal("collections", "OrderedDict");  // backward hooks
        w.EmitEmptyTuple();
        w.EmitReduce();
        break;
      default:
        w.WriteGlobal("torch", dtype.name);
        break;
    }
  });
  w.EmitReduce();
}

namespace {

using Kind = PickleValue::Kind;

constexpr const char* kQuantizedStorages[] = {
    "QInt8Storage", "QInt32Storage", "QUInt8Storage", "QUInt4x2Storage",
    "QUInt2x4Storage"};

std::string Describe(const PickleValue& v) { return v.DebugString(120); }

absl::StatusOr<int64_t> IntOf(const PickleValue& v, absl::string_view what) {
  if (v.kind() != Kind::kInt) {
    return absl::DataLossError(
        absl::StrCat(what, " is ", Describe(v), ", not an int"));
  }
  return v.int_value();
}

absl::StatusOr<std::string> StringOf(const PickleValue& v,
                                     absl::string_view what) {
  if (v.kind() != Kind::kString) {
    return absl::DataLossError(
        absl::StrCat(what, " is ", Describe(v), ", not a str"));
  }
  return v.string_value();
}

// A tuple of ints, or torch.Size(tuple) as older writers pickle sizes.
absl::StatusOr<Shape> IntTupleOf(const PickleValue& v, absl::string_view what) {
  const PickleValue* tuple = &v;
  if (v.kind() == Kind::kObject && v.callable().IsGlobal("torch", "Size") &&
      v.args().kind() == Kind::kTuple && v.args().num_items() == 1) {
    tuple = &v.args().item(0);
  }
  if (tuple->kind() != Kind::kTuple) {
    return absl::DataLossError(
        absl::StrCat(what, " is ", Describe(v), ", not a tuple"));
  }
  if (tuple->num_items() > kMaxTensorDims) {
    return absl::DataLossError(
        absl::StrCat(what, " has ", tuple->num_items(), " dimensions"));
  }
  Shape out;
  out.reserve(tuple->num_items());
  for (size_t i = 0; i < tuple->num_items(); ++i) {
    DCP_ASSIGN_OR_RETURN(
        int64_t x, IntOf(tuple->item(i), absl::StrCat(what, "[", i, "]")));
    out.push_back(x);
  }
  return out;
}

absl::Status ParseStorageType(const PickleValue& type, PickledTensor& out) {
  if (type.kind() != Kind::kGlobal) {
    return absl::DataLossError(
        absl::StrCat("storage type is ", Describe(type), ", not a class"));
  }
  if ((type.module() == "torch.storage" || type.module() == "torch") &&
      type.name() == "UntypedStorage") {
    out.untyped_storage = true;
    return absl::OkStatus();
  }
  if (type.module() == "torch") {
    if (const DtypeSpec* d = FindDtypeByStorageClass(type.name())) {
      out.dtype = d->type;
      return absl::OkStatus();
    }
    for (const char* q : kQuantizedStorages) {
      if (type.name() == q) {
        return absl::UnimplementedError(
            absl::StrCat("quantized storage torch.", q, " is not supported"));
      }
    }
  }
  return absl::DataLossError(
      absl::StrCat("unknown storage type ", type.module(), ".", type.name()));
}

}  // namespace

bool IsRebuildTensor(const PickleValue& callable) {
  return callable.kind() == Kind::kGlobal &&
         (callable.IsGlobal("torch._utils", "_rebuild_tensor_v2") ||
          callable.IsGlobal("torch._utils", "_rebuild_tensor_v3"));
}

absl::StatusOr<PickledTensor> ParseRebuildTensor(const PickleValue& rebuild) {
  if (rebuild.kind() != Kind::kObject ||
      rebuild.construction() != PickleValue::Construction::kReduce ||
      !IsRebuildTensor(rebuild.callable())) {
    return absl::DataLossError(
        absl::StrCat(Describe(rebuild), " is not a tensor"));
  }
  const PickleValue& callable = rebuild.callable();
  const bool v3 = callable.name() == "_rebuild_tensor_v3";
  if (rebuild.has_state() || rebuild.has_kwargs()) {
    return absl::UnimplementedError(
        "tensors with Python state are not supported");
  }
  const PickleValue& args = rebuild.args();
  // v2: storage, offset, size, stride, requires_grad, hooks[, metadata]
  // v3: the same, then dtype[, metadata]
  const size_t base = v3 ? 7 : 6;
  if (args.kind() != Kind::kTuple ||
      (args.num_items() != base && args.num_items() != base + 1)) {
    return absl::DataLossError(
        absl::StrCat(callable.name(), " arguments ", Describe(args)));
  }
  if (args.num_items() == base + 1) {
    const PickleValue& metadata = args.item(base);
    const bool empty = metadata.is_none() || (metadata.kind() == Kind::kDict &&
                                              metadata.num_entries() == 0);
    if (!empty) {
      return absl::UnimplementedError(absl::StrCat(
          "tensor metadata ", Describe(metadata), " is not supported"));
    }
  }

  PickledTensor out;
  const PickleValue& pid_value = args.item(0);
  if (pid_value.kind() != Kind::kPersistentId) {
    return absl::DataLossError(absl::StrCat(
        "storage argument is ", Describe(pid_value), ", not a persistent id"));
  }
  const PickleValue& pid = pid_value.persistent_id();
  if (pid.kind() != Kind::kTuple || pid.num_items() != 5 ||
      pid.item(0).kind() != Kind::kString ||
      pid.item(0).string_value() != "storage") {
    return absl::DataLossError(
        absl::StrCat("persistent id ", Describe(pid),
                     " is not ('storage', type, key, location, numel)"));
  }
  DCP_RETURN_IF_ERROR(ParseStorageType(pid.item(1), out));
  DCP_ASSIGN_OR_RETURN(out.key, StringOf(pid.item(2), "storage key"));
  DCP_ASSIGN_OR_RETURN(out.location, StringOf(pid.item(3), "storage location"));
  DCP_ASSIGN_OR_RETURN(out.storage_numel, IntOf(pid.item(4), "storage numel"));
  if (out.storage_numel < 0) {
    return absl::DataLossError(
        absl::StrCat("negative storage numel ", out.storage_numel));
  }
  DCP_ASSIGN_OR_RETURN(out.storage_offset,
                       IntOf(args.item(1), "storage offset"));
  DCP_ASSIGN_OR_RETURN(out.sizes, IntTupleOf(args.item(2), "size"));
  DCP_ASSIGN_OR_RETURN(out.strides, IntTupleOf(args.item(3), "stride"));

  if (v3) {
    const PickleValue& dtype = args.item(6);
    if (dtype.kind() != Kind::kGlobal || dtype.module() != "torch") {
      return absl::DataLossError(
          absl::StrCat("dtype argument is ", Describe(dtype)));
    }
    // metadata.h's names: torch's, plus the aliases ("float", "cdouble").
    const DtypeSpec* type = FindDtypeByName(dtype.name());
    if (type == nullptr) {
      return absl::UnimplementedError(absl::StrCat(
          "dtype torch.", dtype.name(), " is not supported by this libtorch"));
    }
    if (!out.untyped_storage && out.dtype != type->type) {
      return absl::DataLossError(
          absl::StrCat("typed storage of ", c10::toString(out.dtype),
                       " with dtype torch.", dtype.name()));
    }
    out.dtype = type->type;
  } else if (out.untyped_storage) {
    return absl::DataLossError(
        "_rebuild_tensor_v2 with an UntypedStorage has no dtype");
  }
  return out;
}

absl::StatusOr<PickleValue> UnpickleTorchData(absl::string_view bytes,
                                              const DecodeLimits& limits,
                                              absl::string_view what) {
  PickleReadOptions options = limits.PickleOptions(bytes.size());
  options.allow_global = [](absl::string_view, absl::string_view) {
    return true;
  };
  options.allow_persistent_ids = true;
  absl::StatusOr<PickleValue> value = ReadPickle(bytes, options);
  if (absl::IsResourceExhausted(value.status())) {
    return Annotate(value.status(), absl::StrCat(what, ": data.pkl"));
  }
  if (!value.ok()) {
    return absl::DataLossError(
        absl::StrCat(what, ": data.pkl: ", value.status().message()));
  }
  return value;
}

}  // namespace torch_pickle_internal
}  // namespace dcp
