#include "core/status.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/cord.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/status_matchers.h"

namespace dcp {
namespace {

using ::dcp::test::IsOk;
using ::dcp::test::StatusIs;
using ::testing::Eq;

absl::Status ReturnIfError(absl::Status status, bool* reached_end) {
  DCP_RETURN_IF_ERROR(status);
  *reached_end = true;
  return absl::OkStatus();
}

TEST(StatusMacrosTest, ReturnIfErrorReturnsErrorsAndContinuesOnOk) {
  bool reached_end = false;
  EXPECT_THAT(ReturnIfError(absl::NotFoundError("gone"), &reached_end),
              StatusIs(absl::StatusCode::kNotFound, Eq("gone")));
  EXPECT_FALSE(reached_end);
  EXPECT_THAT(ReturnIfError(absl::OkStatus(), &reached_end), IsOk());
  EXPECT_TRUE(reached_end);
}

absl::StatusOr<std::string> Twice(absl::StatusOr<std::string> input) {
  DCP_ASSIGN_OR_RETURN(std::string value, std::move(input));
  return value + value;
}

TEST(StatusMacrosTest, AssignOrReturnMovesValueOrReturnsStatus) {
  EXPECT_EQ(*Twice(std::string("ab")), "abab");
  EXPECT_THAT(Twice(absl::DataLossError("torn")),
              StatusIs(absl::StatusCode::kDataLoss, Eq("torn")));
}

TEST(FirstErrorTest, TheFirstErrorInOrderOptionallyLabelled) {
  EXPECT_THAT(FirstError({}), IsOk());
  EXPECT_THAT(FirstError({absl::OkStatus(), absl::OkStatus()}), IsOk());
  const std::vector<absl::Status> statuses = {absl::OkStatus(),
                                              absl::DataLossError("bad"),
                                              absl::InternalError("worse")};
  EXPECT_THAT(FirstError(statuses),
              StatusIs(absl::StatusCode::kDataLoss, "bad"));
  EXPECT_THAT(FirstError(statuses, "rank"),
              StatusIs(absl::StatusCode::kDataLoss, "rank 1: bad"));
}

TEST(AnnotateTest, PrefixesMessageAndKeepsCodeAndPayload) {
  absl::Status status = absl::UnavailableError("disk busy");
  status.SetPayload("dcp/rank", absl::Cord("3"));
  absl::Status annotated = Annotate(status, "writing \"__0_0.distcp\"");
  EXPECT_THAT(annotated, StatusIs(absl::StatusCode::kUnavailable,
                                  Eq("writing \"__0_0.distcp\": disk busy")));
  ASSERT_TRUE(annotated.GetPayload("dcp/rank").has_value());
  EXPECT_EQ(std::string(*annotated.GetPayload("dcp/rank")), "3");
}

TEST(AnnotateTest, OkStaysOk) {
  EXPECT_THAT(Annotate(absl::OkStatus(), "context"), IsOk());
}

TEST(CommitOutcomeTest, OkIsCommittedAndAnUnmarkedErrorIsNot) {
  EXPECT_EQ(GetCommitOutcome(absl::OkStatus()), CommitOutcome::kCommitted);
  EXPECT_EQ(GetCommitOutcome(absl::InternalError("x")),
            CommitOutcome::kNotCommitted);
}

TEST(CommitOutcomeTest, MarkSurvivesAnnotationAndOkStaysOk) {
  for (CommitOutcome outcome :
       {CommitOutcome::kNotCommitted, CommitOutcome::kCommitted,
        CommitOutcome::kUnknown}) {
    absl::Status marked =
        WithCommitOutcome(absl::UnavailableError("sync failed"), outcome);
    EXPECT_EQ(GetCommitOutcome(marked), outcome);
    EXPECT_EQ(GetCommitOutcome(Annotate(marked, "saving")), outcome);
  }
  EXPECT_THAT(WithCommitOutcome(absl::OkStatus(), CommitOutcome::kUnknown),
              IsOk());
  EXPECT_EQ(CommitOutcomeName(CommitOutcome::kUnknown), "unknown");
}

TEST(CommitOutcomeTest, AnUnreadableMarkIsUnknown) {
  absl::Status status = absl::InternalError("x");
  status.SetPayload(kCommitOutcomePayload, absl::Cord("maybe"));
  EXPECT_EQ(GetCommitOutcome(status), CommitOutcome::kUnknown);
}

}  // namespace
}  // namespace dcp
