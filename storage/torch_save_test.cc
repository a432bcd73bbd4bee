#include "storage/torch_save.h"

#include <ATen/ATen.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "core/state_dict.h"
#include "glog/logging.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/file_system.h"
#include "storage/pickle.h"
#include "storage/posix_file_system.h"
#include "storage/torch_pickle.h"
#include "storage/zip.h"
#include "testing/runfiles.h"
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

// The bytes of a string literal that may hold NULs.
template <size_t N>
std::string Raw(const char (&s)[N]) {
  return std::string(s, N - 1);
}

at::Tensor Base15() { return at::arange(15, at::kFloat).reshape({3, 5}); }

// Every kind of value and tensor layout the writer handles.
StateDict RichStateDict() {
  at::Tensor base = Base15();
  StateDict optim_state{
      {"0", StateDict{{"step", at::scalar_tensor(3.0, at::kFloat)},
                      {"exp_avg", at::full({2}, 0.5, at::kFloat)}}}};
  StateDict group{{"lr", 0.01},
                  {"betas", List{0.9, 0.999}},
                  {"params", List{int64_t{0}}},
                  {"name", "\xce\xb1\xce\xb2"}};
  return StateDict{
      {"weight", at::arange(6, at::kFloat).reshape({2, 3})},
      {"transposed", base.t()},
      {"row_view", base.narrow(0, 1, 2)},  // View into a larger storage.
      {"expanded", at::arange(3, at::kInt).expand({2, 3})},
      {"scalar", at::scalar_tensor(2.5, at::kDouble)},
      {"empty", at::zeros({0, 4})},
      {"bf16", at::tensor({1.5, -2.0}).to(at::kBFloat16)},
      {"half", at::tensor({0.25, 8.0}).to(at::kHalf)},
      {"mask", at::tensor({1, 0, 1}).to(at::kBool)},
      {"bytes", at::tensor({0, 255, 7}).to(at::kByte)},
      {"i8", at::tensor({-128, 127}).to(at::kChar)},
      {"i16", at::tensor({-300, 300}).to(at::kShort)},
      {"i64", at::tensor({int64_t{1} << 40, int64_t{-7}})},
      {"c64", at::complex(at::tensor({1.0f, 2.0f}), at::tensor({-1.0f, 0.5f}))},
      {"optim",
       StateDict{{"state", optim_state}, {"param_groups", List{Value(group)}}}},
      {"mixed", List{at::ones({2}), int64_t{5}, "x", List{}}},
      {"values",
       List{int64_t{1}, int64_t{-(int64_t{1} << 40)}, 1.25, None{}, true,
            "text", Bytes{std::string("\0\xff", 2)}, Bytes{""}}},
      {"nested_empty", StateDict{}},
      {"tuple", Tuple{{at::ones({2}), int64_t{3}, Tuple{{0.9, 0.999}}}}},
  };
}

TEST(TorchSaveTest, RoundTripKeepsStructureValuesAndDtypes) {
  const StateDict original = RichStateDict();
  DCP_ASSERT_OK_AND_ASSIGN(std::string bytes, SerializeTorchSave(original));
  DCP_ASSERT_OK_AND_ASSIGN(StateDict back, ParseTorchSave(bytes));
  EXPECT_THAT(back, StateDictEq(original));
  EXPECT_EQ(back.Keys(), original.Keys());
  // Tensors come back contiguous.
  EXPECT_TRUE(back.Find("transposed")->get<at::Tensor>().is_contiguous());
}

