// Single-process tests of FileSystemWriter / FileSystemReader: round trips
// of every dtype and odd tensor layouts, the on-disk layout and commit
// order, partial reads, bad input, and a seeded mutation test. Multi-rank
// resharding and crash consistency are in fs_storage_multirank_test.cc.
#include "storage/fs_storage.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <mutex>  // NOLINT(build/c++11)
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <variant>
#include <vector>

#include "ATen/ATen.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "checkpoint/save_load.h"
#include "core/metadata.h"
#include "core/metadata_codec.h"
#include "core/sharding.h"
#include "core/state_dict.h"
#include "core/status.h"
#include "glog/logging.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "planner/default_load_planner.h"
#include "storage/block_checksums.h"
#include "storage/crc32.h"
#include "storage/file_system.h"
#include "storage/metadata_pickle.h"
#include "storage/metadata_sidecar.h"
#include "storage/posix_file_system.h"
#include "storage/torch_record.h"
#include "testing/checkpoint_scenarios.h"
#include "testing/fault_injecting_file_system.h"
#include "testing/forwarding_storage.h"
#include "testing/mem_file_system.h"
#include "testing/simulator.h"
#include "testing/status_matchers.h"
#include "testing/tensor_matchers.h"
#include "testing/test_seed.h"

namespace dcp {
namespace {

using ::dcp::test::CheckModelStateDict;
using ::dcp::test::FaultInjectingFileSystem;
using ::dcp::test::FileOp;
using ::dcp::test::ForwardingStorageWriter;
using ::dcp::test::IsOk;
using ::dcp::test::IsOkAndHolds;
using ::dcp::test::MakeModelStateDict;
using ::dcp::test::MakeTestTensor;
using ::dcp::test::MemFileSystem;
using ::dcp::test::ModelLayout;
using ::dcp::test::ModelValues;
using ::dcp::test::RankContext;
using ::dcp::test::Simulator;
using ::dcp::test::SimulatorOptions;
using ::dcp::test::StatusIs;
using ::dcp::test::TensorEq;
using ::testing::AllOf;
using ::testing::ContainsRegex;
using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::SizeIs;

constexpr absl::string_view kDir = "/ckpt";

// ---- Helpers ----------------------------------------------------------------

// Counts the bytes read through the files it opens, per path.
class CountingFileSystem : public FileSystemWrapper {
 public:
  using FileSystemWrapper::FileSystemWrapper;

  using FileSystemWrapper::NewRandomAccessFile;
  absl::StatusOr<std::unique_ptr<RandomAccessFile>> NewRandomAccessFile(
      absl::string_view path, const RandomAccessFileOptions& options) override {
    DCP_ASSIGN_OR_RETURN(std::unique_ptr<RandomAccessFile> file,
                         FileSystemWrapper::NewRandomAccessFile(path, options));
    return std::unique_ptr<RandomAccessFile>(
        new CountingFile(std::move(file), std::string(path), this));
  }

  // Bytes read from files whose path ends with `suffix`.
  uint64_t BytesRead(absl::string_view suffix) const {
    std::lock_guard<std::mutex> lock(mu_);
    uint64_t total = 0;
    for (const auto& [path, bytes] : bytes_read_) {
      if (absl::EndsWith(path, suffix)) total += bytes;
    }
    return total;
  }
  // Read calls on files whose path ends with `suffix`.
  uint64_t ReadCalls(absl::string_view suffix) const {
    std::lock_guard<std::mutex> lock(mu_);
    uint64_t total = 0;
    for (const auto& [path, calls] : read_calls_) {
      if (absl::EndsWith(path, suffix)) total += calls;
    }
    return total;
  }
  void Clear() {
    std::lock_guard<std::mutex> lock(mu_);
    bytes_read_.clear();
    read_calls_.clear();
  }

 private:
  class CountingFile : public RandomAccessFile {
   public:
    CountingFile(std::unique_ptr<RandomAccessFile> file, std::string path,
                 CountingFileSystem* fs)
        : file_(std::move(file)), path_(std::move(path)), fs_(fs) {}
    absl::StatusOr<absl::string_view> Read(uint64_t offset, size_t n,
                                           char* scratch) const override {
      fs_->Count(path_, n);
      return file_->Read(offset, n, scratch);
    }
    uint64_t size() const override { return file_->size(); }

   private:
    std::unique_ptr<RandomAccessFile> file_;
    std::string path_;
    CountingFileSystem* fs_;
  };

  void Count(const std::string& path, uint64_t n) {
    std::lock_guard<std::mutex> lock(mu_);
    bytes_read_[path] += n;
    ++read_calls_[path];
  }

  mutable std::mutex mu_;
  std::map<std::string, uint64_t> bytes_read_;
  std::map<std::string, uint64_t> read_calls_;
};

absl::StatusOr<Metadata> SaveTo(std::shared_ptr<FileSystem> fs,
                                absl::string_view dir, const StateDict& sd,
                                FileSystemWriterOptions options = {}) {
  options.file_system = std::move(fs);
  DCP_ASSIGN_OR_RETURN(std::unique_ptr<FileSystemWriter> writer,
                       FileSystemWriter::Create(std::string(dir), options));
  SaveOptions save;
  save.no_dist = true;
  return Save(sd, *writer, save);
}

absl::Status LoadFrom(std::shared_ptr<FileSystem> fs, absl::string_view dir,
                      StateDict& sd, FileSystemReaderOptions options = {}) {
  options.file_system = std::move(fs);
  DCP_ASSIGN_OR_RETURN(std::unique_ptr<FileSystemReader> reader,
                       FileSystemReader::Create(std::string(dir), options));
  LoadOptions load;
  load.no_dist = true;
  return Load(sd, *reader, load);
}

// The model's state dict for a one-rank save with `seed`'s values.
StateDict ModelVersion(int seed) {
  absl::StatusOr<StateDict> sd =
      MakeModelStateDict(0, 1, ModelLayout::kSave, ModelValues::kTrue, seed);
  CHECK(sd.ok()) << sd.status();
  return *std::move(sd);
}

// Loads the model from `dir` and checks it has `seed`'s values.
absl::Status LoadModelVersion(std::shared_ptr<FileSystem> fs,
                              absl::string_view dir, int seed) {
  DCP_ASSIGN_OR_RETURN(
      StateDict dest,
      MakeModelStateDict(0, 1, ModelLayout::kLoad, ModelValues::kPlaceholder));
  DCP_RETURN_IF_ERROR(LoadFrom(std::move(fs), dir, dest));
  return CheckModelStateDict(dest, 0, 1, ModelLayout::kLoad, seed);
}

// Names (not paths) of the files directly in `dir`.
std::vector<std::string> Children(FileSystem& fs, absl::string_view dir) {
  absl::StatusOr<std::vector<std::string>> children = fs.GetChildren(dir);
  CHECK(children.ok()) << children.status();
  return *children;
}

std::vector<std::string> DataFiles(FileSystem& fs, absl::string_view dir) {
  std::vector<std::string> out;
  for (const std::string& name : Children(fs, dir)) {
    if (absl::EndsWith(name, ".distcp")) out.push_back(name);
  }
  return out;
}

std::string ReadFile(FileSystem& fs, absl::string_view path) {
  absl::StatusOr<std::string> data = ReadFileToString(fs, path);
  CHECK(data.ok()) << data.status();
  return *data;
}

// The token of the save that wrote `md`: the random part of its data file
// names, "__<rank>_<n>_<token>.distcp".
std::string SaveTokenOf(const Metadata& md) {
  CHECK(!md.storage_data.empty());
  absl::string_view name = md.storage_data.begin()->second.relative_path;
  CHECK(absl::ConsumeSuffix(&name, ".distcp")) << name;
  return std::string(name.substr(name.rfind('_') + 1));
}

void WriteFile(FileSystem& fs, absl::string_view path, absl::string_view data) {
  absl::Status status = WriteStringToFile(fs, path, data, /*sync=*/false);
  CHECK(status.ok()) << status;
}

// The storage entry of a tensor key (first chunk) or a bytes key.
const StorageInfo& InfoOf(const Metadata& md, absl::string_view fqn) {
  auto it =
      std::find_if(md.storage_data.begin(), md.storage_data.end(),
                   [&](const auto& entry) { return entry.first.fqn == fqn; });
  CHECK(it != md.storage_data.end()) << "no storage entry for " << fqn;
  return it->second;
}

// A tensor saved from `source` and the value it must load as.
struct TensorCase {
  std::string key;
  at::Tensor source;    // What is saved (possibly a view).
  at::Tensor expected;  // Contiguous, conj/neg resolved.
};

std::vector<TensorCase> EveryDtypeCases() {
  std::vector<TensorCase> cases;
  auto add = [&](std::string key, at::Tensor source) {
    at::Tensor expected =
        source.resolve_conj().resolve_neg().contiguous().clone();
    cases.push_back({std::move(key), std::move(source), std::move(expected)});
  };
  const std::vector<c10::ScalarType> dtypes = {
      c10::kBool,  c10::kByte,   c10::kChar,         c10::kShort,
      c10::kInt,   c10::kLong,   c10::kHalf,         c10::kBFloat16,
      c10::kFloat, c10::kDouble, c10::kComplexFloat, c10::kComplexDouble};
  int seed = 1;
  for (c10::ScalarType dtype : dtypes) {
    add(absl::StrCat("dtype.", DtypeName(dtype)),
        MakeTestTensor({3, 4}, dtype, seed++));
  }
  add("zero_d", MakeTestTensor({}, c10::kFloat, 50));
  add("zero_d_long", MakeTestTensor({}, c10::kLong, 51));
  add("empty", at::empty({0, 3}, at::kFloat));
  add("empty_middle", at::zeros({2, 0, 4}, at::kInt));
  // Non-contiguous inputs: saved with their strides when their storage is
  // exactly their elements, compacted otherwise.
  add("transposed", MakeTestTensor({4, 6}, c10::kDouble, 60).t());
  add("permuted",
      MakeTestTensor({2, 3, 4}, c10::kBFloat16, 61).permute({2, 0, 1}));
  add("narrowed", MakeTestTensor({8, 5}, c10::kFloat, 62).narrow(0, 2, 3));
  add("every_other", MakeTestTensor({4, 10}, c10::kLong, 63)
                         .slice(/*dim=*/1, 0, 10, /*step=*/2));
  add("expanded", MakeTestTensor({1, 5}, c10::kHalf, 64).expand({3, 5}));
  add("conj", MakeTestTensor({2, 3}, c10::kComplexFloat, 65).conj());
  add("column", MakeTestTensor({6, 3}, c10::kShort, 66).select(1, 1));
  return cases;
}

StateDict NonTensorValues(bool real) {
  StateDict nested;
  nested.Set("lr", real ? 0.125 : 0.0);
  nested.Set("names", real ? Value(List{"a", "b"}) : Value(List{}));
  StateDict sd;
  sd.Set("step", real ? int64_t{7} : int64_t{0});
  sd.Set("name", real ? "fs" : "");
  sd.Set("flag", real);
  sd.Set("blob", real ? Bytes{std::string("\0\1\2", 3)} : Bytes{});
  sd.Set("nothing", real ? Value(None{}) : Value(int64_t{1}));
  sd.Set("nested", std::move(nested));
  return sd;
}

// ---- Round trips ------------------------------------------------------------

struct RoundTripParam {
  int writer_threads;
  bool single_file_per_rank;
  int reader_threads;
  bool verify_checksums;
  bool posix;
};

class RoundTripTest : public ::testing::TestWithParam<RoundTripParam> {
 protected:
  std::shared_ptr<FileSystem> fs() {
    if (GetParam().posix) return NewPosixFileSystem();
    return mem_;
  }
  std::string dir() {
    if (!GetParam().posix) return std::string(kDir);
    const ::testing::TestInfo* info =
        ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = absl::StrCat(info->test_suite_name(), "_", info->name());
    std::replace(name.begin(), name.end(), '/', '_');
    return JoinPath(::testing::TempDir(), name);
  }

