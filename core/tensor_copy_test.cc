#include "core/tensor_copy.h"

#include <cstdint>
#include <utility>
#include <vector>

#include "ATen/ATen.h"
#include "absl/status/status.h"
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
using ::testing::IsEmpty;
using Runs = std::vector<std::pair<int64_t, int64_t>>;

TEST(CopyTensorIntoTest, CopiesContiguousTensorsAndBumpsTheVersion) {
  const at::Tensor src = MakeTestTensor({4, 3}, at::kFloat, 1);
  at::Tensor dest = at::zeros({4, 3});
  const auto version = dest._version();
  DCP_ASSERT_OK(CopyTensorInto(src, dest));
  EXPECT_THAT(dest, TensorEq(src));
  EXPECT_GT(dest._version(), version);
}

TEST(CopyTensorIntoTest, ConvertsTheDtype) {
  const at::Tensor src = MakeTestTensor({5}, at::kInt, 2);
  at::Tensor dest = at::zeros({5}, at::kDouble);
  DCP_ASSERT_OK(CopyTensorInto(src, dest));
  EXPECT_THAT(dest, TensorEq(src.to(at::kDouble)));
}

TEST(CopyTensorIntoTest, WritesOnlyTheElementsOfAView) {
  at::Tensor full = at::zeros({4, 6});
  at::Tensor column = full.narrow(1, 2, 3);
  const at::Tensor src = MakeTestTensor({4, 3}, at::kFloat, 3);
  DCP_ASSERT_OK(CopyTensorInto(src, column));
  at::Tensor expected = at::zeros({4, 6});
  expected.narrow(1, 2, 3).copy_(src);
  EXPECT_THAT(full, TensorEq(expected));
}

TEST(CopyTensorIntoTest, ReadsNonContiguousSources) {
  const at::Tensor base = MakeTestTensor({3, 5}, at::kLong, 4);
  at::Tensor dest = at::empty({5, 3}, at::kLong);
  DCP_ASSERT_OK(CopyTensorInto(base.t(), dest));
  EXPECT_THAT(dest, TensorEq(base.t().contiguous()));
}

TEST(CopyTensorIntoTest, WritesIntoLeavesThatRequireGrad) {
  at::Tensor dest = at::zeros({2, 2}).requires_grad_(true);
  const at::Tensor src = MakeTestTensor({2, 2}, at::kFloat, 5);
  DCP_ASSERT_OK(CopyTensorInto(src, dest));
  EXPECT_THAT(dest.detach(), TensorEq(src));
}

TEST(CopyTensorIntoTest, RejectsBadArguments) {
  EXPECT_THAT(CopyTensorInto(at::zeros({2, 3}), at::zeros({3, 2})),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("shape [2, 3] into one of shape [3, 2]")));
  EXPECT_THAT(CopyTensorInto(at::Tensor(), at::zeros({1})),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("undefined")));
  EXPECT_THAT(CopyTensorInto(at::zeros({1}), at::Tensor()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("undefined")));
  // An expanded destination has several elements in one place: libtorch
  // refuses it, and the refusal becomes a status.
  EXPECT_FALSE(
      CopyTensorInto(at::ones({3, 2}), at::zeros({1, 2}).expand({3, 2})).ok());
  DCP_EXPECT_OK(CopyTensorInto(at::zeros({0, 2}), at::zeros({0, 2})));
}

TEST(CopyTensorIntoTest, OverlappingContiguousTensorsAreLeftToLibtorch) {
  at::Tensor buffer = at::arange(8, at::kFloat);
  // [0, 6) into [2, 8): libtorch refuses the partial overlap.
  EXPECT_FALSE(
      CopyTensorInto(buffer.narrow(0, 0, 6), buffer.narrow(0, 2, 6)).ok());
  EXPECT_THAT(buffer, TensorEq(at::arange(8, at::kFloat)));
}

