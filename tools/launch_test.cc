#include "tools/launch.h"

#include <signal.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/status_matchers.h"

namespace dcp::tools {
namespace {

using ::dcp::test::StatusIs;
using ::testing::HasSubstr;
using ::testing::SizeIs;

std::string TmpDir() {
  const char* dir = std::getenv("TEST_TMPDIR");
  return dir != nullptr ? dir : "/tmp";
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(LaunchTest, EveryChildGetsItsRankAndTheRendezvous) {
  const std::string dir = TmpDir();
  LaunchOptions options;
  options.nproc = 3;
  options.master_port = 29613;
  options.command = {
      "/bin/sh", "-c",
      "echo \"$RANK $LOCAL_RANK $WORLD_SIZE $LOCAL_WORLD_SIZE $MASTER_ADDR "
      "$MASTER_PORT\" > \"$0/env.$RANK\"",
      dir};
  std::ostringstream log;
  DCP_ASSERT_OK_AND_ASSIGN(LaunchResult result, Launch(options, log));
  EXPECT_TRUE(result.ok());
  EXPECT_EQ(result.ExitCode(), 0);
  EXPECT_EQ(result.first_failure, -1);
  ASSERT_THAT(result.children, SizeIs(3));
  for (int rank = 0; rank < 3; ++rank) {
    EXPECT_TRUE(result.children[rank].ok()) << result.children[rank].Describe();
    EXPECT_EQ(ReadFile(absl::StrCat(dir, "/env.", rank)),
              absl::StrCat(rank, " ", rank, " 3 3 127.0.0.1 29613\n"));
  }
  EXPECT_THAT(log.str(), HasSubstr("starting 3 processes"));
}

TEST(LaunchTest, PicksAFreePortWhenNoneIsGiven) {
  LaunchOptions options;
  options.nproc = 1;
  options.command = {"/bin/sh", "-c", "test \"$MASTER_PORT\" -gt 0"};
  std::ostringstream log;
  DCP_ASSERT_OK_AND_ASSIGN(LaunchResult result, Launch(options, log));
  EXPECT_TRUE(result.ok()) << log.str();
  EXPECT_GT(result.master_port, 0);
  EXPECT_THAT(log.str(),
              HasSubstr(absl::StrCat("MASTER_PORT=", result.master_port)));
}

TEST(LaunchTest, ExitCodesAreAggregatedAndNamed) {
  LaunchOptions options;
  options.nproc = 3;
  options.command = {"/bin/sh", "-c", "exit $RANK"};
  std::ostringstream log;
  DCP_ASSERT_OK_AND_ASSIGN(LaunchResult result, Launch(options, log));
  EXPECT_FALSE(result.ok());
  ASSERT_THAT(result.children, SizeIs(3));
  for (int rank = 0; rank < 3; ++rank) {
    EXPECT_TRUE(result.children[rank].exited);
    EXPECT_EQ(result.children[rank].exit_code, rank);
    EXPECT_FALSE(result.children[rank].killed_by_launcher);
  }
  ASSERT_GE(result.first_failure, 1);
  EXPECT_EQ(result.ExitCode(), result.first_failure);
  EXPECT_THAT(log.str(), HasSubstr("exited with code 1"));
  EXPECT_THAT(log.str(), HasSubstr("exited with code 2"));
}

TEST(LaunchTest, AFailureKillsTheOthersAfterTheGracePeriod) {
  LaunchOptions options;
  options.nproc = 3;
  options.grace_period = absl::Milliseconds(200);
  // Rank 0 fails; the others would hang forever.
  options.command = {"/bin/sh", "-c",
                     "if [ \"$RANK\" = 0 ]; then exit 3; fi; exec sleep 1000"};
  std::ostringstream log;
  const absl::Time start = absl::Now();
  DCP_ASSERT_OK_AND_ASSIGN(LaunchResult result, Launch(options, log));
  EXPECT_LT(absl::Now() - start, absl::Seconds(60));
  ASSERT_THAT(result.children, SizeIs(3));
  EXPECT_EQ(result.first_failure, 0);
  EXPECT_EQ(result.ExitCode(), 3);
  for (int rank = 1; rank < 3; ++rank) {
    EXPECT_FALSE(result.children[rank].exited);
    EXPECT_EQ(result.children[rank].signal, SIGKILL);
    EXPECT_TRUE(result.children[rank].killed_by_launcher);
    EXPECT_THAT(result.children[rank].Describe(),
                HasSubstr("by dcp launch after another rank failed"));
  }
  EXPECT_THAT(log.str(), HasSubstr("rank 0"));
  EXPECT_THAT(log.str(), HasSubstr("exited with code 3"));
}

TEST(LaunchTest, ASignalIsReportedAs128PlusTheSignal) {
  LaunchOptions options;
  options.nproc = 1;
  options.command = {"/bin/sh", "-c", "kill -TERM $$"};
  std::ostringstream log;
  DCP_ASSERT_OK_AND_ASSIGN(LaunchResult result, Launch(options, log));
  ASSERT_THAT(result.children, SizeIs(1));
  EXPECT_EQ(result.children[0].signal, SIGTERM);
  EXPECT_EQ(result.ExitCode(), 128 + SIGTERM);
  EXPECT_THAT(log.str(), HasSubstr("killed by signal 15"));
}

TEST(LaunchTest, AMissingProgramExitsWith127) {
  LaunchOptions options;
  options.nproc = 2;
  options.grace_period = absl::ZeroDuration();
  options.command = {"/nonexistent/dcp-no-such-program"};
  std::ostringstream log;
  DCP_ASSERT_OK_AND_ASSIGN(LaunchResult result, Launch(options, log));
  EXPECT_FALSE(result.ok());
  EXPECT_EQ(result.ExitCode(), 127);
}

TEST(LaunchTest, RejectsBadOptions) {
  std::ostringstream log;
  LaunchOptions options;
  options.nproc = 0;
  options.command = {"/bin/true"};
  EXPECT_THAT(Launch(options, log), StatusIs(absl::StatusCode::kInvalidArgument,
                                             HasSubstr("--nproc")));
  options.nproc = 1;
  options.command.clear();
  EXPECT_THAT(Launch(options, log), StatusIs(absl::StatusCode::kInvalidArgument,
                                             HasSubstr("no command")));
  options.command = {"/bin/true"};
  options.master_port = 70000;
  EXPECT_THAT(Launch(options, log), StatusIs(absl::StatusCode::kInvalidArgument,
                                             HasSubstr("--master_port")));
}

}  // namespace
}  // namespace dcp::tools
