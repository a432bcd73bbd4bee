#include "planner/plan_validation.h"

#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/metadata.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/status_matchers.h"

namespace dcp {
namespace {

using ::dcp::test::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

ChunkStorageMetadata Chunk(Shape offsets, Shape sizes) {
  return ChunkStorageMetadata{std::move(offsets), std::move(sizes)};
}

TensorStorageMetadata Tensor(Shape size,
                             std::vector<ChunkStorageMetadata> chunks) {
  TensorStorageMetadata md;
  md.size = std::move(size);
  md.chunks = std::move(chunks);
  return md;
}

std::vector<std::string> Problems(const TensorStorageMetadata& md) {
  std::vector<std::string> problems;
  AppendTensorChunkProblems("k", md, &problems);
  return problems;
}

TEST(PlanValidationTest, ExactTilingsAreValid) {
  EXPECT_THAT(
      Problems(Tensor({8, 4}, {Chunk({0, 0}, {4, 4}), Chunk({4, 0}, {4, 4})})),
      IsEmpty());
  EXPECT_THAT(
      Problems(Tensor({4, 4}, {Chunk({0, 0}, {2, 2}), Chunk({0, 2}, {2, 2}),
                               Chunk({2, 0}, {2, 2}), Chunk({2, 2}, {2, 2})})),
      IsEmpty());
  EXPECT_THAT(Problems(Tensor({5}, {Chunk({0}, {5})})), IsEmpty());
}

TEST(PlanValidationTest, ZeroDimensionalTensorsAreSkipped) {
  // Python skips 0-d entries entirely, even with no or two chunks.
  EXPECT_THAT(Problems(Tensor({}, {})), IsEmpty());
  EXPECT_THAT(Problems(Tensor({}, {Chunk({}, {}), Chunk({}, {})})), IsEmpty());
}

TEST(PlanValidationTest, ZeroElementTensorsAreValidWithEmptyChunks) {
  EXPECT_THAT(Problems(Tensor({0, 4}, {Chunk({0, 0}, {0, 4})})), IsEmpty());
  EXPECT_THAT(Problems(Tensor({0}, {})), IsEmpty());
  // Zero-volume chunks overlap nothing, even at the same offsets.
  EXPECT_THAT(
      Problems(Tensor({4, 0}, {Chunk({0, 0}, {4, 0}), Chunk({0, 0}, {4, 0})})),
      IsEmpty());
}

TEST(PlanValidationTest, OverlapIsReported) {
  EXPECT_THAT(
      Problems(Tensor({3, 4}, {Chunk({0, 0}, {2, 4}), Chunk({1, 0}, {2, 4})})),
      ElementsAre("\"k\": chunks [0, 0]+[2, 4] and [1, 0]+[2, 4] "
                  "overlap",
                  "\"k\": chunks cover 16 of 12 elements"));
}

TEST(PlanValidationTest, GapIsReported) {
  EXPECT_THAT(Problems(Tensor({8}, {Chunk({0}, {3}), Chunk({5}, {3})})),
              ElementsAre("\"k\": chunks cover 6 of 8 elements"));
}

TEST(PlanValidationTest, OutOfBoundsIsReported) {
  EXPECT_THAT(
      Problems(Tensor({4, 4}, {Chunk({0, 0}, {4, 2}), Chunk({0, 2}, {4, 3})})),
      ElementsAre("\"k\": chunk [0, 2]+[4, 3] is not inside size [4, 4]",
                  "\"k\": chunks cover 20 of 16 elements"));
  EXPECT_THAT(Problems(Tensor({4}, {Chunk({-1}, {4}), Chunk({3}, {1})})),
              ElementsAre("\"k\": chunk [-1]+[4] is not inside size [4]",
                          "\"k\": chunks cover 5 of 4 elements"));
  EXPECT_THAT(Problems(Tensor({4}, {Chunk({0}, {4}), Chunk({2}, {-2})})),
              ElementsAre("\"k\": chunk [2]+[-2] is not inside size [4]",
                          "\"k\": chunks cover 2 of 4 elements"));
}

TEST(PlanValidationTest, HugeOffsetsDoNotOverflow) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  EXPECT_THAT(
      Problems(Tensor({4}, {Chunk({kMax}, {kMax})})),
      ElementsAre(HasSubstr("is not inside size"), HasSubstr("chunks cover")));
}

TEST(PlanValidationTest, RankMismatchIsReported) {
  EXPECT_THAT(
      Problems(Tensor({4, 4}, {Chunk({0}, {4}), Chunk({0, 0}, {4, 4})})),
      ElementsAre("\"k\": chunk [0]+[4] does not have the rank 2 of "
                  "size [4, 4]"));
}

TEST(PlanValidationTest, ManyOverlapsAreSummarised) {
  std::vector<ChunkStorageMetadata> chunks(6, Chunk({0}, {4}));
  const std::vector<std::string> problems = Problems(Tensor({4}, chunks));
  ASSERT_EQ(problems.size(), 5u);
  EXPECT_EQ(problems[3], "\"k\": more chunks overlap");
  EXPECT_EQ(problems[4], "\"k\": chunks cover 24 of 4 elements");
}

TEST(ValidateGlobalMetadataTest, ValidMetadataIsOk) {
  Metadata md;
  md.state_dict_metadata["w"] =
      Tensor({8, 4}, {Chunk({0, 0}, {4, 4}), Chunk({4, 0}, {4, 4})});
  md.state_dict_metadata["step"] = BytesStorageMetadata{};
  md.state_dict_metadata["scalar"] = Tensor({}, {Chunk({}, {})});
  DCP_EXPECT_OK(ValidateGlobalMetadata(md));
  DCP_EXPECT_OK(ValidateGlobalMetadata(Metadata{}));
}

TEST(ValidateGlobalMetadataTest, ListsEveryProblemWithItsKey) {
  Metadata md;
  md.state_dict_metadata["model.w"] =
      Tensor({3, 4}, {Chunk({0, 0}, {2, 4}), Chunk({1, 0}, {2, 4})});
  md.state_dict_metadata["model.b"] =
      Tensor({8}, {Chunk({0}, {3}), Chunk({5}, {3})});
  md.state_dict_metadata["ok"] = Tensor({2}, {Chunk({0}, {2})});
  EXPECT_THAT(
      ValidateGlobalMetadata(md),
      StatusIs(absl::StatusCode::kInvalidArgument,
               "invalid global plan: \"model.b\": chunks cover 6 of 8 "
               "elements; \"model.w\": chunks [0, 0]+[2, 4] and [1, 0]+[2, 4] "
               "overlap; \"model.w\": chunks cover 16 of 12 elements"));
}

TEST(ValidateGlobalMetadataTest, LongListsAreCapped) {
  Metadata md;
  for (int i = 0; i < 30; ++i) {
    md.state_dict_metadata[absl::StrCat("k", 100 + i)] =
        Tensor({4}, {Chunk({0}, {3})});
  }
  EXPECT_THAT(ValidateGlobalMetadata(md),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("\"k119\": chunks cover 3 of 4"),
                             Not(HasSubstr("\"k120\"")),
                             HasSubstr("; and 10 more problems"))));
}

