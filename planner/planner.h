// -----------------------------------------------------------------------------
// File: planner/planner.h
// -----------------------------------------------------------------------------
//
// `SavePlanner` and `LoadPlanner`: the phases of PyTorch's planners
// (docs/format.md §5), which turn a state dict into write or read
// items and back. The defaults are planner/default_save_planner.h and
// planner/default_load_planner.h; users may plug their own.
//
// Planners never communicate: the protocol (checkpoint/) gathers local
// plans to the coordinator, calls `CreateGlobalPlan` there, and scatters the
// results. So every phase can also be driven in one thread, rank by rank,
// which is how the planner tests run.
//
// Save call sequence, per rank (the coordinator also runs the starred step):
//   SetUp(state_dict, storage_meta, is_coordinator)
//   CreateLocalPlan()
//   * CreateGlobalPlan(all ranks' local plans)  -> plans + Metadata
//   FinishPlan(this rank's plan from the global step)
//   ResolveData(item) for each item, called by the storage writer
//
// Load call sequence, per rank:
//   SetUp(state_dict, metadata, is_coordinator)
//   CreateLocalPlan()
//   * CreateGlobalPlan(all ranks' local plans)
//   FinishPlan(this rank's plan)
//   for each item, called by the storage reader:
//     LoadBytes(item, value)                 for bytes items
//     ResolveTensor(item), then CommitTensor  for tensor items
//
// Thread safety: SetUp, the plan phases and Finish are called from one
// thread. The storage layer may call ResolveData, ResolveTensor,
// CommitTensor and LoadBytes from several threads at once, for different
// items; implementations must allow that.
//
// Ownership: the state dict given to SetUp must outlive the planner's use
// (until the save or load returns). Tensors are handles: a load planner
// writes into the caller's tensors in place.
//
// Errors: any error a phase returns fails the save or load, on every rank
// (checkpoint/save_load.h), so implementations return precise codes
// (InvalidArgument for a state dict that cannot be planned, NotFound or
// DataLoss for what the checkpoint lacks) and name the key.
#ifndef DCP_PLANNER_PLANNER_H_
#define DCP_PLANNER_PLANNER_H_

#include <memory>
#include <optional>
#include <vector>

#include "ATen/core/Tensor.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/metadata.h"
#include "core/state_dict.h"
#include "planner/load_plan.h"
#include "planner/save_plan.h"

namespace dcp {

// Result of the coordinator's global save step: one plan per rank (in rank
// order) and the checkpoint's Metadata (without storage_data, which the
// storage writer fills in at Finish).
struct GlobalSavePlan {
  std::vector<SavePlan> plans;
  Metadata metadata;
};

class SavePlanner {
 public:
  virtual ~SavePlanner() = default;

  // Starts planning a save of `state_dict`, which must outlive the save.
  // `storage_meta` (the writer's StorageMetaForSave) may be null and need
  // only live through the call. Called at the start of every save, also on
  // a planner that planned an earlier one (a Checkpointer reuses its
  // planners).
  virtual absl::Status SetUp(const StateDict& state_dict,
                             const StorageMeta* storage_meta,
                             bool is_coordinator) = 0;

  // This rank's write items, on every rank.
  virtual absl::StatusOr<SavePlan> CreateLocalPlan() = 0;

  // Coordinator only. `plans` holds every rank's local plan (after the
  // writer's PrepareLocalPlan), by rank. Returns one plan per rank, by
  // rank, and the checkpoint's Metadata.
  virtual absl::StatusOr<GlobalSavePlan> CreateGlobalPlan(
      std::vector<SavePlan> plans) = 0;

  // This rank's plan from the global step (after the writer's
  // PrepareGlobalPlan); returns the plan the writer writes.
  virtual absl::StatusOr<SavePlan> FinishPlan(SavePlan central_plan) = 0;

  // The data for `item`: the local tensor (or shard) for tensor items,
  // possibly non-contiguous; the non-tensor Value for bytes items. Tensors
  // are handles to the caller's data, which the writer only reads. May be
  // called concurrently for different items.
  virtual absl::StatusOr<Value> ResolveData(const WriteItem& item) = 0;
};

class LoadPlanner {
 public:
  virtual ~LoadPlanner() = default;

  // Starts planning a load into `state_dict`, the destination, which must
  // outlive the load. `metadata` is the checkpoint's (the same on every
  // rank) and need only live through the call: a planner copies what it
  // keeps. Called at the start of every load, also on a planner that
  // planned an earlier one.
  virtual absl::Status SetUp(StateDict* state_dict, const Metadata& metadata,
                             bool is_coordinator) = 0;

  // As SetUp, with a Metadata the planner may keep a share of instead of
  // copying what it needs (Load calls this one). The default calls
  // SetUp(state_dict, *metadata, is_coordinator). InvalidArgument if
  // `metadata` is null.
  virtual absl::Status SetUpShared(StateDict* state_dict,
                                   std::shared_ptr<const Metadata> metadata,
                                   bool is_coordinator) {
    if (metadata == nullptr) {
      return absl::InvalidArgumentError("LoadPlanner::SetUpShared: null");
    }
    return SetUp(state_dict, *metadata, is_coordinator);
  }

  // This rank's read items, on every rank.
  virtual absl::StatusOr<LoadPlan> CreateLocalPlan() = 0;

  // Coordinator only. `plans` holds every rank's local plan (after the
  // reader's PrepareLocalPlan), by rank. Returns one plan per rank, by
  // rank.
  virtual absl::StatusOr<std::vector<LoadPlan>> CreateGlobalPlan(
      std::vector<LoadPlan> plans) = 0;

  // This rank's plan from the global step (after the reader's
  // PrepareGlobalPlan); returns the plan the reader reads.
  virtual absl::StatusOr<LoadPlan> FinishPlan(LoadPlan central_plan) = 0;

  // Stores a loaded non-tensor value for a bytes item. `value` is the
  // planner's to keep (the reader hands over its own copy).
  virtual absl::Status LoadBytes(const ReadItem& item, Value value) = 0;

  // The destination for a tensor item: a view of the caller's tensor with
  // extent `item.lengths` at `item.dest_offsets`. The reader copies the
  // saved box into it (casting dtype if needed), then calls CommitTensor.
  virtual absl::StatusOr<at::Tensor> ResolveTensor(const ReadItem& item) = 0;
  // Called once the reader has filled `tensor`, the tensor ResolveTensor
  // returned for `item`: a planner that returned a buffer rather than a view
  // of the destination copies it into place here.
  virtual absl::Status CommitTensor(const ReadItem& item,
                                    const at::Tensor& tensor) = 0;
};

}  // namespace dcp

#endif  // DCP_PLANNER_PLANNER_H_
