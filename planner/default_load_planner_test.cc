#include "planner/default_load_planner.h"

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>
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
#include "planner/default_save_planner.h"
#include "planner/load_plan.h"
#include "planner/lockstep.h"
#include "planner/planner.h"
#include "planner/save_plan.h"
#include "testing/status_matchers.h"
#include "testing/tensor_matchers.h"

namespace dcp {
namespace {

using ::dcp::test::IsOk;
using ::dcp::test::MakeTestTensor;
using ::dcp::test::StateDictEq;
using ::dcp::test::StatusIs;
using ::dcp::test::TensorEq;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

// ---------------------------------------------------------------------------
// An in-memory stand-in for storage, so that plans can be executed: the
// save side records every item's data under its index, the load side copies
// boxes like a storage reader would.

struct MemoryCheckpoint {
  Metadata metadata;
  // Keyed by (fqn, chunk offsets) for tensors and (fqn) for bytes values.
  std::map<MetadataIndex, Value> data;
};

absl::StatusOr<MemoryCheckpoint> Save(const std::vector<StateDict>& per_rank,
                                      DefaultSavePlannerOptions options = {}) {
  std::vector<std::unique_ptr<DefaultSavePlanner>> owned;
  std::vector<SavePlanner*> planners;
  std::vector<const StateDict*> state_dicts;
  for (const StateDict& sd : per_rank) {
    owned.push_back(std::make_unique<DefaultSavePlanner>(options));
    planners.push_back(owned.back().get());
    state_dicts.push_back(&sd);
  }
  absl::StatusOr<GlobalSavePlan> global =
      PlanSaveWithPlanners(planners, state_dicts);
  if (!global.ok()) return global.status();
  MemoryCheckpoint checkpoint;
  checkpoint.metadata = global->metadata;
  for (size_t rank = 0; rank < per_rank.size(); ++rank) {
    for (const WriteItem& item : global->plans[rank].items) {
      absl::StatusOr<Value> value = planners[rank]->ResolveData(item);
      if (!value.ok()) return value.status();
      if (const at::Tensor* tensor = value->get_if<at::Tensor>()) {
        *value = Value(tensor->clone());
      }
      checkpoint.data[item.index] = *std::move(value);
    }
  }
  return checkpoint;
}

// Plans a load for every rank and executes the plans into `destinations`.
absl::Status Load(const MemoryCheckpoint& checkpoint,
                  const std::vector<StateDict*>& destinations,
                  DefaultLoadPlannerOptions options = {}) {
  std::vector<std::unique_ptr<DefaultLoadPlanner>> owned;
  std::vector<LoadPlanner*> planners;
  for (size_t rank = 0; rank < destinations.size(); ++rank) {
    owned.push_back(std::make_unique<DefaultLoadPlanner>(options));
    planners.push_back(owned.back().get());
  }
  absl::StatusOr<std::vector<LoadPlan>> plans =
      PlanLoadWithPlanners(checkpoint.metadata, planners, destinations);
  if (!plans.ok()) return plans.status();
  for (size_t rank = 0; rank < destinations.size(); ++rank) {
    for (const ReadItem& item : (*plans)[rank].items) {
      if (item.type == LoadItemType::kByteIo) {
        absl::Status status = planners[rank]->LoadBytes(
            item, checkpoint.data.at(item.storage_index));
        if (!status.ok()) return status;
        continue;
      }
      at::Tensor source =
          checkpoint.data.at(item.storage_index).get<at::Tensor>();
      for (size_t d = 0; d < item.lengths.size(); ++d) {
        source = source.narrow(d, item.storage_offsets[d], item.lengths[d]);
      }
      absl::StatusOr<at::Tensor> dest = planners[rank]->ResolveTensor(item);
      if (!dest.ok()) return dest.status();
      dest->copy_(source);
      absl::Status status = planners[rank]->CommitTensor(item, *dest);
      if (!status.ok()) return status;
    }
  }
  return absl::OkStatus();
}

std::vector<StateDict*> Pointers(std::vector<StateDict>& state_dicts) {
  std::vector<StateDict*> pointers;
  for (StateDict& sd : state_dicts) pointers.push_back(&sd);
  return pointers;
}

// Checks that the tensor items of `plan` (one rank's) read every element of
// the destination `fqn` exactly once, from inside saved chunks, at the same
// global position.
void ExpectExactCover(const Metadata& md, const std::string& fqn,
                      const Value& destination, const LoadPlan& plan) {
  SCOPED_TRACE(fqn);
  const auto& saved =
      std::get<TensorStorageMetadata>(md.state_dict_metadata.at(fqn));
  // Local boxes: (offsets, count tensor).
  std::vector<std::pair<Shape, at::Tensor>> counts;
  if (const at::Tensor* tensor = destination.get_if<at::Tensor>()) {
    counts.emplace_back(Shape(tensor->dim(), 0),
                        at::zeros(tensor->sizes(), at::kInt));
  } else {
    for (const Shard& shard : destination.get<ShardedTensor>().local_shards) {
      counts.emplace_back(shard.offsets,
                          at::zeros(shard.tensor.sizes(), at::kInt));
    }
  }
  for (const ReadItem& item : plan.items) {
    if (item.type != LoadItemType::kTensor || item.dest_index.fqn != fqn) {
      continue;
    }
    SCOPED_TRACE(::testing::PrintToString(item));
    ASSERT_TRUE(item.dest_index.index.has_value());
    ASSERT_LT(*item.dest_index.index, static_cast<int64_t>(counts.size()));
    auto& [local_offsets, count] = counts[*item.dest_index.index];
    ASSERT_EQ(*item.dest_index.offset, local_offsets);
    ASSERT_TRUE(item.storage_index.index.has_value());
    const ChunkStorageMetadata& chunk =
        saved.chunks.at(*item.storage_index.index);
    ASSERT_EQ(*item.storage_index.offset, chunk.offsets);
    at::Tensor box = count;
    for (size_t d = 0; d < item.lengths.size(); ++d) {
      EXPECT_GT(item.lengths[d], 0);
      EXPECT_LE(item.storage_offsets[d] + item.lengths[d], chunk.sizes[d]);
      EXPECT_EQ(local_offsets[d] + item.dest_offsets[d],
                chunk.offsets[d] + item.storage_offsets[d]);
      box = box.narrow(d, item.dest_offsets[d], item.lengths[d]);
    }
    box.add_(1);
  }
  for (const auto& [offsets, count] : counts) {
    EXPECT_THAT(count, TensorEq(at::ones(count.sizes(), at::kInt)))
        << "destination box at " << ::testing::PrintToString(offsets);
  }
}

std::vector<StateDict> RowShardedModel(const at::Tensor& full, int world) {
  std::vector<StateDict> per_rank;
  for (int rank = 0; rank < world; ++rank) {
    absl::StatusOr<ShardedTensor> sharded = ShardAlongDim(full, 0, rank, world);
    DCP_EXPECT_OK(sharded.status());
    per_rank.push_back(
        StateDict{{"model", StateDict{{"w", *sharded}}}, {"step", 5}});
  }
  return per_rank;
}

at::Tensor Unshard(const std::vector<StateDict>& per_rank) {
  std::vector<ShardedTensor> shards;
  for (const StateDict& sd : per_rank) {
    shards.push_back(
        sd.Find("model")->get<StateDict>().Find("w")->get<ShardedTensor>());
  }
  absl::StatusOr<at::Tensor> full = dcp::Unshard(shards);
  DCP_EXPECT_OK(full.status());
  return full.ok() ? *full : at::Tensor();
}

ReadItem TensorItem(const std::string& fqn, Shape dest_chunk, int64_t li,
                    Shape dest_offsets, Shape storage_chunk, int64_t si,
                    Shape storage_offsets, Shape lengths) {
  ReadItem item;
  item.dest_index = MetadataIndex(fqn, std::move(dest_chunk), li);
  item.dest_offsets = std::move(dest_offsets);
  item.storage_index = MetadataIndex(fqn, std::move(storage_chunk), si);
  item.storage_offsets = std::move(storage_offsets);
  item.lengths = std::move(lengths);
  return item;
}

// ---------------------------------------------------------------------------
// Resharding.

TEST(DefaultLoadPlannerTest, ReshardsFourRowShardsIntoThreeRowShards) {
  const at::Tensor full = MakeTestTensor({10, 4}, at::kFloat, 7);
  DCP_ASSERT_OK_AND_ASSIGN(MemoryCheckpoint checkpoint,
                           Save(RowShardedModel(full, 4)));
  // Saved rows: [0, 3), [3, 6), [6, 9), [9, 10).
  std::vector<StateDict> dests;
  for (int rank = 0; rank < 3; ++rank) {
    DCP_ASSERT_OK_AND_ASSIGN(
        ShardedTensor zeros,
        ZerosShardAlongDim({10, 4}, at::kFloat, 0, rank, 3));
    dests.push_back(StateDict{{"model", StateDict{{"w", zeros}}}, {"step", 0}});
  }
  DCP_ASSERT_OK_AND_ASSIGN(
      std::vector<LoadPlan> plans,
      PlanLoadForRanks(checkpoint.metadata, Pointers(dests)));
  ASSERT_THAT(plans, SizeIs(3));
  // Rank 1 holds rows [4, 8).
  EXPECT_THAT(
      plans[1].items,
      ElementsAre(
          TensorItem("model.w", {4, 0}, 0, {0, 0}, {3, 0}, 1, {1, 0}, {2, 4}),
          TensorItem("model.w", {4, 0}, 0, {2, 0}, {6, 0}, 2, {0, 0}, {2, 4}),
          ::testing::Field(&ReadItem::type, LoadItemType::kByteIo)));
  for (int rank = 0; rank < 3; ++rank) {
    SCOPED_TRACE(rank);
    ExpectExactCover(checkpoint.metadata, "model.w",
                     *dests[rank].Find("model")->get<StateDict>().Find("w"),
                     plans[rank]);
  }

  DCP_ASSERT_OK(Load(checkpoint, Pointers(dests)));
  EXPECT_THAT(Unshard(dests), TensorEq(full));
  for (const StateDict& sd : dests) {
    EXPECT_TRUE(ValuesEqual(*sd.Find("step"), Value(5)));
  }
}

TEST(DefaultLoadPlannerTest, ReshardsRowShardsIntoTwoByTwoGrid) {
  const at::Tensor full = MakeTestTensor({10, 4}, at::kFloat, 8);
  DCP_ASSERT_OK_AND_ASSIGN(MemoryCheckpoint checkpoint,
                           Save(RowShardedModel(full, 4)));
  std::vector<StateDict> dests;
  for (int rank = 0; rank < 4; ++rank) {
    DCP_ASSERT_OK_AND_ASSIGN(ShardedTensor zeros,
                             ZerosShardGrid2D({10, 4}, at::kFloat, rank, 2, 2));
    dests.push_back(StateDict{{"model", StateDict{{"w", zeros}}}});
  }
  DCP_ASSERT_OK_AND_ASSIGN(
      std::vector<LoadPlan> plans,
      PlanLoadForRanks(checkpoint.metadata, Pointers(dests)));
  for (int rank = 0; rank < 4; ++rank) {
    SCOPED_TRACE(rank);
    ExpectExactCover(checkpoint.metadata, "model.w",
                     *dests[rank].Find("model")->get<StateDict>().Find("w"),
                     plans[rank]);
  }
  // Rank 3 holds rows [5, 10), columns [2, 4): three saved chunks.
  EXPECT_THAT(plans[3].items, SizeIs(3));

  DCP_ASSERT_OK(Load(checkpoint, Pointers(dests)));
  EXPECT_THAT(Unshard(dests), TensorEq(full));
}

TEST(DefaultLoadPlannerTest, ShardedCheckpointLoadsIntoPlainTensors) {
  const at::Tensor full = MakeTestTensor({10, 4}, at::kFloat, 9);
  DCP_ASSERT_OK_AND_ASSIGN(MemoryCheckpoint checkpoint,
                           Save(RowShardedModel(full, 4)));
  std::vector<StateDict> dests(2, StateDict{});
  for (StateDict& sd : dests) {
    sd.Set("model", StateDict{{"w", at::zeros({10, 4})}});
  }
  DCP_ASSERT_OK(Load(checkpoint, Pointers(dests)));
  for (const StateDict& sd : dests) {
    EXPECT_THAT(sd.Find("model")->get<StateDict>().Find("w")->get<at::Tensor>(),
                TensorEq(full));
  }
}

TEST(DefaultLoadPlannerTest, ZeroDimensionalTensorsLoad) {
  DCP_ASSERT_OK_AND_ASSIGN(
      MemoryCheckpoint checkpoint,
      Save({StateDict{{"s", at::scalar_tensor(4.5, at::kDouble)}}}));
  StateDict dest{{"s", at::scalar_tensor(0.0, at::kDouble)}};
  DCP_ASSERT_OK_AND_ASSIGN(std::vector<LoadPlan> plans,
                           PlanLoadForRanks(checkpoint.metadata, {&dest}));
  EXPECT_THAT(plans[0].items,
              ElementsAre(TensorItem("s", {}, 0, {}, {}, 0, {}, {})));
  DCP_ASSERT_OK(Load(checkpoint, {&dest}));
  EXPECT_THAT(dest.Find("s")->get<at::Tensor>(),
              TensorEq(at::scalar_tensor(4.5, at::kDouble)));
}

// ---------------------------------------------------------------------------
// Keys.

Metadata TensorMetadata(std::vector<std::string> fqns, Shape size = {4}) {
  Metadata md;
  for (const std::string& fqn : fqns) {
    TensorStorageMetadata t;
    t.size = size;
    t.chunks = {ChunkStorageMetadata{Shape(size.size(), 0), size}};
    md.state_dict_metadata[fqn] = t;
  }
  return md;
}

TEST(DefaultLoadPlannerTest, MissingKeysAreAllListed) {
  const Metadata md = TensorMetadata({"w"});
  StateDict dest{
      {"a", StateDict{{"b", at::zeros({4})}}}, {"w", at::zeros({4})}, {"c", 3}};
  EXPECT_THAT(PlanLoadForRanks(md, {&dest}),
              StatusIs(absl::StatusCode::kNotFound,
                       "rank 0: keys missing from checkpoint: \"a.b\", \"c\""));
}

TEST(DefaultLoadPlannerTest, AllowPartialLoadSkipsMissingKeys) {
  DCP_ASSERT_OK_AND_ASSIGN(MemoryCheckpoint checkpoint,
                           Save({StateDict{{"w", at::ones({4})}}}));
  StateDict dest{
      {"a", StateDict{{"b", at::zeros({4})}}}, {"w", at::zeros({4})}, {"c", 3}};
  DefaultLoadPlannerOptions options;
  options.allow_partial_load = true;
  DCP_ASSERT_OK(Load(checkpoint, {&dest}, options));
  EXPECT_THAT(dest,
              StateDictEq(StateDict{{"a", StateDict{{"b", at::zeros({4})}}},
                                    {"w", at::ones({4})},
                                    {"c", 3}}));
}

TEST(DefaultLoadPlannerTest, UnrequestedCheckpointKeysAreIgnoredUnlessStrict) {
  const Metadata md = TensorMetadata({"w", "extra2", "extra1"});
  StateDict dest{{"w", at::zeros({4})}};
  DCP_EXPECT_OK(PlanLoadForRanks(md, {&dest}).status());

  DefaultLoadPlannerOptions strict;
  strict.strict = true;
  EXPECT_THAT(PlanLoadForRanks(md, {&dest}, strict),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "rank 0: unexpected keys in checkpoint: \"extra1\", "
                       "\"extra2\""));

