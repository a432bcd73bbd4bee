#include "planner/plan_validation.h"

#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "checkpoint/metadata.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/status_matchers.h"

namespace dcp {
namespace {

using ::dcp::testing::StatusIs;
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
      ElementsAre("\"k\": chunk [0, 2]+[4, 3] is out of bounds of size [4, 4]",
                  "\"k\": chunks cover 20 of 16 elements"));
  EXPECT_THAT(Problems(Tensor({4}, {Chunk({-1}, {4}), Chunk({3}, {1})})),
              ElementsAre("\"k\": chunk [-1]+[4] is out of bounds of size [4]",
                          "\"k\": chunks cover 5 of 4 elements"));
  EXPECT_THAT(Problems(Tensor({4}, {Chunk({0}, {4}), Chunk({2}, {-2})})),
              ElementsAre("\"k\": chunk [2]+[-2] is out of bounds of size [4]",
                          "\"k\": chunks cover 2 of 4 elements"));
}

TEST(PlanValidationTest, HugeOffsetsDoNotOverflow) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  EXPECT_THAT(
      Problems(Tensor({4}, {Chunk({kMax}, {kMax})})),
      ElementsAre(HasSubstr("is out of bounds"), HasSubstr("chunks cover")));
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
  EXPECT_OK(ValidateGlobalMetadata(md));
  EXPECT_OK(ValidateGlobalMetadata(Metadata{}));
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

}  // namespace
}  // namespace dcp
