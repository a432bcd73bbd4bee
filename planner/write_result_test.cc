#include "planner/write_result.h"

#include <sstream>
#include <string>

#include "core/metadata.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dcp {
namespace {

TEST(WriteResultTest, EqualityIgnoresIndexHintOnly) {
  WriteResult a{MetadataIndex("w", Shape{0}, 0), 16,
                StorageInfo{"__0_0.distcp", 0, 16}};
  WriteResult b = a;
  b.index.index = 3;
  EXPECT_EQ(a, b);
  b.size_in_bytes = 17;
  EXPECT_NE(a, b);
  b = a;
  b.storage_data.offset = 8;
  EXPECT_NE(a, b);
  b = a;
  b.index.offset = Shape{1};
  EXPECT_NE(a, b);
}

TEST(WriteResultTest, Prints) {
  std::ostringstream os;
  os << WriteResult{MetadataIndex("w", Shape{0}, 0), 16,
                    StorageInfo{"__0_0.distcp", 32, 16}};
  EXPECT_EQ(os.str(),
            "WriteResult(index=MetadataIndex(fqn=\"w\", offset=[0], index=0), "
            "size_in_bytes=16, storage_data=StorageInfo(relative_path="
            "\"__0_0.distcp\", offset=32, length=16))");
}

}  // namespace
}  // namespace dcp