  StateDict with_missing{{"w", at::zeros({4})}, {"m", at::zeros({4})}};
  EXPECT_THAT(
      PlanLoadForRanks(md, {&with_missing}, strict),
      StatusIs(absl::StatusCode::kNotFound,
               "rank 0: keys missing from checkpoint: \"m\"; "
               "unexpected keys in checkpoint: \"extra1\", \"extra2\""));

  // allow_partial_load and strict: missing keys are fine, unexpected not.
  strict.allow_partial_load = true;
  EXPECT_THAT(PlanLoadForRanks(md, {&with_missing}, strict),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "rank 0: unexpected keys in checkpoint: \"extra1\", "
                       "\"extra2\""));
}

// ---------------------------------------------------------------------------
// Mismatches.

TEST(DefaultLoadPlannerTest, SizeMismatchIsInvalidArgument) {
  const Metadata md = TensorMetadata({"k"}, {4, 4});
  StateDict plain{{"k", at::zeros({4, 5})}};
  EXPECT_THAT(PlanLoadForRanks(md, {&plain}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("size mismatch for \"k\": saved [4, 4], "
                                 "destination [4, 5]")));
  StateDict sharded{
      {"k", ShardedTensor{{8, 4}, {Shard{at::zeros({4, 4}), {0, 0}}}}}};
  EXPECT_THAT(PlanLoadForRanks(md, {&sharded}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("size mismatch for \"k\": saved [4, 4], "
                                 "destination [8, 4]")));
}

