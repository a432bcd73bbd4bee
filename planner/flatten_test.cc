#include "planner/flatten.h"

#include <cstdint>
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

using ::dcp::test::IsOk;
using ::dcp::test::StateDictEq;
using ::dcp::test::StatusIs;
using ::dcp::test::TensorEq;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;

std::vector<std::string> Fqns(const FlatStateDict& flat) {
  std::vector<std::string> fqns;
  for (const auto& item : flat.items) fqns.push_back(item.first);
  return fqns;
}

const Value& Item(const FlatStateDict& flat, absl::string_view fqn) {
  for (const auto& item : flat.items) {
    if (item.first == fqn) return item.second;
  }
  ADD_FAILURE() << "no item " << fqn;
  static const Value* none = new Value();
  return *none;
}

ObjectPath P(std::vector<PathElement> elements) { return elements; }

// The worked example of PyTorch's `flatten_state_dict` on a model plus an
// optimizer state dict (checked against PyTorch 2.6's behaviour).
StateDict ModelAndOptim(const at::Tensor& weight, const at::Tensor& exp_avg) {
  return StateDict{
      {"model", StateDict{{"layer1", StateDict{{"weight", weight}}}}},
      {"optim",
       StateDict{
           {"state",
            StateDict{{"0", StateDict{{"exp_avg", exp_avg}, {"step", 3}}}}},
           {"param_groups", List{StateDict{{"lr", 0.1}, {"params", List{0, 1}}}}},
       }},
  };
}

TEST(FlattenStateDictTest, ModelAndOptimizerMatchesPyTorch) {
  at::Tensor weight = at::ones({2, 2});
  at::Tensor exp_avg = at::zeros({2, 2});
  DCP_ASSERT_OK_AND_ASSIGN(FlatStateDict flat,
                           FlattenStateDict(ModelAndOptim(weight, exp_avg)));
  EXPECT_THAT(Fqns(flat),
              ElementsAre("model.layer1.weight", "optim.state.0.exp_avg",
                          "optim.state.0.step", "optim.param_groups.0.lr",
                          "optim.param_groups.0.params"));
  EXPECT_THAT(
      flat.mappings,
      ElementsAre(
          Pair("model.layer1.weight", P({"model", "layer1", "weight"})),
          Pair("optim.param_groups.0.lr",
               P({"optim", "param_groups", int64_t{0}, "lr"})),
          Pair("optim.param_groups.0.params",
               P({"optim", "param_groups", int64_t{0}, "params"})),
          Pair("optim.state.0.exp_avg", P({"optim", "state", "0", "exp_avg"})),
          Pair("optim.state.0.step", P({"optim", "state", "0", "step"}))));
  EXPECT_THAT(Item(flat, "model.layer1.weight").get<at::Tensor>(),
              TensorEq(weight));
  EXPECT_EQ(Item(flat, "optim.state.0.step").get<int64_t>(), 3);
  EXPECT_EQ(Item(flat, "optim.param_groups.0.lr").get<double>(), 0.1);
  // [0, 1] holds no tensor and no dict: one leaf.
  EXPECT_TRUE(ValuesEqual(Item(flat, "optim.param_groups.0.params"),
                          Value(List{0, 1})));
}

TEST(FlattenStateDictTest, FlattenedTensorsShareStorageWithTheUsersTensors) {
  at::Tensor weight = at::zeros({3});
  StateDict sd{{"w", weight}, {"lst", List{weight}}};
  DCP_ASSERT_OK_AND_ASSIGN(FlatStateDict flat, FlattenStateDict(sd));
  flat.items[0].second.get<at::Tensor>().fill_(7);
  EXPECT_THAT(weight, TensorEq(at::full({3}, 7.0f)));
  EXPECT_TRUE(flat.items[1].second.get<at::Tensor>().is_same(weight));
}