  std::shared_ptr<MemFileSystem> mem_ = std::make_shared<MemFileSystem>();
};

TEST_P(RoundTripTest, EveryDtypeAndLayoutLoadsExactly) {
  const RoundTripParam& p = GetParam();
  const std::vector<TensorCase> cases = EveryDtypeCases();
  StateDict source = NonTensorValues(true);
  StateDict dest = NonTensorValues(false);
  StateDict expected = NonTensorValues(true);
  for (const TensorCase& c : cases) {
    source.Set(c.key, c.source);
    expected.Set(c.key, c.expected);
    dest.Set(c.key, at::zeros_like(c.expected));
  }
  // A non-contiguous destination is filled in place.
  at::Tensor transposed_base = at::zeros({4, 6}, at::kDouble);
  dest.Set("transposed", transposed_base.t());

  FileSystemWriterOptions w;
  w.thread_count = p.writer_threads;
  w.single_file_per_rank = p.single_file_per_rank;
  DCP_ASSERT_OK(SaveTo(fs(), dir(), source, w).status());
  FileSystemReaderOptions r;
  r.thread_count = p.reader_threads;
  r.verify_checksums = p.verify_checksums;
  DCP_ASSERT_OK(LoadFrom(fs(), dir(), dest, r));

  EXPECT_THAT(dest, test::StateDictEq(expected));
  EXPECT_THAT(transposed_base.t(),
              TensorEq(expected.Find("transposed")->get<at::Tensor>()));
}

INSTANTIATE_TEST_SUITE_P(
    Options, RoundTripTest,
    ::testing::Values(RoundTripParam{1, true, 1, true, false},
                      RoundTripParam{4, true, 4, true, false},
                      RoundTripParam{1, false, 1, false, false},
                      RoundTripParam{4, false, 4, false, false},
                      RoundTripParam{4, true, 1, false, false},
                      RoundTripParam{1, true, 4, true, true},
                      RoundTripParam{4, true, 4, false, true},
                      RoundTripParam{4, false, 2, true, true}),
    [](const ::testing::TestParamInfo<RoundTripParam>& info) {
      const RoundTripParam& p = info.param;
      return absl::StrCat(p.posix ? "Posix" : "Mem", "_w", p.writer_threads,
                          p.single_file_per_rank ? "_perRank" : "_perItem",
                          "_r", p.reader_threads,
                          p.verify_checksums ? "_verify" : "_noVerify");
    });

TEST(FsStorageTest, EmptyStateDictWritesMetadataAndOneEmptyFile) {
  auto fs = std::make_shared<MemFileSystem>();
  DCP_ASSERT_OK_AND_ASSIGN(Metadata md, SaveTo(fs, kDir, StateDict()));
  EXPECT_TRUE(md.state_dict_metadata.empty());
  EXPECT_TRUE(md.storage_data.empty());
  const std::vector<std::string> data = DataFiles(*fs, kDir);
  ASSERT_THAT(data, SizeIs(1));
  EXPECT_THAT(fs->FileSize(JoinPath(kDir, data[0])), test::IsOkAndHolds(0));
  StateDict dest;
  DCP_EXPECT_OK(LoadFrom(fs, kDir, dest));
}

TEST(FsStorageTest, RelativeAndNestedDirectoriesAreCreated) {
  auto fs = std::make_shared<MemFileSystem>();
  StateDict sd{{"w", MakeTestTensor({3}, c10::kFloat, 1)}};
  DCP_ASSERT_OK(SaveTo(fs, "a/b/c", sd).status());
  EXPECT_THAT(Children(*fs, "a/b/c"), ::testing::Contains(".metadata"));
  StateDict dest{{"w", at::zeros({3})}};
  DCP_ASSERT_OK(LoadFrom(fs, "a/b/c", dest));
  EXPECT_THAT(dest.Find("w")->get<at::Tensor>(),
              TensorEq(MakeTestTensor({3}, c10::kFloat, 1)));
}

// ---- Layout -----------------------------------------------------------------

TEST(FsStorageLayoutTest, FileNamesMetadataAndRecordsFollowPyTorch) {
  auto fs = std::make_shared<MemFileSystem>();
  StateDict sd = NonTensorValues(true);
  sd.Set("a", MakeTestTensor({4, 5}, c10::kFloat, 1));
  sd.Set("b", MakeTestTensor({3}, c10::kLong, 2));
  DCP_ASSERT_OK_AND_ASSIGN(Metadata md, SaveTo(fs, kDir, sd));

  ASSERT_TRUE(md.storage_meta.has_value());
  EXPECT_EQ(md.storage_meta->checkpoint_id, std::string(kDir));
  ASSERT_TRUE(md.storage_meta->save_id.has_value());
  EXPECT_EQ(md.version, std::string("1.0.0"));
  const std::string token = SaveTokenOf(md);
  const std::string name = absl::StrCat("__0_0_", token, ".distcp");
  EXPECT_THAT(Children(*fs, kDir),
              ElementsAre(".dcp.lock", ".dcp.metadata", ".metadata", name));

  // What was written is what .metadata says (read back through the file).
  DCP_ASSERT_OK_AND_ASSIGN(Metadata on_disk,
                           ReadCheckpointMetadata(std::string(kDir), fs));
  EXPECT_EQ(on_disk, md);

  // Bytes items first, then tensors, back to back from offset 0 with no
  // padding, each a complete zip record.
  std::vector<std::pair<int64_t, const MetadataIndex*>> by_offset;
  for (const auto& [index, info] : md.storage_data) {
    EXPECT_EQ(info.relative_path, name);
    by_offset.emplace_back(info.offset, &index);
  }
  std::sort(by_offset.begin(), by_offset.end());
  const std::string file = ReadFile(*fs, JoinPath(kDir, name));
  int64_t end = 0;
  bool seen_tensor = false;
  for (const auto& [offset, index] : by_offset) {
    const StorageInfo& info = md.storage_data.at(*index);
    EXPECT_EQ(info.offset, end) << *index;
    end = info.offset + info.length;
    EXPECT_EQ(file.substr(info.offset, 4), "PK\x03\x04") << *index;
    const bool is_tensor = index->offset.has_value();
    EXPECT_TRUE(is_tensor || !seen_tensor) << *index << " after a tensor";
    seen_tensor |= is_tensor;
  }
  EXPECT_EQ(end, static_cast<int64_t>(file.size()));
  // A tensor record is what torch.save writes for the tensor.
  const StorageInfo& a = InfoOf(md, "a");
  DCP_ASSERT_OK_AND_ASSIGN(
      std::string record,
      SerializeTensorRecord(MakeTestTensor({4, 5}, c10::kFloat, 1)));
  EXPECT_EQ(file.substr(a.offset, a.length), record);
}

// The writer checksums each record's data while writing it and patches the
// CRC into the header afterwards (WriteTensorRecordOnePass): the files must
// hold exactly the records the two-pass layout (SerializeTensorRecord)
// gives, for data larger than a block too.
TEST(FsStorageLayoutTest, OnePassRecordsAreTheTwoPassRecordsByteForByte) {
  auto faulty = std::make_shared<FaultInjectingFileSystem>(
      std::make_shared<MemFileSystem>());
  // 6 MiB: more than one block (kOnePassBlockSize), so its CRC is patched.
  at::Tensor big = MakeTestTensor({1536, 1024}, c10::kFloat, 11);
  ASSERT_GT(static_cast<size_t>(big.numel()) * 4, kOnePassBlockSize);
  at::Tensor other = MakeTestTensor({40, 30}, c10::kDouble, 12);
  std::map<std::string, at::Tensor> tensors = {
      {"big", big},
      {"big_transposed", MakeTestTensor({1100, 1200}, c10::kFloat, 13).t()},
      {"column_slice", other.slice(1, 3, 9)},
      {"empty", at::empty({0, 7}, c10::kFloat)},
      {"scalar", at::scalar_tensor(2.5, c10::kDouble)},
      {"small", MakeTestTensor({3}, c10::kLong, 14)},
  };
  StateDict sd;
  for (const auto& [key, t] : tensors) sd.Set(key, t);
  DCP_ASSERT_OK_AND_ASSIGN(Metadata md, SaveTo(faulty, kDir, sd));
  for (const auto& [key, t] : tensors) {
    SCOPED_TRACE(key);
    const StorageInfo& info = InfoOf(md, key);
    const std::string file = ReadFile(*faulty, JoinPath(kDir, info.relative_path));
    DCP_ASSERT_OK_AND_ASSIGN(std::string expected, SerializeTensorRecord(t));
    ASSERT_EQ(info.length, static_cast<int64_t>(expected.size()));
    EXPECT_TRUE(file.substr(info.offset, info.length) == expected)
        << "the saved record differs from the two-pass layout";
  }
  // The big records' CRCs were patched in place: one 4-byte (at most)
  // overwrite each, in the file holding them.
  int patches = 0;
  for (const std::string& entry : faulty->mutation_log()) {
    if (absl::StartsWith(entry, "writeat ")) {
      ++patches;
      EXPECT_TRUE(absl::EndsWith(entry, " 4") || absl::EndsWith(entry, " 3") ||
                  absl::EndsWith(entry, " 2") || absl::EndsWith(entry, " 1"))
          << entry;
    }
  }
  EXPECT_EQ(patches, 2);
  // And the checkpoint loads back, CRCs verified.
  StateDict dest;
  for (const auto& [key, t] : tensors) {
    dest.Set(key, at::zeros(t.sizes(), t.options()));
  }
  FileSystemReaderOptions read;
  read.verify_checksums = true;
  DCP_ASSERT_OK(LoadFrom(faulty, kDir, dest, read));
  for (const auto& [key, t] : tensors) {
    EXPECT_THAT(dest.Find(key)->get<at::Tensor>(), TensorEq(t)) << key;
  }
}

TEST(FsStorageLayoutTest, FailedCrcPatchFailsTheSaveAndCommitsNothing) {
  auto faulty = std::make_shared<FaultInjectingFileSystem>(
      std::make_shared<MemFileSystem>());
  faulty->AddRule({FileOp::kWriteAt, ".distcp", /*nth=*/1, /*times=*/1,
                   absl::UnavailableError("pwrite failed")});
  StateDict sd;
  sd.Set("big", MakeTestTensor({1536, 1024}, c10::kFloat, 11));
  EXPECT_THAT(SaveTo(faulty, kDir, sd).status(),
              StatusIs(absl::StatusCode::kUnavailable,
                       AllOf(HasSubstr("writeat"), HasSubstr("pwrite failed"),
                             HasSubstr("big"))));
  EXPECT_THAT(faulty->Exists(JoinPath(kDir, ".metadata")),
              IsOkAndHolds(false));
}

TEST(FsStorageLayoutTest, ThreadsSplitItemsLikePyTorch) {
  auto fs = std::make_shared<MemFileSystem>();
  StateDict sd;
  sd.Set("x", int64_t{1});
  sd.Set("c", at::zeros({50}));  // 200 bytes
  sd.Set("y", "two");
  sd.Set("a", at::zeros({100}));  // 400 bytes
  sd.Set("d", at::zeros({25}));   // 100 bytes
  sd.Set("b", at::zeros({75}));   // 300 bytes
  sd.Set("z", 3.0);
  FileSystemWriterOptions options;
  options.thread_count = 2;
  DCP_ASSERT_OK_AND_ASSIGN(Metadata md, SaveTo(fs, kDir, sd, options));
  const std::string token = SaveTokenOf(md);
  const std::string f0 = absl::StrCat("__0_0_", token, ".distcp");
  const std::string f1 = absl::StrCat("__0_1_", token, ".distcp");
  // Bytes items round-robin in plan order; tensors by descending size into
  // the least-loaded file: a(400)->0, b(300)->1, c(200)->1, d(100)->0.
  EXPECT_EQ(InfoOf(md, "x").relative_path, f0);
  EXPECT_EQ(InfoOf(md, "y").relative_path, f1);
  EXPECT_EQ(InfoOf(md, "z").relative_path, f0);
  EXPECT_EQ(InfoOf(md, "a").relative_path, f0);
  EXPECT_EQ(InfoOf(md, "d").relative_path, f0);
  EXPECT_EQ(InfoOf(md, "b").relative_path, f1);
  EXPECT_EQ(InfoOf(md, "c").relative_path, f1);
  // In each file: bytes first, then tensors in bucket (descending) order.
  EXPECT_EQ(InfoOf(md, "x").offset, 0);
  EXPECT_LT(InfoOf(md, "z").offset, InfoOf(md, "a").offset);
  EXPECT_LT(InfoOf(md, "a").offset, InfoOf(md, "d").offset);
  EXPECT_EQ(InfoOf(md, "y").offset, 0);
  EXPECT_LT(InfoOf(md, "y").offset, InfoOf(md, "b").offset);
  EXPECT_LT(InfoOf(md, "b").offset, InfoOf(md, "c").offset);
  EXPECT_THAT(
      fs->FileSize(JoinPath(kDir, f0)),
      test::IsOkAndHolds(InfoOf(md, "d").offset + InfoOf(md, "d").length));
}

TEST(FsStorageLayoutTest, EmptyBucketStillCreatesItsFile) {
  auto fs = std::make_shared<MemFileSystem>();
  StateDict sd{{"a", at::ones({4})}, {"b", at::ones({2})}};
  FileSystemWriterOptions options;
  options.thread_count = 3;
  DCP_ASSERT_OK_AND_ASSIGN(Metadata md, SaveTo(fs, kDir, sd, options));
  const std::string token = SaveTokenOf(md);
  EXPECT_THAT(DataFiles(*fs, kDir),
              ElementsAre(absl::StrCat("__0_0_", token, ".distcp"),
                          absl::StrCat("__0_1_", token, ".distcp"),
                          absl::StrCat("__0_2_", token, ".distcp")));
  EXPECT_THAT(
      fs->FileSize(JoinPath(kDir, absl::StrCat("__0_2_", token, ".distcp"))),
      test::IsOkAndHolds(0));
}

TEST(FsStorageLayoutTest, OneFilePerItem) {
  auto fs = std::make_shared<MemFileSystem>();
  StateDict sd{{"a", at::ones({4})}, {"n", int64_t{5}}, {"b", at::ones({2})}};
  FileSystemWriterOptions options;
  options.single_file_per_rank = false;
  options.thread_count = 2;
  DCP_ASSERT_OK_AND_ASSIGN(Metadata md, SaveTo(fs, kDir, sd, options));
  const std::string token = SaveTokenOf(md);
  EXPECT_THAT(DataFiles(*fs, kDir), SizeIs(3));
  std::vector<std::string> names;
  for (const auto& [index, info] : md.storage_data) {
    EXPECT_EQ(info.offset, 0);
    EXPECT_THAT(fs->FileSize(JoinPath(kDir, info.relative_path)),
                test::IsOkAndHolds(info.length));
    names.push_back(info.relative_path);
  }
  std::sort(names.begin(), names.end());
  EXPECT_THAT(names, ElementsAre(absl::StrCat("__0_0_", token, ".distcp"),
                                 absl::StrCat("__0_1_", token, ".distcp"),
                                 absl::StrCat("__0_2_", token, ".distcp")));
}

// The op log index of the first entry equal to `op`, or -1.
int IndexOf(const std::vector<std::string>& log, absl::string_view op) {
  auto it = std::find(log.begin(), log.end(), op);
  return it == log.end() ? -1 : static_cast<int>(it - log.begin());
}

TEST(FsStorageLayoutTest, DataIsDurableBeforeMetadataIsRenamedIntoPlace) {
  auto faulty = std::make_shared<FaultInjectingFileSystem>(
      std::make_shared<MemFileSystem>());
  DCP_ASSERT_OK_AND_ASSIGN(
      StateDict sd,
      MakeModelStateDict(0, 1, ModelLayout::kSave, ModelValues::kTrue));
  FileSystemWriterOptions options;
  options.thread_count = 3;
  DCP_ASSERT_OK_AND_ASSIGN(Metadata md, SaveTo(faulty, kDir, sd, options));
  const std::vector<std::string> log = faulty->mutation_log();
  const std::string dir(kDir);
  const std::string token = SaveTokenOf(md);
  const std::string tmp = absl::StrCat(dir, "/.metadata.tmp.", token);
  const int rename =
      IndexOf(log, absl::StrCat("rename ", tmp, " ", dir, "/.metadata"));
  ASSERT_GE(rename, 0) << ::testing::PrintToString(log);
  int last_data_sync = -1;
  const std::vector<std::string> data = DataFiles(*faulty, kDir);
  ASSERT_THAT(data, SizeIs(3));
  for (const std::string& name : data) {
    const std::string path = JoinPath(dir, name);
    const int sync = IndexOf(log, absl::StrCat("sync ", path));
    const int close = IndexOf(log, absl::StrCat("close ", path));
    EXPECT_GE(sync, 0) << name;
    EXPECT_GT(close, sync) << name;
    EXPECT_LT(close, rename) << name;
    last_data_sync = std::max(last_data_sync, sync);
  }
  // The directory is synced after the data files and before the rename.
  int dir_sync = -1;
  for (int i = last_data_sync; i < rename; ++i) {
    if (log[i] == absl::StrCat("syncdir ", dir)) dir_sync = i;
  }
  EXPECT_GT(dir_sync, last_data_sync);
  // .metadata is only ever created as the synced temporary file.
  EXPECT_LT(IndexOf(log, absl::StrCat("sync ", tmp)), rename);
  EXPECT_EQ(IndexOf(log, absl::StrCat("create ", dir, "/.metadata")), -1);
  // And the rename is made durable.
  EXPECT_EQ(log[rename + 1], absl::StrCat("syncdir ", dir));
  // New directories are made durable too.
  EXPECT_GE(IndexOf(log, "syncdir /"), 0);
}

TEST(FsStorageLayoutTest, WithoutSyncFilesNothingIsSynced) {
  auto faulty = std::make_shared<FaultInjectingFileSystem>(
      std::make_shared<MemFileSystem>());
  FileSystemWriterOptions options;
  options.sync_files = false;
  DCP_ASSERT_OK(
      SaveTo(faulty, kDir, StateDict{{"w", at::ones({2})}}, options).status());
  for (const std::string& op : faulty->mutation_log()) {
    EXPECT_FALSE(absl::StartsWith(op, "sync")) << op;
  }
}

// ---- Overwriting
// --------------------------------------------------------------

TEST(FsStorageOverwriteTest, NewSaveReplacesOldOneAndRemovesItsFiles) {
  auto fs = std::make_shared<MemFileSystem>();
  DCP_ASSERT_OK_AND_ASSIGN(
      StateDict v1,
      MakeModelStateDict(0, 1, ModelLayout::kSave, ModelValues::kTrue, 0));
  DCP_ASSERT_OK_AND_ASSIGN(
      StateDict v2,
      MakeModelStateDict(0, 1, ModelLayout::kSave, ModelValues::kTrue, 1));
  DCP_ASSERT_OK_AND_ASSIGN(Metadata md1, SaveTo(fs, kDir, v1));
  // Leftovers of a crashed save.
  WriteFile(*fs, JoinPath(kDir, ".metadata.tmp.deadbeef"), "x");
  WriteFile(*fs, JoinPath(kDir, "__0_0_deadbeef.distcp"), "y");
  WriteFile(*fs, JoinPath(kDir, "unrelated.txt"), "z");
  DCP_ASSERT_OK_AND_ASSIGN(Metadata md2, SaveTo(fs, kDir, v2));
  EXPECT_NE(md1.storage_meta->save_id, md2.storage_meta->save_id);

  std::vector<std::string> expected = {".dcp.lock", ".dcp.metadata",
                                       ".metadata"};
  for (const auto& [index, info] : md2.storage_data) {
    expected.push_back(info.relative_path);
  }
  expected.push_back("unrelated.txt");
  std::sort(expected.begin(), expected.end());
  expected.erase(std::unique(expected.begin(), expected.end()), expected.end());
  EXPECT_EQ(Children(*fs, kDir), expected);

  DCP_ASSERT_OK_AND_ASSIGN(
      StateDict dest,
      MakeModelStateDict(0, 1, ModelLayout::kLoad, ModelValues::kPlaceholder));
  DCP_ASSERT_OK(LoadFrom(fs, kDir, dest));
  DCP_EXPECT_OK(CheckModelStateDict(dest, 0, 1, ModelLayout::kLoad, 1));
}

TEST(FsStorageOverwriteTest, StaleFilesAreKeptWhenAsked) {
  auto fs = std::make_shared<MemFileSystem>();
  DCP_ASSERT_OK_AND_ASSIGN(Metadata md1,
                           SaveTo(fs, kDir, StateDict{{"w", at::ones({2})}}));
  FileSystemWriterOptions options;
  options.remove_stale_files = false;
  DCP_ASSERT_OK_AND_ASSIGN(
      Metadata md2,
      SaveTo(fs, kDir, StateDict{{"w", at::zeros({2})}}, options));
  EXPECT_THAT(DataFiles(*fs, kDir), SizeIs(2));
  EXPECT_THAT(Children(*fs, kDir),
              ::testing::Contains(InfoOf(md1, "w").relative_path));
}

// ---- The metadata sidecar -----------------------------------------------------

TEST(FsStorageSidecarTest, LoadsReadTheSidecarOnlyWhileItMatchesMetadata) {
  auto fs = std::make_shared<MemFileSystem>();
  DCP_ASSERT_OK_AND_ASSIGN(Metadata saved, SaveTo(fs, kDir, ModelVersion(1)));
  const std::string pickle = ReadFile(*fs, JoinPath(kDir, ".metadata"));
  const std::string sidecar_path = JoinPath(kDir, ".dcp.metadata");
  DCP_ASSERT_OK_AND_ASSIGN(Metadata from_pickle, DecodeMetadataPickle(pickle));
  EXPECT_EQ(DecodeMetadataSidecar(ReadFile(*fs, sidecar_path), pickle).value(),
            from_pickle);
  DCP_EXPECT_OK(LoadModelVersion(fs, kDir, 1));

  // A sidecar made for these .metadata bytes is believed: one that says
  // something else shows which of the two a read used.
  Metadata marked = from_pickle;
  marked.version = "from the sidecar";
  WriteFile(*fs, sidecar_path, EncodeMetadataSidecar(marked, pickle));
  DCP_ASSERT_OK_AND_ASSIGN(Metadata read,
                           ReadCheckpointMetadata(std::string(kDir), fs));
  EXPECT_EQ(read.version, std::string("from the sidecar"));
  FileSystemReaderOptions no_sidecar;
  no_sidecar.file_system = fs;
  no_sidecar.use_metadata_sidecar = false;
  DCP_ASSERT_OK_AND_ASSIGN(
      read, ReadCheckpointMetadata(std::string(kDir), no_sidecar));
  EXPECT_EQ(read.version, std::string("1.0.0"));

  // .metadata replaced (PyTorch saving over it leaves the sidecar): stale.
  Metadata replaced = from_pickle;
  replaced.version = "replaced";
  DCP_ASSERT_OK_AND_ASSIGN(std::string replaced_pickle,
                           EncodeMetadataPickle(replaced));
  WriteFile(*fs, JoinPath(kDir, ".metadata"), replaced_pickle);
  DCP_ASSERT_OK_AND_ASSIGN(read, ReadCheckpointMetadata(std::string(kDir), fs));
  EXPECT_EQ(read.version, std::string("replaced"));

  // Damaged, or not a regular file: the pickle, and the load is exact.
  WriteFile(*fs, JoinPath(kDir, ".metadata"), pickle);
  WriteFile(*fs, sidecar_path, "DCPMETA1 but nothing else");
  DCP_EXPECT_OK(LoadModelVersion(fs, kDir, 1));
  DCP_ASSERT_OK(fs->RemoveFile(sidecar_path));
  DCP_ASSERT_OK(fs->CreateDir(sidecar_path));
  DCP_EXPECT_OK(LoadModelVersion(fs, kDir, 1));
}

TEST(FsStorageSidecarTest, WritingItIsOptionalAndBestEffort) {
  auto fs = std::make_shared<MemFileSystem>();
  FileSystemWriterOptions options;
  options.write_metadata_sidecar = false;
  DCP_ASSERT_OK(SaveTo(fs, kDir, ModelVersion(1), options).status());
  EXPECT_THAT(Children(*fs, kDir), Not(::testing::Contains(".dcp.metadata")));
  DCP_EXPECT_OK(LoadModelVersion(fs, kDir, 1));

  // A sidecar that cannot be written does not fail the save, and leaves no
  // temporary file; loads decode .metadata.
  for (FileOp op : {FileOp::kCreate, FileOp::kAppend, FileOp::kRename}) {
    auto faulty = std::make_shared<FaultInjectingFileSystem>(
        std::make_shared<MemFileSystem>());
    faulty->AddRule({op, ".dcp.metadata."});
    DCP_ASSERT_OK(SaveTo(faulty, kDir, ModelVersion(2)).status());
    EXPECT_THAT(Children(*faulty, kDir),
                ElementsAre(".dcp.lock", ".metadata", ::testing::_));
    DCP_EXPECT_OK(LoadModelVersion(faulty, kDir, 2));
  }
}

// Gives the data files of the checkpoint in `dir` PyTorch's own names
// (`__<rank>_<n>.distcp`, without dcp's token) and rewrites `.metadata` to
// match, as if PyTorch had saved it. Returns the new names.
std::vector<std::string> UsePyTorchFileNames(std::shared_ptr<FileSystem> fs,
                                             absl::string_view dir) {
  absl::StatusOr<Metadata> md = ReadCheckpointMetadata(std::string(dir), fs);
  CHECK(md.ok()) << md.status();
  std::map<std::string, std::string> renamed;
  for (auto& [index, info] : md->storage_data) {
    std::string& name = renamed[info.relative_path];
    if (name.empty()) {  // "__0_0_1a2b3c4d.distcp" -> "__0_0.distcp".
      name = absl::StrCat(
          info.relative_path.substr(0, info.relative_path.rfind('_')),
          ".distcp");
    }
    info.relative_path = name;
  }
  std::vector<std::string> names;
  for (const auto& [from, to] : renamed) {
    CHECK(fs->Rename(JoinPath(dir, from), JoinPath(dir, to)).ok());
    names.push_back(to);
  }
  absl::StatusOr<std::string> pickle = EncodeMetadataPickle(*md);
  CHECK(pickle.ok()) << pickle.status();
  WriteFile(*fs, JoinPath(dir, ".metadata"), *pickle);
  return names;
}

// Files that are not dcp's to remove, whatever they look like.
const std::vector<std::string> kForeignFiles = {
    "notes.txt",                       // Another tool's.
    "__7_0.distcp",                    // PyTorch-named, referenced by nothing.
    "__0_0_DEADBEEF.distcp",           // Not a token dcp generates.
    "__0_0_deadbeef.distcp.bak",       // A user's copy.
    "__0_0_deadbeef0.distcp",          // Token of 9 digits.
    "__0_0_0123456789abcdef0.distcp",  // Token of 17 digits.
    "__0_0_0123456789ABCDEF.distcp",   // Uppercase 16-digit token.
    ".metadata.tmp.0123456789abcde",   // Token of 15 digits.
    "x__0_0_deadbeef.distcp",          // Prefixed.
    ".metadata.tmp",                   // Not dcp's temporary name.
    ".metadata.tmp.deadbeef.old",      // Ditto.
    ".dcp.metadata.tmp",               // Not the sidecar's temporary name.
    ".dcp.metadata.deadbeef.tmp.old",  // Ditto.
    ".dcp.metadata.DEADBEEF.tmp",      // Not a token dcp generates.
    "__7_0.distcp.dcpcrc",             // Beside a file dcp does not remove.
    "notes.dcpcrc",                    // Not beside a data file.
    "__0_0_DEADBEEF.distcp.dcpcrc",    // Not a token dcp generates.
};
// Leftovers of earlier dcp saves that failed or crashed.
const std::vector<std::string> kDcpLeftovers = {
    "__0_0_deadbeef.distcp",  // Tokens of earlier dcp versions: 8 digits.
    "__12_3_0badf00d.distcp",
    ".metadata.tmp.deadbeef",
    "__0_1_0123456789abcdef.distcp",  // Tokens of 16 digits.
    ".metadata.tmp.fedcba9876543210",
    ".dcp.metadata.deadbeef.tmp",  // The sidecar's temporary files.
    ".dcp.metadata.fedcba9876543210.tmp",
    "__0_0_deadbeef.distcp.dcpcrc",  // Block checksums of leftovers.
    "__3_0_fedcba9876543210.distcp.dcpcrc",
};

TEST(FsStorageCleanupTest, RemovesOnlyTheReplacedCheckpointAndDcpLeftovers) {
  auto fs = std::make_shared<MemFileSystem>();
  FileSystemWriterOptions options;
  options.thread_count = 2;
  DCP_ASSERT_OK(SaveTo(fs, kDir, ModelVersion(0), options).status());
  // The checkpoint being replaced was written by PyTorch.
  const std::vector<std::string> previous = UsePyTorchFileNames(fs, kDir);
  ASSERT_THAT(previous, ElementsAre("__0_0.distcp", "__0_1.distcp"));
  DCP_ASSERT_OK(LoadModelVersion(fs, kDir, 0));
  for (const std::string& name : kForeignFiles) {
    WriteFile(*fs, JoinPath(kDir, name), "keep me");
  }
  for (const std::string& name : kDcpLeftovers) {
    WriteFile(*fs, JoinPath(kDir, name), "left over");
  }

  DCP_ASSERT_OK_AND_ASSIGN(Metadata md, SaveTo(fs, kDir, ModelVersion(1)));

  std::vector<std::string> expected = kForeignFiles;
  expected.push_back(".dcp.lock");
  expected.push_back(".dcp.metadata");
  expected.push_back(".metadata");
  for (const auto& [index, info] : md.storage_data) {
    expected.push_back(info.relative_path);
  }
  std::sort(expected.begin(), expected.end());
  expected.erase(std::unique(expected.begin(), expected.end()), expected.end());
  EXPECT_EQ(Children(*fs, kDir), expected);
  for (const std::string& name : kForeignFiles) {
    EXPECT_THAT(ReadFileToString(*fs, JoinPath(kDir, name)),
                IsOkAndHolds(std::string("keep me")))
        << name;
  }
  DCP_EXPECT_OK(LoadModelVersion(fs, kDir, 1));
}

TEST(FsStorageCleanupTest, UnreadablePreviousMetadataRemovesNoneOfItsFiles) {
  auto fs = std::make_shared<MemFileSystem>();
  DCP_ASSERT_OK(SaveTo(fs, kDir, ModelVersion(0)).status());
  const std::vector<std::string> previous = UsePyTorchFileNames(fs, kDir);
  WriteFile(*fs, JoinPath(kDir, ".metadata"), "not a pickle");
  for (const std::string& name : kDcpLeftovers) {
    WriteFile(*fs, JoinPath(kDir, name), "left over");
  }
  DCP_ASSERT_OK(SaveTo(fs, kDir, ModelVersion(1)).status());
  for (const std::string& name : previous) {
    EXPECT_THAT(fs->Exists(JoinPath(kDir, name)), IsOkAndHolds(true)) << name;
  }
  // dcp's own leftovers are known by their names alone.
  for (const std::string& name : kDcpLeftovers) {
    EXPECT_THAT(fs->Exists(JoinPath(kDir, name)), IsOkAndHolds(false)) << name;
  }
  DCP_EXPECT_OK(LoadModelVersion(fs, kDir, 1));
}

TEST(FsStorageCleanupTest, PreviousMetadataCannotMakeItRemoveTheCheckpoint) {
  auto fs = std::make_shared<MemFileSystem>();
  DCP_ASSERT_OK_AND_ASSIGN(Metadata md, SaveTo(fs, kDir, ModelVersion(0)));
  // A (corrupt) previous .metadata claiming .metadata, the lock file and a
  // file outside the directory as its own.
  WriteFile(*fs, "/outside", "keep me");
  const std::vector<std::string> claimed = {"./.metadata", ".dcp.lock",
                                            "../outside"};
  int i = 0;
  for (auto& [index, info] : md.storage_data) {
    info.relative_path = claimed[i++ % claimed.size()];
  }
  absl::StatusOr<std::string> pickle = EncodeMetadataPickle(md);
  DCP_ASSERT_OK(pickle.status());
  WriteFile(*fs, JoinPath(kDir, ".metadata"), *pickle);
  DCP_ASSERT_OK(SaveTo(fs, kDir, ModelVersion(1)).status());
  EXPECT_THAT(fs->Exists(JoinPath(kDir, ".dcp.lock")), IsOkAndHolds(true));
  EXPECT_THAT(fs->Exists("/outside"), IsOkAndHolds(true));
  DCP_EXPECT_OK(LoadModelVersion(fs, kDir, 1));
}

TEST(FsStorageCleanupTest, WithoutSyncFilesNothingIsRemoved) {
  auto fs = std::make_shared<MemFileSystem>();
  DCP_ASSERT_OK(SaveTo(fs, kDir, ModelVersion(0)).status());
  for (const std::string& name : kDcpLeftovers) {
    WriteFile(*fs, JoinPath(kDir, name), "left over");
  }
  const std::vector<std::string> before = Children(*fs, kDir);
  FileSystemWriterOptions options;
  options.sync_files = false;
  DCP_ASSERT_OK_AND_ASSIGN(Metadata md,
                           SaveTo(fs, kDir, ModelVersion(1), options));
  // Everything stays; the new save only added its data file.
  std::vector<std::string> expected = before;
  expected.push_back(InfoOf(md, "step").relative_path);
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(Children(*fs, kDir), expected);
  DCP_EXPECT_OK(LoadModelVersion(fs, kDir, 1));
}

TEST(FsStorageOverwriteTest, OverwriteFalseRefusesAnExistingCheckpoint) {
  auto fs = std::make_shared<MemFileSystem>();
  StateDict sd{{"w", at::ones({2})}};
  FileSystemWriterOptions options;
  options.overwrite = false;
  DCP_ASSERT_OK(SaveTo(fs, kDir, sd, options).status());  // Nothing there yet.
  const std::vector<std::string> before = Children(*fs, kDir);
  EXPECT_THAT(
      SaveTo(fs, kDir, sd, options).status(),
      StatusIs(absl::StatusCode::kAlreadyExists,
               AllOf(HasSubstr(std::string(kDir)), HasSubstr("overwrite"))));
  EXPECT_EQ(Children(*fs, kDir), before);
}

TEST(FsStorageOverwriteTest, ResetGivesEachSaveNewFileNames) {
  auto fs = std::make_shared<MemFileSystem>();
  FileSystemWriterOptions options;
  options.file_system = fs;
  options.remove_stale_files = false;
  DCP_ASSERT_OK_AND_ASSIGN(
      auto writer, FileSystemWriter::Create(std::string(kDir), options));
  SaveOptions save;
  save.no_dist = true;
  StateDict sd{{"w", at::ones({2})}};
  // The same writer saves twice without Reset: names still never collide.
  DCP_ASSERT_OK(Save(sd, *writer, save).status());
  DCP_ASSERT_OK(Save(sd, *writer, save).status());
  DCP_ASSERT_OK(writer->Reset(std::string("/other")));
  EXPECT_EQ(writer->path(), "/other");
  DCP_ASSERT_OK(Save(sd, *writer, save).status());
  EXPECT_THAT(DataFiles(*fs, kDir), SizeIs(2));
  EXPECT_THAT(DataFiles(*fs, "/other"), SizeIs(1));
}

// ---- One saver per directory
// -------------------------------------------------

// Forwards to `target`, letting a test act in the middle of a save and see
// what the target returned.
class ObservedWriter : public ForwardingStorageWriter {
 public:
  using ForwardingStorageWriter::ForwardingStorageWriter;

