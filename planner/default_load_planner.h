// -----------------------------------------------------------------------------
// File: planner/default_load_planner.h
// -----------------------------------------------------------------------------
//
// `DefaultLoadPlanner`: PyTorch 2.6's `DefaultLoadPlanner`
// (docs/format.md §5.5-§5.7) in C++. Each rank flattens its
// destination state dict, looks every key up in the checkpoint's Metadata
// and computes the read items that fill its tensors (resharding: the saved
// layout and the destination layout may differ, see planner/resharding.h).
// Tensors are loaded in place: ResolveTensor returns views into the
// caller's tensors. Non-tensor values replace the leaves of the caller's
// nested state dict.
//
//   DefaultLoadPlanner planner;                       // one per rank
//   DCP_RETURN_IF_ERROR(planner.SetUp(&state_dict, metadata, is_coordinator));
//   DCP_ASSIGN_OR_RETURN(LoadPlan local, planner.CreateLocalPlan());
//   // ... the protocol gathers, CreateGlobalPlan (identity), scatters ...
//   DCP_ASSIGN_OR_RETURN(LoadPlan plan, planner.FinishPlan(std::move(mine)));
//   // the storage reader then calls LoadBytes / ResolveTensor per item.
//
// planner/lockstep.h computes every rank's plan in one thread, from a
// Metadata alone.
//
// Per destination key (CreateLocalPlan):
//   missing from the checkpoint   skipped with `allow_partial_load`, else
//                                 NotFound listing every missing key
//   saved as bytes                one kByteIo item (offsets/lengths {0});
//                                 the value replaces the destination leaf
//                                 even if that was a tensor, as in Python
//   saved as a tensor, dest is    read items for one chunk (zeros, sizes)
//     a tensor
//   saved as a tensor, dest is    read items for one chunk per local shard
//     a ShardedTensor             (offsets, shard sizes)
//   saved as a tensor, dest is    InvalidArgument (Python's "expected
//     anything else               BytesStorageMetadata")
// The saved global size must equal the destination's (the tensor's sizes
// or the ShardedTensor's global_size). dtypes may differ: the reader's
// copy casts, as in Python, unless `check_dtype` is set.
//
// Differences from Python:
//   * all missing keys are reported at once (Python names the first);
//   * `strict` also reports checkpoint keys the destination lacks
//     (Python ignores them);
//   * if the saved chunks do not cover a destination chunk exactly once,
//     CreateLocalPlan fails with DataLoss (Python leaves the uncovered part
//     of the destination untouched, i.e. whatever it held before);
//   * `check_dtype` (off by default) rejects dtype mismatches.
// Like Python 2.6, when flattening, checkpoints written by PyTorch <= 2.3
// (which saved dicts and lists without tensors as one bytes value) are
// detected and the destination is re-flattened the old way (§5.5 step 1).
//
// Thread safety: SetUp, the plan phases and FinishPlan from one thread.
// Then ResolveTensor, CommitTensor and LoadBytes may be called
// concurrently for different items; LoadBytes serialises its changes to
// the state dict internally. The caller must not touch the state dict
// until the load returns.
//
// Ownership: `state_dict` passed to SetUp must outlive the planner's use.
// The planner keeps handles to its tensors and a copy of the Metadata
// (SetUp) or a share of the Metadata or of an `IndexedMetadata`
// (SetUpShared), so `metadata` need only live through SetUp.
//
// Cost per rank: SetUp is O(keys of the destination) plus, for SetUp (not
// SetUpShared), copying and indexing the Metadata, O(total saved chunks x
// log). CreateLocalPlan is O(log K) per destination key of a checkpoint of
// K keys, plus O(log S + items) per destination chunk of a tensor saved as
// S chunks (planner/resharding.h), and
// never visits checkpoint keys the destination does not ask for, except to
// list them (with `strict`) or to look for a PyTorch <= 2.3 checkpoint when
// some are not asked for.
#ifndef DCP_PLANNER_DEFAULT_LOAD_PLANNER_H_
#define DCP_PLANNER_DEFAULT_LOAD_PLANNER_H_

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "ATen/core/Tensor.h"
#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/metadata.h"
#include "core/state_dict.h"
#include "planner/load_plan.h"
#include "planner/planner.h"
#include "planner/resharding.h"

namespace dcp {

struct DefaultLoadPlannerOptions {
  // Flatten nested dicts and lists into dotted keys (§5.1), as the default
  // save planner does.
  bool flatten_state_dict = true;
  // Skip destination keys that the checkpoint lacks (they keep their
  // current values) instead of failing.
  bool allow_partial_load = false;
  // Also fail if the checkpoint holds keys the destination does not ask for.
  bool strict = false;
  // Fail if a saved tensor's dtype differs from the destination's instead of
  // casting.
  bool check_dtype = false;
};

class DefaultLoadPlanner : public LoadPlanner {
 public:
  explicit DefaultLoadPlanner(DefaultLoadPlannerOptions options = {});
  DefaultLoadPlanner(const DefaultLoadPlanner&) = delete;
  DefaultLoadPlanner& operator=(const DefaultLoadPlanner&) = delete;

