#include "storage/memory_storage.h"

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

#include "ATen/ATen.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/fault_point.h"
#include "core/metadata.h"
#include "core/state_dict.h"
#include "core/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "planner/load_plan.h"
#include "planner/planner.h"
#include "planner/save_plan.h"
#include "planner/write_result.h"
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
using ::testing::Eq;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;

// ---- Fake planners ------------------------------------------------------------

// Resolves items by fqn from a fixed map. Read-only after construction, so
// concurrent ResolveData calls are safe.
class FakeSavePlanner : public SavePlanner {
 public:
  explicit FakeSavePlanner(std::map<std::string, Value> values)
      : values_(std::move(values)) {}

  absl::Status SetUp(const StateDict&, const StorageMeta*, bool) override {
    return absl::OkStatus();
  }
  absl::StatusOr<SavePlan> CreateLocalPlan() override {
    return absl::UnimplementedError("fake");
  }
  absl::StatusOr<GlobalSavePlan> CreateGlobalPlan(
      std::vector<SavePlan>) override {
    return absl::UnimplementedError("fake");
  }
  absl::StatusOr<SavePlan> FinishPlan(SavePlan plan) override { return plan; }
  absl::StatusOr<Value> ResolveData(const WriteItem& item) override {
    auto it = values_.find(item.index.fqn);
    if (it == values_.end()) {
      return absl::NotFoundError(absl::StrCat("fake: no ", item.index.fqn));
    }
    return it->second;
  }

 private:
  std::map<std::string, Value> values_;
};

// Destinations are whole tensors by fqn; ResolveTensor returns the box
// `lengths` at `dest_offsets`. Records what it was given.
class FakeLoadPlanner : public LoadPlanner {
 public:
  std::map<std::string, at::Tensor> tensors;
  std::map<std::string, Value> loaded_bytes;
  std::vector<std::string> committed;

  absl::Status SetUp(StateDict*, const Metadata&, bool) override {
    return absl::OkStatus();
  }
  absl::StatusOr<LoadPlan> CreateLocalPlan() override {
    return absl::UnimplementedError("fake");
  }
  absl::StatusOr<std::vector<LoadPlan>> CreateGlobalPlan(
      std::vector<LoadPlan>) override {
    return absl::UnimplementedError("fake");
  }
  absl::StatusOr<LoadPlan> FinishPlan(LoadPlan plan) override { return plan; }
  absl::Status LoadBytes(const ReadItem& item, Value value) override {
    loaded_bytes[item.dest_index.fqn] = std::move(value);
    return absl::OkStatus();
  }
  absl::StatusOr<at::Tensor> ResolveTensor(const ReadItem& item) override {
    auto it = tensors.find(item.dest_index.fqn);
    if (it == tensors.end()) return absl::NotFoundError(item.dest_index.fqn);
    at::Tensor box = it->second;
    for (size_t d = 0; d < item.lengths.size(); ++d) {
      box = box.narrow(static_cast<int64_t>(d), item.dest_offsets[d],
                       item.lengths[d]);
    }
    return box;
  }
  absl::Status CommitTensor(const ReadItem& item,
                            const at::Tensor& tensor) override {
    committed.push_back(item.dest_index.fqn);
    return absl::OkStatus();
  }
};

// ---- Plan items -----------------------------------------------------------------

WriteItem TensorItem(const std::string& fqn, Shape offsets, Shape sizes,
                     Shape global_size) {
  WriteItem item;
  item.index = MetadataIndex(fqn, offsets);
  item.type = WriteItemType::kShard;
  TensorWriteData data;
  data.chunk = ChunkStorageMetadata{std::move(offsets), std::move(sizes)};
  data.size = std::move(global_size);
  item.tensor_data = std::move(data);
  return item;
}

WriteItem BytesItem(const std::string& fqn) {
  WriteItem item;
  item.index = MetadataIndex(fqn);
  item.type = WriteItemType::kByteIo;
  return item;
}

// Reads the box `lengths` at `storage_offsets` of the saved chunk at
// `chunk_offsets` into the destination tensor `fqn` at `dest_offsets`.
ReadItem TensorRead(const std::string& fqn, Shape chunk_offsets,
                    Shape storage_offsets, Shape dest_offsets, Shape lengths) {
  ReadItem item;
  item.type = LoadItemType::kTensor;
  item.storage_index = MetadataIndex(fqn, std::move(chunk_offsets));
  item.dest_index = MetadataIndex(fqn, Shape(lengths.size(), 0));
  item.storage_offsets = std::move(storage_offsets);
  item.dest_offsets = std::move(dest_offsets);
  item.lengths = std::move(lengths);
  return item;
}

ReadItem BytesRead(const std::string& fqn) {
  ReadItem item;
  item.type = LoadItemType::kByteIo;
  item.storage_index = MetadataIndex(fqn);
  item.dest_index = MetadataIndex(fqn);
  item.storage_offsets = {0};
  item.dest_offsets = {0};
  item.lengths = {0};
  return item;
}

// ---- Driving the phases by hand ------------------------------------------------

struct RankInput {
  std::vector<WriteItem> items;
  std::map<std::string, Value> values;
};

