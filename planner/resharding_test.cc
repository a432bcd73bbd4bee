#include "planner/resharding.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/metadata.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "planner/load_plan.h"
#include "testing/status_matchers.h"
#include "testing/test_seed.h"

namespace dcp {
namespace {

using ::dcp::test::IsOk;
using ::dcp::test::StatusIs;
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

// docs/format.md §5.6 vector 1 (upstream test_planner.py).
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
  DCP_EXPECT_OK(CheckReadItemsCoverChunks(
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
  DCP_EXPECT_OK(CheckReadItemsCoverChunks(
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
  DCP_EXPECT_OK(CheckReadItemsCoverChunks(
      "s", {Chunk({}, {})},
      CreateReadItemsForChunkList("s", scalar, {Chunk({}, {})})));
  TensorStorageMetadata nothing_saved;
  EXPECT_THAT(CheckReadItemsCoverChunks("s", {Chunk({}, {})}, {}),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("0 of the 1 elements of \"s\" chunk []+[]")));
  DCP_EXPECT_OK(CheckReadItemsCoverChunks("e", {Chunk({0, 0}, {0, 4})}, {}));
}

// ---------------------------------------------------------------------------
// Property tests: the indexed CreateReadItemsForChunkList against the
// O(local x saved) loop of Python's create_read_items_for_chunk_list.

int64_t SaturatingEnd(int64_t offset, int64_t size) {
  int64_t end;
  if (__builtin_add_overflow(offset, size, &end)) {
    return size > 0 ? std::numeric_limits<int64_t>::max()
                    : std::numeric_limits<int64_t>::min();
  }
  return end;
}

// The reference: every local chunk (outer) against every saved chunk in
// position order (inner), exactly as resharding.py does.
std::vector<ReadItem> BruteForceReadItems(
    const std::string& fqn, const TensorStorageMetadata& saved,
    const std::vector<ChunkStorageMetadata>& local_chunks) {
  std::vector<ReadItem> items;
  for (size_t li = 0; li < local_chunks.size(); ++li) {
    const ChunkStorageMetadata& local = local_chunks[li];
    for (size_t si = 0; si < saved.chunks.size(); ++si) {
      const ChunkStorageMetadata& stored = saved.chunks[si];
      if (!ChunksOverlap(local, stored)) continue;
      const size_t ndim = local.offsets.size();
      ReadItem item;
      item.type = LoadItemType::kTensor;
      item.dest_index =
          MetadataIndex(fqn, local.offsets, static_cast<int64_t>(li));
      item.storage_index =
          MetadataIndex(fqn, stored.offsets, static_cast<int64_t>(si));
      item.dest_offsets.resize(ndim);
      item.storage_offsets.resize(ndim);
      item.lengths.resize(ndim);
      for (size_t d = 0; d < ndim; ++d) {
        const int64_t local_end =
            SaturatingEnd(local.offsets[d], local.sizes[d]);
        const int64_t stored_end =
            SaturatingEnd(stored.offsets[d], stored.sizes[d]);
        item.lengths[d] = std::min(local_end, stored_end) -
                          std::max(local.offsets[d], stored.offsets[d]);
        if (stored.offsets[d] > local.offsets[d]) {
          item.dest_offsets[d] = stored.offsets[d] - local.offsets[d];
        } else {
          item.storage_offsets[d] = local.offsets[d] - stored.offsets[d];
        }
      }
      items.push_back(std::move(item));
    }
  }
  return items;
}

// Cut points 0 = c_0 < c_1 < ... < c_k = extent, `pieces` pieces at most
// (random lengths, some possibly repeated cut points giving empty pieces
// when `allow_empty`).
std::vector<int64_t> Cuts(std::mt19937& rng, int64_t extent, int pieces,
                          bool allow_empty) {
  std::vector<int64_t> cuts = {0, extent};
  std::uniform_int_distribution<int64_t> at(0, extent);
  for (int i = 1; i < pieces; ++i) cuts.push_back(at(rng));
  std::sort(cuts.begin(), cuts.end());
  if (!allow_empty)
    cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
  return cuts;
}

enum class Layout {
  kRows,
  kColumns,
  kGrid,
  kIrregular,
  kRandomBoxes,
  kDegenerate,
  kScalar
};
constexpr Layout kLayouts[] = {Layout::kRows,        Layout::kColumns,
                               Layout::kGrid,        Layout::kIrregular,
                               Layout::kRandomBoxes, Layout::kDegenerate,
                               Layout::kScalar};

const char* LayoutName(Layout layout) {
  switch (layout) {
    case Layout::kRows:
      return "rows";
    case Layout::kColumns:
      return "columns";
    case Layout::kGrid:
      return "grid";
    case Layout::kIrregular:
      return "irregular";
    case Layout::kRandomBoxes:
      return "random boxes";
    case Layout::kDegenerate:
      return "degenerate";
    case Layout::kScalar:
      return "scalar";
  }
  return "?";
}

// Boxes of a `rows` x `cols` tensor (or 0-d boxes for kScalar) in `layout`,
// shuffled half of the time so that positions are not in offset order.
std::vector<ChunkStorageMetadata> MakeLayout(std::mt19937& rng, Layout layout,
                                             int64_t rows, int64_t cols) {
  std::vector<ChunkStorageMetadata> boxes;
  // Up to 9 pieces per dimension of a grid, up to 30 otherwise: more than
  // the 8 chunks SavedChunkIndex scans without an index.
  std::uniform_int_distribution<int> pieces(1, 9);
  std::uniform_int_distribution<int> many(1, 30);
  const bool allow_empty = std::bernoulli_distribution(0.3)(rng);
  switch (layout) {
    case Layout::kRows: {
      const std::vector<int64_t> r = Cuts(rng, rows, many(rng), allow_empty);
      for (size_t i = 0; i + 1 < r.size(); ++i) {
        boxes.push_back(Chunk({r[i], 0}, {r[i + 1] - r[i], cols}));
      }
      break;
    }
    case Layout::kColumns: {
      const std::vector<int64_t> c = Cuts(rng, cols, many(rng), allow_empty);
      for (size_t j = 0; j + 1 < c.size(); ++j) {
        boxes.push_back(Chunk({0, c[j]}, {rows, c[j + 1] - c[j]}));
      }
      break;
    }
    case Layout::kGrid: {
      const std::vector<int64_t> r = Cuts(rng, rows, pieces(rng), allow_empty);
      const std::vector<int64_t> c = Cuts(rng, cols, pieces(rng), allow_empty);
      for (size_t i = 0; i + 1 < r.size(); ++i) {
        for (size_t j = 0; j + 1 < c.size(); ++j) {
          boxes.push_back(
              Chunk({r[i], c[j]}, {r[i + 1] - r[i], c[j + 1] - c[j]}));
        }
      }
      break;
    }
    case Layout::kIrregular: {
      // A brick wall: row bands, each cut at its own columns.
      const std::vector<int64_t> r = Cuts(rng, rows, pieces(rng), allow_empty);
      for (size_t i = 0; i + 1 < r.size(); ++i) {
        const std::vector<int64_t> c =
            Cuts(rng, cols, pieces(rng), allow_empty);
        for (size_t j = 0; j + 1 < c.size(); ++j) {
          boxes.push_back(
              Chunk({r[i], c[j]}, {r[i + 1] - r[i], c[j + 1] - c[j]}));
        }
      }
      break;
    }
    case Layout::kRandomBoxes: {
      // Anywhere, overlapping, nested, some outside the tensor.
      std::uniform_int_distribution<int64_t> row(-2, rows + 2);
      std::uniform_int_distribution<int64_t> col(-2, cols + 2);
      const int n = many(rng);
      for (int i = 0; i < n; ++i) {
        const int64_t r0 = row(rng);
        const int64_t c0 = col(rng);
        boxes.push_back(Chunk(
            {r0, c0},
            {std::uniform_int_distribution<int64_t>(0, rows + 2 - r0)(rng),
             std::uniform_int_distribution<int64_t>(0, cols + 2 - c0)(rng)}));
      }
      break;
    }
    case Layout::kDegenerate: {
      // Empty, negative, malformed and other-rank boxes among good ones.
      boxes.push_back(Chunk({0, 0}, {rows, cols}));
      boxes.push_back(Chunk({0, 0}, {0, cols}));
      boxes.push_back(Chunk({1, 1}, {-1, 2}));
      boxes.push_back(Chunk({0, 0}, {rows}));
      boxes.push_back(Chunk({0}, {rows}));
      boxes.push_back(Chunk({}, {}));
      boxes.push_back(Chunk({0, 0, 0}, {rows, cols, 1}));
      boxes.push_back(Chunk({rows / 2, 0}, {rows - rows / 2, cols}));
      constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
      boxes.push_back(Chunk({kMax - 1, 0}, {kMax, cols}));
      break;
    }
    case Layout::kScalar: {
      const int n = pieces(rng) % 3;  // 0, 1 or 2 scalar chunks
      for (int i = 0; i < n; ++i) boxes.push_back(Chunk({}, {}));
      if (std::bernoulli_distribution(0.5)(rng)) {
        boxes.push_back(Chunk({0}, {1}));  // another rank
      }
      break;
    }
  }
  if (std::bernoulli_distribution(0.5)(rng)) {
    std::shuffle(boxes.begin(), boxes.end(), rng);
  }
  return boxes;
}

std::string Describe(const std::vector<ChunkStorageMetadata>& chunks) {
  std::string out;
  for (const ChunkStorageMetadata& c : chunks) {
    absl::StrAppend(&out, "[", absl::StrJoin(c.offsets, ","), "]+[",
                    absl::StrJoin(c.sizes, ","), "] ");
  }
  return out;
}

TEST(CreateReadItemsForChunkListPropertyTest, IndexedEqualsBruteForce) {
  const uint32_t seed = dcp::test::TestSeed();
  SCOPED_TRACE(absl::StrCat("DCP_TEST_SEED=", seed));
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int64_t> extent(0, 40);
  size_t nonempty_cases = 0;
  size_t indexed_cases = 0;  // more saved chunks than SavedChunkIndex scans
  for (int iteration = 0; iteration < 3000; ++iteration) {
    const Layout saved_layout = kLayouts[iteration % std::size(kLayouts)];
    const Layout local_layout = kLayouts[std::uniform_int_distribution<size_t>(
        0, std::size(kLayouts) - 1)(rng)];
    const int64_t rows = extent(rng);
    const int64_t cols = extent(rng);
    TensorStorageMetadata saved;
    saved.size = {rows, cols};
    saved.chunks = MakeLayout(rng, saved_layout, rows, cols);
    const std::vector<ChunkStorageMetadata> local =
        MakeLayout(rng, local_layout, rows, cols);
    SCOPED_TRACE(absl::StrCat("iteration ", iteration, ": saved ",
                              LayoutName(saved_layout), " ",
                              Describe(saved.chunks), "; local ",
                              LayoutName(local_layout), " ", Describe(local)));
    const std::vector<ReadItem> expected =
        BruteForceReadItems("w", saved, local);
    if (!expected.empty()) ++nonempty_cases;
    if (!expected.empty() && saved.chunks.size() > 8) ++indexed_cases;

    const std::vector<ReadItem> indexed =
        CreateReadItemsForChunkList("w", saved, local);
    ASSERT_EQ(indexed, expected);
    ASSERT_EQ(Hints(indexed), Hints(expected));

    // A prebuilt index, reused for each local chunk on its own.
    const SavedChunkIndex index(saved.chunks);
    EXPECT_EQ(index.size(), saved.chunks.size());
    for (const ChunkStorageMetadata& box : local) {
      std::vector<size_t> want;
      for (size_t si = 0; si < saved.chunks.size(); ++si) {
        if (ChunksOverlap(box, saved.chunks[si])) want.push_back(si);
      }
      ASSERT_EQ(index.FindOverlapping(saved.chunks, box), want)
          << Describe({box});
      const std::vector<ReadItem> one =
          CreateReadItemsForChunkList("w", saved, index, {box});
      ASSERT_EQ(one, BruteForceReadItems("w", saved, {box}));
    }
  }
  // The layouts must exercise the search, not only produce nothing.
  EXPECT_GT(nonempty_cases, 1000u);
  EXPECT_GT(indexed_cases, 700u);
}

TEST(CreateReadItemsForChunkListPropertyTest, LargeRowLayoutsMatchBruteForce) {
  // Saved by many ranks, loaded by fewer, more or the same number, in rows
  // of a tall tensor: the W4 shape, small enough for the reference.
  const uint32_t seed = dcp::test::TestSeed();
  SCOPED_TRACE(absl::StrCat("DCP_TEST_SEED=", seed));
  std::mt19937 rng(seed);
  for (int iteration = 0; iteration < 40; ++iteration) {
    const int64_t rows = std::uniform_int_distribution<int64_t>(1, 5000)(rng);
    TensorStorageMetadata saved;
    saved.size = {rows, 3};
    for (int64_t r : Cuts(rng, rows, 200, /*allow_empty=*/true)) {
      if (r < rows) saved.chunks.push_back(Chunk({r, 0}, {0, 3}));
    }
    // Make the cuts into rows: each chunk ends where the next starts.
    std::sort(saved.chunks.begin(), saved.chunks.end(),
              [](const ChunkStorageMetadata& a, const ChunkStorageMetadata& b) {
                return a.offsets < b.offsets;
              });
    for (size_t i = 0; i < saved.chunks.size(); ++i) {
      const int64_t end =
          i + 1 < saved.chunks.size() ? saved.chunks[i + 1].offsets[0] : rows;
      saved.chunks[i].sizes[0] = end - saved.chunks[i].offsets[0];
    }
    std::vector<ChunkStorageMetadata> local;
    for (int64_t r : Cuts(rng, rows, 60, /*allow_empty=*/false)) {
      if (r < rows) local.push_back(Chunk({r, 0}, {1, 3}));
    }
    SCOPED_TRACE(absl::StrCat("iteration ", iteration, " rows ", rows));
    const std::vector<ReadItem> expected =
        BruteForceReadItems("w", saved, local);
    const std::vector<ReadItem> indexed =
        CreateReadItemsForChunkList("w", saved, local);
    ASSERT_EQ(indexed, expected);
    ASSERT_EQ(Hints(indexed), Hints(expected));
  }
}

// The reference for CheckReadItemsCoverChunks' verdict: every pair of
// boxes read into a chunk checked, volumes summed.
bool CoversExactlyOnce(const std::vector<ChunkStorageMetadata>& local_chunks,
                       const std::vector<ReadItem>& items) {
  for (size_t li = 0; li < local_chunks.size(); ++li) {
    std::vector<ChunkStorageMetadata> boxes;
    for (const ReadItem& item : items) {
      if (item.dest_index.index == static_cast<int64_t>(li)) {
        boxes.push_back(Chunk(item.dest_offsets, item.lengths));
      }
    }
    int64_t covered = 0;
    for (size_t i = 0; i < boxes.size(); ++i) {
      covered += NumElements(boxes[i].sizes);
      for (size_t j = i + 1; j < boxes.size(); ++j) {
        if (ChunksOverlap(boxes[i], boxes[j])) return false;
      }
    }
    if (covered != NumElements(local_chunks[li].sizes)) return false;
  }
  return true;
}

TEST(CheckReadItemsCoverChunksPropertyTest, AgreesWithPairwiseReference) {
  const uint32_t seed = dcp::test::TestSeed();
  SCOPED_TRACE(absl::StrCat("DCP_TEST_SEED=", seed));
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int64_t> extent(1, 30);
  size_t covered_cases = 0;
  for (int iteration = 0; iteration < 2000; ++iteration) {
    // Layouts inside the tensor (no degenerate boxes, whose volumes the
    // reference would have to saturate).
    const Layout saved_layout = kLayouts[iteration % 5];
    const Layout local_layout =
        kLayouts[std::uniform_int_distribution<int>(0, 3)(rng)];
    const int64_t rows = extent(rng);
    const int64_t cols = extent(rng);
    TensorStorageMetadata saved;
    saved.size = {rows, cols};
    saved.chunks = MakeLayout(rng, saved_layout, rows, cols);
    if (saved_layout == Layout::kRandomBoxes) {
      // Keep them inside the tensor, still overlapping.
      for (ChunkStorageMetadata& c : saved.chunks) {
        for (size_t d = 0; d < 2; ++d) {
          c.offsets[d] = std::clamp<int64_t>(c.offsets[d], 0, saved.size[d]);
          c.sizes[d] =
              std::clamp<int64_t>(c.sizes[d], 0, saved.size[d] - c.offsets[d]);
        }
      }
    }
    const std::vector<ChunkStorageMetadata> local =
        MakeLayout(rng, local_layout, rows, cols);
    SCOPED_TRACE(absl::StrCat("iteration ", iteration, ": saved ",
                              Describe(saved.chunks), "; local ",
                              Describe(local)));
    const std::vector<ReadItem> items =
        CreateReadItemsForChunkList("w", saved, local);
    const bool want = CoversExactlyOnce(local, items);
    if (want) ++covered_cases;
    const absl::Status status = CheckReadItemsCoverChunks("w", local, items);
    ASSERT_EQ(status.ok(), want) << status;
    if (!want) {
      ASSERT_EQ(status.code(), absl::StatusCode::kDataLoss);
    }
  }
  EXPECT_GT(covered_cases, 400u);
  EXPECT_LT(covered_cases, 1900u);
}

}  // namespace
}  // namespace dcp
