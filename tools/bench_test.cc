#include "tools/bench.h"

#include <sstream>
#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/status_matchers.h"

namespace dcp::tools {
namespace {

using ::dcp::test::IsOk;
using ::dcp::test::StatusIs;
using ::testing::HasSubstr;

TEST(BenchTest, TinyRunPrintsEveryCase) {
  BenchOptions options;
  options.size_mb = 1;
  options.world_size = 2;
  options.thread_counts = {1, 2};
  options.fsync_modes = {false};
  options.cold_cache = true;
  std::ostringstream out;
  ASSERT_THAT(RunBench(options, out), IsOk()) << out.str();
  const std::string table = out.str();
  EXPECT_THAT(table, HasSubstr("case     ranks  threads  fsync  layout"));
  // Two thread counts: save, load and reshard (1 rank, column) each.
  EXPECT_THAT(table, HasSubstr("reshard      1        2  off    column"));
  EXPECT_THAT(table, HasSubstr("save         2        1  off    row"));
  EXPECT_THAT(table, HasSubstr("load         2        2  off    row"));
}

TEST(BenchTest, RejectsBadOptions) {
  BenchOptions options;
  options.thread_counts = {0};
  std::ostringstream out;
  EXPECT_THAT(RunBench(options, out),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace dcp::tools
