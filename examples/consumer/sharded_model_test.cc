// Tests the consumer's library on dcp's deterministic multi-rank simulator:
// N simulated ranks in one process, one seeded interleaving per run.
#include "sharded_model.h"

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "ATen/core/Tensor.h"
#include "ATen/ops/equal.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/sharding.h"
#include "gtest/gtest.h"
#include "testing/simulator.h"
#include "testing/test_seed.h"

namespace consumer {
namespace {

using ::dcp::test::RankContext;
using ::dcp::test::Simulator;
using ::dcp::test::SimulatorOptions;

std::unique_ptr<Simulator> MakeSimulator(int world_size, uint64_t seed) {
  SimulatorOptions options;
  options.world_size = world_size;
  options.seed = seed;
  absl::StatusOr<std::unique_ptr<Simulator>> simulator =
      Simulator::Create(options);
  EXPECT_TRUE(simulator.ok()) << simulator.status();
  return simulator.ok() ? *std::move(simulator) : nullptr;
}

std::string FreshDir(const std::string& name) {
  std::string dir = ::testing::TempDir() + "/" + name;
  std::filesystem::remove_all(dir);
  return dir;
}

// Saves with `save_ranks` ranks and loads with `load_ranks`; every loading
// rank must get exactly its rows, the replicated bias and the step.
void SaveThenLoad(int save_ranks, int load_ranks, uint64_t seed) {
  SCOPED_TRACE(
      absl::StrCat(save_ranks, " -> ", load_ranks, " ranks, seed ", seed));
  const ModelConfig config;
  const std::string dir =
      FreshDir(absl::StrCat("model_", save_ranks, "_", load_ranks));

  std::unique_ptr<Simulator> savers = MakeSimulator(save_ranks, seed);
  ASSERT_NE(savers, nullptr);
  for (const absl::Status& status :
       savers->Run([&](RankContext& ctx) -> absl::Status {
         absl::StatusOr<dcp::StateDict> state = MakeModelState(
             config, ctx.rank(), ctx.world_size(), /*step=*/7, false);
         if (!state.ok()) return state.status();
         return SaveModel(dir, ctx.shared_pg(), *state).status();
       })) {
    ASSERT_TRUE(status.ok()) << status;
  }

  std::unique_ptr<Simulator> loaders = MakeSimulator(load_ranks, seed);
  ASSERT_NE(loaders, nullptr);
  std::vector<dcp::StateDict> loaded(load_ranks);
  for (const absl::Status& status :
       loaders->Run([&](RankContext& ctx) -> absl::Status {
         absl::StatusOr<dcp::StateDict> state = MakeModelState(
             config, ctx.rank(), ctx.world_size(), /*step=*/0, true);
         if (!state.ok()) return state.status();
         absl::Status loaded_status = LoadModel(dir, ctx.shared_pg(), *state);
         loaded[ctx.rank()] = *std::move(state);
         return loaded_status;
       })) {
    ASSERT_TRUE(status.ok()) << status;
  }

  for (int rank = 0; rank < load_ranks; ++rank) {
    SCOPED_TRACE(absl::StrCat("loading rank ", rank));
    absl::StatusOr<dcp::StateDict> expected =
        MakeModelState(config, rank, load_ranks, /*step=*/7, false);
    ASSERT_TRUE(expected.ok()) << expected.status();
    const auto& want = expected->Find("embedding")->get<dcp::ShardedTensor>();
    const auto& got = loaded[rank].Find("embedding")->get<dcp::ShardedTensor>();
    ASSERT_EQ(got.local_shards.size(), want.local_shards.size());
    for (size_t i = 0; i < got.local_shards.size(); ++i) {
      EXPECT_EQ(got.local_shards[i].offsets, want.local_shards[i].offsets);
      EXPECT_TRUE(
          at::equal(got.local_shards[i].tensor, want.local_shards[i].tensor))
          << got.local_shards[i].tensor;
    }
    EXPECT_TRUE(at::equal(loaded[rank].Find("bias")->get<at::Tensor>(),
                          expected->Find("bias")->get<at::Tensor>()));
    EXPECT_EQ(loaded[rank].Find("step")->get<int64_t>(), 7);
  }
}

TEST(ShardedModelTest, LoadsIntoMoreAndFewerRanksThanSaved) {
  const uint64_t seed = dcp::test::TestSeed();
  SaveThenLoad(/*save_ranks=*/3, /*load_ranks=*/2, seed);
  SaveThenLoad(/*save_ranks=*/2, /*load_ranks=*/4, seed + 1);
}

TEST(ShardedModelTest, AFailingRankFailsTheSaveOnEveryRankAndCommitsNothing) {
  const uint64_t seed = dcp::test::TestSeed();
  SCOPED_TRACE(absl::StrCat("seed ", seed));
  const std::string dir = FreshDir("failed_save");
  std::unique_ptr<Simulator> simulator = MakeSimulator(3, seed);
  ASSERT_NE(simulator, nullptr);
  simulator->faults().FailAtPoint(2, "save.write",
                                  absl::UnavailableError("disk gone"));
  std::vector<absl::Status> statuses =
      simulator->Run([&](RankContext& ctx) -> absl::Status {
        absl::StatusOr<dcp::StateDict> state = MakeModelState(
            ModelConfig{}, ctx.rank(), ctx.world_size(), /*step=*/1, false);
        if (!state.ok()) return state.status();
        return SaveModel(dir, ctx.shared_pg(), *state).status();
      });
  ASSERT_EQ(statuses.size(), 3u);
  for (const absl::Status& status : statuses) {
    EXPECT_EQ(status, statuses[0]);
    EXPECT_NE(status.message().find("disk gone"), absl::string_view::npos)
        << status;
  }
  EXPECT_FALSE(std::filesystem::exists(dir + "/.metadata"));
}

}  // namespace
}  // namespace consumer
