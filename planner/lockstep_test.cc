#include "planner/lockstep.h"

#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "ATen/ATen.h"
#include "absl/status/status.h"
#include "core/metadata.h"
#include "core/sharding.h"
#include "core/state_dict.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "planner/default_save_planner.h"
#include "planner/load_plan.h"
#include "planner/planner.h"
#include "planner/resharding.h"
#include "planner/save_plan.h"
#include "testing/status_matchers.h"

namespace dcp {
namespace {

using ::dcp::test::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::SizeIs;

ChunkStorageMetadata Chunk(Shape offsets, Shape sizes) {
  return ChunkStorageMetadata{std::move(offsets), std::move(sizes)};
}

ReadItem Item(const std::string& fqn, Shape dest_chunk, int64_t li,
              Shape dest_offsets, Shape storage_chunk, int64_t si,
              Shape storage_offsets, Shape lengths) {
  ReadItem item;
  item.dest_index = MetadataIndex(fqn, std::move(dest_chunk), li);
  item.dest_offsets = std::move(dest_offsets);
  item.storage_index = MetadataIndex(fqn, std::move(storage_chunk), si);
  item.storage_offsets = std::move(storage_offsets);
  item.lengths = std::move(lengths);
  return item;
}

// A checkpoint saved by 8 ranks (row chunks of 16 of a 128x2 tensor),
// described by its Metadata alone: no storage, no state dict of the saver.
Metadata SavedByEightRanks() {
  Metadata md;
  TensorStorageMetadata w;
  w.size = {128, 2};
  for (int r = 0; r < 8; ++r) w.chunks.push_back(Chunk({16 * r, 0}, {16, 2}));
  md.state_dict_metadata["layer.w"] = w;
  md.state_dict_metadata["step"] = BytesStorageMetadata{};
  md.planner_data = {{"layer.w", {"layer", "w"}}, {"step", {"step"}}};
  return md;
}

TEST(LockstepTest, ComputesReadItemsForADestinationLayoutFromMetadataAlone) {
  const Metadata md = SavedByEightRanks();
  // Destination: 4 ranks, rows [32r, 32r + 32); only shapes matter.
  std::vector<StateDict> dests;
  for (int rank = 0; rank < 4; ++rank) {
    DCP_ASSERT_OK_AND_ASSIGN(
        ShardedTensor shard,
        ZerosShardAlongDim({128, 2}, at::kFloat, 0, rank, 4));
    dests.push_back(StateDict{{"layer", StateDict{{"w", shard}}}, {"step", 0}});
  }
  DCP_ASSERT_OK_AND_ASSIGN(
      std::vector<LoadPlan> plans,
      PlanLoadForRanks(md, {&dests[0], &dests[1], &dests[2], &dests[3]}));
  ASSERT_THAT(plans, SizeIs(4));
  // docs/format.md §5.6: world-4 rank 1 reads saved chunks [32] and [48]
  // whole.
  ReadItem step;
  step.type = LoadItemType::kByteIo;
  step.dest_index = MetadataIndex("step");
  step.dest_offsets = {0};
  step.storage_index = MetadataIndex("step");
  step.storage_offsets = {0};
  step.lengths = {0};
  EXPECT_THAT(
      plans[1].items,
      ElementsAre(
          Item("layer.w", {32, 0}, 0, {0, 0}, {32, 0}, 2, {0, 0}, {16, 2}),
          Item("layer.w", {32, 0}, 0, {16, 0}, {48, 0}, 3, {0, 0}, {16, 2}),
          step));
  for (const LoadPlan& plan : plans) EXPECT_THAT(plan.items, SizeIs(3));
  // Planning touches nothing.
  for (const StateDict& sd : dests) {
    EXPECT_TRUE(ValuesEqual(*sd.Find("step"), Value(0)));
  }
}

TEST(LockstepTest, PlansASaveForEveryRank) {
  const at::Tensor full = at::arange(8, at::kFloat);
  std::vector<StateDict> per_rank;
  for (int rank = 0; rank < 2; ++rank) {
    DCP_ASSERT_OK_AND_ASSIGN(ShardedTensor shard,
                             ShardAlongDim(full, 0, rank, 2));
    per_rank.push_back(
        StateDict{{"w", shard}, {"b", at::ones({3})}, {"step", 1}});
  }
  DCP_ASSERT_OK_AND_ASSIGN(GlobalSavePlan global,
                           PlanSaveForRanks({&per_rank[0], &per_rank[1]}));
  ASSERT_THAT(global.plans, SizeIs(2));
  const auto& w = std::get<TensorStorageMetadata>(
      global.metadata.state_dict_metadata.at("w"));
  EXPECT_THAT(w.chunks, ElementsAre(Chunk({0}, {4}), Chunk({4}, {4})));
  // Visited in order w[0] (rank 0 only, 16 bytes), b, step, w[4]: "b"
  // (12 bytes) goes to the lighter rank 1, which stays lighter for "step".
  std::vector<std::string> rank0, rank1;
  for (const WriteItem& item : global.plans[0].items)
    rank0.push_back(item.index.fqn);
  for (const WriteItem& item : global.plans[1].items)
    rank1.push_back(item.index.fqn);
  EXPECT_THAT(rank0, ElementsAre("w"));
  EXPECT_THAT(rank1, ElementsAre("w", "b", "step"));

  // Save then load plans round trip through the Metadata alone.
  std::vector<StateDict> dests(3);
  for (int rank = 0; rank < 3; ++rank) {
    DCP_ASSERT_OK_AND_ASSIGN(ShardedTensor zeros,
                             ZerosShardAlongDim({8}, at::kFloat, 0, rank, 3));
    dests[rank] = StateDict{{"w", zeros}, {"b", at::zeros({3})}, {"step", 0}};
  }
  DCP_ASSERT_OK_AND_ASSIGN(
      std::vector<LoadPlan> plans,
      PlanLoadForRanks(global.metadata, {&dests[0], &dests[1], &dests[2]}));
  ASSERT_THAT(plans, SizeIs(3));
  for (int rank = 0; rank < 3; ++rank) {
    const auto& shard = dests[rank].Find("w")->get<ShardedTensor>();
    std::vector<ChunkStorageMetadata> local;
    for (const Shard& s : shard.local_shards) {
      local.push_back(Chunk(s.offsets, s.tensor.sizes().vec()));
    }
    std::vector<ReadItem> w_items;
    for (const ReadItem& item : plans[rank].items) {
      if (item.dest_index.fqn == "w") w_items.push_back(item);
    }
    DCP_EXPECT_OK(CheckReadItemsCoverChunks("w", local, w_items));
  }
}

TEST(LockstepTest, ErrorsNameTheRank) {
  const Metadata md = SavedByEightRanks();
  StateDict good{{"layer", StateDict{{"w", at::zeros({128, 2})}}}, {"step", 0}};
  StateDict bad{{"layer", StateDict{{"w", at::zeros({128, 3})}}}, {"step", 0}};
  EXPECT_THAT(PlanLoadForRanks(md, {&good, &bad}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("rank 1: size mismatch for \"layer.w\"")));

  StateDict x_tensor{{"x", at::ones({2})}};
  StateDict x_int{{"x", 2}};
  EXPECT_THAT(PlanSaveForRanks({&x_tensor, &x_int}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("coordinator: \"x\" is saved as")));
}

TEST(LockstepTest, BadInputsAreInvalidArgument) {
  EXPECT_THAT(PlanSaveForRanks({}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(PlanSaveForRanks({nullptr}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(PlanLoadForRanks(Metadata{}, {}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(PlanLoadForRanks(Metadata{}, {nullptr}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  StateDict sd;
  EXPECT_THAT(PlanSaveWithPlanners({}, {&sd}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("0 planners for 1 ranks")));
}

}  // namespace
}  // namespace dcp
