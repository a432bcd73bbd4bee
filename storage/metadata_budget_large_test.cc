// 100,000 realistic `.metadata` keys decode within the default decoded-size
// budget (issue 9): the budget is proportional to the file, and PyTorch's
// files reference each string only a few times. Separate from
// metadata_pickle_test because it takes a minute unoptimised.
#include <string>

#include "core/metadata.h"
#include "gtest/gtest.h"
#include "storage/hostile_metadata_testutil.h"
#include "storage/metadata_pickle.h"
#include "testing/status_matchers.h"

namespace dcp {
namespace {

TEST(MetadataBudgetLargeTest, HundredThousandLongKeysDecode) {
  constexpr int kKeys = 100000;
  constexpr size_t kNameBytes = 150;
  const std::string pickle =
      dcp::test::RealisticMetadataPickle(kKeys, kNameBytes, 1);
  DCP_ASSERT_OK_AND_ASSIGN(Metadata md, DecodeMetadataPickle(pickle));
  EXPECT_EQ(md.state_dict_metadata.size(), kKeys);
  EXPECT_EQ(md.planner_data.size(), kKeys);
  ASSERT_EQ(md.storage_data.size(), kKeys);
  for (int i : {0, kKeys / 2, kKeys - 1}) {
    const std::string fqn = dcp::test::RealisticFqn(i, kNameBytes);
    EXPECT_EQ(md.state_dict_metadata.count(fqn), 1u) << fqn;
    EXPECT_EQ(md.storage_data.count(MetadataIndex(fqn, Shape{0, 0})), 1u)
        << fqn;
  }
}

}  // namespace
}  // namespace dcp
