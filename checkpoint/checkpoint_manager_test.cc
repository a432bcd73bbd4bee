#include "checkpoint/checkpoint_manager.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ATen/ATen.h"
#include "absl/strings/str_cat.h"
#include "core/sharding.h"
#include "core/state_dict.h"
#include "core/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/file_system.h"
#include "testing/fault_injecting_file_system.h"
#include "testing/mem_file_system.h"
#include "testing/simulator.h"
#include "testing/status_matchers.h"
#include "testing/tensor_matchers.h"

namespace dcp {
namespace {

using ::dcp::test::FaultInjectingFileSystem;
using ::dcp::test::IsOk;
using ::dcp::test::IsOkAndHolds;
using ::dcp::test::MemFileSystem;
using ::dcp::test::RankContext;
using ::dcp::test::Simulator;
using ::dcp::test::SimulatorOptions;
using ::dcp::test::StatusIs;
using ::dcp::test::TensorEq;
using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Optional;

constexpr char kRoot[] = "/run";

// The state of `step`: values that differ from step to step.
StateDict StepState(int64_t step) {
  return StateDict{
      {"w", at::arange(12, at::kFloat).view({3, 4}) + static_cast<float>(step)},
      {"step", step}};
}

StateDict Destination() {
  return StateDict{{"w", at::full({3, 4}, -1.0f)}, {"step", int64_t{-1}}};
}

absl::Status ExpectStep(const StateDict& loaded, int64_t step) {
  if (!ValuesEqual(*loaded.Find("step"), Value(step)) ||
      !ValuesEqual(*loaded.Find("w"), *StepState(step).Find("w"))) {
    return absl::InternalError(absl::StrCat("not step ", step, ": ",
                                            ::testing::PrintToString(loaded)));
  }
  return absl::OkStatus();
}

class CheckpointManagerTest : public ::testing::Test {
 protected:
  std::unique_ptr<CheckpointManager> Manager(int max_to_keep = 0,
                                             int64_t keep_period = 0) {
    CheckpointManagerOptions options;
    options.max_to_keep = max_to_keep;
    options.keep_period = keep_period;
    options.file_system = fs_;
    absl::StatusOr<std::unique_ptr<CheckpointManager>> manager =
        CheckpointManager::Create(kRoot, options);
    CHECK(manager.ok()) << manager.status();
    return *std::move(manager);
  }

  std::shared_ptr<FileSystem> fs_ = std::make_shared<MemFileSystem>();
};

TEST_F(CheckpointManagerTest, SavesIntoStepDirectoriesAndRestoresEach) {
  auto manager = Manager();
  EXPECT_EQ(manager->StepDirectory(7), "/run/step_7");
  DCP_ASSERT_OK(manager->Save(1, StepState(1)).status());
  DCP_ASSERT_OK(manager->AsyncSave(20, StepState(20)).result().status());
  EXPECT_THAT(manager->AllSteps(), IsOkAndHolds(ElementsAre(1, 20)));
  EXPECT_THAT(manager->LatestStep(), IsOkAndHolds(Optional(20)));
  for (int64_t step : {1, 20}) {
    StateDict state = Destination();
    DCP_ASSERT_OK(manager->Restore(step, state));
    DCP_EXPECT_OK(ExpectStep(state, step));
  }
  StateDict state = Destination();
  EXPECT_THAT(manager->RestoreLatest(state), IsOkAndHolds(Optional(20)));
  DCP_EXPECT_OK(ExpectStep(state, 20));
}

TEST_F(CheckpointManagerTest, EmptyRootHasNoStepsAndRestoresNothing) {
  auto manager = Manager();
  EXPECT_THAT(manager->AllSteps(), IsOkAndHolds(IsEmpty()));
  EXPECT_THAT(manager->LatestStep(), IsOkAndHolds(std::nullopt));
  StateDict state = Destination();
  EXPECT_THAT(manager->RestoreLatest(state), IsOkAndHolds(std::nullopt));
  EXPECT_EQ(state.Find("step")->get<int64_t>(), -1);
  EXPECT_THAT(manager->Restore(3, state),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("step 3")));
}

TEST_F(CheckpointManagerTest, OnlyCompleteCanonicalStepDirectoriesAreSteps) {
  auto manager = Manager();
  DCP_ASSERT_OK(manager->Save(4, StepState(4)).status());
  // A crashed save (data, no .metadata), names that are not steps, and a
  // file named like a step.
  DCP_ASSERT_OK(fs_->CreateDir("/run/step_9"));
  DCP_ASSERT_OK(fs_->NewWritableFile("/run/step_9/__0_0.distcp").status());
  for (const char* dir : {"/run/step_07", "/run/step_x", "/run/step_",
                          "/run/step_-1", "/run/step_99999999999999999999"}) {
    DCP_ASSERT_OK(fs_->CreateDir(dir));
    DCP_ASSERT_OK(
        fs_->NewWritableFile(absl::StrCat(dir, "/.metadata")).status());
  }
  DCP_ASSERT_OK(fs_->NewWritableFile("/run/step_5").status());
  EXPECT_THAT(manager->AllSteps(), IsOkAndHolds(ElementsAre(4)));
  EXPECT_THAT(manager->LatestStep(), IsOkAndHolds(Optional(4)));
}

TEST_F(CheckpointManagerTest, AnExistingStepIsNeverOverwritten) {
  auto manager = Manager();
  DCP_ASSERT_OK(manager->Save(3, StepState(3)).status());
  EXPECT_THAT(manager->Save(3, StepState(30)).status(),
              StatusIs(absl::StatusCode::kAlreadyExists));
  EXPECT_THAT(manager->AsyncSave(3, StepState(30)).result().status(),
              StatusIs(absl::StatusCode::kAlreadyExists));
  StateDict state = Destination();
  DCP_ASSERT_OK(manager->Restore(3, state));
  DCP_EXPECT_OK(ExpectStep(state, 3));
  EXPECT_THAT(
      manager->Save(-1, StepState(1)).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("negative")));
}

