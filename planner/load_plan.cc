#include "planner/load_plan.h"

#include <ostream>

#include "absl/strings/escaping.h"
#include "core/metadata.h"

namespace dcp {
namespace {

}  // namespace

std::ostream& operator<<(std::ostream& os, LoadItemType type) {
  switch (type) {
    case LoadItemType::kTensor:
      return os << "TENSOR";
    case LoadItemType::kByteIo:
      return os << "BYTE_IO";
  }
  return os << "LoadItemType(" << static_cast<int>(type) << ")";
}

std::ostream& operator<<(std::ostream& os, const ReadItem& item) {
  os << "ReadItem(type=" << item.type << ", dest_index=" << item.dest_index
     << ", dest_offsets=";
  os << FormatShape(item.dest_offsets);
  os << ", storage_index=" << item.storage_index << ", storage_offsets=";
  os << FormatShape(item.storage_offsets);
  os << ", lengths=";
  os << FormatShape(item.lengths);
  return os << ")";
}

std::ostream& operator<<(std::ostream& os, const LoadPlan& plan) {
  os << "LoadPlan(items=[";
  for (size_t i = 0; i < plan.items.size(); ++i) {
    if (i > 0) os << ", ";
    os << plan.items[i];
  }
  // The opaque blobs are printed escaped, since they are usually binary.
  return os << "], storage_data=\"" << absl::CHexEscape(plan.storage_data)
            << "\", planner_data=\"" << absl::CHexEscape(plan.planner_data)
            << "\")";
}

}  // namespace dcp