TEST(CloneToCpuTest, ReturnsAnIndependentContiguousCopy) {
  at::Tensor src = MakeTestTensor({3, 4}, at::kBFloat16, 6);
  DCP_ASSERT_OK_AND_ASSIGN(at::Tensor copy, CloneToCpu(src));
  EXPECT_THAT(copy, TensorEq(src.clone()));
  EXPECT_TRUE(copy.is_contiguous());
  EXPECT_NE(copy.data_ptr(), src.data_ptr());
  src.fill_(0);
  EXPECT_THAT(copy, TensorEq(MakeTestTensor({3, 4}, at::kBFloat16, 6)));
}

TEST(CloneToCpuTest, CopiesViewsDetachedFromAutograd) {
  at::Tensor base = MakeTestTensor({4, 6}, at::kFloat, 7).requires_grad_(true);
  const at::Tensor view = base.narrow(1, 1, 3).t();
  DCP_ASSERT_OK_AND_ASSIGN(at::Tensor copy, CloneToCpu(view));
  EXPECT_FALSE(copy.requires_grad());
  EXPECT_TRUE(copy.is_contiguous());
  EXPECT_THAT(copy, TensorEq(view.detach().contiguous()));
}

TEST(CloneToCpuTest, ResolvesConjugateViews) {
  const at::Tensor src = MakeTestTensor({3}, at::kComplexFloat, 8);
  DCP_ASSERT_OK_AND_ASSIGN(at::Tensor copy, CloneToCpu(src.conj()));
  EXPECT_FALSE(copy.is_conj());
  EXPECT_THAT(copy, TensorEq(src.conj().resolve_conj()));
}

TEST(CloneToCpuTest, UndefinedStaysUndefined) {
  DCP_ASSERT_OK_AND_ASSIGN(at::Tensor copy, CloneToCpu(at::Tensor()));
  EXPECT_FALSE(copy.defined());
}

TEST(ContiguousRunsTest, ContiguousIsOneRun) {
  EXPECT_EQ(tensor_copy_internal::ContiguousRuns(at::zeros({4, 3})),
            (Runs{{0, 48}}));
}

TEST(ContiguousRunsTest, AColumnViewIsOneRunPerRow) {
  const at::Tensor column = at::zeros({3, 8}, at::kDouble).narrow(1, 2, 3);
  EXPECT_EQ(tensor_copy_internal::ContiguousRuns(column),
            (Runs{{0, 24}, {64, 24}, {128, 24}}));
}

TEST(ContiguousRunsTest, TransposedIsOneRunPerElementInMemoryOrder) {
  const at::Tensor t = at::zeros({2, 3}, at::kInt).t();  // strides {1, 3}
  EXPECT_EQ(tensor_copy_internal::ContiguousRuns(t),
            (Runs{{0, 4}, {12, 4}, {4, 4}, {16, 4}, {8, 4}, {20, 4}}));
}

TEST(ContiguousRunsTest, MergesDimensionsAndSkipsExpandedOnes) {
  // Rows of a [2, 3, 4] block taken from a [2, 3, 10] tensor: dimension 0
  // and 1 merge, each row is one run.
  const at::Tensor block = at::zeros({2, 3, 10}, at::kByte).narrow(2, 0, 4);
  EXPECT_EQ(tensor_copy_internal::ContiguousRuns(block),
            (Runs{{0, 4}, {10, 4}, {20, 4}, {30, 4}, {40, 4}, {50, 4}}));
  const at::Tensor expanded = at::zeros({1, 4}).expand({5, 4});
  EXPECT_EQ(tensor_copy_internal::ContiguousRuns(expanded), (Runs{{0, 16}}));
  // A storage offset moves nothing: runs are relative to data_ptr().
  EXPECT_EQ(
      tensor_copy_internal::ContiguousRuns(at::zeros({10}).narrow(0, 3, 4)),
      (Runs{{0, 16}}));
}

TEST(ContiguousRunsTest, SkipsWhatTheAnnotationsSkip) {
  EXPECT_THAT(tensor_copy_internal::ContiguousRuns(at::Tensor()), IsEmpty());
  EXPECT_THAT(tensor_copy_internal::ContiguousRuns(at::zeros({0, 3})),
              IsEmpty());
  // The annotations themselves are no-ops here (no TSan) and must not fail.
  AnnotateTensorRead(at::zeros({2, 2}).t());
  AnnotateTensorWrite(at::Tensor());
}

}  // namespace
}  // namespace dcp
