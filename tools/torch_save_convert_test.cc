// dcp to-torch-save and from-torch-save: round trips through a DCP
// checkpoint, and conversions of checkpoints written by PyTorch 2.6.
#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/metadata.h"
#include "core/state_dict.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/file_system.h"
#include "storage/fs_storage.h"
#include "storage/metadata_pickle.h"
#include "storage/pickle.h"
#include "storage/posix_file_system.h"
#include "storage/torch_pickle.h"
#include "storage/torch_save.h"
#include "storage/zip.h"
#include "testing/runfiles.h"
#include "testing/status_matchers.h"
#include "testing/tensor_matchers.h"
#include "tools/from_torch_save.h"
#include "tools/to_torch_save.h"

namespace dcp::tools {
namespace {

using ::dcp::test::IsOk;
using ::dcp::test::StateDictEq;
using ::dcp::test::StatusIs;
using ::dcp::test::TensorEq;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string TempPath(absl::string_view name) {
  return JoinPath(::testing::TempDir(), name);
}

std::string Golden(absl::string_view name) {
  return test::PytorchGoldenPath(name);
}

// `value` with every dict's entries sorted by key (to-torch-save rebuilds
// dicts in sorted flattened-key order).
Value Canonical(const Value& value) {
  if (const auto* list = value.get_if<List>()) {
    List out;
    for (const Value& v : *list) out.push_back(Canonical(v));
    return out;
  }
  if (const auto* dict = value.get_if<StateDict>()) {
    std::vector<StateDict::Entry> entries = dict->entries();
    std::sort(entries.begin(), entries.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    StateDict out;
    for (auto& [key, v] : entries) out.Set(key, Canonical(v));
    return out;
  }
  return value;
}

StateDict CanonicalDict(const StateDict& sd) {
  return Canonical(Value(sd)).get<StateDict>();
}

StateDict TrainingState() {
  StateDict model{
      {"embed.weight", at::arange(35, at::kFloat).reshape({7, 5})},
      {"proj.weight", at::arange(12, at::kDouble).reshape({3, 4}).t()},
      {"norm.bias", at::tensor({0.5, -0.5}).to(at::kBFloat16)},
      {"counts", at::tensor({int64_t{1} << 40, int64_t{-3}, int64_t{9},
                             int64_t{0}, int64_t{5}})},
      {"mask", at::tensor({1, 0, 1, 1}).to(at::kBool)},
      {"scale", at::scalar_tensor(0.25, at::kFloat)},
      {"empty", at::zeros({0, 3})},
      {"h", at::tensor({1.5, 2.5, -4.0}).to(at::kHalf)},
      {"u8", at::tensor({1, 2, 250}).to(at::kByte)},
  };
  StateDict state{
      {"0", StateDict{{"step", at::scalar_tensor(12.0, at::kFloat)},
                      {"exp_avg", at::full({7, 5}, 0.125, at::kFloat)}}},
      {"1", StateDict{{"step", int64_t{12}},
                      {"exp_avg", at::full({4, 3}, -1.0, at::kDouble)}}}};
  StateDict group{{"lr", 0.001},
                  {"betas", Tuple{{0.9, 0.999}}},
                  {"eps", 1e-8},
                  {"amsgrad", false},
                  {"params", List{int64_t{0}, int64_t{1}}}};
  return StateDict{
      {"model", model},
      {"optim", StateDict{{"state", state},
                          {"param_groups", List{Value(group)}}}},
      {"extra", StateDict{{"epoch", int64_t{3}},
                          {"name", "run-\xce\xb1"},
                          {"nothing", None{}},
                          {"blob", Bytes{std::string("\0\x01" "dcp\xff", 6)}},
                          {"sizes", List{int64_t{1}, int64_t{2}}},
                          {"mixed", List{at::ones({2}), int64_t{5}}},
                          {"none_list", List{}}}},
  };
}

TEST(TorchSaveConvertTest, FromThenToTorchSaveReproducesEverything) {
  const std::string in = TempPath("convert_in.pt");
  const std::string dir = TempPath("convert_ckpt");
  const std::string out_file = TempPath("convert_out.pt");
  const StateDict original = TrainingState();
  ASSERT_THAT(WriteTorchSave(original, in), IsOk());

  FromTorchSaveOptions from;
  from.file = in;
  from.dir = dir;
  from.world_size = 3;
  from.sync_files = false;
  std::ostringstream from_out;
  ASSERT_THAT(TorchSaveToDcp(from, from_out), IsOk());
  EXPECT_THAT(from_out.str(), HasSubstr("with 3 ranks: "));
  EXPECT_THAT(from_out.str(), HasSubstr("5 files"));  // 3 ranks, .metadata, .dcp.metadata

  // Tensors with a dimension are row-sharded: [7, 5] over 3 ranks is 3, 3, 1.
  DCP_ASSERT_OK_AND_ASSIGN(Metadata md, ReadCheckpointMetadata(dir));
  const auto& embed = std::get<TensorStorageMetadata>(
      md.state_dict_metadata.at("model.embed.weight"));
  std::vector<Shape> offsets;
  for (const ChunkStorageMetadata& c : embed.chunks) offsets.push_back(c.offsets);
  EXPECT_THAT(offsets, ::testing::UnorderedElementsAre(Shape{0, 0}, Shape{3, 0},
                                                        Shape{6, 0}));
  EXPECT_EQ(std::get<TensorStorageMetadata>(
                md.state_dict_metadata.at("model.scale"))
                .chunks.size(),
            1u);

  ToTorchSaveOptions to;
  to.dir = dir;
  to.file = out_file;
  to.sync = false;
  std::ostringstream to_out;
  ASSERT_THAT(DcpToTorchSave(to, to_out), IsOk());
  EXPECT_THAT(to_out.str(), HasSubstr(absl::StrCat("wrote ", out_file)));

  DCP_ASSERT_OK_AND_ASSIGN(StateDict back, ReadTorchSave(out_file));
  EXPECT_THAT(CanonicalDict(back), StateDictEq(CanonicalDict(original)));
}

TEST(TorchSaveConvertTest, EmptyNestedDictsAreNotSavedAsInPyTorch) {
  const std::string in = TempPath("empty_dict_in.pt");
  const std::string dir = TempPath("empty_dict_ckpt");
  const std::string out_file = TempPath("empty_dict_out.pt");
  ASSERT_THAT(WriteTorchSave(StateDict{{"w", at::ones({2})},
                                       {"hooks", StateDict{}}},
                             in),
              IsOk());
  FromTorchSaveOptions from;
  from.file = in;
  from.dir = dir;
  from.world_size = 2;
  std::ostringstream sink;
  ASSERT_THAT(TorchSaveToDcp(from, sink), IsOk());
  ToTorchSaveOptions to;
  to.dir = dir;
  to.file = out_file;
  ASSERT_THAT(DcpToTorchSave(to, sink), IsOk());
  DCP_ASSERT_OK_AND_ASSIGN(StateDict back, ReadTorchSave(out_file));
  EXPECT_THAT(back, StateDictEq(StateDict{{"w", at::ones({2})}}));
}

// ---- PyTorch 2.6 goldens (testdata/pytorch_golden/README.md) ---------------

int64_t Seed(absl::string_view fqn) {
  int64_t seed = 0;
  for (size_t j = 0; j < fqn.size(); ++j) {
    seed += static_cast<int64_t>(j + 1) * static_cast<unsigned char>(fqn[j]);
  }
  return seed % 1000;
}

// The float32 formula: g * 0.5 - 100 with g = seed(fqn) + flat index.
at::Tensor Float32Golden(absl::string_view fqn, std::vector<int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return at::arange(n, at::kFloat)
      .add(static_cast<double>(Seed(fqn)))
      .mul(0.5)
      .sub(100)
      .reshape(shape);
}

absl::StatusOr<StateDict> ConvertGolden(absl::string_view name) {
  ToTorchSaveOptions to;
  to.dir = Golden(name);
  to.load.allow_symlinks = true;  // The runfiles tree links every file.
  to.file = TempPath(absl::StrCat("golden_", name, ".pt"));
  to.sync = false;
  std::ostringstream sink;
  absl::Status status = DcpToTorchSave(to, sink);
  if (!status.ok()) return status;
  return ReadTorchSave(to.file);
}

TEST(TorchSaveConvertTest, ConvertsAPyTorchShardedCheckpoint) {
  DCP_ASSERT_OK_AND_ASSIGN(StateDict sd, ConvertGolden("sharded4"));
  EXPECT_THAT(sd.Keys(), ElementsAre("bias", "col", "row", "step", "uneven"));
  EXPECT_THAT(sd.Find("row")->get<at::Tensor>(),
              TensorEq(Float32Golden("row", {6, 4})));
  EXPECT_THAT(sd.Find("col")->get<at::Tensor>(),
              TensorEq(Float32Golden("col", {4, 6})));
  EXPECT_THAT(sd.Find("uneven")->get<at::Tensor>(),
              TensorEq(Float32Golden("uneven", {5, 3})));
  EXPECT_THAT(sd.Find("bias")->get<at::Tensor>(),
              TensorEq(Float32Golden("bias", {3})));
  EXPECT_TRUE(ValuesEqual(*sd.Find("step"), Value(int64_t{11})));
}

TEST(TorchSaveConvertTest, ConvertsAPyTorchNestedCheckpointWithItsNesting) {
  DCP_ASSERT_OK_AND_ASSIGN(StateDict sd, ConvertGolden("simple"));
  EXPECT_THAT(sd.Find("tensor_f32")->get<at::Tensor>(),
              TensorEq(Float32Golden("tensor_f32", {2, 3})));
  EXPECT_THAT(sd.Find("scalar")->get<at::Tensor>(),
              TensorEq(at::scalar_tensor(2.5, at::kFloat)));
  EXPECT_THAT(sd.Find("empty2d")->get<at::Tensor>(),
              TensorEq(at::zeros({2, 0}, at::kInt)));
  EXPECT_THAT(sd.Find("mask")->get<at::Tensor>(),
              TensorEq(at::tensor({0, 0, 1, 0, 0}).to(at::kBool)));
  EXPECT_THAT(sd.Find("u8")->get<at::Tensor>(),
              TensorEq(at::tensor({175, 178, 181}).to(at::kByte)));
  EXPECT_TRUE(ValuesEqual(*sd.Find("pair"), Value(Tuple{{int64_t{1}, "two"}})));
  EXPECT_TRUE(ValuesEqual(*sd.Find("raw"),
                          Value(Bytes{std::string("\0dcp\xff", 5)})));
  EXPECT_TRUE(ValuesEqual(*sd.Find("lr"), Value(0.001)));
  EXPECT_TRUE(sd.Find("none")->is<None>());
  // {"nested": {"inner": {"w": t, "count": 2}, "list": [t32, "x"]}}
  const StateDict& nested = sd.Find("nested")->get<StateDict>();
  const StateDict& inner = nested.Find("inner")->get<StateDict>();
  EXPECT_THAT(inner.Find("w")->get<at::Tensor>(),
              TensorEq(Float32Golden("nested.inner.w", {3})));
  EXPECT_TRUE(ValuesEqual(*inner.Find("count"), Value(int64_t{2})));
  const List& list = nested.Find("list")->get<List>();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_THAT(list[0].get<at::Tensor>(),
              TensorEq(at::tensor({30081483, 30147020}).to(at::kInt)));
  EXPECT_TRUE(ValuesEqual(list[1], Value("x")));
}

// A one-rank checkpoint of {"w": <n floats>} in `dir`, and its metadata.
Metadata SaveOneTensor(const std::string& dir, int64_t n) {
  const std::string file = JoinPath(::testing::TempDir(), "one_tensor.pt");
  EXPECT_THAT(WriteTorchSave(StateDict{{"w", at::arange(n, at::kFloat)}}, file),
              IsOk());
  FromTorchSaveOptions from;
  from.file = file;
  from.dir = dir;
  from.sync_files = false;
  std::ostringstream sink;
  EXPECT_THAT(TorchSaveToDcp(from, sink), IsOk());
  absl::StatusOr<Metadata> md = ReadCheckpointMetadata(dir);
  EXPECT_THAT(md.status(), IsOk());
  return md.ok() ? *md : Metadata();
}

void RewriteMetadata(const std::string& dir, const Metadata& md) {
  absl::StatusOr<std::string> bytes = EncodeMetadataPickle(md);
  ASSERT_THAT(bytes.status(), IsOk());
  PosixFileSystem fs;
  ASSERT_THAT(WriteStringToFile(fs, JoinPath(dir, ".metadata"), *bytes,
                                /*sync=*/false),
              IsOk());
}

TEST(TorchSaveConvertTest, MetadataClaimingMoreThanTheDataIsNotAllocated) {
  // .metadata says 2^40 floats (4 TiB) where the data file holds 4: the
  // conversion must fail before allocating (an attempt would fail with
  // Internal, or abort under ASan).
  const std::string dir = TempPath("huge_claim_ckpt");
  Metadata md = SaveOneTensor(dir, 4);
  auto& w = std::get<TensorStorageMetadata>(md.state_dict_metadata.at("w"));
  ASSERT_EQ(w.chunks.size(), 1u);
  w.size = {int64_t{1} << 40};
  w.chunks[0].sizes = w.size;
  RewriteMetadata(dir, md);
  ToTorchSaveOptions to;
  to.dir = dir;
  to.file = TempPath("huge_claim.pt");
  to.sync = false;
  std::ostringstream sink;
  EXPECT_THAT(DcpToTorchSave(to, sink),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("declares tensor \"w\" of size "
                                 "[1099511627776] (4398046511104 bytes) but "
                                 "the data files hold only ")));
  // 2^62 x 2^62 elements: the byte count itself overflows 64 bits.
  w.size = {int64_t{1} << 62, int64_t{1} << 62};
  w.chunks[0].offsets = {0, 0};
  w.chunks[0].sizes = w.size;
  const StorageInfo info = md.storage_data.begin()->second;
  md.storage_data.clear();
  md.storage_data[MetadataIndex("w", Shape{0, 0})] = info;
  RewriteMetadata(dir, md);
  EXPECT_THAT(DcpToTorchSave(to, sink),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("over 2^64")));
}

// A tensor record whose data.pkl gives a FloatStorage of 1 element (2.5)
// size `size` and stride 0.
std::string ExpandedRecord(int64_t size) {
  PickleWriter w;
  torch_pickle_internal::WriteRebuildTensor(
      w, "0", *torch_pickle_internal::FindDtype(at::kFloat), 1, 0, {size},
      {0});
  const std::string pkl = std::move(w).Finish().value();
  const std::string storage("\x00\x00\x20\x40", 4);
  return BuildZipArchive({{"archive/data.pkl", pkl},
                          {"archive/byteorder", "little"},
                          {"archive/data/0", storage},
                          {"archive/version", "3\n"}})
      .value();
}

TEST(TorchSaveConvertTest, Stride0RecordIsDataLossNamingTheRecord) {
  // A record of 100 floats that stores one (stride 0), consistent with
  // .metadata and small enough for the bytes-present check: reading it
  // must fail on the record, not materialise it.
  const std::string dir = TempPath("stride0_ckpt");
  Metadata md = SaveOneTensor(dir, 4);
  auto& w = std::get<TensorStorageMetadata>(md.state_dict_metadata.at("w"));
  w.size = {100};
  w.chunks[0].sizes = w.size;
  StorageInfo& info = md.storage_data.begin()->second;
  const std::string record = ExpandedRecord(100);
  info.offset = 0;
  info.length = static_cast<int64_t>(record.size());
  PosixFileSystem fs;
  ASSERT_THAT(WriteStringToFile(fs, JoinPath(dir, info.relative_path), record,
                                /*sync=*/false),
              IsOk());
  RewriteMetadata(dir, md);
  ToTorchSaveOptions to;
  to.dir = dir;
  to.file = TempPath("stride0.pt");
  to.sync = false;
  std::ostringstream sink;
  const absl::Status status = DcpToTorchSave(to, sink);
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kDataLoss,
                               HasSubstr("has more elements than its storage "
                                         "of 1 (zero or overlapping strides")));
  EXPECT_THAT(status.message(),
              HasSubstr(absl::StrCat("in ", JoinPath(dir, info.relative_path),
                                     " at offset 0")));
}

