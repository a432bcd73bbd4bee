#include "core/sharding.h"

#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "ATen/ATen.h"
#include "core/metadata.h"
#include "core/state_dict.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/status_matchers.h"
#include "testing/tensor_matchers.h"

namespace dcp {
namespace {

using ::dcp::test::MakeTestTensor;
using ::dcp::test::StatusIs;
using ::dcp::test::TensorEq;
using ::testing::HasSubstr;

// (offset, length) along `dim` of every rank's shard.
std::vector<std::pair<int64_t, int64_t>> Layout(const at::Tensor& full,
                                                int64_t dim, int world) {
  std::vector<std::pair<int64_t, int64_t>> layout;
  for (int r = 0; r < world; ++r) {
    absl::StatusOr<Shard> shard = ChunkShard(full, dim, r, world);
    EXPECT_TRUE(shard.ok()) << shard.status();
    if (!shard.ok()) return {};
    layout.emplace_back(shard->offsets[dim], shard->tensor.size(dim));
  }
  return layout;
}

using Ranges = std::vector<std::pair<int64_t, int64_t>>;

TEST(ChunkShardTest, UnevenLastShard) {
  at::Tensor full = MakeTestTensor({10}, at::kFloat, 0);
  EXPECT_EQ(Layout(full, 0, 4), (Ranges{{0, 3}, {3, 3}, {6, 3}, {9, 1}}));
  DCP_ASSERT_OK_AND_ASSIGN(Shard last, ChunkShard(full, 0, 3, 4));
  EXPECT_THAT(last.tensor, TensorEq(full.narrow(0, 9, 1)));
  EXPECT_EQ(last.offsets, Shape({9}));
}

TEST(ChunkShardTest, EvenSplit) {
  at::Tensor full = MakeTestTensor({8, 3}, at::kInt, 0);
  EXPECT_EQ(Layout(full, 0, 4), (Ranges{{0, 2}, {2, 2}, {4, 2}, {6, 2}}));
  DCP_ASSERT_OK_AND_ASSIGN(Shard shard, ChunkShard(full, 0, 1, 4));
  EXPECT_EQ(shard.offsets, Shape({2, 0}));
  EXPECT_THAT(shard.tensor, TensorEq(full.narrow(0, 2, 2)));
}

TEST(ChunkShardTest, TrailingRanksGetEmptyShardsAtTheEnd) {
  at::Tensor full = MakeTestTensor({2, 3}, at::kFloat, 0);
  EXPECT_EQ(Layout(full, 0, 4), (Ranges{{0, 1}, {1, 1}, {2, 0}, {2, 0}}));
  // 5 over 4: chunk 2 -> 2, 2, 1, 0.
  at::Tensor five = MakeTestTensor({5}, at::kFloat, 0);
  EXPECT_EQ(Layout(five, 0, 4), (Ranges{{0, 2}, {2, 2}, {4, 1}, {5, 0}}));
  DCP_ASSERT_OK_AND_ASSIGN(Shard empty, ChunkShard(full, 0, 3, 4));
  EXPECT_EQ(empty.tensor.sizes(), c10::IntArrayRef({0, 3}));
  EXPECT_EQ(empty.tensor.scalar_type(), at::kFloat);
  EXPECT_EQ(empty.offsets, Shape({2, 0}));
  // Size 0 along the dimension: every shard is empty at offset 0.
  at::Tensor none = at::zeros({0, 2});
  EXPECT_EQ(Layout(none, 0, 3), (Ranges{{0, 0}, {0, 0}, {0, 0}}));
}

TEST(ChunkShardTest, OtherDimsAndNegativeDim) {
  at::Tensor full = MakeTestTensor({3, 7}, at::kDouble, 0);
  EXPECT_EQ(Layout(full, 1, 3), (Ranges{{0, 3}, {3, 3}, {6, 1}}));
  DCP_ASSERT_OK_AND_ASSIGN(Shard shard, ChunkShard(full, -1, 1, 3));
  EXPECT_EQ(shard.offsets, Shape({0, 3}));
  EXPECT_THAT(shard.tensor, TensorEq(full.narrow(1, 3, 3)));
}

TEST(ChunkShardTest, ShardsAreContiguousClones) {
  at::Tensor full = MakeTestTensor({4, 6}, at::kFloat, 0);
  DCP_ASSERT_OK_AND_ASSIGN(Shard shard, ChunkShard(full, 1, 0, 2));
  EXPECT_TRUE(shard.tensor.is_contiguous());
  shard.tensor.fill_(-1);
  EXPECT_THAT(full, TensorEq(MakeTestTensor({4, 6}, at::kFloat, 0)));
}

TEST(ShardAlongDimTest, HasGlobalSizeAndOneShard) {
  at::Tensor full = MakeTestTensor({10, 2}, at::kBFloat16, 3);
  DCP_ASSERT_OK_AND_ASSIGN(ShardedTensor st, ShardAlongDim(full, 0, 2, 4));
  EXPECT_EQ(st.global_size, Shape({10, 2}));
  ASSERT_EQ(st.local_shards.size(), 1u);
  EXPECT_EQ(st.local_shards[0].offsets, Shape({6, 0}));
  EXPECT_THAT(st.local_shards[0].tensor, TensorEq(full.narrow(0, 6, 3)));
}

TEST(ShardGrid2DTest, TwoByTwo) {
  at::Tensor full = MakeTestTensor({5, 7}, at::kFloat, 0);
  // Rows: 5 over 2 -> [0,3) [3,5); cols: 7 over 2 -> [0,4) [4,7).
  const std::vector<std::pair<Shape, Shape>> expected = {
      {{0, 0}, {3, 4}}, {{0, 4}, {3, 3}}, {{3, 0}, {2, 4}}, {{3, 4}, {2, 3}}};
  for (int r = 0; r < 4; ++r) {
    SCOPED_TRACE(r);
    DCP_ASSERT_OK_AND_ASSIGN(ShardedTensor st, ShardGrid2D(full, r, 2, 2));
    ASSERT_EQ(st.local_shards.size(), 1u);
    const Shard& shard = st.local_shards[0];
    EXPECT_EQ(shard.offsets, expected[r].first);
    EXPECT_EQ(shard.tensor.sizes().vec(), expected[r].second);
    EXPECT_THAT(shard.tensor,
                TensorEq(full.narrow(0, expected[r].first[0],
                                     expected[r].second[0])
                             .narrow(1, expected[r].first[1],
                                     expected[r].second[1])));
  }
}

TEST(ShardGrid2DTest, TwoByThree) {
  at::Tensor full = MakeTestTensor({5, 7}, at::kInt, 0);
  // Rows: 5 over 2 -> [0,3) [3,5); cols: 7 over 3 -> [0,3) [3,6) [6,7).
  const std::vector<std::pair<Shape, Shape>> expected = {
      {{0, 0}, {3, 3}}, {{0, 3}, {3, 3}}, {{0, 6}, {3, 1}},
      {{3, 0}, {2, 3}}, {{3, 3}, {2, 3}}, {{3, 6}, {2, 1}}};
  std::vector<ShardedTensor> all;
  for (int r = 0; r < 6; ++r) {
    SCOPED_TRACE(r);
    DCP_ASSERT_OK_AND_ASSIGN(ChunkStorageMetadata box,
                             ShardBoxGrid2D({5, 7}, r, 2, 3));
    EXPECT_EQ(box.offsets, expected[r].first);
    EXPECT_EQ(box.sizes, expected[r].second);
    DCP_ASSERT_OK_AND_ASSIGN(ShardedTensor st, ShardGrid2D(full, r, 2, 3));
    EXPECT_EQ(st.local_shards[0].offsets, expected[r].first);
    EXPECT_EQ(st.local_shards[0].tensor.sizes().vec(), expected[r].second);
    all.push_back(std::move(st));
  }
  EXPECT_THAT(Unshard(all), dcp::test::IsOkAndHolds(TensorEq(full)));
}

TEST(ShardGrid2DTest, HigherDimsStayWhole) {
  at::Tensor full = MakeTestTensor({4, 4, 3}, at::kFloat, 0);
  DCP_ASSERT_OK_AND_ASSIGN(ShardedTensor st, ShardGrid2D(full, 3, 2, 2));
  EXPECT_EQ(st.local_shards[0].offsets, Shape({2, 2, 0}));
  EXPECT_EQ(st.local_shards[0].tensor.sizes(), c10::IntArrayRef({2, 2, 3}));
}

TEST(ZerosShardTest, SameLayoutAsDataShards) {
  DCP_ASSERT_OK_AND_ASSIGN(ShardedTensor dest,
                           ZerosShardAlongDim({10, 2}, at::kHalf, 0, 3, 4));
  EXPECT_EQ(dest.global_size, Shape({10, 2}));
  ASSERT_EQ(dest.local_shards.size(), 1u);
  EXPECT_EQ(dest.local_shards[0].offsets, Shape({9, 0}));
  EXPECT_THAT(dest.local_shards[0].tensor, TensorEq(at::zeros({1, 2}, at::kHalf)));

  DCP_ASSERT_OK_AND_ASSIGN(ShardedTensor grid,
                           ZerosShardGrid2D({5, 7}, at::kLong, 5, 2, 3));
  EXPECT_EQ(grid.local_shards[0].offsets, Shape({3, 6}));
  EXPECT_THAT(grid.local_shards[0].tensor, TensorEq(at::zeros({2, 1}, at::kLong)));

  EXPECT_THAT(ZerosShardAlongDim({4}, c10::ScalarType::Undefined, 0, 0, 1),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("invalid dtype")));
  EXPECT_THAT(ZerosShardAlongDim({4, -1}, at::kFloat, 0, 0, 1),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("negative")));
}