TEST(TorchSaveTest, ArchiveHasTorchEntriesAndOneEntryPerStorage) {
  at::Tensor base = Base15();
  // `base` and its transpose share one storage that holds exactly their
  // elements: one entry. The narrow view is compacted into its own entry.
  StateDict sd{{"a", base}, {"b", base.t()}, {"c", base.narrow(0, 0, 1)}};
  DCP_ASSERT_OK_AND_ASSIGN(std::string bytes, SerializeTorchSave(sd));
  DCP_ASSERT_OK_AND_ASSIGN(ZipDirectory dir, ReadZipDirectory(bytes));
  std::vector<std::string> names;
  for (const ZipEntry& e : dir.entries) names.push_back(e.name);
  EXPECT_THAT(names, ElementsAre("archive/data.pkl", "archive/byteorder",
                                 "archive/data/0", "archive/data/1",
                                 "archive/version",
                                 "archive/.data/serialization_id"));
  for (const ZipEntry& e : dir.entries) {
    EXPECT_EQ(e.data_offset % kZipDataAlignment, 0u) << e.name;
  }
  EXPECT_EQ(dir.Find("data/0")->size, 15 * sizeof(float));
  EXPECT_EQ(dir.Find("data/1")->size, 5 * sizeof(float));
  DCP_ASSERT_OK_AND_ASSIGN(StateDict back, ParseTorchSave(bytes));
  EXPECT_THAT(back.Find("b")->get<at::Tensor>(), TensorEq(base.t()));
  EXPECT_THAT(back.Find("c")->get<at::Tensor>(),
              TensorEq(base.narrow(0, 0, 1)));
}

TEST(TorchSaveTest, DataPickleUsesOnlyWeightsOnlyGlobals) {
  DCP_ASSERT_OK_AND_ASSIGN(std::string bytes,
                           SerializeTorchSave(RichStateDict()));
  DCP_ASSERT_OK_AND_ASSIGN(ZipDirectory dir, ReadZipDirectory(bytes));
  const ZipEntry* pkl = dir.Find("data.pkl");
  ASSERT_NE(pkl, nullptr);
  std::vector<std::string> globals;
  PickleReadOptions options;
  options.allow_persistent_ids = true;
  options.allow_global = [&](absl::string_view module, absl::string_view name) {
    globals.push_back(absl::StrCat(module, ".", name));
    return true;
  };
  DCP_ASSERT_OK_AND_ASSIGN(absl::string_view pkl_bytes,
                           ZipEntryData(bytes, *pkl));
  ASSERT_THAT(ReadPickle(pkl_bytes, options).status(), IsOk());
  for (const std::string& g : globals) {
    const bool allowed =
        g == "torch._utils._rebuild_tensor_v2" ||
        g == "torch._utils._rebuild_tensor_v3" ||
        g == "collections.OrderedDict" || g == "_codecs.encode" ||
        g == "torch.storage.UntypedStorage" ||
        (absl::string_view(g).substr(0, 6) == "torch." &&
         absl::string_view(g).find("Storage") != absl::string_view::npos);
    EXPECT_TRUE(allowed) << g;
  }
}

TEST(TorchSaveTest, OutputIsDeterministic) {
  DCP_ASSERT_OK_AND_ASSIGN(std::string a, SerializeTorchSave(RichStateDict()));
  DCP_ASSERT_OK_AND_ASSIGN(std::string b, SerializeTorchSave(RichStateDict()));
  EXPECT_EQ(a, b);
}

TEST(TorchSaveTest, WritesAndReadsFilesWithoutLeavingTemporaries) {
  const std::string dir = ::testing::TempDir();
  const std::string path = JoinPath(dir, "round_trip.pt");
  const StateDict original = RichStateDict();
  ASSERT_THAT(WriteTorchSave(original, path), IsOk());
  DCP_ASSERT_OK_AND_ASSIGN(StateDict back, ReadTorchSave(path));
  EXPECT_THAT(back, StateDictEq(original));
  PosixFileSystem fs;
  EXPECT_THAT(fs.FileExists(path + ".tmp"),
              StatusIs(absl::StatusCode::kNotFound));
  DCP_ASSERT_OK_AND_ASSIGN(std::string bytes, ReadFileToString(fs, path));
  DCP_ASSERT_OK_AND_ASSIGN(std::string expected, SerializeTorchSave(original));
  EXPECT_EQ(bytes, expected);
}

