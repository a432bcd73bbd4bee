#include "planner/default_save_planner.h"

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "ATen/ATen.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "core/metadata.h"
#include "core/sharding.h"
#include "core/state_dict.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "planner/planner.h"
#include "planner/save_plan.h"
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
using ::testing::IsEmpty;
using ::testing::Pair;
using ::testing::SizeIs;

// Runs the local step on every rank and the global step on rank 0's
// planner, in one thread. `planners` receives the planners (set up), so a
// test can call ResolveData afterwards.
absl::StatusOr<GlobalSavePlan> PlanSave(
    const std::vector<StateDict>& per_rank, DefaultSavePlannerOptions options,
    std::vector<std::unique_ptr<DefaultSavePlanner>>* planners = nullptr) {
  std::vector<std::unique_ptr<DefaultSavePlanner>> owned;
  std::vector<SavePlan> plans;
  for (size_t rank = 0; rank < per_rank.size(); ++rank) {
    owned.push_back(std::make_unique<DefaultSavePlanner>(options));
    absl::Status status =
        owned.back()->SetUp(per_rank[rank], nullptr, rank == 0);
    if (!status.ok()) return status;
    absl::StatusOr<SavePlan> plan = owned.back()->CreateLocalPlan();
    if (!plan.ok()) return plan.status();
    plans.push_back(*std::move(plan));
  }
  absl::StatusOr<GlobalSavePlan> global =
      owned[0]->CreateGlobalPlan(std::move(plans));
  if (planners != nullptr) *planners = std::move(owned);
  return global;
}

std::vector<std::string> Fqns(const SavePlan& plan) {
  std::vector<std::string> fqns;
  for (const WriteItem& item : plan.items) fqns.push_back(item.index.fqn);
  return fqns;
}

int64_t PlanBytes(const SavePlan& plan) {
  int64_t bytes = 0;
  for (const WriteItem& item : plan.items) {
    bytes += item.TensorStorageSize().value_or(1);
  }
  return bytes;
}

ShardedTensor RowShard(const at::Tensor& full, int rank, int world) {
  absl::StatusOr<ShardedTensor> sharded = ShardAlongDim(full, 0, rank, world);
  DCP_EXPECT_OK(sharded.status());
  return *std::move(sharded);
}

const TensorStorageMetadata& TensorMd(const Metadata& md,
                                      const std::string& fqn) {
  return std::get<TensorStorageMetadata>(md.state_dict_metadata.at(fqn));
}

// ---------------------------------------------------------------------------
// Local plan.

TEST(DefaultSavePlannerTest, LocalPlanHasOneItemPerValueWithPythonIndices) {
  at::Tensor w = at::ones({2, 3}).requires_grad_(true);
  at::Tensor b = at::zeros({3}, at::kDouble);
  at::Tensor scalar = at::scalar_tensor(5, at::kLong);
  ShardedTensor sh;
  sh.global_size = {8, 4};
  sh.local_shards = {Shard{at::ones({2, 4}), {4, 0}},
                     Shard{at::ones({2, 4}), {6, 0}}};
  StateDict sd{
      {"model", StateDict{{"w", w}, {"b", b}}},
      {"sh", sh},
      {"scalar", scalar},
      {"step", 7},
      {"optim", StateDict{{"param_groups", List{StateDict{{"lr", 0.1}}}}}},
  };
  DefaultSavePlanner planner;
  DCP_ASSERT_OK(planner.SetUp(sd, nullptr, true));
  DCP_ASSERT_OK_AND_ASSIGN(SavePlan plan, planner.CreateLocalPlan());
  ASSERT_THAT(plan.items, SizeIs(7));

  const WriteItem& wi = plan.items[0];
  EXPECT_EQ(wi.index, MetadataIndex("model.w", Shape{0, 0}));
  EXPECT_EQ(wi.type, WriteItemType::kTensor);
  ASSERT_TRUE(wi.tensor_data.has_value());
  EXPECT_EQ(wi.tensor_data->chunk, (ChunkStorageMetadata{{0, 0}, {2, 3}}));
  EXPECT_EQ(wi.tensor_data->size, (Shape{2, 3}));
  EXPECT_EQ(wi.tensor_data->properties.dtype, at::kFloat);
  EXPECT_TRUE(wi.tensor_data->properties.requires_grad);
  EXPECT_EQ(wi.tensor_data->properties.memory_format,
            MemoryFormat::kContiguous);
  EXPECT_EQ(wi.tensor_data->properties.layout, c10::kStrided);
  EXPECT_FALSE(wi.tensor_data->properties.pin_memory);

  EXPECT_EQ(plan.items[1].index, MetadataIndex("model.b", Shape{0}));
  EXPECT_EQ(plan.items[1].tensor_data->properties.dtype, at::kDouble);
  EXPECT_FALSE(plan.items[1].tensor_data->properties.requires_grad);

  for (int i : {2, 3}) {
    const WriteItem& shard = plan.items[i];
    const Shape offsets = {4 + 2 * (i - 2), 0};
    EXPECT_EQ(shard.index, MetadataIndex("sh", offsets));
    EXPECT_EQ(shard.type, WriteItemType::kShard);
    EXPECT_EQ(shard.tensor_data->chunk,
              (ChunkStorageMetadata{offsets, {2, 4}}));
    EXPECT_EQ(shard.tensor_data->size, (Shape{8, 4}));
  }

  // 0-d: an empty (but present) offset.
  EXPECT_EQ(plan.items[4].index, MetadataIndex("scalar", Shape{}));
  EXPECT_TRUE(plan.items[4].index.offset.has_value());
  EXPECT_EQ(plan.items[4].tensor_data->chunk, (ChunkStorageMetadata{{}, {}}));

  EXPECT_EQ(plan.items[5].index, MetadataIndex("step"));
  EXPECT_FALSE(plan.items[5].index.offset.has_value());
  EXPECT_EQ(plan.items[5].type, WriteItemType::kByteIo);
  EXPECT_FALSE(plan.items[5].tensor_data.has_value());
  EXPECT_EQ(plan.items[6].index, MetadataIndex("optim.param_groups.0.lr"));
  EXPECT_EQ(plan.items[6].type, WriteItemType::kByteIo);

  DCP_ASSERT_OK_AND_ASSIGN(auto mappings, DecodePlannerData(plan.planner_data));
  EXPECT_THAT(
      mappings,
      ElementsAre(Pair("model.b", ObjectPath{"model", "b"}),
                  Pair("model.w", ObjectPath{"model", "w"}),
                  Pair("optim.param_groups.0.lr",
                       ObjectPath{"optim", "param_groups", int64_t{0}, "lr"}),
                  Pair("scalar", ObjectPath{"scalar"}),
                  Pair("sh", ObjectPath{"sh"}),
                  Pair("step", ObjectPath{"step"})));
}

