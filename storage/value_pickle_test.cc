#include "storage/value_pickle.h"

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/state_dict.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/pickle.h"
#include "storage/torch_pickle.h"
#include "testing/status_matchers.h"
#include "testing/tensor_matchers.h"

namespace dcp {
namespace {

using ::dcp::test::IsOk;
using ::dcp::test::MakeTestTensor;
using ::dcp::test::StatusIs;
using ::dcp::test::TensorEq;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::SizeIs;
using torch_pickle_internal::FindDtype;
using torch_pickle_internal::ParseRebuildTensor;
using torch_pickle_internal::PickledTensor;
using torch_pickle_internal::WriteRebuildTensor;

constexpr absl::string_view kWhat = "test input";

// A test's tensor callbacks: each tensor written is kept in `tensors` and
// pickled as a rebuild call whose storage key is its index there; reading
// returns the kept tensor of that key. The paths each callback saw are
// recorded. (Const calls, since FunctionRef calls a const callable.)
struct TensorTable {
  mutable std::vector<at::Tensor> tensors;
  mutable std::vector<std::string> written_at;
  mutable std::vector<std::string> read_at;

  // The writer callback.
  absl::Status operator()(PickleWriter& w, const at::Tensor& tensor,
                          const std::string& path) const {
    return Write(w, tensor, path);
  }
  // The reader callback.
  absl::StatusOr<at::Tensor> operator()(const PickleValue& rebuild,
                                        const std::string& path) const {
    return Read(rebuild, path);
  }

  absl::Status Write(PickleWriter& w, const at::Tensor& tensor,
                     const std::string& path) const {
    written_at.push_back(path);
    const at::Tensor t = tensor.contiguous();
    const std::string key = absl::StrCat(tensors.size());
    tensors.push_back(t);
    WriteRebuildTensor(w, key, *FindDtype(t.scalar_type()), t.numel(), 0,
                       t.sizes(), t.strides());
    return absl::OkStatus();
  }