  // Runs when the target's PrepareGlobalPlan has returned OK: the save is
  // held in the middle, holding the directory.
  std::function<void()> after_global_plan = [] {};
  // What the target's last Finish returned.
  absl::Status finish_status = absl::UnknownError("Finish was not called");

  absl::StatusOr<std::vector<SavePlan>> PrepareGlobalPlan(
      std::vector<SavePlan> plans) override {
    absl::StatusOr<std::vector<SavePlan>> result =
        ForwardingStorageWriter::PrepareGlobalPlan(std::move(plans));
    if (result.ok()) after_global_plan();
    return result;
  }
  absl::Status Finish(
      Metadata& metadata,
      const std::vector<std::vector<WriteResult>>& results) override {
    finish_status = ForwardingStorageWriter::Finish(metadata, results);
    return finish_status;
  }
};

// A coordinator writer of `dir` that has begun a save (holds the lock).
std::unique_ptr<FileSystemWriter> BeginSave(std::shared_ptr<FileSystem> fs,
                                            absl::string_view dir) {
  FileSystemWriterOptions options;
  options.file_system = std::move(fs);
  absl::StatusOr<std::unique_ptr<FileSystemWriter>> writer =
      FileSystemWriter::Create(std::string(dir), options);
  CHECK(writer.ok()) << writer.status();
  CHECK((*writer)->SetUp(/*is_coordinator=*/true).ok());
  CHECK((*writer)->PrepareLocalPlan(SavePlan()).ok());
  absl::StatusOr<std::vector<SavePlan>> plans =
      (*writer)->PrepareGlobalPlan({SavePlan()});
  CHECK(plans.ok()) << plans.status();
  return *std::move(writer);
}

const auto kRefusedAsBusy = StatusIs(
    absl::StatusCode::kFailedPrecondition,
    AllOf(HasSubstr("checkpoint directory /ckpt is being saved by another "
                    "writer ("),
          HasSubstr("; lock file /ckpt/.dcp.lock); one save at a time may "
                    "write a directory")));

TEST(FsStorageLockTest, ConcurrentSaveFailsNamingTheHolderAndFirstCommits) {
  auto fs = std::make_shared<MemFileSystem>();
  DCP_ASSERT_OK(SaveTo(fs, kDir, ModelVersion(0)).status());
  FileSystemWriterOptions options;
  options.file_system = fs;
  DCP_ASSERT_OK_AND_ASSIGN(
      auto first, FileSystemWriter::Create(std::string(kDir), options));
  const std::string first_save_id = *first->StorageMetaForSave()->save_id;
  absl::Status second = absl::UnknownError("the second save did not run");
  std::map<std::string, uint64_t> files_before_second;
  ObservedWriter paused(*first);
  paused.after_global_plan = [&] {
    files_before_second = fs->ListAllFiles();
    second = SaveTo(fs, kDir, ModelVersion(2)).status();
    // Refused in its plan step: it wrote and removed nothing.
    EXPECT_EQ(fs->ListAllFiles(), files_before_second);
  };
  SaveOptions save;
  save.no_dist = true;
  DCP_ASSERT_OK(Save(ModelVersion(1), paused, save).status());

  EXPECT_THAT(second, kRefusedAsBusy);
  EXPECT_THAT(
      second,
      StatusIs(absl::StatusCode::kFailedPrecondition,
               AllOf(HasSubstr(absl::StrCat("(pid ", ::getpid(), " on host ")),
                     ContainsRegex(" since [0-9]{4}-[0-9]{2}-[0-9]{2}T"
                                   "[0-9]{2}:[0-9]{2}:[0-9]{2}Z"),
                     HasSubstr(absl::StrCat("save ", first_save_id)))));
  DCP_EXPECT_OK(LoadModelVersion(fs, kDir, 1));

  // The first save is over: the next one may save.
  DCP_ASSERT_OK(SaveTo(fs, kDir, ModelVersion(2)).status());
  DCP_EXPECT_OK(LoadModelVersion(fs, kDir, 2));
}

TEST(FsStorageLockTest, AbortSaveReleasesTheLockAndForgetsTheSave) {
  auto fs = std::make_shared<MemFileSystem>();
  std::unique_ptr<FileSystemWriter> first = BeginSave(fs, kDir);
  EXPECT_THAT(SaveTo(fs, kDir, ModelVersion(1)).status(), kRefusedAsBusy);
  // The refusing writer's own error also carries the holder's info.
  FileSystemWriterOptions options;
  options.file_system = fs;
  DCP_ASSERT_OK_AND_ASSIGN(
      auto second, FileSystemWriter::Create(std::string(kDir), options));
  DCP_ASSERT_OK(second->SetUp(/*is_coordinator=*/true));
  const absl::Status refused = second->PrepareGlobalPlan({SavePlan()}).status();
  EXPECT_THAT(refused, kRefusedAsBusy);
  EXPECT_THAT(
      LockHolderInfo(refused),
      ::testing::Optional(HasSubstr(*first->StorageMetaForSave()->save_id)));
  first->AbortSave();
  DCP_ASSERT_OK(SaveTo(fs, kDir, ModelVersion(1)).status());
  // The aborted save cannot commit any more.
  Metadata md;
  EXPECT_THAT(first->Finish(md, {{}}),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("/ckpt"), HasSubstr("AbortSave"))));
  first->AbortSave();  // No save in progress: a no-op.
  DCP_EXPECT_OK(LoadModelVersion(fs, kDir, 1));
}

