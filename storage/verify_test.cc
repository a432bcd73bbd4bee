#include "storage/verify.h"

#include <ATen/ATen.h>

#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>  // NOLINT(build/c++11)
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "checkpoint/save_load.h"
#include "core/metadata.h"
#include "core/state_dict.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/block_checksums.h"
#include "storage/crc32.h"
#include "storage/file_system.h"
#include "storage/fs_storage.h"
#include "storage/metadata_pickle.h"
#include "storage/posix_file_system.h"
#include "storage/zip.h"
#include "testing/mem_file_system.h"
#include "testing/runfiles.h"
#include "testing/status_matchers.h"

namespace dcp {
namespace {

using ::dcp::test::IsOk;
using ::dcp::test::MemFileSystem;
using ::dcp::test::StatusIs;
using ::testing::AllOf;
using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::Field;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

constexpr char kDir[] = "/c";

std::string Golden(absl::string_view name) {
  return test::PytorchGoldenPath(name);
}

// A copy of the golden checkpoint `name` in a fresh MemFileSystem at kDir.
std::shared_ptr<MemFileSystem> GoldenInMemory(absl::string_view name) {
  auto mem = std::make_shared<MemFileSystem>();
  std::shared_ptr<FileSystem> posix = NewPosixFileSystem();
  const std::string src = Golden(name);
  DCP_EXPECT_OK(mem->CreateDir(kDir));
  absl::StatusOr<std::vector<std::string>> children = posix->GetChildren(src);
  DCP_EXPECT_OK(children.status());
  if (!children.ok()) return mem;
  for (const std::string& child : *children) {
    absl::StatusOr<std::string> bytes =
        ReadFileToString(*posix, JoinPath(src, child));
    DCP_EXPECT_OK(bytes.status());
    if (bytes.ok()) {
      DCP_EXPECT_OK(WriteStringToFile(*mem, JoinPath(kDir, child), *bytes,
                                      /*sync=*/false));
    }
  }
  return mem;
}

// A state dict with tensors of several dtypes and shapes (a 0-d and an
// empty one included) and bytes values.
StateDict ModelState() {
  StateDict sd;
  sd.Set("w", at::arange(24, at::kFloat).reshape({4, 6}));
  sd.Set("b", at::arange(5, at::kLong));
  sd.Set("half", at::ones({3, 2}, at::kHalf));
  sd.Set("flag", at::ones({7}, at::kBool));
  sd.Set("scalar", at::scalar_tensor(2.5, at::kDouble));
  sd.Set("empty", at::zeros({0, 3}, at::kInt));
  sd.Set("step", int64_t{42});
  sd.Set("name", std::string("adam"));
  StateDict nested;
  nested.Set("lr", 0.001);
  nested.Set("betas", List{Value(0.9), Value(0.999)});
  sd.Set("optim", std::move(nested));
  return sd;
}

// Saves `sd` into kDir of a fresh MemFileSystem with `files` data files.
std::shared_ptr<MemFileSystem> SavedInMemory(const StateDict& sd,
                                             int files = 1) {
  auto mem = std::make_shared<MemFileSystem>();
  FileSystemWriterOptions options;
  options.file_system = mem;
  options.thread_count = files;
  absl::StatusOr<std::unique_ptr<FileSystemWriter>> writer =
      FileSystemWriter::Create(kDir, options);
  DCP_EXPECT_OK(writer.status());
  if (!writer.ok()) return mem;
  SaveOptions save;
  save.no_dist = true;
  DCP_EXPECT_OK(Save(sd, **writer, save).status());
  return mem;
}

VerifyReport VerifyOk(std::shared_ptr<FileSystem> fs, int threads = 1) {
  VerifyOptions options;
  options.file_system = std::move(fs);
  options.thread_count = threads;
  absl::StatusOr<VerifyReport> report = VerifyCheckpoint(kDir, options);
  DCP_EXPECT_OK(report.status());
  return report.ok() ? *std::move(report) : VerifyReport();
}

std::string ProblemsText(const VerifyReport& report) {
  std::string out;
  for (const VerifyProblem& p : report.metadata.problems) {
    absl::StrAppend(&out, p.file, ": ", p.Describe(), "\n");
  }
  for (const VerifyFileReport& f : report.files) {
    for (const VerifyProblem& p : f.problems) {
      absl::StrAppend(&out, p.file, ": ", p.Describe(), "\n");
    }
  }
  return out;
}

const VerifyFileReport* FindFile(const VerifyReport& report,
                                 absl::string_view name) {
  for (const VerifyFileReport& f : report.files) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

// The data files `.metadata` names, with their records' [offset, end).
std::map<std::string, std::vector<std::pair<int64_t, int64_t>>> RecordsByFile(
    FileSystem& fs) {
  std::map<std::string, std::vector<std::pair<int64_t, int64_t>>> out;
  absl::StatusOr<Metadata> md =
      ReadCheckpointMetadata(kDir, std::shared_ptr<FileSystem>(
                                       &fs, [](FileSystem*) {}));
  DCP_EXPECT_OK(md.status());
  if (!md.ok()) return out;
  for (const auto& [index, info] : md->storage_data) {
    out[info.relative_path].push_back(
        {info.offset, info.offset + info.length});
  }
  return out;
}

void ExpectAllOk(const VerifyReport& report, size_t files, int64_t records) {
  EXPECT_TRUE(report.ok()) << ProblemsText(report);
  EXPECT_THAT(report.files, SizeIs(files));
  EXPECT_EQ(report.num_records(), records);
  EXPECT_EQ(report.metadata.records, records);
  for (const VerifyFileReport& f : report.files) {
    EXPECT_TRUE(f.exists) << f.name;
    EXPECT_EQ(f.record_bytes, f.size) << f.name;
  }
}

TEST(VerifyTest, GoodDcpCheckpointInOneFile) {
  auto mem = SavedInMemory(ModelState(), 1);
  VerifyReport report = VerifyOk(mem);
  ExpectAllOk(report, 1, 10);
  EXPECT_EQ(report.tensors, 6);
  EXPECT_EQ(report.values, 4);
}

TEST(VerifyTest, GoodDcpCheckpointInSeveralFilesWithThreadsAndProgress) {
  auto mem = SavedInMemory(ModelState(), 3);
  std::mutex mu;
  std::vector<VerifyProgress> seen;
  VerifyOptions options;
  options.file_system = mem;
  options.thread_count = 2;
  options.progress = [&](const VerifyProgress& p) {
    std::lock_guard<std::mutex> lock(mu);
    seen.push_back(p);
  };
  DCP_ASSERT_OK_AND_ASSIGN(VerifyReport report,
                           VerifyCheckpoint(kDir, options));
  ExpectAllOk(report, 3, 10);
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back().files_done, 3);
  EXPECT_EQ(seen.back().files_total, 3);
  EXPECT_EQ(seen.back().bytes_done, report.num_file_bytes());
  EXPECT_EQ(seen.back().bytes_total, report.num_file_bytes());
  for (size_t i = 1; i < seen.size(); ++i) {
    EXPECT_GE(seen[i].bytes_done, seen[i - 1].bytes_done);
    EXPECT_GE(seen[i].files_done, seen[i - 1].files_done);
  }
}

TEST(VerifyTest, PyTorchGoldensAreOk) {
  for (const char* name : {"simple", "sharded4", "nonstrided"}) {
    SCOPED_TRACE(name);
    auto mem = GoldenInMemory(name);
    VerifyReport report = VerifyOk(mem, 2);
    auto records = RecordsByFile(*mem);
    int64_t n = 0;
    for (const auto& [file, list] : records) n += list.size();
    ExpectAllOk(report, records.size(), n);
  }
  // Through the real file system as well, where Bazel's runfiles are
  // symbolic links: refused by default, read when allowed.
  VerifyOptions options;
  EXPECT_THAT(VerifyCheckpoint(Golden("sharded4"), options).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("symbolic link")));
  options.allow_symlinks = true;
  DCP_ASSERT_OK_AND_ASSIGN(VerifyReport report,
                           VerifyCheckpoint(Golden("sharded4"), options));
  EXPECT_TRUE(report.ok()) << ProblemsText(report);
  EXPECT_THAT(report.files, SizeIs(4));
}

// Flips `mask` into the byte at `offset` of `file`; returns the original.
std::string Flip(MemFileSystem& mem, const std::string& file, uint64_t offset,
                 unsigned char mask) {
  const std::string path = JoinPath(kDir, file);
  absl::StatusOr<std::string> bytes = ReadFileToString(mem, path);
  DCP_EXPECT_OK(bytes.status());
  std::string flipped = *bytes;
  flipped[offset] = static_cast<char>(flipped[offset] ^ mask);
  DCP_EXPECT_OK(WriteStringToFile(mem, path, flipped, false));
  return *bytes;
}

// Flips one byte at a time at `offsets` of `file` (restoring it after
// each) and expects that file, and only it, to be reported.
void ExpectEveryFlipNamesTheFile(MemFileSystem& mem, const std::string& file,
                                 const std::vector<uint64_t>& offsets,
                                 unsigned char mask) {
  std::shared_ptr<FileSystem> fs(&mem, [](FileSystem*) {});
  for (uint64_t offset : offsets) {
    const std::string original = Flip(mem, file, offset, mask);
    VerifyReport report = VerifyOk(fs);
    const VerifyFileReport* flipped = FindFile(report, file);
    ASSERT_NE(flipped, nullptr);
    EXPECT_FALSE(flipped->ok())
        << "flip 0x" << std::hex << int{mask} << std::dec << " at byte "
        << offset << " of " << file << " was not detected";
    EXPECT_TRUE(report.metadata.ok()) << ProblemsText(report);
    for (const VerifyFileReport& f : report.files) {
      if (f.name != file) {
        EXPECT_TRUE(f.ok()) << "flip at " << offset << " of " << file
                            << " reported in " << f.name;
      }
      for (const VerifyProblem& p : f.problems) EXPECT_EQ(p.file, f.name);
    }
    DCP_ASSERT_OK(
        WriteStringToFile(mem, JoinPath(kDir, file), original, false));
  }
}

std::vector<uint64_t> AllOffsets(uint64_t size) {
  std::vector<uint64_t> out;
  for (uint64_t i = 0; i < size; ++i) out.push_back(i);
  return out;
}

// Rewrites `.metadata` of kDir through `edit`.
template <typename Edit>
void EditMetadata(FileSystem& fs, Edit edit) {
  const std::string path = JoinPath(kDir, ".metadata");
  DCP_ASSERT_OK_AND_ASSIGN(std::string bytes, ReadFileToString(fs, path));
  DCP_ASSERT_OK_AND_ASSIGN(Metadata md, DecodeMetadataPickle(bytes));
  edit(md);
  DCP_ASSERT_OK_AND_ASSIGN(std::string encoded, EncodeMetadataPickle(md));
  DCP_ASSERT_OK(WriteStringToFile(fs, path, encoded, false));
}

// Trims the checkpoint to the records of `file` (a smaller `.metadata`
// makes each of the thousands of verifications of a byte sweep cheap; the
// records stay byte for byte as their writer wrote them).
void KeepOnlyFile(FileSystem& fs, const std::string& file) {
  EditMetadata(fs, [&](Metadata& md) {
    std::map<MetadataIndex, StorageInfo> kept;
    std::map<std::string, StorageMetadata> keys;
    for (auto& [fqn, entry] : md.state_dict_metadata) {
      if (auto* tensor = std::get_if<TensorStorageMetadata>(&entry)) {
        // The tensor becomes its one chunk in `file` (at offset 0), so that
        // the chunks still tile it.
        const ChunkStorageMetadata* in_file = nullptr;
        for (const ChunkStorageMetadata& chunk : tensor->chunks) {
          auto info = md.storage_data.find(MetadataIndex(fqn, chunk.offsets));
          if (info != md.storage_data.end() &&
              info->second.relative_path == file) {
            EXPECT_EQ(in_file, nullptr) << "two chunks of " << fqn;
            in_file = &chunk;
          }
        }
        if (in_file == nullptr) continue;
        const StorageInfo info =
            md.storage_data.at(MetadataIndex(fqn, in_file->offsets));
        ChunkStorageMetadata chunk{Shape(in_file->sizes.size(), 0),
                                   in_file->sizes};
        tensor->size = chunk.sizes;
        tensor->chunks = {chunk};
        kept.emplace(MetadataIndex(fqn, chunk.offsets), info);
      } else {
        auto info = md.storage_data.find(MetadataIndex(fqn));
        if (info == md.storage_data.end() ||
            info->second.relative_path != file) {
          continue;
        }
        kept.emplace(info->first, info->second);
      }
      keys.emplace(fqn, std::move(entry));
    }
    md.storage_data = std::move(kept);
    md.state_dict_metadata = std::move(keys);
  });
}

TEST(VerifyFlipTest, EveryByteOfAPyTorchDataFile) {
  auto mem = GoldenInMemory("sharded4");
  const std::string file = "__2_0.distcp";
  KeepOnlyFile(*mem, file);
  ExpectAllOk(VerifyOk(mem), 1, 4);
  DCP_ASSERT_OK_AND_ASSIGN(uint64_t size, mem->FileSize(JoinPath(kDir, file)));
  ExpectEveryFlipNamesTheFile(*mem, file, AllOffsets(size), 0x01);
}

// Every byte of a small dcp checkpoint (a tensor record and a bytes
// record), every bit of the byte flipped.
TEST(VerifyFlipTest, EveryByteOfADcpCheckpoint) {
  StateDict sd;
  sd.Set("w", at::arange(6, at::kFloat).reshape({2, 3}));
  sd.Set("step", int64_t{7});
  auto mem = SavedInMemory(sd, 1);
  const auto records = RecordsByFile(*mem);
  ASSERT_THAT(records, SizeIs(1));
  for (const auto& [file, unused] : records) {
    DCP_ASSERT_OK_AND_ASSIGN(uint64_t size,
                             mem->FileSize(JoinPath(kDir, file)));
    ExpectEveryFlipNamesTheFile(*mem, file, AllOffsets(size), 0xff);
  }
}

// Whole checkpoints: in every record of every data file, its first, middle
// and last byte and 8 more spread over it; the other files stay OK.
TEST(VerifyFlipTest, SpreadOffsetsInEveryRecordOfEveryFile) {
  struct Case {
    std::string name;
    std::shared_ptr<MemFileSystem> mem;
  };
  std::vector<Case> cases;
  for (const char* name : {"simple", "sharded4", "nonstrided"}) {
    cases.push_back({name, GoldenInMemory(name)});
  }
  cases.push_back({"dcp", SavedInMemory(ModelState(), 3)});
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const auto records = RecordsByFile(*c.mem);
    ASSERT_GE(records.size(), 1);
    for (const auto& [file, list] : records) {
      std::set<uint64_t> offsets;
      for (const auto& [begin, end] : list) {
        offsets.insert(begin);
        offsets.insert(begin + (end - begin) / 2);
        offsets.insert(end - 1);
        for (int k = 1; k <= 8; ++k) {
          offsets.insert(begin + (end - begin) * k / 9);
        }
      }
      ExpectEveryFlipNamesTheFile(
          *c.mem, file, std::vector<uint64_t>(offsets.begin(), offsets.end()),
          0x10);
    }
  }
}

