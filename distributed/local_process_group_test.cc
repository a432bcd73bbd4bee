#include "distributed/local_process_group.h"

#include <memory>
#include <stdexcept>
#include <string>
#include <thread>  // NOLINT(build/c++11)
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/status.h"
#include "distributed/process_group.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/status_matchers.h"

namespace dcp {
namespace {

using ::dcp::test::IsOk;
using ::dcp::test::IsOkAndHolds;
using ::dcp::test::StatusIs;
using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

absl::Time Soon() { return absl::Now() + absl::Seconds(60); }

TEST(LocalWorldTest, CollectivesReturnResultsIndexedByRank) {
  std::vector<absl::Status> statuses = RunLocalRanks(
      3, [](int rank, const std::shared_ptr<ProcessGroup>& pg) -> absl::Status {
        EXPECT_EQ(pg->rank(), rank);
        EXPECT_EQ(pg->size(), 3);
        const std::string mine = absl::StrCat("r", rank);
        EXPECT_THAT(pg->AllGather("all", mine, Soon()),
                    IsOkAndHolds(ElementsAre("r0", "r1", "r2")));
        absl::StatusOr<std::vector<std::string>> gathered =
            pg->Gather("gather", 1, mine, Soon());
        if (rank == 1) {
          EXPECT_THAT(gathered, IsOkAndHolds(ElementsAre("r0", "r1", "r2")));
        } else {
          EXPECT_THAT(gathered, IsOkAndHolds(IsEmpty()));
        }
        EXPECT_THAT(pg->Broadcast("bcast", 2, mine, Soon()),
                    IsOkAndHolds("r2"));
        std::vector<std::string> payloads;
        if (rank == 0) payloads = {"to0", "to1", "to2"};
        EXPECT_THAT(pg->Scatter("scatter", 0, payloads, Soon()),
                    IsOkAndHolds(absl::StrCat("to", rank)));
        return pg->Barrier("done", Soon());
      });
  EXPECT_THAT(statuses, Each(IsOk()));
}

TEST(LocalWorldTest, ManyCallsInARowStayInOrder) {
  std::vector<absl::Status> statuses = RunLocalRanks(
      4, [](int rank, const std::shared_ptr<ProcessGroup>& pg) -> absl::Status {
        for (int i = 0; i < 200; ++i) {
          DCP_ASSIGN_OR_RETURN(
              std::vector<std::string> all,
              pg->AllGather("step", absl::StrCat(i, ":", rank), Soon()));
          EXPECT_THAT(all, ElementsAre(absl::StrCat(i, ":0"),
                                       absl::StrCat(i, ":1"),
                                       absl::StrCat(i, ":2"),
                                       absl::StrCat(i, ":3")));
        }
        return absl::OkStatus();
      });
  EXPECT_THAT(statuses, Each(IsOk()));
}

TEST(LocalWorldTest, MismatchedCallsFailOnEveryRank) {
  std::vector<absl::Status> statuses = RunLocalRanks(
      2, [](int rank, const std::shared_ptr<ProcessGroup>& pg) -> absl::Status {
        if (rank == 0) return pg->Gather("plan", 0, "x", Soon()).status();
        return pg->Broadcast("plan", 0, "x", Soon()).status();
      });
  // Whichever rank arrives second detects the mismatch; the waiting one is
  // woken with the same error.
  EXPECT_THAT(statuses, Each(StatusIs(absl::StatusCode::kFailedPrecondition,
                                      HasSubstr("collective mismatch"))));
  EXPECT_THAT(statuses[0].message(), HasSubstr("call #0"));
}

TEST(LocalWorldTest, MissingRankMakesTheCallTimeOut) {
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<LocalWorld> world,
                           LocalWorld::Create(3));
  std::shared_ptr<ProcessGroup> rank0 = world->Rank(0);
  // A deadline in the past: the call gives up at once.
  EXPECT_THAT(
      rank0->AllGather("x", "payload", absl::Now() - absl::Seconds(1)).status(),
      StatusIs(absl::StatusCode::kDeadlineExceeded,
               HasSubstr("call #0 AllGather(tag=\"x\") timed out: ranks 1, 2 "
                         "did not arrive")));
  // A rank arriving later at the timed-out call gets the same error.
  EXPECT_THAT(world->Rank(1)->AllGather("x", "p", Soon()).status(),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
}

TEST(LocalWorldTest, AbortWakesWaitersAndFailsLaterCalls) {
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<LocalWorld> world,
                           LocalWorld::Create(2));
  std::shared_ptr<ProcessGroup> rank0 = world->Rank(0);
  absl::Status waited;
  std::thread waiter(
      [&] { waited = rank0->Barrier("b", absl::InfiniteFuture()); });
  world->Abort(absl::UnavailableError("disk gone"));
  waiter.join();
  EXPECT_THAT(waited, StatusIs(absl::StatusCode::kAborted,
                               HasSubstr("world aborted: UNAVAILABLE: disk gone")));
  EXPECT_THAT(world->Rank(1)->Barrier("c", Soon()),
              StatusIs(absl::StatusCode::kAborted));
}

TEST(LocalWorldTest, ExitedRankFailsCallsItDidNotJoin) {
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<LocalWorld> world,
                           LocalWorld::Create(2));
  world->RankExited(1);
  EXPECT_THAT(world->Rank(0)->Barrier("late", absl::InfiniteFuture()),
              StatusIs(absl::StatusCode::kAborted,
                       HasSubstr("rank 1 exited before joining call #0 "
                                 "Barrier(tag=\"late\")")));
}