  absl::StatusOr<at::Tensor> Read(const PickleValue& rebuild,
                                  const std::string& path) const {
    read_at.push_back(path);
    absl::StatusOr<PickledTensor> parsed = ParseRebuildTensor(rebuild);
    if (!parsed.ok()) return parsed.status();
    size_t index = 0;
    if (!absl::SimpleAtoi(parsed->key, &index) || index >= tensors.size()) {
      return absl::NotFoundError(absl::StrCat("no tensor ", parsed->key));
    }
    return tensors[index];
  }
};

absl::StatusOr<PickleValue> Unpickle(absl::string_view pkl) {
  PickleReadOptions options;
  options.allow_global = [](absl::string_view, absl::string_view) {
    return true;
  };
  options.allow_persistent_ids = true;
  // What the conversion copies is bounded by its own budget, tested here.
  options.max_tree_size = std::numeric_limits<uint64_t>::max();
  return ReadPickle(pkl, options);
}

// Converts the pickle `pkl` with `table`'s reader and a budget of `limits`.
absl::StatusOr<Value> Convert(absl::string_view pkl, TensorTable& table,
                              const DecodeLimits& limits = {}) {
  absl::StatusOr<PickleValue> root = Unpickle(pkl);
  if (!root.ok()) return root.status();
  DecodeBudget budget(pkl.size(), limits, std::string(kWhat));
  return ValueFromPickle(*root, kWhat, "v", budget, table);
}

// Converts the pickle `w` built, with tensors refused.
absl::StatusOr<Value> ConvertWritten(PickleWriter& w) {
  absl::StatusOr<std::string> pkl = std::move(w).Finish();
  if (!pkl.ok()) return pkl.status();
  TensorTable none;
  return Convert(*pkl, none);
}

StateDict EveryKind() {
  StateDict inner{{"t", Value(MakeTestTensor({2, 3}, at::kFloat, 1))},
                  {"d", Value(-1.5)}};
  return StateDict{
      {"none", Value(None{})},
      {"true", Value(true)},
      {"false", Value(false)},
      {"small", Value(int64_t{7})},
      {"min", Value(std::numeric_limits<int64_t>::min())},
      {"max", Value(std::numeric_limits<int64_t>::max())},
      {"float", Value(0.1)},
      {"str", Value(std::string("h\xc3\xa9llo"))},
      {"", Value(std::string())},
      {"bytes", Value(Bytes{std::string("\0\xff\x80", 3)})},
      {"empty bytes", Value(Bytes{""})},
      {"list", Value(List{Value(int64_t{1}), Value(List{}),
                          Value(MakeTestTensor({4}, at::kLong, 2))})},
      {"tuple", Value(Tuple{{Value(0.9), Value(0.999), Value(Tuple{})}})},
      {"dict", Value(std::move(inner))},
      {"empty dict", Value(StateDict{})},
      {"bf16", Value(MakeTestTensor({3, 1}, at::kBFloat16, 3))},
  };
}

// ---- Round trips ------------------------------------------------------------

TEST(ValuePickleTest, EveryKindRoundTripsThroughTheTensorCallbacks) {
  const StateDict original = EveryKind();
  TensorTable table;
  PickleWriter w;
  DCP_ASSERT_OK(WriteStateDictPickle(w, original, "v", table));
  DCP_ASSERT_OK_AND_ASSIGN(std::string pkl, std::move(w).Finish());
  EXPECT_THAT(
      table.written_at,
      ElementsAre("v[\"list\"][2]", "v[\"dict\"][\"t\"]", "v[\"bf16\"]"));

  DCP_ASSERT_OK_AND_ASSIGN(Value back, Convert(pkl, table));
  EXPECT_TRUE(ValuesEqual(back, Value(original))) << back;
  EXPECT_EQ(table.read_at, table.written_at);
  // The tensors read are the ones the callback returned.
  EXPECT_THAT(back.get<StateDict>().Find("bf16")->get<at::Tensor>(),
              TensorEq(original.Find("bf16")->get<at::Tensor>()));
}

TEST(ValuePickleTest, ScalarsAndContainersRoundTripAtTheRoot) {
  for (const Value& value :
       {Value(None{}), Value(int64_t{-300}), Value(2.5), Value("x"),
        Value(Bytes{""}), Value(List{Value(true), Value(None{})}),
        Value(Tuple{{Value(int64_t{1})}})}) {
    SCOPED_TRACE(::testing::PrintToString(value));
    TensorTable table;
    PickleWriter w;
    DCP_ASSERT_OK(WriteValuePickle(w, value, "v", table));
    DCP_ASSERT_OK_AND_ASSIGN(std::string pkl, std::move(w).Finish());
    DCP_ASSERT_OK_AND_ASSIGN(Value back, Convert(pkl, table));
    EXPECT_TRUE(ValuesEqual(back, value)) << back;
    // Tuples stay tuples, lists lists.
    EXPECT_EQ(back.TypeName(), value.TypeName());
  }
}

TEST(ValuePickleTest, EmptyBytesAreWrittenAsTorchLoadAcceptsThem) {
  TensorTable table;
  PickleWriter w;
  DCP_ASSERT_OK(WriteValuePickle(w, Value(Bytes{""}), "v", table));
  DCP_ASSERT_OK_AND_ASSIGN(std::string pkl, std::move(w).Finish());
  // `_codecs.encode("", "latin1")`, not `__builtin__.bytes()`.
  EXPECT_THAT(pkl, HasSubstr("c_codecs\nencode\n"));
  EXPECT_THAT(pkl, ::testing::Not(HasSubstr("bytes")));
}

TEST(ValuePickleTest, IntKeysReadAsTheirDecimalStrings) {
  PickleWriter w;
  w.WriteDict(2, [&](size_t i) {
    w.WriteInt(i == 0 ? 3 : -1);
    w.WriteString(i == 0 ? "three" : "minus one");
  });
  DCP_ASSERT_OK_AND_ASSIGN(Value v, ConvertWritten(w));
  EXPECT_TRUE(ValuesEqual(
      v, Value(StateDict{{"3", Value("three")}, {"-1", Value("minus one")}})))
      << v;
}

TEST(ValuePickleTest, OrderedDictAttributesAreDropped) {
  // OrderedDict([("a", 1)]) with `_metadata` set, as a module's
  // state_dict() pickles.
  auto ordered_dict = [](PickleWriter& w, bool dict_state) {
    w.WriteGlobal("collections", "OrderedDict");
    w.EmitEmptyTuple();
    w.EmitReduce();
    w.EmitMark();
    w.WriteString("a");
    w.WriteInt(1);
    w.EmitSetItems();
    if (dict_state) {
      w.WriteDict(1, [&](size_t) {
        w.WriteString("_metadata");
        w.WriteDict(0, [](size_t) {});
      });
    } else {
      w.WriteInt(5);
    }
    w.EmitBuild();
  };
  {
    PickleWriter w;
    ordered_dict(w, true);
    DCP_ASSERT_OK_AND_ASSIGN(Value v, ConvertWritten(w));
    EXPECT_TRUE(ValuesEqual(v, Value(StateDict{{"a", Value(int64_t{1})}})))
        << v;
  }
  {
    PickleWriter w;
    ordered_dict(w, false);
    EXPECT_THAT(ConvertWritten(w),
                StatusIs(absl::StatusCode::kUnimplemented,
                         HasSubstr("unsupported pickled type "
                                   "collections.OrderedDict with state 5 at "
                                   "v")));
  }
}

TEST(ValuePickleTest, ParametersReadAsTheirTensors) {
  TensorTable table;
  const at::Tensor t = MakeTestTensor({2, 2}, at::kDouble, 4);
  auto parameter = [&](PickleWriter& w, bool tensor_data) {
    w.WriteGlobal("torch._utils", "_rebuild_parameter");
    w.WriteTuple(3, [&](size_t i) {
      if (i == 0 && tensor_data) {
        DCP_ASSERT_OK(table.Write(w, t, "unused"));
      } else if (i == 0) {
        w.WriteString("not a tensor");
      } else if (i == 1) {
        w.WriteBool(true);
      } else {
        w.WriteGlobal("collections", "OrderedDict");
        w.EmitEmptyTuple();
        w.EmitReduce();
      }
    });
    w.EmitReduce();
  };
  {
    PickleWriter w;
    w.WriteList(1, [&](size_t) { parameter(w, true); });
    DCP_ASSERT_OK_AND_ASSIGN(std::string pkl, std::move(w).Finish());
    DCP_ASSERT_OK_AND_ASSIGN(Value v, Convert(pkl, table));
    ASSERT_TRUE(v.is<List>());
    ASSERT_THAT(v.get<List>(), SizeIs(1));
    EXPECT_THAT(v.get<List>()[0].get<at::Tensor>(), TensorEq(t));
    EXPECT_THAT(table.read_at, ElementsAre("v[0]"));
  }
  {
    PickleWriter w;
    parameter(w, false);
    EXPECT_THAT(ConvertWritten(w),
                StatusIs(absl::StatusCode::kDataLoss,
                         HasSubstr("test input at v: nn.Parameter whose data "
                                   "is a str, not a tensor")));
  }
}

// ---- Writing errors ---------------------------------------------------------

TEST(ValuePickleTest, ShardedTensorsAreRefusedNamingThePath) {
  StateDict sd{{"a", Value(List{Value(ShardedTensor{{4}, {}})})},
               {"b", Value(MakeTestTensor({1}, at::kFloat, 5))}};
  TensorTable table;
  PickleWriter w;
  EXPECT_THAT(WriteStateDictPickle(w, sd, "obj", table),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("cannot pickle obj[\"a\"][0]: it is a "
                                 "sharded tensor")));
  // Nothing is written after the first error, and the writer stays
  // consistent (one value, no open MARK).
  EXPECT_THAT(table.written_at, SizeIs(0));
  EXPECT_THAT(std::move(w).Finish(), IsOk());
}

TEST(ValuePickleTest, TensorWriterErrorsKeepTheirCodeAndNameThePath) {
  int calls = 0;
  auto refuse = [&](PickleWriter&, const at::Tensor&, const std::string&) {
    ++calls;
    return absl::UnavailableError("no tensors today");
  };
  const at::Tensor t = MakeTestTensor({2}, at::kFloat, 6);
  const Value value(StateDict{
      {"x", Value(Tuple{{Value(int64_t{1}), Value(t)}})}, {"y", Value(t)}});
  PickleWriter w;
  EXPECT_THAT(WriteValuePickle(w, value, "value", refuse),
              StatusIs(absl::StatusCode::kUnavailable,
                       "cannot pickle value[\"x\"][1]: no tensors today"));
  EXPECT_EQ(calls, 1);
  EXPECT_THAT(std::move(w).Finish(), IsOk());
}

TEST(ValuePickleTest, WriterPathsStayShort) {
  Value value(List{Value(ShardedTensor{})});
  const std::string key(4096, 'k');
  for (int i = 0; i < 100; ++i) value = Value(StateDict{{key, value}});
  PickleWriter w;
  TensorTable table;
  const absl::Status status = WriteValuePickle(w, value, "v", table);
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument,
                               HasSubstr("cannot pickle v[\"kkkk")));
  EXPECT_LT(status.message().size(), 1200u);
}