// A tensor bigger than the entry size read through the cache, so its CRC
// is streamed.
TEST(VerifyFlipTest, FlipInsideALargeTensorIsACrcMismatchNamingTheChunk) {
  StateDict sd;
  sd.Set("big", at::arange(600000, at::kFloat));
  auto mem = SavedInMemory(sd, 1);
  const auto records = RecordsByFile(*mem);
  ASSERT_THAT(records, SizeIs(1));
  const std::string file = records.begin()->first;
  const auto [begin, end] = records.begin()->second.front();
  const uint64_t offset = begin + (end - begin) / 2;
  Flip(*mem, file, offset, 0x04);
  VerifyReport report = VerifyOk(mem);
  ASSERT_FALSE(report.ok());
  const VerifyFileReport* f = FindFile(report, file);
  ASSERT_NE(f, nullptr);
  ASSERT_THAT(f->problems, SizeIs(1));
  const VerifyProblem& p = f->problems[0];
  EXPECT_EQ(p.kind, VerifyProblemKind::kCrcMismatch);
  EXPECT_EQ(p.key, "big");
  EXPECT_EQ(p.chunk_offsets, Shape({0}));
  EXPECT_EQ(p.entry, "archive/data/0");
  EXPECT_EQ(p.record_offset, begin);
  ASSERT_TRUE(p.byte_offset.has_value());
  EXPECT_LE(*p.byte_offset, offset);
  EXPECT_EQ(p.Describe(),
            absl::StrCat("crc mismatch in entry \"archive/data/0\" of the "
                         "record of \"big\" chunk [0] at offset ",
                         begin, " (byte ", *p.byte_offset, ")"));
}