TEST(UnshardTest, RoundTripsManyShapesWorldsAndDtypes) {
  const std::vector<Shape> shapes = {{1}, {2}, {7}, {10}, {0}, {3, 5}, {5, 7},
                                     {0, 4}, {4, 1, 3}};
  for (at::ScalarType dtype : {at::kBool, at::kByte, at::kInt, at::kLong,
                               at::kHalf, at::kBFloat16, at::kFloat,
                               at::kDouble, at::kComplexFloat}) {
    for (const Shape& shape : shapes) {
      at::Tensor full = MakeTestTensor(shape, dtype, 5);
      for (int64_t dim = 0; dim < static_cast<int64_t>(shape.size()); ++dim) {
        for (int world : {1, 2, 3, 4, 8}) {
          SCOPED_TRACE(::testing::Message()
                       << c10::toString(dtype) << " shape " << full.sizes()
                       << " dim " << dim << " world " << world);
          std::vector<ShardedTensor> per_rank;
          for (int r = 0; r < world; ++r) {
            DCP_ASSERT_OK_AND_ASSIGN(ShardedTensor st,
                                     ShardAlongDim(full, dim, r, world));
            per_rank.push_back(std::move(st));
          }
          EXPECT_THAT(Unshard(per_rank),
                      dcp::test::IsOkAndHolds(TensorEq(full)));
        }
      }
      if (shape.size() >= 2) {
        for (auto [rows, cols] : {std::pair{1, 1}, {2, 2}, {2, 3}, {3, 2},
                                  {4, 4}}) {
          SCOPED_TRACE(::testing::Message()
                       << c10::toString(dtype) << " shape " << full.sizes()
                       << " grid " << rows << "x" << cols);
          std::vector<ShardedTensor> per_rank;
          for (int r = 0; r < rows * cols; ++r) {
            DCP_ASSERT_OK_AND_ASSIGN(ShardedTensor st,
                                     ShardGrid2D(full, r, rows, cols));
            per_rank.push_back(std::move(st));
          }
          EXPECT_THAT(Unshard(per_rank),
                      dcp::test::IsOkAndHolds(TensorEq(full)));
        }
      }
    }
  }
}