// ---- Reading errors ---------------------------------------------------------

TEST(ValuePickleTest, UnsupportedPickledTypesNameTheTypeAndThePath) {
  struct Case {
    std::string name;
    std::function<void(PickleWriter&)> write;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"big int",
       [](PickleWriter& w) {
         w.WriteBigInt(std::string("\0\0\0\0\0\0\0\0\1", 9));
       },
       "unsupported pickled type int (outside the int64 range) at v[0]"},
      {"global", [](PickleWriter& w) { w.WriteGlobal("os", "system"); },
       "unsupported pickled type (a reference to os.system) at v[0]"},
      {"object",
       [](PickleWriter& w) {
         w.WriteGlobal("builtins", "set");
         w.EmitEmptyTuple();
         w.EmitReduce();
       },
       "unsupported pickled type builtins.set at v[0]"},
      {"quantized tensor",
       [](PickleWriter& w) {
         w.WriteGlobal("torch._utils", "_rebuild_qtensor");
         w.EmitEmptyTuple();
         w.EmitReduce();
       },
       "unsupported pickled type torch.Tensor "
       "(torch._utils._rebuild_qtensor: a quantized tensor) at v[0]"},
      {"bare persistent id",
       [](PickleWriter& w) {
         w.WriteString("0");
         w.EmitBinPersId();
       },
       "unsupported pickled type torch storage (a bare persistent id) at "
       "v[0]"},
      {"float key",
       [](PickleWriter& w) {
         w.WriteDict(1, [&](size_t) {
           w.WriteFloat(1.5);
           w.WriteNone();
         });
       },
       "unsupported pickled type dict key 1.5 at v[0]"},
      {"int and str key",
       [](PickleWriter& w) {
         w.WriteDict(2, [&](size_t i) {
           if (i == 0) {
             w.WriteInt(1);
           } else {
             w.WriteString("1");
           }
           w.WriteNone();
         });
       },
       "dict at v[0] has both the int key 1 and the str key \"1\""},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    PickleWriter w;
    w.WriteList(1, [&](size_t) { c.write(w); });
    EXPECT_THAT(ConvertWritten(w),
                StatusIs(absl::StatusCode::kUnimplemented,
                         HasSubstr(absl::StrCat("test input: ", c.expected))));
  }
}

