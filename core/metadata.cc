#include "core/metadata.h"

#include <cstdint>
#include <limits>
#include <optional>
#include <ostream>
#include <string>
#include <variant>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"

namespace dcp {
namespace {

// Prints a C-escaped, double-quoted string.
void PrintQuoted(std::ostream& os, absl::string_view s) {
  os << '"' << absl::CEscape(s) << '"';
}

void PrintOptionalString(std::ostream& os,
                         const std::optional<std::string>& s) {
  if (s.has_value()) {
    PrintQuoted(os, *s);
  } else {
    os << "None";
  }
}

// Python's repr of a torch.layout. c10's own operator<< throws on values it
// does not know, so it is not used here.
void PrintLayout(std::ostream& os, c10::Layout layout) {
  switch (layout) {
    case c10::Layout::Strided:
      os << "torch.strided";
      return;
    case c10::Layout::Sparse:
      os << "torch.sparse_coo";
      return;
    case c10::Layout::SparseCsr:
      os << "torch.sparse_csr";
      return;
    case c10::Layout::Mkldnn:
      os << "torch._mkldnn";
      return;
    case c10::Layout::SparseCsc:
      os << "torch.sparse_csc";
      return;
    case c10::Layout::SparseBsr:
      os << "torch.sparse_bsr";
      return;
    case c10::Layout::SparseBsc:
      os << "torch.sparse_bsc";
      return;
    default:
      break;
  }
  os << "Layout(" << static_cast<int>(layout) << ")";
}

void PrintDtype(std::ostream& os, c10::ScalarType dtype) {
  absl::string_view name = DtypeName(dtype);
  if (name == "unknown") {
    os << "ScalarType(" << static_cast<int>(dtype) << ")";
  } else {
    os << "torch." << name;
  }
}

// One row per ScalarType that has a Python name, in c10's enum order.
struct DtypeInfo {
  c10::ScalarType dtype;
  absl::string_view name;
  int64_t element_size;
};

// Element sizes are sizeof() of c10's C++ types for each ScalarType
// (c10/core/ScalarType.h, libtorch 1.13); c10::elementSize is not called
// because it throws on values it does not know.
constexpr DtypeInfo kDtypes[] = {
    {c10::ScalarType::Byte, "uint8", 1},
    {c10::ScalarType::Char, "int8", 1},
    {c10::ScalarType::Short, "int16", 2},
    {c10::ScalarType::Int, "int32", 4},
    {c10::ScalarType::Long, "int64", 8},
    {c10::ScalarType::Half, "float16", 2},
    {c10::ScalarType::Float, "float32", 4},
    {c10::ScalarType::Double, "float64", 8},
    {c10::ScalarType::ComplexHalf, "complex32", 4},
    {c10::ScalarType::ComplexFloat, "complex64", 8},
    {c10::ScalarType::ComplexDouble, "complex128", 16},
    {c10::ScalarType::Bool, "bool", 1},
    {c10::ScalarType::QInt8, "qint8", 1},
    {c10::ScalarType::QUInt8, "quint8", 1},
    {c10::ScalarType::QInt32, "qint32", 4},
    {c10::ScalarType::BFloat16, "bfloat16", 2},
    {c10::ScalarType::QUInt4x2, "quint4x2", 1},
    {c10::ScalarType::QUInt2x4, "quint2x4", 1},
};

static_assert(sizeof(kDtypes) / sizeof(kDtypes[0]) ==
                  static_cast<size_t>(c10::ScalarType::Undefined),
              "every c10::ScalarType before Undefined needs a row in kDtypes");

// The aliases torch defines as module attributes (torch.float is
// torch.float32, ...).
struct DtypeAlias {
  absl::string_view alias;
  c10::ScalarType dtype;
};

constexpr DtypeAlias kDtypeAliases[] = {
    {"float", c10::ScalarType::Float},
    {"double", c10::ScalarType::Double},
    {"half", c10::ScalarType::Half},
    {"long", c10::ScalarType::Long},
    {"int", c10::ScalarType::Int},
    {"short", c10::ScalarType::Short},
    {"cfloat", c10::ScalarType::ComplexFloat},
    {"cdouble", c10::ScalarType::ComplexDouble},
    {"chalf", c10::ScalarType::ComplexHalf},
};

const DtypeInfo* FindDtype(c10::ScalarType dtype) {
  for (const DtypeInfo& info : kDtypes) {
    if (info.dtype == dtype) return &info;
  }
  return nullptr;
}

}  // namespace

std::string FormatShape(absl::Span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

int64_t NumElements(const Shape& sizes) {
  // A zero extent anywhere makes the box empty, even if the product of the
  // other extents would overflow. Otherwise the product saturates at the
  // int64 limits instead of overflowing (sizes may come from corrupt input).
  for (int64_t size : sizes) {
    if (size == 0) return 0;
  }
  int64_t product = 1;
  for (int64_t size : sizes) {
    int64_t next;
    if (__builtin_mul_overflow(product, size, &next)) {
      return (product < 0) != (size < 0) ? std::numeric_limits<int64_t>::min()
                                         : std::numeric_limits<int64_t>::max();
    }
    product = next;
  }
  return product;
}

std::ostream& operator<<(std::ostream& os, const ChunkStorageMetadata& chunk) {
  os << "ChunkStorageMetadata(offsets=";
  os << FormatShape(chunk.offsets);
  os << ", sizes=";
  os << FormatShape(chunk.sizes);
  return os << ")";
}

std::ostream& operator<<(std::ostream& os, MemoryFormat format) {
  switch (format) {
    case MemoryFormat::kContiguous:
      return os << "torch.contiguous_format";
    case MemoryFormat::kChannelsLast:
      return os << "torch.channels_last";
    case MemoryFormat::kPreserve:
      return os << "torch.preserve_format";
  }
  return os << "MemoryFormat(" << static_cast<int>(format) << ")";
}

std::ostream& operator<<(std::ostream& os, const TensorProperties& p) {
  os << "TensorProperties(dtype=";
  PrintDtype(os, p.dtype);
  os << ", layout=";
  PrintLayout(os, p.layout);
  os << ", requires_grad=" << (p.requires_grad ? "True" : "False")
     << ", memory_format=" << p.memory_format
     << ", pin_memory=" << (p.pin_memory ? "True" : "False") << ")";
  return os;
}

std::ostream& operator<<(std::ostream& os, const TensorStorageMetadata& md) {
  os << "TensorStorageMetadata(properties=" << md.properties << ", size=";
  os << FormatShape(md.size);
  os << ", chunks=[";
  for (size_t i = 0; i < md.chunks.size(); ++i) {
    if (i > 0) os << ", ";
    os << md.chunks[i];
  }
  return os << "])";
}

std::ostream& operator<<(std::ostream& os, const StorageMetadata& md) {
  std::visit([&os](const auto& alternative) { os << alternative; }, md);
  return os;
}

std::ostream& operator<<(std::ostream& os, const MetadataIndex& i) {
  os << "MetadataIndex(fqn=";
  PrintQuoted(os, i.fqn);
  os << ", offset=";
  if (i.offset.has_value()) {
    os << FormatShape(*i.offset);
  } else {
    os << "None";
  }
  os << ", index=";
  if (i.index.has_value()) {
    os << *i.index;
  } else {
    os << "None";
  }
  return os << ")";
}

std::ostream& operator<<(std::ostream& os, const StorageMeta& m) {
  os << "StorageMeta(checkpoint_id=";
  PrintOptionalString(os, m.checkpoint_id);
  os << ", save_id=";
  PrintOptionalString(os, m.save_id);
  os << ", load_id=";
  PrintOptionalString(os, m.load_id);
  os << ", modules=[";
  for (size_t i = 0; i < m.modules.size(); ++i) {
    if (i > 0) os << ", ";
    PrintQuoted(os, m.modules[i]);
  }
  return os << "])";
}

std::ostream& operator<<(std::ostream& os, const StorageInfo& info) {
  os << "StorageInfo(relative_path=";
  PrintQuoted(os, info.relative_path);
  return os << ", offset=" << info.offset << ", length=" << info.length << ")";
}

std::ostream& operator<<(std::ostream& os, const ObjectPath& path) {
  // Python's tuple repr: ("optim", "state", 0) and ("weight",).
  os << '(';
  for (size_t i = 0; i < path.size(); ++i) {
    if (i > 0) os << ", ";
    if (const std::string* key = std::get_if<std::string>(&path[i])) {
      PrintQuoted(os, *key);
    } else {
      os << std::get<int64_t>(path[i]);
    }
  }
  if (path.size() == 1) os << ',';
  return os << ')';
}

std::ostream& operator<<(std::ostream& os, const Metadata& md) {
  os << "Metadata(state_dict_metadata={";
  bool first = true;
  for (const auto& [fqn, item] : md.state_dict_metadata) {
    if (!first) os << ", ";
    first = false;
    PrintQuoted(os, fqn);
    os << ": " << item;
  }
  os << "}, planner_data={";
  first = true;
  for (const auto& [fqn, path] : md.planner_data) {
    if (!first) os << ", ";
    first = false;
    PrintQuoted(os, fqn);
    os << ": " << path;
  }
  os << "}, storage_data={";
  first = true;
  for (const auto& [index, info] : md.storage_data) {
    if (!first) os << ", ";
    first = false;
    os << index << ": " << info;
  }
  os << "}, storage_meta=";
  if (md.storage_meta.has_value()) {
    os << *md.storage_meta;
  } else {
    os << "None";
  }
  os << ", version=";
  PrintOptionalString(os, md.version);
  return os << ")";
}

absl::StatusOr<int64_t> ElementSize(c10::ScalarType dtype) {
  if (const DtypeInfo* info = FindDtype(dtype)) return info->element_size;
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported dtype: c10::ScalarType value ",
                   static_cast<int>(dtype), " has no element size"));
}

absl::string_view DtypeName(c10::ScalarType dtype) {
  if (const DtypeInfo* info = FindDtype(dtype)) return info->name;
  return "unknown";
}

absl::StatusOr<c10::ScalarType> DtypeFromName(absl::string_view name) {
  for (const DtypeInfo& info : kDtypes) {
    if (info.name == name) return info.dtype;
  }
  for (const DtypeAlias& alias : kDtypeAliases) {
    if (alias.alias == name) return alias.dtype;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dtype name \"", absl::CEscape(name), "\""));
}

}  // namespace dcp
