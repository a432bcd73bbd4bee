// -----------------------------------------------------------------------------
// File: planner/default_save_planner.h
// -----------------------------------------------------------------------------
//
// `DefaultSavePlanner`: PyTorch 2.6's `DefaultSavePlanner`
// (docs/format.md §5.2-§5.4) in C++. Each rank flattens its state
// dict and emits one write item per value; the coordinator deduplicates
// replicated items across ranks, builds the checkpoint's `Metadata` and
// checks that the chunks of every tensor tile it exactly once.
//
//   DefaultSavePlanner planner;                    // one per rank
//   DCP_RETURN_IF_ERROR(planner.SetUp(state_dict, nullptr, is_coordinator));
//   DCP_ASSIGN_OR_RETURN(SavePlan local, planner.CreateLocalPlan());
//   // ... the protocol gathers every rank's `local` to the coordinator:
//   DCP_ASSIGN_OR_RETURN(GlobalSavePlan global,
//                        planner.CreateGlobalPlan(std::move(all_plans)));
//   // ... and scatters global.plans[rank] back:
//   DCP_ASSIGN_OR_RETURN(SavePlan plan, planner.FinishPlan(std::move(mine)));
//   // the storage writer calls planner.ResolveData(item) per item.
//
// planner/lockstep.h drives all of this for N ranks in one thread.
//
// What each value becomes (CreateLocalPlan):
//   at::Tensor     one kTensor item, index (fqn, zeros(ndim)), chunk
//                  (zeros, sizes), size = sizes. Every rank holding the same
//                  fqn is assumed to hold a replica; one copy is saved.
//   ShardedTensor  one kShard item per local shard, index (fqn, offsets),
//                  chunk (offsets, shard sizes), size = global size.
//   anything else  one kByteIo item, index (fqn) without offset.
// Properties come from the (first shard's) tensor: dtype, layout,
// requires_grad, pin_memory; the memory format is always contiguous.
//
// Deduplication (CreateGlobalPlan): items with equal `MetadataIndex` in
// several plans are kept in one plan only. Items are visited in a
// deterministic order (plan 0's items in order, then the items new in plan
// 1, ...), and each goes to the plan with the fewest bytes assigned so far
// (ties: lowest rank), or to the lowest rank with
// `dedup_save_to_lowest_rank`. Bytes are `WriteItem::TensorStorageSize()`,
// the chunk's bytes (Python uses the global size), and 1 for bytes items.
//
// Differences from Python, all of which turn silent corruption into errors:
//   * replicas (items with equal index on several ranks) must agree on
//     type, chunk, global size and dtype; Python keeps one arbitrary copy;
//   * a key saved as different kinds (tensor / sharded tensor / bytes) or
//     as plain tensors of different rank on different ranks is an
//     InvalidArgument naming the key and ranks (Python asserts);
//   * shards of one key must agree on global size and dtype across ranks
//     (Python keeps the first rank's);
//   * the global plan's validation problems are returned in the status
//     (Python logs them and raises "Failed to validate global plan").
//
// `flatten_state_dict = false` plans top-level keys only. A nested dict or
// list value is then one bytes item if it holds no tensor (Python pickles
// it whole), and InvalidArgument if it does (Python would pickle the
// tensors into the bytes item; dcp's bytes values cannot hold tensors).
//
// Thread safety: SetUp, CreateLocalPlan, CreateGlobalPlan and FinishPlan
// from one thread; ResolveData may then be called concurrently (it only
// reads).
//
// Ownership: SetUp keeps handles to the state dict's tensors (not copies),
// so ResolveData returns the caller's tensors; they must not be resized
// until the save has written them.
#ifndef DCP_PLANNER_DEFAULT_SAVE_PLANNER_H_
#define DCP_PLANNER_DEFAULT_SAVE_PLANNER_H_

#include <cstddef>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/metadata.h"
#include "core/state_dict.h"
#include "planner/planner.h"
#include "planner/save_plan.h"

namespace dcp {

struct DefaultSavePlannerOptions {
  // Flatten nested dicts and lists into dotted keys (§5.1) and record the
  // mappings as Metadata::planner_data.
  bool flatten_state_dict = true;
  // Give every replicated item to the lowest rank holding it instead of
  // balancing bytes across ranks.
  bool dedup_save_to_lowest_rank = false;
};

class DefaultSavePlanner : public SavePlanner {
 public:
  explicit DefaultSavePlanner(DefaultSavePlannerOptions options = {});
  DefaultSavePlanner(const DefaultSavePlanner&) = delete;
  DefaultSavePlanner& operator=(const DefaultSavePlanner&) = delete;

