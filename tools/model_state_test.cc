#include "tools/model_state.h"

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/sharding.h"
#include "core/state_dict.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "planner/flatten.h"
#include "testing/status_matchers.h"
#include "testing/tensor_matchers.h"

namespace dcp::tools {
namespace {

using ::dcp::test::IsOk;
using ::dcp::test::StatusIs;
using ::dcp::test::TensorEq;
using ::testing::HasSubstr;

ModelShape Tiny() {
  ModelShape shape;
  shape.vocab = 11;
  shape.hidden = 6;
  shape.layers = 2;
  return shape;
}

TEST(ModelStateTest, HasModelAndOptimizerStateOfTheAdvertisedSize) {
  DCP_ASSERT_OK_AND_ASSIGN(StateDict sd, MakeModelStateDict(Tiny()));
  DCP_ASSERT_OK_AND_ASSIGN(FlatStateDict flat, FlattenStateDict(sd));
  int64_t bytes = 0;
  int tensors = 0;
  std::vector<std::string> values;
  for (const auto& [fqn, value] : flat.items) {
    if (const auto* t = value.get_if<at::Tensor>()) {
      ++tensors;
      bytes += t->numel() * t->element_size();
    } else {
      values.push_back(fqn);
    }
  }
  EXPECT_EQ(bytes, ModelTensorBytes(Tiny()));
  // 3 + 7 per layer parameters, each with step, exp_avg and exp_avg_sq.
  EXPECT_EQ(tensors, 17 * 4);
  EXPECT_THAT(values, ::testing::Contains("optim.param_groups.0.lr"));
  EXPECT_THAT(values, ::testing::Contains("step"));
  ASSERT_NE(flat.mappings.find("model.layers.1.mlp.up.weight"),
            flat.mappings.end());
  // Deterministic.
  DCP_ASSERT_OK_AND_ASSIGN(StateDict again, MakeModelStateDict(Tiny()));
  EXPECT_TRUE(StateDictsEqual(sd, again));
}

TEST(ModelStateTest, ShapeForBytesIsClose) {
  for (int64_t mb : {1, 32, 256}) {
    const int64_t target = mb << 20;
    const ModelShape shape = ModelShapeForBytes(target);
    const int64_t bytes = ModelTensorBytes(shape);
    EXPECT_NEAR(static_cast<double>(bytes), static_cast<double>(target),
                0.15 * target)
        << mb;
  }
}

// Shards of every layout cover each tensor exactly once.
TEST(ModelStateTest, EveryLayoutUnshardsToTheFullTensors) {
  DCP_ASSERT_OK_AND_ASSIGN(StateDict full, MakeModelStateDict(Tiny()));
  DCP_ASSERT_OK_AND_ASSIGN(FlatStateDict flat_full, FlattenStateDict(full));
  for (Layout layout : {Layout::kRows, Layout::kColumns, Layout::kGrid}) {
    for (int world : {1, 3, 4}) {
      SCOPED_TRACE(absl::StrCat(LayoutName(layout), " world ", world));
      std::vector<FlatStateDict> ranks;
      for (int r = 0; r < world; ++r) {
        DCP_ASSERT_OK_AND_ASSIGN(StateDict sd,
                                 ShardStateDict(full, layout, r, world));
        ASSERT_THAT(VerifyAgainstFull(sd, full, r, nullptr), IsOk());
        DCP_ASSERT_OK_AND_ASSIGN(FlatStateDict flat, FlattenStateDict(sd));
        ranks.push_back(std::move(flat));
      }
      for (size_t i = 0; i < flat_full.items.size(); ++i) {
        const Value& expected = flat_full.items[i].second;
        if (!expected.is<at::Tensor>()) continue;
        const at::Tensor& t = expected.get<at::Tensor>();
        std::vector<ShardedTensor> parts;
        for (const FlatStateDict& rank : ranks) {
          const Value& v = rank.items[i].second;
          if (t.dim() == 0) {
            ASSERT_TRUE(v.is<at::Tensor>());
          } else {
            ASSERT_TRUE(v.is<ShardedTensor>()) << flat_full.items[i].first;
            parts.push_back(v.get<ShardedTensor>());
          }
        }
        if (t.dim() == 0) continue;
        DCP_ASSERT_OK_AND_ASSIGN(at::Tensor back, Unshard(parts));
        EXPECT_THAT(back, TensorEq(t)) << flat_full.items[i].first;
      }
    }
  }
}

TEST(ModelStateTest, EmptyDestinationsAreFreshAndFailVerification) {
  DCP_ASSERT_OK_AND_ASSIGN(StateDict full, MakeModelStateDict(Tiny()));
  DCP_ASSERT_OK_AND_ASSIGN(StateDict empty,
                           EmptyShardedLike(full, Layout::kGrid, 1, 4));
  // Non-tensor values are placeholders.
  EXPECT_TRUE(empty.Find("step")->is<None>());
  EXPECT_THAT(VerifyAgainstFull(empty, full, 1, nullptr),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("rank 1: ")));
}

TEST(ModelStateTest, VerifyCountsAndNamesTheFirstMismatch) {
  DCP_ASSERT_OK_AND_ASSIGN(StateDict full, MakeModelStateDict(Tiny()));
  DCP_ASSERT_OK_AND_ASSIGN(StateDict sd,
                           ShardStateDict(full, Layout::kRows, 0, 2));
  VerifyStats stats;
  ASSERT_THAT(VerifyAgainstFull(sd, full, 0, &stats), IsOk());
  EXPECT_EQ(stats.tensors, 17 * 4);
  EXPECT_GT(stats.elements, 0);
  EXPECT_GT(stats.values, 0);

  Value* model = sd.FindMutable("model");
  ShardedTensor& w =
      model->get<StateDict>().FindMutable("lm_head.weight")->get<ShardedTensor>();
  w.local_shards[0].tensor.view(-1)[3].fill_(1e6);
  EXPECT_THAT(VerifyAgainstFull(sd, full, 0, nullptr),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("rank 0: model.lm_head.weight: shard at "
                                 "offsets [0, 0] differs")));
}

TEST(ModelStateTest, ParsesLayoutNames) {
  EXPECT_THAT(ParseLayout("rows"), ::dcp::test::IsOkAndHolds(Layout::kRows));
  EXPECT_THAT(ParseLayout("col"), ::dcp::test::IsOkAndHolds(Layout::kColumns));
  EXPECT_THAT(ParseLayout("Grid"), ::dcp::test::IsOkAndHolds(Layout::kGrid));
  EXPECT_THAT(ParseLayout("diagonal").status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace dcp::tools