TEST_F(CheckpointManagerTest, KeepsTheNewestStepsAndEveryPeriodicOne) {
  auto manager = Manager(/*max_to_keep=*/2, /*keep_period=*/2);
  std::vector<std::vector<int64_t>> seen;
  for (int64_t step = 1; step <= 5; ++step) {
    DCP_ASSERT_OK(manager->Save(step, StepState(step)).status());
    DCP_ASSERT_OK_AND_ASSIGN(std::vector<int64_t> steps, manager->AllSteps());
    seen.push_back(steps);
  }
  EXPECT_THAT(seen,
              ElementsAre(ElementsAre(1), ElementsAre(1, 2), ElementsAre(2, 3),
                          ElementsAre(2, 3, 4), ElementsAre(2, 4, 5)));
  // Removed steps leave nothing behind.
  EXPECT_THAT(fs_->GetChildren(kRoot),
              IsOkAndHolds(ElementsAre("step_2", "step_4", "step_5")));
}

TEST_F(CheckpointManagerTest, AsyncSavesPruneAfterTheirCommit) {
  auto manager = Manager(/*max_to_keep=*/1);
  std::vector<Future<Metadata>> saves;
  for (int64_t step = 10; step <= 40; step += 10) {
    saves.push_back(manager->AsyncSave(step, StepState(step)));
  }
  for (Future<Metadata>& save : saves) DCP_EXPECT_OK(save.result().status());
  // Each future resolved after its own retention ran.
  DCP_ASSERT_OK(manager->WaitForPendingSaves());
  EXPECT_THAT(manager->AllSteps(), IsOkAndHolds(ElementsAre(40)));
  EXPECT_THAT(fs_->GetChildren(kRoot), IsOkAndHolds(ElementsAre("step_40")));
}

TEST_F(CheckpointManagerTest, JustSavedStepIsKeptEvenIfOlderThanTheNewest) {
  auto manager = Manager(/*max_to_keep=*/1);
  DCP_ASSERT_OK(manager->Save(10, StepState(10)).status());
  DCP_ASSERT_OK(manager->Save(5, StepState(5)).status());
  EXPECT_THAT(manager->AllSteps(), IsOkAndHolds(ElementsAre(5, 10)));
  DCP_ASSERT_OK(manager->Save(11, StepState(11)).status());
  EXPECT_THAT(manager->AllSteps(), IsOkAndHolds(ElementsAre(11)));
}

