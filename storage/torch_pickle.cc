#include "storage/torch_pickle.h"

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/metadata.h"
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
constexpr size_t kMaxPathBytes = 1024;
constexpr size_t kMaxPathKeyBytes = 64;
}  // namespace

std::string ChildValuePath(const std::string& path,
                           absl::string_view segment) {
  if (path.size() >= kMaxPathBytes) return path;  // Already ends in "...".
  std::string child = absl::StrCat(path, segment);
  if (child.size() >= kMaxPathBytes) {
    child.resize(kMaxPathBytes - 3);
    child += "...";
  }
  return child;
}

std::string KeyValuePath(const std::string& path, absl::string_view key,
                         bool is_int) {
  const bool cut = key.size() > kMaxPathKeyBytes;
  return ChildValuePath(
      path, absl::StrCat("[", is_int ? "" : "\"",
                         absl::CEscape(key.substr(0, kMaxPathKeyBytes)),
                         cut ? "..." : "", is_int ? "" : "\"", "]"));
}

}  // namespace torch_pickle_internal
}  // namespace dcp