// One save, every phase called explicitly; rank 0 is the coordinator.
// `Write(rank)` for different ranks may run on different threads.
class HandDrivenSave {
 public:
  HandDrivenSave(std::shared_ptr<MemoryStore> store, std::string id,
                 std::vector<RankInput> ranks,
                 MemoryStorageOptions options = {})
      : results_(ranks.size()) {
    for (RankInput& rank : ranks) {
      writers_.push_back(
          std::make_unique<MemoryStorageWriter>(store, id, options));
      planners_.push_back(
          std::make_unique<FakeSavePlanner>(std::move(rank.values)));
      local_plans_.push_back(SavePlan{std::move(rank.items), "", "", true});
    }
  }

  int size() const { return static_cast<int>(writers_.size()); }
  MemoryStorageWriter& writer(int rank) { return *writers_[rank]; }
  const std::vector<WriteResult>& results(int rank) const {
    return results_[rank];
  }
  const Metadata& metadata() const { return metadata_; }

  // StorageMetaForSave, SetUp and PrepareLocalPlan on every rank, then
  // PrepareGlobalPlan on the coordinator.
  absl::Status Plan() {
    std::vector<SavePlan> plans;
    for (int rank = 0; rank < size(); ++rank) {
      EXPECT_TRUE(writer(rank).StorageMetaForSave().has_value());
      DCP_RETURN_IF_ERROR(writer(rank).SetUp(rank == 0));
      DCP_ASSIGN_OR_RETURN(SavePlan plan,
                           writer(rank).PrepareLocalPlan(local_plans_[rank]));
      plans.push_back(std::move(plan));
    }
    DCP_ASSIGN_OR_RETURN(central_plans_,
                         writer(0).PrepareGlobalPlan(std::move(plans)));
    return absl::OkStatus();
  }

  absl::Status Write(int rank) {
    DCP_ASSIGN_OR_RETURN(
        results_[rank],
        writer(rank).WriteData(central_plans_[rank], *planners_[rank]));
    return absl::OkStatus();
  }

  absl::Status WriteAll() {
    for (int rank = 0; rank < size(); ++rank) DCP_RETURN_IF_ERROR(Write(rank));
    return absl::OkStatus();
  }

  absl::Status Finish() {
    metadata_ = BuildMetadata();
    return writer(0).Finish(metadata_, results_);
  }

  absl::Status Run() {
    DCP_RETURN_IF_ERROR(Plan());
    DCP_RETURN_IF_ERROR(WriteAll());
    return Finish();
  }

 private:
  // What a planner would put in Metadata (storage_data comes from Finish).
  Metadata BuildMetadata() const {
    Metadata metadata;
    for (const SavePlan& plan : local_plans_) {
      for (const WriteItem& item : plan.items) {
        if (item.type == WriteItemType::kByteIo) {
          metadata.state_dict_metadata[item.index.fqn] = BytesStorageMetadata{};
          continue;
        }
        auto [it, inserted] = metadata.state_dict_metadata.try_emplace(
            item.index.fqn, TensorStorageMetadata{});
        auto& tensor_md = std::get<TensorStorageMetadata>(it->second);
        tensor_md.properties = item.tensor_data->properties;
        tensor_md.size = item.tensor_data->size;
        tensor_md.chunks.push_back(item.tensor_data->chunk);
      }
    }
    return metadata;
  }

  std::vector<std::unique_ptr<MemoryStorageWriter>> writers_;
  std::vector<std::unique_ptr<FakeSavePlanner>> planners_;
  std::vector<SavePlan> local_plans_;
  std::vector<SavePlan> central_plans_;
  std::vector<std::vector<WriteResult>> results_;
  Metadata metadata_;
};

// Runs a whole one-rank load of `plan` from `id` into `planner`.
absl::Status Load(std::shared_ptr<MemoryStore> store, const std::string& id,
                  LoadPlan plan, FakeLoadPlanner& planner,
                  Metadata* metadata_out = nullptr) {
  MemoryStorageReader reader(std::move(store), id);
  DCP_ASSIGN_OR_RETURN(Metadata metadata, reader.ReadMetadata());
  DCP_RETURN_IF_ERROR(reader.SetUp(metadata, /*is_coordinator=*/true));
  DCP_ASSIGN_OR_RETURN(plan, reader.PrepareLocalPlan(std::move(plan)));
  std::vector<LoadPlan> plans;
  plans.push_back(std::move(plan));
  DCP_ASSIGN_OR_RETURN(plans, reader.PrepareGlobalPlan(std::move(plans)));
  DCP_RETURN_IF_ERROR(reader.ReadData(plans[0], planner));
  if (metadata_out != nullptr) *metadata_out = std::move(metadata);
  return absl::OkStatus();
}

// Reads the whole 4x3 tensor "w" saved as two row shards by TwoRanks().
absl::StatusOr<at::Tensor> LoadW(std::shared_ptr<MemoryStore> store,
                                 const std::string& id) {
  FakeLoadPlanner planner;
  planner.tensors["w"] = at::zeros({4, 3});
  LoadPlan plan;
  plan.items = {TensorRead("w", {0, 0}, {0, 0}, {0, 0}, {2, 3}),
                TensorRead("w", {2, 0}, {0, 0}, {2, 0}, {2, 3})};
  DCP_RETURN_IF_ERROR(Load(std::move(store), id, std::move(plan), planner));
  return planner.tensors["w"];
}

