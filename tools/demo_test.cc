#include "tools/demo.h"

#include <sstream>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/file_system.h"
#include "storage/posix_file_system.h"
#include "testing/status_matchers.h"
#include "tools/model_state.h"

namespace dcp::tools {
namespace {

using ::dcp::test::IsOk;
using ::dcp::test::StatusIs;
using ::testing::HasSubstr;

DemoOptions SmallDemo(absl::string_view name) {
  DemoOptions options;
  options.dir = JoinPath(::testing::TempDir(), name);
  options.model.vocab = 37;
  options.model.hidden = 12;
  options.model.layers = 2;
  options.sync_files = false;
  return options;
}

TEST(DemoTest, SavesWithFourRanksLoadsWithThreeColumnShardsAndVerifies) {
  DemoOptions options = SmallDemo("demo_col");
  std::ostringstream out;
  ASSERT_THAT(RunDemo(options, out), IsOk()) << out.str();
  const std::string report = out.str();
  EXPECT_THAT(report, HasSubstr(absl::StrCat("checkpoint: ", options.dir)));
  EXPECT_THAT(report, HasSubstr("model: 2 layers, hidden 12, vocab 37"));
  EXPECT_THAT(report, HasSubstr("files      6\n"));  // 4 ranks, .metadata, .dcp.metadata
  EXPECT_THAT(report, HasSubstr("(4 ranks, row-sharded)"));
  EXPECT_THAT(report, HasSubstr("(3 ranks, column-sharded)"));
  EXPECT_THAT(report, HasSubstr("GB/s"));
  // 17 parameters, each with step, exp_avg and exp_avg_sq.
  EXPECT_THAT(report, HasSubstr("verified 68 tensors, "));
  EXPECT_THAT(report, HasSubstr(" elements: OK\n"));
  PosixFileSystem fs;
  EXPECT_THAT(fs.FileExists(JoinPath(options.dir, ".metadata")), IsOk());
}

TEST(DemoTest, GridLoadAndMoreThreads) {
  DemoOptions options = SmallDemo("demo_grid");
  options.save_ranks = 2;
  options.load_ranks = 4;
  options.load_layout = Layout::kGrid;
  options.thread_count = 2;
  std::ostringstream out;
  ASSERT_THAT(RunDemo(options, out), IsOk()) << out.str();
  EXPECT_THAT(out.str(), HasSubstr("(4 ranks, grid-sharded)"));
  EXPECT_THAT(out.str(), HasSubstr("elements: OK"));
}

TEST(DemoTest, ProgressGoesToTheProgressStream) {
  DemoOptions options = SmallDemo("demo_progress");
  std::ostringstream out, progress;
  options.progress = &progress;
  ASSERT_THAT(RunDemo(options, out), IsOk());
  EXPECT_THAT(progress.str(), HasSubstr("saving... 4/4 ranks done\n"));
  EXPECT_THAT(progress.str(), HasSubstr("loading... 3/3 ranks done\n"));
  EXPECT_THAT(out.str(), ::testing::Not(HasSubstr("ranks done")));
}

TEST(DemoTest, RejectsBadRankCountsAndReportsSaveErrors) {
  DemoOptions options = SmallDemo("demo_bad");
  options.load_ranks = 0;
  std::ostringstream out;
  EXPECT_THAT(RunDemo(options, out),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // A checkpoint directory below a regular file cannot be created.
  PosixFileSystem fs;
  const std::string file = JoinPath(::testing::TempDir(), "demo_plain_file");
  ASSERT_THAT(WriteStringToFile(fs, file, "x", false), IsOk());
  options = SmallDemo("unused");
  options.dir = JoinPath(file, "ckpt");
  EXPECT_FALSE(RunDemo(options, out).ok());
}

}  // namespace
}  // namespace dcp::tools