TEST(UnshardTest, ZeroDimensionalTensorAndReplicas) {
  at::Tensor scalar = at::scalar_tensor(2.5);
  ShardedTensor whole{{}, {Shard{scalar, {}}}};
  EXPECT_THAT(Unshard({whole}), dcp::test::IsOkAndHolds(TensorEq(scalar)));
  // The same box on two ranks (replicated) is used once.
  at::Tensor full = MakeTestTensor({4}, at::kFloat, 0);
  ShardedTensor lo{{4}, {Shard{full.narrow(0, 0, 2), {0}}}};
  ShardedTensor hi{{4}, {Shard{full.narrow(0, 2, 2), {2}}}};
  EXPECT_THAT(Unshard({lo, lo, hi, hi}),
              dcp::test::IsOkAndHolds(TensorEq(full)));
  // A rank may hold no shard, or several.
  ShardedTensor both{{4}, {lo.local_shards[0], hi.local_shards[0]}};
  ShardedTensor nothing{{4}, {}};
  EXPECT_THAT(Unshard({nothing, both}),
              dcp::test::IsOkAndHolds(TensorEq(full)));
}

TEST(UnshardTest, Errors) {
  at::Tensor full = MakeTestTensor({4}, at::kFloat, 0);
  ShardedTensor lo{{4}, {Shard{full.narrow(0, 0, 2).clone(), {0}}}};
  ShardedTensor hi{{4}, {Shard{full.narrow(0, 2, 2).clone(), {2}}}};
  const auto kInvalid = absl::StatusCode::kInvalidArgument;

  EXPECT_THAT(Unshard({}), StatusIs(kInvalid, HasSubstr("no ranks")));
  EXPECT_THAT(Unshard({lo}), StatusIs(kInvalid, HasSubstr("cover 2 of the 4")));
  ShardedTensor mid{{4}, {Shard{full.narrow(0, 1, 2).clone(), {1}}}};
  EXPECT_THAT(Unshard({lo, mid, hi}),
              StatusIs(kInvalid, HasSubstr("rank 1 shard 0 (offsets [1] "
                                           "sizes [2]) overlaps rank 0")));
  ShardedTensor other_global{{6}, hi.local_shards};
  EXPECT_THAT(Unshard({lo, other_global}),
              StatusIs(kInvalid, HasSubstr("rank 1 has global size [6]")));
  ShardedTensor outside{{4}, {Shard{full.narrow(0, 0, 2).clone(), {3}}}};
  EXPECT_THAT(Unshard({lo, outside}),
              StatusIs(kInvalid, HasSubstr("rank 1 shard 0 at offsets [3]")));
  ShardedTensor wrong_rank{{4}, {Shard{at::zeros({2, 1}), {2}}}};
  EXPECT_THAT(Unshard({lo, wrong_rank}),
              StatusIs(kInvalid, HasSubstr("rank 1 shard 0 has offsets [2] "
                                           "and shape [2, 1]")));
  ShardedTensor wrong_dtype{{4}, {Shard{at::zeros({2}, at::kDouble), {2}}}};
  EXPECT_THAT(Unshard({lo, wrong_dtype}),
              StatusIs(kInvalid, HasSubstr("has dtype float64")));
  ShardedTensor bad_replica{{4}, {Shard{at::zeros({2}), {0}}}};
  EXPECT_THAT(Unshard({lo, bad_replica, hi}),
              StatusIs(kInvalid, HasSubstr("different data")));
  ShardedTensor undefined{{4}, {Shard{at::Tensor(), {0}}}};
  EXPECT_THAT(Unshard({undefined}), StatusIs(kInvalid, HasSubstr("no tensor")));
  ShardedTensor empty_global{{0}, {}};
  EXPECT_THAT(Unshard({empty_global}),
              StatusIs(kInvalid, HasSubstr("no rank holds a shard")));
}