TEST(FlattenStateDictTest, ListWithTensorIsDescended) {
  at::Tensor t = at::ones({1});
  DCP_ASSERT_OK_AND_ASSIGN(FlatStateDict flat,
                           FlattenStateDict(StateDict{{"lst", List{t, 3}}}));
  EXPECT_THAT(Fqns(flat), ElementsAre("lst.0", "lst.1"));
  EXPECT_THAT(flat.mappings,
              ElementsAre(Pair("lst.0", P({"lst", int64_t{0}})),
                          Pair("lst.1", P({"lst", int64_t{1}}))));
  EXPECT_EQ(Item(flat, "lst.1").get<int64_t>(), 3);
}

TEST(FlattenStateDictTest, ListWithShardedTensorIsDescended) {
  ShardedTensor st{{4}, {Shard{at::ones({2}), {0}}}};
  DCP_ASSERT_OK_AND_ASSIGN(FlatStateDict flat,
                           FlattenStateDict(StateDict{{"lst", List{"a", st}}}));
  EXPECT_THAT(Fqns(flat), ElementsAre("lst.0", "lst.1"));
  EXPECT_TRUE(Item(flat, "lst.1").is<ShardedTensor>());
}

TEST(FlattenStateDictTest, ListOfPlainValuesIsOneLeaf) {
  DCP_ASSERT_OK_AND_ASSIGN(FlatStateDict flat,
                           FlattenStateDict(StateDict{{"lst", List{1, 2}}}));
  EXPECT_THAT(Fqns(flat), ElementsAre("lst"));
  EXPECT_THAT(flat.mappings, ElementsAre(Pair("lst", P({"lst"}))));
  EXPECT_TRUE(ValuesEqual(Item(flat, "lst"), Value(List{1, 2})));
}

TEST(FlattenStateDictTest, TuplesAreAlwaysLeaves) {
  // PyTorch's _is_terminal never descends into a tuple, even one holding a
  // dict or a tensor; a list holding a tuple is a leaf too.
  at::Tensor t = at::ones({1});
  StateDict sd{{"betas", Tuple{{0.9, 0.999}}},
               {"pair", Tuple{{"warmup", StateDict{{"steps", 10}}}}},
               {"with_tensor", Tuple{{t}}},
               {"lst", List{Tuple{{1, 2}}}}};
  DCP_ASSERT_OK_AND_ASSIGN(FlatStateDict flat, FlattenStateDict(sd));
  EXPECT_THAT(Fqns(flat), ElementsAre("betas", "pair", "with_tensor", "lst"));
  EXPECT_TRUE(Item(flat, "pair").is<Tuple>());
  EXPECT_TRUE(ValuesEqual(Item(flat, "lst"), Value(List{Tuple{{1, 2}}})));
}

TEST(FlattenStateDictTest, EmptyListAndListOfTerminalListsAreLeaves) {
  DCP_ASSERT_OK_AND_ASSIGN(
      FlatStateDict flat,
      FlattenStateDict(StateDict{{"empty", List{}},
                                 {"nested", List{List{1}, List{}, "s"}}}));
  EXPECT_THAT(Fqns(flat), ElementsAre("empty", "nested"));
}

TEST(FlattenStateDictTest, NestedNonTerminalListsAreDescended) {
  at::Tensor t = at::ones({1});
  DCP_ASSERT_OK_AND_ASSIGN(
      FlatStateDict flat,
      FlattenStateDict(StateDict{{"l", List{List{t, 5}, List{1, 2}, 9}}}));
  EXPECT_THAT(Fqns(flat), ElementsAre("l.0.0", "l.0.1", "l.1", "l.2"));
  EXPECT_THAT(flat.mappings.at("l.0.1"),
              ElementsAre(PathElement("l"), PathElement(int64_t{0}),
                          PathElement(int64_t{1})));
}

TEST(FlattenStateDictTest, ListHoldingAnEmptyDictIsDescendedAndVanishes) {
  // Python: `_is_terminal` is False for any Mapping, even an empty one.
  DCP_ASSERT_OK_AND_ASSIGN(
      FlatStateDict flat,
      FlattenStateDict(StateDict{{"l", List{StateDict{}, 4}}}));
  EXPECT_THAT(Fqns(flat), ElementsAre("l.1"));
}