TEST(ValuePickleTest, SetsFromPythonAreUnsupported) {
  TensorTable table;
  // Protocol 4: [set()] and [frozenset()], as Python pickles them.
  EXPECT_THAT(Convert(absl::string_view("\x80\x04]\x8f"
                                        "a.",
                                        6),
                      table),
              StatusIs(absl::StatusCode::kUnimplemented,
                       HasSubstr("unsupported pickled type set at v[0]")));
  EXPECT_THAT(
      Convert(absl::string_view("\x80\x04](\x91"
                                "a.",
                                7),
              table),
      StatusIs(absl::StatusCode::kUnimplemented,
               HasSubstr("unsupported pickled type frozenset at v[0]")));
}

TEST(ValuePickleTest, TensorReaderErrorsKeepTheirCodeAndNameThePath) {
  const StateDict sd{
      {"w", Value(List{Value(MakeTestTensor({3}, at::kFloat, 7))})}};
  TensorTable table;
  PickleWriter w;
  DCP_ASSERT_OK(WriteStateDictPickle(w, sd, "v", table));
  DCP_ASSERT_OK_AND_ASSIGN(std::string pkl, std::move(w).Finish());
  table.tensors.clear();  // The reader now finds no tensor 0.
  EXPECT_THAT(Convert(pkl, table),
              StatusIs(absl::StatusCode::kNotFound,
                       "test input at v[\"w\"][0]: no tensor 0"));
}

TEST(ValuePickleTest, BudgetErrorsNameThePath) {
  // One memoized 64 KiB string referenced 100 times: 6.4 MB of copies
  // from a pickle of 64 KiB.
  PickleWriterOptions memoize;
  memoize.memoize = true;
  PickleWriter w(memoize);
  const std::string big(64 << 10, 's');
  w.WriteList(100, [&](size_t) { w.WriteString(big); });
  DCP_ASSERT_OK_AND_ASSIGN(std::string pkl, std::move(w).Finish());
  DecodeLimits limits;
  limits.budget_per_input_byte = 8;
  TensorTable table;
  EXPECT_THAT(
      Convert(pkl, table, limits),
      StatusIs(absl::StatusCode::kResourceExhausted,
               AllOf(HasSubstr("test input at v["),
                     HasSubstr("test input decodes to more than its budget"))));
  DecodeLimits generous;
  generous.budget_per_input_byte = 200;
  DCP_ASSERT_OK_AND_ASSIGN(Value v, Convert(pkl, table, generous));
  EXPECT_THAT(v.get<List>(), SizeIs(100));
}

TEST(ValuePickleTest, ReaderPathsStayShort) {
  // 50 nested dicts under 4 KiB keys, a set at the bottom.
  PickleWriter w;
  std::function<void(int)> nest = [&](int depth) {
    if (depth == 0) {
      w.WriteGlobal("builtins", "set");
      w.EmitEmptyTuple();
      w.EmitReduce();
      return;
    }
    w.WriteDict(1, [&](size_t) {
      w.WriteString(std::string(4096, 'a' + depth % 26));
      nest(depth - 1);
    });
  };
  nest(50);
  absl::Status status = ConvertWritten(w).status();
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kUnimplemented,
                               HasSubstr("builtins.set at v[\"yyyy")));
  EXPECT_THAT(std::string(status.message()), HasSubstr("...\"][\"xxxx"));
  EXPECT_LT(status.message().size(), 1200u);
}

}  // namespace
}  // namespace dcp