TEST(FsStorageLockTest, DroppingOrResettingTheWriterReleasesTheLock) {
  auto fs = std::make_shared<MemFileSystem>();
  std::unique_ptr<FileSystemWriter> first = BeginSave(fs, kDir);
  EXPECT_THAT(SaveTo(fs, kDir, ModelVersion(1)).status(), kRefusedAsBusy);
  first.reset();
  DCP_ASSERT_OK(SaveTo(fs, kDir, ModelVersion(1)).status());

  first = BeginSave(fs, kDir);
  EXPECT_THAT(SaveTo(fs, kDir, ModelVersion(2)).status(), kRefusedAsBusy);
  DCP_ASSERT_OK(first->Reset(std::nullopt));
  DCP_ASSERT_OK(SaveTo(fs, kDir, ModelVersion(2)).status());
  DCP_EXPECT_OK(LoadModelVersion(fs, kDir, 2));
}

TEST(FsStorageLockTest, FailedFinishReleasesTheLock) {
  auto faulty = std::make_shared<FaultInjectingFileSystem>(
      std::make_shared<MemFileSystem>());
  faulty->AddRule({FileOp::kCreate, ".metadata.tmp"});
  FileSystemWriterOptions options;
  options.file_system = faulty;
  DCP_ASSERT_OK_AND_ASSIGN(
      auto writer, FileSystemWriter::Create(std::string(kDir), options));
  SaveOptions save;
  save.no_dist = true;
  EXPECT_THAT(Save(ModelVersion(1), *writer, save).status(),
              StatusIs(absl::StatusCode::kUnavailable));
  // `writer` is alive, but its save ended with Finish.
  DCP_ASSERT_OK(SaveTo(faulty, kDir, ModelVersion(1)).status());
  DCP_EXPECT_OK(LoadModelVersion(faulty, kDir, 1));
}

TEST(FsStorageLockTest, FinishRefusesWhenTheLockFileWasRemoved) {
  auto fs = std::make_shared<MemFileSystem>();
  DCP_ASSERT_OK(SaveTo(fs, kDir, ModelVersion(0)).status());
  std::unique_ptr<FileSystemWriter> first = BeginSave(fs, kDir);
  // Removing a lock file defeats it: another writer can then save.
  DCP_ASSERT_OK(fs->RemoveFile(JoinPath(kDir, kCheckpointLockFileName)));
  DCP_ASSERT_OK(SaveTo(fs, kDir, ModelVersion(1)).status());
  // The first save notices and does not commit over it.
  const std::string metadata = ReadFile(*fs, JoinPath(kDir, ".metadata"));
  Metadata md;
  EXPECT_THAT(
      first->Finish(md, {{}}),
      StatusIs(absl::StatusCode::kFailedPrecondition,
               AllOf(HasSubstr("not committing the checkpoint in /ckpt"),
                     HasSubstr("no longer held"))));
  EXPECT_EQ(ReadFile(*fs, JoinPath(kDir, ".metadata")), metadata);
  DCP_EXPECT_OK(LoadModelVersion(fs, kDir, 1));
}

TEST(FsStorageLockTest, LockIsHeldFromBeforeTheListingUntilAfterCleanup) {
  auto faulty = std::make_shared<FaultInjectingFileSystem>(
      std::make_shared<MemFileSystem>());
  DCP_ASSERT_OK(SaveTo(faulty, kDir, ModelVersion(0)).status());
  faulty->ClearOpLog();
  DCP_ASSERT_OK(SaveTo(faulty, kDir, ModelVersion(1)).status());
  const std::vector<std::string> log = faulty->op_log();
  const int lock = IndexOf(log, "lock /ckpt/.dcp.lock");
  const int unlock = IndexOf(log, "unlock /ckpt/.dcp.lock");
  ASSERT_GE(lock, 0) << ::testing::PrintToString(log);
  EXPECT_LT(lock, IndexOf(log, "list /ckpt"));
  int last_change = -1;  // The last rename or remove of the save.
  for (int i = 0; i < static_cast<int>(log.size()); ++i) {
    if (absl::StartsWith(log[i], "rename ") ||
        absl::StartsWith(log[i], "remove ")) {
      last_change = i;
    }
  }
  EXPECT_GE(last_change, 0);
  EXPECT_GT(unlock, last_change) << ::testing::PrintToString(log);
  EXPECT_EQ(IndexOf(log, "remove /ckpt/.dcp.lock"), -1);
}

// ---- Commit outcome
// -----------------------------------------------------------

TEST(FsStorageCommitTest, DirectorySyncFailureAfterTheRenameSaysCommitted) {
  auto mem = std::make_shared<MemFileSystem>();
  auto faulty = std::make_shared<FaultInjectingFileSystem>(mem);
  DCP_ASSERT_OK_AND_ASSIGN(Metadata md0, SaveTo(faulty, kDir, ModelVersion(0)));
  const std::string old_file = InfoOf(md0, "step").relative_path;
  // The save syncs the directory after its data files and again after the
  // rename of .metadata; the second fails.
  faulty->AddRule({FileOp::kSyncDir, "/ckpt", /*nth=*/2, /*times=*/1,
                   absl::UnavailableError("disk gone")});
  faulty->ClearOpLog();
  FileSystemWriterOptions options;
  options.file_system = faulty;
  DCP_ASSERT_OK_AND_ASSIGN(
      auto writer, FileSystemWriter::Create(std::string(kDir), options));
  ObservedWriter observed(*writer);
  SaveOptions save;
  save.no_dist = true;
  const absl::Status status = Save(ModelVersion(1), observed, save).status();

  const std::string committed =
      "the new checkpoint in /ckpt is committed (.metadata is in place), but "
      "syncing the directory failed: syncdir /ckpt: disk gone";
  EXPECT_THAT(status,
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr(committed)));
  EXPECT_THAT(observed.finish_status,
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr(committed)));
  EXPECT_EQ(GetCommitOutcome(observed.finish_status),
            CommitOutcome::kCommitted);
  // The mark reaches the caller of Save through the protocol.
  EXPECT_EQ(GetCommitOutcome(status), CommitOutcome::kCommitted);
  // It was indeed the sync right after the rename that failed.
  const std::vector<std::string> log = faulty->mutation_log();
  auto rename = std::find_if(log.begin(), log.end(), [](const std::string& op) {
    return absl::StartsWith(op, "rename /ckpt/.metadata.tmp.");
  });
  ASSERT_NE(rename, log.end());
  ASSERT_NE(rename + 1, log.end());
  EXPECT_EQ(*(rename + 1), "syncdir /ckpt");
  // The new checkpoint is the one in place; the old one's files are kept,
  // since the rename may not be durable.
  faulty->ClearRules();
  DCP_EXPECT_OK(LoadModelVersion(faulty, kDir, 1));
  EXPECT_THAT(faulty->Exists(JoinPath(kDir, old_file)), IsOkAndHolds(true));
  // The lock was released: the next save goes through and cleans up.
  DCP_ASSERT_OK(SaveTo(faulty, kDir, ModelVersion(2)).status());
  EXPECT_THAT(faulty->Exists(JoinPath(kDir, old_file)), IsOkAndHolds(false));
}