TEST(DefaultLoadPlannerTest, BadDestinationShardsAreInvalidArgument) {
  const Metadata md = TensorMetadata({"k"}, {4, 4});
  StateDict outside{
      {"k", ShardedTensor{{4, 4}, {Shard{at::zeros({2, 4}), {3, 0}}}}}};
  EXPECT_THAT(PlanLoadForRanks(md, {&outside}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("destination \"k\": local shard 0 at offsets "
                                 "[3, 0] with sizes [2, 4] does not fit the "
                                 "global size [4, 4]")));
  StateDict undefined{{"k", at::Tensor()}};
  EXPECT_THAT(PlanLoadForRanks(md, {&undefined}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("undefined tensor")));
}

TEST(DefaultLoadPlannerTest, TensorSavedForNonTensorDestinationIsAnError) {
  const Metadata md = TensorMetadata({"k"});
  StateDict dest{{"k", "text"}};
  EXPECT_THAT(PlanLoadForRanks(md, {&dest}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("invalid checkpoint metadata for \"k\": saved "
                                 "as a tensor of size [4] but the destination "
                                 "is a str (expected BytesStorageMetadata)")));
}

TEST(DefaultLoadPlannerTest, BytesSavedForTensorDestinationReplacesTheTensor) {
  // Python loads the saved object in place of the tensor; so does dcp.
  DCP_ASSERT_OK_AND_ASSIGN(MemoryCheckpoint checkpoint,
                           Save({StateDict{{"m", StateDict{{"k", 42}}}}}));
  StateDict dest{{"m", StateDict{{"k", at::zeros({4})}}}};
  DCP_ASSERT_OK_AND_ASSIGN(std::vector<LoadPlan> plans,
                           PlanLoadForRanks(checkpoint.metadata, {&dest}));
  ASSERT_THAT(plans[0].items, SizeIs(1));
  const ReadItem& item = plans[0].items[0];
  EXPECT_EQ(item.type, LoadItemType::kByteIo);
  EXPECT_EQ(item.dest_index, MetadataIndex("m.k"));
  EXPECT_EQ(item.storage_index, MetadataIndex("m.k"));
  EXPECT_EQ(item.dest_offsets, Shape{0});
  EXPECT_EQ(item.storage_offsets, Shape{0});
  EXPECT_EQ(item.lengths, Shape{0});
  DCP_ASSERT_OK(Load(checkpoint, {&dest}));
  EXPECT_THAT(dest, StateDictEq(StateDict{{"m", StateDict{{"k", 42}}}}));
}