TEST(TorchSaveTest, ReadingAMissingFileIsNotFound) {
  EXPECT_THAT(ReadTorchSave(JoinPath(::testing::TempDir(), "nope.pt")).status(),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST(TorchSaveTest, RejectsShardedTensorsNamingThePath) {
  ShardedTensor sharded;
  sharded.global_size = {4};
  sharded.local_shards.push_back({at::ones({2}), {0}});
  StateDict sd{{"model", StateDict{{"w", sharded}}}};
  EXPECT_THAT(SerializeTorchSave(sd).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("obj[\"model\"][\"w\"]: it is a sharded "
                                 "tensor")));
}

// ---- A file written by PyTorch 2.6 (storage/testdata/torch_save) ------------

std::string TestDataPath(absl::string_view name) {
  return test::RunfilePath(absl::StrCat("storage/testdata/torch_save/", name));
}

TEST(TorchSaveTest, ReadsAFileWrittenByPython) {
  DCP_ASSERT_OK_AND_ASSIGN(StateDict sd,
                           ReadTorchSave(TestDataPath("python_nested.pt")));
  EXPECT_THAT(sd.Keys(),
              ElementsAre("weight", "transposed", "row_slice", "col_slice",
                          "scalar", "ints", "bf16", "mask", "empty", "param",
                          "optim", "values", "module"));
  at::Tensor base = Base15();
  auto tensor = [&](absl::string_view key) {
    return sd.Find(key)->get<at::Tensor>();
  };
  EXPECT_THAT(tensor("weight"), TensorEq(at::arange(6, at::kFloat).reshape({2, 3})));
  EXPECT_THAT(tensor("transposed"), TensorEq(base.t()));
  EXPECT_THAT(tensor("row_slice"), TensorEq(base.narrow(0, 1, 2)));
  EXPECT_THAT(tensor("col_slice"), TensorEq(base.narrow(1, 1, 2)));
  EXPECT_THAT(tensor("scalar"), TensorEq(at::scalar_tensor(2.5, at::kDouble)));
  EXPECT_THAT(tensor("ints"), TensorEq(at::tensor({int64_t{-3}, int64_t{0},
                                                   int64_t{7}})));
  EXPECT_THAT(tensor("bf16"),
              TensorEq(at::tensor({1.5, -2.0}).to(at::kBFloat16).reshape({1, 2})));
  EXPECT_THAT(tensor("mask"), TensorEq(at::tensor({1, 0, 1}).to(at::kBool)));
  EXPECT_THAT(tensor("empty"), TensorEq(at::zeros({0, 4})));
  EXPECT_THAT(tensor("param"), TensorEq(at::ones({2})));

  StateDict expected_optim{
      {"state",
       StateDict{
           {"0", StateDict{{"step", at::scalar_tensor(3.0, at::kFloat)},
                           {"exp_avg", at::full({2}, 0.5, at::kFloat)}}}}},
      {"param_groups", List{Value(StateDict{{"lr", 0.01},
                                            {"betas", Tuple{{0.9, 0.999}}},
                                            {"params", List{int64_t{0}}},
                                            {"name", "\xce\xb1\xce\xb2"}})}}};
  EXPECT_TRUE(ValuesEqual(*sd.Find("optim"), Value(expected_optim)))
      << *sd.Find("optim");
  List expected_values{int64_t{1}, -(int64_t{1} << 40), 1.25, None{}, true,
                       "text", Bytes{std::string("\0\xff", 2)}, Bytes{""}};
  EXPECT_TRUE(ValuesEqual(*sd.Find("values"), Value(expected_values)))
      << *sd.Find("values");
  StateDict expected_module{{"weight", at::tensor({1.0f, 2.0f}).reshape({1, 2})},
                            {"bias", at::tensor({-1.0f})}};
  EXPECT_TRUE(ValuesEqual(*sd.Find("module"), Value(expected_module)))
      << *sd.Find("module");
}

// ---- Malformed and unsupported files ----------------------------------------

// A torch.save-shaped archive around a hand-written data.pkl.
std::string ArchiveWithPickle(absl::string_view pkl,
                              std::vector<std::pair<std::string, std::string>>
                                  extra = {}) {
  std::vector<std::pair<std::string, absl::string_view>> entries;
  entries.push_back({"archive/data.pkl", pkl});
  for (const auto& [name, data] : extra) {
    entries.push_back({absl::StrCat("archive/", name), data});
  }
  entries.push_back({"archive/version", "3\n"});
  absl::StatusOr<std::string> zip = BuildZipArchive(entries);
  CHECK(zip.ok()) << zip.status();
  return *zip;
}

TEST(TorchSaveTest, UnsupportedPythonValuesNameTheirPath) {
  // Protocol 4: {"a": [set()]}.
  const std::string set_pickle =
      Raw("\x80\x04}X\x01\x00\x00\x00" "a]\x8f" "as.");
  EXPECT_THAT(
      ParseTorchSave(ArchiveWithPickle(set_pickle)).status(),
      StatusIs(absl::StatusCode::kUnimplemented,
               HasSubstr("unsupported pickled type set at obj[\"a\"][0]")));
  // {"f": some.module.Func}
  const std::string global_pickle =
      Raw("\x80\x02}X\x01\x00\x00\x00" "fcsome.module\nFunc\ns.");
  EXPECT_THAT(ParseTorchSave(ArchiveWithPickle(global_pickle)).status(),
              StatusIs(absl::StatusCode::kUnimplemented,
                       HasSubstr("unsupported pickled type (a reference to "
                                 "some.module.Func) at obj[\"f\"]")));
}

TEST(TorchSaveTest, TopLevelMustBeADictForReadTorchSave) {
  // `[1, 2]` as the top-level object.
  const std::string list_pickle = Raw("\x80\x02]q\x00(K\x01K\x02" "e.");
  const std::string archive = ArchiveWithPickle(list_pickle);
  EXPECT_THAT(ParseTorchSave(archive).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("holds a list at the top level")));
  DCP_ASSERT_OK_AND_ASSIGN(Value value, ParseTorchSaveValue(archive));
  EXPECT_TRUE(ValuesEqual(value, Value(List{int64_t{1}, int64_t{2}})));
}

