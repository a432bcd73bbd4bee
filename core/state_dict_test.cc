#include "core/state_dict.h"

#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "ATen/ATen.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dcp {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::string Print(const Value& value) {
  std::ostringstream os;
  os << value;
  return os.str();
}

TEST(StateDictTest, KeepsInsertionOrder) {
  StateDict d;
  d.Set("z", 1);
  d.Set("a", 2);
  d.Set("m", 3);
  EXPECT_THAT(d.Keys(), ElementsAre("z", "a", "m"));
  EXPECT_EQ(d.size(), 3u);
  EXPECT_FALSE(d.empty());
}

TEST(StateDictTest, SetReplacesInPlaceKeepingPosition) {
  StateDict d{{"a", 1}, {"b", 2}, {"c", 3}};
  d.Set("b", "two");
  EXPECT_THAT(d.Keys(), ElementsAre("a", "b", "c"));
  ASSERT_NE(d.Find("b"), nullptr);
  EXPECT_EQ(d.Find("b")->get<std::string>(), "two");
  EXPECT_EQ(d.size(), 3u);
}

TEST(StateDictTest, InitializerListWithDuplicateKeyKeepsFirstPositionLastValue) {
  StateDict d{{"a", 1}, {"b", 2}, {"a", 3}};
  EXPECT_THAT(d.Keys(), ElementsAre("a", "b"));
  EXPECT_EQ(d.Find("a")->get<int64_t>(), 3);
}

TEST(StateDictTest, FindContainsAndErase) {
  StateDict d{{"a", 1}, {"b", 2}, {"c", 3}};
  EXPECT_TRUE(d.Contains("b"));
  EXPECT_EQ(d.Find("nope"), nullptr);
  EXPECT_EQ(d.FindMutable("nope"), nullptr);
  *d.FindMutable("a") = Value(10);
  EXPECT_EQ(d.Find("a")->get<int64_t>(), 10);
  EXPECT_TRUE(d.Erase("b"));
  EXPECT_FALSE(d.Erase("b"));
  EXPECT_FALSE(d.Contains("b"));
  EXPECT_THAT(d.Keys(), ElementsAre("a", "c"));
  d.Set("b", 4);  // Re-inserted at the end.
  EXPECT_THAT(d.Keys(), ElementsAre("a", "c", "b"));
}

TEST(StateDictTest, EmptyDict) {
  StateDict d;
  EXPECT_TRUE(d.empty());
  EXPECT_EQ(d.size(), 0u);
  EXPECT_THAT(d.Keys(), IsEmpty());
  EXPECT_THAT(d.entries(), IsEmpty());
}

TEST(StateDictTest, CopySharesTensorHandlesButNotStructure) {
  at::Tensor t = at::zeros({2});
  StateDict a{{"t", t}, {"n", 1}};
  StateDict b = a;
  b.Set("n", 2);
  EXPECT_EQ(a.Find("n")->get<int64_t>(), 1);
  // Same tensor storage: writing through the copy is visible in the original.
  b.FindMutable("t")->get<at::Tensor>().fill_(5);
  EXPECT_EQ(t[0].item<float>(), 5.0f);
}

TEST(StateDictTest, MovedFromDictIsEmptyAndUsable) {
  StateDict a{{"x", 1}};
  StateDict b = std::move(a);
  EXPECT_THAT(b.Keys(), ElementsAre("x"));
  EXPECT_TRUE(a.empty());  // NOLINT: testing the moved-from state on purpose.
  a.Set("y", 2);
  EXPECT_THAT(a.Keys(), ElementsAre("y"));

  StateDict c{{"z", 3}};
  c = std::move(b);
  EXPECT_THAT(c.Keys(), ElementsAre("x"));
  EXPECT_TRUE(b.empty());  // NOLINT
  c = c;  // Self-assignment keeps contents.
  EXPECT_THAT(c.Keys(), ElementsAre("x"));
}

TEST(StateDictTest, MutableEntries) {
  StateDict d{{"a", 1}};
  d.mutable_entries().emplace_back("b", 2);
  EXPECT_THAT(d.Keys(), ElementsAre("a", "b"));
  EXPECT_EQ(d.Find("b")->get<int64_t>(), 2);
}

