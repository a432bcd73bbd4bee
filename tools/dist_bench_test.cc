// `RunDistributedBench` on simulated ranks (threads) at tiny sizes: every
// workload runs, the checkpoint is right, and the printed lines parse. The
// same code runs one rank per process under `dcp launch`
// (tools/peer/bench_side_by_side.sh). Nothing here checks a timing.
#include "tools/dist_bench.h"

#include <cstdint>
#include <cstdlib>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "core/metadata.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/fs_storage.h"
#include "testing/simulator.h"
#include "testing/status_matchers.h"

namespace dcp::tools {
namespace {

using ::dcp::test::IsOk;
using ::dcp::test::RankContext;
using ::dcp::test::Simulator;
using ::dcp::test::SimulatorOptions;
using ::dcp::test::StatusIs;
using ::testing::Each;
using ::testing::HasSubstr;
using ::testing::SizeIs;

std::string TmpDir(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return absl::StrCat(dir != nullptr ? dir : "/tmp", "/", name);
}

// One printed line: its first word and its key=value fields.
struct Line {
  std::string kind;
  std::map<std::string, std::string> fields;

  int64_t Int(const std::string& key) const {
    int64_t n = -1;
    auto it = fields.find(key);
    EXPECT_TRUE(it != fields.end() && absl::SimpleAtoi(it->second, &n))
        << "no integer field " << key;
    return n;
  }
  double Seconds(const std::string& key) const {
    double d = -1;
    auto it = fields.find(key);
    EXPECT_TRUE(it != fields.end() && absl::SimpleAtod(it->second, &d))
        << "no decimal field " << key;
    return d;
  }
};

std::vector<Line> ParseLines(const std::string& text) {
  std::vector<Line> lines;
  for (absl::string_view row : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    Line line;
    bool first = true;
    for (absl::string_view word : absl::StrSplit(row, ' ')) {
      if (first) {
        line.kind = std::string(word);
        first = false;
        continue;
      }
      std::pair<std::string, std::string> kv =
          absl::StrSplit(word, absl::MaxSplits('=', 1));
      EXPECT_FALSE(kv.first.empty()) << row;
      line.fields.insert(std::move(kv));
    }
    lines.push_back(std::move(line));
  }
  return lines;
}

// Runs `options` on `world` simulated ranks; returns each rank's output.
std::vector<std::string> RunOnRanks(const DistBenchOptions& options,
                                    int world) {
  SimulatorOptions sim_options;
  sim_options.world_size = world;
  auto sim = Simulator::Create(sim_options);
  EXPECT_THAT(sim.status(), IsOk());
  if (!sim.ok()) return {};
  std::vector<std::ostringstream> out(world);
  EXPECT_THAT((*sim)->Run([&](RankContext& ctx) {
                return RunDistributedBench(options, ctx.shared_pg(),
                                           out[ctx.rank()]);
              }),
              Each(IsOk()));
  std::vector<std::string> result;
  for (const auto& o : out) result.push_back(o.str());
  return result;
}

// Checks every rank's line and rank 0's aggregate; returns the aggregate.
Line CheckLines(const std::vector<std::string>& out,
                absl::string_view workload, int64_t total_bytes) {
  const int world = static_cast<int>(out.size());
  Line total;
  int64_t bytes = 0;
  for (int r = 0; r < world; ++r) {
    std::vector<Line> lines = ParseLines(out[r]);
    EXPECT_THAT(lines, SizeIs(r == 0 ? 2 : 1)) << out[r];
    if (lines.empty()) continue;
    const Line& mine = lines[0];
    EXPECT_EQ(mine.kind, "dcp_bench_rank");
    EXPECT_EQ(mine.fields.at("workload"), workload);
    EXPECT_EQ(mine.Int("rank"), r);
    EXPECT_EQ(mine.Int("world"), world);
    EXPECT_GE(mine.Seconds("seconds"), 0);
    EXPECT_GT(mine.Int("max_rss_kb"), 0);
    EXPECT_GE(mine.Int("max_rss_kb"), mine.Int("start_rss_kb"));
    bytes += mine.Int("bytes");
    if (r == 0 && lines.size() == 2) total = lines[1];
  }
  EXPECT_EQ(bytes, total_bytes);
  EXPECT_EQ(total.kind, "dcp_bench");
  EXPECT_EQ(total.fields["workload"], workload);
  EXPECT_EQ(total.Int("world"), world);
  EXPECT_EQ(total.Int("bytes"), total_bytes);
  EXPECT_GE(total.Seconds("seconds"), 0);
  return total;
}

TEST(DistBenchTest, RowShardedSaveWithFourRanksThenResharedLoadWithThree) {
  DistBenchOptions options;
  options.dir = TmpDir("row");
  options.tensors = 3;
  options.rows = 7;
  options.cols = 5;
  options.sync_files = false;
  const int64_t bytes = 3 * 7 * 5 * 4;
  CheckLines(RunOnRanks(options, 4), "save", bytes);

  DCP_ASSERT_OK_AND_ASSIGN(Metadata md, ReadCheckpointMetadata(options.dir));
  ASSERT_THAT(md.state_dict_metadata, SizeIs(3));
  for (const auto& [fqn, entry] : md.state_dict_metadata) {
    const auto* tensor = std::get_if<TensorStorageMetadata>(&entry);
    ASSERT_NE(tensor, nullptr) << fqn;
    EXPECT_EQ(tensor->size, (Shape{7, 5})) << fqn;
    EXPECT_THAT(tensor->chunks, SizeIs(4)) << fqn;  // 2, 2, 2, 1 rows.
  }

  // The load checks every element against the formula.
  options.workload = DistBenchWorkload::kLoad;
  CheckLines(RunOnRanks(options, 3), "load", bytes);
}

TEST(DistBenchTest, RoundRobinWholeTensorsSaveWithFourLoadWithThree) {
  DistBenchOptions options;
  options.dir = TmpDir("round_robin");
  options.tensors = 6;
  options.rows = 2;
  options.cols = 3;
  options.layout = DistBenchLayout::kRoundRobin;
  options.sync_files = false;
  const int64_t bytes = 6 * 2 * 3 * 4;
  CheckLines(RunOnRanks(options, 4), "save", bytes);
  DCP_ASSERT_OK_AND_ASSIGN(Metadata md, ReadCheckpointMetadata(options.dir));
  ASSERT_THAT(md.state_dict_metadata, SizeIs(6));
  const auto* t5 =
      std::get_if<TensorStorageMetadata>(&md.state_dict_metadata.at("model.t5"));
  ASSERT_NE(t5, nullptr);
  EXPECT_THAT(t5->chunks, SizeIs(1));

  options.workload = DistBenchWorkload::kLoad;
  CheckLines(RunOnRanks(options, 3), "load", bytes);
}

TEST(DistBenchTest, AsyncSaveReportsReturnCompletionAndMemcpy) {
  DistBenchOptions options;
  options.workload = DistBenchWorkload::kAsyncSave;
  options.dir = TmpDir("async");
  options.tensors = 2;
  options.rows = 6;
  options.cols = 4;
  options.sync_files = false;
  const Line total = CheckLines(RunOnRanks(options, 2), "async_save",
                                2 * 6 * 4 * 4);
  EXPECT_GE(total.Seconds("complete_seconds"), total.Seconds("seconds"));
  EXPECT_GT(total.Seconds("first_return_seconds"), 0);
  EXPECT_GE(total.Seconds("memcpy_seconds"), 0);

  // What it saved loads and checks.
  options.workload = DistBenchWorkload::kLoad;
  CheckLines(RunOnRanks(options, 3), "load", 2 * 6 * 4 * 4);
}

TEST(DistBenchTest, MemcpyNeedsNoDirectory) {
  DistBenchOptions options;
  options.workload = DistBenchWorkload::kMemcpy;
  options.tensors = 2;
  options.rows = 3;
  options.cols = 3;
  CheckLines(RunOnRanks(options, 1), "memcpy", 2 * 3 * 3 * 4);
}

TEST(DistBenchTest, LoadOfAnotherShapeFails) {
  DistBenchOptions options;
  options.dir = TmpDir("shape");
  options.tensors = 1;
  options.rows = 4;
  options.cols = 4;
  options.sync_files = false;
  RunOnRanks(options, 2);
  options.workload = DistBenchWorkload::kLoad;
  options.cols = 5;
  SimulatorOptions sim_options;
  sim_options.world_size = 2;
  DCP_ASSERT_OK_AND_ASSIGN(auto sim, Simulator::Create(sim_options));
  std::ostringstream out;
  for (const absl::Status& status : sim->Run([&](RankContext& ctx) {
         return RunDistributedBench(options, ctx.shared_pg(), out);
       })) {
    EXPECT_FALSE(status.ok());
  }
  EXPECT_EQ(out.str(), "");
}

TEST(DistBenchTest, BadOptions) {
  SimulatorOptions sim_options;
  sim_options.world_size = 1;
  DCP_ASSERT_OK_AND_ASSIGN(auto sim, Simulator::Create(sim_options));
  std::ostringstream out;
  DistBenchOptions no_dir;
  EXPECT_THAT(sim->Run([&](RankContext& ctx) {
                return RunDistributedBench(no_dir, ctx.shared_pg(), out);
              }),
              Each(StatusIs(absl::StatusCode::kInvalidArgument,
                            HasSubstr("--dir"))));
  DistBenchOptions empty;
  empty.dir = TmpDir("empty");
  empty.rows = 0;
  EXPECT_THAT(sim->Run([&](RankContext& ctx) {
                return RunDistributedBench(empty, ctx.shared_pg(), out);
              }),
              Each(StatusIs(absl::StatusCode::kInvalidArgument,
                            HasSubstr("at least 1"))));
  EXPECT_EQ(out.str(), "");
}

TEST(DistBenchTest, ParsesNames) {
  for (DistBenchWorkload w :
       {DistBenchWorkload::kSave, DistBenchWorkload::kLoad,
        DistBenchWorkload::kAsyncSave, DistBenchWorkload::kMemcpy}) {
    DCP_ASSERT_OK_AND_ASSIGN(DistBenchWorkload parsed,
                             ParseDistBenchWorkload(DistBenchWorkloadName(w)));
    EXPECT_EQ(parsed, w);
  }
  EXPECT_THAT(ParseDistBenchWorkload("w1"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  DCP_ASSERT_OK_AND_ASSIGN(DistBenchLayout layout,
                           ParseDistBenchLayout("round_robin"));
  EXPECT_EQ(layout, DistBenchLayout::kRoundRobin);
  EXPECT_THAT(ParseDistBenchLayout("col"),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace dcp::tools
