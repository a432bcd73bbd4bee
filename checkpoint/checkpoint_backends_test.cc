// End-to-end save and load to a directory, written once
// (testing/checkpoint_e2e.h) and run on two backends: the simulator (one
// thread per rank over a FakeWorld) and real worker processes over
// c10d/Gloo (testing/multiprocess.h). Plus, for processes only, workers
// SIGKILLed in the middle of a save.
#include <signal.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "checkpoint/dist_wrapper.h"
#include "core/status.h"
#include "distributed/c10d_process_group.h"
#include "distributed/process_group.h"
#include "glog/logging.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/checkpoint_e2e.h"
#include "testing/multiprocess.h"
#include "testing/simulator.h"
#include "testing/status_matchers.h"

namespace dcp {
namespace {

using ::dcp::test::AsyncSaveFailingStagingThenRecover;
using ::dcp::test::AsyncSaveModelToDir;
using ::dcp::test::DecodeStatus;
using ::dcp::test::EncodeStatus;
using ::dcp::test::ExitedWithCode;
using ::dcp::test::IsOk;
using ::dcp::test::KilledBySignal;
using ::dcp::test::LoadModelFromDirAndCheck;
using ::dcp::test::MultiprocessOptions;
using ::dcp::test::RankContext;
using ::dcp::test::RunWithFaultAt;
using ::dcp::test::RunWorkers;
using ::dcp::test::SaveModelToDir;
using ::dcp::test::Simulator;
using ::dcp::test::SimulatorOptions;
using ::dcp::test::WorkerContext;
using ::dcp::test::WorkerResult;
using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::SizeIs;

constexpr absl::Duration kTimeout = absl::Seconds(120);

// A fresh directory per test (the same in the parent and in its workers).
std::string TestDir() {
  const ::testing::TestInfo* info =
      ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = absl::StrCat(info->test_suite_name(), ".", info->name());
  std::replace(name.begin(), name.end(), '/', '_');
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir =
      absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/", name);
  std::filesystem::create_directories(dir);
  return dir;
}

// One collective step of a scenario: every rank of a group of
// `world_size` runs `fn`.
struct Step {
  int world_size;
  std::function<absl::Status(std::shared_ptr<ProcessGroup>)> fn;
};

enum class Backend { kSimulator, kProcesses };

// statuses[step][rank].
using StepStatuses = std::vector<std::vector<absl::Status>>;

StepStatuses RunOnSimulator(const std::vector<Step>& steps) {
  StepStatuses out;
  for (const Step& step : steps) {
    SimulatorOptions options;
    options.world_size = step.world_size;
    options.collective_timeout = kTimeout;
    options.seed = 20261206;  // Deterministic: the same interleaving each run.
    absl::StatusOr<std::unique_ptr<Simulator>> sim = Simulator::Create(options);
    CHECK(sim.ok()) << sim.status();
    out.push_back((*sim)->Run(
        [&](RankContext& ctx) { return step.fn(ctx.shared_pg()); }));
  }
  return out;
}

// Runs every step in worker processes (as many as the largest step needs;
// each step makes its own Gloo group of its first `world_size` workers)
// and passes each rank's status back through a file.
StepStatuses RunInProcesses(const std::vector<Step>& steps) {
  const std::string status_dir = TestDir() + "/status";
  std::filesystem::create_directories(status_dir);
  auto status_file = [&](size_t step, int rank) {
    return absl::StrCat(status_dir, "/step", step, ".rank", rank);
  };
  MultiprocessOptions options;
  options.timeout = kTimeout;
  options.world_size = 1;
  for (const Step& step : steps) {
    options.world_size = std::max(options.world_size, step.world_size);
  }
  absl::StatusOr<std::vector<WorkerResult>> workers =
      RunWorkers(options, [&](const WorkerContext& worker) {
        for (size_t i = 0; i < steps.size(); ++i) {
          if (worker.rank >= steps[i].world_size) continue;
          C10dOptions c10d;
          c10d.rank = worker.rank;
          c10d.world_size = steps[i].world_size;
          c10d.file_store_path = absl::StrCat(worker.file_store_path, ".step", i);
          c10d.timeout = absl::Seconds(60);
          absl::Status status;
          {
            absl::StatusOr<std::unique_ptr<C10dProcessGroup>> pg =
                C10dProcessGroup::Create(c10d);
            status = pg.ok() ? steps[i].fn(std::shared_ptr<ProcessGroup>(
                                   *std::move(pg)))
                             : pg.status();
          }
          std::ofstream(status_file(i, worker.rank)) << EncodeStatus(status);
        }
      });
  CHECK(workers.ok()) << workers.status();
  EXPECT_THAT(*workers, Each(ExitedWithCode(0)));
  StepStatuses out;
  for (size_t i = 0; i < steps.size(); ++i) {
    out.emplace_back();
    for (int rank = 0; rank < steps[i].world_size; ++rank) {
      std::ifstream in(status_file(i, rank));
      std::stringstream text;
      text << in.rdbuf();
      absl::Status status = absl::InternalError(
          absl::StrCat("no status from rank ", rank, " in step ", i));
      if (in) {
        absl::Status decoded = DecodeStatus(text.str(), &status);
        if (!decoded.ok()) status = decoded;
      }
      out.back().push_back(status);
    }
  }
  return out;
}

StepStatuses RunSteps(Backend backend, const std::vector<Step>& steps) {
  return backend == Backend::kSimulator ? RunOnSimulator(steps)
                                        : RunInProcesses(steps);
}

std::string BackendName(Backend backend) {
  return backend == Backend::kSimulator ? "simulator" : "processes";
}

// ---- resharding save and load ----------------------------------------------

class CheckpointBackendsTest : public ::testing::TestWithParam<Backend> {};

TEST_P(CheckpointBackendsTest, FourRanksSaveThreeRanksLoadResharded) {
  const std::string dir = TestDir() + "/ckpt";
  StepStatuses statuses = RunSteps(
      GetParam(),
      {{4, [&](auto pg) { return SaveModelToDir(pg, dir, /*value_seed=*/5); }},
       {3, [&](auto pg) {
          return LoadModelFromDirAndCheck(pg, dir, /*value_seed=*/5);
        }}});
  ASSERT_THAT(statuses, SizeIs(2));
  EXPECT_THAT(statuses[0], ElementsAre(IsOk(), IsOk(), IsOk(), IsOk()));
  EXPECT_THAT(statuses[1], ElementsAre(IsOk(), IsOk(), IsOk()));
  EXPECT_TRUE(std::filesystem::exists(dir + "/.metadata"));
}

TEST_P(CheckpointBackendsTest, AsyncSaveKeepsTheValuesAtTheTimeOfTheCall) {
  const std::string dir = TestDir() + "/ckpt";
  StepStatuses statuses = RunSteps(
      GetParam(),
      {{4,
        [&](auto pg) { return AsyncSaveModelToDir(pg, dir, /*value_seed=*/3); }},
       {3, [&](auto pg) {
          return LoadModelFromDirAndCheck(pg, dir, /*value_seed=*/3);
        }}});
  ASSERT_THAT(statuses, SizeIs(2));
  EXPECT_THAT(statuses[0], ElementsAre(IsOk(), IsOk(), IsOk(), IsOk()));
  EXPECT_THAT(statuses[1], ElementsAre(IsOk(), IsOk(), IsOk()));
}

// A failure before the round's first collective (staging, on one rank)
// fails that round on every rank alike, and the next round starts clean.
TEST_P(CheckpointBackendsTest, StagingFailureOnOneRankFailsEveryRankThenRecovers) {
  const std::string dir = TestDir() + "/ckpt";
  StepStatuses statuses = RunSteps(
      GetParam(),
      {{3,
        [&](auto pg) {
          return AsyncSaveFailingStagingThenRecover(pg, dir, /*failing_rank=*/1,
                                                    /*value_seed=*/4);
        }},
       {2, [&](auto pg) {
          return LoadModelFromDirAndCheck(pg, dir, /*value_seed=*/4);
        }}});
  ASSERT_THAT(statuses, SizeIs(2));
  EXPECT_THAT(statuses[0], ElementsAre(IsOk(), IsOk(), IsOk()));
  EXPECT_THAT(statuses[1], ElementsAre(IsOk(), IsOk()));
}

INSTANTIATE_TEST_SUITE_P(Backends, CheckpointBackendsTest,
                         ::testing::Values(Backend::kSimulator,
                                           Backend::kProcesses),
                         [](const auto& info) { return BackendName(info.param); });

// ---- the fault matrix: every phase, every rank that reaches it --------------

// A failure at `point` on `failing_rank`. Phases: plan, write, commit and
// read; points visited by the coordinator alone are failed there only.
struct PhaseFault {
  const char* phase;
  const char* point;
  int failing_rank;  // rank 0 is the coordinator
  bool during_save;
};

constexpr int kMatrixWorld = 3;

std::vector<PhaseFault> FaultMatrix() {
  struct Point {
    const char* phase;
    const char* point;
    bool coordinator_only;
    bool save;
  };
  const Point points[] = {
      {"plan", "save.plan", false, true},
      {"plan", "save.global_plan", true, true},
      {"write", "save.write", false, true},
      {"write", "fs_storage.write_data", false, true},
      {"commit", "save.finish", true, true},
      {"commit", "fs_storage.finish", true, true},
      {"plan", "load.metadata", true, false},
      {"plan", "load.plan", false, false},
      {"plan", "load.global_plan", true, false},
      {"read", "load.read", false, false},
      {"read", "fs_storage.read_data", false, false},
  };
  std::vector<PhaseFault> faults;
  for (const Point& p : points) {
    for (int rank = 0; rank < (p.coordinator_only ? 1 : kMatrixWorld); ++rank) {
      faults.push_back(PhaseFault{p.phase, p.point, rank, p.save});
    }
  }
  return faults;
}

class PhaseFailureBackendsTest
    : public ::testing::TestWithParam<std::tuple<Backend, PhaseFault>> {};

// Save v0; the faulty save (v1) or load; then load v0 and check it. The
// faulty step fails on every rank with the same error naming the failing
// rank (and no rank hangs: every step returns), and the previous
// checkpoint is intact.
TEST_P(PhaseFailureBackendsTest, EveryRankGetsTheSameErrorAndThePreviousCheckpointStays) {
  const auto [backend, fault] = GetParam();
  const std::string dir = TestDir() + "/ckpt";
  std::vector<Step> steps;
  steps.push_back({kMatrixWorld, [&](auto pg) {
                     return SaveModelToDir(pg, dir, /*value_seed=*/0);
                   }});
  steps.push_back({kMatrixWorld, [&, fault = fault](auto pg) {
                     return RunWithFaultAt(pg, dir, fault.during_save,
                                           fault.point, fault.failing_rank,
                                           /*value_seed=*/1);
                   }});
  steps.push_back({kMatrixWorld, [&](auto pg) {
                     return LoadModelFromDirAndCheck(pg, dir, /*value_seed=*/0);
                   }});
  StepStatuses statuses = RunSteps(backend, steps);
  ASSERT_THAT(statuses, SizeIs(3));
  ASSERT_THAT(statuses[0], Each(IsOk()));
  const std::vector<absl::Status>& faulty = statuses[1];
  ASSERT_THAT(faulty, SizeIs(kMatrixWorld));
  for (int rank = 0; rank < kMatrixWorld; ++rank) {
    SCOPED_TRACE(absl::StrCat("rank ", rank));
    EXPECT_THAT(faulty[rank],
                test::StatusIs(
                    absl::StatusCode::kUnavailable,
                    HasSubstr(absl::StrCat(
                        "rank ", fault.failing_rank,
                        ": UNAVAILABLE: injected failure at ", fault.point))));
    EXPECT_THAT(FailedRanks(faulty[rank]), ElementsAre(fault.failing_rank));
    EXPECT_EQ(faulty[rank], faulty[0]);
    EXPECT_EQ(GetCommitOutcome(faulty[rank]), CommitOutcome::kNotCommitted);
  }
  // The previous checkpoint is intact and loads.
  EXPECT_THAT(statuses[2], Each(IsOk()));
}

INSTANTIATE_TEST_SUITE_P(
    Backends, PhaseFailureBackendsTest,
    ::testing::Combine(::testing::Values(Backend::kSimulator,
                                         Backend::kProcesses),
                       ::testing::ValuesIn(FaultMatrix())),
    [](const auto& info) {
      const PhaseFault& fault = std::get<1>(info.param);
      std::string point = fault.point;
      std::replace(point.begin(), point.end(), '.', '_');
      return absl::StrCat(BackendName(std::get<0>(info.param)), "_",
                          fault.phase, "_", point, "_rank",
                          fault.failing_rank);
    });

// ---- processes only: a worker SIGKILLed during a save ----------------------

struct KillCase {
  const char* fault_point;
  int killed_rank;  // rank 0 is the coordinator
};

class SigkillDuringSaveTest : public ::testing::TestWithParam<KillCase> {};

TEST_P(SigkillDuringSaveTest, OthersFailPromptlyAndThePreviousCheckpointStays) {
  constexpr int kWorld = 3;
  const KillCase kill = GetParam();
  const std::string dir = TestDir() + "/ckpt";
  MultiprocessOptions options;
  options.world_size = kWorld;
  options.timeout = kTimeout;
  // The first save passes the point once; the second one dies there.
  options.sigkill_at = {{kill.killed_rank, kill.fault_point, /*nth=*/2}};
  DCP_ASSERT_OK_AND_ASSIGN(
      std::vector<WorkerResult> workers,
      RunWorkers(options, [&](const WorkerContext& worker) {
        C10dOptions c10d;
        c10d.rank = worker.rank;
        c10d.world_size = kWorld;
        c10d.file_store_path = worker.file_store_path;
        c10d.timeout = kTimeout;
        DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<C10dProcessGroup> pg,
                                 C10dProcessGroup::Create(c10d));
        std::shared_ptr<ProcessGroup> shared = std::move(pg);
        test::E2eOptions e2e;
        e2e.collective_timeout = kTimeout;
        DCP_ASSERT_OK(SaveModelToDir(shared, dir, /*value_seed=*/0, e2e));
        const absl::Time start = absl::Now();
        const absl::Status status =
            SaveModelToDir(shared, dir, /*value_seed=*/1, e2e);
        const absl::Duration elapsed = absl::Now() - start;
        std::printf("rank %d: second save: %s after %s\n", worker.rank,
                    status.ToString().c_str(),
                    absl::FormatDuration(elapsed).c_str());
        EXPECT_FALSE(status.ok());
        EXPECT_THAT(std::string(status.message()),
                    HasSubstr(absl::StrCat("rank ", kill.killed_rank)));
        // Far below the 120 s deadlines: nobody waited for the lost rank.
        EXPECT_LT(elapsed, absl::Seconds(30));
      }));
  ASSERT_THAT(workers, SizeIs(kWorld));
  for (int rank = 0; rank < kWorld; ++rank) {
    if (rank == kill.killed_rank) {
      EXPECT_THAT(workers[rank], KilledBySignal(SIGKILL));
    } else {
      EXPECT_THAT(workers[rank], ExitedWithCode(0));
      EXPECT_LT(workers[rank].elapsed, absl::Seconds(60));
    }
  }
  // The checkpoint of the first save is intact and loads, resharded.
  EXPECT_THAT(RunOnSimulator({{2,
                               [&](auto pg) {
                                 return LoadModelFromDirAndCheck(
                                     pg, dir, /*value_seed=*/0);
                               }}}),
              ElementsAre(ElementsAre(IsOk(), IsOk())));
}

INSTANTIATE_TEST_SUITE_P(
    Processes, SigkillDuringSaveTest,
    ::testing::Values(KillCase{"save.write", 2},
                      KillCase{"fs_storage.write_data", 1},
                      KillCase{"fs_storage.finish", 0}),
    [](const auto& info) {
      std::string point = info.param.fault_point;
      std::replace(point.begin(), point.end(), '.', '_');
      return absl::StrCat(point, "_rank", info.param.killed_rank);
    });

}  // namespace
}  // namespace dcp
