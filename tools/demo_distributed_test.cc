// `RunDistributedDemo` on simulated ranks (threads); the same code runs one
// rank per process under `dcp launch` (see launch_demo_test.sh).
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/simulator.h"
#include "testing/status_matchers.h"
#include "tools/demo.h"

namespace dcp::tools {
namespace {

using ::dcp::test::IsOk;
using ::dcp::test::RankContext;
using ::dcp::test::Simulator;
using ::dcp::test::SimulatorOptions;
using ::dcp::test::StatusIs;
using ::testing::Each;
using ::testing::HasSubstr;

std::string TmpDir(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return absl::StrCat(dir != nullptr ? dir : "/tmp", "/", name);
}

TEST(DistributedDemoTest, ThreeRanksSaveAndLoadReshardedRankZeroPrints) {
  SimulatorOptions sim_options;
  sim_options.world_size = 3;
  DCP_ASSERT_OK_AND_ASSIGN(auto sim, Simulator::Create(sim_options));
  DemoOptions options;
  options.dir = TmpDir("demo3");
  options.model.vocab = 300;
  options.model.hidden = 24;
  options.load_layout = Layout::kGrid;
  std::vector<std::ostringstream> out(3);
  EXPECT_THAT(sim->Run([&](RankContext& ctx) {
                return RunDistributedDemo(options, ctx.shared_pg(),
                                          out[ctx.rank()]);
              }),
              Each(IsOk()));
  EXPECT_THAT(out[0].str(), HasSubstr("3 processes, row-sharded"));
  EXPECT_THAT(out[0].str(), HasSubstr("3 processes, grid-sharded"));
  EXPECT_THAT(out[0].str(), HasSubstr("on 3 ranks: OK"));
  EXPECT_EQ(out[1].str(), "");
  EXPECT_EQ(out[2].str(), "");
}

TEST(DistributedDemoTest, NeedsADirectory) {
  SimulatorOptions sim_options;
  sim_options.world_size = 1;
  DCP_ASSERT_OK_AND_ASSIGN(auto sim, Simulator::Create(sim_options));
  DemoOptions options;
  std::ostringstream out;
  EXPECT_THAT(sim->Run([&](RankContext& ctx) {
                return RunDistributedDemo(options, ctx.shared_pg(), out);
              }),
              Each(StatusIs(absl::StatusCode::kInvalidArgument,
                            HasSubstr("--dir"))));
}

}  // namespace
}  // namespace dcp::tools
