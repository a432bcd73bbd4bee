// -----------------------------------------------------------------------------
// File: planner/lockstep.h
// -----------------------------------------------------------------------------
//
// Drives the planning phases of N ranks in one thread, rank by rank, with
// no storage and no collectives. The planners never communicate (see
// planner/planner.h), so this computes exactly what a distributed save or
// load would plan. Uses: tests, tools that inspect how a checkpoint would
// be read into a given layout, and precomputing read plans.
//
//   // Which saved boxes does each of 3 row-sharded ranks read?
//   std::vector<StateDict> dests = ...;  // e.g. ZerosShardAlongDim per rank
//   DCP_ASSIGN_OR_RETURN(std::vector<LoadPlan> plans,
//                        PlanLoadForRanks(metadata, {&dests[0], &dests[1],
//                                                    &dests[2]}));
//
// Rank 0 is the coordinator. Errors from a rank's phase are annotated with
// "rank N: " (or "coordinator: " for the global step) and keep their code.
//
// Thread safety: the functions are thread-compatible; the planners and
// state dicts passed in must not be used concurrently.
//
// Ownership: state dicts and planners are borrowed for the call; with the
// `...WithPlanners` forms the planners stay set up afterwards, so the caller
// can go on to ResolveData / ResolveTensor / LoadBytes (the state dicts must
// then outlive that use).
#ifndef DCP_PLANNER_LOCKSTEP_H_
#define DCP_PLANNER_LOCKSTEP_H_

#include <vector>

#include "absl/status/statusor.h"
#include "core/metadata.h"
#include "core/state_dict.h"
#include "planner/default_load_planner.h"
#include "planner/default_save_planner.h"
#include "planner/load_plan.h"
#include "planner/planner.h"
#include "planner/save_plan.h"

namespace dcp {

// Save planning for `per_rank.size()` ranks with DefaultSavePlanners:
// SetUp and CreateLocalPlan on every rank, CreateGlobalPlan on rank 0, then
// FinishPlan on every rank. Returns the finished plans (by rank) and the
// Metadata (without storage_data).
//
// Errors: InvalidArgument if `per_rank` is empty or holds a null pointer;
// otherwise whatever a phase returns.
absl::StatusOr<GlobalSavePlan> PlanSaveForRanks(
    const std::vector<const StateDict*>& per_rank,
    DefaultSavePlannerOptions options = {});

// As PlanSaveForRanks with caller-provided planners, one per rank
// (`planners.size() == per_rank.size()`). InvalidArgument if the sizes
// differ, are 0, or a planner or state dict is null; Internal if the
// coordinator's CreateGlobalPlan returns another number of plans than
// ranks; otherwise whatever a phase returns.
absl::StatusOr<GlobalSavePlan> PlanSaveWithPlanners(
    const std::vector<SavePlanner*>& planners,
    const std::vector<const StateDict*>& per_rank);

// Load planning for `destinations.size()` ranks from `metadata` alone with
// DefaultLoadPlanners: SetUp and CreateLocalPlan on every rank,
// CreateGlobalPlan on rank 0, FinishPlan on every rank. Returns the finished
// plans by rank. Nothing is read and the destinations are not modified.
//
// Cost: `metadata` is indexed once (planner/resharding.h's IndexedMetadata),
// not copied, and shared by every rank's planner (SetUpShared), so
// each rank costs what its own destination asks for, not the size of the
// whole checkpoint.
//
// Errors: InvalidArgument if `destinations` is empty or holds a null
// pointer; otherwise whatever a phase returns.
absl::StatusOr<std::vector<LoadPlan>> PlanLoadForRanks(
    const Metadata& metadata, std::vector<StateDict*> destinations,
    DefaultLoadPlannerOptions options = {});

// As PlanLoadForRanks with caller-provided planners, one per rank, each set
// up with `LoadPlanner::SetUp(destination, metadata, ...)` (so each copies
// what it needs of `metadata`). Errors as PlanSaveWithPlanners.
absl::StatusOr<std::vector<LoadPlan>> PlanLoadWithPlanners(
    const Metadata& metadata, const std::vector<LoadPlanner*>& planners,
    const std::vector<StateDict*>& destinations);

}  // namespace dcp

#endif  // DCP_PLANNER_LOCKSTEP_H_