// The first record of the only data file of `mem`: its file, offset and
// zip directory.
struct FirstRecord {
  std::string file;
  int64_t offset = 0;
  ZipDirectory zip;
};

FirstRecord FindFirstRecord(MemFileSystem& mem) {
  FirstRecord out;
  const auto records = RecordsByFile(mem);
  EXPECT_THAT(records, SizeIs(1));
  out.file = records.begin()->first;
  const auto [begin, end] = records.begin()->second.front();
  out.offset = begin;
  absl::StatusOr<std::string> bytes =
      ReadFileToString(mem, JoinPath(kDir, out.file));
  DCP_EXPECT_OK(bytes.status());
  absl::StatusOr<ZipDirectory> zip =
      ReadZipDirectory(absl::string_view(*bytes).substr(begin, end - begin));
  DCP_EXPECT_OK(zip.status());
  out.zip = *std::move(zip);
  return out;
}

TEST(VerifyTest, FlippedPaddingByteIsAZipLayoutProblemAtThatByte) {
  StateDict sd;
  sd.Set("w", at::ones({2, 2}));
  auto mem = SavedInMemory(sd, 1);
  const FirstRecord r = FindFirstRecord(*mem);
  const ZipEntry& first = r.zip.entries.front();
  // Local header, name, then the "FB" block's id and length, then filler.
  const uint64_t filler = r.offset + first.header_offset + 30 +
                          first.name.size() + 4;
  Flip(*mem, r.file, filler, 0x01);
  VerifyReport report = VerifyOk(mem);
  ASSERT_THAT(report.files, SizeIs(1));
  ASSERT_THAT(report.files[0].problems, SizeIs(1));
  const VerifyProblem& p = report.files[0].problems[0];
  EXPECT_EQ(p.kind, VerifyProblemKind::kZipLayout);
  EXPECT_EQ(p.entry, first.name);
  EXPECT_EQ(p.byte_offset, filler);
  EXPECT_EQ(p.Describe(),
            absl::StrCat("zip layout: alignment padding byte is not 'Z' in "
                         "entry \"", first.name,
                         "\" of the record of \"w\" chunk [0, 0] at offset ",
                         r.offset, " (byte ", filler, ")"));
}