TEST(TorchSaveTest, CorruptDataIsDataLossUnlessCrcChecksAreOff) {
  StateDict sd{{"w", at::arange(16, at::kFloat)}};
  DCP_ASSERT_OK_AND_ASSIGN(std::string bytes, SerializeTorchSave(sd));
  DCP_ASSERT_OK_AND_ASSIGN(ZipDirectory dir, ReadZipDirectory(bytes));
  bytes[dir.Find("data/0")->data_offset + 5] ^= 0x40;
  EXPECT_THAT(ParseTorchSave(bytes).status(),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("CRC-32 mismatch in archive/data/0")));
  TorchSaveReadOptions no_crc;
  no_crc.verify_crc = false;
  DCP_ASSERT_OK_AND_ASSIGN(StateDict back, ParseTorchSave(bytes, no_crc));
  EXPECT_FALSE(ValuesEqual(*back.Find("w"), *sd.Find("w")));
}

TEST(TorchSaveTest, TruncatedAndForeignFilesAreRejected) {
  DCP_ASSERT_OK_AND_ASSIGN(std::string bytes,
                           SerializeTorchSave(RichStateDict()));
  for (size_t keep : {size_t{0}, size_t{1}, size_t{100}, bytes.size() / 2,
                      bytes.size() - 1}) {
    SCOPED_TRACE(keep);
    EXPECT_THAT(ParseTorchSave(absl::string_view(bytes).substr(0, keep)).status(),
                StatusIs(absl::StatusCode::kDataLoss));
  }
  // A legacy (pre-zip) torch.save file starts with a pickle.
  EXPECT_THAT(ParseTorchSave(Raw("\x80\x02\x8a\x0a" "legacy")).status(),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("legacy")));
}