TEST(TorchSaveConvertTest, TensorsSharingOneRecordAreNotAllocated) {
  // Eight tensors whose chunks all point at one 4 KiB record: each fits
  // the record, together they claim eight times the bytes present.
  const std::string dir = TempPath("shared_record_ckpt");
  Metadata md = SaveOneTensor(dir, 1024);
  const auto w = std::get<TensorStorageMetadata>(md.state_dict_metadata.at("w"));
  const StorageInfo info = md.storage_data.begin()->second;
  for (int i = 0; i < 8; ++i) {
    const std::string fqn = absl::StrCat("copy", i);
    md.state_dict_metadata[fqn] = w;
    md.storage_data[MetadataIndex(fqn, w.chunks[0].offsets)] = info;
  }
  RewriteMetadata(dir, md);
  ToTorchSaveOptions to;
  to.dir = dir;
  to.file = TempPath("shared_record.pt");
  to.sync = false;
  std::ostringstream sink;
  EXPECT_THAT(DcpToTorchSave(to, sink),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("declares more bytes of tensors than the")));
}

TEST(TorchSaveConvertTest, HugeListIndexInThePlannerDataIsDataLoss) {
  // {"w": ...} re-filed by .metadata under ["w", 2^40]: unflattening would
  // pad a list with 2^40 placeholders.
  const std::string dir = TempPath("list_index_ckpt");
  Metadata md = SaveOneTensor(dir, 4);
  ToTorchSaveOptions to;
  to.dir = dir;
  to.file = TempPath("list_index.pt");
  to.sync = false;
  std::ostringstream sink;
  for (int64_t index : {int64_t{1} << 40, int64_t{-1}}) {
    SCOPED_TRACE(index);
    md.planner_data["w"] = ObjectPath{std::string("w"), index};
    RewriteMetadata(dir, md);
    EXPECT_THAT(DcpToTorchSave(to, sink),
                StatusIs(absl::StatusCode::kDataLoss,
                         HasSubstr(absl::StrCat("the path of \"w\" has list "
                                                "index ", index))));
  }
  // A small index is a list, as PyTorch would nest it.
  md.planner_data["w"] = ObjectPath{std::string("w"), int64_t{2}};
  RewriteMetadata(dir, md);
  ASSERT_THAT(DcpToTorchSave(to, sink), IsOk());
  DCP_ASSERT_OK_AND_ASSIGN(StateDict back, ReadTorchSave(to.file));
  const List& list = back.Find("w")->get<List>();
  ASSERT_EQ(list.size(), 3u);
  EXPECT_TRUE(list[0].is<None>());
  EXPECT_THAT(list[2].get<at::Tensor>(), TensorEq(at::arange(4, at::kFloat)));
}

TEST(TorchSaveConvertTest, ReportsBadInputs) {
  std::ostringstream sink;
  ToTorchSaveOptions to;
  to.dir = TempPath("no_such_checkpoint");
  to.file = TempPath("never.pt");
  EXPECT_THAT(DcpToTorchSave(to, sink), StatusIs(absl::StatusCode::kNotFound));

  FromTorchSaveOptions from;
  from.file = TempPath("missing.pt");
  from.dir = TempPath("never_ckpt");
  EXPECT_THAT(TorchSaveToDcp(from, sink),
              StatusIs(absl::StatusCode::kNotFound));
  from.world_size = 0;
  EXPECT_THAT(TorchSaveToDcp(from, sink),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace dcp::tools
