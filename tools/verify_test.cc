#include "tools/verify.h"

#include <ATen/ATen.h>

#include <cstdlib>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "core/metadata.h"
#include "core/state_dict.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/file_system.h"
#include "storage/fs_storage.h"
#include "storage/posix_file_system.h"
#include "storage/zip.h"
#include "testing/runfiles.h"
#include "testing/status_matchers.h"
#include "tools/local_checkpoint.h"

namespace dcp::tools {
namespace {

using ::dcp::test::IsOk;
using ::dcp::test::StatusIs;
using ::testing::AllOf;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string Golden(absl::string_view name) {
  return test::PytorchGoldenPath(name);
}

// A writable copy of the golden checkpoint `name`.
std::string CopyOfGolden(absl::string_view name, absl::string_view dest) {
  std::shared_ptr<FileSystem> fs = NewPosixFileSystem();
  const std::string src = Golden(name);
  const std::string dir = JoinPath(::testing::TempDir(), dest);
  DCP_EXPECT_OK(fs->CreateDir(dir));
  absl::StatusOr<std::vector<std::string>> children = fs->GetChildren(src);
  DCP_EXPECT_OK(children.status());
  if (!children.ok()) return dir;
  for (const std::string& child : *children) {
    absl::StatusOr<std::string> bytes =
        ReadFileToString(*fs, JoinPath(src, child));
    DCP_EXPECT_OK(bytes.status());
    if (bytes.ok()) {
      DCP_EXPECT_OK(
          WriteStringToFile(*fs, JoinPath(dir, child), *bytes, false));
    }
  }
  return dir;
}

struct CommandRun {
  int exit_code = -1;
  std::string out;
  std::vector<std::string> lines;
};

CommandRun Verify(const std::string& dir, bool json = false) {
  VerifyCommandOptions options;
  options.dir = dir;
  options.json = json;
  options.allow_symlinks = true;  // Runfiles (the goldens) are links.
  std::ostringstream out;
  CommandRun run;
  run.exit_code = VerifyExitCode(VerifyCommand(options, out));
  run.out = out.str();
  run.lines = absl::StrSplit(run.out, '\n', absl::SkipEmpty());
  return run;
}

TEST(VerifyCommandTest, GoodPyTorchCheckpointPrintsOkLinesAndExitsZero) {
  CommandRun run = Verify(Golden("sharded4"));
  EXPECT_EQ(run.exit_code, 0) << run.out;
  ASSERT_EQ(run.lines.size(), 7u) << run.out;
  EXPECT_THAT(run.lines[0], StartsWith("checkpoint: "));
  EXPECT_EQ(run.lines[1],
            "OK  .metadata  5 keys (4 tensors, 1 bytes values)  14 records");
  EXPECT_THAT(run.lines[2], StartsWith("OK  __0_0.distcp  "));
  EXPECT_THAT(run.lines[5], StartsWith("OK  __3_0.distcp  "));
  EXPECT_THAT(run.lines[4], HasSubstr("records  4.30 KiB"));
  EXPECT_EQ(run.lines[6], "summary: 4 data files, 14 records, 15.64 KiB: OK");
}

TEST(VerifyCommandTest, GoodDcpCheckpointOfTwoRanksIsOk) {
  const std::string dir = JoinPath(::testing::TempDir(), "verify_dcp_good");
  std::vector<StateDict> ranks(2);
  ranks[0].Set("w", at::ones({3, 4}));
  ranks[0].Set("step", int64_t{3});
  ranks[1].Set("v", at::arange(10, at::kInt));
  ranks[1].Set("note", std::string("hello"));
  DCP_ASSERT_OK_AND_ASSIGN(absl::Duration unused, SaveOnLocalRanks(ranks, dir));
  (void)unused;
  CommandRun run = Verify(dir);
  EXPECT_EQ(run.exit_code, 0) << run.out;
  EXPECT_THAT(run.out, HasSubstr("OK  .metadata  4 keys (2 tensors, 2 bytes "
                                 "values)  4 records\n"));
  EXPECT_THAT(run.lines.back(), StartsWith("summary: 2 data files, 4 records"));
  EXPECT_THAT(run.lines.back(), HasSubstr(": OK"));
}

// Flips the last byte of the data of `entry` in the first record (by
// offset) of `file`; returns the line the text output must show.
std::string FlipEntryOfFirstRecord(const std::string& dir,
                                   const std::string& file,
                                   absl::string_view entry) {
  std::shared_ptr<FileSystem> fs = NewPosixFileSystem();
  absl::StatusOr<Metadata> md = ReadCheckpointMetadata(dir, fs);
  DCP_EXPECT_OK(md.status());
  const MetadataIndex* index = nullptr;
  const StorageInfo* info = nullptr;
  for (const auto& [i, s] : md->storage_data) {
    if (s.relative_path == file && (info == nullptr || s.offset < info->offset)) {
      index = &i;
      info = &s;
    }
  }
  EXPECT_NE(info, nullptr);
  const std::string path = JoinPath(dir, file);
  absl::StatusOr<std::string> bytes = ReadFileToString(*fs, path);
  DCP_EXPECT_OK(bytes.status());
  absl::string_view record =
      absl::string_view(*bytes).substr(info->offset, info->length);
  absl::StatusOr<ZipDirectory> zip = ReadZipDirectory(record);
  DCP_EXPECT_OK(zip.status());
  const ZipEntry* e = zip->Find(entry);
  EXPECT_NE(e, nullptr);
  std::string flipped = *bytes;
  const uint64_t at = info->offset + e->data_offset + e->size - 1;
  flipped[at] = static_cast<char>(flipped[at] ^ 0x20);
  DCP_EXPECT_OK(WriteStringToFile(*fs, path, flipped, false));
  std::string where;
  if (index->offset.has_value()) {
    where = absl::StrCat(" chunk [", absl::StrJoin(*index->offset, ", "), "]");
  }
  return absl::StrCat("BAD ", file, ": crc mismatch in entry \"", e->name,
                      "\" of the record of \"", index->fqn, "\"", where,
                      " at offset ", info->offset, " (byte ",
                      info->offset + e->data_offset, ")");
}

TEST(VerifyCommandTest, FlippedByteNamesTheFileAndExitsOne) {
  const std::string dir = CopyOfGolden("sharded4", "verify_flip");
  const std::string expected =
      FlipEntryOfFirstRecord(dir, "__1_0.distcp", "data/0");
  CommandRun run = Verify(dir);
  EXPECT_EQ(run.exit_code, 1) << run.out;
  EXPECT_THAT(run.lines, Contains(expected)) << run.out;
  EXPECT_THAT(run.lines, Contains(StartsWith("OK  __0_0.distcp  ")));
  EXPECT_THAT(run.lines, Contains(StartsWith("OK  __2_0.distcp  ")));
  EXPECT_THAT(run.lines, Contains(StartsWith("OK  __3_0.distcp  ")));
  EXPECT_THAT(run.lines.back(),
              AllOf(StartsWith("summary: 4 data files, 14 records, "),
                    HasSubstr(": 1 problem in 1 file")));

  CommandRun json = Verify(dir, /*json=*/true);
  EXPECT_EQ(json.exit_code, 1);
  EXPECT_THAT(json.out, StartsWith("{\n  \"checkpoint\": "));
  EXPECT_THAT(json.out, HasSubstr("\"ok\": false"));
  EXPECT_THAT(json.out,
              HasSubstr("{\"file\": \"__1_0.distcp\", \"kind\": \"crc "
                        "mismatch\", \"message\": \"crc mismatch\""));
  EXPECT_THAT(json.out, HasSubstr("\"entry\": \"archive/data/0\""));
  EXPECT_THAT(json.out,
              HasSubstr("{\"name\": \"__1_0.distcp\", \"exists\": true"));
  EXPECT_THAT(json.out, HasSubstr("\"bad_files\": 1,"));
  EXPECT_THAT(json.out, HasSubstr("\"problems\": 1}\n}\n"));
}

TEST(VerifyCommandTest, MissingFileAndSeveralProblemsAreListed) {
  const std::string dir = CopyOfGolden("sharded4", "verify_missing");
  std::shared_ptr<FileSystem> fs = NewPosixFileSystem();
  DCP_ASSERT_OK(fs->RemoveFile(JoinPath(dir, "__3_0.distcp")));
  FlipEntryOfFirstRecord(dir, "__0_0.distcp", "data.pkl");
  FlipEntryOfFirstRecord(dir, "__0_0.distcp", "version");
  CommandRun run = Verify(dir);
  EXPECT_EQ(run.exit_code, 1) << run.out;
  EXPECT_THAT(run.lines, Contains(AllOf(StartsWith("BAD __3_0.distcp: missing "
                                                   "data file"))));
  EXPECT_THAT(run.lines,
              Contains(AllOf(StartsWith("BAD __0_0.distcp: crc mismatch in "
                                        "entry \"archive/data.pkl\""))));
  EXPECT_THAT(run.lines,
              Contains(AllOf(StartsWith("    __0_0.distcp: crc mismatch in "
                                        "entry \"archive/version\""))));
  EXPECT_THAT(run.lines.back(), HasSubstr(": 3 problems in 2 files"));
}

TEST(VerifyCommandTest, CannotVerifyExitsTwo) {
  const std::string empty = JoinPath(::testing::TempDir(), "verify_empty");
  DCP_ASSERT_OK(NewPosixFileSystem()->CreateDir(empty));
  VerifyCommandOptions options;
  options.dir = empty;
  std::ostringstream out;
  absl::StatusOr<bool> result = VerifyCommand(options, out);
  EXPECT_THAT(result.status(), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_EQ(VerifyExitCode(result), 2);
  EXPECT_EQ(out.str(), "");
  options.dir = "";
  EXPECT_EQ(VerifyExitCode(VerifyCommand(options, out)), 2);
}

TEST(VerifyCommandTest, ProgressLinesWithoutAnInterval) {
  VerifyCommandOptions options;
  options.dir = Golden("sharded4");
  options.allow_symlinks = true;
  options.progress_interval = absl::ZeroDuration();
  std::ostringstream progress;
  options.progress = &progress;
  std::ostringstream out;
  DCP_ASSERT_OK_AND_ASSIGN(bool ok, VerifyCommand(options, out));
  EXPECT_TRUE(ok);
  EXPECT_THAT(progress.str(),
              AllOf(StartsWith("\rverifying... "),
                    HasSubstr("\rverifying... 4/4 files, 15.64 KiB of 15.64 KiB\n")));
  EXPECT_TRUE(absl::EndsWith(progress.str(), "\n"));
}

}  // namespace
}  // namespace dcp::tools
