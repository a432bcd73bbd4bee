// -----------------------------------------------------------------------------
// File: planner/write_result.h
// -----------------------------------------------------------------------------
//
// The outcome of writing one item: where its bytes landed. Each rank sends
// its results to the coordinator, which records them in
// `Metadata::storage_data` (Python's `storage.WriteResult`).
#ifndef DCP_PLANNER_WRITE_RESULT_H_
#define DCP_PLANNER_WRITE_RESULT_H_

#include <cstdint>
#include <ostream>

#include "core/metadata.h"

namespace dcp {

struct WriteResult {
  // The write item's index.
  MetadataIndex index;
  // Bytes the storage wrote for the item (for the file system, the
  // record's length; see storage/memory_storage.h for memory). Travels to
  // the coordinator but is not recorded in the Metadata.
  int64_t size_in_bytes = 0;
  // Where the bytes are: the entry for `index` in Metadata::storage_data.
  StorageInfo storage_data;

  friend bool operator==(const WriteResult& a, const WriteResult& b) {
    return a.index == b.index && a.size_in_bytes == b.size_in_bytes &&
           a.storage_data == b.storage_data;
  }
  friend bool operator!=(const WriteResult& a, const WriteResult& b) {
    return !(a == b);
  }
  friend std::ostream& operator<<(std::ostream& os, const WriteResult& r);
};

}  // namespace dcp

#endif  // DCP_PLANNER_WRITE_RESULT_H_