// Rank r holds rows [2r, 2r+2) of a 4x3 tensor "w" and a bytes value.
std::vector<RankInput> TwoRanks(const at::Tensor& w, Value rank0_bytes,
                                Value rank1_bytes) {
  std::vector<RankInput> ranks(2);
  ranks[0].items = {TensorItem("w", {0, 0}, {2, 3}, {4, 3}),
                    BytesItem("step")};
  ranks[0].values = {{"w", w.narrow(0, 0, 2)}, {"step", rank0_bytes}};
  ranks[1].items = {TensorItem("w", {2, 0}, {2, 3}, {4, 3}),
                    BytesItem("extra")};
  ranks[1].values = {{"w", w.narrow(0, 2, 2)}, {"extra", rank1_bytes}};
  return ranks;
}

StateDict NestedValue() {
  return StateDict{{"lr", 0.5},
                   {"name", std::string("adam")},
                   {"betas", List{Value(0.9), Value(0.999)}},
                   {"blob", Bytes{"\x01\x02"}}};
}

// ---- Tests ----------------------------------------------------------------------

TEST(MemoryStorageTest, TwoRanksSaveTensorAndBytesThenReadBack) {
  auto store = std::make_shared<MemoryStore>();
  const at::Tensor w = MakeTestTensor({4, 3}, at::kFloat, /*seed=*/1);
  HandDrivenSave save(store, "ckpt-1",
                      TwoRanks(w, Value(int64_t{7}), Value(NestedValue())));
  DCP_ASSERT_OK(save.Plan());
  DCP_ASSERT_OK(save.WriteAll());

  // Rank r wrote object "__r_0", items at positions 0, 1.
  ASSERT_THAT(save.results(0), SizeIs(2));
  EXPECT_EQ(save.results(0)[0].index, MetadataIndex("w", Shape{0, 0}));
  EXPECT_EQ(save.results(0)[0].storage_data,
            (StorageInfo{"__0_0", 0, 2 * 3 * 4}));
  EXPECT_EQ(save.results(0)[0].size_in_bytes, 24);
  EXPECT_EQ(save.results(0)[1].storage_data, (StorageInfo{"__0_0", 1, 8}));
  ASSERT_THAT(save.results(1), SizeIs(2));
  EXPECT_EQ(save.results(1)[0].storage_data,
            (StorageInfo{"__1_0", 0, 2 * 3 * 4}));
  EXPECT_EQ(save.results(1)[1].storage_data.relative_path, "__1_0");
  EXPECT_EQ(save.results(1)[1].storage_data.offset, 1);

  DCP_ASSERT_OK(save.Finish());
  EXPECT_THAT(store->ListCheckpoints(), ElementsAre("ckpt-1"));
  EXPECT_EQ(store->num_pending_saves(), 0);

  // Finish recorded every result and the save's identity.
  const Metadata& saved = save.metadata();
  EXPECT_THAT(saved.storage_data, SizeIs(4));
  EXPECT_EQ(saved.storage_data.at(MetadataIndex("step")),
            (StorageInfo{"__0_0", 1, 8}));
  ASSERT_TRUE(saved.storage_meta.has_value());
  EXPECT_EQ(saved.storage_meta->checkpoint_id, "ckpt-1");
  EXPECT_EQ(saved.storage_meta->save_id, save.writer(0).save_id());
  EXPECT_EQ(saved.storage_meta->load_id, std::nullopt);

  // Read everything back, including a resharded box (row 1 of rank 0's
  // chunk into a 1x2 destination) and the bytes values.
  FakeLoadPlanner planner;
  planner.tensors["w"] = at::zeros({4, 3});
  planner.tensors["row1"] = at::zeros({1, 2});
  LoadPlan plan;
  plan.items = {TensorRead("w", {0, 0}, {0, 0}, {0, 0}, {2, 3}),
                TensorRead("w", {2, 0}, {0, 0}, {2, 0}, {2, 3}),
                BytesRead("step"), BytesRead("extra")};
  ReadItem row1 = TensorRead("w", {0, 0}, {1, 1}, {0, 0}, {1, 2});
  row1.dest_index = MetadataIndex("row1", Shape{0, 0});
  plan.items.push_back(row1);
  Metadata loaded;
  DCP_ASSERT_OK(Load(store, "ckpt-1", plan, planner, &loaded));

  EXPECT_THAT(planner.tensors["w"], TensorEq(w));
  EXPECT_THAT(planner.tensors["row1"],
              TensorEq(w.narrow(0, 1, 1).narrow(1, 1, 2)));
  EXPECT_THAT(planner.committed, ElementsAre("w", "w", "row1"));
  EXPECT_TRUE(ValuesEqual(planner.loaded_bytes["step"], Value(int64_t{7})));
  EXPECT_TRUE(ValuesEqual(planner.loaded_bytes["extra"], Value(NestedValue())));

  // ReadMetadata returns the committed metadata plus this load's id.
  ASSERT_TRUE(loaded.storage_meta.has_value());
  EXPECT_THAT(loaded.storage_meta->load_id, Not(Eq(std::nullopt)));
  EXPECT_EQ(loaded.storage_meta->save_id, saved.storage_meta->save_id);
  Metadata without_load_id = loaded;
  without_load_id.storage_meta->load_id.reset();
  EXPECT_EQ(without_load_id, saved);
}