TEST(VerifyTest, BrokenZipStructureGivesTheReadersDetail) {
  StateDict sd;
  sd.Set("w", at::ones({2, 2}));
  auto mem = SavedInMemory(sd, 1);
  const FirstRecord r = FindFirstRecord(*mem);
  // The first local header's signature.
  Flip(*mem, r.file, r.offset + r.zip.entries.front().header_offset, 0x01);
  VerifyReport report = VerifyOk(mem);
  ASSERT_THAT(report.files, SizeIs(1));
  ASSERT_THAT(report.files[0].problems, SizeIs(1));
  const VerifyProblem& p = report.files[0].problems[0];
  EXPECT_EQ(p.kind, VerifyProblemKind::kZipStructure);
  EXPECT_THAT(p.detail, HasSubstr("bad local header signature"));
  EXPECT_THAT(p.Describe(),
              AllOf(::testing::StartsWith("bad zip structure of the record of "
                                        "\"w\" chunk [0, 0] at offset "),
                    HasSubstr(": zip: entry")));
}

// ---- Block checksum files ---------------------------------------------------

class VerifyBlockChecksumsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StateDict sd;
    sd.Set("big", at::arange(700000, at::kFloat));    // 2.7 MiB: 3 blocks.
    sd.Set("exact", at::arange(262144, at::kFloat));  // 1 MiB: 1 block.
    sd.Set("small", at::arange(10, at::kFloat));
    mem_ = SavedInMemory(sd, 1);
    const auto records = RecordsByFile(*mem_);
    ASSERT_THAT(records, SizeIs(1));
    file_ = records.begin()->first;
    path_ = JoinPath(kDir, absl::StrCat(file_, kBlockChecksumsSuffix));
    absl::StatusOr<std::string> bytes = ReadFileToString(*mem_, path_);
    DCP_ASSERT_OK(bytes.status());
    DCP_ASSERT_OK_AND_ASSIGN(checksums_, DecodeBlockChecksums(*bytes));
    ASSERT_THAT(checksums_.records, SizeIs(2));
  }

  void WriteChecksums(const std::string& bytes) {
    DCP_ASSERT_OK(WriteStringToFile(*mem_, path_, bytes, false));
  }

  // The problems of the one data file, which must be of `kind`.
  std::vector<VerifyProblem> Problems(VerifyProblemKind kind) {
    VerifyReport report = VerifyOk(mem_);
    EXPECT_TRUE(report.metadata.ok());
    const VerifyFileReport* f = FindFile(report, file_);
    if (f == nullptr) return {};
    for (const VerifyProblem& p : f->problems) {
      EXPECT_EQ(p.kind, kind) << p;
    }
    return f->problems;
  }

  std::shared_ptr<MemFileSystem> mem_;
  std::string file_;
  std::string path_;
  BlockChecksums checksums_;
};

