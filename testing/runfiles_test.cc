#include "testing/runfiles.h"

#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace dcp::test {
namespace {

TEST(RunfilesTest, FindsADeclaredDataFile) {
  const std::string path = RunfilePath("testing/testdata/runfile.txt");
  std::ifstream file(path);
  ASSERT_TRUE(file.good()) << path;
  std::string line;
  std::getline(file, line);
  EXPECT_EQ(line, "dcp runfile");
}

TEST(RunfilesTest, AMissingFileIsReturnedUnderTheRunfilesTree) {
  const std::string path = RunfilePath("testing/testdata/no_such_file");
  EXPECT_NE(path.find("/dcp/testing/testdata/no_such_file"), std::string::npos)
      << path;
  EXPECT_FALSE(std::ifstream(path).good());
}

}  // namespace
}  // namespace dcp::test