TEST(MemoryStorageTest, ReadCastsToTheDestinationDtype) {
  auto store = std::make_shared<MemoryStore>();
  const at::Tensor w = MakeTestTensor({4, 3}, at::kFloat, /*seed=*/2);
  DCP_ASSERT_OK(
      HandDrivenSave(store, "c", TwoRanks(w, Value(1), Value(2))).Run());
  FakeLoadPlanner planner;
  planner.tensors["w"] = at::zeros({4, 3}, at::kDouble);
  LoadPlan plan;
  plan.items = {TensorRead("w", {0, 0}, {0, 0}, {0, 0}, {2, 3}),
                TensorRead("w", {2, 0}, {0, 0}, {2, 0}, {2, 3})};
  DCP_ASSERT_OK(Load(store, "c", plan, planner));
  EXPECT_THAT(planner.tensors["w"], TensorEq(w.to(at::kDouble)));
}

TEST(MemoryStorageTest, NonContiguousSourceIsStoredContiguously) {
  auto store = std::make_shared<MemoryStore>();
  const at::Tensor base = MakeTestTensor({3, 4}, at::kFloat, /*seed=*/3);
  const at::Tensor transposed = base.t();  // 4x3, non-contiguous.
  ASSERT_FALSE(transposed.is_contiguous());
  DCP_ASSERT_OK(
      HandDrivenSave(store, "c", TwoRanks(transposed, Value(1), Value(2)))
          .Run());
  DCP_ASSERT_OK_AND_ASSIGN(at::Tensor loaded, LoadW(store, "c"));
  EXPECT_THAT(loaded, TensorEq(transposed.contiguous()));
}