TEST(TorchSaveTest, TensorWhoseStorageEntryIsMissingIsDataLoss) {
  StateDict sd{{"w", at::arange(4, at::kFloat)}};
  DCP_ASSERT_OK_AND_ASSIGN(std::string bytes, SerializeTorchSave(sd));
  DCP_ASSERT_OK_AND_ASSIGN(ZipDirectory dir, ReadZipDirectory(bytes));
  DCP_ASSERT_OK_AND_ASSIGN(absl::string_view pkl,
                           ZipEntryData(bytes, *dir.Find("data.pkl")));
  EXPECT_THAT(ParseTorchSave(ArchiveWithPickle(pkl)).status(),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("obj[\"w\"]: storage \"0\" has no "
                                 "archive/data/0 entry")));
  // A storage entry shorter than the pickle claims.
  EXPECT_THAT(
      ParseTorchSave(ArchiveWithPickle(pkl, {{"data/0", "12345678"}})).status(),
      StatusIs(absl::StatusCode::kDataLoss,
               HasSubstr("claims 4 4-byte elements but its entry")));
}

// data.pkl of {"x": tensor} where the tensor has the given size and
// stride over a FloatStorage "0" of `storage_numel` elements.
std::string OneTensorPickle(int64_t storage_numel,
                            const std::vector<int64_t>& size,
                            const std::vector<int64_t>& stride) {
  PickleWriter w;
  w.WriteDict(1, [&](size_t) {
    w.WriteString("x");
    torch_pickle_internal::WriteRebuildTensor(
        w, "0", *torch_pickle_internal::FindDtype(at::kFloat), storage_numel,
        0, size, stride);
  });
  absl::StatusOr<std::string> pkl = std::move(w).Finish();
  CHECK(pkl.ok()) << pkl.status();
  return *pkl;
}

TEST(TorchSaveTest, ExpandedTensorsAreReadWithinTheExpansionBudget) {
  // torch.save(torch.tensor([2.5]).expand(8, 3)) keeps the 4-byte storage.
  const std::string archive =
      ArchiveWithPickle(OneTensorPickle(1, {8, 3}, {0, 0}),
                        {{"data/0", Raw("\x00\x00\x20\x40")}});  // 2.5f
  DCP_ASSERT_OK_AND_ASSIGN(StateDict sd, ParseTorchSave(archive));
  EXPECT_THAT(sd.Find("x")->get<at::Tensor>(),
              TensorEq(at::full({8, 3}, 2.5f)));
  // The same 4 bytes expanded to 1000 x 1000 (4 MB) exceed the budget of
  // 64 bytes per file byte + 64 KiB.
  const std::string bomb =
      ArchiveWithPickle(OneTensorPickle(1, {1000, 1000}, {0, 0}),
                        {{"data/0", Raw("\x00\x00\x20\x40")}});
  EXPECT_THAT(ParseTorchSave(bomb).status(),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("obj[\"x\"]")));
}

TEST(TorchSaveTest, HugeExpandedTensorsAreRefusedBeforeAllocating) {
  // A 4-byte storage claiming 4 TiB, or 2^62 elements, through stride 0:
  // refused by arithmetic (an attempt to allocate would abort the test).
  struct Case {
    std::vector<int64_t> size;
    std::vector<int64_t> stride;
    bool empty;
  };
  for (const Case& c : {Case{{int64_t{1} << 40}, {0}, false},
                        Case{{int64_t{1} << 31, int64_t{1} << 31}, {0, 0},
                             false},
                        Case{{int64_t{1} << 62, 1, 0}, {0, 0, 0}, true},
                        Case{{3, int64_t{1} << 61}, {1, 0}, false}}) {
    const std::vector<int64_t>& size = c.size;
    SCOPED_TRACE(absl::StrJoin(size, ","));
    const std::string archive = ArchiveWithPickle(
        OneTensorPickle(4, size, c.stride), {{"data/0", std::string(16, 'x')}});
    absl::StatusOr<StateDict> sd = ParseTorchSave(archive);
    if (c.empty) {
      DCP_ASSERT_OK(sd.status());
      EXPECT_EQ(sd->Find("x")->get<at::Tensor>().sizes().vec(), size);
      continue;
    }
    EXPECT_THAT(sd.status(),
                StatusIs(absl::StatusCode::kResourceExhausted,
                         HasSubstr("budget")));
  }
}

// ---- Decoded-size budget (issue 9) ------------------------------------------

