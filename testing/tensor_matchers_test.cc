#include "testing/tensor_matchers.h"

#include <cstdint>
#include <limits>
#include <string>

#include "ATen/ATen.h"
#include "core/state_dict.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dcp::test {
namespace {

using ::testing::HasSubstr;
using ::testing::Matcher;
using ::testing::Not;

template <typename T>
std::string Explain(const Matcher<T>& matcher, const T& value) {
  ::testing::StringMatchResultListener listener;
  EXPECT_FALSE(matcher.MatchAndExplain(value, &listener));
  return listener.str();
}

TEST(TensorEqTest, MatchesEqualTensors) {
  at::Tensor t = at::arange(6, at::kFloat).reshape({2, 3});
  EXPECT_THAT(t, TensorEq(t.clone()));
  EXPECT_THAT(t.t(), TensorEq(t.t().contiguous()));
  at::Tensor nan = at::full({2}, std::numeric_limits<float>::quiet_NaN());
  EXPECT_THAT(nan, TensorEq(nan.clone()));
  EXPECT_THAT(at::Tensor(), TensorEq(at::Tensor()));
}

TEST(TensorEqTest, ReportsFirstDifferingIndexAndValues) {
  at::Tensor expected = at::arange(6, at::kFloat).reshape({2, 3});
  at::Tensor actual = expected.clone();
  actual[1][1] = 40;
  actual[1][2] = 50;
  Matcher<at::Tensor> m = TensorEq(expected);
  EXPECT_EQ(Explain(m, actual),
            "which differs at index [1, 1] (2 of 6 elements differ): 40, "
            "expected 4");
}

TEST(TensorEqTest, ReportsDtypeShapeAndUndefined) {
  at::Tensor expected = at::zeros({2, 3});
  Matcher<at::Tensor> m = TensorEq(expected);
  EXPECT_EQ(Explain(m, at::zeros({2, 3}, at::kDouble)),
            "which has dtype float64, expected float32");
  EXPECT_EQ(Explain(m, at::zeros({3, 2})),
            "which has shape [3, 2], expected [2, 3]");
  EXPECT_THAT(Explain(m, at::Tensor()),
              HasSubstr("which is an undefined tensor, expected a float32"));
}

TEST(TensorEqTest, ReportsMismatchForEveryDtype) {
  for (at::ScalarType dtype :
       {at::kBool, at::kByte, at::kChar, at::kShort, at::kInt, at::kLong,
        at::kHalf, at::kBFloat16, at::kFloat, at::kDouble, at::kComplexFloat,
        at::kComplexDouble}) {
    SCOPED_TRACE(c10::toString(dtype));
    at::Tensor expected = MakeTestTensor({3, 2}, dtype, 0);
    at::Tensor actual = expected.clone();
    actual[2][1] = expected[0][0];
    if (dtype == at::kBool) actual[2][1] = expected[2][1].logical_not();
    EXPECT_THAT(expected, TensorEq(expected.clone()));
    EXPECT_THAT(Explain(Matcher<at::Tensor>(TensorEq(expected)), actual),
                HasSubstr("which differs at index [2, 1] (1 of 6"));
  }
}

TEST(TensorEqTest, DescribesExpectedTensor) {
  Matcher<at::Tensor> m = TensorEq(at::arange(3, at::kInt));
  EXPECT_EQ(::testing::DescribeMatcher<at::Tensor>(m),
            "equals a int32 tensor of shape [3] {0, 1, 2}");
  EXPECT_EQ(::testing::DescribeMatcher<at::Tensor>(m, /*negation=*/true),
            "does not equal a int32 tensor of shape [3] {0, 1, 2}");
}

TEST(StateDictEqTest, MatchesAndReportsPathOfFirstDifference) {
  StateDict expected{
      {"model", StateDict{{"w", at::ones({2})}, {"b", at::zeros({1})}}},
      {"lst", List{1, at::ones({1})}},
      {"step", 3}};
  EXPECT_THAT(expected, StateDictEq(expected));
  Matcher<StateDict> m = StateDictEq(expected);

  StateDict tensor_differs = expected;
  tensor_differs.FindMutable("model")->get<StateDict>().Set("b",
                                                            at::ones({1}));
  EXPECT_EQ(Explain(m, tensor_differs),
            "which differs at \"model.b\": which differs at index [0] "
            "(1 of 1 elements differ): 1, expected 0");

  StateDict scalar_differs = expected;
  scalar_differs.Set("step", 4);
  EXPECT_EQ(Explain(m, scalar_differs),
            "which differs at \"step\": 4, expected 3");

  StateDict type_differs = expected;
  type_differs.FindMutable("lst")->get<List>()[0] = Value(1.0);
  EXPECT_EQ(Explain(m, type_differs),
            "which differs at \"lst.0\": a float 1, expected a int 1");

  StateDict keys_differ = expected;
  keys_differ.Erase("lst");
  EXPECT_EQ(Explain(m, keys_differ),
            "which differs at the top level: keys [\"model\", \"step\"], "
            "expected [\"model\", \"lst\", \"step\"]");
}

TEST(StateDictEqTest, ReportsShardedTensorDifferences) {
  StateDict expected{
      {"s", ShardedTensor{{4}, {Shard{at::ones({2}), {2}}}}}};
  Matcher<StateDict> m = StateDictEq(expected);
  EXPECT_EQ(Explain(m, StateDict{{"s", ShardedTensor{{4}, {Shard{at::ones({2}), {0}}}}}}),
            "which differs at \"s\": shard 0 at offsets [0], expected [2]");
  EXPECT_EQ(Explain(m, StateDict{{"s", ShardedTensor{{6}, {Shard{at::ones({2}), {2}}}}}}),
            "which differs at \"s\": global size [6], expected [4]");
  EXPECT_THAT(
      Explain(m, StateDict{{"s", ShardedTensor{{4}, {Shard{at::zeros({2}), {2}}}}}}),
      HasSubstr("shard 0 which differs at index [0]"));
}

TEST(MakeTestTensorTest, DeterministicDistinctAndSeedDependent) {
  for (at::ScalarType dtype :
       {at::kBool, at::kByte, at::kChar, at::kShort, at::kInt, at::kLong,
        at::kHalf, at::kBFloat16, at::kFloat, at::kDouble, at::kComplexFloat,
        at::kComplexDouble}) {
    SCOPED_TRACE(c10::toString(dtype));
    at::Tensor a = MakeTestTensor({4, 5}, dtype, 1);
    EXPECT_EQ(a.scalar_type(), dtype);
    EXPECT_EQ(a.sizes(), c10::IntArrayRef({4, 5}));
    EXPECT_TRUE(a.is_contiguous());
    EXPECT_THAT(a, TensorEq(MakeTestTensor({4, 5}, dtype, 1)));
    EXPECT_THAT(a, Not(TensorEq(MakeTestTensor({4, 5}, dtype, 2))));
    if (dtype != at::kBool) {
      at::Tensor flat = a.is_complex() ? at::view_as_real(a).select(-1, 0)
                                       : a.reshape({-1});
      EXPECT_EQ(std::get<0>(at::_unique(flat.to(at::kDouble))).numel(), 20);
    }
  }
  EXPECT_EQ(MakeTestTensor({}, at::kFloat, 0).dim(), 0);
  EXPECT_EQ(MakeTestTensor({0, 3}, at::kInt, 0).numel(), 0);
}

}  // namespace
}  // namespace dcp::test