// ---- ValidateCheckpointMetadata --------------------------------------------

// Metadata of `tensors`, each chunk with elements stored in its own file
// "<fqn>.<position>", and of bytes entries `bytes`, each in "<fqn>".
Metadata Loaded(
    const std::vector<std::pair<std::string, TensorStorageMetadata>>& tensors,
    const std::vector<std::string>& bytes = {}) {
  Metadata md;
  for (const auto& [fqn, tensor] : tensors) {
    md.state_dict_metadata[fqn] = tensor;
    for (size_t i = 0; i < tensor.chunks.size(); ++i) {
      const ChunkStorageMetadata& chunk = tensor.chunks[i];
      if (NumElements(chunk.sizes) <= 0) continue;
      md.storage_data[MetadataIndex(fqn, chunk.offsets)] =
          StorageInfo{absl::StrCat(fqn, ".", i), 0, 100};
    }
  }
  for (const std::string& fqn : bytes) {
    md.state_dict_metadata[fqn] = BytesStorageMetadata{};
    md.storage_data[MetadataIndex(fqn)] = StorageInfo{fqn, 0, 10};
  }
  return md;
}

TEST(ValidateCheckpointMetadataTest, TilingsScalarsEmptyTensorsAndBytesAreOk) {
  DCP_EXPECT_OK(ValidateCheckpointMetadata(Metadata{}));
  DCP_EXPECT_OK(ValidateCheckpointMetadata(Loaded(
      {{"rows", Tensor({8, 4}, {Chunk({0, 0}, {4, 4}), Chunk({4, 0}, {4, 4})})},
       {"grid", Tensor({4, 4}, {Chunk({0, 0}, {2, 2}), Chunk({0, 2}, {2, 2}),
                                Chunk({2, 0}, {2, 2}), Chunk({2, 2}, {2, 2})})},
       {"scalar", Tensor({}, {Chunk({}, {})})},
       {"empty", Tensor({0, 3}, {Chunk({0, 0}, {0, 3})})},
       // Empty shards (uneven DTensor sharding) at the end, even repeated.
       {"uneven", Tensor({3}, {Chunk({0}, {2}), Chunk({2}, {1}),
                               Chunk({3}, {0}), Chunk({3}, {0})})}},
      {"step", "lr"})));
}