TEST(LocalWorldTest, FailingRankAbortsTheOthers) {
  std::vector<absl::Status> statuses = RunLocalRanks(
      3, [](int rank, const std::shared_ptr<ProcessGroup>& pg) -> absl::Status {
        if (rank == 1) return absl::InternalError("boom");
        // Would wait forever without the abort.
        return pg->Barrier("never", absl::InfiniteFuture());
      });
  EXPECT_THAT(statuses[1], StatusIs(absl::StatusCode::kInternal, "boom"));
  for (int r : {0, 2}) {
    EXPECT_THAT(statuses[r], StatusIs(absl::StatusCode::kAborted,
                                      HasSubstr("rank 1 failed: boom")));
  }
}

TEST(LocalWorldTest, RankThatReturnsEarlyDoesNotHangTheOthers) {
  std::vector<absl::Status> statuses = RunLocalRanks(
      2, [](int rank, const std::shared_ptr<ProcessGroup>& pg) -> absl::Status {
        if (rank == 0) return absl::OkStatus();
        return pg->Barrier("orphan", absl::InfiniteFuture());
      });
  EXPECT_THAT(statuses[0], IsOk());
  EXPECT_THAT(statuses[1], StatusIs(absl::StatusCode::kAborted,
                                    HasSubstr("rank 0 exited")));
}

TEST(LocalWorldTest, ExceptionsBecomeInternalErrors) {
  std::vector<absl::Status> statuses = RunLocalRanks(
      2, [](int rank, const std::shared_ptr<ProcessGroup>& pg) -> absl::Status {
        if (rank == 0) throw std::runtime_error("oops");
        return pg->Barrier("b", absl::InfiniteFuture());
      });
  EXPECT_THAT(statuses[0], StatusIs(absl::StatusCode::kInternal,
                                    HasSubstr("rank 0 threw: oops")));
  EXPECT_THAT(statuses[1], StatusIs(absl::StatusCode::kAborted));
}

TEST(LocalWorldTest, InvalidArgumentsFailTheCallerAndAbortTheCall) {
  std::vector<absl::Status> statuses = RunLocalRanks(
      2, [](int rank, const std::shared_ptr<ProcessGroup>& pg) -> absl::Status {
        // The root passes one payload for two ranks.
        std::vector<std::string> payloads;
        if (rank == 0) payloads = {"only one"};
        return pg->Scatter("s", 0, payloads, absl::InfiniteFuture()).status();
      });
  EXPECT_THAT(statuses[0], StatusIs(absl::StatusCode::kInvalidArgument,
                                    HasSubstr("1 payloads")));
  EXPECT_THAT(statuses[1], StatusIs(absl::StatusCode::kAborted));

  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<LocalWorld> world,
                           LocalWorld::Create(1));
  EXPECT_THAT(world->Rank(0)->Broadcast("b", 5, "x", Soon()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("root 5 is out of range")));
}

TEST(LocalWorldTest, ForkedCommunicatorIsIndependent) {
  std::vector<absl::Status> statuses = RunLocalRanks(
      2, [](int rank, const std::shared_ptr<ProcessGroup>& pg) -> absl::Status {
        DCP_ASSIGN_OR_RETURN(std::shared_ptr<ProcessGroup> fork,
                             pg->Fork("bg", Soon()));
        EXPECT_EQ(fork->rank(), rank);
        // A background thread uses the fork while the rank's own thread
        // uses the world; neither call can match the other's.
        absl::StatusOr<std::vector<std::string>> background;
        std::thread t([&] {
          background = fork->AllGather("bg", absl::StrCat("b", rank), Soon());
        });
        absl::StatusOr<std::vector<std::string>> foreground =
            pg->AllGather("fg", absl::StrCat("f", rank), Soon());
        t.join();
        EXPECT_THAT(background, IsOkAndHolds(ElementsAre("b0", "b1")));
        EXPECT_THAT(foreground, IsOkAndHolds(ElementsAre("f0", "f1")));
        return absl::OkStatus();
      });
  EXPECT_THAT(statuses, Each(IsOk()));
}

TEST(LocalWorldTest, RejectsBadWorldSizes) {
  EXPECT_THAT(LocalWorld::Create(0).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(RunLocalRanks(0, [](int, const std::shared_ptr<ProcessGroup>&) {
                return absl::OkStatus();
              }),
              IsEmpty());
}

}  // namespace
}  // namespace dcp