TEST(MemoryStorageTest, UncommittedSaveIsInvisible) {
  auto store = std::make_shared<MemoryStore>();
  const at::Tensor w = MakeTestTensor({4, 3}, at::kFloat, /*seed=*/4);
  {
    HandDrivenSave save(store, "ckpt-1", TwoRanks(w, Value(1), Value(2)));
    DCP_ASSERT_OK(save.Plan());
    DCP_ASSERT_OK(save.WriteAll());
    // Every rank wrote, but the coordinator has not finished.
    EXPECT_EQ(store->num_pending_saves(), 1);
    EXPECT_FALSE(store->Contains("ckpt-1"));
    EXPECT_THAT(store->ListCheckpoints(), IsEmpty());
    MemoryStorageReader reader(store, "ckpt-1");
    EXPECT_THAT(reader.ReadMetadata(),
                StatusIs(absl::StatusCode::kNotFound,
                         Eq("no checkpoint \"ckpt-1\" in memory store")));
  }
  // Destroying the coordinator's writer abandoned the staged data.
  EXPECT_EQ(store->num_pending_saves(), 0);
  EXPECT_THAT(LoadW(store, "ckpt-1").status(),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST(MemoryStorageTest, OverwriteKeepsTheOldCheckpointUntilCommit) {
  auto store = std::make_shared<MemoryStore>();
  const at::Tensor v1 = MakeTestTensor({4, 3}, at::kFloat, /*seed=*/5);
  const at::Tensor v2 = MakeTestTensor({4, 3}, at::kFloat, /*seed=*/6);
  DCP_ASSERT_OK(
      HandDrivenSave(store, "c", TwoRanks(v1, Value(1), Value(2))).Run());

  HandDrivenSave second(store, "c", TwoRanks(v2, Value(3), Value(4)));
  DCP_ASSERT_OK(second.Plan());
  DCP_ASSERT_OK(second.WriteAll());
  // A reader that snapshots now keeps reading v1 even after v2 commits.
  MemoryStorageReader early_reader(store, "c");
  DCP_ASSERT_OK_AND_ASSIGN(Metadata early_metadata,
                           early_reader.ReadMetadata());
  {
    DCP_ASSERT_OK_AND_ASSIGN(at::Tensor loaded, LoadW(store, "c"));
    EXPECT_THAT(loaded, TensorEq(v1));
  }

  DCP_ASSERT_OK(second.Finish());
  {
    DCP_ASSERT_OK_AND_ASSIGN(at::Tensor loaded, LoadW(store, "c"));
    EXPECT_THAT(loaded, TensorEq(v2));
  }
  FakeLoadPlanner planner;
  planner.tensors["w"] = at::zeros({4, 3});
  DCP_ASSERT_OK(early_reader.SetUp(early_metadata, true));
  LoadPlan plan;
  plan.items = {TensorRead("w", {0, 0}, {0, 0}, {0, 0}, {2, 3}),
                TensorRead("w", {2, 0}, {0, 0}, {2, 0}, {2, 3})};
  DCP_ASSERT_OK(early_reader.ReadData(plan, planner));
  EXPECT_THAT(planner.tensors["w"], TensorEq(v1));
}

// A rank that is not the coordinator never calls ReadMetadata: its second
// load through the same reader must not read the first load's snapshot.
TEST(MemoryStorageTest, ANonCoordinatorReaderLoadsTheCurrentCheckpointEachTime) {
  auto store = std::make_shared<MemoryStore>();
  const at::Tensor v1 = MakeTestTensor({4, 3}, at::kFloat, /*seed=*/8);
  const at::Tensor v2 = MakeTestTensor({4, 3}, at::kFloat, /*seed=*/9);
  MemoryStorageReader coordinator(store, "c");
  MemoryStorageReader other(store, "c");
  for (const at::Tensor& w : {v1, v2}) {
    DCP_ASSERT_OK(
        HandDrivenSave(store, "c", TwoRanks(w, Value(1), Value(2))).Run());
    DCP_ASSERT_OK_AND_ASSIGN(Metadata metadata, coordinator.ReadMetadata());
    DCP_ASSERT_OK(coordinator.SetUp(metadata, /*is_coordinator=*/true));
    DCP_ASSERT_OK(other.SetUp(metadata, /*is_coordinator=*/false));
    FakeLoadPlanner planner;
    planner.tensors["w"] = at::zeros({4, 3});
    LoadPlan plan;
    plan.items = {TensorRead("w", {0, 0}, {0, 0}, {0, 0}, {2, 3}),
                  TensorRead("w", {2, 0}, {0, 0}, {2, 0}, {2, 3})};
    DCP_ASSERT_OK(other.ReadData(plan, planner));
    EXPECT_THAT(planner.tensors["w"], TensorEq(w));
  }
}

TEST(MemoryStorageTest, MetadataOfAReplacedSaveIsRefused) {
  auto store = std::make_shared<MemoryStore>();
  const at::Tensor w = MakeTestTensor({4, 3}, at::kFloat, /*seed=*/7);
  DCP_ASSERT_OK(
      HandDrivenSave(store, "c", TwoRanks(w, Value(1), Value(2))).Run());
  MemoryStorageReader first(store, "c");
  DCP_ASSERT_OK_AND_ASSIGN(Metadata old_metadata, first.ReadMetadata());
  DCP_ASSERT_OK(
      HandDrivenSave(store, "c", TwoRanks(w, Value(1), Value(2))).Run());
  // A rank that did not read the metadata itself snapshots at SetUp.
  MemoryStorageReader second(store, "c");
  EXPECT_THAT(second.SetUp(old_metadata, false),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("replaced")));
}

TEST(MemoryStorageTest, OverwriteFalseRefusesAnExistingCheckpoint) {
  auto store = std::make_shared<MemoryStore>();
  const at::Tensor w = MakeTestTensor({4, 3}, at::kFloat, /*seed=*/8);
  MemoryStorageOptions no_overwrite;
  no_overwrite.overwrite = false;
  // A new id is fine.
  DCP_ASSERT_OK(HandDrivenSave(store, "ckpt-1", TwoRanks(w, Value(1), Value(2)),
                               no_overwrite)
                    .Run());

  HandDrivenSave again(store, "ckpt-1", TwoRanks(w, Value(1), Value(2)),
                       no_overwrite);
  EXPECT_THAT(again.Plan(), StatusIs(absl::StatusCode::kAlreadyExists,
                                     HasSubstr("\"ckpt-1\"")));
  EXPECT_EQ(store->num_pending_saves(), 0);
}

TEST(MemoryStorageTest, OverwriteFalseAlsoCheckedAtCommit) {
  // Two saves to the same new id race; the second to commit loses.
  auto store = std::make_shared<MemoryStore>();
  const at::Tensor w = MakeTestTensor({4, 3}, at::kFloat, /*seed=*/9);
  MemoryStorageOptions no_overwrite;
  no_overwrite.overwrite = false;
  HandDrivenSave a(store, "c", TwoRanks(w, Value(1), Value(2)), no_overwrite);
  HandDrivenSave b(store, "c", TwoRanks(w * 2, Value(1), Value(2)),
                   no_overwrite);
  DCP_ASSERT_OK(a.Plan());
  DCP_ASSERT_OK(b.Plan());
  DCP_ASSERT_OK(a.WriteAll());
  DCP_ASSERT_OK(b.WriteAll());
  DCP_ASSERT_OK(a.Finish());
  EXPECT_THAT(b.Finish(), StatusIs(absl::StatusCode::kAlreadyExists));
  DCP_ASSERT_OK_AND_ASSIGN(at::Tensor loaded, LoadW(store, "c"));
  EXPECT_THAT(loaded, TensorEq(w));
  EXPECT_EQ(store->num_pending_saves(), 0);
}

TEST(MemoryStorageTest, MissingChunkIsDataLoss) {
  auto store = std::make_shared<MemoryStore>();
  const at::Tensor w = MakeTestTensor({4, 3}, at::kFloat, /*seed=*/10);
  DCP_ASSERT_OK(
      HandDrivenSave(store, "c", TwoRanks(w, Value(1), Value(2))).Run());
  FakeLoadPlanner planner;
  planner.tensors["w"] = at::zeros({4, 3});
  LoadPlan plan;
  plan.items = {TensorRead("w", {1, 0}, {0, 0}, {0, 0}, {1, 3})};
  EXPECT_THAT(Load(store, "c", plan, planner),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("\"w\""), HasSubstr("[1, 0]"))));

  plan.items = {BytesRead("nope")};
  EXPECT_THAT(Load(store, "c", plan, planner),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("\"nope\"")));
  EXPECT_THAT(planner.committed, IsEmpty());
}

