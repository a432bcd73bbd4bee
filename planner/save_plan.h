// -----------------------------------------------------------------------------
// File: planner/save_plan.h
// -----------------------------------------------------------------------------
//
// What one rank will write: `WriteItem`s grouped in a `SavePlan`. These are
// the C++ forms of PyTorch 2.6's `torch.distributed.checkpoint.planner`
// types (docs/format.md §1.4). Plans are never persisted; they travel
// between ranks in the encoding of planner/plan_codec.h.
//
// Thread safety: values; no internal synchronisation.
#ifndef DCP_PLANNER_SAVE_PLAN_H_
#define DCP_PLANNER_SAVE_PLAN_H_

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "core/metadata.h"

namespace dcp {

// Values are Python's (enum.auto() from 1).
enum class WriteItemType : int {
  kTensor = 1,  // a whole, unsharded tensor (replicated across ranks)
  kShard = 2,   // one box of a sharded tensor
  kByteIo = 3,  // a non-tensor value, serialised as bytes
};
std::ostream& operator<<(std::ostream& os, WriteItemType type);

// The tensor part of a write item: the local box, its properties, and the
// tensor's global size.
struct TensorWriteData {
  ChunkStorageMetadata chunk;
  TensorProperties properties;
  Shape size;  // global size

  friend bool operator==(const TensorWriteData& a, const TensorWriteData& b) {
    return a.chunk == b.chunk && a.properties == b.properties &&
           a.size == b.size;
  }
  friend bool operator!=(const TensorWriteData& a, const TensorWriteData& b) {
    return !(a == b);
  }
  friend std::ostream& operator<<(std::ostream& os, const TensorWriteData& d);
};

struct WriteItem {
  // The item's key: (fqn, chunk offsets) for tensor items, (fqn) for bytes
  // items. The default global plan sets a tensor item's `index.index` to
  // its chunk's position in the Metadata.
  MetadataIndex index;
  WriteItemType type = WriteItemType::kByteIo;
  std::optional<TensorWriteData> tensor_data;  // set for kTensor and kShard

  // Bytes of this item's chunk (NumElements(chunk.sizes) * element size);
  // nullopt for bytes items. Python uses the global size here; dcp uses the
  // chunk, which is what is actually written (used for load balancing).
  std::optional<int64_t> TensorStorageSize() const;

  // Like MetadataIndex, equality ignores the `index.index` hint.
  friend bool operator==(const WriteItem& a, const WriteItem& b) {
    return a.index == b.index && a.type == b.type &&
           a.tensor_data == b.tensor_data;
  }
  friend bool operator!=(const WriteItem& a, const WriteItem& b) {
    return !(a == b);
  }
  friend std::ostream& operator<<(std::ostream& os, const WriteItem& item);
};

// One rank's write plan. `storage_data` and `planner_data` are opaque bytes
// owned by the storage layer and the planner respectively (Python's `Any`):
// each encodes what it needs, and the protocol ships them unchanged.
struct SavePlan {
  std::vector<WriteItem> items;
  std::string storage_data;
  std::string planner_data;
  // Python's `usable` (which newer PyTorch uses to cache plans): carried
  // between ranks unchanged; dcp never reads it.
  bool usable = true;

  friend bool operator==(const SavePlan& a, const SavePlan& b) {
    return a.items == b.items && a.storage_data == b.storage_data &&
           a.planner_data == b.planner_data && a.usable == b.usable;
  }
  friend bool operator!=(const SavePlan& a, const SavePlan& b) {
    return !(a == b);
  }
  friend std::ostream& operator<<(std::ostream& os, const SavePlan& plan);
};

}  // namespace dcp

#endif  // DCP_PLANNER_SAVE_PLAN_H_