TEST(DefaultSavePlannerTest, PhasesBeforeSetUpAreFailedPrecondition) {
  DefaultSavePlanner planner;
  EXPECT_THAT(planner.CreateLocalPlan(),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(planner.ResolveData(WriteItem{}),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST(DefaultSavePlannerTest, DuplicatedFlattenKeyIsInvalidArgument) {
  StateDict sd{{"a.b", 1}, {"a", StateDict{{"b", 2}}}};
  DefaultSavePlanner planner;
  EXPECT_THAT(planner.SetUp(sd, nullptr, true),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("a.b")));
}

TEST(DefaultSavePlannerTest, BadShardsAreInvalidArgumentNamingTheKey) {
  struct Case {
    ShardedTensor sharded;
    std::string message;
  };
  std::vector<Case> cases;
  {
    ShardedTensor st{{8, 4}, {Shard{at::ones({2}), {0, 0}}}};
    cases.push_back({st, "does not have the rank 2 of the global size [8, 4]"});
  }
  {
    ShardedTensor st{{8, 4}, {Shard{at::ones({2, 4}), {0}}}};
    cases.push_back({st, "does not have the rank 2"});
  }
  {
    ShardedTensor st{{8, 4}, {Shard{at::ones({2, 4}), {7, 0}}}};
    cases.push_back(
        {st,
         "local shard 0 at offsets [7, 0] with sizes [2, 4] lies outside "
         "the global size [8, 4]"});
  }
  {
    ShardedTensor st{{8, 4}, {Shard{at::ones({2, 4}), {-1, 0}}}};
    cases.push_back({st, "lies outside the global size"});
  }
  {
    ShardedTensor st{{8, 4},
                     {Shard{at::ones({2, 4}), {0, 0}},
                      Shard{at::ones({2, 4}, at::kDouble), {2, 0}}}};
    cases.push_back(
        {st,
         "local shards have different dtypes: float32 (shard 0) and "
         "float64 (shard 1)"});
  }
  {
    ShardedTensor st{{8, -4}, {}};
    cases.push_back({st, "global size [8, -4] has a negative dimension"});
  }
  {
    ShardedTensor st{{8, 4}, {Shard{at::Tensor(), {0, 0}}}};
    cases.push_back({st, "local shard 0 is an undefined tensor"});
  }
  for (const Case& c : cases) {
    SCOPED_TRACE(c.message);
    StateDict sd{{"m", StateDict{{"w", c.sharded}}}};
    DefaultSavePlanner planner;
    DCP_ASSERT_OK(planner.SetUp(sd, nullptr, true));
    EXPECT_THAT(planner.CreateLocalPlan(),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr("\"m.w\""), HasSubstr(c.message))));
  }
}