// The pickle expression `_rebuild_tensor_v2(...)` of a float32 tensor over
// storage "0" of `numel` elements (no PROTO, no STOP).
std::string FloatTensorExpr(int64_t numel, std::vector<int64_t> sizes,
                            std::vector<int64_t> strides) {
  PickleWriter w;
  torch_pickle_internal::WriteRebuildTensor(
      w, "0", *torch_pickle_internal::FindDtype(at::kFloat), numel, 0, sizes,
      strides);
  std::string pkl = std::move(w).Finish().value();
  return pkl.substr(2, pkl.size() - 3);
}

// [t, t, t, ...]: one memoized 1 MiB tensor referenced 10,000 times is
// 10 GiB of tensors once each reference is read as its own tensor.
TEST(TorchSaveBudgetTest, SharedTensorReferencedManyTimesFailsCleanly) {
  constexpr int64_t kNumel = 1 << 18;  // 1 MiB of float32.
  const std::string storage(kNumel * 4, '\x01');
  auto archive = [&](int refs) {
    std::string pkl =
        absl::StrCat(Raw("\x80\x02]("), FloatTensorExpr(kNumel, {kNumel}, {1}),
                     Raw("q\x00"));
    for (int i = 1; i < refs; ++i) pkl += Raw("h\x00");
    pkl += "e.";
    return ArchiveWithPickle(pkl, {{"data/0", storage}});
  };
  DCP_ASSERT_OK_AND_ASSIGN(Value few, ParseTorchSaveValue(archive(3)));
  ASSERT_TRUE(few.is<List>());
  EXPECT_EQ(few.get<List>().size(), 3u);
  EXPECT_THAT(ParseTorchSaveValue(archive(10000)).status(),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       AllOf(HasSubstr("torch.save file at obj["),
                             HasSubstr("torch.save file decodes to more than "
                                       "its budget of"))));
}

// A stride-0 view of one element with 2^40 elements would be read as a
// 4 TiB contiguous tensor.
TEST(TorchSaveBudgetTest, ExpandedTensorBombFailsCleanly) {
  const std::string pkl = absl::StrCat(
      Raw("\x80\x02"),
      FloatTensorExpr(1, {int64_t{1} << 20, int64_t{1} << 20}, {0, 0}), ".");
  EXPECT_THAT(
      ParseTorchSaveValue(
          ArchiveWithPickle(pkl, {{"data/0", std::string(4, '\0')}}))
          .status(),
      StatusIs(absl::StatusCode::kResourceExhausted,
               HasSubstr("decodes to more than its budget")));
  // A small expanded tensor is fine.
  const std::string small = absl::StrCat(
      Raw("\x80\x02"), FloatTensorExpr(1, {4, 8}, {0, 0}), ".");
  DCP_ASSERT_OK_AND_ASSIGN(Value v,
                           ParseTorchSaveValue(ArchiveWithPickle(
                               small, {{"data/0", std::string(4, '\0')}})));
  ASSERT_TRUE(v.is<at::Tensor>());
  EXPECT_EQ(v.get<at::Tensor>().numel(), 32);
}

TEST(TorchSaveBudgetTest, LimitsAreOptions) {
  StateDict sd{{"w", at::arange(1000, at::kFloat)},
               {"nested", StateDict{{"a", List{Value(1), Value("x")}}}}};
  DCP_ASSERT_OK_AND_ASSIGN(std::string bytes, SerializeTorchSave(sd));
  DCP_ASSERT_OK_AND_ASSIGN(StateDict back, ParseTorchSave(bytes));
  EXPECT_THAT(back, StateDictEq(sd));
  TorchSaveReadOptions tiny;
  tiny.decode_limits.budget_per_input_byte = 1;
  tiny.decode_limits.budget_base_bytes = 0;
  EXPECT_THAT(ParseTorchSave(bytes, tiny).status(),
              StatusIs(absl::StatusCode::kResourceExhausted));
  TorchSaveReadOptions shallow;
  shallow.decode_limits.max_depth = 2;
  EXPECT_THAT(ParseTorchSave(bytes, shallow).status(),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("deeper than 2 levels")));
}

}  // namespace
}  // namespace dcp
