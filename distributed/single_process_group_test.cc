#include "distributed/single_process_group.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "distributed/process_group.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/status_matchers.h"

namespace dcp {
namespace {

using ::dcp::test::IsOk;
using ::dcp::test::IsOkAndHolds;
using ::dcp::test::StatusIs;
using ::testing::ElementsAre;
using ::testing::Eq;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::NotNull;

absl::Time Deadline() { return absl::Now() + absl::Seconds(10); }

TEST(SingleProcessGroupTest, IsRankZeroOfOne) {
  SingleProcessGroup pg;
  EXPECT_EQ(pg.rank(), 0);
  EXPECT_EQ(pg.size(), 1);
}

TEST(SingleProcessGroupTest, CollectivesReturnTheOnlyRanksPayload) {
  SingleProcessGroup pg;
  EXPECT_THAT(pg.Barrier("b", Deadline()), IsOk());
  EXPECT_THAT(pg.Broadcast("meta", 0, "hello", Deadline()),
              IsOkAndHolds(Eq("hello")));
  EXPECT_THAT(pg.Gather("plan", 0, "p0", Deadline()),
              IsOkAndHolds(ElementsAre("p0")));
  EXPECT_THAT(pg.AllGather("plan", "a0", Deadline()),
              IsOkAndHolds(ElementsAre("a0")));
  EXPECT_THAT(pg.Scatter("plan", 0, {"s0"}, Deadline()),
              IsOkAndHolds(Eq("s0")));
}

TEST(SingleProcessGroupTest, DeadlinesAreIgnoredBecauseNobodyIsAwaited) {
  SingleProcessGroup pg;
  EXPECT_THAT(pg.Barrier("b", absl::InfinitePast()), IsOk());
  EXPECT_THAT(pg.AllGather("x", "y", absl::InfinitePast()),
              IsOkAndHolds(ElementsAre("y")));
}

TEST(SingleProcessGroupTest, EmptyAndBinaryPayloadsRoundTrip) {
  SingleProcessGroup pg;
  const std::string binary("\0\xff\n", 3);
  EXPECT_THAT(pg.Broadcast("b", 0, binary, Deadline()),
              IsOkAndHolds(Eq(binary)));
  EXPECT_THAT(pg.Gather("g", 0, "", Deadline()),
              IsOkAndHolds(ElementsAre(IsEmpty())));
}

TEST(SingleProcessGroupTest, NonZeroRootIsInvalidArgument) {
  SingleProcessGroup pg;
  EXPECT_THAT(pg.Broadcast("meta", 1, "x", Deadline()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("Broadcast(tag=\"meta\"): root 1")));
  EXPECT_THAT(pg.Gather("plan", -1, "x", Deadline()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("root -1")));
  EXPECT_THAT(pg.Scatter("plan", 2, {"x"}, Deadline()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("root 2")));
}

TEST(SingleProcessGroupTest, ScatterNeedsExactlyOnePayload) {
  SingleProcessGroup pg;
  EXPECT_THAT(pg.Scatter("plan", 0, {}, Deadline()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("passed 0 payloads")));
  EXPECT_THAT(pg.Scatter("plan", 0, {"a", "b"}, Deadline()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("passed 2 payloads")));
}

TEST(SingleProcessGroupTest, ForkReturnsANewIndependentWorldOfOne) {
  SingleProcessGroup pg;
  DCP_ASSERT_OK_AND_ASSIGN(std::shared_ptr<ProcessGroup> forked,
                           pg.Fork("background", Deadline()));
  ASSERT_THAT(forked, NotNull());
  EXPECT_NE(forked.get(), static_cast<ProcessGroup*>(&pg));
  EXPECT_EQ(forked->rank(), 0);
  EXPECT_EQ(forked->size(), 1);
  EXPECT_THAT(forked->AllGather("x", "y", Deadline()),
              IsOkAndHolds(ElementsAre("y")));
  DCP_ASSERT_OK_AND_ASSIGN(std::shared_ptr<ProcessGroup> again,
                           pg.Fork("background", Deadline()));
  EXPECT_NE(again.get(), forked.get());
}

}  // namespace
}  // namespace dcp