TEST(DefaultSavePlannerTest, UndefinedTensorIsInvalidArgument) {
  StateDict sd{{"t", at::Tensor()}};
  DefaultSavePlanner planner;
  DCP_ASSERT_OK(planner.SetUp(sd, nullptr, true));
  EXPECT_THAT(planner.CreateLocalPlan(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("\"t\": value is an undefined tensor")));
}

TEST(DefaultSavePlannerTest, ShardedTensorWithoutLocalShardsHasNoItems) {
  StateDict sd{{"w", ShardedTensor{{8}, {}}}};
  DefaultSavePlanner planner;
  DCP_ASSERT_OK(planner.SetUp(sd, nullptr, true));
  DCP_ASSERT_OK_AND_ASSIGN(SavePlan plan, planner.CreateLocalPlan());
  EXPECT_THAT(plan.items, IsEmpty());
}

TEST(DefaultSavePlannerTest, WithoutFlatteningNestedValuesAreBytesItems) {
  StateDict sd{{"t", at::ones({2})},
               {"cfg", StateDict{{"lr", 0.1}, {"betas", List{0.9, 0.99}}}},
               {"lst", List{1, 2}}};
  DefaultSavePlannerOptions options;
  options.flatten_state_dict = false;
  DefaultSavePlanner planner(options);
  DCP_ASSERT_OK(planner.SetUp(sd, nullptr, true));
  DCP_ASSERT_OK_AND_ASSIGN(SavePlan plan, planner.CreateLocalPlan());
  EXPECT_THAT(Fqns(plan), ElementsAre("t", "cfg", "lst"));
  EXPECT_EQ(plan.items[1].type, WriteItemType::kByteIo);
  EXPECT_EQ(plan.items[2].type, WriteItemType::kByteIo);
  EXPECT_THAT(plan.planner_data, IsEmpty());
  DCP_ASSERT_OK_AND_ASSIGN(Value cfg, planner.ResolveData(plan.items[1]));
  EXPECT_TRUE(ValuesEqual(cfg, *sd.Find("cfg")));

  DCP_ASSERT_OK_AND_ASSIGN(GlobalSavePlan global,
                           planner.CreateGlobalPlan({plan}));
  EXPECT_THAT(global.metadata.planner_data, IsEmpty());
  EXPECT_TRUE(std::holds_alternative<BytesStorageMetadata>(
      global.metadata.state_dict_metadata.at("cfg")));
}

TEST(DefaultSavePlannerTest, WithoutFlatteningNestedTensorsAreRejected) {
  StateDict sd{{"model", StateDict{{"w", at::ones({2})}}}};
  DefaultSavePlannerOptions options;
  options.flatten_state_dict = false;
  DefaultSavePlanner planner(options);
  DCP_ASSERT_OK(planner.SetUp(sd, nullptr, true));
  EXPECT_THAT(planner.CreateLocalPlan(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("\"model\": a dict holding tensors")));
}

TEST(DefaultSavePlannerTest, TupleHoldingATensorIsRejected) {
  // A tuple is one leaf (as in PyTorch), saved as one pickled value, which
  // cannot hold a tensor.
  StateDict sd{{"pair", Tuple{{at::ones({2}), 1}}}};
  DefaultSavePlanner planner;
  DCP_ASSERT_OK(planner.SetUp(sd, nullptr, true));
  EXPECT_THAT(planner.CreateLocalPlan(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("\"pair\": a tuple holding tensors")));
}

// ---------------------------------------------------------------------------
// Dedup.

