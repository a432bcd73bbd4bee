#include "planner/save_plan.h"

#include <cstdint>
#include <limits>
#include <optional>
#include <ostream>

#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "core/metadata.h"

namespace dcp {
namespace {

}  // namespace

std::ostream& operator<<(std::ostream& os, WriteItemType type) {
  switch (type) {
    case WriteItemType::kTensor:
      return os << "TENSOR";
    case WriteItemType::kShard:
      return os << "SHARD";
    case WriteItemType::kByteIo:
      return os << "BYTE_IO";
  }
  return os << "WriteItemType(" << static_cast<int>(type) << ")";
}

std::ostream& operator<<(std::ostream& os, const TensorWriteData& d) {
  os << "TensorWriteData(chunk=" << d.chunk << ", properties=" << d.properties
     << ", size=";
  os << FormatShape(d.size);
  return os << ")";
}

std::optional<int64_t> WriteItem::TensorStorageSize() const {
  // Bytes items have no tensor data. A tensor item whose dtype has no
  // element size (an invalid plan) has no meaningful size either.
  if (!tensor_data.has_value()) return std::nullopt;
  absl::StatusOr<int64_t> element_size =
      ElementSize(tensor_data->properties.dtype);
  if (!element_size.ok()) return std::nullopt;
  const int64_t elements = NumElements(tensor_data->chunk.sizes);
  int64_t bytes;
  if (__builtin_mul_overflow(elements, *element_size, &bytes)) {
    // Only reachable with absurd (corrupt) sizes; saturate like NumElements.
    return elements < 0 ? std::numeric_limits<int64_t>::min()
                        : std::numeric_limits<int64_t>::max();
  }
  return bytes;
}

std::ostream& operator<<(std::ostream& os, const WriteItem& item) {
  os << "WriteItem(index=" << item.index << ", type=" << item.type
     << ", tensor_data=";
  if (item.tensor_data.has_value()) {
    os << *item.tensor_data;
  } else {
    os << "None";
  }
  return os << ")";
}

std::ostream& operator<<(std::ostream& os, const SavePlan& plan) {
  os << "SavePlan(items=[";
  for (size_t i = 0; i < plan.items.size(); ++i) {
    if (i > 0) os << ", ";
    os << plan.items[i];
  }
  // The opaque blobs are printed escaped, since they are usually binary.
  return os << "], storage_data=\"" << absl::CHexEscape(plan.storage_data)
            << "\", planner_data=\"" << absl::CHexEscape(plan.planner_data)
            << "\", usable=" << (plan.usable ? "True" : "False") << ")";
}

}  // namespace dcp