TEST(ValidateCheckpointMetadataTest, ChunkOutsideTheTensorIsDataLoss) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  const std::vector<std::pair<ChunkStorageMetadata, std::string>> cases = {
      {Chunk({2, 0}, {3, 4}), "[2, 0]+[3, 4]"},    // Past the end.
      {Chunk({0, -1}, {4, 1}), "[0, -1]+[4, 1]"},  // Negative offset.
      {Chunk({0, 2}, {4, -2}), "[0, 2]+[4, -2]"},  // Negative size.
      {Chunk({kMax, 0}, {kMax, 4}),
       absl::StrCat("[", kMax, ", 0]+[", kMax, ", 4]")},  // Overflow.
  };
  for (const auto& [chunk, text] : cases) {
    SCOPED_TRACE(text);
    Metadata md = Loaded({{"w", Tensor({4, 4}, {Chunk({0, 0}, {2, 4})})}});
    std::get<TensorStorageMetadata>(md.state_dict_metadata["w"])
        .chunks.push_back(chunk);
    md.storage_data[MetadataIndex("w", chunk.offsets)] =
        StorageInfo{"bad", 0, 10};
    EXPECT_THAT(
        ValidateCheckpointMetadata(md),
        StatusIs(absl::StatusCode::kDataLoss,
                 absl::StrCat("invalid checkpoint metadata: \"w\": "
                              "chunk ",
                              text, " (in bad) is not inside size [4, 4]")));
  }
}

TEST(ValidateCheckpointMetadataTest, OverlapIsDataLossNamingChunksAndFiles) {
  EXPECT_THAT(
      ValidateCheckpointMetadata(
          Loaded({{"w", Tensor({4, 4},
                               {Chunk({0, 0}, {3, 4}), Chunk({2, 0}, {2, 4})})},
                  {"ok", Tensor({2}, {Chunk({0}, {2})})}})),
      StatusIs(absl::StatusCode::kDataLoss,
               "invalid checkpoint metadata: \"w\": chunks [0, 0]+[3, 4] (in "
               "w.0) and [2, 0]+[2, 4] (in w.1) overlap"));
  // One chunk inside another, and identical chunks.
  EXPECT_THAT(ValidateCheckpointMetadata(Loaded(
                  {{"v", Tensor({8}, {Chunk({0}, {8}), Chunk({3}, {2})})}})),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("\"v\": chunks [0]+[8] (in v.0) and [3]+[2] "
                                 "(in v.1) overlap")));
  EXPECT_THAT(ValidateCheckpointMetadata(
                  Loaded({{"g", Tensor({4, 4}, {Chunk({1, 1}, {2, 2}),
                                                Chunk({2, 2}, {2, 2})})}})),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("\"g\": chunks [1, 1]+[2, 2] (in g.0) and "
                                 "[2, 2]+[2, 2] (in g.1) overlap")));
  // Touching at a corner or an edge is not overlapping.
  DCP_EXPECT_OK(ValidateCheckpointMetadata(Loaded(
      {{"g", Tensor({4, 4}, {Chunk({0, 0}, {2, 2}), Chunk({2, 2}, {2, 2}),
                             Chunk({0, 2}, {2, 2})})}})));
}

TEST(ValidateCheckpointMetadataTest, GapsAreLeftToTheLoadPlanner) {
  // A partial checkpoint: what a load asks for is checked when planned.
  DCP_EXPECT_OK(ValidateCheckpointMetadata(
      Loaded({{"w", Tensor({8}, {Chunk({0}, {3}), Chunk({5}, {3})})},
              {"none", Tensor({4}, {})}})));
}

TEST(ValidateCheckpointMetadataTest, ZeroDimensionalTensors) {
  DCP_EXPECT_OK(ValidateCheckpointMetadata(Loaded({{"s", Tensor({}, {})}})));
  EXPECT_THAT(ValidateCheckpointMetadata(
                  Loaded({{"s", Tensor({}, {Chunk({}, {}), Chunk({}, {})})}})),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("\"s\": chunks []+[] (in s.1) and []+[] (in "
                                 "s.1) overlap")));
  EXPECT_THAT(ValidateCheckpointMetadata(
                  Loaded({{"s", Tensor({}, {Chunk({0}, {1})})}})),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("\"s\": chunk [0]+[1] does not have the rank "
                                 "0 of size []")));
}

TEST(ValidateCheckpointMetadataTest, RankMismatchAndNegativeSizes) {
  EXPECT_THAT(
      ValidateCheckpointMetadata(Loaded(
          {{"w", Tensor({4, 4}, {Chunk({0}, {4}), Chunk({0, 0}, {4, 4})})}})),
      StatusIs(absl::StatusCode::kDataLoss,
               "invalid checkpoint metadata: \"w\": chunk [0]+[4] "
               "does not have the rank 2 of size [4, 4]"));
  EXPECT_THAT(ValidateCheckpointMetadata(
                  Loaded({{"n", Tensor({4, -1}, {Chunk({0, 0}, {4, 1})})}})),
              StatusIs(absl::StatusCode::kDataLoss,
                       "invalid checkpoint metadata: \"n\": size [4, -1] has a "
                       "negative dimension"));
}

