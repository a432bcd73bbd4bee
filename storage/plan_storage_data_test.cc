#include "storage/plan_storage_data.h"

#include <set>
#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/status_matchers.h"

namespace dcp::storage_internal {
namespace {

using ::dcp::test::IsOkAndHolds;
using ::dcp::test::StatusIs;
using ::testing::AllOf;
using ::testing::Field;
using ::testing::HasSubstr;

TEST(DescribeIndexTest, QuotesAndEscapesTheFqnAndShowsTheOffset) {
  EXPECT_EQ(DescribeIndex(MetadataIndex("a.b")), "\"a.b\"");
  EXPECT_EQ(DescribeIndex(MetadataIndex("x\ny", Shape{0, 4})),
            "\"x\\ny\" offset [0, 4]");
}

TEST(RandomUuidTest, IsAVersion4UuidAndDiffersEachTime) {
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    const std::string uuid = RandomUuid();
    ASSERT_EQ(uuid.size(), 36u) << uuid;
    EXPECT_EQ(uuid[8], '-');
    EXPECT_EQ(uuid[14], '4') << uuid;
    EXPECT_NE(std::string("89ab").find(uuid[19]), std::string::npos) << uuid;
    seen.insert(uuid);
  }
  EXPECT_EQ(seen.size(), 100u);
}

TEST(PlanStorageDataTest, RoundTrips) {
  const std::string data = EncodePlanStorageData("dcp-x-save", "tok3n", 12);
  EXPECT_EQ(data, "dcp-x-save:tok3n:__12_");
  EXPECT_THAT(DecodePlanStorageData("dcp-x-save", data, "XWriter"),
              IsOkAndHolds(AllOf(Field(&PlanStorageData::token, "tok3n"),
                                 Field(&PlanStorageData::prefix, "__12_"))));
}

TEST(PlanStorageDataTest, EmptyDataIsFailedPreconditionNamingTheWriter) {
  EXPECT_THAT(DecodePlanStorageData("dcp-x-save", "", "XWriter"),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("XWriter::PrepareGlobalPlan")));
}

TEST(PlanStorageDataTest, ForeignOrMalformedDataIsInvalidArgument) {
  for (const char* data :
       {"dcp-y-save:tok:__1_", "dcp-x-save::__1_", "dcp-x-save:tok:1_",
        "dcp-x-save:tok:__1", "dcp-x-save:t/k:__1_", "dcp-x-save:tok:__/_",
        "dcp-x-save:tok:__1_:extra"}) {
    EXPECT_THAT(DecodePlanStorageData("dcp-x-save", data, "XWriter"),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("was not written by a XWriter")))
        << data;
  }
}

}  // namespace
}  // namespace dcp::storage_internal