TEST(DefaultLoadPlannerTest, DtypeMismatchCastsUnlessCheckDtype) {
  const at::Tensor saved = MakeTestTensor({6}, at::kFloat, 3);
  DCP_ASSERT_OK_AND_ASSIGN(MemoryCheckpoint checkpoint,
                           Save({StateDict{{"k", saved}}}));
  StateDict dest{{"k", at::zeros({6}, at::kDouble)}};
  DCP_ASSERT_OK(Load(checkpoint, {&dest}));
  EXPECT_THAT(dest.Find("k")->get<at::Tensor>(),
              TensorEq(saved.to(at::kDouble)));

  DefaultLoadPlannerOptions options;
  options.check_dtype = true;
  EXPECT_THAT(PlanLoadForRanks(checkpoint.metadata, {&dest}, options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("dtype mismatch for \"k\": saved float32, "
                                 "destination float64")));
  StateDict same{{"k", at::zeros({6})}};
  DCP_EXPECT_OK(
      PlanLoadForRanks(checkpoint.metadata, {&same}, options).status());
}

TEST(DefaultLoadPlannerTest, IncompleteCheckpointIsDataLoss) {
  // Rows [2, 4) of "w" were never saved (a corrupt or hand-made checkpoint).
  Metadata md;
  TensorStorageMetadata w;
  w.size = {4, 2};
  w.chunks = {ChunkStorageMetadata{{0, 0}, {2, 2}}};
  md.state_dict_metadata["w"] = w;
  StateDict dest{{"w", at::zeros({4, 2})}};
  EXPECT_THAT(PlanLoadForRanks(md, {&dest}),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("checkpoint holds 4 of the 8 elements of "
                                 "\"w\" chunk [0, 0]+[4, 2]; the "
                                 "checkpoint's chunks of \"w\": [0, 0]+[2, "
                                 "2]")));
  // A destination shard inside the saved part is fine.
  StateDict part{
      {"w", ShardedTensor{{4, 2}, {Shard{at::zeros({2, 2}), {0, 0}}}}}};
  DCP_EXPECT_OK(PlanLoadForRanks(md, {&part}).status());
}