TEST(FlattenStateDictTest, EmptyDictVanishes) {
  DCP_ASSERT_OK_AND_ASSIGN(
      FlatStateDict flat,
      FlattenStateDict(StateDict{
          {"a", StateDict{}}, {"b", StateDict{{"c", StateDict{}}}}, {"d", 1}}));
  EXPECT_THAT(Fqns(flat), ElementsAre("d"));
  DCP_ASSERT_OK_AND_ASSIGN(FlatStateDict empty, FlattenStateDict(StateDict{}));
  EXPECT_THAT(empty.items, IsEmpty());
  EXPECT_THAT(empty.mappings, IsEmpty());
}

TEST(FlattenStateDictTest, AllLeafKindsAreLeaves) {
  DCP_ASSERT_OK_AND_ASSIGN(FlatStateDict flat,
                           FlattenStateDict(StateDict{{"n", None{}},
                                                      {"b", false},
                                                      {"i", 1},
                                                      {"f", 2.5},
                                                      {"s", "str"},
                                                      {"y", Bytes{"raw"}},
                                                      {"t", at::ones({})}}));
  EXPECT_THAT(Fqns(flat), ElementsAre("n", "b", "i", "f", "s", "y", "t"));
}

TEST(FlattenStateDictTest, DuplicateKeyIsAnError) {
  StateDict sd{{"a.b", 1}, {"a", StateDict{{"b", 2}}}};
  EXPECT_THAT(FlattenStateDict(sd),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("duplicated flatten key \"a.b\"")));
  // Through a list index too: "l.0" vs {"l": [t]}.
  StateDict via_list{{"l.0", 1}, {"l", List{at::ones({1})}}};
  EXPECT_THAT(FlattenStateDict(via_list),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("duplicated flatten key \"l.0\"")));
}

TEST(FqnOfTest, JoinsWithDots) {
  EXPECT_EQ(FqnOf(P({"optim", "state", int64_t{0}, "exp_avg"})),
            "optim.state.0.exp_avg");
  EXPECT_EQ(FqnOf(P({"a"})), "a");
  EXPECT_EQ(FqnOf(ObjectPath{}), "");
}

TEST(SetElementTest, RoundTripRebuildsDictAndListStructure) {
  at::Tensor weight = at::ones({2, 2});
  at::Tensor exp_avg = at::zeros({2, 2});
  StateDict original = ModelAndOptim(weight, exp_avg);
  original.Set("lst", List{at::ones({1}), 3, List{at::zeros({2}), "x"}});
  DCP_ASSERT_OK_AND_ASSIGN(FlatStateDict flat, FlattenStateDict(original));

  StateDict rebuilt;
  for (const auto& [fqn, value] : flat.items) {
    DCP_ASSERT_OK(SetElement(rebuilt, flat.mappings.at(fqn), value));
  }
  EXPECT_THAT(rebuilt, StateDictEq(original));
  DCP_ASSERT_OK_AND_ASSIGN(StateDict unflattened, UnflattenStateDict(flat));
  EXPECT_THAT(unflattened, StateDictEq(original));
}

TEST(SetElementTest, PadsListsWithNone) {
  StateDict root;
  DCP_ASSERT_OK(SetElement(root, P({"l", int64_t{2}}), 5));
  EXPECT_THAT(root, StateDictEq(StateDict{{"l", List{None{}, None{}, 5}}}));
  // A None element on the way is replaced by the container the path needs.
  DCP_ASSERT_OK(SetElement(root, P({"l", int64_t{0}, "k"}), "v"));
  DCP_ASSERT_OK(SetElement(root, P({"l", int64_t{4}, int64_t{1}}), 7));
  EXPECT_THAT(root, StateDictEq(StateDict{
                        {"l", List{StateDict{{"k", "v"}}, None{}, 5, None{},
                                   List{None{}, 7}}}}));
}

