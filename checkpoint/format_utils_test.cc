#include "checkpoint/format_utils.h"

#include <memory>
#include <string>

#include "ATen/ATen.h"
#include "checkpoint/save_load.h"
#include "core/state_dict.h"
#include "core/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/fs_storage.h"
#include "storage/torch_save.h"
#include "testing/mem_file_system.h"
#include "testing/status_matchers.h"
#include "testing/tensor_matchers.h"

namespace dcp {
namespace {

using ::dcp::test::MemFileSystem;
using ::dcp::test::StateDictEq;
using ::dcp::test::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// What a training job saves: a row-sharded weight (two shards held by this
// one process), a replicated bias, optimizer state and plain values. Keys
// are in sorted order, as LoadWholeCheckpoint returns them.
StateDict Original() {
  const at::Tensor weight = at::arange(24, at::kFloat).view({6, 4});
  ShardedTensor sharded{{6, 4},
                        {Shard{weight.narrow(0, 0, 2).clone(), {0, 0}},
                         Shard{weight.narrow(0, 2, 4).clone(), {2, 0}}}};
  return StateDict{
      {"model",
       StateDict{{"bias", at::ones({4}, at::kDouble)}, {"weight", sharded}}},
      {"optim",
       StateDict{
           {"param_groups", List{StateDict{{"betas", Tuple{{0.9, 0.999}}},
                                           {"lr", 0.01},
                                           {"params", List{"model.weight"}}}}},
           {"state", StateDict{{"model.weight",
                                StateDict{{"step", at::scalar_tensor(
                                                       3.0, at::kFloat)}}}}}}},
      {"step", 3}};
}

// Original() with the sharded weight as one tensor.
StateDict Whole() {
  StateDict whole = Original();
  whole.FindMutable("model")->get<StateDict>().Set(
      "weight", at::arange(24, at::kFloat).view({6, 4}));
  return whole;
}

class FormatUtilsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    FileSystemWriterOptions options;
    options.file_system = fs_;
    DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<FileSystemWriter> writer,
                             FileSystemWriter::Create("/ckpt", options));
    SaveOptions save;
    save.no_dist = true;
    DCP_ASSERT_OK(Save(Original(), *writer, save).status());
  }

  WholeCheckpointOptions Options() {
    WholeCheckpointOptions options;
    options.reader.file_system = fs_;
    return options;
  }

  std::shared_ptr<MemFileSystem> fs_ = std::make_shared<MemFileSystem>();
};

TEST_F(FormatUtilsTest, LoadsTheWholeCheckpointWithItsNesting) {
  DCP_ASSERT_OK_AND_ASSIGN(StateDict loaded,
                           LoadWholeCheckpoint("/ckpt", Options()));
  EXPECT_THAT(loaded, StateDictEq(Whole()));
}

TEST_F(FormatUtilsTest, KeysSelectLeavesByNameOrPathPrefix) {
  WholeCheckpointOptions options = Options();
  options.keys = {"model"};
  DCP_ASSERT_OK_AND_ASSIGN(StateDict model,
                           LoadWholeCheckpoint("/ckpt", options));
  EXPECT_THAT(model.Keys(), ElementsAre("model"));
  EXPECT_THAT(model.Find("model")->get<StateDict>().Keys(),
              ElementsAre("bias", "weight"));

  options.keys = {"step", "optim.param_groups.0.betas"};
  DCP_ASSERT_OK_AND_ASSIGN(StateDict some,
                           LoadWholeCheckpoint("/ckpt", options));
  EXPECT_THAT(some.Keys(), ElementsAre("optim", "step"));
  EXPECT_TRUE(ValuesEqual(*some.Find("optim")
                               ->get<StateDict>()
                               .Find("param_groups")
                               ->get<List>()[0]
                               .get<StateDict>()
                               .Find("betas"),
                          Value(Tuple{{0.9, 0.999}})));

  options.keys = {"model", "modle", "optim.state.x"};
  EXPECT_THAT(LoadWholeCheckpoint("/ckpt", options),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("has no key \"modle\", \"optim.state.x\"")));
}

TEST_F(FormatUtilsTest, RoundTripsThroughOneTorchSaveFile) {
  DcpToTorchSaveOptions to;
  to.load = Options();
  DCP_ASSERT_OK(DcpToTorchSave("/ckpt", "/model.pt", to));
  DCP_ASSERT_OK_AND_ASSIGN(StateDict file, ReadTorchSave(*fs_, "/model.pt"));
  EXPECT_THAT(file, StateDictEq(Whole()));

  FileSystemWriterOptions writer;
  writer.file_system = fs_;
  DCP_ASSERT_OK(TorchSaveToDcp("/model.pt", "/imported", writer));
  DCP_ASSERT_OK_AND_ASSIGN(StateDict back,
                           LoadWholeCheckpoint("/imported", Options()));
  EXPECT_THAT(back, StateDictEq(Whole()));
}

TEST_F(FormatUtilsTest, MissingCheckpointAndFileAreNotFound) {
  EXPECT_THAT(LoadWholeCheckpoint("/nothing", Options()),
              StatusIs(absl::StatusCode::kNotFound));
  FileSystemWriterOptions writer;
  writer.file_system = fs_;
  EXPECT_THAT(TorchSaveToDcp("/missing.pt", "/out", writer),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(DcpToTorchSave("", "/x.pt"),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace dcp