// ---------------------------------------------------------------------------
// ResolveTensor, LoadBytes.

TEST(DefaultLoadPlannerTest, ResolveTensorReturnsAViewIntoTheCallersTensor) {
  at::Tensor plain = at::zeros({4, 4});
  at::Tensor s0 = at::zeros({2, 4});
  at::Tensor s1 = at::zeros({2, 4});
  StateDict dest{
      {"m", StateDict{{"p", plain}}},
      {"sh", ShardedTensor{{8, 4}, {Shard{s0, {0, 0}}, Shard{s1, {4, 0}}}}}};
  Metadata md = TensorMetadata({"m.p"}, {4, 4});
  TensorStorageMetadata sh;
  sh.size = {8, 4};
  sh.chunks = {ChunkStorageMetadata{{0, 0}, {8, 4}}};
  md.state_dict_metadata["sh"] = sh;
  DefaultLoadPlanner planner;
  DCP_ASSERT_OK(planner.SetUp(&dest, md, true));
  DCP_ASSERT_OK_AND_ASSIGN(LoadPlan plan, planner.CreateLocalPlan());
  ASSERT_THAT(plan.items, SizeIs(3));

  ReadItem box = plan.items[0];
  box.dest_offsets = {1, 2};
  box.lengths = {2, 1};
  DCP_ASSERT_OK_AND_ASSIGN(at::Tensor view, planner.ResolveTensor(box));
  EXPECT_THAT(view.sizes().vec(), ElementsAre(2, 1));
  view.fill_(3);
  at::Tensor expected = at::zeros({4, 4});
  expected.narrow(0, 1, 2).narrow(1, 2, 1).fill_(3);
  EXPECT_THAT(plain, TensorEq(expected));

  // The second local shard, found by its hint and, with a wrong hint, by
  // its offset.
  EXPECT_EQ(plan.items[2].dest_index, MetadataIndex("sh", Shape{4, 0}));
  DCP_ASSERT_OK_AND_ASSIGN(at::Tensor shard_view,
                           planner.ResolveTensor(plan.items[2]));
  shard_view.fill_(1);
  EXPECT_THAT(s1, TensorEq(at::ones({2, 4})));
  EXPECT_THAT(s0, TensorEq(at::zeros({2, 4})));
  ReadItem misleading = plan.items[2];
  misleading.dest_index.index = 0;
  DCP_ASSERT_OK_AND_ASSIGN(shard_view, planner.ResolveTensor(misleading));
  shard_view.fill_(2);
  EXPECT_THAT(s1, TensorEq(at::full({2, 4}, 2.0)));
  DCP_EXPECT_OK(planner.CommitTensor(misleading, shard_view));
}