TEST(SetElementTest, CreatesDictsAndListsFromTheNextElementKind) {
  StateDict root;
  DCP_ASSERT_OK(SetElement(root, P({"a", "b", int64_t{0}, "c"}), 1));
  EXPECT_THAT(root, StateDictEq(StateDict{
                        {"a", StateDict{{"b", List{StateDict{{"c", 1}}}}}}}));
}

TEST(SetElementTest, ReplacesExistingValuesKeepingPosition) {
  StateDict root{{"x", 1}, {"d", StateDict{{"p", 1}, {"q", 2}}}, {"y", 3}};
  DCP_ASSERT_OK(SetElement(root, P({"d", "p"}), "new"));
  DCP_ASSERT_OK(SetElement(root, P({"x"}), 10));
  EXPECT_THAT(root, StateDictEq(StateDict{
                        {"x", 10},
                        {"d", StateDict{{"p", "new"}, {"q", 2}}},
                        {"y", 3}}));
}

TEST(SetElementTest, WrongContainerKindIsAnError) {
  StateDict root{{"d", StateDict{}}, {"l", List{1}}, {"leaf", 5}};
  EXPECT_THAT(SetElement(root, P({"d", int64_t{0}}), 1),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("('d', 0)"), HasSubstr("has type 'dict'"))));
  EXPECT_THAT(SetElement(root, P({"l", "k"}), 1),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("('l', 'k')"), HasSubstr("has type 'list'"))));
  EXPECT_THAT(SetElement(root, P({"leaf", "k", "j"}), 1),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("value at ('leaf',) has type 'int'")));
  // A non-None list element is not replaced by a container.
  EXPECT_THAT(SetElement(root, P({"l", int64_t{0}, "k"}), 1),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("('l', 0) has type 'int'")));
  EXPECT_THAT(SetElement(root, ObjectPath{}, 1),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(SetElement(root, P({int64_t{0}}), 1),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("first element")));
  EXPECT_THAT(SetElement(root, P({"l", int64_t{-1}}), 1),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("list index -1 is outside")));
  EXPECT_THAT(
      SetElement(root, P({"big", int64_t{kMaxSetElementIndex + 1}}), 1),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("is outside")));
  // Nothing was changed by the failed calls.
  EXPECT_THAT(root, StateDictEq(StateDict{
                        {"d", StateDict{}}, {"l", List{1}}, {"leaf", 5}}));
}

TEST(GetElementTest, FindsValuesAndReportsMissingOnes) {
  at::Tensor t = at::ones({2});
  StateDict root{{"a", StateDict{{"l", List{1, t}}}}};
  DCP_ASSERT_OK_AND_ASSIGN(const Value* v,
                           GetElement(root, P({"a", "l", int64_t{1}})));
  EXPECT_TRUE(v->get<at::Tensor>().is_same(t));
  DCP_ASSERT_OK_AND_ASSIGN(Value * m,
                           GetMutableElement(root, P({"a", "l", int64_t{0}})));
  *m = Value(42);
  EXPECT_THAT(root, StateDictEq(StateDict{{"a", StateDict{{"l", List{42, t}}}}}));

  EXPECT_THAT(GetElement(root, P({"b"})),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("('b',)")));
  EXPECT_THAT(GetElement(root, P({"a", "l", int64_t{2}})),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("out of range")));
  EXPECT_THAT(GetElement(root, P({"a", int64_t{0}})),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("not a list")));
  EXPECT_THAT(GetElement(root, P({"a", "l", "x"})),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("not a dict")));
  EXPECT_THAT(GetElement(root, ObjectPath{}),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(UnflattenStateDictTest, MissingMappingIsAnError) {
  FlatStateDict flat;
  flat.items.emplace_back("a", Value(1));
  EXPECT_THAT(UnflattenStateDict(flat),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"a\"")));
}

}  // namespace
}  // namespace dcp