TEST_F(VerifyBlockChecksumsTest, GoodOrAbsentIsOk) {
  EXPECT_THAT(Problems(VerifyProblemKind::kBlockChecksums), IsEmpty());
  DCP_ASSERT_OK(mem_->RemoveFile(path_));
  EXPECT_THAT(Problems(VerifyProblemKind::kBlockChecksums), IsEmpty());
}

TEST_F(VerifyBlockChecksumsTest, UnusableFileIsOneProblem) {
  DCP_ASSERT_OK_AND_ASSIGN(std::string bytes, ReadFileToString(*mem_, path_));
  bytes[bytes.size() / 2] ^= 0x08;
  WriteChecksums(bytes);
  std::vector<VerifyProblem> problems =
      Problems(VerifyProblemKind::kBlockChecksums);
  ASSERT_THAT(problems, SizeIs(1));
  EXPECT_THAT(problems[0].message,
              HasSubstr("unusable block checksum file " + file_ + ".dcpcrc"));
  EXPECT_THAT(problems[0].detail, HasSubstr("CRC-32"));
}

TEST_F(VerifyBlockChecksumsTest, WrongBlockChecksumsAreNamed) {
  // Consistent in themselves, but the checksums of other data of the same
  // sizes, so their CRC-32s are not the records' (loads would not use
  // them).
  BlockChecksums wrong = checksums_;
  for (RecordBlockChecksums& r : wrong.records) {
    const std::string other(r.data_size, '\x5a');
    r.block_crc32 = ChecksumBlocks(other, wrong.block_bytes, &r.data_crc32);
  }
  WriteChecksums(EncodeBlockChecksums(wrong));
  std::vector<VerifyProblem> problems =
      Problems(VerifyProblemKind::kBlockChecksums);
  ASSERT_THAT(problems, SizeIs(2));
  for (const VerifyProblem& p : problems) {
    EXPECT_THAT(p.message, HasSubstr("describe"));
    EXPECT_EQ(p.entry, "archive/data/0");
  }
}

