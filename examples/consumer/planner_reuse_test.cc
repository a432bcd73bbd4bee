// Reuses dcp's planners on their own, without storage or collectives: how a
// save of two ranks would be deduplicated, and what each rank of a
// differently sharded job would read back.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "ATen/ops/ones.h"
#include "core/metadata.h"
#include "core/sharding.h"
#include "core/state_dict.h"
#include "gtest/gtest.h"
#include "planner/load_plan.h"
#include "planner/lockstep.h"
#include "planner/save_plan.h"

namespace consumer {
namespace {

// Rank `rank` of 2: rows of a [6, 4] table and a replicated [4] bias.
dcp::StateDict SavedState(int rank) {
  dcp::StateDict state;
  absl::StatusOr<dcp::ShardedTensor> table =
      dcp::ShardAlongDim(at::ones({6, 4}), /*dim=*/0, rank, /*world_size=*/2);
  EXPECT_TRUE(table.ok()) << table.status();
  if (table.ok()) state.Set("table", *table);
  state.Set("bias", at::ones({4}));
  return state;
}

TEST(PlannerReuseTest, ReplicatedTensorIsWrittenOnceAndShardsByTheirRanks) {
  dcp::StateDict rank0 = SavedState(0);
  dcp::StateDict rank1 = SavedState(1);
  absl::StatusOr<dcp::GlobalSavePlan> global =
      dcp::PlanSaveForRanks({&rank0, &rank1});
  ASSERT_TRUE(global.ok()) << global.status();
  ASSERT_EQ(global->plans.size(), 2u);

  std::map<std::string, int> writes_of;
  for (const dcp::SavePlan& plan : global->plans) {
    for (const dcp::WriteItem& item : plan.items) ++writes_of[item.index.fqn];
  }
  EXPECT_EQ(writes_of["bias"], 1);   // deduplicated
  EXPECT_EQ(writes_of["table"], 2);  // one shard per rank

  const auto& table = std::get<dcp::TensorStorageMetadata>(
      global->metadata.state_dict_metadata.at("table"));
  EXPECT_EQ(table.size, (dcp::Shape{6, 4}));
  ASSERT_EQ(table.chunks.size(), 2u);
}

TEST(PlannerReuseTest, EachRankOfAnotherLayoutReadsExactlyItsRows) {
  dcp::StateDict rank0 = SavedState(0);
  dcp::StateDict rank1 = SavedState(1);
  absl::StatusOr<dcp::GlobalSavePlan> global =
      dcp::PlanSaveForRanks({&rank0, &rank1});
  ASSERT_TRUE(global.ok()) << global.status();

  // Three ranks, the table sharded by columns this time.
  constexpr int kLoadRanks = 3;
  std::vector<dcp::StateDict> destinations(kLoadRanks);
  std::vector<dcp::StateDict*> pointers;
  for (int rank = 0; rank < kLoadRanks; ++rank) {
    absl::StatusOr<dcp::ShardedTensor> table = dcp::ZerosShardAlongDim(
        {6, 4}, at::kFloat, /*dim=*/1, rank, kLoadRanks);
    ASSERT_TRUE(table.ok()) << table.status();
    destinations[rank].Set("table", *table);
    pointers.push_back(&destinations[rank]);
  }
  absl::StatusOr<std::vector<dcp::LoadPlan>> plans =
      dcp::PlanLoadForRanks(global->metadata, pointers);
  ASSERT_TRUE(plans.ok()) << plans.status();
  ASSERT_EQ(plans->size(), static_cast<size_t>(kLoadRanks));

  for (int rank = 0; rank < kLoadRanks; ++rank) {
    SCOPED_TRACE(rank);
    // 4 columns over 3 ranks: 2, 2 and 0 (torch.chunk's split).
    const int64_t columns = rank < 2 ? 2 : 0;
    int64_t elements = 0;
    for (const dcp::ReadItem& item : (*plans)[rank].items) {
      ASSERT_EQ(item.dest_index.fqn, "table");
      // Each read crosses exactly one saved shard of 3 rows.
      EXPECT_EQ(item.lengths[0], 3);
      elements += dcp::NumElements(item.lengths);
    }
    EXPECT_EQ(elements, 6 * columns);
  }
}

}  // namespace
}  // namespace consumer
