// -----------------------------------------------------------------------------
// File: testing/tensor_matchers.h
// -----------------------------------------------------------------------------
//
// gMock matchers for tensors and state dicts, and deterministic test data:
//
//   EXPECT_THAT(loaded, TensorEq(expected));
//   EXPECT_THAT(state_dict, StateDictEq(expected_state_dict));
//   at::Tensor t = MakeTestTensor({4, 3}, at::kBFloat16, /*seed=*/1);
//
// Equality is `ValuesEqual` from core/state_dict.h: same dtype, same
// shape, every element equal, NaN equal to NaN. On a mismatch the matchers
// explain the first difference: for tensors the dtype, the shape or the first
// differing index with both values; for state dicts the path of the first
// differing entry.
#ifndef DCP_TESTING_TENSOR_MATCHERS_H_
#define DCP_TESTING_TENSOR_MATCHERS_H_

#include <ostream>
#include <string>
#include <utility>

#include "ATen/core/Tensor.h"
#include "c10/core/ScalarType.h"
#include "core/metadata.h"
#include "core/state_dict.h"
#include "gmock/gmock.h"

namespace dcp::test {
namespace tensor_matchers_internal {

// Empty if `actual` equals `expected` (ValuesEqual semantics); otherwise a
// description of the first difference.
std::string DescribeTensorMismatch(const at::Tensor& actual,
                                   const at::Tensor& expected);
std::string DescribeStateDictMismatch(const StateDict& actual,
                                      const StateDict& expected);

// Short description of a tensor for matcher messages: dtype, shape, and up
// to a few leading values.
std::string TensorSummary(const at::Tensor& tensor);

class TensorEqMatcher {
 public:
  explicit TensorEqMatcher(at::Tensor expected)
      : expected_(std::move(expected)) {}

  bool MatchAndExplain(const at::Tensor& actual,
                       ::testing::MatchResultListener* listener) const {
    std::string mismatch = DescribeTensorMismatch(actual, expected_);
    if (!mismatch.empty()) *listener << mismatch;
    return mismatch.empty();
  }
  void DescribeTo(std::ostream* os) const {
    *os << "equals " << TensorSummary(expected_);
  }
  void DescribeNegationTo(std::ostream* os) const {
    *os << "does not equal " << TensorSummary(expected_);
  }

 private:
  at::Tensor expected_;
};

class StateDictEqMatcher {
 public:
  explicit StateDictEqMatcher(StateDict expected)
      : expected_(std::move(expected)) {}

  bool MatchAndExplain(const StateDict& actual,
                       ::testing::MatchResultListener* listener) const {
    std::string mismatch = DescribeStateDictMismatch(actual, expected_);
    if (!mismatch.empty()) *listener << mismatch;
    return mismatch.empty();
  }
  void DescribeTo(std::ostream* os) const { *os << "equals " << expected_; }
  void DescribeNegationTo(std::ostream* os) const {
    *os << "does not equal " << expected_;
  }

 private:
  StateDict expected_;
};

}  // namespace tensor_matchers_internal

// Matches an `at::Tensor` equal to `expected` (dtype, shape, all elements;
// NaN equals NaN). `expected` is held by handle: do not modify it while the
// matcher is in use.
inline ::testing::PolymorphicMatcher<tensor_matchers_internal::TensorEqMatcher>
TensorEq(at::Tensor expected) {
  return ::testing::MakePolymorphicMatcher(
      tensor_matchers_internal::TensorEqMatcher(std::move(expected)));
}

// Matches a `StateDict` for which `StateDictsEqual(actual, expected)`.
// Holds a copy of `expected` whose tensors are handles: do not modify them
// while the matcher is in use.
inline ::testing::PolymorphicMatcher<
    tensor_matchers_internal::StateDictEqMatcher>
StateDictEq(StateDict expected) {
  return ::testing::MakePolymorphicMatcher(
      tensor_matchers_internal::StateDictEqMatcher(std::move(expected)));
}

// A contiguous CPU tensor of `shape` and `dtype` with deterministic values
// that depend on `seed`. Elements are pairwise distinct as far as the dtype
// allows: always for float32/float64/int32/int64/complex (up to millions of
// elements), for up to 256 elements for 8-bit integers, float16 and
// bfloat16, and never for bool (which alternates). Different seeds give
// different tensors (for bool, seeds of different parity). Supported: bool,
// uint8, int8, int16, int32, int64, float16, bfloat16, float32, float64,
// complex64, complex128; anything else CHECK-fails (a test bug).
at::Tensor MakeTestTensor(const Shape& shape, c10::ScalarType dtype, int seed);

}  // namespace dcp::test

#endif  // DCP_TESTING_TENSOR_MATCHERS_H_