TEST_F(VerifyBlockChecksumsTest, BlockChecksumNotOfItsBlockIsNamed) {
  // Right sizes and CRC-32 for "big", but block 1 is the checksum of other
  // bytes and block 2 compensates (CRC-32 is linear: recompute block 2 as
  // whatever makes the combination right).
  BlockChecksums wrong = checksums_;
  RecordBlockChecksums* big = nullptr;
  for (RecordBlockChecksums& r : wrong.records) {
    if (r.block_crc32.size() == 3) big = &r;
  }
  ASSERT_NE(big, nullptr);
  const uint64_t last = big->data_size - 2 * wrong.block_bytes;
  big->block_crc32[1] ^= 0x1;
  // Combining XORs the last block's checksum into the shifted head, so
  // the block 2 that keeps the combination right is solved for directly.
  const uint32_t head = Crc32Combine(
      Crc32Combine(big->block_crc32[0], big->block_crc32[1], wrong.block_bytes),
      0, last);
  big->block_crc32[2] = head ^ big->data_crc32;
  DCP_ASSERT_OK(DecodeBlockChecksums(EncodeBlockChecksums(wrong)).status());
  WriteChecksums(EncodeBlockChecksums(wrong));
  std::vector<VerifyProblem> problems =
      Problems(VerifyProblemKind::kBlockChecksums);
  ASSERT_THAT(problems, SizeIs(1));
  EXPECT_THAT(problems[0].message,
              HasSubstr("2 wrong block checksum(s) in " + file_ +
                        ".dcpcrc, the first for block 1"));
  EXPECT_EQ(problems[0].key, "big");
}