TEST(StateDictTest, EraseThenFindSeesShiftedEntries) {
  StateDict d{{"a", 1}, {"b", 2}, {"c", 3}, {"d", 4}};
  EXPECT_TRUE(d.Erase("b"));
  EXPECT_EQ(d.Find("b"), nullptr);
  EXPECT_EQ(d.Find("a")->get<int64_t>(), 1);
  EXPECT_EQ(d.Find("c")->get<int64_t>(), 3);
  EXPECT_EQ(d.Find("d")->get<int64_t>(), 4);
  EXPECT_TRUE(d.Erase("a"));
  EXPECT_TRUE(d.Erase("d"));
  EXPECT_THAT(d.Keys(), ElementsAre("c"));
  EXPECT_EQ(d.Find("c")->get<int64_t>(), 3);
  d.Set("c", 30);
  d.Set("e", 5);
  EXPECT_THAT(d.Keys(), ElementsAre("c", "e"));
  EXPECT_EQ(d.Find("c")->get<int64_t>(), 30);
  EXPECT_EQ(d.Find("e")->get<int64_t>(), 5);
}

TEST(StateDictTest, LookupsSeeKeysRenamedThroughMutableEntries) {
  StateDict d{{"a", 1}, {"b", 2}, {"c", 3}};
  d.mutable_entries()[1].first = "x";
  EXPECT_EQ(d.Find("b"), nullptr);
  EXPECT_FALSE(d.Contains("b"));
  ASSERT_NE(d.Find("x"), nullptr);
  EXPECT_EQ(d.Find("x")->get<int64_t>(), 2);
  EXPECT_EQ(d.Find("c")->get<int64_t>(), 3);
  // Set of the old name appends; of the new name replaces in place.
  d.Set("b", 20);
  d.Set("x", 200);
  EXPECT_THAT(d.Keys(), ElementsAre("a", "x", "c", "b"));
  EXPECT_EQ(d.Find("x")->get<int64_t>(), 200);
  EXPECT_EQ(d.Find("b")->get<int64_t>(), 20);
}

TEST(StateDictTest, LookupsSeeKeysSwappedThroughMutableEntries) {
  StateDict d{{"a", 1}, {"b", 2}};
  std::vector<StateDict::Entry>& entries = d.mutable_entries();
  std::swap(entries[0].first, entries[1].first);
  // Both keys still hit the index, at the wrong positions.
  EXPECT_EQ(d.Find("a")->get<int64_t>(), 2);
  EXPECT_EQ(d.Find("b")->get<int64_t>(), 1);
  EXPECT_THAT(d.Keys(), ElementsAre("b", "a"));
}

TEST(StateDictTest, LookupsSeeEntriesErasedThroughMutableEntries) {
  StateDict d{{"a", 1}, {"b", 2}, {"c", 3}, {"d", 4}};
  std::vector<StateDict::Entry>& entries = d.mutable_entries();
  entries.erase(entries.begin() + 1);
  EXPECT_EQ(d.Find("b"), nullptr);
  EXPECT_EQ(d.Find("c")->get<int64_t>(), 3);
  EXPECT_EQ(d.Find("d")->get<int64_t>(), 4);

  d.mutable_entries().pop_back();
  EXPECT_EQ(d.Find("d"), nullptr);
  EXPECT_FALSE(d.Erase("d"));
  EXPECT_TRUE(d.Erase("a"));
  EXPECT_THAT(d.Keys(), ElementsAre("c"));

  d.mutable_entries().clear();
  EXPECT_FALSE(d.Contains("c"));
  d.Set("c", 5);
  EXPECT_THAT(d.Keys(), ElementsAre("c"));
}