TEST(DefaultLoadPlannerTest, ResolveTensorErrors) {
  StateDict dest{{"p", at::zeros({4, 4})},
                 {"sh", ShardedTensor{{8}, {Shard{at::zeros({4}), {4}}}}},
                 {"n", 1}};
  DefaultLoadPlanner planner;
  EXPECT_THAT(planner.ResolveTensor(ReadItem{}),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  DCP_ASSERT_OK(planner.SetUp(&dest, Metadata{}, true));
  EXPECT_THAT(
      planner.ResolveTensor(TensorItem("nope", {0}, 0, {0}, {0}, 0, {0}, {1})),
      StatusIs(absl::StatusCode::kNotFound, HasSubstr("\"nope\"")));
  EXPECT_THAT(planner.ResolveTensor(TensorItem("p", {1, 0}, 0, {0, 0}, {0, 0},
                                               0, {0, 0}, {1, 1})),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("\"p\" is not a sharded tensor")));
  EXPECT_THAT(planner.ResolveTensor(TensorItem("p", {0, 0}, 0, {3, 0}, {0, 0},
                                               0, {0, 0}, {2, 4})),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("read item for \"p\": box [3, 0]+[2, 4] does "
                                 "not fit the destination of size [4, 4]")));
  EXPECT_THAT(
      planner.ResolveTensor(
          TensorItem("p", {0, 0}, 0, {0}, {0, 0}, 0, {0, 0}, {2})),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not fit")));
  EXPECT_THAT(
      planner.ResolveTensor(TensorItem("sh", {0}, 0, {0}, {0}, 0, {0}, {1})),
      StatusIs(absl::StatusCode::kNotFound,
               HasSubstr("local shard of \"sh\" at offset [0]")));
  EXPECT_THAT(
      planner.ResolveTensor(TensorItem("n", {0}, 0, {0}, {0}, 0, {0}, {1})),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("\"n\" is a int, not a tensor")));
}

TEST(DefaultLoadPlannerTest, LoadBytesRestoresNestedValues) {
  StateDict saved{
      {"model", StateDict{{"w", at::ones({2})}}},
      {"optim",
       StateDict{{"param_groups",
                  List{StateDict{{"lr", 0.1}, {"params", List{0, 1}}}}}}}};
  DCP_ASSERT_OK_AND_ASSIGN(MemoryCheckpoint checkpoint, Save({saved}));
  EXPECT_TRUE(
      checkpoint.metadata.state_dict_metadata.count("optim.param_groups.0.lr"));
  StateDict dest{
      {"model", StateDict{{"w", at::zeros({2})}}},
      {"optim",
       StateDict{{"param_groups",
                  List{StateDict{{"lr", 0.0}, {"params", List{7}}}}}}}};
  DCP_ASSERT_OK(Load(checkpoint, {&dest}));
  EXPECT_THAT(dest, StateDictEq(saved));
}

TEST(DefaultLoadPlannerTest, LoadBytesWithoutFlatteningSetsTopLevelKeys) {
  DefaultSavePlannerOptions save_options;
  save_options.flatten_state_dict = false;
  StateDict saved{{"cfg", StateDict{{"lr", 0.5}}}, {"t", at::ones({3})}};
  DCP_ASSERT_OK_AND_ASSIGN(MemoryCheckpoint checkpoint,
                           Save({saved}, save_options));
  DefaultLoadPlannerOptions load_options;
  load_options.flatten_state_dict = false;
  StateDict dest{{"cfg", StateDict{{"lr", 0.0}, {"extra", 1}}},
                 {"t", at::zeros({3})}};
  DCP_ASSERT_OK(Load(checkpoint, {&dest}, load_options));
  EXPECT_THAT(dest, StateDictEq(saved));
}