  // Flattens `state_dict`. `storage_meta` and `is_coordinator` are ignored,
  // as in Python. May be called again to plan another save.
  //
  // Errors: InvalidArgument for duplicated flattened keys
  // (planner/flatten.h).
  absl::Status SetUp(const StateDict& state_dict,
                     const StorageMeta* storage_meta,
                     bool is_coordinator) override;

  // One item per value (see the file comment); planner_data holds the
  // flatten mappings (`EncodePlannerData`), empty without flattening.
  //
  // Errors: FailedPrecondition before SetUp; InvalidArgument naming the key
  // for undefined tensors, dtypes without an element size, shards whose
  // rank or bounds do not fit the global size, shards of one tensor with
  // different dtypes, and (without flattening) containers holding tensors.
  absl::StatusOr<SavePlan> CreateLocalPlan() override;

  // Coordinator only: DedupSavePlans, then CreateDefaultGlobalSavePlan,
  // then (with flattening) Metadata::planner_data = the union of every
  // plan's mappings, the lowest rank's path winning; then
  // ValidateGlobalMetadata (planner/plan_validation.h).
  //
  // Errors: InvalidArgument naming keys and ranks (see the file comment
  // and the functions named); DataLoss if a plan's planner_data does not
  // decode.
  absl::StatusOr<GlobalSavePlan> CreateGlobalPlan(
      std::vector<SavePlan> plans) override;

  // Returns `central_plan` unchanged.
  absl::StatusOr<SavePlan> FinishPlan(SavePlan central_plan) override;

  // The tensor for tensor items (the plain tensor, whose index offset must
  // be absent or all zeros; or the local shard whose offsets equal the
  // index offset, probing position `index.index` first), or the value for
  // bytes items.
  //
  // Errors: FailedPrecondition before SetUp; NotFound naming the key if it
  // is not in the state dict or no local shard has the offset;
  // InvalidArgument if the item's type does not fit the value or a plain
  // tensor is asked for a non-zero offset.
  absl::StatusOr<Value> ResolveData(const WriteItem& item) override;

 private:
  DefaultSavePlannerOptions options_;
  bool set_up_ = false;
  // Flattened (or top-level) items in traversal order, and their positions.
  // The values are those of the state dict given to SetUp, which outlives
  // the save (SavePlanner's contract): no copy per key.
  std::vector<std::pair<std::string, const Value*>> items_;
  // Keys view the strings of items_ (not copied: one allocation less per
  // key); rebuilt whenever items_ changes.
  absl::flat_hash_map<absl::string_view, size_t> positions_;
  // EncodePlannerData of the flatten mappings (empty without flattening).
  std::string planner_data_;
};

// Python's `create_default_local_save_plan`: the write items for `items`
// ({fqn, value} in order, already flattened), without planner_data.
// Nested dicts and lists become bytes items if they hold no tensor.
// Errors: as DefaultSavePlanner::CreateLocalPlan.
absl::StatusOr<SavePlan> CreateDefaultLocalSavePlan(
    const std::vector<std::pair<std::string, Value>>& items);

// Python's `dedup_save_plans`: every index is kept by exactly one of the
// plans holding it, chosen as described in the file comment; items keep
// their order within each plan.
//
// Errors: InvalidArgument naming the key and two ranks if items with the
// same index differ in type, chunk, global size or dtype.
absl::StatusOr<std::vector<SavePlan>> DedupSavePlans(
    std::vector<SavePlan> plans, bool save_to_lowest_rank);

// Python's `create_default_global_save_plan`: builds the Metadata from
// deduplicated plans (in rank order; for tensors the first item's
// properties and size, chunks appended in rank-major order) and rewrites
// each tensor item's `index.index` to its chunk's position. planner_data
// and storage_data are left empty; nothing is validated beyond the errors
// below.
//
// Errors: InvalidArgument naming the key and ranks if a bytes or plain
// tensor key appears more than once, a key is saved as different kinds, a
// tensor item lacks tensor_data, or shards of a key disagree on global size
// or dtype.
absl::StatusOr<GlobalSavePlan> CreateDefaultGlobalSavePlan(
    std::vector<SavePlan> plans);

// The default planner's SavePlan::planner_data: the flatten mappings
// {fqn -> object path}, in the encoding of Metadata::planner_data in
// core/metadata_codec.h (without a header):
//   count{fqn:string count{u8 0 key:string | u8 1 index:svarint}}
// with keys strictly increasing.
std::string EncodePlannerData(
    const std::map<std::string, ObjectPath>& mappings);
// DataLoss naming the entry if `bytes` is not exactly one such encoding.
absl::StatusOr<std::map<std::string, ObjectPath>> DecodePlannerData(
    absl::string_view bytes);

}  // namespace dcp

#endif  // DCP_PLANNER_DEFAULT_SAVE_PLANNER_H_
