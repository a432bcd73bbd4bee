#include "planner/lockstep.h"

#include <cstddef>
#include <memory>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "core/metadata.h"
#include "core/state_dict.h"
#include "core/status.h"
#include "planner/default_load_planner.h"
#include "planner/default_save_planner.h"
#include "planner/load_plan.h"
#include "planner/planner.h"
#include "planner/resharding.h"
#include "planner/save_plan.h"

namespace dcp {
namespace {

template <typename Planner, typename StateDictPtr>
absl::Status CheckInputs(const std::vector<Planner*>& planners,
                         const std::vector<StateDictPtr>& state_dicts) {
  if (state_dicts.empty()) {
    return absl::InvalidArgumentError("planning needs at least one rank");
  }
  if (planners.size() != state_dicts.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("got ", planners.size(), " planners for ",
                     state_dicts.size(), " ranks"));
  }
  for (size_t rank = 0; rank < state_dicts.size(); ++rank) {
    if (planners[rank] == nullptr || state_dicts[rank] == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("rank ", rank, ": null planner or state dict"));
    }
  }
  return absl::OkStatus();
}

absl::Status AtRank(size_t rank, const absl::Status& status) {
  return Annotate(status, absl::StrCat("rank ", rank));
}

}  // namespace

absl::StatusOr<GlobalSavePlan> PlanSaveWithPlanners(
    const std::vector<SavePlanner*>& planners,
    const std::vector<const StateDict*>& per_rank) {
  DCP_RETURN_IF_ERROR(CheckInputs(planners, per_rank));
  std::vector<SavePlan> local_plans;
  local_plans.reserve(per_rank.size());
  for (size_t rank = 0; rank < per_rank.size(); ++rank) {
    DCP_RETURN_IF_ERROR(AtRank(
        rank, planners[rank]->SetUp(*per_rank[rank], nullptr, rank == 0)));
    absl::StatusOr<SavePlan> plan = planners[rank]->CreateLocalPlan();
    if (!plan.ok()) return AtRank(rank, plan.status());
    local_plans.push_back(*std::move(plan));
  }
  absl::StatusOr<GlobalSavePlan> global =
      planners[0]->CreateGlobalPlan(std::move(local_plans));
  if (!global.ok()) return Annotate(global.status(), "coordinator");
  if (global->plans.size() != per_rank.size()) {
    return absl::InternalError(absl::StrCat(
        "coordinator: the global save step returned ", global->plans.size(),
        " plans for ", per_rank.size(), " ranks"));
  }
  for (size_t rank = 0; rank < per_rank.size(); ++rank) {
    absl::StatusOr<SavePlan> finished =
        planners[rank]->FinishPlan(std::move(global->plans[rank]));
    if (!finished.ok()) return AtRank(rank, finished.status());
    global->plans[rank] = *std::move(finished);
  }
  return global;
}

absl::StatusOr<GlobalSavePlan> PlanSaveForRanks(
    const std::vector<const StateDict*>& per_rank,
    DefaultSavePlannerOptions options) {
  std::vector<std::unique_ptr<DefaultSavePlanner>> owned;
  std::vector<SavePlanner*> planners;
  for (size_t rank = 0; rank < per_rank.size(); ++rank) {
    owned.push_back(std::make_unique<DefaultSavePlanner>(options));
    planners.push_back(owned.back().get());
  }
  return PlanSaveWithPlanners(planners, per_rank);
}

namespace {

// The load phases for every rank, `set_up(rank)` being rank's SetUp.
absl::StatusOr<std::vector<LoadPlan>> PlanLoad(
    const std::vector<LoadPlanner*>& planners,
    const std::vector<StateDict*>& destinations,
    absl::FunctionRef<absl::Status(size_t rank)> set_up) {
  DCP_RETURN_IF_ERROR(CheckInputs(planners, destinations));
  std::vector<LoadPlan> local_plans;
  local_plans.reserve(destinations.size());
  for (size_t rank = 0; rank < destinations.size(); ++rank) {
    DCP_RETURN_IF_ERROR(AtRank(rank, set_up(rank)));
    absl::StatusOr<LoadPlan> plan = planners[rank]->CreateLocalPlan();
    if (!plan.ok()) return AtRank(rank, plan.status());
    local_plans.push_back(*std::move(plan));
  }
  absl::StatusOr<std::vector<LoadPlan>> global =
      planners[0]->CreateGlobalPlan(std::move(local_plans));
  if (!global.ok()) return Annotate(global.status(), "coordinator");
  if (global->size() != destinations.size()) {
    return absl::InternalError(absl::StrCat(
        "coordinator: the global load step returned ", global->size(),
        " plans for ", destinations.size(), " ranks"));
  }
  for (size_t rank = 0; rank < destinations.size(); ++rank) {
    absl::StatusOr<LoadPlan> finished =
        planners[rank]->FinishPlan(std::move((*global)[rank]));
    if (!finished.ok()) return AtRank(rank, finished.status());
    (*global)[rank] = *std::move(finished);
  }
  return global;
}

}  // namespace

absl::StatusOr<std::vector<LoadPlan>> PlanLoadWithPlanners(
    const Metadata& metadata, const std::vector<LoadPlanner*>& planners,
    const std::vector<StateDict*>& destinations) {
  return PlanLoad(planners, destinations, [&](size_t rank) {
    return planners[rank]->SetUp(destinations[rank], metadata, rank == 0);
  });
}

absl::StatusOr<std::vector<LoadPlan>> PlanLoadForRanks(
    const Metadata& metadata, std::vector<StateDict*> destinations,
    DefaultLoadPlannerOptions options) {
  std::vector<std::unique_ptr<DefaultLoadPlanner>> owned;
  std::vector<LoadPlanner*> planners;
  for (size_t rank = 0; rank < destinations.size(); ++rank) {
    owned.push_back(std::make_unique<DefaultLoadPlanner>(options));
    planners.push_back(owned.back().get());
  }
  // One index of the Metadata for every rank. `metadata` outlives the
  // planners, so it is borrowed, not copied.
  std::shared_ptr<const IndexedMetadata> indexed;
  if (!destinations.empty()) {
    indexed = std::make_shared<const IndexedMetadata>(
        std::shared_ptr<const Metadata>(std::shared_ptr<void>(), &metadata));
  }
  return PlanLoad(planners, destinations, [&](size_t rank) {
    return owned[rank]->SetUpShared(destinations[rank], indexed, rank == 0);
  });
}

}  // namespace dcp