TEST(MemoryStorageTest, BoxOutsideTheSavedChunkIsDataLoss) {
  auto store = std::make_shared<MemoryStore>();
  const at::Tensor w = MakeTestTensor({4, 3}, at::kFloat, /*seed=*/11);
  DCP_ASSERT_OK(
      HandDrivenSave(store, "c", TwoRanks(w, Value(1), Value(2))).Run());
  FakeLoadPlanner planner;
  planner.tensors["w"] = at::zeros({4, 3});
  for (const ReadItem& bad :
       {TensorRead("w", {0, 0}, {1, 0}, {0, 0}, {2, 3}),   // Rows 1..2 of 2.
        TensorRead("w", {0, 0}, {0, -1}, {0, 0}, {1, 1}),  // Negative.
        TensorRead("w", {0, 0}, {0}, {0}, {2})}) {        // Wrong rank.
    LoadPlan plan;
    plan.items = {bad};
    EXPECT_THAT(Load(store, "c", plan, planner),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr("\"w\"")))
        << bad;
  }
  EXPECT_THAT(planner.committed, IsEmpty());
}

TEST(MemoryStorageTest, DestinationShapeMismatchIsInvalidArgument) {
  auto store = std::make_shared<MemoryStore>();
  const at::Tensor w = MakeTestTensor({4, 3}, at::kFloat, /*seed=*/12);
  DCP_ASSERT_OK(
      HandDrivenSave(store, "c", TwoRanks(w, Value(1), Value(2))).Run());
  // The planner hands out a destination of the wrong shape.
  class WrongShapePlanner : public FakeLoadPlanner {
   public:
    absl::StatusOr<at::Tensor> ResolveTensor(const ReadItem&) override {
      return at::zeros({3, 2});
    }
  } planner;
  LoadPlan plan;
  plan.items = {TensorRead("w", {0, 0}, {0, 0}, {0, 0}, {2, 3})};
  EXPECT_THAT(Load(store, "c", plan, planner),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("[3, 2]"), HasSubstr("[2, 3]"))));
  EXPECT_THAT(planner.committed, IsEmpty());
}

TEST(MemoryStorageTest, MutatingTheSourceAfterWriteDataDoesNotChangeTheData) {
  auto store = std::make_shared<MemoryStore>();
  at::Tensor w = MakeTestTensor({4, 3}, at::kFloat, /*seed=*/13);
  const at::Tensor original = w.clone();
  HandDrivenSave save(store, "c", TwoRanks(w, Value(1), Value(2)));
  DCP_ASSERT_OK(save.Plan());
  DCP_ASSERT_OK(save.WriteAll());
  w.fill_(-1);  // After WriteData, before Finish.
  DCP_ASSERT_OK(save.Finish());
  w.fill_(-2);  // After Finish.
  DCP_ASSERT_OK_AND_ASSIGN(at::Tensor loaded, LoadW(store, "c"));
  EXPECT_THAT(loaded, TensorEq(original));

  // Loading twice gives the same data: reads do not alias the store.
  loaded.fill_(-3);
  DCP_ASSERT_OK_AND_ASSIGN(at::Tensor reloaded, LoadW(store, "c"));
  EXPECT_THAT(reloaded, TensorEq(original));
}

TEST(MemoryStorageTest, BytesValueHoldingATensorIsRejected) {
  auto store = std::make_shared<MemoryStore>();
  const at::Tensor w = MakeTestTensor({4, 3}, at::kFloat, /*seed=*/14);
  HandDrivenSave save(
      store, "c",
      TwoRanks(w, Value(StateDict{{"inner", List{Value(at::ones({2}))}}}),
               Value(2)));
  DCP_ASSERT_OK(save.Plan());
  EXPECT_THAT(save.Write(0), StatusIs(absl::StatusCode::kInvalidArgument,
                                      HasSubstr("\"step\"")));
}

TEST(MemoryStorageTest, BytesValueHoldingATensorInATupleIsRejected) {
  // The tuple would be copied but not the tensor in it, so later changes
  // to the caller's tensor would change the saved checkpoint.
  auto store = std::make_shared<MemoryStore>();
  const at::Tensor w = MakeTestTensor({4, 3}, at::kFloat, /*seed=*/15);
  HandDrivenSave save(
      store, "c",
      TwoRanks(w, Value(Tuple{{Value(1), Value(at::ones({2}))}}), Value(2)));
  DCP_ASSERT_OK(save.Plan());
  EXPECT_THAT(save.Write(0), StatusIs(absl::StatusCode::kInvalidArgument,
                                      HasSubstr("holds a tensor")));
}

TEST(MemoryStorageTest, TensorItemResolvingToANonTensorIsRejected) {
  auto store = std::make_shared<MemoryStore>();
  std::vector<RankInput> ranks(1);
  ranks[0].items = {TensorItem("w", {0}, {2}, {2})};
  ranks[0].values = {{"w", Value(std::string("not a tensor"))}};
  HandDrivenSave save(store, "c", std::move(ranks));
  DCP_ASSERT_OK(save.Plan());
  EXPECT_THAT(save.Write(0),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("\"w\""), HasSubstr("str"))));
}