TEST_F(VerifyBlockChecksumsTest, ChecksumsForNoRecordAreNamed) {
  BlockChecksums extra = checksums_;
  RecordBlockChecksums stray;
  stray.data_offset = 1;  // Inside the first record's header.
  extra.records.insert(extra.records.begin(), stray);
  WriteChecksums(EncodeBlockChecksums(extra));
  std::vector<VerifyProblem> problems =
      Problems(VerifyProblemKind::kBlockChecksums);
  ASSERT_THAT(problems, SizeIs(1));
  EXPECT_THAT(problems[0].message,
              HasSubstr("for data at byte 1 (0 bytes) where no record"));
}

TEST_F(VerifyBlockChecksumsTest, DamagedDataIsOneCrcMismatch) {
  const RecordBlockChecksums& r = checksums_.records.back();
  Flip(*mem_, file_, r.data_offset + r.data_size / 2, 0x10);
  std::vector<VerifyProblem> problems =
      Problems(VerifyProblemKind::kCrcMismatch);
  EXPECT_THAT(problems, SizeIs(1));
}

TEST(VerifyTest, MissingDataFileIsReportedAndTheOthersAreChecked) {
  auto mem = GoldenInMemory("sharded4");
  DCP_ASSERT_OK(mem->RemoveFile(JoinPath(kDir, "__1_0.distcp")));
  VerifyReport report = VerifyOk(mem);
  EXPECT_EQ(report.num_bad_files(), 1);
  const VerifyFileReport* f = FindFile(report, "__1_0.distcp");
  ASSERT_NE(f, nullptr);
  EXPECT_FALSE(f->exists);
  ASSERT_THAT(f->problems, SizeIs(1));
  EXPECT_EQ(f->problems[0].kind, VerifyProblemKind::kMissingFile);
  EXPECT_THAT(f->problems[0].Describe(), HasSubstr("missing data file"));
  for (const char* other : {"__0_0.distcp", "__2_0.distcp", "__3_0.distcp"}) {
    ASSERT_NE(FindFile(report, other), nullptr);
    EXPECT_TRUE(FindFile(report, other)->ok()) << other;
  }
}

TEST(VerifyTest, TruncatedDataFileNamesTheRecordsPastTheEnd) {
  auto mem = SavedInMemory(ModelState(), 1);
  const auto records = RecordsByFile(*mem);
  const std::string file = records.begin()->first;
  const std::string path = JoinPath(kDir, file);
  DCP_ASSERT_OK_AND_ASSIGN(std::string bytes, ReadFileToString(*mem, path));
  DCP_ASSERT_OK(
      WriteStringToFile(*mem, path, bytes.substr(0, bytes.size() - 10), false));
  VerifyReport report = VerifyOk(mem);
  const VerifyFileReport* f = FindFile(report, file);
  ASSERT_NE(f, nullptr);
  ASSERT_THAT(f->problems, SizeIs(1));
  const VerifyProblem& p = f->problems[0];
  EXPECT_EQ(p.kind, VerifyProblemKind::kOutsideFile);
  EXPECT_TRUE(p.key.has_value());
  EXPECT_THAT(p.Describe(), HasSubstr("outside the data file"));
  EXPECT_TRUE(report.metadata.ok());
}

TEST(VerifyTest, MetadataNamingAFileThatDoesNotExist) {
  auto mem = GoldenInMemory("sharded4");
  EditMetadata(*mem, [](Metadata& md) {
    md.storage_data.at(MetadataIndex("step")).relative_path = "__9_0.distcp";
  });
  VerifyReport report = VerifyOk(mem);
  const VerifyFileReport* missing = FindFile(report, "__9_0.distcp");
  ASSERT_NE(missing, nullptr);
  ASSERT_THAT(missing->problems, SizeIs(1));
  EXPECT_EQ(missing->problems[0].kind, VerifyProblemKind::kMissingFile);
  // The record's old place is now bytes no record covers.
  const VerifyFileReport* old = FindFile(report, "__2_0.distcp");
  ASSERT_NE(old, nullptr);
  ASSERT_THAT(old->problems, SizeIs(1));
  EXPECT_EQ(old->problems[0].kind, VerifyProblemKind::kUnreferencedBytes);
  EXPECT_TRUE(FindFile(report, "__0_0.distcp")->ok());
}