  // Flattens `*state_dict` (kept for LoadBytes) and copies and indexes
  // `metadata.state_dict_metadata` (planner/resharding.h's IndexedMetadata).
  // Unlike Python, tensors are not materialised: the destination must already
  // hold tensors of the right shape. May be called again to plan another load.
  //
  // Errors: InvalidArgument if `state_dict` is null or has duplicated
  // flattened keys.
  absl::Status SetUp(StateDict* state_dict, const Metadata& metadata,
                     bool is_coordinator) override ABSL_LOCKS_EXCLUDED(mu_);

  // As SetUp, reading the checkpoint's Metadata from `metadata`, which the
  // planners of many ranks may share (planner/lockstep.h does): nothing is
  // copied and the saved chunks are indexed once, not once per rank. Only
  // `metadata->metadata().state_dict_metadata` is read.
  //
  // Errors: as SetUp; InvalidArgument if `metadata` is null.
  absl::Status SetUpShared(StateDict* state_dict,
                           std::shared_ptr<const IndexedMetadata> metadata,
                           bool is_coordinator) ABSL_LOCKS_EXCLUDED(mu_);

  // As SetUp, indexing `metadata` in place and keeping a share of it
  // instead of copying its state_dict_metadata. InvalidArgument if null.
  absl::Status SetUpShared(StateDict* state_dict,
                           std::shared_ptr<const Metadata> metadata,
                           bool is_coordinator) override
      ABSL_LOCKS_EXCLUDED(mu_);

  // Read items for every destination key; see the file comment.
  //
  // Errors: FailedPrecondition before SetUp. NotFound
  // `keys missing from checkpoint: "a.b", "c"` listing every missing key
  // (unless allow_partial_load), with strict also
  // `; unexpected keys in checkpoint: "d"` (InvalidArgument when only
  // unexpected keys are found). InvalidArgument naming the key for
  // `size mismatch for "k": saved [4, 4], destination [4, 5]`, a tensor
  // saved for a non-tensor destination, dtype mismatches (with
  // check_dtype), undefined destination tensors and shards that do not fit
  // their global size. DataLoss naming the key if the saved chunks do not
  // tile a destination chunk exactly once.
  absl::StatusOr<LoadPlan> CreateLocalPlan() override;

  // Return their input unchanged.
  absl::StatusOr<std::vector<LoadPlan>> CreateGlobalPlan(
      std::vector<LoadPlan> plans) override;
  absl::StatusOr<LoadPlan> FinishPlan(LoadPlan central_plan) override;

  // Stores `value` at the key's original path in the state dict given to
  // SetUp (replacing the leaf, even a tensor), or at the top-level key
  // without flattening (inserting the key if the state dict lacks it).
  //
  // Errors: FailedPrecondition before SetUp; with flattening, NotFound if
  // the key is not a flattened key of the destination, and InvalidArgument
  // as planner/flatten.h's SetElement.
  absl::Status LoadBytes(const ReadItem& item, Value value) override
      ABSL_LOCKS_EXCLUDED(mu_);

  // A view of the caller's tensor (or of the local shard whose offsets
  // equal `item.dest_index.offset`, probing position `dest_index.index`
  // first) narrowed to `item.lengths` at `item.dest_offsets`. Writing into
  // it writes into the caller's state dict.
  //
  // Errors: FailedPrecondition before SetUp; NotFound naming the key if it
  // is not in the destination or no local shard has the offset;
  // InvalidArgument if the key is not a tensor, a plain tensor is asked for
  // a non-zero offset, or the box does not fit the tensor.
  absl::StatusOr<at::Tensor> ResolveTensor(const ReadItem& item) override;

  // No-op: ResolveTensor's views already alias the destination.
  absl::Status CommitTensor(const ReadItem& item,
                            const at::Tensor& tensor) override;

 private:
  absl::Status UseItems(std::vector<std::pair<std::string, Value>> items,
                        std::map<std::string, ObjectPath> mappings);
  absl::StatusOr<at::Tensor> FindDestination(const ReadItem& item) const;

  DefaultLoadPlannerOptions options_;
  bool set_up_ = false;
  // The caller's state dict; LoadBytes writes into it.
  StateDict* original_ ABSL_PT_GUARDED_BY(mu_) = nullptr;
  // The checkpoint's Metadata and chunk indexes; null before SetUp.
  std::shared_ptr<const IndexedMetadata> saved_;
  // Flattened (or top-level) destination values in traversal order, their
  // positions, and their paths in `*original_`. Read-only once the plan
  // phases are done.
  std::vector<std::pair<std::string, Value>> items_;
  // Keys view the strings of items_ (not copied: one allocation less per
  // key); rebuilt whenever items_ changes.
  absl::flat_hash_map<absl::string_view, size_t> positions_;
  std::map<std::string, ObjectPath> mappings_;
  // std::mutex, not absl::Mutex: TSan cannot see the happens-before edges
  // of Debian's uninstrumented absl::Mutex (README, "Conventions").
  std::mutex mu_;
};

}  // namespace dcp

#endif  // DCP_PLANNER_DEFAULT_LOAD_PLANNER_H_
