#include "testing/multiprocess.h"

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "core/fault_point.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/status_matchers.h"

namespace dcp::test {
namespace {

using ::testing::Each;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::SizeIs;

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? "<unset>" : value;
}

TEST(MultiprocessTest, WorkersGetRankAndRendezvousEnvironment) {
  // Code before RunWorkers runs in the workers too; code after it does not.
  MultiprocessOptions options;
  options.world_size = 3;
  DCP_ASSERT_OK_AND_ASSIGN(
      std::vector<WorkerResult> workers,
      RunWorkers(options, [](const WorkerContext& worker) {
        EXPECT_TRUE(IsWorker());
        EXPECT_EQ(Env("RANK"), absl::StrCat(worker.rank));
        EXPECT_EQ(Env("WORLD_SIZE"), "3");
        EXPECT_EQ(worker.world_size, 3);
        EXPECT_EQ(Env("DCP_FILE_STORE"), worker.file_store_path);
        EXPECT_THAT(worker.file_store_path, HasSubstr("dcp_multiprocess_"));
        EXPECT_EQ(Env("MASTER_ADDR"), "127.0.0.1");
        EXPECT_EQ(Env("MASTER_PORT"), absl::StrCat(worker.master_port));
        EXPECT_EQ(Env("XML_OUTPUT_FILE"), "<unset>");
        EXPECT_EQ(Env("TEST_PREMATURE_EXIT_FILE"), "<unset>");
        EXPECT_GT(worker.deadline, absl::Now());
        std::printf("hello from rank %d\n", worker.rank);
      }));
  EXPECT_FALSE(IsWorker());
  ASSERT_THAT(workers, SizeIs(3));
  EXPECT_THAT(workers, Each(ExitedWithCode(0)));
  for (int rank = 0; rank < 3; ++rank) {
    EXPECT_EQ(workers[rank].rank, rank);
    EXPECT_GT(workers[rank].pid, 0);
    EXPECT_NE(workers[rank].pid, getpid());
    EXPECT_THAT(workers[rank].output,
                HasSubstr(absl::StrCat("hello from rank ", rank)));
  }
}

TEST(MultiprocessTest, TcpRendezvousHasNoFileStore) {
  MultiprocessOptions options;
  options.world_size = 1;
  options.rendezvous = MultiprocessOptions::Rendezvous::kTcpStore;
  DCP_ASSERT_OK_AND_ASSIGN(std::vector<WorkerResult> workers,
                           RunWorkers(options, [](const WorkerContext& worker) {
                             EXPECT_EQ(Env("DCP_FILE_STORE"), "<unset>");
                             EXPECT_EQ(worker.file_store_path, "");
                             EXPECT_GT(worker.master_port, 0);
                           }));
  EXPECT_THAT(workers, Each(ExitedWithCode(0)));
}

TEST(MultiprocessTest, FailureInAWorkerIsItsExitCode) {
  MultiprocessOptions options;
  options.world_size = 2;
  DCP_ASSERT_OK_AND_ASSIGN(
      std::vector<WorkerResult> workers,
      RunWorkers(options, [](const WorkerContext& worker) {
        if (worker.rank == 1) {
          ADD_FAILURE() << "expected failure in worker 1 (part of the test)";
        }
      }));
  ASSERT_THAT(workers, SizeIs(2));
  EXPECT_THAT(workers[0], ExitedWithCode(0));
  EXPECT_THAT(workers[1], ExitedWithCode(1));
  EXPECT_THAT(workers[1].output, HasSubstr("expected failure in worker 1"));
}

TEST(MultiprocessTest, SigkillAtTheNthVisitOfAFaultPoint) {
  MultiprocessOptions options;
  options.world_size = 2;
  options.sigkill_at = {{1, "test.point", 2}};
  DCP_ASSERT_OK_AND_ASSIGN(std::vector<WorkerResult> workers,
                           RunWorkers(options, [](const WorkerContext& worker) {
                             for (int visit = 1; visit <= 3; ++visit) {
                               DCP_ASSERT_OK(FaultPoint("test.other"));
                               DCP_ASSERT_OK(FaultPoint("test.point"));
                               std::printf("rank %d passed visit %d\n",
                                           worker.rank, visit);
                               std::fflush(stdout);
                             }
                           }));
  ASSERT_THAT(workers, SizeIs(2));
  EXPECT_THAT(workers[0], ExitedWithCode(0));
  EXPECT_THAT(workers[1], KilledBySignal(SIGKILL));
  EXPECT_THAT(workers[1], Not(ExitedWithCode(0)));
  EXPECT_THAT(workers[1].output, HasSubstr("rank 1 passed visit 1"));
  EXPECT_THAT(workers[1].output, Not(HasSubstr("rank 1 passed visit 2")));
  EXPECT_THAT(workers[1].output, HasSubstr("raising SIGKILL"));
  EXPECT_THAT(workers[0].output, HasSubstr("rank 0 passed visit 3"));
}

TEST(MultiprocessTest, StragglerIsKilledAtTheDeadline) {
  MultiprocessOptions options;
  options.world_size = 2;
  options.timeout = absl::Seconds(2);
  DCP_ASSERT_OK_AND_ASSIGN(std::vector<WorkerResult> workers,
                           RunWorkers(options, [](const WorkerContext& worker) {
                             if (worker.rank == 1) {
                               while (true)
                                 pause();  // Hangs until the parent kills it.
                             }
                           }));
  ASSERT_THAT(workers, SizeIs(2));
  EXPECT_THAT(workers[0], ExitedWithCode(0));
  EXPECT_TRUE(workers[1].killed_at_deadline) << workers[1].Describe();
  EXPECT_EQ(workers[1].signal, SIGKILL);
  EXPECT_THAT(workers[1].Describe(),
              HasSubstr("still running at the deadline"));
}

TEST(MultiprocessTest, RejectsBadOptions) {
  if (IsWorker()) GTEST_SKIP();
  MultiprocessOptions options;
  options.world_size = 0;
  EXPECT_THAT(RunWorkers(options, [](const WorkerContext&) {}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  options.world_size = 2;
  options.sigkill_at = {{2, "x"}};
  EXPECT_THAT(
      RunWorkers(options, [](const WorkerContext&) {}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("sigkill_at")));
}

}  // namespace
}  // namespace dcp::test