TEST(VerifyTest, MetadataInconsistenciesAreMetadataProblems) {
  auto mem = SavedInMemory(ModelState(), 1);
  EditMetadata(*mem, [](Metadata& md) {
    md.storage_data.erase(MetadataIndex("w", Shape{0, 0}));
    md.storage_data[MetadataIndex("nope")] =
        md.storage_data.at(MetadataIndex("step"));
    md.storage_data.at(MetadataIndex("name")).relative_path = "../x.distcp";
  });
  VerifyReport report = VerifyOk(mem);
  EXPECT_THAT(ProblemsText(report),
              AllOf(HasSubstr(".metadata: no storage entry for \"w\" chunk "
                              "[0, 0]"),
                    HasSubstr(".metadata: storage entry without a key in "
                              "state_dict_metadata for \"nope\""),
                    HasSubstr("\"../x.distcp\" is outside the checkpoint")));
  // The data file: "nope" and "step" share a record; "w" and "name" are now
  // bytes no record covers.
  ASSERT_THAT(report.files, SizeIs(1));
  std::set<VerifyProblemKind> kinds;
  for (const VerifyProblem& p : report.files[0].problems) kinds.insert(p.kind);
  EXPECT_EQ(kinds, (std::set<VerifyProblemKind>{
                       VerifyProblemKind::kOverlap,
                       VerifyProblemKind::kUnreferencedBytes}));
}

TEST(VerifyTest, DtypeAndShapeAgainstMetadata) {
  auto mem = SavedInMemory(ModelState(), 1);
  EditMetadata(*mem, [](Metadata& md) {
    auto& w = std::get<TensorStorageMetadata>(md.state_dict_metadata.at("w"));
    w.properties.dtype = c10::ScalarType::Double;
    auto& b = std::get<TensorStorageMetadata>(md.state_dict_metadata.at("b"));
    b.chunks[0].sizes = {4};
  });
  VerifyReport report = VerifyOk(mem);
  EXPECT_THAT(ProblemsText(report),
              AllOf(HasSubstr("holds a float32 tensor but .metadata says "
                              "float64 of the record of \"w\" chunk [0, 0]"),
                    HasSubstr("holds a tensor of shape [5] but .metadata says "
                              "[4] of the record of \"b\" chunk [0]"),
                    HasSubstr("chunks cover 4 of 5 elements for \"b\"")));
  EXPECT_EQ(report.num_problems(), 3);
}

// Chunks that do not tile their tensor exactly, as PyTorch's and dcp's
// savers require: a load would fail, or read a region twice.
TEST(VerifyTest, ChunksThatDoNotTileTheTensorAreMetadataProblems) {
  for (int64_t delta : {1, -1}) {
    SCOPED_TRACE(delta);
    auto mem = SavedInMemory(ModelState(), 1);
    Shape size;
    EditMetadata(*mem, [&](Metadata& md) {
      auto& w = std::get<TensorStorageMetadata>(md.state_dict_metadata.at("w"));
      w.size[0] += delta;
      size = w.size;
    });
    VerifyReport report = VerifyOk(mem);
    // Only .metadata is wrong; the records are what it says they are.
    EXPECT_EQ(report.num_problems(), report.metadata.problems.size());
    EXPECT_THAT(ProblemsText(report),
                delta > 0 ? HasSubstr("chunks cover 24 of 30 elements for \"w\"")
                          : HasSubstr("chunk [0, 0]+[4, 6] is not inside size "
                                      "[3, 6] for \"w\""));
  }
}

TEST(VerifyTest, CannotVerifyWithoutReadableMetadata) {
  auto mem = std::make_shared<MemFileSystem>();
  DCP_ASSERT_OK(mem->CreateDir(kDir));
  VerifyOptions options;
  options.file_system = mem;
  EXPECT_THAT(VerifyCheckpoint(kDir, options).status(),
              StatusIs(absl::StatusCode::kNotFound));
  DCP_ASSERT_OK(
      WriteStringToFile(*mem, JoinPath(kDir, ".metadata"), "garbage", false));
  EXPECT_THAT(VerifyCheckpoint(kDir, options).status(),
              StatusIs(absl::StatusCode::kDataLoss));
  options.thread_count = 0;
  EXPECT_THAT(VerifyCheckpoint(kDir, options).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace dcp