// Every rank holds the same replicated values; rank r also holds row shard r
// of "sh". Items are visited in order and go to the least-loaded rank.
TEST(DefaultSavePlannerTest, DedupBalancesReplicatedItemsAcrossFourRanks) {
  const at::Tensor full = MakeTestTensor({8, 4}, at::kFloat, 1);
  std::vector<StateDict> per_rank;
  for (int rank = 0; rank < 4; ++rank) {
    per_rank.push_back(StateDict{
        {"a", at::ones({100})},           // 400 bytes
        {"b", at::ones({50})},            // 200 bytes
        {"c", at::ones({50})},            // 200 bytes
        {"d", at::ones({10})},            // 40 bytes
        {"step", 3},                      // 1 byte
        {"sh", RowShard(full, rank, 4)},  // 32 bytes, held by one rank
        {"e", at::ones({60})},            // 240 bytes
    });
  }
  DCP_ASSERT_OK_AND_ASSIGN(GlobalSavePlan global,
                           PlanSave(per_rank, DefaultSavePlannerOptions{}));
  ASSERT_THAT(global.plans, SizeIs(4));
  // a -> r0 (all empty, lowest); b -> r1; c -> r2; d -> r3 (40);
  // step -> r3 (41); sh shards stay with their ranks (r0 432, r1 232,
  // r2 232, r3 73); e -> r3 (313).
  EXPECT_THAT(Fqns(global.plans[0]), ElementsAre("a", "sh"));
  EXPECT_THAT(Fqns(global.plans[1]), ElementsAre("b", "sh"));
  EXPECT_THAT(Fqns(global.plans[2]), ElementsAre("c", "sh"));
  EXPECT_THAT(Fqns(global.plans[3]), ElementsAre("d", "step", "sh", "e"));
  EXPECT_EQ(PlanBytes(global.plans[0]), 432);
  EXPECT_EQ(PlanBytes(global.plans[1]), 232);
  EXPECT_EQ(PlanBytes(global.plans[2]), 232);
  EXPECT_EQ(PlanBytes(global.plans[3]), 313);

  // Each replicated key is written exactly once.
  std::map<std::string, int> writers;
  for (const SavePlan& plan : global.plans) {
    for (const WriteItem& item : plan.items) {
      if (item.index.fqn != "sh") ++writers[item.index.fqn];
    }
  }
  EXPECT_THAT(writers,
              ElementsAre(Pair("a", 1), Pair("b", 1), Pair("c", 1),
                          Pair("d", 1), Pair("e", 1), Pair("step", 1)));
}

TEST(DefaultSavePlannerTest, DedupSpreadsEqualItemsEvenly) {
  std::vector<StateDict> per_rank(4);
  for (StateDict& sd : per_rank) {
    for (int i = 0; i < 12; ++i) sd.Set(absl::StrCat("t", i), at::ones({16}));
  }
  DCP_ASSERT_OK_AND_ASSIGN(GlobalSavePlan global,
                           PlanSave(per_rank, DefaultSavePlannerOptions{}));
  for (int rank = 0; rank < 4; ++rank) {
    SCOPED_TRACE(rank);
    EXPECT_THAT(global.plans[rank].items, SizeIs(3));
    EXPECT_EQ(PlanBytes(global.plans[rank]), 3 * 64);
  }
  // Round robin: t0 -> r0, t1 -> r1, ..., t4 -> r0.
  EXPECT_THAT(Fqns(global.plans[1]), ElementsAre("t1", "t5", "t9"));
}

TEST(DefaultSavePlannerTest, DedupToLowestRankKeepsEverythingOnRankZero) {
  const at::Tensor full = MakeTestTensor({8}, at::kFloat, 1);
  std::vector<StateDict> per_rank;
  for (int rank = 0; rank < 4; ++rank) {
    per_rank.push_back(StateDict{{"a", at::ones({100})},
                                 {"b", at::ones({50})},
                                 {"step", 3},
                                 {"sh", RowShard(full, rank, 4)}});
  }
  DefaultSavePlannerOptions options;
  options.dedup_save_to_lowest_rank = true;
  DCP_ASSERT_OK_AND_ASSIGN(GlobalSavePlan global, PlanSave(per_rank, options));
  EXPECT_THAT(Fqns(global.plans[0]), ElementsAre("a", "b", "step", "sh"));
  for (int rank = 1; rank < 4; ++rank) {
    EXPECT_THAT(Fqns(global.plans[rank]), ElementsAre("sh"));
  }
}

TEST(DefaultSavePlannerTest, ReplicatedShardsAreDeduplicated) {
  // 2 rows over 4 ranks: ranks 2 and 3 both hold an empty shard at [2].
  const at::Tensor full = MakeTestTensor({2}, at::kFloat, 1);
  std::vector<StateDict> per_rank;
  for (int rank = 0; rank < 4; ++rank) {
    per_rank.push_back(StateDict{{"sh", RowShard(full, rank, 4)}});
  }
  DCP_ASSERT_OK_AND_ASSIGN(GlobalSavePlan global,
                           PlanSave(per_rank, DefaultSavePlannerOptions{}));
  EXPECT_THAT(global.plans[2].items, SizeIs(1));
  EXPECT_THAT(global.plans[3].items, IsEmpty());
  EXPECT_THAT(TensorMd(global.metadata, "sh").chunks,
              ElementsAre(ChunkStorageMetadata{{0}, {1}},
                          ChunkStorageMetadata{{1}, {1}},
                          ChunkStorageMetadata{{2}, {0}}));
}

