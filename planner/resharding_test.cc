#include "planner/resharding.h"

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "checkpoint/metadata.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "planner/load_plan.h"
#include "testing/status_matchers.h"

namespace dcp {
namespace {

using ::dcp::testing::IsOk;
using ::dcp::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;

ChunkStorageMetadata Chunk(Shape offsets, Shape sizes) {
  return ChunkStorageMetadata{std::move(offsets), std::move(sizes)};
}

// `world` equal row chunks of `chunk` elements each, of a 1-D tensor.
TensorStorageMetadata RowChunks(int world, int64_t chunk) {
  TensorStorageMetadata md;
  md.size = {world * chunk};
  for (int r = 0; r < world; ++r)
    md.chunks.push_back(Chunk({r * chunk}, {chunk}));
  return md;
}

ReadItem Item(const std::string& fqn, Shape dest_chunk_offsets, int64_t li,
              Shape dest_offsets, Shape storage_chunk_offsets, int64_t si,
              Shape storage_offsets, Shape lengths) {
  ReadItem item;
  item.type = LoadItemType::kTensor;
  item.dest_index = MetadataIndex(fqn, std::move(dest_chunk_offsets), li);
  item.dest_offsets = std::move(dest_offsets);
  item.storage_index = MetadataIndex(fqn, std::move(storage_chunk_offsets), si);
  item.storage_offsets = std::move(storage_offsets);
  item.lengths = std::move(lengths);
  return item;
}

// ReadItem's == ignores the index hints; these must match too.
std::vector<std::pair<int64_t, int64_t>> Hints(
    const std::vector<ReadItem>& items) {
  std::vector<std::pair<int64_t, int64_t>> hints;
  for (const ReadItem& item : items) {
    hints.emplace_back(item.dest_index.index.value_or(-1),
                       item.storage_index.index.value_or(-1));
  }
  return hints;
}

TEST(ChunksOverlapTest, OverlapNeedsEveryDimensionToIntersect) {
  EXPECT_TRUE(ChunksOverlap(Chunk({0}, {8}), Chunk({4}, {7})));
  EXPECT_TRUE(ChunksOverlap(Chunk({4}, {7}), Chunk({0}, {8})));
  EXPECT_TRUE(ChunksOverlap(Chunk({0, 0}, {4, 4}), Chunk({3, 3}, {4, 4})));
  EXPECT_TRUE(ChunksOverlap(Chunk({0, 0}, {10, 10}), Chunk({2, 2}, {1, 1})));
  EXPECT_FALSE(ChunksOverlap(Chunk({0, 0}, {4, 4}), Chunk({0, 4}, {4, 4})));
  EXPECT_FALSE(ChunksOverlap(Chunk({0, 0}, {4, 4}), Chunk({4, 0}, {4, 4})));
  EXPECT_FALSE(ChunksOverlap(Chunk({0, 0}, {4, 4}), Chunk({5, 5}, {1, 1})));
}

TEST(ChunksOverlapTest, TouchingBoxesDoNotOverlap) {
  EXPECT_FALSE(ChunksOverlap(Chunk({0}, {8}), Chunk({8}, {8})));
  EXPECT_FALSE(ChunksOverlap(Chunk({8}, {8}), Chunk({0}, {8})));
}

TEST(ChunksOverlapTest, ZeroDimensionalBoxesOverlapVacuously) {
  EXPECT_TRUE(ChunksOverlap(Chunk({}, {}), Chunk({}, {})));
}

TEST(ChunksOverlapTest, ZeroExtentOverlapsNothing) {
  EXPECT_FALSE(ChunksOverlap(Chunk({0, 0}, {0, 4}), Chunk({0, 0}, {4, 4})));
  EXPECT_FALSE(ChunksOverlap(Chunk({0, 0}, {4, 4}), Chunk({2, 0}, {0, 4})));
  EXPECT_FALSE(ChunksOverlap(Chunk({0}, {0}), Chunk({0}, {0})));
}

TEST(ChunksOverlapTest, DifferentRanksOrMalformedBoxesNeverOverlap) {
  EXPECT_FALSE(ChunksOverlap(Chunk({0}, {8}), Chunk({0, 0}, {8, 8})));
  EXPECT_FALSE(ChunksOverlap(Chunk({0, 0}, {8}), Chunk({0, 0}, {8, 8})));
}

TEST(ChunksOverlapTest, HugeValuesDoNotOverflow) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  EXPECT_TRUE(ChunksOverlap(Chunk({kMax - 1}, {kMax}), Chunk({kMax - 1}, {1})));
  EXPECT_FALSE(ChunksOverlap(Chunk({0}, {kMax}), Chunk({kMax}, {kMax})));
}

// §5.6 vector 1 (upstream test_planner.py).
TEST(CreateReadItemsForChunkListTest, LocalChunkStraddlingTwoSavedChunks) {
  const TensorStorageMetadata saved = RowChunks(2, 8);
  const std::vector<ReadItem> items =
      CreateReadItemsForChunkList("w", saved, {Chunk({4}, {7})});
  EXPECT_THAT(items, ElementsAre(Item("w", {4}, 0, {0}, {0}, 0, {4}, {4}),
                                 Item("w", {4}, 0, {4}, {8}, 1, {0}, {3})));
  EXPECT_THAT(Hints(items), ElementsAre(Pair(0, 0), Pair(0, 1)));
}

// §5.6 vector 2: saved by world 8, loaded by world-4 rank 1.
TEST(CreateReadItemsForChunkListTest, SavedByEightLoadedByFourRankOne) {
  const TensorStorageMetadata saved = RowChunks(8, 16);
  const std::vector<ReadItem> items =
      CreateReadItemsForChunkList("w", saved, {Chunk({32}, {32})});
  EXPECT_THAT(items, ElementsAre(Item("w", {32}, 0, {0}, {32}, 2, {0}, {16}),
                                 Item("w", {32}, 0, {16}, {48}, 3, {0}, {16})));
  EXPECT_THAT(Hints(items), ElementsAre(Pair(0, 2), Pair(0, 3)));
}

// §5.6 vector 3: saved by world 4, loaded by world-8 rank 1.
TEST(CreateReadItemsForChunkListTest, SavedByFourLoadedByEightRankOne) {
  const TensorStorageMetadata saved = RowChunks(4, 32);
  const std::vector<ReadItem> items =
      CreateReadItemsForChunkList("w", saved, {Chunk({16}, {16})});
  EXPECT_THAT(items, ElementsAre(Item("w", {16}, 0, {0}, {0}, 0, {16}, {16})));
  EXPECT_THAT(Hints(items), ElementsAre(Pair(0, 0)));
}

// §5.6 vector 4: saved by world 4 (chunks of 30), loaded by world-3 rank 1.
TEST(CreateReadItemsForChunkListTest, SavedByFourLoadedByThreeRankOne) {
  const TensorStorageMetadata saved = RowChunks(4, 30);
  const std::vector<ReadItem> items =
      CreateReadItemsForChunkList("w", saved, {Chunk({40}, {40})});
  EXPECT_THAT(items, ElementsAre(Item("w", {40}, 0, {0}, {30}, 1, {10}, {20}),
                                 Item("w", {40}, 0, {20}, {60}, 2, {0}, {20})));
  EXPECT_THAT(Hints(items), ElementsAre(Pair(0, 1), Pair(0, 2)));
}

// §5.6 2-D vector: Shard(0) of 10x4 over 2 ranks, loaded as Replicate.
TEST(CreateReadItemsForChunkListTest, TwoDimensionalRowShardsIntoReplica) {
  TensorStorageMetadata saved;
  saved.size = {10, 4};
  saved.chunks = {Chunk({0, 0}, {5, 4}), Chunk({5, 0}, {5, 4})};
  const std::vector<ReadItem> items =
      CreateReadItemsForChunkList("m.w", saved, {Chunk({0, 0}, {10, 4})});
  EXPECT_THAT(
      items,
      ElementsAre(Item("m.w", {0, 0}, 0, {0, 0}, {0, 0}, 0, {0, 0}, {5, 4}),
                  Item("m.w", {0, 0}, 0, {5, 0}, {5, 0}, 1, {0, 0}, {5, 4})));
  EXPECT_THAT(Hints(items), ElementsAre(Pair(0, 0), Pair(0, 1)));
}

TEST(CreateReadItemsForChunkListTest, GridIntoRowsIteratesLocalChunksOuter) {
  // Saved: 2x2 grid of a 4x4 tensor. Local: two row halves.
  TensorStorageMetadata saved;
  saved.size = {4, 4};
  saved.chunks = {Chunk({0, 0}, {2, 2}), Chunk({0, 2}, {2, 2}),
                  Chunk({2, 0}, {2, 2}), Chunk({2, 2}, {2, 2})};
  const std::vector<ReadItem> items = CreateReadItemsForChunkList(
      "g", saved, {Chunk({1, 0}, {2, 4}), Chunk({3, 0}, {1, 4})});
  EXPECT_THAT(
      items,
      ElementsAre(Item("g", {1, 0}, 0, {0, 0}, {0, 0}, 0, {1, 0}, {1, 2}),
                  Item("g", {1, 0}, 0, {0, 2}, {0, 2}, 1, {1, 0}, {1, 2}),
                  Item("g", {1, 0}, 0, {1, 0}, {2, 0}, 2, {0, 0}, {1, 2}),
                  Item("g", {1, 0}, 0, {1, 2}, {2, 2}, 3, {0, 0}, {1, 2}),
                  Item("g", {3, 0}, 1, {0, 0}, {2, 0}, 2, {1, 0}, {1, 2}),
                  Item("g", {3, 0}, 1, {0, 2}, {2, 2}, 3, {1, 0}, {1, 2})));
  EXPECT_THAT(Hints(items), ElementsAre(Pair(0, 0), Pair(0, 1), Pair(0, 2),
                                        Pair(0, 3), Pair(1, 2), Pair(1, 3)));
  EXPECT_OK(CheckReadItemsCoverChunks(
      "g", {Chunk({1, 0}, {2, 4}), Chunk({3, 0}, {1, 4})}, items));
}

TEST(CreateReadItemsForChunkListTest, ZeroDimensionalTensorGivesOneEmptyItem) {
  TensorStorageMetadata saved;
  saved.chunks = {Chunk({}, {})};
  const std::vector<ReadItem> items =
      CreateReadItemsForChunkList("step", saved, {Chunk({}, {})});
  EXPECT_THAT(items, ElementsAre(Item("step", {}, 0, {}, {}, 0, {}, {})));
  ASSERT_EQ(items.size(), 1u);
  EXPECT_TRUE(items[0].dest_index.offset.has_value());
  EXPECT_TRUE(items[0].storage_index.offset.has_value());
}

TEST(CreateReadItemsForChunkListTest, ZeroSizeDimensionsGiveNoItems) {
  TensorStorageMetadata saved;
  saved.size = {0, 4};
  saved.chunks = {Chunk({0, 0}, {0, 4})};
  EXPECT_THAT(CreateReadItemsForChunkList("e", saved, {Chunk({0, 0}, {0, 4})}),
              IsEmpty());
}

TEST(CreateReadItemsForChunkListTest, NoLocalChunksGiveNoItems) {
  EXPECT_THAT(CreateReadItemsForChunkList("w", RowChunks(2, 4), {}), IsEmpty());
}

TEST(FindOverlappingChunksTest, TilingsHaveNoOverlaps) {
  std::vector<ChunkStorageMetadata> rows, columns, grid;
  for (int i = 0; i < 16; ++i) {
    rows.push_back(Chunk({i * 2, 0}, {2, 32}));
    columns.push_back(Chunk({0, i * 2}, {32, 2}));
  }
  for (int i = 0; i < 4; ++i) {
    for (int j = 0; j < 4; ++j) grid.push_back(Chunk({i * 8, j * 8}, {8, 8}));
  }
  EXPECT_THAT(FindOverlappingChunks(rows, 10), IsEmpty());
  EXPECT_THAT(FindOverlappingChunks(columns, 10), IsEmpty());
  EXPECT_THAT(FindOverlappingChunks(grid, 10), IsEmpty());
}

TEST(FindOverlappingChunksTest, FindsOverlapsAndReportsSortedPairs) {
  const std::vector<ChunkStorageMetadata> chunks = {
      Chunk({0, 4}, {4, 4}),  // 0
      Chunk({0, 0}, {4, 4}),  // 1
      Chunk({2, 0}, {4, 4}),  // 2: overlaps 1
      Chunk({0, 4}, {4, 4}),  // 3: duplicates 0
      Chunk({4, 4}, {4, 4}),  // 4
  };
  EXPECT_THAT(FindOverlappingChunks(chunks, 10),
              ElementsAre(Pair(0, 3), Pair(1, 2)));
  EXPECT_THAT(FindOverlappingChunks(chunks, 1), ::testing::SizeIs(1));
  EXPECT_THAT(FindOverlappingChunks(chunks, 0), IsEmpty());
}

TEST(FindOverlappingChunksTest, IgnoresEmptyAndWrongRankBoxes) {
  const std::vector<ChunkStorageMetadata> chunks = {
      Chunk({0, 0}, {4, 4}), Chunk({0, 0}, {0, 4}), Chunk({1}, {1}),
      Chunk({1, 1}, {1, 1})};
  EXPECT_THAT(FindOverlappingChunks(chunks, 10), ElementsAre(Pair(0, 3)));
}

TEST(FindOverlappingChunksTest, ZeroDimensionalBoxesAllOverlap) {
  EXPECT_THAT(
      FindOverlappingChunks({Chunk({}, {}), Chunk({}, {}), Chunk({}, {})}, 10),
      ElementsAre(Pair(0, 1), Pair(0, 2), Pair(1, 2)));
}

// The sweep must agree with the pairwise definition on irregular layouts.
TEST(FindOverlappingChunksTest, AgreesWithPairwiseCheck) {
  std::vector<ChunkStorageMetadata> chunks;
  // Deterministic pseudo-random boxes in a 12x12x3 space.
  uint32_t state = 12345;
  auto next = [&state](int64_t bound) {
    state = state * 1103515245u + 12345u;
    return static_cast<int64_t>((state >> 16) % bound);
  };
  for (int i = 0; i < 60; ++i) {
    chunks.push_back(Chunk({next(12), next(12), next(3)},
                           {next(5), next(5) + 1, next(3) + 1}));
  }
  std::vector<std::pair<size_t, size_t>> expected;
  for (size_t i = 0; i < chunks.size(); ++i) {
    for (size_t j = i + 1; j < chunks.size(); ++j) {
      if (ChunksOverlap(chunks[i], chunks[j])) expected.emplace_back(i, j);
    }
  }
  ASSERT_FALSE(expected.empty());
  EXPECT_EQ(FindOverlappingChunks(chunks, chunks.size() * chunks.size()),
            expected);
}

TEST(CheckReadItemsCoverChunksTest, ExactCoverIsOk) {
  const TensorStorageMetadata saved = RowChunks(4, 30);
  const std::vector<ChunkStorageMetadata> local = {Chunk({0}, {40}),
                                                   Chunk({80}, {40})};
  EXPECT_OK(CheckReadItemsCoverChunks(
      "w", local, CreateReadItemsForChunkList("w", saved, local)));
}

TEST(CheckReadItemsCoverChunksTest, GapIsDataLossNamingKeyAndChunk) {
  TensorStorageMetadata saved;
  saved.size = {4, 4};
  saved.chunks = {Chunk({0, 0}, {2, 4}), Chunk({3, 0}, {1, 4})};
  const std::vector<ChunkStorageMetadata> local = {Chunk({0, 0}, {4, 4})};
  EXPECT_THAT(
      CheckReadItemsCoverChunks(
          "m.w", local, CreateReadItemsForChunkList("m.w", saved, local)),
      StatusIs(absl::StatusCode::kDataLoss,
               HasSubstr("checkpoint holds 12 of the 16 elements of \"m.w\" "
                         "chunk [0, 0]+[4, 4]")));
}

TEST(CheckReadItemsCoverChunksTest, MissingChunkEntirelyIsDataLoss) {
  TensorStorageMetadata saved;
  saved.size = {8};
  saved.chunks = {Chunk({0}, {4})};
  const std::vector<ChunkStorageMetadata> local = {Chunk({0}, {4}),
                                                   Chunk({4}, {4})};
  EXPECT_THAT(
      CheckReadItemsCoverChunks("w", local,
                                CreateReadItemsForChunkList("w", saved, local)),
      StatusIs(absl::StatusCode::kDataLoss,
               HasSubstr("0 of the 4 elements of \"w\" chunk [4]+[4]")));
}

TEST(CheckReadItemsCoverChunksTest, OverlappingSavedChunksAreDataLoss) {
  // Volumes add up (4 + 4 = 8) but [2, 4) is saved twice and [6, 8) never.
  TensorStorageMetadata saved;
  saved.size = {8};
  saved.chunks = {Chunk({0}, {4}), Chunk({2}, {4})};
  const std::vector<ChunkStorageMetadata> local = {Chunk({0}, {8})};
  EXPECT_THAT(
      CheckReadItemsCoverChunks("w", local,
                                CreateReadItemsForChunkList("w", saved, local)),
      StatusIs(absl::StatusCode::kDataLoss,
               HasSubstr("saved chunks at [0] and [2] both fill part of "
                         "destination chunk [0]+[8]")));
}

TEST(CheckReadItemsCoverChunksTest, ZeroDimensionalAndEmptyChunks) {
  TensorStorageMetadata scalar;
  scalar.chunks = {Chunk({}, {})};
  EXPECT_OK(CheckReadItemsCoverChunks(
      "s", {Chunk({}, {})},
      CreateReadItemsForChunkList("s", scalar, {Chunk({}, {})})));
  TensorStorageMetadata nothing_saved;
  EXPECT_THAT(CheckReadItemsCoverChunks("s", {Chunk({}, {})}, {}),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("0 of the 1 elements of \"s\" chunk []+[]")));
  EXPECT_OK(CheckReadItemsCoverChunks("e", {Chunk({0, 0}, {0, 4})}, {}));
}

}  // namespace
}  // namespace dcp