TEST(FsStorageCommitTest, ErrorsBeforeTheRenameAreNotMarked) {
  for (FileOp op : {FileOp::kCreate, FileOp::kSync, FileOp::kRename}) {
    SCOPED_TRACE(::testing::PrintToString(op));
    auto faulty = std::make_shared<FaultInjectingFileSystem>(
        std::make_shared<MemFileSystem>());
    DCP_ASSERT_OK(SaveTo(faulty, kDir, ModelVersion(0)).status());
    faulty->AddRule({op, ".metadata.tmp."});
    FileSystemWriterOptions options;
    options.file_system = faulty;
    DCP_ASSERT_OK_AND_ASSIGN(
        auto writer, FileSystemWriter::Create(std::string(kDir), options));
    ObservedWriter observed(*writer);
    SaveOptions save;
    save.no_dist = true;
    const absl::Status status = Save(ModelVersion(1), observed, save).status();
    EXPECT_THAT(status, StatusIs(absl::StatusCode::kUnavailable,
                                 Not(HasSubstr("committed"))));
    EXPECT_EQ(GetCommitOutcome(status), CommitOutcome::kNotCommitted);
    EXPECT_THAT(observed.finish_status,
                StatusIs(absl::StatusCode::kUnavailable));
    EXPECT_EQ(GetCommitOutcome(observed.finish_status),
              CommitOutcome::kNotCommitted);
    faulty->ClearRules();
    DCP_EXPECT_OK(LoadModelVersion(faulty, kDir, 0));
  }
}

// SetUpShared keeps a share of the Metadata (no copy) and reads through it
// as SetUp does through its copy.
TEST(FsStorageTest, SetUpSharedReadsThroughAShareOfTheMetadata) {
  auto fs = std::make_shared<MemFileSystem>();
  const StateDict sd = ModelVersion(3);
  DCP_ASSERT_OK(SaveTo(fs, kDir, sd).status());
  FileSystemReaderOptions options;
  options.file_system = fs;
  DCP_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<FileSystemReader> reader,
      FileSystemReader::Create(std::string(kDir), options));
  DCP_ASSERT_OK_AND_ASSIGN(Metadata read, reader->ReadMetadata());
  auto md = std::make_shared<const Metadata>(std::move(read));
  DCP_ASSERT_OK(reader->SetUpShared(md, true));
  EXPECT_GT(md.use_count(), 1);
  DCP_ASSERT_OK(reader->Reset(std::nullopt));
  EXPECT_EQ(md.use_count(), 1) << "Reset lets go of it";
  EXPECT_THAT(reader->SetUpShared(nullptr, true),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // Load goes through SetUpShared; the values are exact.
  DCP_ASSERT_OK(LoadModelVersion(fs, kDir, 3));
}

// ReadEncodedMetadata is the encoding of what ReadMetadata returns, its
// load_id apart: the sidecar's payload as it is while it matches, else the
// pickle decoded and encoded.
TEST(FsStorageTest, ReadEncodedMetadataIsTheEncodingOfReadMetadata) {
  auto fs = std::make_shared<MemFileSystem>();
  DCP_ASSERT_OK(SaveTo(fs, kDir, ModelVersion(4)).status());
  FileSystemReaderOptions options;
  options.file_system = fs;
  DCP_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<FileSystemReader> reader,
      FileSystemReader::Create(std::string(kDir), options));
  const std::string sidecar_path = JoinPath(kDir, kMetadataSidecarName);
  for (bool with_sidecar : {true, false}) {
    SCOPED_TRACE(with_sidecar);
    if (!with_sidecar) {
      DCP_ASSERT_OK(fs->RemoveFile(sidecar_path));
    }
    DCP_ASSERT_OK_AND_ASSIGN(Metadata expected, reader->ReadMetadata());
    DCP_ASSERT_OK_AND_ASSIGN(StorageReader::EncodedMetadata encoded,
                             reader->ReadEncodedMetadata());
    ASSERT_TRUE(encoded.load_id.has_value());
    EXPECT_EQ(encoded.load_id, expected.storage_meta->load_id);
    DCP_ASSERT_OK_AND_ASSIGN(Metadata decoded, DecodeMetadata(encoded.encoded));
    if (!decoded.storage_meta.has_value()) decoded.storage_meta.emplace();
    decoded.storage_meta->load_id = encoded.load_id;
    EXPECT_EQ(decoded, expected);
  }
}

// Load hands the planner the metadata with the reader's load_id, as
// ReadMetadata has it.
TEST(FsStorageTest, LoadGivesThePlannerTheReadersLoadId) {
  auto fs = std::make_shared<MemFileSystem>();
  DCP_ASSERT_OK(SaveTo(fs, kDir, ModelVersion(5)).status());
  class Recording : public DefaultLoadPlanner {
   public:
    using DefaultLoadPlanner::SetUpShared;
    absl::Status SetUpShared(StateDict* state_dict,
                             std::shared_ptr<const Metadata> metadata,
                             bool is_coordinator) override {
      if (metadata->storage_meta.has_value()) {
        load_id = metadata->storage_meta->load_id;
      }
      return DefaultLoadPlanner::SetUpShared(state_dict, std::move(metadata),
                                             is_coordinator);
    }
    std::optional<std::string> load_id;
  };
  FileSystemReaderOptions options;
  options.file_system = fs;
  DCP_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<FileSystemReader> reader,
      FileSystemReader::Create(std::string(kDir), options));
  DCP_ASSERT_OK_AND_ASSIGN(
      StateDict dest,
      MakeModelStateDict(0, 1, ModelLayout::kLoad, ModelValues::kPlaceholder));
  Recording planner;
  LoadOptions load;
  load.no_dist = true;
  load.planner = &planner;
  DCP_ASSERT_OK(Load(dest, *reader, load));
  DCP_ASSERT_OK(CheckModelStateDict(dest, 0, 1, ModelLayout::kLoad, 5));
  DCP_ASSERT_OK_AND_ASSIGN(Metadata read, reader->ReadMetadata());
  ASSERT_TRUE(planner.load_id.has_value());
  EXPECT_EQ(planner.load_id, read.storage_meta->load_id);
}

TEST(FsStorageTest, CreateRejectsBadOptions) {
  FileSystemWriterOptions w;
  w.thread_count = 0;
  EXPECT_THAT(
      FileSystemWriter::Create("/c", w).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("thread_count")));
  EXPECT_THAT(FileSystemWriter::Create("").status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  FileSystemReaderOptions r;
  r.thread_count = -1;
  EXPECT_THAT(
      FileSystemReader::Create("/c", r).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("thread_count")));
  FileSystemReaderOptions no_files;
  no_files.max_open_files = 0;
  EXPECT_THAT(FileSystemReader::Create("/c", no_files).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("max_open_files")));
}

// ---- Open files -------------------------------------------------------------

// Counts the data files it opens (per path) and how many are open at once.
// It can also append to a data file when its size is first asked for, or
// when it is opened the second time, as a save replacing the file between
// a load's two phases would.
class OpenFilesFileSystem : public FileSystemWrapper {
 public:
  using FileSystemWrapper::FileSystemWrapper;
  using FileSystemWrapper::NewRandomAccessFile;
  enum class Grow { kNever, kOnFileSize, kOnReopen };

  absl::StatusOr<std::unique_ptr<RandomAccessFile>> NewRandomAccessFile(
      absl::string_view path, const RandomAccessFileOptions& options) override {
    const bool data = absl::EndsWith(path, ".distcp");
    int opens = 0;
    if (data) {
      std::lock_guard<std::mutex> lock(mu_);
      opens = ++opens_[std::string(path)];
    }
    if (data && opens == 2 && grow_ == Grow::kOnReopen) {
      DCP_RETURN_IF_ERROR(Append(path));
    }
    DCP_ASSIGN_OR_RETURN(
        std::unique_ptr<RandomAccessFile> file,
        FileSystemWrapper::NewRandomAccessFile(path, options));
    const int open = open_.fetch_add(1) + 1;
    int peak = peak_.load();
    while (open > peak && !peak_.compare_exchange_weak(peak, open)) {
    }
    return std::unique_ptr<RandomAccessFile>(
        new TrackedFile(std::move(file), &open_));
  }

  absl::StatusOr<uint64_t> FileSize(absl::string_view path) override {
    if (grow_ == Grow::kOnFileSize && absl::EndsWith(path, ".distcp")) {
      DCP_RETURN_IF_ERROR(Append(path));
    }
    return FileSystemWrapper::FileSize(path);
  }

  void set_grow(Grow grow) { grow_ = grow; }
  int peak_open() const { return peak_.load(); }
  int open_now() const { return open_.load(); }
  // Opens of each data file, by path.
  std::map<std::string, int> opens() const {
    std::lock_guard<std::mutex> lock(mu_);
    return opens_;
  }

 private:
  class TrackedFile : public RandomAccessFile {
   public:
    TrackedFile(std::unique_ptr<RandomAccessFile> file, std::atomic<int>* open)
        : file_(std::move(file)), open_(open) {}
    ~TrackedFile() override { open_->fetch_sub(1); }
    absl::StatusOr<absl::string_view> Read(uint64_t offset, size_t n,
                                           char* scratch) const override {
      return file_->Read(offset, n, scratch);
    }
    uint64_t size() const override { return file_->size(); }

   private:
    std::unique_ptr<RandomAccessFile> file_;
    std::atomic<int>* open_;
  };

  absl::Status Append(absl::string_view path) {
    DCP_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(*target(), path));
    return WriteStringToFile(*target(), path, bytes + "extra", /*sync=*/false);
  }

  Grow grow_ = Grow::kNever;
  std::atomic<int> open_{0};
  std::atomic<int> peak_{0};
  mutable std::mutex mu_;
  std::map<std::string, int> opens_;
};

// `n` small tensors "t<i>" with values from `seed`.
StateDict ManyTensors(int n, int seed) {
  StateDict sd;
  for (int i = 0; i < n; ++i) {
    sd.Set(absl::StrCat("t", i), MakeTestTensor({3}, c10::kFloat, seed + i));
  }
  return sd;
}

StateDict ZerosLike(const StateDict& sd) {
  StateDict out;
  for (const StateDict::Entry& entry : sd.entries()) {
    out.Set(entry.first, at::zeros_like(entry.second.get<at::Tensor>()));
  }
  return out;
}

TEST(FsStorageOpenFilesTest, LoadKeepsAtMostMaxOpenFilesOpen) {
  auto mem = std::make_shared<MemFileSystem>();
  const StateDict sd = ManyTensors(40, 1);
  FileSystemWriterOptions w;
  w.single_file_per_rank = false;
  w.sync_files = false;
  DCP_ASSERT_OK(SaveTo(mem, kDir, sd, w).status());
  ASSERT_THAT(DataFiles(*mem, kDir), SizeIs(40));

  auto fs = std::make_shared<OpenFilesFileSystem>(mem);
  FileSystemReaderOptions r;
  r.thread_count = 3;
  r.max_open_files = 5;
  StateDict dest = ZerosLike(sd);
  DCP_ASSERT_OK(LoadFrom(fs, kDir, dest, r));
  for (const StateDict::Entry& entry : sd.entries()) {
    EXPECT_THAT(dest.Find(entry.first)->get<at::Tensor>(),
                TensorEq(entry.second.get<at::Tensor>()))
        << entry.first;
  }
  EXPECT_LE(fs->peak_open(), 5);
  EXPECT_EQ(fs->open_now(), 0);
  // Two files at most stay open from their check to their copy (5 minus a
  // file per thread); every other file is opened twice.
  int reopened = 0;
  for (const auto& [path, opens] : fs->opens()) {
    EXPECT_THAT(opens, ::testing::AnyOf(1, 2)) << path;
    if (opens == 2) ++reopened;
  }
  EXPECT_EQ(reopened, 38);
  EXPECT_THAT(fs->opens(), SizeIs(40));
}

TEST(FsStorageOpenFilesTest, FewFilesAreOpenedOnce) {
  auto mem = std::make_shared<MemFileSystem>();
  const StateDict sd = ManyTensors(20, 100);
  FileSystemWriterOptions w;
  w.single_file_per_rank = false;
  w.sync_files = false;
  DCP_ASSERT_OK(SaveTo(mem, kDir, sd, w).status());
  auto fs = std::make_shared<OpenFilesFileSystem>(mem);
  FileSystemReaderOptions r;
  r.thread_count = 2;  // Default max_open_files: 62 may stay open.
  StateDict dest = ZerosLike(sd);
  DCP_ASSERT_OK(LoadFrom(fs, kDir, dest, r));
  EXPECT_THAT(fs->opens(), SizeIs(20));
  EXPECT_THAT(fs->opens(), Each(::testing::Pair(::testing::_, 1)));
  EXPECT_EQ(fs->open_now(), 0);
}

TEST(FsStorageOpenFilesTest, FileThatChangedBeforeTheCopyIsDataLossAndUnused) {
  for (auto grow : {OpenFilesFileSystem::Grow::kOnFileSize,
                    OpenFilesFileSystem::Grow::kOnReopen}) {
    SCOPED_TRACE(static_cast<int>(grow));
    auto mem = std::make_shared<MemFileSystem>();
    const StateDict sd = ManyTensors(3, 7);
    FileSystemWriterOptions w;
    w.sync_files = false;
    DCP_ASSERT_OK(SaveTo(mem, kDir, sd, w).status());  // One data file.
    const std::vector<std::string> files = DataFiles(*mem, kDir);
    ASSERT_THAT(files, SizeIs(1));

    auto fs = std::make_shared<OpenFilesFileSystem>(mem);
    fs->set_grow(grow);
    FileSystemReaderOptions r;
    r.max_open_files = 1;  // Nothing stays open between the phases.
    StateDict dest = ZerosLike(sd);
    EXPECT_THAT(LoadFrom(fs, kDir, dest, r),
                StatusIs(absl::StatusCode::kDataLoss,
                         AllOf(HasSubstr(JoinPath(kDir, files[0])),
                               HasSubstr("changed during the load"))));
    for (const StateDict::Entry& entry : dest.entries()) {
      EXPECT_THAT(entry.second.get<at::Tensor>(), TensorEq(at::zeros({3})))
          << entry.first;
    }
    EXPECT_EQ(fs->open_now(), 0);
  }
}

// ---- Partial reads ----------------------------------------------------------

class PartialReadTest : public ::testing::Test {
 protected:
  static constexpr int64_t kRows = 1024;
  static constexpr int64_t kCols = 256;
  static constexpr uint64_t kChunkBytes = kRows * kCols * 4;

  void SetUp() override {
    full_ = MakeTestTensor({kRows, kCols}, c10::kFloat, 7);
    DCP_ASSERT_OK(SaveTo(mem_, kDir, StateDict{{"w", full_}}).status());
  }

  // Loads `rank`'s shard along `dim` of 4; returns the .distcp bytes read.
  uint64_t LoadShard(int64_t dim, int rank, bool verify) {
    absl::StatusOr<ShardedTensor> shard =
        ZerosShardAlongDim({kRows, kCols}, c10::kFloat, dim, rank, 4);
    CHECK(shard.ok()) << shard.status();
    StateDict dest{{"w", *shard}};
    counting_->Clear();
    FileSystemReaderOptions options;
    options.verify_checksums = verify;
    absl::Status status = LoadFrom(counting_, kDir, dest, options);
    DCP_EXPECT_OK(status);
    const Shard& loaded = dest.Find("w")->get<ShardedTensor>().local_shards[0];
    at::Tensor expected =
        full_.narrow(dim, loaded.offsets[dim], loaded.tensor.size(dim));
    EXPECT_THAT(loaded.tensor, TensorEq(expected));
    return counting_->BytesRead(".distcp");
  }