TEST(DedupSavePlansTest, IterationOrderIsFirstSeenAcrossPlans) {
  // Plan 1 introduces "y" before plan 0's "x" is seen again; "x" (4 bytes)
  // goes to rank 0, "y" (4 bytes) to rank 1 (less loaded), "z" to rank 0.
  auto item = [](const std::string& fqn) {
    WriteItem w;
    w.index = MetadataIndex(fqn, Shape{0});
    w.type = WriteItemType::kTensor;
    w.tensor_data = TensorWriteData{{{0}, {1}}, TensorProperties{}, {1}};
    return w;
  };
  std::vector<SavePlan> plans(2);
  plans[0].items = {item("x"), item("z")};
  plans[1].items = {item("y"), item("x"), item("z")};
  DCP_ASSERT_OK_AND_ASSIGN(
      std::vector<SavePlan> deduped,
      DedupSavePlans(plans, /*save_to_lowest_rank=*/false));
  EXPECT_THAT(Fqns(deduped[0]), ElementsAre("x"));
  EXPECT_THAT(Fqns(deduped[1]), ElementsAre("y", "z"));
}

// ---------------------------------------------------------------------------
// Global metadata.

TEST(DefaultSavePlannerTest, GlobalMetadataIsRankMajorWithRewrittenHints) {
  // Rank 1 holds two shards, listed out of offset order.
  std::vector<StateDict> per_rank = {
      StateDict{{"w", ShardedTensor{{8, 4}, {Shard{at::ones({2, 4}), {0, 0}}}}},
                {"step", 1},
                {"m", StateDict{{"b", at::ones({3})}}}},
      StateDict{{"w", ShardedTensor{{8, 4},
                                    {Shard{at::ones({2, 4}), {4, 0}},
                                     Shard{at::ones({2, 4}), {2, 0}}}}},
                {"step", 1},
                {"m", StateDict{{"b", at::ones({3})}}},
                {"only1", List{StateDict{{"x", 2}}}}},
      StateDict{{"w", ShardedTensor{{8, 4}, {Shard{at::ones({2, 4}), {6, 0}}}}},
                {"m", StateDict{{"b", at::ones({3})}}}},
  };
  DCP_ASSERT_OK_AND_ASSIGN(GlobalSavePlan global,
                           PlanSave(per_rank, DefaultSavePlannerOptions{}));
  const Metadata& md = global.metadata;
  const TensorStorageMetadata& w = TensorMd(md, "w");
  EXPECT_EQ(w.size, (Shape{8, 4}));
  EXPECT_EQ(w.properties.dtype, at::kFloat);
  EXPECT_THAT(w.chunks, ElementsAre(ChunkStorageMetadata{{0, 0}, {2, 4}},
                                    ChunkStorageMetadata{{4, 0}, {2, 4}},
                                    ChunkStorageMetadata{{2, 0}, {2, 4}},
                                    ChunkStorageMetadata{{6, 0}, {2, 4}}));
  // Every tensor item's hint is its chunk's position.
  for (const SavePlan& plan : global.plans) {
    for (const WriteItem& item : plan.items) {
      if (item.type == WriteItemType::kByteIo) {
        EXPECT_FALSE(item.index.index.has_value());
        continue;
      }
      const TensorStorageMetadata& t = TensorMd(md, item.index.fqn);
      ASSERT_TRUE(item.index.index.has_value()) << item;
      ASSERT_LT(*item.index.index, static_cast<int64_t>(t.chunks.size()));
      EXPECT_EQ(t.chunks[*item.index.index].offsets, *item.index.offset);
    }
  }
  EXPECT_EQ(global.plans[1].items[0].index.index, 1);
  EXPECT_EQ(global.plans[1].items[1].index.index, 2);

  EXPECT_TRUE(std::holds_alternative<BytesStorageMetadata>(
      md.state_dict_metadata.at("step")));
  EXPECT_THAT(TensorMd(md, "m.b").chunks,
              ElementsAre(ChunkStorageMetadata{{0}, {3}}));
  EXPECT_THAT(
      md.planner_data,
      ElementsAre(Pair("m.b", ObjectPath{"m", "b"}),
                  Pair("only1.0.x", ObjectPath{"only1", int64_t{0}, "x"}),
                  Pair("step", ObjectPath{"step"}),
                  Pair("w", ObjectPath{"w"})));
  EXPECT_THAT(md.storage_data, IsEmpty());
}

TEST(DefaultSavePlannerTest, PlannerDataTakesTheLowestRanksPath) {
  std::vector<SavePlan> plans(2);
  plans[0].planner_data = EncodePlannerData({{"a", {"a"}}});
  plans[1].planner_data =
      EncodePlannerData({{"a", {"x", "y"}}, {"b", {"b", int64_t{3}}}});
  DefaultSavePlanner planner;
  DCP_ASSERT_OK_AND_ASSIGN(GlobalSavePlan global,
                           planner.CreateGlobalPlan(plans));
  EXPECT_THAT(global.metadata.planner_data,
              ElementsAre(Pair("a", ObjectPath{"a"}),
                          Pair("b", ObjectPath{"b", int64_t{3}})));
}