TEST_F(CheckpointManagerTest, LeftoversOfCrashedSavesBelowACommitAreRemoved) {
  auto manager = Manager(/*max_to_keep=*/3);
  for (const char* dir : {"/run/step_2", "/run/step_8"}) {
    DCP_ASSERT_OK(fs_->CreateDir(dir));
    DCP_ASSERT_OK(
        fs_->NewWritableFile(absl::StrCat(dir, "/__0_0.distcp")).status());
  }
  DCP_ASSERT_OK(manager->Save(5, StepState(5)).status());
  // step_2 is garbage; step_8 could still be written by a save to come.
  EXPECT_THAT(fs_->GetChildren(kRoot),
              IsOkAndHolds(ElementsAre("step_5", "step_8")));
  // A save into the leftover directory of a crashed save succeeds.
  DCP_ASSERT_OK(manager->Save(8, StepState(8)).status());
  StateDict state = Destination();
  EXPECT_THAT(manager->RestoreLatest(state), IsOkAndHolds(Optional(8)));
  DCP_EXPECT_OK(ExpectStep(state, 8));
}

TEST_F(CheckpointManagerTest, BadOptionsAreRefused) {
  CheckpointManagerOptions options;
  options.file_system = fs_;
  EXPECT_THAT(CheckpointManager::Create("", options),
              StatusIs(absl::StatusCode::kInvalidArgument));
  options.max_to_keep = -1;
  EXPECT_THAT(CheckpointManager::Create(kRoot, options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("max_to_keep (-1)")));
}

// A crash after any number of file-system operations of a save and the
// retention after it leaves only complete steps, each restoring exactly.
TEST(CheckpointManagerCrashTest, EveryCrashPointLeavesOnlyCompleteSteps) {
  // Count the operations of the whole sequence once.
  auto count_fs = std::make_shared<FaultInjectingFileSystem>(
      std::make_shared<MemFileSystem>());
  auto run = [](std::shared_ptr<FaultInjectingFileSystem> fs) {
    CheckpointManagerOptions options;
    options.max_to_keep = 1;
    options.file_system = fs;
    absl::StatusOr<std::unique_ptr<CheckpointManager>> manager =
        CheckpointManager::Create(kRoot, options);
    if (!manager.ok()) return manager.status();
    for (int64_t step = 1; step <= 3; ++step) {
      DCP_RETURN_IF_ERROR((*manager)->Save(step, StepState(step)).status());
    }
    return absl::OkStatus();
  };
  DCP_ASSERT_OK(run(count_fs));
  const int total = count_fs->op_count();
  ASSERT_GT(total, 20);

  int crashes = 0;
  size_t max_steps_seen = 0;
  for (int n = 0; n <= total; ++n) {
    SCOPED_TRACE(absl::StrCat("crash after ", n, " of ", total, " operations"));
    auto fs = std::make_shared<FaultInjectingFileSystem>(
        std::make_shared<MemFileSystem>());
    fs->CrashAfterOps(n);
    run(fs).IgnoreError();  // Aborted if it crashed.
    crashes += fs->crashed() ? 1 : 0;
    DCP_ASSERT_OK(fs->Restart());

    CheckpointManagerOptions options;
    options.file_system = fs;
    DCP_ASSERT_OK_AND_ASSIGN(auto manager,
                             CheckpointManager::Create(kRoot, options));
    DCP_ASSERT_OK_AND_ASSIGN(std::vector<int64_t> steps, manager->AllSteps());
    max_steps_seen = std::max(max_steps_seen, steps.size());
    if (n == total) {  // No crash: everything the run did is durable.
      EXPECT_THAT(steps, ElementsAre(3));
    }
    for (int64_t step : steps) {
      StateDict state = Destination();
      DCP_ASSERT_OK(manager->Restore(step, state)) << "step " << step;
      DCP_EXPECT_OK(ExpectStep(state, step));
    }
  }
  EXPECT_EQ(crashes, total);
  // Some crash points leave two steps (a step committed, the older one not
  // removed yet): the test sees real checkpoints, not an empty root.
  EXPECT_EQ(max_steps_seen, 2);
}