  at::Tensor full_;
  std::shared_ptr<MemFileSystem> mem_ = std::make_shared<MemFileSystem>();
  std::shared_ptr<CountingFileSystem> counting_ =
      std::make_shared<CountingFileSystem>(mem_);
};

// Many small tensors: the checking phase reads runs of records in one read
// each instead of reading every record's parts, with or without
// verification, and the copy phase reads each item once.
TEST(SmallRecordsTest, AreCheckedFromBatchedReads) {
  auto mem = std::make_shared<MemFileSystem>();
  constexpr int kTensors = 300;
  StateDict source;
  for (int i = 0; i < kTensors; ++i) {
    source.Set(absl::StrCat("t", i), at::arange(16, at::kFloat).add(i).view({4, 4}));
  }
  DCP_ASSERT_OK(SaveTo(mem, kDir, source).status());
  auto counting = std::make_shared<CountingFileSystem>(mem);
  for (bool verify : {true, false}) {
    SCOPED_TRACE(verify ? "verify" : "no verify");
    StateDict dest;
    for (int i = 0; i < kTensors; ++i) {
      dest.Set(absl::StrCat("t", i), at::zeros({4, 4}, at::kFloat));
    }
    counting->Clear();
    FileSystemReaderOptions options;
    options.verify_checksums = verify;
    DCP_ASSERT_OK(LoadFrom(counting, kDir, dest, options));
    for (int i = 0; i < kTensors; ++i) {
      const std::string key = absl::StrCat("t", i);
      EXPECT_THAT(dest.Find(key)->get<at::Tensor>(),
                  TensorEq(source.Find(key)->get<at::Tensor>()))
          << key;
    }
    // One file of 300 records of about 1.3 KiB: one read checks them all;
    // then one read per item.
    EXPECT_LE(counting->ReadCalls(".distcp"), kTensors + 4);
    const std::vector<std::string> files = DataFiles(*mem, kDir);
    ASSERT_THAT(files, SizeIs(1));
    EXPECT_LE(counting->BytesRead(".distcp"),
              2 * ReadFile(*mem, JoinPath(kDir, files[0])).size());
  }
}

// And they are written in batches: one append for a few hundred records.
TEST(SmallRecordsTest, AreWrittenInBatches) {
  auto faulty = std::make_shared<FaultInjectingFileSystem>(
      std::make_shared<MemFileSystem>());
  StateDict source;
  for (int i = 0; i < 300; ++i) {
    source.Set(absl::StrCat("t", i), at::full({4, 4}, i, at::kFloat));
    if (i % 100 == 0) source.Set(absl::StrCat("v", i), int64_t{i});
  }
  DCP_ASSERT_OK(SaveTo(faulty, kDir, source).status());
  int appends = 0;
  for (const std::string& entry : faulty->mutation_log()) {
    if (absl::StartsWith(entry, "append ") &&
        absl::StrContains(entry, ".distcp")) {
      ++appends;
    }
  }
  EXPECT_EQ(appends, 1);
  StateDict dest;
  for (int i = 0; i < 300; ++i) {
    dest.Set(absl::StrCat("t", i), at::zeros({4, 4}, at::kFloat));
    if (i % 100 == 0) dest.Set(absl::StrCat("v", i), int64_t{0});
  }
  DCP_ASSERT_OK(LoadFrom(faulty, kDir, dest));
  for (int i = 0; i < 300; ++i) {
    EXPECT_THAT(dest.Find(absl::StrCat("t", i))->get<at::Tensor>(),
                TensorEq(at::full({4, 4}, i, at::kFloat)));
    if (i % 100 == 0) {
      EXPECT_EQ(dest.Find(absl::StrCat("v", i))->get<int64_t>(), i);
    }
  }
}

TEST_F(PartialReadTest, RowShardReadsAboutItsOwnBytes) {
  const uint64_t shard_bytes = kChunkBytes / 4;
  const uint64_t read = LoadShard(/*dim=*/0, /*rank=*/1, /*verify=*/false);
  LOG(INFO) << "row shard: read " << read << " bytes of a " << kChunkBytes
            << "-byte chunk for a " << shard_bytes << "-byte shard";
  ::testing::Test::RecordProperty("row_shard_bytes_read",
                                  static_cast<int>(read));
  EXPECT_GE(read, shard_bytes);
  EXPECT_LE(read, shard_bytes + 16 * 1024);
}

TEST_F(PartialReadTest, ColumnShardReadsOnlyItsColumns) {
  const uint64_t shard_bytes = kChunkBytes / 4;
  const uint64_t read = LoadShard(/*dim=*/1, /*rank=*/2, /*verify=*/false);
  LOG(INFO) << "column shard: read " << read << " bytes of a " << kChunkBytes
            << "-byte chunk for a " << shard_bytes << "-byte shard";
  ::testing::Test::RecordProperty("column_shard_bytes_read",
                                  static_cast<int>(read));
  EXPECT_GE(read, shard_bytes);
  EXPECT_LE(read, shard_bytes + 16 * 1024);
}

TEST_F(PartialReadTest, VerifyingChecksumsReadsTheWholeChunk) {
  const uint64_t read = LoadShard(/*dim=*/0, /*rank=*/3, /*verify=*/true);
  LOG(INFO) << "row shard with checksums: read " << read << " bytes";
  EXPECT_GE(read, kChunkBytes + kChunkBytes / 4);
  EXPECT_LE(read, kChunkBytes + kChunkBytes / 4 + 16 * 1024);
}

// ---- Block checksums --------------------------------------------------------

// "w", 4096 x 512 float32 (8 MiB of data: eight 1 MiB blocks), saved by one
// rank beside a small tensor, and loaded back as row shards.
class BlockChecksumsTest : public ::testing::Test {
 protected:
  static constexpr int64_t kRows = 4096;
  static constexpr int64_t kCols = 512;
  static constexpr uint64_t kRowBytes = kCols * 4;
  static constexpr uint64_t kDataBytes = kRows * kRowBytes;

  void SetUp() override {
    full_ = MakeTestTensor({kRows, kCols}, c10::kFloat, 11);
    DCP_ASSERT_OK_AND_ASSIGN(
        md_,
        SaveTo(mem_, kDir, StateDict{{"w", full_}, {"small", at::ones({3})}}));
    const StorageInfo& info = InfoOf(md_, "w");
    data_path_ = JoinPath(kDir, info.relative_path);
    record_offset_ = static_cast<uint64_t>(info.offset);
    const std::string data = ReadFile(*mem_, data_path_);
    DCP_ASSERT_OK_AND_ASSIGN(
        TensorRecordInfo record,
        ParseTensorRecordHeader(
            absl::string_view(data).substr(info.offset, info.length)));
    data_offset_ = record_offset_ + record.storage.data_offset;
  }

  // Loads `rank`'s row shard of `ranks` into zeros; the status, and in
  // `*read` the .distcp bytes read.
  absl::Status LoadShard(int rank, int ranks, uint64_t* read = nullptr,
                         FileSystemReaderOptions options = {}) {
    absl::StatusOr<ShardedTensor> shard =
        ZerosShardAlongDim({kRows, kCols}, c10::kFloat, /*dim=*/0, rank, ranks);
    CHECK(shard.ok()) << shard.status();
    StateDict dest{{"w", *shard}};
    counting_->Clear();
    absl::Status status = LoadFrom(counting_, kDir, dest, options);
    if (read != nullptr) *read = counting_->BytesRead(".distcp");
    const Shard& loaded = dest.Find("w")->get<ShardedTensor>().local_shards[0];
    if (status.ok()) {
      EXPECT_THAT(loaded.tensor, TensorEq(full_.narrow(0, loaded.offsets[0],
                                                       loaded.tensor.size(0))));
    } else {
      // Nothing is written before every checksum checked out.
      EXPECT_THAT(loaded.tensor, TensorEq(at::zeros_like(loaded.tensor)));
    }
    return status;
  }

  // Flips a bit of byte `at` of w's tensor data.
  void CorruptData(uint64_t at) {
    std::string data = ReadFile(*mem_, data_path_);
    data[data_offset_ + at] ^= 0x10;
    WriteFile(*mem_, data_path_, data);
  }

  std::string ChecksumsPath() const {
    return absl::StrCat(data_path_, kBlockChecksumsSuffix);
  }

  at::Tensor full_;
  Metadata md_;
  std::string data_path_;
  uint64_t record_offset_ = 0;
  uint64_t data_offset_ = 0;  // Of w's data in its data file.
  std::shared_ptr<MemFileSystem> mem_ = std::make_shared<MemFileSystem>();
  std::shared_ptr<CountingFileSystem> counting_ =
      std::make_shared<CountingFileSystem>(mem_);
};

TEST_F(BlockChecksumsTest, SaveWritesTheBlocksOfLargeRecords) {
  DCP_ASSERT_OK_AND_ASSIGN(
      BlockChecksums checksums,
      DecodeBlockChecksums(ReadFile(*mem_, ChecksumsPath())));
  const std::string data = ReadFile(*mem_, data_path_);
  EXPECT_EQ(checksums.data_file_size, data.size());
  EXPECT_EQ(checksums.block_bytes, kChecksumBlockBytes);
  // Only "w" is large enough to have blocks.
  ASSERT_THAT(checksums.records, SizeIs(1));
  const RecordBlockChecksums& w = checksums.records[0];
  EXPECT_EQ(w.data_offset, data_offset_);
  EXPECT_EQ(w.data_size, kDataBytes);
  ASSERT_THAT(w.block_crc32, SizeIs(kDataBytes / kChecksumBlockBytes));
  for (size_t b = 0; b < w.block_crc32.size(); ++b) {
    EXPECT_EQ(w.block_crc32[b], Crc32(absl::string_view(data).substr(
                                    data_offset_ + b * kChecksumBlockBytes,
                                    kChecksumBlockBytes)));
  }
  // Optional.
  auto other = std::make_shared<MemFileSystem>();
  FileSystemWriterOptions options;
  options.write_block_checksums = false;
  DCP_ASSERT_OK(SaveTo(other, kDir, StateDict{{"w", full_}}, options).status());
  for (const std::string& name : Children(*other, kDir)) {
    EXPECT_FALSE(absl::EndsWith(name, kBlockChecksumsSuffix)) << name;
  }
}

TEST_F(BlockChecksumsTest, VerifiedShardReadsOnlyTheBlocksItNeeds) {
  // Rank 1 of 3 needs rows [1366, 2731): bytes 2797568 to 5591040 of the
  // data, in blocks 2 to 5.
  uint64_t read = 0;
  DCP_ASSERT_OK(LoadShard(1, 3, &read));
  const uint64_t shard_bytes = (2731 - 1366) * kRowBytes;
  const uint64_t blocks_bytes = 4 * kChecksumBlockBytes;
  LOG(INFO) << "verified row shard: read " << read << " bytes for a "
            << shard_bytes << "-byte shard of an " << kDataBytes
            << "-byte chunk";
  EXPECT_GE(read, shard_bytes + blocks_bytes);
  EXPECT_LE(read, shard_bytes + blocks_bytes + 64 * 1024);
  // Without the block checksums (not used, or not there) the whole chunk
  // is read to check it.
  FileSystemReaderOptions without;
  without.use_block_checksums = false;
  DCP_ASSERT_OK(LoadShard(1, 3, &read, without));
  EXPECT_GE(read, shard_bytes + kDataBytes);
  DCP_ASSERT_OK(mem_->RemoveFile(ChecksumsPath()));
  DCP_ASSERT_OK(LoadShard(1, 3, &read));
  EXPECT_GE(read, shard_bytes + kDataBytes);
}

TEST_F(BlockChecksumsTest, DamageInANeededBlockIsDataLossNamingTheBlock) {
  CorruptData(3 * kChecksumBlockBytes + 12345);
  EXPECT_THAT(
      LoadShard(1, 3),
      StatusIs(
          absl::StatusCode::kDataLoss,
          AllOf(HasSubstr(absl::StrCat("checksum mismatch in ", data_path_)),
                HasSubstr("\"w\""), HasSubstr("block 3"),
                HasSubstr(absl::StrCat("bytes ", 3 * kChecksumBlockBytes,
                                       " to ", 4 * kChecksumBlockBytes)))));
}

// A damaged block that only one rank of three reads fails that rank's
// check; every rank ends the load with the same error, and the rank that
// found it wrote nothing.
TEST_F(BlockChecksumsTest, DamageOnlyOneRankReadsIsTheSameErrorOnEveryRank) {
  // Block 7 holds rows [3584, 4096): only rank 2 of 3 (rows [2731, 4096)).
  CorruptData(7 * kChecksumBlockBytes + 99);
  SimulatorOptions options;
  options.world_size = 3;
  options.seed = 7;
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Simulator> sim,
                           Simulator::Create(options));
  std::vector<StateDict> dests(3);
  for (int rank = 0; rank < 3; ++rank) {
    DCP_ASSERT_OK_AND_ASSIGN(
        ShardedTensor shard,
        ZerosShardAlongDim({kRows, kCols}, c10::kFloat, 0, rank, 3));
    dests[rank] = StateDict{{"w", shard}};
  }
  std::vector<absl::Status> statuses =
      sim->Run([&](RankContext& ctx) -> absl::Status {
        FileSystemReaderOptions r;
        r.file_system = mem_;
        DCP_ASSIGN_OR_RETURN(auto reader,
                             FileSystemReader::Create(std::string(kDir), r));
        LoadOptions load;
        load.process_group = &ctx.pg();
        return Load(dests[ctx.rank()], *reader, load);
      });
  ASSERT_THAT(statuses, SizeIs(3));
  EXPECT_THAT(statuses[0], StatusIs(absl::StatusCode::kDataLoss,
                                    AllOf(HasSubstr("checksum mismatch"),
                                          HasSubstr("block 7"))));
  EXPECT_EQ(statuses[1], statuses[0]);
  EXPECT_EQ(statuses[2], statuses[0]);
  const Shard& found = dests[2].Find("w")->get<ShardedTensor>().local_shards[0];
  EXPECT_THAT(found.tensor, TensorEq(at::zeros_like(found.tensor)));
}

TEST_F(BlockChecksumsTest, LoadsVerifyWhatTheyReadNotWhatTheySkip) {
  // Block 7 holds rows [3584, 4096): rank 0 of 4 (rows [0, 1024)) does not
  // read it, rank 3 does.
  CorruptData(7 * kChecksumBlockBytes + 5);
  DCP_EXPECT_OK(LoadShard(0, 4));
  EXPECT_THAT(LoadShard(3, 4),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("block 7")));
  // Verifying whole records, rank 0 reports it too.
  FileSystemReaderOptions without;
  without.use_block_checksums = false;
  EXPECT_THAT(
      LoadShard(0, 4, nullptr, without),
      StatusIs(absl::StatusCode::kDataLoss, HasSubstr("checksum mismatch")));
}