TEST(StateDictTest, LookupsSeeEntriesAppendedThroughMutableEntries) {
  StateDict d{{"a", 1}};
  ASSERT_NE(d.Find("a"), nullptr);  // The index is built and exact.
  d.mutable_entries().emplace_back("b", 2);
  d.mutable_entries().insert(d.mutable_entries().begin(), {"z", 0});
  EXPECT_EQ(d.Find("a")->get<int64_t>(), 1);
  EXPECT_EQ(d.Find("b")->get<int64_t>(), 2);
  EXPECT_EQ(d.Find("z")->get<int64_t>(), 0);
  d.Set("b", 3);
  EXPECT_THAT(d.Keys(), ElementsAre("z", "a", "b"));
  EXPECT_EQ(d.Find("b")->get<int64_t>(), 3);
  EXPECT_TRUE(d.Erase("z"));
  EXPECT_EQ(d.Find("a")->get<int64_t>(), 1);
  EXPECT_EQ(d.Find("b")->get<int64_t>(), 3);
}

TEST(StateDictTest, CopiesAndMovesKeepLookupsWorking) {
  StateDict a{{"a", 1}, {"b", 2}};
  a.mutable_entries()[0].first = "r";  // Copies of a stale index still work.
  StateDict copy = a;
  EXPECT_EQ(copy.Find("r")->get<int64_t>(), 1);
  EXPECT_EQ(copy.Find("a"), nullptr);
  copy.Set("c", 3);
  EXPECT_FALSE(a.Contains("c"));

  StateDict assigned{{"z", 9}};
  assigned = copy;
  EXPECT_EQ(assigned.Find("z"), nullptr);
  EXPECT_EQ(assigned.Find("c")->get<int64_t>(), 3);
  EXPECT_EQ(assigned.Find("b")->get<int64_t>(), 2);

  StateDict moved = std::move(copy);
  EXPECT_EQ(moved.Find("c")->get<int64_t>(), 3);
  EXPECT_FALSE(copy.Contains("c"));  // NOLINT: moved-from on purpose.
  copy.Set("c", 4);
  EXPECT_EQ(copy.Find("c")->get<int64_t>(), 4);

  StateDict move_assigned{{"c", 8}, {"y", 7}};
  move_assigned = std::move(moved);
  EXPECT_EQ(move_assigned.Find("y"), nullptr);
  EXPECT_EQ(move_assigned.Find("c")->get<int64_t>(), 3);
  EXPECT_THAT(move_assigned.Keys(), ElementsAre("r", "b", "c"));
  EXPECT_FALSE(moved.Contains("c"));  // NOLINT
}

TEST(StateDictTest, NestedDictsInValuesKeepLookupsWorking) {
  StateDict inner{{"w", 1}};
  StateDict outer{{"inner", inner}};
  Value copy = *outer.Find("inner");
  copy.get<StateDict>().Set("v", 2);
  EXPECT_EQ(copy.get<StateDict>().Find("w")->get<int64_t>(), 1);
  EXPECT_EQ(copy.get<StateDict>().Find("v")->get<int64_t>(), 2);
  EXPECT_FALSE(outer.Find("inner")->get<StateDict>().Contains("v"));
}

TEST(StateDictTest, HundredThousandKeysAreAllFound) {
  constexpr int kKeys = 100000;
  auto key = [](int i) {
    return absl::StrCat("layers.", i / 10, ".attention.w", i % 10, ".weight");
  };
  StateDict d;
  for (int i = 0; i < kKeys; ++i) d.Set(key(i), i);
  ASSERT_EQ(d.size(), static_cast<size_t>(kKeys));
  for (int i = 0; i < kKeys; ++i) {
    const Value* value = d.Find(key(i));
    ASSERT_NE(value, nullptr) << key(i);
    ASSERT_EQ(value->get<int64_t>(), i) << key(i);
  }
  EXPECT_FALSE(d.Contains("layers.10000.attention.w0.weight"));
  for (int i = 0; i < kKeys; ++i) {
    ASSERT_EQ(d.entries()[i].first, key(i));
  }
}