TEST(CheckpointManagerMultiRankTest, AsyncSavesOnTwoRanksRestoreOnThree) {
  auto fs = std::make_shared<MemFileSystem>();
  auto run = [&](int world_size, auto body) {
    SimulatorOptions sim_options;
    sim_options.world_size = world_size;
    sim_options.collective_timeout = absl::Seconds(60);
    absl::StatusOr<std::unique_ptr<Simulator>> sim =
        Simulator::Create(sim_options);
    CHECK(sim.ok()) << sim.status();
    return (*sim)->Run([&](RankContext& ctx) -> absl::Status {
      CheckpointManagerOptions options;
      options.checkpointer.process_group = ctx.shared_pg();
      options.checkpointer.collective_timeout = absl::Seconds(60);
      options.max_to_keep = 2;
      options.file_system = fs;
      DCP_ASSIGN_OR_RETURN(auto manager,
                           CheckpointManager::Create(kRoot, options));
      return body(ctx, *manager);
    });
  };
  const at::Tensor full = at::arange(24, at::kFloat).view({6, 4});
  auto sharded = [&](RankContext& ctx, float offset) {
    return ShardAlongDim(full + offset, 0, ctx.rank(), ctx.world_size());
  };
  EXPECT_THAT(
      run(2,
          [&](RankContext& ctx, CheckpointManager& manager) -> absl::Status {
            for (int64_t step = 1; step <= 3; ++step) {
              DCP_ASSIGN_OR_RETURN(ShardedTensor w,
                                   sharded(ctx, static_cast<float>(step)));
              // Waited for below, through WaitForPendingSaves.
              (void)manager.AsyncSave(step,
                                      StateDict{{"w", w}, {"step", step}});
            }
            return manager.WaitForPendingSaves();
          }),
      Each(IsOk()));
  EXPECT_THAT(
      run(3,
          [&](RankContext& ctx, CheckpointManager& manager) -> absl::Status {
            DCP_ASSIGN_OR_RETURN(std::vector<int64_t> steps,
                                 manager.AllSteps());
            if (steps != std::vector<int64_t>{2, 3}) {
              return absl::InternalError("steps differ from {2, 3}");
            }
            DCP_ASSIGN_OR_RETURN(ShardedTensor w, sharded(ctx, 0.0f));
            for (Shard& shard : w.local_shards) shard.tensor.fill_(-1.0f);
            StateDict state{{"w", w}, {"step", int64_t{0}}};
            DCP_ASSIGN_OR_RETURN(std::optional<int64_t> latest,
                                 manager.RestoreLatest(state));
            if (latest != 3 || state.Find("step")->get<int64_t>() != 3) {
              return absl::InternalError("did not restore step 3");
            }
            DCP_ASSIGN_OR_RETURN(ShardedTensor want, sharded(ctx, 3.0f));
            if (!ValuesEqual(Value(w), Value(want))) {
              return absl::InternalError("restored values differ");
            }
            return absl::OkStatus();
          }),
      Each(IsOk()));
}

TEST(CheckpointManagerMultiRankTest, CoordinatorListingFailureFailsEveryRankAlike) {
  auto base = std::make_shared<MemFileSystem>();
  {
    CheckpointManagerOptions options;
    options.file_system = base;
    DCP_ASSERT_OK_AND_ASSIGN(auto manager,
                             CheckpointManager::Create(kRoot, options));
    DCP_ASSERT_OK(manager->Save(4, StepState(4)).status());
  }
  // Only rank 0, the coordinator, cannot list the root.
  auto faulty = std::make_shared<FaultInjectingFileSystem>(base);
  faulty->AddRule({test::FileOp::kList, "/run", /*nth=*/1, /*times=*/1000,
                   absl::UnavailableError("injected listing fault")});
  SimulatorOptions sim_options;
  sim_options.world_size = 2;
  sim_options.collective_timeout = absl::Seconds(60);
  sim_options.seed = 7;
  DCP_ASSERT_OK_AND_ASSIGN(auto sim, Simulator::Create(sim_options));
  std::vector<absl::Status> statuses =
      sim->Run([&](RankContext& ctx) -> absl::Status {
        CheckpointManagerOptions options;
        options.checkpointer.process_group = ctx.shared_pg();
        options.checkpointer.collective_timeout = absl::Seconds(60);
        options.file_system =
            ctx.rank() == 0 ? std::shared_ptr<FileSystem>(faulty) : base;
        DCP_ASSIGN_OR_RETURN(auto manager,
                             CheckpointManager::Create(kRoot, options));
        StateDict state = Destination();
        absl::Status status = manager->RestoreLatest(state).status();
        if (state.Find("step")->get<int64_t>() != -1) {
          return absl::InternalError("a rank loaded despite the failure");
        }
        return status;
      });
  ASSERT_EQ(statuses.size(), 2u);
  EXPECT_THAT(statuses[0], StatusIs(absl::StatusCode::kUnavailable,
                                    HasSubstr("injected listing fault")));
  EXPECT_EQ(statuses[0], statuses[1]);
}

}  // namespace
}  // namespace dcp