// A block checksum file that is damaged, truncated, empty, for another data
// file, or contradicts the record is not used: the whole record is checked
// (which finds damage in a block the load does not need), and loads of
// undamaged data still succeed.
TEST_F(BlockChecksumsTest, UnusableBlockChecksumFilesFallBackToWholeRecords) {
  const std::string good = ReadFile(*mem_, ChecksumsPath());
  DCP_ASSERT_OK_AND_ASSIGN(BlockChecksums decoded, DecodeBlockChecksums(good));
  std::vector<std::pair<std::string, std::string>> cases;
  {
    std::string flipped = good;
    flipped[flipped.size() / 2] ^= 0x01;
    cases.emplace_back("a flipped byte", flipped);
  }
  cases.emplace_back("truncated", good.substr(0, good.size() - 3));
  cases.emplace_back("empty", "");
  {
    BlockChecksums other = decoded;
    other.data_file_size += 1;
    cases.emplace_back("for a larger data file", EncodeBlockChecksums(other));
  }
  {
    // Consistent in itself, but not with the record's own CRC-32.
    BlockChecksums other = decoded;
    std::string zeros(kDataBytes, '\0');
    other.records[0].block_crc32 = ChecksumBlocks(zeros, kChecksumBlockBytes,
                                                  &other.records[0].data_crc32);
    cases.emplace_back("of other data", EncodeBlockChecksums(other));
  }
  {
    BlockChecksums other = decoded;
    other.records[0].data_offset += 1;
    cases.emplace_back("for another record offset",
                       EncodeBlockChecksums(other));
  }
  const std::string original = ReadFile(*mem_, data_path_);
  for (const auto& [what, bytes] : cases) {
    SCOPED_TRACE(what);
    WriteFile(*mem_, ChecksumsPath(), bytes);
    WriteFile(*mem_, data_path_, original);
    uint64_t read = 0;
    DCP_EXPECT_OK(LoadShard(0, 4, &read));
    EXPECT_GE(read, kDataBytes);  // The whole record, checked.
    CorruptData(7 * kChecksumBlockBytes + 5);
    EXPECT_THAT(LoadShard(0, 4), StatusIs(absl::StatusCode::kDataLoss,
                                          HasSubstr("checksum mismatch")));
  }
}

TEST_F(BlockChecksumsTest, ReplacedCheckpointsTakeTheirBlockChecksumsAlong) {
  const std::string old_checksums = ChecksumsPath();
  DCP_ASSERT_OK_AND_ASSIGN(Metadata md,
                           SaveTo(mem_, kDir, StateDict{{"w", full_ * 2}}));
  EXPECT_THAT(ReadFileToString(*mem_, old_checksums),
              StatusIs(absl::StatusCode::kNotFound));
  const std::string now = JoinPath(
      kDir, absl::StrCat(InfoOf(md, "w").relative_path, kBlockChecksumsSuffix));
  DCP_EXPECT_OK(ReadFileToString(*mem_, now).status());
}

// ---- Bad input --------------------------------------------------------------

class BadInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    sd_.Set("a", MakeTestTensor({4, 6}, c10::kFloat, 1));
    sd_.Set("b", MakeTestTensor({6, 4}, c10::kFloat, 2));
    sd_.Set("n", int64_t{12});
    absl::StatusOr<Metadata> md = SaveTo(fs_, kDir, sd_);
    DCP_ASSERT_OK(md.status());
    md_ = *md;
  }

  StateDict Dest() {
    return StateDict{
        {"a", at::zeros({4, 6})}, {"b", at::zeros({6, 4})}, {"n", int64_t{0}}};
  }
  absl::Status Load(FileSystemReaderOptions options = {}) {
    StateDict dest = Dest();
    return LoadFrom(fs_, kDir, dest, options);
  }
  std::string PathOf(absl::string_view fqn) {
    return JoinPath(kDir, InfoOf(md_, fqn).relative_path);
  }
  void RewriteMetadata(const Metadata& md) {
    absl::StatusOr<std::string> pickle = EncodeMetadataPickle(md);
    DCP_ASSERT_OK(pickle.status());
    WriteFile(*fs_, JoinPath(kDir, ".metadata"), *pickle);
  }

  std::shared_ptr<MemFileSystem> fs_ = std::make_shared<MemFileSystem>();
  StateDict sd_;
  Metadata md_;
};

TEST_F(BadInputTest, MissingMetadataIsNotFoundNamingTheDirectory) {
  DCP_ASSERT_OK(fs_->RemoveFile(JoinPath(kDir, ".metadata")));
  EXPECT_THAT(Load(), StatusIs(absl::StatusCode::kNotFound,
                               HasSubstr("not a checkpoint: no .metadata in "
                                         "/ckpt")));
  EXPECT_THAT(ReadCheckpointMetadata("/nowhere", fs_).status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("/nowhere")));
}

TEST_F(BadInputTest, MissingDataFileIsDataLoss) {
  DCP_ASSERT_OK(fs_->RemoveFile(PathOf("a")));
  EXPECT_THAT(Load(), StatusIs(absl::StatusCode::kDataLoss,
                               AllOf(HasSubstr("missing data file"),
                                     HasSubstr(PathOf("a")))));
}

TEST_F(BadInputTest, TruncatedDataFileIsDataLoss) {
  const std::string path = PathOf("b");
  const std::string data = ReadFile(*fs_, path);
  WriteFile(*fs_, path, data.substr(0, data.size() - 10));
  EXPECT_THAT(Load(), StatusIs(absl::StatusCode::kDataLoss,
                               AllOf(HasSubstr(path), HasSubstr("\"b\""),
                                     HasSubstr("truncated"))));
}

TEST_F(BadInputTest, CorruptTensorBytesFailChecksum) {
  const StorageInfo& info = InfoOf(md_, "b");
  const std::string path = PathOf("b");
  std::string data = ReadFile(*fs_, path);
  DCP_ASSERT_OK_AND_ASSIGN(
      TensorRecordInfo record,
      ParseTensorRecordHeader(
          absl::string_view(data).substr(info.offset, info.length)));
  data[info.offset + record.storage.data_offset + 5] ^= 0x40;
  WriteFile(*fs_, path, data);
  EXPECT_THAT(Load(), StatusIs(absl::StatusCode::kDataLoss,
                               HasSubstr(absl::StrCat(
                                   "checksum mismatch in ", path, " at offset ",
                                   info.offset, " for \"b\""))));
  // Without verification only the bytes read are trusted: the load
  // succeeds with the corrupt value.
  FileSystemReaderOptions options;
  options.verify_checksums = false;
  StateDict dest = Dest();
  DCP_ASSERT_OK(LoadFrom(fs_, kDir, dest, options));
  EXPECT_THAT(dest.Find("b")->get<at::Tensor>(),
              Not(TensorEq(sd_.Find("b")->get<at::Tensor>())));
}

TEST_F(BadInputTest, CorruptDataPklFailsChecksum) {
  // data.pkl of a tensor record (strides, offsets) is checksummed too.
  const StorageInfo& info = InfoOf(md_, "a");
  const std::string path = PathOf("a");
  std::string data = ReadFile(*fs_, path);
  DCP_ASSERT_OK_AND_ASSIGN(ZipDirectory dir,
                           ReadZipDirectory(absl::string_view(data).substr(
                               info.offset, info.length)));
  const ZipEntry* pkl = dir.Find("data.pkl");
  ASSERT_NE(pkl, nullptr);
  data[info.offset + pkl->data_offset + pkl->size - 2] ^= 0x01;
  WriteFile(*fs_, path, data);
  EXPECT_THAT(Load(), StatusIs(absl::StatusCode::kDataLoss,
                               AllOf(HasSubstr("checksum mismatch"),
                                     HasSubstr("\"a\""), HasSubstr(path))));
}

TEST_F(BadInputTest, CorruptBytesRecordIsDataLossNamingTheKey) {
  const StorageInfo& info = InfoOf(md_, "n");
  const std::string path = PathOf("n");
  std::string data = ReadFile(*fs_, path);
  DCP_ASSERT_OK_AND_ASSIGN(ZipDirectory dir,
                           ReadZipDirectory(absl::string_view(data).substr(
                               info.offset, info.length)));
  const ZipEntry* pkl = dir.Find("data.pkl");
  ASSERT_NE(pkl, nullptr);
  data[info.offset + pkl->data_offset + 3] ^= 0x01;  // The int's value.
  WriteFile(*fs_, path, data);
  EXPECT_THAT(Load(), StatusIs(absl::StatusCode::kDataLoss,
                               AllOf(HasSubstr("checksum mismatch"),
                                     HasSubstr("\"n\""))));
}

TEST_F(BadInputTest, RecordReachingOutsideItsWindowIsDataLoss) {
  // .metadata claims a shorter record: its zip directory is cut off.
  Metadata md = md_;
  for (auto& [index, info] : md.storage_data) {
    if (index.fqn == "a") info.length -= 30;
  }
  RewriteMetadata(md);
  EXPECT_THAT(Load(), StatusIs(absl::StatusCode::kDataLoss,
                               AllOf(HasSubstr("\"a\""), HasSubstr(PathOf("a")),
                                     HasSubstr("at offset"))));
}

TEST_F(BadInputTest, MetadataOfAnotherCheckpointIsDataLoss) {
  // Another checkpoint with the same keys: its .metadata names its files.
  DCP_ASSERT_OK(SaveTo(fs_, "/other", sd_).status());
  WriteFile(*fs_, JoinPath(kDir, ".metadata"),
            ReadFile(*fs_, "/other/.metadata"));
  EXPECT_THAT(Load(), StatusIs(absl::StatusCode::kDataLoss,
                               HasSubstr("missing data file")));
}

TEST_F(BadInputTest, MetadataWithSwappedLocationsIsDataLossNamingTheKey) {
  // Same files, but "a" [4, 6] and "b" [6, 4] point at each other's record.
  Metadata md = md_;
  StorageInfo a = InfoOf(md_, "a");
  StorageInfo b = InfoOf(md_, "b");
  for (auto& [index, info] : md.storage_data) {
    if (index.fqn == "a") info = b;
    if (index.fqn == "b") info = a;
  }
  RewriteMetadata(md);
  EXPECT_THAT(Load(),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(::testing::AnyOf(HasSubstr("record of \"a\""),
                                              HasSubstr("record of \"b\"")),
                             HasSubstr("holds a tensor of shape"),
                             HasSubstr("another checkpoint"))));
}

TEST_F(BadInputTest, MetadataWithAnotherDtypeIsDataLoss) {
  Metadata md = md_;
  std::get<TensorStorageMetadata>(md.state_dict_metadata.at("a"))
      .properties.dtype = c10::kDouble;
  RewriteMetadata(md);
  EXPECT_THAT(Load(), StatusIs(absl::StatusCode::kDataLoss,
                               AllOf(HasSubstr("\"a\""), HasSubstr("float32"),
                                     HasSubstr("float64"))));
}

TEST_F(BadInputTest, UnknownDtypeInMetadataIsAnErrorNamingIt) {
  const std::string path = JoinPath(kDir, ".metadata");
  std::string pickle = ReadFile(*fs_, path);
  const size_t at = pickle.find("float32");
  ASSERT_NE(at, std::string::npos);
  pickle.replace(at, 7, "float99");
  WriteFile(*fs_, path, pickle);
  EXPECT_THAT(Load(), StatusIs(absl::StatusCode::kInvalidArgument,
                               AllOf(HasSubstr("float99"), HasSubstr(path))));
}

TEST_F(BadInputTest, EscapingFileNameIsDataLoss) {
  Metadata md = md_;
  for (auto& [index, info] : md.storage_data) {
    if (index.fqn == "a") info.relative_path = "../etc/passwd";
  }
  RewriteMetadata(md);
  EXPECT_THAT(Load(), StatusIs(absl::StatusCode::kDataLoss,
                               HasSubstr("../etc/passwd")));
}

TEST_F(BadInputTest, ShapeMismatchWithDestinationIsInvalidArgument) {
  StateDict dest = Dest();
  dest.Set("a", at::zeros({4, 5}));
  EXPECT_THAT(LoadFrom(fs_, kDir, dest),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("size mismatch for \"a\"")));
}

TEST_F(BadInputTest, FailedLoadLeavesDestinationsUntouched) {
  // "b" is corrupt; "a" and "n" are fine but nothing may be written.
  const StorageInfo& info = InfoOf(md_, "b");
  const std::string path = PathOf("b");
  std::string data = ReadFile(*fs_, path);
  data[info.offset + info.length - 100] ^= 0x01;  // Inside the trailer.
  WriteFile(*fs_, path, data);
  StateDict dest = Dest();
  EXPECT_THAT(LoadFrom(fs_, kDir, dest),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr(path)));
  EXPECT_THAT(dest.Find("a")->get<at::Tensor>(), TensorEq(at::zeros({4, 6})));
  EXPECT_EQ(dest.Find("n")->get<int64_t>(), 0);
}

// ---- Hand-edited .metadata --------------------------------------------------

// "w" [4, 6] saved as two row shards, each in its own file, beside "b" and
// "n"; loads into destinations holding other values.
class HandEditedMetadataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const at::Tensor full = MakeTestTensor({4, 6}, c10::kFloat, 5);
    saved_w_ = full.clone();
    StateDict sd;
    sd.Set("w", ShardedTensor{{4, 6},
                              {Shard{full.narrow(0, 0, 2), {0, 0}},
                               Shard{full.narrow(0, 2, 2), {2, 0}}}});
    sd.Set("b", MakeTestTensor({2}, c10::kFloat, 6));
    sd.Set("n", int64_t{3});
    FileSystemWriterOptions w;
    w.single_file_per_rank = false;  // One file per chunk.
    w.sync_files = false;
    DCP_ASSERT_OK_AND_ASSIGN(md_, SaveTo(fs_, kDir, sd, w));
    file0_ = md_.storage_data.at(MetadataIndex("w", Shape{0, 0})).relative_path;
    file1_ = md_.storage_data.at(MetadataIndex("w", Shape{2, 0})).relative_path;
    ASSERT_NE(file0_, file1_);
  }

  StateDict Dest() const {
    return StateDict{{"w", at::full({4, 6}, 42.0)},
                     {"b", at::full({2}, 7.0)},
                     {"n", int64_t{5}}};
  }
  // Loads into Dest(); checks that no destination changed when it fails.
  absl::Status LoadAndCheckUnchangedOnError() {
    StateDict dest = Dest();
    absl::Status status = LoadFrom(fs_, kDir, dest);
    if (status.ok()) return status;
    EXPECT_THAT(dest.Find("w")->get<at::Tensor>(),
                TensorEq(at::full({4, 6}, 42.0)));
    EXPECT_THAT(dest.Find("b")->get<at::Tensor>(),
                TensorEq(at::full({2}, 7.0)));
    EXPECT_EQ(dest.Find("n")->get<int64_t>(), 5);
    return status;
  }
  TensorStorageMetadata& W(Metadata& md) {
    return std::get<TensorStorageMetadata>(md.state_dict_metadata.at("w"));
  }
  // Moves the second chunk of "w" (and its storage entry) to `offsets`.
  void MoveSecondChunk(Metadata& md, const Shape& offsets) {
    W(md).chunks[1].offsets = offsets;
    auto node = md.storage_data.extract(MetadataIndex("w", Shape{2, 0}));
    node.key() = MetadataIndex("w", offsets, 1);
    md.storage_data.insert(std::move(node));
  }
  void RewriteMetadata(const Metadata& md) {
    DCP_ASSERT_OK_AND_ASSIGN(std::string pickle, EncodeMetadataPickle(md));
    WriteFile(*fs_, JoinPath(kDir, ".metadata"), pickle);
  }

  std::shared_ptr<MemFileSystem> fs_ = std::make_shared<MemFileSystem>();
  Metadata md_;
  at::Tensor saved_w_;
  std::string file0_;
  std::string file1_;
};

