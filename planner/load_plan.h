// -----------------------------------------------------------------------------
// File: planner/load_plan.h
// -----------------------------------------------------------------------------
//
// What one rank will read: `ReadItem`s grouped in a `LoadPlan` (PyTorch
// 2.6's planner types, docs/format.md §1.4). A tensor read item
// copies the box `lengths` at `storage_offsets` inside the saved chunk
// `storage_index` into the destination chunk `dest_index` at
// `dest_offsets`. Bytes read items have offsets and lengths of {0}.
//
// Thread safety: values; no internal synchronisation.
#ifndef DCP_PLANNER_LOAD_PLAN_H_
#define DCP_PLANNER_LOAD_PLAN_H_

#include <ostream>
#include <string>
#include <vector>

#include "core/metadata.h"

namespace dcp {

// Values are Python's (enum.auto() from 1).
enum class LoadItemType : int {
  kTensor = 1,
  kByteIo = 2,
};
std::ostream& operator<<(std::ostream& os, LoadItemType type);

struct ReadItem {
  LoadItemType type = LoadItemType::kTensor;
  MetadataIndex dest_index;  // which local tensor chunk (or value) to fill
  Shape dest_offsets;        // offset inside the destination chunk
  MetadataIndex storage_index;  // which saved chunk (or value) to read
  Shape storage_offsets;        // offset inside the saved chunk
  Shape lengths;                // extent of the box to copy

  friend bool operator==(const ReadItem& a, const ReadItem& b) {
    return a.type == b.type && a.dest_index == b.dest_index &&
           a.dest_offsets == b.dest_offsets &&
           a.storage_index == b.storage_index &&
           a.storage_offsets == b.storage_offsets && a.lengths == b.lengths;
  }
  friend bool operator!=(const ReadItem& a, const ReadItem& b) {
    return !(a == b);
  }
  friend std::ostream& operator<<(std::ostream& os, const ReadItem& item);
};

// One rank's read plan; `storage_data` and `planner_data` are opaque bytes
// owned by the storage layer and the planner.
struct LoadPlan {
  std::vector<ReadItem> items;
  std::string storage_data;
  std::string planner_data;

  friend bool operator==(const LoadPlan& a, const LoadPlan& b) {
    return a.items == b.items && a.storage_data == b.storage_data &&
           a.planner_data == b.planner_data;
  }
  friend bool operator!=(const LoadPlan& a, const LoadPlan& b) {
    return !(a == b);
  }
  friend std::ostream& operator<<(std::ostream& os, const LoadPlan& plan);
};

}  // namespace dcp

#endif  // DCP_PLANNER_LOAD_PLAN_H_