TEST(ShardingErrorsTest, InvalidArgumentsAreReported) {
  at::Tensor full = at::zeros({4, 4});
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  EXPECT_THAT(ChunkShard(full, 2, 0, 2),
              StatusIs(kInvalid, HasSubstr("dim 2 is out of range for a 2-d")));
  EXPECT_THAT(ChunkShard(full, -3, 0, 2),
              StatusIs(kInvalid, HasSubstr("dim -3 is out of range")));
  EXPECT_THAT(ChunkShard(full, 0, 2, 2),
              StatusIs(kInvalid, HasSubstr("rank 2 is out of range [0, 2)")));
  EXPECT_THAT(ChunkShard(full, 0, -1, 2),
              StatusIs(kInvalid, HasSubstr("rank -1 is out of range")));
  EXPECT_THAT(ChunkShard(full, 0, 0, 0),
              StatusIs(kInvalid, HasSubstr("world size must be at least 1")));
  EXPECT_THAT(ShardAlongDim(at::scalar_tensor(1.0), 0, 0, 1),
              StatusIs(kInvalid, HasSubstr("cannot shard a 0-d tensor")));
  EXPECT_THAT(ShardAlongDim(at::Tensor(), 0, 0, 1),
              StatusIs(kInvalid, HasSubstr("undefined")));
  EXPECT_THAT(ShardGrid2D(at::zeros({4}), 0, 2, 2),
              StatusIs(kInvalid, HasSubstr("at least 2 dimensions")));
  EXPECT_THAT(ShardGrid2D(full, 4, 2, 2),
              StatusIs(kInvalid, HasSubstr("rank 4 is out of range [0, 4)")));
  EXPECT_THAT(ShardGrid2D(full, 0, 0, 2),
              StatusIs(kInvalid, HasSubstr("at least 1 x 1, got 0 x 2")));
  EXPECT_THAT(ZerosShardGrid2D({4, 4}, at::kFloat, 0, 2, -1),
              StatusIs(kInvalid));
}

TEST(ShardBoxTest, HugeSizesDoNotOverflow) {
  constexpr int64_t kHuge = std::numeric_limits<int64_t>::max();
  int64_t covered = 0;
  for (int r = 0; r < 3; ++r) {
    DCP_ASSERT_OK_AND_ASSIGN(ChunkStorageMetadata box,
                             ShardBoxAlongDim({kHuge}, 0, r, 3));
    EXPECT_EQ(box.offsets[0], covered);
    covered += box.sizes[0];
  }
  EXPECT_EQ(covered, kHuge);
  DCP_ASSERT_OK_AND_ASSIGN(ChunkStorageMetadata last,
                           ShardBoxAlongDim({kHuge - 1}, 0, 1, 2));
  EXPECT_EQ(last.offsets[0] + last.sizes[0], kHuge - 1);
}

}  // namespace
}  // namespace dcp