TEST_F(HandEditedMetadataTest, UneditedLoadsExactly) {
  StateDict dest = Dest();
  DCP_ASSERT_OK(LoadFrom(fs_, kDir, dest));
  EXPECT_THAT(dest.Find("w")->get<at::Tensor>(), TensorEq(saved_w_));
}

TEST_F(HandEditedMetadataTest, OverlappingChunksInTwoFilesAreDataLoss) {
  // Row 1 would be written by both files' reads, in parallel.
  Metadata md = md_;
  MoveSecondChunk(md, {1, 0});
  RewriteMetadata(md);
  EXPECT_THAT(
      LoadAndCheckUnchangedOnError(),
      StatusIs(absl::StatusCode::kDataLoss,
               HasSubstr(absl::StrCat(
                   "invalid checkpoint metadata: \"w\": chunks [0, "
                   "0]+[2, 6] (in ",
                   file0_, ") and [1, 0]+[2, 6] (in ", file1_, ") overlap"))));
}

TEST_F(HandEditedMetadataTest, ChunkOutsideTheTensorIsDataLoss) {
  Metadata md = md_;
  MoveSecondChunk(md, {3, 0});
  RewriteMetadata(md);
  EXPECT_THAT(
      LoadAndCheckUnchangedOnError(),
      StatusIs(absl::StatusCode::kDataLoss,
               HasSubstr(absl::StrCat("\"w\": chunk [3, 0]+[2, 6] (in ", file1_,
                                      ") is not inside size [4, 6]"))));
}

TEST_F(HandEditedMetadataTest, GapIsDataLossNamingTheRegionAndTheChunks) {
  // The second chunk dropped: rows [2, 4) are saved nowhere.
  Metadata dropped = md_;
  W(dropped).chunks.pop_back();
  RewriteMetadata(dropped);
  EXPECT_THAT(LoadAndCheckUnchangedOnError(),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("checkpoint holds 12 of the 24 elements of "
                                 "\"w\" chunk [0, 0]+[4, 6]; the checkpoint's "
                                 "chunks of \"w\": [0, 0]+[2, 6]")));
  // The second chunk shrunk to one row: row 3 is saved nowhere.
  Metadata shrunk = md_;
  W(shrunk).chunks[1].sizes = {1, 6};
  RewriteMetadata(shrunk);
  EXPECT_THAT(LoadAndCheckUnchangedOnError(),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("checkpoint holds 18 of the 24 elements of "
                                 "\"w\" chunk [0, 0]+[4, 6]; the checkpoint's "
                                 "chunks of \"w\": [0, 0]+[2, 6], [2, 0]+[1, "
                                 "6]")));
}

TEST_F(HandEditedMetadataTest, ChunkWithoutStorageEntryIsDataLoss) {
  Metadata md = md_;
  md.storage_data.erase(MetadataIndex("w", Shape{2, 0}));
  RewriteMetadata(md);
  EXPECT_THAT(LoadAndCheckUnchangedOnError(),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("\"w\": chunk [2, 0]+[2, 6] has no storage "
                                 "entry")));
}

TEST_F(HandEditedMetadataTest, EveryRankGetsTheSameError) {
  Metadata md = md_;
  MoveSecondChunk(md, {1, 0});
  RewriteMetadata(md);
  SimulatorOptions options;
  options.world_size = 2;
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Simulator> sim,
                           Simulator::Create(options));
  std::vector<StateDict> dests = {Dest(), Dest()};
  std::vector<absl::Status> statuses =
      sim->Run([&](RankContext& ctx) -> absl::Status {
        FileSystemReaderOptions r;
        r.file_system = fs_;
        DCP_ASSIGN_OR_RETURN(auto reader,
                             FileSystemReader::Create(std::string(kDir), r));
        LoadOptions load;
        load.process_group = &ctx.pg();
        return Load(dests[ctx.rank()], *reader, load);
      });
  ASSERT_THAT(statuses, SizeIs(2));
  EXPECT_THAT(statuses[0], StatusIs(absl::StatusCode::kDataLoss,
                                    HasSubstr("\"w\": chunks [0, 0]+[2, 6]")));
  EXPECT_EQ(statuses[0], statuses[1]);
  for (const StateDict& dest : dests) {
    EXPECT_THAT(dest.Find("w")->get<at::Tensor>(),
                TensorEq(at::full({4, 6}, 42.0)));
  }
}

// ---- Mutation ---------------------------------------------------------------

// Copies every file of `from` into a fresh MemFileSystem.
std::shared_ptr<MemFileSystem> CopyOf(MemFileSystem& from) {
  auto to = std::make_shared<MemFileSystem>();
  for (const auto& [path, size] : from.ListAllFiles()) {
    CHECK(to->CreateDir(Dirname(path)).ok());
    WriteFile(*to, path, ReadFile(from, path));
  }
  return to;
}

// The damage the mutation tests do to one file of a checkpoint.
enum class Mutation { kFlip, kTruncate, kDelete, kAppend, kSwap };

// Applies `mutation` to `target` in `fs` (a swap exchanges it with one of
// `files`), drawing positions and bytes from `uniform` (a value in [0, n));
// returns the mutation's name.
std::string Mutate(MemFileSystem& fs, const std::string& target,
                   const std::vector<std::string>& files, Mutation mutation,
                   const std::function<uint64_t(uint64_t)>& uniform) {
  std::string data = ReadFile(fs, target);
  switch (mutation) {
    case Mutation::kFlip: {  // 1-4 random bytes.
      const int n = 1 + static_cast<int>(uniform(4));
      for (int k = 0; k < n && !data.empty(); ++k) {
        data[uniform(data.size())] ^= static_cast<char>(1 + uniform(255));
      }
      WriteFile(fs, target, data);
      return "flip";
    }
    case Mutation::kTruncate:
      WriteFile(fs, target, data.substr(0, uniform(data.size() + 1)));
      return "truncate";
    case Mutation::kDelete:
      DCP_EXPECT_OK(fs.RemoveFile(target));
      return "delete";
    case Mutation::kAppend: {  // Garbage.
      std::string garbage(1 + uniform(100), '\0');
      for (char& c : garbage) c = static_cast<char>(uniform(256));
      WriteFile(fs, target, data + garbage);
      return "append";
    }
    case Mutation::kSwap: {
      const std::string& other = files[uniform(files.size())];
      const std::string other_data = ReadFile(fs, other);
      WriteFile(fs, other, data);
      WriteFile(fs, target, other_data);
      return "swap";
    }
  }
  return "none";
}

// Logs `outcomes` ("<mutation>: exact" or "<mutation>: <status code>" ->
// count) and checks that every failed load reported damage as such, never
// as a bug (Internal, Unknown): DataLoss for corrupt data, NotFound for a
// missing file, and InvalidArgument when a changed .metadata still decodes
// but describes tensors that no longer fit the destination. Returns the
// number of exact loads; `kinds`, if set, gets the iterations per mutation.
int CheckMutationOutcomes(const std::map<std::string, int>& outcomes,
                          std::map<std::string, int>* kinds = nullptr) {
  int exact = 0;
  for (const auto& [outcome, count] : outcomes) {
    LOG(INFO) << "mutation outcome " << outcome << ": " << count;
    const size_t colon = outcome.find(": ");
    if (kinds != nullptr) (*kinds)[outcome.substr(0, colon)] += count;
    const std::string result = outcome.substr(colon + 2);
    if (result == "exact") {
      exact += count;
    } else {
      EXPECT_THAT(result, ::testing::AnyOf("DATA_LOSS", "NOT_FOUND",
                                           "INVALID_ARGUMENT"))
          << count << " loads after " << outcome;
    }
  }
  return exact;
}

TEST(FsStorageMutationTest, EveryLoadIsExactOrFails) {
  const uint32_t seed = dcp::test::TestSeed();
  SCOPED_TRACE(absl::StrCat("DCP_TEST_SEED=", seed));
  int iterations = 300;
  if (const char* env = std::getenv("DCP_MUTATION_ITERATIONS")) {
    CHECK(absl::SimpleAtoi(env, &iterations));
  }

  // A checkpoint of the model saved by 2 ranks with 2 files each.
  auto base = std::make_shared<MemFileSystem>();
  {
    SimulatorOptions options;
    options.world_size = 2;
    options.seed = 1;
    DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Simulator> sim,
                             Simulator::Create(options));
    std::vector<absl::Status> statuses =
        sim->Run([&](RankContext& ctx) -> absl::Status {
          DCP_ASSIGN_OR_RETURN(
              StateDict sd,
              MakeModelStateDict(ctx.rank(), 2, ModelLayout::kSave,
                                 ModelValues::kTrue));
          FileSystemWriterOptions w;
          w.thread_count = 2;
          w.file_system = base;
          DCP_ASSIGN_OR_RETURN(auto writer,
                               FileSystemWriter::Create(std::string(kDir), w));
          SaveOptions save;
          save.process_group = &ctx.pg();
          return Save(sd, *writer, save).status();
        });
    ASSERT_THAT(statuses, Each(IsOk()));
  }
  std::vector<std::string> files;  // Those of the checkpoint.
  for (const auto& [path, size] : base->ListAllFiles()) {
    if (Basename(path) != kCheckpointLockFileName) files.push_back(path);
  }
  // Four data files, .metadata and its sidecar, which the mutations reach
  // too: whatever happens to it, a load is exact or fails.
  ASSERT_THAT(files, SizeIs(6));
  const std::string metadata_path = JoinPath(kDir, ".metadata");
  ASSERT_THAT(files, ::testing::Contains(metadata_path));
  ASSERT_THAT(files, ::testing::Contains(JoinPath(kDir, ".dcp.metadata")));

  std::mt19937 rng(seed);
  auto uniform = [&](uint64_t n) {  // In [0, n).
    return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng);
  };
  std::map<std::string, int> outcomes;
  for (int i = 0; i < iterations; ++i) {
    std::shared_ptr<MemFileSystem> fs = CopyOf(*base);
    const std::string& target =
        uniform(3) == 0 ? metadata_path : files[uniform(files.size())];
    const std::string what =
        Mutate(*fs, target, files, static_cast<Mutation>(uniform(5)), uniform);
    SCOPED_TRACE(absl::StrCat("iteration ", i, ": ", what, " ", target));
    DCP_ASSERT_OK_AND_ASSIGN(StateDict dest,
                             MakeModelStateDict(0, 1, ModelLayout::kLoad,
                                                ModelValues::kPlaceholder));
    FileSystemReaderOptions options;
    options.thread_count = 1 + static_cast<int>(uniform(3));
    absl::Status status = LoadFrom(fs, kDir, dest, options);
    if (status.ok()) {
      DCP_ASSERT_OK(CheckModelStateDict(dest, 0, 1, ModelLayout::kLoad));
      ++outcomes[absl::StrCat(what, ": exact")];
    } else {
      ++outcomes[absl::StrCat(what, ": ",
                              absl::StatusCodeToString(status.code()))];
      VLOG(1) << "iteration " << i << ": " << what << " " << target << ": "
              << status;
    }
  }
  std::map<std::string, int> kinds;  // Iterations per mutation kind.
  const int exact = CheckMutationOutcomes(outcomes, &kinds);
  // No load returned wrong values (checked above, per iteration); every
  // kind of mutation ran, and both outcomes occurred.
  if (iterations >= 100) {
    EXPECT_THAT(kinds, ::testing::SizeIs(5)) << "flip, truncate, delete, "
                                                "append and swap";
    EXPECT_GT(exact, 0);
    EXPECT_LT(exact, iterations);
  }
}

// Large records with block checksums: whatever happens to a data file, its
// .dcpcrc or the metadata, a resharded verified load (a random third of the
// rows) returns exact values or fails; a load whose blocks are undamaged
// succeeds even if other blocks or the .dcpcrc are damaged.
TEST(FsStorageMutationTest, BlockChecksummedLoadsAreExactOrFail) {
  const uint32_t seed = dcp::test::TestSeed();
  SCOPED_TRACE(absl::StrCat("DCP_TEST_SEED=", seed));
  int iterations = 200;
  if (const char* env = std::getenv("DCP_MUTATION_ITERATIONS")) {
    CHECK(absl::SimpleAtoi(env, &iterations));
  }
  auto base = std::make_shared<MemFileSystem>();
  const at::Tensor full = MakeTestTensor({1024, 1024}, c10::kFloat, 21);
  FileSystemWriterOptions w;
  w.thread_count = 2;
  w.sync_files = false;
  DCP_ASSERT_OK(
      SaveTo(base, kDir,
             StateDict{{"w", full}, {"v", full.narrow(0, 0, 512) * 2}}, w)
          .status());
  std::vector<std::string> files;
  for (const auto& [path, size] : base->ListAllFiles()) {
    if (Basename(path) != kCheckpointLockFileName) files.push_back(path);
  }
  // Two data files, their block checksums, .metadata and the sidecar.
  ASSERT_THAT(files, SizeIs(6));
  std::mt19937 rng(seed);
  auto uniform = [&](uint64_t n) {
    return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng);
  };
  std::map<std::string, int> outcomes;
  for (int i = 0; i < iterations; ++i) {
    std::shared_ptr<MemFileSystem> fs = CopyOf(*base);
    const std::string& target = files[uniform(files.size())];
    // Every mutation but appending garbage.
    const Mutation mutations[] = {Mutation::kFlip, Mutation::kTruncate,
                                  Mutation::kDelete, Mutation::kSwap};
    const std::string what =
        Mutate(*fs, target, files, mutations[uniform(4)], uniform);
    SCOPED_TRACE(absl::StrCat("iteration ", i, ": ", what, " ", target));
    const int rank = static_cast<int>(uniform(3));
    DCP_ASSERT_OK_AND_ASSIGN(
        ShardedTensor w_shard,
        ZerosShardAlongDim({1024, 1024}, c10::kFloat, 0, rank, 3));
    DCP_ASSERT_OK_AND_ASSIGN(
        ShardedTensor v_shard,
        ZerosShardAlongDim({512, 1024}, c10::kFloat, 0, rank, 3));
    StateDict dest{{"w", w_shard}, {"v", v_shard}};
    const absl::Status status = LoadFrom(fs, kDir, dest);
    if (status.ok()) {
      for (const auto& [key, expected] :
           {std::pair<std::string, at::Tensor>{"w", full},
            {"v", full.narrow(0, 0, 512) * 2}}) {
        const Shard& got = dest.Find(key)->get<ShardedTensor>().local_shards[0];
        ASSERT_THAT(got.tensor, TensorEq(expected.narrow(0, got.offsets[0],
                                                         got.tensor.size(0))))
            << key;
      }
      ++outcomes[absl::StrCat(what, ": exact")];
    } else {
      ++outcomes[absl::StrCat(what, ": ",
                              absl::StatusCodeToString(status.code()))];
    }
  }
  const int exact = CheckMutationOutcomes(outcomes);
  if (iterations >= 100) {
    EXPECT_GT(exact, 0);
    EXPECT_LT(exact, iterations);
  }
}

}  // namespace
}  // namespace dcp