TEST(DefaultSavePlannerTest, CorruptPlannerDataIsDataLossNamingTheRank) {
  std::vector<SavePlan> plans(2);
  plans[1].planner_data = "\x05garbage";
  DefaultSavePlanner planner;
  EXPECT_THAT(
      planner.CreateGlobalPlan(plans),
      StatusIs(absl::StatusCode::kDataLoss, HasSubstr("rank 1's save plan")));
}

// ---------------------------------------------------------------------------
// Conflicts and validation.

TEST(DefaultSavePlannerTest, TensorOnOneRankAndBytesOnAnotherIsAnError) {
  std::vector<StateDict> per_rank = {StateDict{{"x", at::ones({4})}},
                                     StateDict{{"x", 4}}};
  EXPECT_THAT(PlanSave(per_rank, DefaultSavePlannerOptions{}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("\"x\" is saved as a tensor of size [4] "
                                       "(float32) by rank 0 and as a "
                                       "non-tensor value by rank 1"))));
}

TEST(DefaultSavePlannerTest, ReplicasOfDifferentRankAreAnError) {
  std::vector<StateDict> per_rank = {StateDict{{"x", at::ones({4})}},
                                     StateDict{{"x", at::ones({4, 4})}}};
  EXPECT_THAT(PlanSave(per_rank, DefaultSavePlannerOptions{}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("\"x\" is saved as a tensor of size [4] "
                                 "(float32) by rank 0 and as a tensor of size "
                                 "[4, 4] (float32) by rank 1")));
}

TEST(DefaultSavePlannerTest, ReplicasOfDifferentSizeOrDtypeAreAnError) {
  std::vector<StateDict> sizes = {StateDict{{"x", at::ones({4})}},
                                  StateDict{{"x", at::ones({4})}},
                                  StateDict{{"x", at::ones({5})}}};
  EXPECT_THAT(PlanSave(sizes, DefaultSavePlannerOptions{}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("\"x\" is saved differently by ranks 0 and 2: "
                                 "tensor of size [4] (float32) vs tensor of "
                                 "size [5] (float32)")));
  std::vector<StateDict> dtypes = {StateDict{{"x", at::ones({4})}},
                                   StateDict{{"x", at::ones({4}, at::kHalf)}}};
  EXPECT_THAT(PlanSave(dtypes, DefaultSavePlannerOptions{}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("vs tensor of size [4] (float16)")));
}

TEST(DefaultSavePlannerTest, ShardedOnOneRankAndPlainOnAnotherIsAnError) {
  // Same index (offset [0, 0]): caught while deduplicating.
  std::vector<StateDict> same_index = {
      StateDict{{"w", at::ones({4, 4})}},
      StateDict{
          {"w", ShardedTensor{{4, 4}, {Shard{at::ones({2, 4}), {0, 0}}}}}}};
  EXPECT_THAT(PlanSave(same_index, DefaultSavePlannerOptions{}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("\"w\" is saved differently by ranks 0 and 1: "
                                 "tensor of size [4, 4] (float32) vs shard "
                                 "[0, 0]+[2, 4] of size [4, 4] (float32)")));
  // Different indices: caught while building the metadata.
  std::vector<StateDict> other_index = {
      StateDict{
          {"w", ShardedTensor{{4, 4}, {Shard{at::ones({2, 4}), {2, 0}}}}}},
      StateDict{{"w", at::ones({4, 4})}}};
  EXPECT_THAT(PlanSave(other_index, DefaultSavePlannerOptions{}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("\"w\" is saved as a shard [2, 0]+[2, 4] of "
                                 "size [4, 4] (float32) by rank 0 and as a "
                                 "tensor of size [4, 4] (float32) by rank 1")));
}

TEST(DefaultSavePlannerTest, ShardsDisagreeingOnGlobalSizeAreAnError) {
  std::vector<StateDict> per_rank = {
      StateDict{
          {"w", ShardedTensor{{4, 4}, {Shard{at::ones({2, 4}), {0, 0}}}}}},
      StateDict{
          {"w", ShardedTensor{{6, 4}, {Shard{at::ones({2, 4}), {2, 0}}}}}}};
  EXPECT_THAT(PlanSave(per_rank, DefaultSavePlannerOptions{}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("\"w\": shards disagree on the tensor: rank 0 "
                                 "saves global size [4, 4] (float32), rank 1 "
                                 "saves [6, 4] (float32)")));
}