TEST(ValueTest, TypeNames) {
  EXPECT_EQ(Value().TypeName(), "None");
  EXPECT_EQ(Value(true).TypeName(), "bool");
  EXPECT_EQ(Value(3).TypeName(), "int");
  EXPECT_EQ(Value(int64_t{3}).TypeName(), "int");
  EXPECT_EQ(Value(0.5).TypeName(), "float");
  EXPECT_EQ(Value("s").TypeName(), "str");
  EXPECT_EQ(Value(Bytes{"b"}).TypeName(), "bytes");
  EXPECT_EQ(Value(at::ones({1})).TypeName(), "tensor");
  EXPECT_EQ(Value(ShardedTensor{}).TypeName(), "sharded tensor");
  EXPECT_EQ(Value(List{}).TypeName(), "list");
  EXPECT_EQ(Value(StateDict{}).TypeName(), "dict");
  EXPECT_EQ(Value(Tuple{}).TypeName(), "tuple");
}

TEST(ValueTest, IsTensorLike) {
  EXPECT_TRUE(Value(at::ones({1})).is_tensor_like());
  EXPECT_TRUE(Value(ShardedTensor{}).is_tensor_like());
  EXPECT_FALSE(Value(List{Value(at::ones({1}))}).is_tensor_like());
  EXPECT_FALSE(Value(1).is_tensor_like());
}

TEST(ValuesEqualTest, Scalars) {
  EXPECT_TRUE(ValuesEqual(Value(), Value(None{})));
  EXPECT_TRUE(ValuesEqual(Value(1), Value(int64_t{1})));
  EXPECT_FALSE(ValuesEqual(Value(1), Value(2)));
  EXPECT_FALSE(ValuesEqual(Value(1), Value(1.0)));  // int vs float
  EXPECT_FALSE(ValuesEqual(Value(true), Value(1)));
  EXPECT_TRUE(ValuesEqual(Value(0.25), Value(0.25)));
  const double nan = std::numeric_limits<double>::quiet_NaN();
  EXPECT_TRUE(ValuesEqual(Value(nan), Value(nan)));
  EXPECT_FALSE(ValuesEqual(Value(nan), Value(0.0)));
  EXPECT_TRUE(ValuesEqual(Value("x"), Value(std::string("x"))));
  EXPECT_FALSE(ValuesEqual(Value("x"), Value(Bytes{"x"})));  // str vs bytes
  EXPECT_TRUE(ValuesEqual(Value(Bytes{"x"}), Value(Bytes{"x"})));
  EXPECT_FALSE(ValuesEqual(Value(Bytes{"x"}), Value(Bytes{"y"})));
}

TEST(ValuesEqualTest, TensorsCompareDtypeShapeAndElements) {
  at::Tensor a = at::arange(6, at::kFloat).reshape({2, 3});
  EXPECT_TRUE(ValuesEqual(Value(a), Value(a.clone())));
  EXPECT_FALSE(ValuesEqual(Value(a), Value(a.to(at::kDouble))));
  EXPECT_FALSE(ValuesEqual(Value(a), Value(a.reshape({3, 2}))));
  at::Tensor b = a.clone();
  b[1][2] = 100;
  EXPECT_FALSE(ValuesEqual(Value(a), Value(b)));
  // Non-contiguous views compare by value.
  EXPECT_TRUE(ValuesEqual(Value(a.t()), Value(a.t().contiguous())));
  // Undefined tensors.
  EXPECT_TRUE(ValuesEqual(Value(at::Tensor()), Value(at::Tensor())));
  EXPECT_FALSE(ValuesEqual(Value(at::Tensor()), Value(a)));
  // Empty tensors of equal shape.
  EXPECT_TRUE(ValuesEqual(Value(at::zeros({0, 3})), Value(at::ones({0, 3}))));
  EXPECT_FALSE(ValuesEqual(Value(at::zeros({0, 3})), Value(at::zeros({0, 2}))));
  // 0-d.
  EXPECT_TRUE(ValuesEqual(Value(at::scalar_tensor(1.5)),
                          Value(at::scalar_tensor(1.5))));
  EXPECT_FALSE(ValuesEqual(Value(at::scalar_tensor(1.5)),
                           Value(at::scalar_tensor(2.5))));
}

