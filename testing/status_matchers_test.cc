#include "testing/status_matchers.h"

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dcp::test {
namespace {

using ::testing::Eq;
using ::testing::HasSubstr;
using ::testing::Not;

TEST(StatusMatchersTest, IsOkMatchesOnlyOk) {
  EXPECT_THAT(absl::OkStatus(), IsOk());
  EXPECT_THAT(absl::InternalError("x"), Not(IsOk()));
  EXPECT_THAT(absl::StatusOr<int>(3), IsOk());
  EXPECT_THAT(absl::StatusOr<int>(absl::NotFoundError("x")), Not(IsOk()));
}

TEST(StatusMatchersTest, StatusIsChecksCodeAndMessage) {
  absl::Status status = absl::NotFoundError("no .metadata in /c");
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kNotFound, HasSubstr(".metadata")));
  EXPECT_THAT(status, Not(StatusIs(absl::StatusCode::kDataLoss)));
  EXPECT_THAT(status, Not(StatusIs(absl::StatusCode::kNotFound, HasSubstr("xyz"))));
  EXPECT_THAT(absl::StatusOr<int>(status), StatusIs(absl::StatusCode::kNotFound));
}

TEST(StatusMatchersTest, IsOkAndHoldsChecksValue) {
  EXPECT_THAT(absl::StatusOr<std::string>("abc"), IsOkAndHolds(Eq("abc")));
  EXPECT_THAT(absl::StatusOr<std::string>("abc"), Not(IsOkAndHolds(Eq("x"))));
  EXPECT_THAT(absl::StatusOr<std::string>(absl::InternalError("e")),
              Not(IsOkAndHolds(Eq("abc"))));
}

TEST(StatusMatchersTest, AssertOkAndAssignUnwraps) {
  DCP_ASSERT_OK_AND_ASSIGN(int value, absl::StatusOr<int>(7));
  EXPECT_EQ(value, 7);
  DCP_EXPECT_OK(absl::OkStatus());
}

}  // namespace
}  // namespace dcp::test