TEST(DefaultSavePlannerTest, OverlappingAndMissingShardsFailValidation) {
  // "w": ranks 0 and 1 overlap on row 1; "v": rows [2, 4) are never saved.
  std::vector<StateDict> per_rank = {
      StateDict{{"w", ShardedTensor{{3, 4}, {Shard{at::ones({2, 4}), {0, 0}}}}},
                {"v", ShardedTensor{{4}, {Shard{at::ones({2}), {0}}}}}},
      StateDict{
          {"w", ShardedTensor{{3, 4}, {Shard{at::ones({2, 4}), {1, 0}}}}}}};
  EXPECT_THAT(
      PlanSave(per_rank, DefaultSavePlannerOptions{}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               "invalid global plan: \"v\": chunks cover 2 of 4 elements; "
               "\"w\": chunks [0, 0]+[2, 4] and [1, 0]+[2, 4] overlap; "
               "\"w\": chunks cover 16 of 12 elements"));
}

TEST(DefaultSavePlannerTest, OutOfBoundsChunkInAGatheredPlanFailsValidation) {
  // Local plans validate their shards, but plans arrive from other ranks.
  WriteItem item;
  item.index = MetadataIndex("w", Shape{2});
  item.type = WriteItemType::kShard;
  item.tensor_data = TensorWriteData{{{2}, {4}}, TensorProperties{}, {4}};
  WriteItem first = item;
  first.index = MetadataIndex("w", Shape{0});
  first.tensor_data->chunk = {{0}, {2}};
  std::vector<SavePlan> plans(2);
  plans[0].items = {first};
  plans[1].items = {item};
  DefaultSavePlanner planner;
  EXPECT_THAT(planner.CreateGlobalPlan(plans),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("invalid global plan: \"w\": chunk [2]+[4] is "
                                 "not inside size [4]")));
}

TEST(DefaultSavePlannerTest, TensorItemWithoutTensorDataIsAnError) {
  WriteItem item;
  item.index = MetadataIndex("w", Shape{0});
  item.type = WriteItemType::kTensor;
  std::vector<SavePlan> plans(1);
  plans[0].items = {item};
  DefaultSavePlanner planner;
  EXPECT_THAT(planner.CreateGlobalPlan(plans),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("\"w\": rank 0's tensor write item has no "
                                 "tensor data")));
}

// ---------------------------------------------------------------------------
// FinishPlan and ResolveData.

TEST(DefaultSavePlannerTest, FinishPlanReturnsThePlan) {
  DefaultSavePlanner planner;
  SavePlan plan;
  plan.storage_data = "prefix";
  plan.items.push_back(
      WriteItem{MetadataIndex("x"), WriteItemType::kByteIo, {}});
  DCP_ASSERT_OK_AND_ASSIGN(SavePlan finished, planner.FinishPlan(plan));
  EXPECT_EQ(finished, plan);
}

TEST(DefaultSavePlannerTest, ResolveDataReturnsTheCallersTensorsAndValues) {
  at::Tensor w = MakeTestTensor({2, 3}, at::kFloat, 1);
  at::Tensor s0 = MakeTestTensor({2, 4}, at::kFloat, 2);
  at::Tensor s1 = MakeTestTensor({2, 4}, at::kFloat, 3);
  StateDict other{{"sh", ShardedTensor{{8, 4},
                                       {Shard{at::ones({2, 4}), {0, 0}},
                                        Shard{at::ones({2, 4}), {4, 0}}}}}};
  StateDict sd{
      {"m", StateDict{{"w", w}}},
      {"sh", ShardedTensor{{8, 4}, {Shard{s0, {2, 0}}, Shard{s1, {6, 0}}}}},
      {"opt", StateDict{{"lr", 0.5}}}};
  // The state dicts outlive the planners' use (SavePlanner's contract).
  const std::vector<StateDict> per_rank = {other, sd};
  std::vector<std::unique_ptr<DefaultSavePlanner>> planners;
  DCP_ASSERT_OK_AND_ASSIGN(
      GlobalSavePlan global,
      PlanSave(per_rank, DefaultSavePlannerOptions{}, &planners));
  DefaultSavePlanner& planner = *planners[1];
  DCP_ASSERT_OK_AND_ASSIGN(SavePlan plan, planner.FinishPlan(global.plans[1]));
  ASSERT_THAT(plan.items, SizeIs(4));

  DCP_ASSERT_OK_AND_ASSIGN(Value wv, planner.ResolveData(plan.items[0]));
  ASSERT_TRUE(wv.is<at::Tensor>());
  EXPECT_TRUE(wv.get<at::Tensor>().is_same(w));

  // Hints are global chunk positions (2 and 3 here), not local positions:
  // the offset decides.
  EXPECT_EQ(plan.items[1].index.index, 2);
  EXPECT_EQ(plan.items[2].index.index, 3);
  DCP_ASSERT_OK_AND_ASSIGN(Value first, planner.ResolveData(plan.items[1]));
  EXPECT_TRUE(first.get<at::Tensor>().is_same(s0));
  DCP_ASSERT_OK_AND_ASSIGN(Value second, planner.ResolveData(plan.items[2]));
  EXPECT_TRUE(second.get<at::Tensor>().is_same(s1));
  EXPECT_THAT(second.get<at::Tensor>(), TensorEq(s1));
  // A hint that names the wrong local shard falls back to the offset.
  WriteItem misleading = plan.items[2];
  misleading.index.index = 0;
  DCP_ASSERT_OK_AND_ASSIGN(Value found, planner.ResolveData(misleading));
  EXPECT_TRUE(found.get<at::Tensor>().is_same(s1));
  // A correct local hint is used directly.
  misleading.index.index = 1;
  DCP_ASSERT_OK_AND_ASSIGN(found, planner.ResolveData(misleading));
  EXPECT_TRUE(found.get<at::Tensor>().is_same(s1));

  DCP_ASSERT_OK_AND_ASSIGN(Value lr, planner.ResolveData(plan.items[3]));
  EXPECT_TRUE(ValuesEqual(lr, Value(0.5)));
}