TEST(DefaultLoadPlannerTest, LoadBytesErrors) {
  StateDict dest{{"a", 1}};
  DefaultLoadPlanner planner;
  ReadItem item;
  item.type = LoadItemType::kByteIo;
  item.dest_index = MetadataIndex("zzz");
  EXPECT_THAT(planner.LoadBytes(item, Value(1)),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  DCP_ASSERT_OK(planner.SetUp(&dest, Metadata{}, true));
  EXPECT_THAT(planner.LoadBytes(item, Value(1)),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("\"zzz\"")));
  EXPECT_THAT(planner.SetUp(nullptr, Metadata{}, true),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

// PyTorch <= 2.3 saved dicts and lists without tensors as one bytes value
// (here "optim.param_groups"); Python 2.6 re-flattens the destination the
// old way to load them.
TEST(DefaultLoadPlannerTest, LegacyCheckpointLoadsWholeContainers) {
  const List param_groups{StateDict{{"lr", 0.1}, {"params", List{0}}}};
  MemoryCheckpoint checkpoint;
  checkpoint.metadata =
      TensorMetadata({"model.w", "optim.state.0.exp_avg"}, {2});
  checkpoint.metadata.state_dict_metadata["optim.state.0.step"] =
      BytesStorageMetadata{};
  checkpoint.metadata.state_dict_metadata["optim.param_groups"] =
      BytesStorageMetadata{};
  checkpoint.data[MetadataIndex("model.w", Shape{0})] = at::ones({2});
  checkpoint.data[MetadataIndex("optim.state.0.exp_avg", Shape{0})] =
      at::full({2}, 2.0);
  checkpoint.data[MetadataIndex("optim.state.0.step")] = 3;
  checkpoint.data[MetadataIndex("optim.param_groups")] = param_groups;

  StateDict dest{
      {"model", StateDict{{"w", at::zeros({2})}}},
      {"optim",
       StateDict{
           {"state", StateDict{{"0", StateDict{{"exp_avg", at::zeros({2})},
                                               {"step", 0}}}}},
           {"param_groups",
            List{StateDict{{"lr", 0.0}, {"params", List{5, 6}}}}}}}};
  DefaultLoadPlanner planner;
  DCP_ASSERT_OK(planner.SetUp(&dest, checkpoint.metadata, true));
  DCP_ASSERT_OK_AND_ASSIGN(LoadPlan plan, planner.CreateLocalPlan());
  std::vector<std::string> fqns;
  for (const ReadItem& item : plan.items) fqns.push_back(item.dest_index.fqn);
  EXPECT_THAT(fqns, ElementsAre("model.w", "optim.state.0.exp_avg",
                                "optim.state.0.step", "optim.param_groups"));

  DCP_ASSERT_OK(Load(checkpoint, {&dest}));
  EXPECT_THAT(
      dest,
      StateDictEq(StateDict{
          {"model", StateDict{{"w", at::ones({2})}}},
          {"optim",
           StateDict{{"state",
                      StateDict{{"0", StateDict{{"exp_avg", at::full({2}, 2.0)},
                                                {"step", 3}}}}},
                     {"param_groups", param_groups}}}}));
}

// SetUpShared plans exactly as SetUp, keeping a share of the Metadata
// instead of a copy.
TEST(DefaultLoadPlannerTest, SetUpSharedPlansAsSetUpWithoutACopy) {
  auto md =
      std::make_shared<const Metadata>(TensorMetadata({"a", "b", "c"}, {6}));
  StateDict dest{{"a", at::zeros({6})}, {"c", at::zeros({6})}};
  DefaultLoadPlanner copying;
  DCP_ASSERT_OK(copying.SetUp(&dest, *md, true));
  DCP_ASSERT_OK_AND_ASSIGN(LoadPlan expected, copying.CreateLocalPlan());
  EXPECT_EQ(md.use_count(), 1);
  DefaultLoadPlanner sharing;
  DCP_ASSERT_OK(sharing.SetUpShared(&dest, md, true));
  EXPECT_GT(md.use_count(), 1);
  DCP_ASSERT_OK_AND_ASSIGN(LoadPlan plan, sharing.CreateLocalPlan());
  EXPECT_EQ(plan, expected);
  EXPECT_THAT(
      sharing.SetUpShared(&dest, std::shared_ptr<const Metadata>(), true),
      StatusIs(absl::StatusCode::kInvalidArgument));
}

// A planner that implements only SetUp gets it called by SetUpShared.
TEST(LoadPlannerTest, DefaultSetUpSharedCallsSetUp) {
  class Recording : public DefaultLoadPlanner {
   public:
    absl::Status SetUp(StateDict* state_dict, const Metadata& metadata,
                       bool is_coordinator) override {
      keys = metadata.state_dict_metadata.size();
      return DefaultLoadPlanner::SetUp(state_dict, metadata, is_coordinator);
    }
    size_t keys = 0;
  };
  Recording planner;
  LoadPlanner& base = planner;
  StateDict dest{{"a", at::zeros({4})}};
  auto md = std::make_shared<const Metadata>(TensorMetadata({"a", "b"}));
  // DefaultLoadPlanner overrides SetUpShared; call the interface's default.
  DCP_ASSERT_OK(base.LoadPlanner::SetUpShared(&dest, md, true));
  EXPECT_EQ(planner.keys, 2u);
  EXPECT_THAT(base.LoadPlanner::SetUpShared(&dest, nullptr, true),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(DefaultLoadPlannerTest, ModernCheckpointDoesNotUseLegacyFlattening) {
  // An unrequested key that the legacy traversal would not produce either
  // leaves the modern flattening in place.
  Metadata md = TensorMetadata({"w", "other"}, {2});
  StateDict dest{{"w", at::zeros({2})}, {"cfg", StateDict{{"lr", 0.0}}}};
  DefaultLoadPlannerOptions options;
  options.allow_partial_load = true;
  DCP_ASSERT_OK_AND_ASSIGN(std::vector<LoadPlan> plans,
                           PlanLoadForRanks(md, {&dest}, options));
  ASSERT_THAT(plans[0].items, SizeIs(1));
  EXPECT_EQ(plans[0].items[0].dest_index.fqn, "w");
}

TEST(DefaultLoadPlannerTest, ConcurrentLoadBytesAndResolveTensor) {
  constexpr int kKeys = 8;
  StateDict dest;
  Metadata md;
  for (int i = 0; i < kKeys; ++i) {
    dest.Set(absl::StrCat("v", i), 0);
    dest.Set(absl::StrCat("t", i), at::zeros({4}));
    md.state_dict_metadata[absl::StrCat("v", i)] = BytesStorageMetadata{};
    TensorStorageMetadata t;
    t.size = {4};
    t.chunks = {ChunkStorageMetadata{{0}, {4}}};
    md.state_dict_metadata[absl::StrCat("t", i)] = t;
  }
  DefaultLoadPlanner planner;
  DCP_ASSERT_OK(planner.SetUp(&dest, md, true));
  DCP_ASSERT_OK_AND_ASSIGN(LoadPlan plan, planner.CreateLocalPlan());
  ASSERT_THAT(plan.items, SizeIs(2 * kKeys));
  std::vector<absl::Status> statuses(plan.items.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < plan.items.size(); ++i) {
    threads.emplace_back([&, i] {
      const ReadItem& item = plan.items[i];
      if (item.type == LoadItemType::kByteIo) {
        statuses[i] = planner.LoadBytes(item, Value(static_cast<int64_t>(i)));
        return;
      }
      absl::StatusOr<at::Tensor> view = planner.ResolveTensor(item);
      if (view.ok()) view->fill_(static_cast<double>(i));
      statuses[i] = view.status();
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_THAT(statuses, ::testing::Each(IsOk()));
  for (size_t i = 0; i < plan.items.size(); ++i) {
    const Value* value = dest.Find(plan.items[i].dest_index.fqn);
    ASSERT_NE(value, nullptr);
    if (plan.items[i].type == LoadItemType::kByteIo) {
      EXPECT_TRUE(ValuesEqual(*value, Value(static_cast<int64_t>(i))));
    } else {
      EXPECT_THAT(value->get<at::Tensor>(),
                  TensorEq(at::full({4}, static_cast<double>(i))));
    }
  }
}

TEST(DefaultLoadPlannerTest, PhasesBeforeSetUpAreFailedPrecondition) {
  DefaultLoadPlanner planner;
  EXPECT_THAT(planner.CreateLocalPlan(),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST(DefaultLoadPlannerTest, GlobalAndFinishPlanAreIdentity) {
  DefaultLoadPlanner planner;
  LoadPlan plan;
  plan.items.push_back(TensorItem("w", {0}, 0, {0}, {0}, 0, {0}, {4}));
  plan.storage_data = "s";
  DCP_ASSERT_OK_AND_ASSIGN(std::vector<LoadPlan> global,
                           planner.CreateGlobalPlan({plan, LoadPlan{}}));
  EXPECT_THAT(global, ElementsAre(plan, LoadPlan{}));
  DCP_ASSERT_OK_AND_ASSIGN(LoadPlan finished, planner.FinishPlan(plan));
  EXPECT_EQ(finished, plan);
}

}  // namespace
}  // namespace dcp