TEST(ValidateCheckpointMetadataTest, StorageEntriesAreChecked) {
  Metadata md = Loaded(
      {{"w", Tensor({4}, {Chunk({0}, {2}), Chunk({2}, {2}), Chunk({4}, {0})})}},
      {"step"});
  DCP_ASSERT_OK(ValidateCheckpointMetadata(md));
  // Entries nothing refers to are ignored.
  Metadata extra = md;
  extra.storage_data[MetadataIndex("gone", Shape{0})] = StorageInfo{"x", 0, 1};
  DCP_EXPECT_OK(ValidateCheckpointMetadata(extra));

  Metadata missing = md;
  missing.storage_data.erase(MetadataIndex("w", Shape{2}));
  missing.storage_data.erase(MetadataIndex("step"));
  EXPECT_THAT(ValidateCheckpointMetadata(missing),
              StatusIs(absl::StatusCode::kDataLoss,
                       "invalid checkpoint metadata: \"step\": bytes entry "
                       "has no storage entry; \"w\": chunk [2]+[2] has no "
                       "storage entry"));

  Metadata negative = md;
  negative.storage_data[MetadataIndex("w", Shape{0})].offset = -8;
  negative.storage_data[MetadataIndex("step")].length = -1;
  EXPECT_THAT(ValidateCheckpointMetadata(negative),
              StatusIs(absl::StatusCode::kDataLoss,
                       "invalid checkpoint metadata: \"step\": storage entry "
                       "in step has offset 0 and length -1; \"w\" chunk at "
                       "[0]: storage entry in w.0 has offset -8 and length "
                       "100"));
}

TEST(ValidateCheckpointMetadataTest, ManyChunksAreCheckedCompletely) {
  // 20,000 row chunks and a 100 x 100 grid: valid as saved; then one
  // chunk anywhere moved onto its neighbour is found, and only that pair.
  constexpr int64_t kRows = 20000;
  std::vector<ChunkStorageMetadata> rows;
  for (int64_t r = 0; r < kRows; ++r) rows.push_back(Chunk({r, 0}, {1, 2}));
  constexpr int64_t kSide = 100;
  std::vector<ChunkStorageMetadata> grid;
  for (int64_t i = 0; i < kSide; ++i) {
    for (int64_t j = 0; j < kSide; ++j) {
      grid.push_back(Chunk({2 * i, 3 * j}, {2, 3}));
    }
  }
  Metadata md = Loaded({{"rows", Tensor({kRows, 2}, rows)},
                        {"grid", Tensor({2 * kSide, 3 * kSide}, grid)}});
  DCP_ASSERT_OK(ValidateCheckpointMetadata(md));

  Metadata bad = md;
  auto& bad_rows =
      std::get<TensorStorageMetadata>(bad.state_dict_metadata["rows"]);
  bad_rows.chunks[7777].sizes = {2, 2};  // Reaches into row 7778.
  auto& bad_grid =
      std::get<TensorStorageMetadata>(bad.state_dict_metadata["grid"]);
  bad_grid.chunks[61 * kSide + 45].offsets = {2 * 61 + 1, 3 * 45};
  bad.storage_data[MetadataIndex("grid", Shape{2 * 61 + 1, 3 * 45})] =
      StorageInfo{"moved", 0, 1};
  // The moved grid chunk overlaps its neighbour below and nothing else (the
  // row it left is a gap, which is not reported here).
  EXPECT_THAT(
      ValidateCheckpointMetadata(bad),
      StatusIs(
          absl::StatusCode::kDataLoss,
          "invalid checkpoint metadata: \"grid\": chunks [123, 135]+[2, 3] "
          "(in moved) and [124, 135]+[2, 3] (in grid.6245) overlap; "
          "\"rows\": chunks [7777, 0]+[2, 2] (in rows.7777) and "
          "[7778, 0]+[1, 2] (in rows.7778) overlap"));
}

TEST(ValidateCheckpointMetadataTest, LongListsAreCapped) {
  std::vector<std::pair<std::string, TensorStorageMetadata>> tensors;
  for (int i = 0; i < 30; ++i) {
    tensors.emplace_back(absl::StrCat("k", 100 + i),
                         Tensor({4}, {Chunk({0}, {3}), Chunk({1}, {3})}));
  }
  EXPECT_THAT(ValidateCheckpointMetadata(Loaded(tensors)),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("\"k119\": chunks [0]+[3]"),
                             Not(HasSubstr("\"k120\"")),
                             HasSubstr("; and 10 more problems"))));
}

}  // namespace
}  // namespace dcp
