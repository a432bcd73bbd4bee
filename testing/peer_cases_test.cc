#include "testing/peer_cases.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/sharding.h"
#include "core/state_dict.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "planner/flatten.h"
#include "testing/status_matchers.h"
#include "testing/tensor_matchers.h"

namespace dcp::test {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

// testdata/pytorch_golden/cases.json, "cases": one line per leaf, "fqn dtype
// shape layout seed" for tensors and "fqn python_type" for values.
const std::map<std::string, std::vector<std::string>>& CasesJson() {
  static const auto* const kCases =
      new std::map<std::string, std::vector<std::string>>{
          {"dtensor_row",
           {
               "even float32 [8, 4] row 80",
               "uneven float32 [7, 3] row 277",
               "tiny float64 [3, 2] row 140",
               "vector int64 [10] row 320",
               "bf16 bfloat16 [9, 2] row 665",
           }},
          {"dtensor_col",
           {
               "even float32 [4, 8] col 80",
               "uneven float32 [3, 7] col 277",
               "tiny float64 [2, 3] col 140",
               "int32 int32 [2, 10] col 127",
               "bf16 bfloat16 [2, 9] col 665",
               "cube float32 [2, 5, 3] col 31",
           }},
          {"mesh2d",
           {
               "grid float32 [6, 8] mesh2d 46",
               "uneven float32 [5, 7] mesh2d 277",
               "half float16 [4, 3] mesh2d 30",
               "thin int64 [1, 3] mesh2d 79",
           }},
          {"replicated",
           {
               "weight float32 [4, 5] plain 264",
               "bias float32 [5] plain 59",
               "running_mean float64 [5] plain 162",
               "num_batches int64 [] plain 938",
               "mask bool [2, 3] plain 76",
               "table bfloat16 [3, 4] plain 541",
           }},
          {"mixed",
           {
               "model.embed.weight float32 [10, 4] row 14",
               "model.proj.weight bfloat16 [3, 6] col 504",
               "model.norm.weight float32 [4] plain 523",
               "model.scalar float64 [] plain 836",
               "model.empty float32 [0, 3] plain 929",
               "model.plain.float32 float32 [2, 3] plain 79",
               "model.plain.float64 float64 [2, 3] plain 171",
               "model.plain.float16 float16 [2, 3] plain 119",
               "model.plain.bfloat16 bfloat16 [2, 3] plain 30",
               "model.plain.int64 int64 [2, 3] plain 577",
               "model.plain.int32 int32 [2, 3] plain 495",
               "model.plain.int16 int16 [2, 3] plain 531",
               "model.plain.int8 int8 [2, 3] plain 725",
               "model.plain.uint8 uint8 [2, 3] plain 633",
               "model.plain.bool bool [2, 3] plain 405",
               "model.plain.complex64 complex64 [2, 3] plain 558",
               "model.sharded.float32 float32 [5, 2] row 922",
               "model.sharded.float64 float64 [5, 2] row 24",
               "model.sharded.float16 float16 [5, 2] row 966",
               "model.sharded.bfloat16 bfloat16 [5, 2] row 73",
               "model.sharded.int64 int64 [5, 2] row 24",
               "model.sharded.int32 int32 [5, 2] row 932",
               "model.sharded.int16 int16 [5, 2] row 972",
               "model.sharded.int8 int8 [5, 2] row 72",
               "model.sharded.uint8 uint8 [5, 2] row 214",
               "model.sharded.bool bool [5, 2] row 834",
               "model.sharded.complex64 complex64 [5, 2] row 863",
               "optim.state.0.exp_avg float32 [10, 4] row 36",
               "optim.state.0.exp_avg_sq float32 [10, 4] row 483",
               "optim.state.0.step float32 [] plain 935",
               "optim.state.1.exp_avg bfloat16 [3, 6] col 49",
               "optim.state.1.exp_avg_sq bfloat16 [3, 6] col 496",
               "optim.state.1.step int",
               "optim.param_groups.0.lr float",
               "optim.param_groups.0.betas tuple",
               "optim.param_groups.0.eps float",
               "optim.param_groups.0.weight_decay float",
               "optim.param_groups.0.amsgrad bool",
               "optim.param_groups.0.params list",
               "extra.epoch int",
               "extra.neg int",
               "extra.big int",
               "extra.loss float",
               "extra.done bool",
               "extra.name str",
               "extra.nothing NoneType",
               "extra.blob bytes",
               "extra.sizes list",
               "extra.cfg.depth int",
               "extra.cfg.act str",
               "extra.cfg.tags list",
               "extra.pair tuple",
               "extra.mixed_list.0 float32 [3] plain 940",
               "extra.mixed_list.1 int",
           }},
      };
  return *kCases;
}

std::string Describe(const PeerLeaf& leaf) {
  if (leaf.is_tensor) {
    return absl::StrCat(leaf.fqn, " ", DtypeName(leaf.dtype), " [",
                        absl::StrJoin(leaf.shape, ", "), "] ",
                        PeerLayoutName(leaf.layout), " ",
                        PeerKeySeed(leaf.fqn));
  }
  std::string type(leaf.value.TypeName());
  if (type == "None") type = "NoneType";
  return absl::StrCat(leaf.fqn, " ", type);
}

TEST(PeerCasesTest, LeavesMatchCasesJson) {
  std::vector<std::string> names;
  for (const auto& [name, expected] : CasesJson()) {
    names.push_back(name);
    DCP_ASSERT_OK_AND_ASSIGN(std::vector<PeerLeaf> leaves,
                             PeerCaseLeaves(name));
    std::vector<std::string> got;
    for (const PeerLeaf& leaf : leaves) got.push_back(Describe(leaf));
    EXPECT_THAT(got, ElementsAreArray(expected)) << name;
  }
  std::vector<std::string> public_names = PeerCaseNames();
  std::sort(public_names.begin(), public_names.end());
  EXPECT_EQ(public_names, names);
}

TEST(PeerCasesTest, KeySeedMatchesReadmeExamples) {
  EXPECT_EQ(PeerKeySeed("w"), 119);
  EXPECT_EQ(PeerKeySeed("row"), 693);
  // Non-ASCII bytes count as unsigned: "α" is 0xCE 0xB1.
  EXPECT_EQ(PeerKeySeed("\xce\xb1"), (0xCE + 2 * 0xB1) % 1000);
}

TEST(PeerCasesTest, ReadmeExampleRow) {
  DCP_ASSERT_OK_AND_ASSIGN(
      at::Tensor t, PeerFullValue("row", c10::ScalarType::Float, {6, 4}));
  EXPECT_EQ(t.sizes(), at::IntArrayRef({6, 4}));
  EXPECT_EQ(t[0][0].item<float>(), 246.5f);
  EXPECT_EQ(t[0][1].item<float>(), 247.0f);
  EXPECT_EQ(t[5][3].item<float>(), 246.5f + 23 * 0.5f);
}

// cases.json "generator_vectors": model.sharded.<dtype>, shape [5, 2].
struct GeneratorVector {
  const char* dtype;
  int seed;
  std::vector<double> values;  // complex64: re, im interleaved
};

const std::vector<GeneratorVector>& GeneratorVectors() {
  static const auto* const kVectors = new std::vector<GeneratorVector>{
      {"float32",
       922,
       {361.0, 361.5, 362.0, 362.5, 363.0, 363.5, 364.0, 364.5, 365.0,
        365.5}},
      {"float64",
       24,
       {-88.0, -87.5, -87.0, -86.5, -86.0, -85.5, -85.0, -84.5, -84.0, -83.5}},
      {"float16",
       966,
       {-29.0, -28.5, -28.0, -27.5, -27.0, -26.5, -26.0, -25.5, -25.0, -24.5}},
      {"bfloat16",
       73,
       {-27.5, -27.0, -26.5, -26.0, -25.5, -25.0, -24.5, -24.0, -23.5, -23.0}},
      {"int64",
       24,
       {-2044404440036, -2040109472725, -2035814505414, -2031519538103,
        -2027224570792, -2022929603481, -2018634636170, -2014339668859,
        -2010044701548, -2005749734237}},
      {"int32",
       932,
       {28311984, 28377521, 28443058, 28508595, 28574132, 28639669, 28705206,
        28770743, 28836280, 28901817}},
      {"int16",
       972,
       {-9768, -9511, -9254, -8997, -8740, -8483, -8226, -7969, -7712, -7455}},
      {"int8", 72, {76, 83, 90, 97, 104, 111, 118, 125, -124, -117}},
      {"uint8", 214, {130, 133, 136, 139, 142, 145, 148, 151, 154, 157}},
      {"bool", 834, {1, 0, 0, 1, 0, 0, 1, 0, 0, 1}},
      {"complex64",
       863,
       {331.5, -215.75, 332.0, -216.0, 332.5, -216.25, 333.0, -216.5, 333.5,
        -216.75, 334.0, -217.0, 334.5, -217.25, 335.0, -217.5, 335.5, -217.75,
        336.0, -218.0}},
  };
  return *kVectors;
}

TEST(PeerCasesTest, GeneratorMatchesCasesJsonVectors) {
  for (const GeneratorVector& v : GeneratorVectors()) {
    SCOPED_TRACE(v.dtype);
    const std::string fqn = absl::StrCat("model.sharded.", v.dtype);
    EXPECT_EQ(PeerKeySeed(fqn), v.seed);
    DCP_ASSERT_OK_AND_ASSIGN(c10::ScalarType dtype, DtypeFromName(v.dtype));
    DCP_ASSERT_OK_AND_ASSIGN(at::Tensor t, PeerFullValue(fqn, dtype, {5, 2}));
    ASSERT_EQ(t.scalar_type(), dtype);
    ASSERT_EQ(t.sizes(), at::IntArrayRef({5, 2}));
    at::Tensor flat = t.reshape(-1);
    if (dtype == c10::ScalarType::ComplexFloat) {
      at::Tensor parts = at::view_as_real(flat).reshape(-1).to(at::kDouble);
      ASSERT_EQ(parts.numel(), static_cast<int64_t>(v.values.size()));
      for (int64_t i = 0; i < parts.numel(); ++i) {
        EXPECT_EQ(parts[i].item<double>(), v.values[i]) << "index " << i;
      }
      continue;
    }
    ASSERT_EQ(flat.numel(), static_cast<int64_t>(v.values.size()));
    if (c10::isIntegralType(dtype, /*includeBool=*/true)) {
      at::Tensor as_long = flat.to(at::kLong);
      for (int64_t i = 0; i < flat.numel(); ++i) {
        EXPECT_EQ(as_long[i].item<int64_t>(),
                  static_cast<int64_t>(v.values[i]))
            << "index " << i;
      }
    } else {
      at::Tensor as_double = flat.to(at::kDouble);
      for (int64_t i = 0; i < flat.numel(); ++i) {
        EXPECT_EQ(as_double[i].item<double>(), v.values[i]) << "index " << i;
      }
    }
  }
}

TEST(PeerCasesTest, LayoutsFollowDTensorChunking) {
  // 3 rows over 4 ranks: 1, 1, 1, 0 (the empty shard at offset 3).
  DCP_ASSERT_OK_AND_ASSIGN(ChunkStorageMetadata box,
                           PeerLocalBox(PeerLayout::kRow, {3, 2}, 3, 4));
  EXPECT_EQ(box.offsets, Shape({3, 0}));
  EXPECT_EQ(box.sizes, Shape({0, 2}));
  // 7 columns over 3 ranks: 3, 3, 1.
  DCP_ASSERT_OK_AND_ASSIGN(box, PeerLocalBox(PeerLayout::kCol, {3, 7}, 2, 3));
  EXPECT_EQ(box.offsets, Shape({0, 6}));
  EXPECT_EQ(box.sizes, Shape({3, 1}));
  // mesh2d at 4 ranks: rank 1 at (0, 1) of a 2 x 2 mesh.
  DCP_ASSERT_OK_AND_ASSIGN(box,
                           PeerLocalBox(PeerLayout::kMesh2D, {5, 7}, 1, 4));
  EXPECT_EQ(box.offsets, Shape({0, 4}));
  EXPECT_EQ(box.sizes, Shape({3, 3}));
  // thin [1, 3] on 2 x 2: mesh row 1 gets no rows (offset 1).
  DCP_ASSERT_OK_AND_ASSIGN(box,
                           PeerLocalBox(PeerLayout::kMesh2D, {1, 3}, 3, 4));
  EXPECT_EQ(box.offsets, Shape({1, 2}));
  EXPECT_EQ(box.sizes, Shape({0, 1}));
  // mesh2d at other world sizes: like row.
  DCP_ASSERT_OK_AND_ASSIGN(box,
                           PeerLocalBox(PeerLayout::kMesh2D, {6, 8}, 2, 3));
  EXPECT_EQ(box.offsets, Shape({4, 0}));
  EXPECT_EQ(box.sizes, Shape({2, 8}));
  DCP_ASSERT_OK_AND_ASSIGN(box, PeerLocalBox(PeerLayout::kPlain, {}, 0, 2));
  EXPECT_THAT(box.offsets, IsEmpty());
  EXPECT_THAT(box.sizes, IsEmpty());
}

TEST(PeerCasesTest, ShardsOfAllRanksReassembleTheFullValue) {
  for (const std::string& name : PeerCaseNames()) {
    DCP_ASSERT_OK_AND_ASSIGN(std::vector<PeerLeaf> leaves,
                             PeerCaseLeaves(name));
    for (int world = 1; world <= 4; ++world) {
      std::vector<StateDict> per_rank;
      for (int r = 0; r < world; ++r) {
        DCP_ASSERT_OK_AND_ASSIGN(
            StateDict sd, MakePeerCase(name, r, world, PeerValues::kTrue));
        per_rank.push_back(std::move(sd));
      }
      for (const PeerLeaf& leaf : leaves) {
        if (!leaf.is_tensor || leaf.layout == PeerLayout::kPlain) continue;
        SCOPED_TRACE(absl::StrCat(name, " ", leaf.fqn, " world ", world));
        std::vector<ShardedTensor> shards;
        for (const StateDict& sd : per_rank) {
          DCP_ASSERT_OK_AND_ASSIGN(const Value* v, GetElement(sd, leaf.path));
          ASSERT_TRUE(v->is<ShardedTensor>());
          shards.push_back(v->get<ShardedTensor>());
        }
        DCP_ASSERT_OK_AND_ASSIGN(at::Tensor full, Unshard(shards));
        DCP_ASSERT_OK_AND_ASSIGN(
            at::Tensor want, PeerFullValue(leaf.fqn, leaf.dtype, leaf.shape));
        EXPECT_THAT(full, TensorEq(want));
      }
    }
  }
}

TEST(PeerCasesTest, TrueValuesCompareEqualAndPlaceholdersDifferEverywhere) {
  for (const std::string& name : PeerCaseNames()) {
    for (int world = 1; world <= 4; ++world) {
      for (int r = 0; r < world; ++r) {
        SCOPED_TRACE(absl::StrCat(name, " rank ", r, " of ", world));
        DCP_ASSERT_OK_AND_ASSIGN(
            StateDict truth, MakePeerCase(name, r, world, PeerValues::kTrue));
        EXPECT_THAT(ComparePeerCase(name, truth, r, world), IsEmpty());
        DCP_ASSERT_OK_AND_ASSIGN(
            StateDict dest,
            MakePeerCase(name, r, world, PeerValues::kPlaceholder));
        DCP_ASSERT_OK_AND_ASSIGN(std::vector<PeerLeaf> leaves,
                                 PeerCaseLeaves(name));
        std::vector<std::string> diffs = ComparePeerCase(name, dest, r, world);
        // Every non-empty local tensor and every value is reported.
        for (const PeerLeaf& leaf : leaves) {
          DCP_ASSERT_OK_AND_ASSIGN(
              ChunkStorageMetadata box,
              PeerLocalBox(leaf.layout, leaf.shape, r, world));
          const int64_t n = NumElements(box.sizes);
          if (leaf.is_tensor && n == 0) continue;
          const std::string head =
              leaf.is_tensor ? absl::StrCat(leaf.fqn, ": ", n, " of ", n,
                                            " elements differ on rank ", r)
                             : absl::StrCat(leaf.fqn, ": expected ");
          EXPECT_TRUE(std::any_of(diffs.begin(), diffs.end(),
                                  [&](const std::string& d) {
                                    return d.rfind(head, 0) == 0;
                                  }))
              << head << "\n"
              << absl::StrJoin(diffs, "\n");
        }
      }
    }
  }
}

TEST(PeerCasesTest, CompareReportsGlobalIndexExpectedAndGot) {
  DCP_ASSERT_OK_AND_ASSIGN(StateDict sd,
                           MakePeerCase("mixed", 1, 2, PeerValues::kTrue));
  // model.embed.weight [10, 4] row: rank 1 of 2 holds rows 5..9.
  DCP_ASSERT_OK_AND_ASSIGN(
      Value * v,
      GetMutableElement(sd, {std::string("model"), std::string("embed"),
                             std::string("weight")}));
  at::Tensor local = v->get<ShardedTensor>().local_shards[0].tensor;
  const float old = local[1][2].item<float>();
  local[1][2] = old + 1;
  DCP_ASSERT_OK_AND_ASSIGN(
      v, GetMutableElement(sd, {std::string("extra"), std::string("epoch")}));
  *v = Value(3.0);  // float instead of int
  std::vector<std::string> diffs = ComparePeerCase("mixed", sd, 1, 2);
  EXPECT_THAT(
      diffs,
      ElementsAre("model.embed.weight: 1 of 20 elements differ on rank 1",
                  absl::StrCat("  model.embed.weight index [6, 2]: expected ",
                               old, ", got ", old + 1),
                  "extra.epoch: expected 3 (int), got 3 (float)"));
}

TEST(PeerCasesTest, CompareReportsMissingAndWrongLayout) {
  DCP_ASSERT_OK_AND_ASSIGN(
      StateDict sd, MakePeerCase("dtensor_row", 0, 2, PeerValues::kTrue));
  ASSERT_TRUE(sd.Erase("tiny"));
  DCP_ASSERT_OK_AND_ASSIGN(
      at::Tensor full, PeerFullValue("even", c10::ScalarType::Float, {8, 4}));
  sd.Set("even", full);
  EXPECT_THAT(ComparePeerCase("dtensor_row", sd, 0, 2),
              ElementsAre("even: expected a sharded tensor, got tensor",
                          "tiny: missing from the loaded state dict"));
  EXPECT_THAT(ComparePeerCase("no_such_case", sd, 0, 2),
              ElementsAre(HasSubstr("unknown peer case \"no_such_case\"")));
}

TEST(PeerCasesTest, MixedFlattensLikePyTorch) {
  DCP_ASSERT_OK_AND_ASSIGN(std::vector<PeerLeaf> leaves,
                           PeerCaseLeaves("mixed"));
  ASSERT_THAT(leaves, SizeIs(54));
  std::vector<std::string> fqns;
  for (const PeerLeaf& leaf : leaves) fqns.push_back(leaf.fqn);

  // The PyTorch-shaped destination flattens to exactly the case's FQNs.
  DCP_ASSERT_OK_AND_ASSIGN(
      StateDict dest, MakePeerCase("mixed", 0, 2, PeerValues::kPlaceholder));
  DCP_ASSERT_OK_AND_ASSIGN(FlatStateDict flat, FlattenStateDict(dest));
  std::vector<std::string> got;
  for (const auto& item : flat.items) got.push_back(item.first);
  EXPECT_EQ(got, fqns);

  // The true values flatten the same way: a tuple is one leaf, even
  // extra.pair, which holds a dict.
  DCP_ASSERT_OK_AND_ASSIGN(StateDict truth,
                           MakePeerCase("mixed", 0, 2, PeerValues::kTrue));
  DCP_ASSERT_OK_AND_ASSIGN(FlatStateDict f, FlattenStateDict(truth));
  got.clear();
  for (const auto& item : f.items) got.push_back(item.first);
  EXPECT_EQ(got, fqns);
  const Value* pair = nullptr;
  for (const auto& item : f.items) {
    if (item.first == "extra.pair") pair = &item.second;
  }
  ASSERT_NE(pair, nullptr);
  EXPECT_TRUE(pair->is<Tuple>()) << *pair;
}

TEST(PeerCasesTest, GoldenCasesBuild) {
  for (const char* name :
       {"golden_simple", "golden_sharded4", "golden_nonstrided"}) {
    SCOPED_TRACE(name);
    DCP_ASSERT_OK_AND_ASSIGN(StateDict sd,
                             MakePeerCase(name, 0, 1, PeerValues::kTrue));
    EXPECT_THAT(ComparePeerCase(name, sd, 0, 1), IsEmpty());
  }
}

TEST(PeerCasesTest, BadArguments) {
  EXPECT_THAT(MakePeerCase("nope", 0, 1, PeerValues::kTrue),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("unknown peer case \"nope\"")));
  EXPECT_THAT(MakePeerCase("mixed", 2, 2, PeerValues::kTrue),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("rank 2 is outside [0, 2)")));
  EXPECT_THAT(MakePeerCase("mixed", 0, 0, PeerValues::kTrue),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("world size 0")));
  EXPECT_THAT(PeerFullValue("x", c10::ScalarType::ComplexDouble, {2}),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace dcp::test