TEST(ValuesEqualTest, TensorNaNsAreEqual) {
  for (at::ScalarType dtype :
       {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16}) {
    SCOPED_TRACE(c10::toString(dtype));
    at::Tensor a = at::ones({3}, dtype);
    a[1] = std::numeric_limits<float>::quiet_NaN();
    EXPECT_TRUE(ValuesEqual(Value(a), Value(a.clone())));
    at::Tensor b = a.clone();
    b[1] = 1;
    EXPECT_FALSE(ValuesEqual(Value(a), Value(b)));
    at::Tensor c = a.clone();
    c[0] = 2;
    EXPECT_FALSE(ValuesEqual(Value(a), Value(c)));
  }
}

TEST(ValuesEqualTest, EveryDtype) {
  for (at::ScalarType dtype :
       {at::kBool, at::kByte, at::kChar, at::kShort, at::kInt, at::kLong,
        at::kHalf, at::kBFloat16, at::kFloat, at::kDouble, at::kComplexFloat,
        at::kComplexDouble}) {
    SCOPED_TRACE(c10::toString(dtype));
    at::Tensor a = at::zeros({2, 2}, dtype);
    at::Tensor b = a.clone();
    EXPECT_TRUE(ValuesEqual(Value(a), Value(b)));
    b[1][1] = 1;
    EXPECT_FALSE(ValuesEqual(Value(a), Value(b)));
  }
}

TEST(ValuesEqualTest, ComplexComparesRealAndImaginaryParts) {
  at::Tensor a = at::view_as_complex(
      at::tensor({1.0, 2.0, std::nan(""), 3.0}, at::kDouble).reshape({2, 2}));
  EXPECT_TRUE(ValuesEqual(Value(a), Value(a.clone())));
  at::Tensor b = at::view_as_complex(
      at::tensor({1.0, 2.0, std::nan(""), 4.0}, at::kDouble).reshape({2, 2}));
  EXPECT_FALSE(ValuesEqual(Value(a), Value(b)));  // nan+3j vs nan+4j
  EXPECT_TRUE(ValuesEqual(Value(a.conj()), Value(a.conj().resolve_conj())));
  EXPECT_FALSE(ValuesEqual(Value(a.conj()), Value(a)));
}

TEST(ValuesEqualTest, ShardedTensors) {
  ShardedTensor a{{4, 2}, {Shard{at::ones({2, 2}), {0, 0}}}};
  ShardedTensor same{{4, 2}, {Shard{at::ones({2, 2}), {0, 0}}}};
  EXPECT_TRUE(ValuesEqual(Value(a), Value(same)));
  ShardedTensor other_offset{{4, 2}, {Shard{at::ones({2, 2}), {2, 0}}}};
  EXPECT_FALSE(ValuesEqual(Value(a), Value(other_offset)));
  ShardedTensor other_global{{6, 2}, {Shard{at::ones({2, 2}), {0, 0}}}};
  EXPECT_FALSE(ValuesEqual(Value(a), Value(other_global)));
  ShardedTensor other_data{{4, 2}, {Shard{at::zeros({2, 2}), {0, 0}}}};
  EXPECT_FALSE(ValuesEqual(Value(a), Value(other_data)));
  ShardedTensor no_shards{{4, 2}, {}};
  EXPECT_FALSE(ValuesEqual(Value(a), Value(no_shards)));
  EXPECT_FALSE(ValuesEqual(Value(a), Value(at::ones({2, 2}))));
}

TEST(StateDictsEqualTest, NestedContainersCompareOrderAndContents) {
  StateDict a{{"model", StateDict{{"w", at::ones({2})}}},
              {"lst", List{1, "x", List{at::zeros({1})}}}};
  StateDict b{{"model", StateDict{{"w", at::ones({2})}}},
              {"lst", List{1, "x", List{at::zeros({1})}}}};
  EXPECT_TRUE(StateDictsEqual(a, b));

  StateDict reordered{{"lst", List{1, "x", List{at::zeros({1})}}},
                      {"model", StateDict{{"w", at::ones({2})}}}};
  EXPECT_FALSE(StateDictsEqual(a, reordered));

  StateDict deep_change = b;
  deep_change.FindMutable("lst")->get<List>()[2].get<List>()[0] =
      Value(at::ones({1}));
  EXPECT_FALSE(StateDictsEqual(a, deep_change));

  StateDict extra = b;
  extra.Set("more", None{});
  EXPECT_FALSE(StateDictsEqual(a, extra));
  EXPECT_TRUE(StateDictsEqual(StateDict{}, StateDict{}));
  EXPECT_FALSE(ValuesEqual(Value(List{1, 2}), Value(List{1})));
}