TEST(DefaultSavePlannerTest, ResolveDataErrors) {
  StateDict sd{{"w", at::ones({2, 2})},
               {"sh", ShardedTensor{{4}, {Shard{at::ones({2}), {2}}}}},
               {"step", 1}};
  DefaultSavePlanner planner;
  DCP_ASSERT_OK(planner.SetUp(sd, nullptr, true));

  EXPECT_THAT(planner.ResolveData(WriteItem{
                  MetadataIndex("nope", Shape{0}), WriteItemType::kTensor, {}}),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("\"nope\"")));
  EXPECT_THAT(planner.ResolveData(WriteItem{
                  MetadataIndex("w", Shape{1, 0}), WriteItemType::kTensor, {}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("\"w\" is not a sharded tensor; cannot find "
                                 "it by offset [1, 0]")));
  // A plain tensor may be found by zeros or no offset.
  DCP_EXPECT_OK(planner.ResolveData(
      WriteItem{MetadataIndex("w", Shape{0, 0}), WriteItemType::kTensor, {}}));
  DCP_EXPECT_OK(planner.ResolveData(
      WriteItem{MetadataIndex("w"), WriteItemType::kTensor, {}}));
  EXPECT_THAT(planner.ResolveData(WriteItem{
                  MetadataIndex("sh", Shape{0}, 0), WriteItemType::kShard, {}}),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("local shard of \"sh\" at offset [0]")));
  EXPECT_THAT(planner.ResolveData(
                  WriteItem{MetadataIndex("step"), WriteItemType::kTensor, {}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("\"step\" is a int")));
  EXPECT_THAT(planner.ResolveData(
                  WriteItem{MetadataIndex("w"), WriteItemType::kByteIo, {}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("\"w\" is a tensor")));
}

// ---------------------------------------------------------------------------
// planner_data encoding.

TEST(PlannerDataTest, RoundTrips) {
  const std::map<std::string, ObjectPath> mappings = {
      {"", {}},
      {"a.0.b", {"a", int64_t{0}, "b"}},
      {"neg", {"neg", int64_t{-5}}},
      {"z", {"z"}}};
  DCP_ASSERT_OK_AND_ASSIGN(auto decoded,
                           DecodePlannerData(EncodePlannerData(mappings)));
  EXPECT_EQ(decoded, mappings);
  DCP_ASSERT_OK_AND_ASSIGN(auto empty,
                           DecodePlannerData(EncodePlannerData({})));
  EXPECT_THAT(empty, IsEmpty());
}

TEST(PlannerDataTest, CorruptInputIsDataLoss) {
  const std::string good = EncodePlannerData({{"a", {"a"}}, {"b", {"b"}}});
  EXPECT_THAT(DecodePlannerData(good + "x"),
              StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(DecodePlannerData(good.substr(0, good.size() - 1)),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("decoding planner_data entry 1")));
  EXPECT_THAT(DecodePlannerData(""), StatusIs(absl::StatusCode::kDataLoss));
  // Keys out of order: {"b": ("b",)} before {"a": ("a",)}.
  const std::string swapped(
      "\x02\x01"
      "b\x01\x00\x01"
      "b\x01"
      "a\x01\x00\x01"
      "a",
      13);
  EXPECT_THAT(DecodePlannerData(swapped),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("not strictly increasing")));
  // Unknown element tag.
  std::string bad_tag = good;
  bad_tag[4] = 7;
  EXPECT_THAT(DecodePlannerData(bad_tag), StatusIs(absl::StatusCode::kDataLoss,
                                                   HasSubstr("unknown tag 7")));
}

}  // namespace
}  // namespace dcp