TEST(MemoryStorageTest, TensorOfTheWrongShapeIsRejected) {
  auto store = std::make_shared<MemoryStore>();
  std::vector<RankInput> ranks(1);
  ranks[0].items = {TensorItem("w", {0}, {2}, {2})};
  ranks[0].values = {{"w", at::ones({3})}};
  HandDrivenSave save(store, "c", std::move(ranks));
  DCP_ASSERT_OK(save.Plan());
  EXPECT_THAT(save.Write(0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("[3]")));
}

TEST(MemoryStorageTest, EmptyPlanStillCommits) {
  auto store = std::make_shared<MemoryStore>();
  HandDrivenSave save(store, "empty", std::vector<RankInput>(2));
  DCP_ASSERT_OK(save.Run());
  EXPECT_THAT(save.results(0), IsEmpty());
  EXPECT_TRUE(store->Contains("empty"));
  FakeLoadPlanner planner;
  DCP_EXPECT_OK(Load(store, "empty", LoadPlan{}, planner));
}

TEST(MemoryStorageTest, PhasesOutOfOrderAreFailedPrecondition) {
  auto store = std::make_shared<MemoryStore>();
  MemoryStorageWriter writer(store, "c");
  FakeSavePlanner planner({});
  Metadata metadata;
  // WriteData with a plan that did not come from PrepareGlobalPlan.
  EXPECT_THAT(writer.WriteData(SavePlan{}, planner),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  SavePlan forged;
  forged.storage_data = "garbage";
  EXPECT_THAT(writer.WriteData(forged, planner),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(writer.Finish(metadata, {}),
              StatusIs(absl::StatusCode::kFailedPrecondition));

  // A reader used before SetUp.
  MemoryStorageReader reader(store, "c");
  FakeLoadPlanner load_planner;
  EXPECT_THAT(reader.ReadData(LoadPlan{}, load_planner),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST(MemoryStorageTest, CommitRequiresEveryRanksData) {
  auto store = std::make_shared<MemoryStore>();
  const at::Tensor w = MakeTestTensor({4, 3}, at::kFloat, /*seed=*/15);
  HandDrivenSave save(store, "c", TwoRanks(w, Value(1), Value(2)));
  DCP_ASSERT_OK(save.Plan());
  DCP_ASSERT_OK(save.Write(0));
  // Rank 1 "reports" results for data it never wrote.
  DCP_ASSERT_OK(save.Write(1));
  MemoryStorageWriter& coordinator = save.writer(0);
  std::vector<std::vector<WriteResult>> results = {save.results(0),
                                                   save.results(1)};
  results[1][0].storage_data.relative_path = "__7_0";
  Metadata metadata;
  EXPECT_THAT(coordinator.Finish(metadata, results),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("\"__7_0\"")));
  EXPECT_FALSE(store->Contains("c"));
  EXPECT_EQ(store->num_pending_saves(), 0);
}

TEST(MemoryStorageTest, WriteAfterTheSaveWasAbandonedFails) {
  auto store = std::make_shared<MemoryStore>();
  const at::Tensor w = MakeTestTensor({4, 3}, at::kFloat, /*seed=*/16);
  HandDrivenSave save(store, "c", TwoRanks(w, Value(1), Value(2)));
  DCP_ASSERT_OK(save.Plan());
  DCP_ASSERT_OK(save.writer(0).Reset(std::nullopt));  // Coordinator gives up.
  EXPECT_THAT(save.Write(1), StatusIs(absl::StatusCode::kFailedPrecondition,
                                      HasSubstr("abandoned")));
  EXPECT_EQ(store->num_pending_saves(), 0);
}

TEST(MemoryStorageTest, ResetChangesIdAndRegeneratesIds) {
  auto store = std::make_shared<MemoryStore>();
  MemoryStorageWriter writer(store, "a");
  const std::string first_save_id = writer.save_id();
  EXPECT_THAT(first_save_id, SizeIs(36));  // UUID-shaped.
  DCP_ASSERT_OK(writer.Reset(std::nullopt));
  EXPECT_EQ(writer.checkpoint_id(), "a");
  EXPECT_NE(writer.save_id(), first_save_id);
  DCP_ASSERT_OK(writer.Reset(std::string("b")));
  EXPECT_EQ(writer.checkpoint_id(), "b");
  std::optional<StorageMeta> meta = writer.StorageMetaForSave();
  ASSERT_TRUE(meta.has_value());
  EXPECT_EQ(meta->checkpoint_id, "b");
  EXPECT_EQ(meta->save_id, writer.save_id());

  MemoryStorageReader reader(store, "a");
  const std::string first_load_id = reader.load_id();
  DCP_ASSERT_OK(reader.Reset(std::string("b")));
  EXPECT_EQ(reader.checkpoint_id(), "b");
  EXPECT_NE(reader.load_id(), first_load_id);
}

TEST(MemoryStorageTest, RemoveForgetsACheckpoint) {
  auto store = std::make_shared<MemoryStore>();
  const at::Tensor w = MakeTestTensor({4, 3}, at::kFloat, /*seed=*/17);
  DCP_ASSERT_OK(
      HandDrivenSave(store, "c", TwoRanks(w, Value(1), Value(2))).Run());
  DCP_ASSERT_OK(store->Remove("c"));
  EXPECT_FALSE(store->Contains("c"));
  EXPECT_THAT(store->Remove("c"), StatusIs(absl::StatusCode::kNotFound));
}

class FailAt : public FaultPointHandler {
 public:
  explicit FailAt(std::string name) : name_(std::move(name)) {}
  absl::Status OnFaultPoint(absl::string_view name) override {
    if (name == name_) return absl::UnavailableError("injected");
    return absl::OkStatus();
  }

 private:
  std::string name_;
};

TEST(MemoryStorageTest, FaultPoints) {
  auto store = std::make_shared<MemoryStore>();
  const at::Tensor w = MakeTestTensor({4, 3}, at::kFloat, /*seed=*/18);
  {
    FailAt fail("memory_storage.write_data");
    ScopedFaultPointHandler scope(&fail);
    HandDrivenSave save(store, "c", TwoRanks(w, Value(1), Value(2)));
    DCP_ASSERT_OK(save.Plan());
    EXPECT_THAT(save.Write(0), StatusIs(absl::StatusCode::kUnavailable));
  }
  {
    FailAt fail("memory_storage.finish");
    ScopedFaultPointHandler scope(&fail);
    HandDrivenSave save(store, "c", TwoRanks(w, Value(1), Value(2)));
    DCP_ASSERT_OK(save.Plan());
    DCP_ASSERT_OK(save.WriteAll());
    EXPECT_THAT(save.Finish(), StatusIs(absl::StatusCode::kUnavailable));
    EXPECT_FALSE(store->Contains("c"));
  }
  DCP_ASSERT_OK(
      HandDrivenSave(store, "c", TwoRanks(w, Value(1), Value(2))).Run());
  {
    FailAt fail("memory_storage.read_data");
    ScopedFaultPointHandler scope(&fail);
    EXPECT_THAT(LoadW(store, "c").status(),
                StatusIs(absl::StatusCode::kUnavailable));
  }
  EXPECT_EQ(store->num_pending_saves(), 0);
}

TEST(MemoryStorageConcurrencyTest, RanksWriteAndReadOnTheirOwnThreads) {
  constexpr int kRanks = 8;
  auto store = std::make_shared<MemoryStore>();
  const at::Tensor w = MakeTestTensor({kRanks * 2, 5}, at::kFloat, /*seed=*/19);
  std::vector<RankInput> ranks(kRanks);
  for (int r = 0; r < kRanks; ++r) {
    const std::string bytes_key = absl::StrCat("rank", r);
    ranks[r].items = {TensorItem("w", {2 * r, 0}, {2, 5}, {kRanks * 2, 5}),
                      BytesItem(bytes_key)};
    ranks[r].values = {{"w", w.narrow(0, 2 * r, 2)},
                       {bytes_key, Value(std::string(r + 1, 'x'))}};
  }
  HandDrivenSave save(store, "c", std::move(ranks));
  DCP_ASSERT_OK(save.Plan());
  std::vector<absl::Status> write_status(kRanks);
  {
    std::vector<std::thread> threads;
    for (int r = 0; r < kRanks; ++r) {
      threads.emplace_back([&, r] { write_status[r] = save.Write(r); });
    }
    for (std::thread& t : threads) t.join();
  }
  for (int r = 0; r < kRanks; ++r)
    DCP_EXPECT_OK(write_status[r]) << "rank " << r;
  DCP_ASSERT_OK(save.Finish());
  EXPECT_THAT(save.metadata().storage_data, SizeIs(2 * kRanks));

  // Every rank loads its own rows and every rank's bytes, concurrently.
  std::vector<absl::Status> read_status(kRanks);
  std::vector<FakeLoadPlanner> planners(kRanks);
  {
    std::vector<std::thread> threads;
    for (int r = 0; r < kRanks; ++r) {
      threads.emplace_back([&, r] {
        FakeLoadPlanner& planner = planners[r];
        planner.tensors["w"] = at::zeros({2, 5});
        LoadPlan plan;
        plan.items = {TensorRead("w", {2 * r, 0}, {0, 0}, {0, 0}, {2, 5})};
        for (int other = 0; other < kRanks; ++other) {
          plan.items.push_back(BytesRead(absl::StrCat("rank", other)));
        }
        read_status[r] = Load(store, "c", std::move(plan), planner);
      });
    }
    for (std::thread& t : threads) t.join();
  }
  for (int r = 0; r < kRanks; ++r) {
    DCP_ASSERT_OK(read_status[r]) << "rank " << r;
    EXPECT_THAT(planners[r].tensors["w"], TensorEq(w.narrow(0, 2 * r, 2)));
    for (int other = 0; other < kRanks; ++other) {
      EXPECT_TRUE(ValuesEqual(
          planners[r].loaded_bytes[absl::StrCat("rank", other)],
          Value(std::string(other + 1, 'x'))));
    }
  }
}

}  // namespace
}  // namespace dcp