TEST(ValuesEqualTest, TuplesAreNotLists) {
  EXPECT_TRUE(
      ValuesEqual(Value(Tuple{{0.9, 0.999}}), Value(Tuple{{0.9, 0.999}})));
  EXPECT_FALSE(
      ValuesEqual(Value(Tuple{{0.9, 0.999}}), Value(Tuple{{0.9, 0.99}})));
  EXPECT_FALSE(ValuesEqual(Value(Tuple{{0.9}}), Value(Tuple{{0.9, 0.999}})));
  // (1, 2) != [1, 2], as in Python.
  EXPECT_FALSE(ValuesEqual(Value(Tuple{{1, 2}}), Value(List{1, 2})));
  EXPECT_TRUE(ValuesEqual(Value(Tuple{}), Value(Tuple{})));
  EXPECT_TRUE(ValuesEqual(Value(Tuple{{"a", StateDict{{"k", 1}}}}),
                          Value(Tuple{{"a", StateDict{{"k", 1}}}})));
  EXPECT_FALSE(ValuesEqual(Value(Tuple{{"a", StateDict{{"k", 1}}}}),
                           Value(Tuple{{"a", StateDict{{"k", 2}}}})));
}

TEST(PrintTest, ShowsStructureShapesAndDtypesButNoData) {
  StateDict d{
      {"w", at::zeros({2, 3})},
      {"n", 3},
      {"f", 0.5},
      {"b", true},
      {"none", None{}},
      {"s", "a\"b"},
      {"raw", Bytes{"\x01"}},
      {"lst", List{1, 2}},
      {"tup", Tuple{{1, "x"}}},
      {"one", Tuple{{1}}},
      {"sub", StateDict{{"t", at::ones({4}, at::kBFloat16)}}},
      {"sh", ShardedTensor{{4, 3}, {Shard{at::zeros({2, 3}), {2, 0}}}}}};
  std::ostringstream os;
  os << d;
  EXPECT_EQ(
      os.str(),
      "{\"w\": tensor(float32[2, 3]), \"n\": 3, \"f\": 0.5, "
      "\"b\": True, \"none\": None, \"s\": \"a\\\"b\", "
      "\"raw\": b\"\\x01\", \"lst\": [1, 2], "
      "\"tup\": (1, \"x\"), \"one\": (1,), "
      "\"sub\": {\"t\": tensor(bfloat16[4])}, "
      "\"sh\": sharded(global [4, 3], shards [at [2, 0]: float32[2, 3]])}");
  EXPECT_EQ(Print(Value(at::Tensor())), "tensor(undefined)");
  EXPECT_THAT(Print(Value(at::scalar_tensor(1.0, at::kDouble))),
              HasSubstr("float64[]"));
}

TEST(ContainsTensorTest, FindsTensorsAtAnyDepthOfEveryContainer) {
  EXPECT_TRUE(ContainsTensor(Value(at::ones({1}))));
  EXPECT_TRUE(ContainsTensor(Value(ShardedTensor{{2}, {}})));
  EXPECT_TRUE(ContainsTensor(Value(List{Value(1), Value(at::ones({1}))})));
  EXPECT_TRUE(ContainsTensor(Value(Tuple{{Value("a"), Value(at::ones({1}))}})));
  EXPECT_TRUE(ContainsTensor(
      Value(StateDict{{"x", List{Value(Tuple{{Value(at::ones({1}))}})}}})));
  EXPECT_FALSE(ContainsTensor(Value(1)));
  EXPECT_FALSE(ContainsTensor(
      Value(StateDict{{"x", List{Value(Tuple{{Value("a"), Value(2.5)}})}}})));
}

}  // namespace
}  // namespace dcp
