#include "testing/file_system_conformance.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/file_system.h"
#include "testing/status_matchers.h"

namespace dcp::test {

void FileSystemConformanceTest::SetUp() {
  FileSystemUnderTest under_test = GetParam().make();
  fs_ = std::move(under_test.fs);
  root_ = std::move(under_test.root);
  ASSERT_NE(fs_, nullptr);
}

std::string FileSystemConformanceTest::Path(const std::string& name) const {
  return JoinPath(root_, name);
}

namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// A deterministic, position-dependent byte pattern.
std::string Pattern(size_t n, int seed = 0) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) {
    s[i] = static_cast<char>(
        (i * 131 + static_cast<size_t>(seed) * 7 + i / 251) & 0xff);
  }
  return s;
}

TEST_P(FileSystemConformanceTest, WriteThenReadRoundTrips) {
  const std::string path = Path("f");
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<WritableFile> w,
                           fs_->NewWritableFile(path));
  EXPECT_EQ(w->size(), 0u);
  DCP_ASSERT_OK(w->Append("hello "));
  DCP_ASSERT_OK(w->Append(""));
  DCP_ASSERT_OK(w->Append("world"));
  EXPECT_EQ(w->size(), 11u);
  DCP_ASSERT_OK(w->Sync());
  DCP_ASSERT_OK(w->Close());

  EXPECT_THAT(fs_->FileSize(path), IsOkAndHolds(11u));
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RandomAccessFile> r,
                           fs_->NewRandomAccessFile(path));
  EXPECT_EQ(r->size(), 11u);
  char scratch[16];
  DCP_ASSERT_OK_AND_ASSIGN(absl::string_view got, r->Read(6, 5, scratch));
  EXPECT_EQ(got, "world");
  DCP_ASSERT_OK_AND_ASSIGN(got, r->Read(11, 0, scratch));  // Empty read at EOF.
  EXPECT_EQ(got, "");
  std::string all(11, '?');
  DCP_ASSERT_OK(r->ReadInto(0, absl::MakeSpan(all)));
  EXPECT_EQ(all, "hello world");
  EXPECT_THAT(ReadFileToString(*fs_, path),
              IsOkAndHolds(std::string("hello world")));
}

TEST_P(FileSystemConformanceTest, ShortReadIsDataLossNamingFileOffsetAndSizes) {
  const std::string path = Path("short");
  DCP_ASSERT_OK(WriteStringToFile(*fs_, path, "0123456789", /*sync=*/false));
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RandomAccessFile> r,
                           fs_->NewRandomAccessFile(path));
  char scratch[32];
  EXPECT_THAT(r->Read(4, 10, scratch),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr(path), HasSubstr("offset 4"),
                             HasSubstr("10 bytes"), HasSubstr("only 6"))));
  EXPECT_THAT(r->Read(20, 1, scratch),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("only 0")));
  std::string dest(11, '\0');
  EXPECT_THAT(r->ReadInto(0, absl::MakeSpan(dest)),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr(path)));
}

TEST_P(FileSystemConformanceTest, NewWritableFileTruncatesAnExistingFile) {
  const std::string path = Path("t");
  DCP_ASSERT_OK(WriteStringToFile(*fs_, path, "a long first version", true));
  DCP_ASSERT_OK(WriteStringToFile(*fs_, path, "v2", true));
  EXPECT_THAT(ReadFileToString(*fs_, path), IsOkAndHolds(std::string("v2")));
}

TEST_P(FileSystemConformanceTest, ClosedFileRefusesEveryCall) {
  const std::string path = Path("closed");
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<WritableFile> w,
                           fs_->NewWritableFile(path));
  DCP_ASSERT_OK(w->Append("x"));
  DCP_ASSERT_OK(w->Close());
  EXPECT_THAT(w->Append("y"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(path)));
  EXPECT_THAT(w->WriteAt(0, "z"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(path)));
  EXPECT_THAT(w->Sync(), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(w->Close(), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(ReadFileToString(*fs_, path), IsOkAndHolds(std::string("x")));
}

TEST_P(FileSystemConformanceTest, WriteAtOverwritesAppendedBytesInPlace) {
  const std::string path = Path("patched");
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<WritableFile> w,
                           fs_->NewWritableFile(path));
  DCP_ASSERT_OK(w->Append("hello world"));
  DCP_ASSERT_OK(w->WriteAt(0, "J"));
  DCP_ASSERT_OK(w->WriteAt(6, "W"));
  DCP_ASSERT_OK(w->WriteAt(11, ""));  // Empty, at the end: nothing to do.
  EXPECT_EQ(w->size(), 11u);
  DCP_ASSERT_OK(w->Append("!"));  // Appends still go to the end.
  DCP_ASSERT_OK(w->WriteAt(10, "D?"));
  EXPECT_EQ(w->size(), 12u);
  DCP_ASSERT_OK(w->Sync());
  DCP_ASSERT_OK(w->Close());
  EXPECT_THAT(ReadFileToString(*fs_, path),
              IsOkAndHolds(std::string("Jello WorlD?")));
}

TEST_P(FileSystemConformanceTest, WriteAtOfLargeRangesAcrossAppends) {
  const std::string path = Path("big");
  std::string expected = Pattern(3 << 20, 1);
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<WritableFile> w,
                           fs_->NewWritableFile(path));
  DCP_ASSERT_OK(w->Append(absl::string_view(expected).substr(0, 1 << 20)));
  DCP_ASSERT_OK(w->Append(absl::string_view(expected).substr(1 << 20)));
  const std::string patch = Pattern((1 << 20) + 17, 2);
  DCP_ASSERT_OK(w->WriteAt((1 << 20) - 5, patch));
  expected.replace((1 << 20) - 5, patch.size(), patch);
  EXPECT_EQ(w->size(), uint64_t{3} << 20);
  DCP_ASSERT_OK(w->Close());
  DCP_ASSERT_OK_AND_ASSIGN(std::string got, ReadFileToString(*fs_, path));
  EXPECT_TRUE(got == expected) << "the file differs after the overwrite";
}

TEST_P(FileSystemConformanceTest, WriteAtBeyondTheAppendedBytesIsOutOfRange) {
  const std::string path = Path("short_patch");
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<WritableFile> w,
                           fs_->NewWritableFile(path));
  DCP_ASSERT_OK(w->Append("abc"));
  EXPECT_THAT(w->WriteAt(2, "xy"),
              StatusIs(absl::StatusCode::kOutOfRange,
                       AllOf(HasSubstr(path), HasSubstr("2 bytes at offset 2"),
                             HasSubstr("only 3 bytes"))));
  EXPECT_THAT(w->WriteAt(4, ""), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(w->WriteAt(UINT64_MAX, "x"),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(w->WriteAt(1, absl::string_view("x", 1)), IsOk());
  EXPECT_EQ(w->size(), 3u);
  DCP_ASSERT_OK(w->Close());
  EXPECT_THAT(ReadFileToString(*fs_, path), IsOkAndHolds(std::string("axc")));
}

TEST_P(FileSystemConformanceTest, DestructorClosesWithoutLosingData) {
  const std::string path = Path("unclosed");
  {
    DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<WritableFile> w,
                             fs_->NewWritableFile(path));
    DCP_ASSERT_OK(w->Append("kept"));
  }
  EXPECT_THAT(ReadFileToString(*fs_, path), IsOkAndHolds(std::string("kept")));
}

TEST_P(FileSystemConformanceTest, MissingPathsAreNotFoundAndNamed) {
  const std::string missing = Path("missing");
  const std::string in_missing_dir = Path("no_dir/f");
  EXPECT_THAT(fs_->NewWritableFile(in_missing_dir),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(in_missing_dir)));
  EXPECT_THAT(fs_->NewRandomAccessFile(missing),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(missing)));
  EXPECT_THAT(fs_->FileSize(missing),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(missing)));
  EXPECT_THAT(fs_->FileExists(missing),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(missing)));
  EXPECT_THAT(fs_->Exists(missing), IsOkAndHolds(false));
  EXPECT_THAT(fs_->IsDirectory(missing),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(missing)));
  EXPECT_THAT(fs_->GetChildren(missing),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(missing)));
  EXPECT_THAT(fs_->RemoveFile(missing),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(missing)));
  EXPECT_THAT(fs_->RemoveDir(missing),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(missing)));
  EXPECT_THAT(fs_->SyncDir(missing),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(missing)));
  EXPECT_THAT(fs_->Rename(missing, Path("x")),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(missing)));
  DCP_ASSERT_OK(WriteStringToFile(*fs_, Path("src"), "s", false));
  EXPECT_THAT(fs_->Rename(Path("src"), in_missing_dir),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(in_missing_dir)));
}

TEST_P(FileSystemConformanceTest, WrongTypesAreFailedPrecondition) {
  const std::string dir = Path("d");
  const std::string file = Path("f");
  DCP_ASSERT_OK(fs_->CreateDir(dir));
  DCP_ASSERT_OK(WriteStringToFile(*fs_, file, "data", false));
  EXPECT_THAT(fs_->NewWritableFile(dir),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(dir)));
  EXPECT_THAT(fs_->NewRandomAccessFile(dir),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(dir)));
  EXPECT_THAT(fs_->FileSize(dir),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(dir)));
  EXPECT_THAT(fs_->RemoveFile(dir),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(dir)));
  EXPECT_THAT(fs_->GetChildren(file),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(file)));
  EXPECT_THAT(fs_->RemoveDir(file),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(file)));
  EXPECT_THAT(fs_->SyncDir(file),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(file)));
  EXPECT_THAT(fs_->NewWritableFile(JoinPath(file, "x")),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(file)));
  EXPECT_THAT(fs_->CreateDir(file),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr(file)));
  EXPECT_THAT(fs_->CreateDir(JoinPath(file, "sub")),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(file)));
}

TEST_P(FileSystemConformanceTest, ExclusiveCreateMakesOnlyNewFiles) {
  WritableFileOptions exclusive;
  exclusive.exclusive = true;
  const std::string path = Path("new");
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<WritableFile> file,
                           fs_->NewWritableFile(path, exclusive));
  DCP_ASSERT_OK(file->Append("fresh"));
  DCP_ASSERT_OK(file->Close());
  EXPECT_THAT(ReadFileToString(*fs_, path), IsOkAndHolds(std::string("fresh")));
  // A second exclusive create of the same name is refused and truncates
  // nothing.
  EXPECT_THAT(fs_->NewWritableFile(path, exclusive),
              StatusIs(absl::StatusCode::kAlreadyExists,
                       AllOf(HasSubstr(path), HasSubstr("already exists"))));
  EXPECT_THAT(ReadFileToString(*fs_, path), IsOkAndHolds(std::string("fresh")));
  EXPECT_THAT(WriteStringToFile(*fs_, path, "x", false, exclusive),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr(path)));
  EXPECT_THAT(ReadFileToString(*fs_, path), IsOkAndHolds(std::string("fresh")));
  // Nor does it take a directory's name.
  const std::string dir = Path("d");
  DCP_ASSERT_OK(fs_->CreateDir(dir));
  EXPECT_THAT(fs_->NewWritableFile(dir, exclusive),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr(dir)));
  EXPECT_THAT(fs_->IsDirectory(dir), IsOkAndHolds(true));
  // The parent must exist, as for any create.
  const std::string in_missing_dir = Path("missing/f");
  EXPECT_THAT(fs_->NewWritableFile(in_missing_dir, exclusive),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(in_missing_dir)));
}

TEST_P(FileSystemConformanceTest, RefusingSymlinksStillOpensRegularFiles) {
  RandomAccessFileOptions no_follow;
  no_follow.follow_symlinks = false;
  const std::string path = Path("f");
  DCP_ASSERT_OK(WriteStringToFile(*fs_, path, "data", false));
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RandomAccessFile> file,
                           fs_->NewRandomAccessFile(path, no_follow));
  EXPECT_EQ(file->size(), 4u);
  EXPECT_THAT(fs_->NewRandomAccessFile(Path("missing"), no_follow),
              StatusIs(absl::StatusCode::kNotFound));
  DCP_ASSERT_OK(fs_->CreateDir(Path("d")));
  EXPECT_THAT(fs_->NewRandomAccessFile(Path("d"), no_follow),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr(Path("d")), HasSubstr("directory"))));
}

TEST_P(FileSystemConformanceTest, ExistsAndIsDirectory) {
  DCP_ASSERT_OK(fs_->CreateDir(Path("d")));
  DCP_ASSERT_OK(WriteStringToFile(*fs_, Path("f"), "", false));
  DCP_EXPECT_OK(fs_->FileExists(Path("d")));
  DCP_EXPECT_OK(fs_->FileExists(Path("f")));
  EXPECT_THAT(fs_->Exists(Path("f")), IsOkAndHolds(true));
  EXPECT_THAT(fs_->IsDirectory(Path("d")), IsOkAndHolds(true));
  EXPECT_THAT(fs_->IsDirectory(Path("f")), IsOkAndHolds(false));
  EXPECT_THAT(fs_->FileSize(Path("f")), IsOkAndHolds(0u));
}

TEST_P(FileSystemConformanceTest, GetChildrenIsSortedAndExcludesDots) {
  EXPECT_THAT(fs_->GetChildren(root_), IsOkAndHolds(IsEmpty()));
  DCP_ASSERT_OK(WriteStringToFile(*fs_, Path("b"), "", false));
  DCP_ASSERT_OK(WriteStringToFile(*fs_, Path(".metadata"), "", false));
  DCP_ASSERT_OK(fs_->CreateDir(Path("a/deeper")));
  DCP_ASSERT_OK(WriteStringToFile(*fs_, Path("a/deeper/x"), "", false));
  DCP_ASSERT_OK(WriteStringToFile(*fs_, Path("__0_0.distcp"), "", false));
  EXPECT_THAT(fs_->GetChildren(root_),
              IsOkAndHolds(ElementsAre(".metadata", "__0_0.distcp", "a", "b")));
  EXPECT_THAT(fs_->GetChildren(Path("a")), IsOkAndHolds(ElementsAre("deeper")));
}

TEST_P(FileSystemConformanceTest, CreateDirIsRecursiveAndIdempotent) {
  const std::string deep = Path("x/y/z");
  DCP_ASSERT_OK(fs_->CreateDir(deep));
  EXPECT_THAT(fs_->IsDirectory(Path("x")), IsOkAndHolds(true));
  EXPECT_THAT(fs_->IsDirectory(Path("x/y")), IsOkAndHolds(true));
  EXPECT_THAT(fs_->IsDirectory(deep), IsOkAndHolds(true));
  DCP_EXPECT_OK(fs_->CreateDir(deep));
  DCP_EXPECT_OK(fs_->CreateDir(Path("x/y/z/")));
  DCP_EXPECT_OK(fs_->CreateDir(root_));
}

TEST_P(FileSystemConformanceTest, RemoveFileAndDir) {
  DCP_ASSERT_OK(fs_->CreateDir(Path("d")));
  DCP_ASSERT_OK(WriteStringToFile(*fs_, Path("d/f"), "x", false));
  EXPECT_THAT(fs_->RemoveDir(Path("d")),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr(Path("d")), HasSubstr("not empty"))));
  DCP_ASSERT_OK(fs_->RemoveFile(Path("d/f")));
  EXPECT_THAT(fs_->Exists(Path("d/f")), IsOkAndHolds(false));
  DCP_ASSERT_OK(fs_->RemoveDir(Path("d")));
  EXPECT_THAT(fs_->Exists(Path("d")), IsOkAndHolds(false));
}

TEST_P(FileSystemConformanceTest, RenameMovesAndReplacesFiles) {
  DCP_ASSERT_OK(WriteStringToFile(*fs_, Path(".metadata.tmp"), "new", true));
  DCP_ASSERT_OK(WriteStringToFile(*fs_, Path(".metadata"), "old", true));
  DCP_ASSERT_OK(fs_->Rename(Path(".metadata.tmp"), Path(".metadata")));
  DCP_ASSERT_OK(fs_->SyncDir(root_));
  EXPECT_THAT(ReadFileToString(*fs_, Path(".metadata")),
              IsOkAndHolds(std::string("new")));
  EXPECT_THAT(fs_->Exists(Path(".metadata.tmp")), IsOkAndHolds(false));
  // Renaming a file onto itself changes nothing.
  DCP_ASSERT_OK(fs_->Rename(Path(".metadata"), Path(".metadata")));
  EXPECT_THAT(ReadFileToString(*fs_, Path(".metadata")),
              IsOkAndHolds(std::string("new")));
  // Into another directory.
  DCP_ASSERT_OK(fs_->CreateDir(Path("sub")));
  DCP_ASSERT_OK(fs_->Rename(Path(".metadata"), Path("sub/m")));
  EXPECT_THAT(ReadFileToString(*fs_, Path("sub/m")),
              IsOkAndHolds(std::string("new")));
  EXPECT_THAT(fs_->Rename(Path("sub/m"), Path("sub")),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_P(FileSystemConformanceTest, RenameDirectories) {
  DCP_ASSERT_OK(fs_->CreateDir(Path("stage/inner")));
  DCP_ASSERT_OK(WriteStringToFile(*fs_, Path("stage/inner/f"), "f", false));
  DCP_ASSERT_OK(WriteStringToFile(*fs_, Path("stage/g"), "g", false));
  DCP_ASSERT_OK(fs_->CreateDir(Path("empty")));
  DCP_ASSERT_OK(fs_->CreateDir(Path("full")));
  DCP_ASSERT_OK(WriteStringToFile(*fs_, Path("full/x"), "x", false));
  DCP_ASSERT_OK(WriteStringToFile(*fs_, Path("file"), "", false));

  EXPECT_THAT(fs_->Rename(Path("stage"), Path("stage/inner/deeper")),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(fs_->Rename(Path("stage"), Path("full")),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(fs_->Rename(Path("stage"), Path("file")),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  // A directory may replace an empty directory.
  DCP_ASSERT_OK(fs_->Rename(Path("stage"), Path("empty")));
  EXPECT_THAT(fs_->Exists(Path("stage")), IsOkAndHolds(false));
  EXPECT_THAT(ReadFileToString(*fs_, Path("empty/inner/f")),
              IsOkAndHolds(std::string("f")));
  EXPECT_THAT(ReadFileToString(*fs_, Path("empty/g")),
              IsOkAndHolds(std::string("g")));
  EXPECT_THAT(fs_->GetChildren(Path("empty")),
              IsOkAndHolds(ElementsAre("g", "inner")));
}

TEST_P(FileSystemConformanceTest, OpenFilesFollowRenames) {
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<WritableFile> w,
                           fs_->NewWritableFile(Path("a")));
  DCP_ASSERT_OK(w->Append("12"));
  DCP_ASSERT_OK(fs_->Rename(Path("a"), Path("b")));
  DCP_ASSERT_OK(w->Append("34"));
  DCP_ASSERT_OK(w->Close());
  EXPECT_THAT(ReadFileToString(*fs_, Path("b")),
              IsOkAndHolds(std::string("1234")));
  EXPECT_THAT(fs_->Exists(Path("a")), IsOkAndHolds(false));

  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RandomAccessFile> r,
                           fs_->NewRandomAccessFile(Path("b")));
  DCP_ASSERT_OK(fs_->Rename(Path("b"), Path("c")));
  char scratch[4];
  EXPECT_THAT(r->Read(0, 4, scratch), IsOkAndHolds(absl::string_view("1234")));
}

TEST_P(FileSystemConformanceTest, SyncDirOnADirectorySucceeds) {
  DCP_ASSERT_OK(fs_->CreateDir(Path("d")));
  DCP_EXPECT_OK(fs_->SyncDir(Path("d")));
  DCP_EXPECT_OK(fs_->SyncDir(root_));
}

TEST_P(FileSystemConformanceTest, ConcurrentReadsOfOneFile) {
  constexpr int kThreads = 8;
  constexpr size_t kChunk = 64 * 1024;
  const std::string data = Pattern(kThreads * kChunk);
  DCP_ASSERT_OK(WriteStringToFile(*fs_, Path("shared"), data, true));
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RandomAccessFile> r,
                           fs_->NewRandomAccessFile(Path("shared")));
  std::vector<std::string> got(kThreads, std::string(kChunk, '\0'));
  std::vector<absl::Status> statuses(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Each thread reads its chunk back to front, in 4 KiB pieces.
      for (size_t off = kChunk; off > 0 && statuses[t].ok();) {
        off -= 4096;
        statuses[t] =
            r->ReadInto(t * kChunk + off, absl::MakeSpan(&got[t][off], 4096));
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) {
    DCP_EXPECT_OK(statuses[t]) << "thread " << t;
    EXPECT_TRUE(got[t] == data.substr(t * kChunk, kChunk)) << "thread " << t;
  }
}

TEST_P(FileSystemConformanceTest, ConcurrentWritersAndCreateDirs) {
  constexpr int kThreads = 6;
  std::vector<absl::Status> statuses(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Every thread creates the same nested directory (mkdir -p races),
      // then writes its own file in it.
      absl::Status status = fs_->CreateDir(Path("ckpt/deep"));
      if (status.ok()) {
        status = WriteStringToFile(
            *fs_, Path(absl::StrCat("ckpt/deep/__", t, "_0.distcp")),
            Pattern(10000 + t, t), /*sync=*/true);
      }
      statuses[t] = status;
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) {
    DCP_ASSERT_OK(statuses[t]) << "thread " << t;
    EXPECT_THAT(ReadFileToString(
                    *fs_, Path(absl::StrCat("ckpt/deep/__", t, "_0.distcp"))),
                IsOkAndHolds(Pattern(10000 + t, t)));
  }
  DCP_ASSERT_OK_AND_ASSIGN(std::vector<std::string> names,
                           fs_->GetChildren(Path("ckpt/deep")));
  EXPECT_EQ(names.size(), static_cast<size_t>(kThreads));
}

// ---- Locks ------------------------------------------------------------------

TEST_P(FileSystemConformanceTest, LockCreatesTheFileAndRecordsTheHolder) {
  const std::string path = Path(".lock");
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<FileLock> lock,
                           fs_->TryLockFile(path, "holder A"));
  EXPECT_EQ(lock->path(), path);
  DCP_EXPECT_OK(lock->CheckHeld());
  EXPECT_THAT(ReadFileToString(*fs_, path),
              IsOkAndHolds(std::string("holder A\n")));
}

TEST_P(FileSystemConformanceTest, SecondLockIsRefusedNamingTheHolder) {
  const std::string path = Path(".lock");
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<FileLock> first,
                           fs_->TryLockFile(path, "pid 1 on host a"));
  // Refused through the same file system object, in the same process.
  absl::StatusOr<std::unique_ptr<FileLock>> second =
      fs_->TryLockFile(path, "pid 2 on host b");
  EXPECT_THAT(second.status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr(path), HasSubstr("pid 1 on host a"))));
  EXPECT_EQ(LockHolderInfo(second.status()),
            std::optional<std::string>("pid 1 on host a"));
  // The refused attempt left the holder's record alone.
  EXPECT_THAT(ReadFileToString(*fs_, path),
              IsOkAndHolds(std::string("pid 1 on host a\n")));
  DCP_EXPECT_OK(first->CheckHeld());
}

TEST_P(FileSystemConformanceTest, ReleasedLockCanBeTakenAgainAndFileStays) {
  const std::string path = Path(".lock");
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<FileLock> first,
                           fs_->TryLockFile(path, "first"));
  first.reset();
  EXPECT_THAT(fs_->Exists(path), IsOkAndHolds(true));
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<FileLock> second,
                           fs_->TryLockFile(path, "second"));
  EXPECT_THAT(ReadFileToString(*fs_, path),
              IsOkAndHolds(std::string("second\n")));
  second.reset();
  EXPECT_THAT(fs_->GetChildren(root_), IsOkAndHolds(ElementsAre(".lock")));
}

TEST_P(FileSystemConformanceTest, LocksOnDifferentFilesAreIndependent) {
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<FileLock> a,
                           fs_->TryLockFile(Path("a.lock"), "a"));
  DCP_ASSERT_OK(fs_->CreateDir(Path("sub")));
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<FileLock> b,
                           fs_->TryLockFile(Path("sub/a.lock"), "b"));
  DCP_EXPECT_OK(a->CheckHeld());
  DCP_EXPECT_OK(b->CheckHeld());
}

TEST_P(FileSystemConformanceTest, LockOfAnExistingFileReplacesItsContent) {
  const std::string path = Path(".lock");
  DCP_ASSERT_OK(WriteStringToFile(*fs_, path, "stale holder from a crash\n",
                                  /*sync=*/false));
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<FileLock> lock,
                           fs_->TryLockFile(path, "new"));
  EXPECT_THAT(ReadFileToString(*fs_, path), IsOkAndHolds(std::string("new\n")));
}

TEST_P(FileSystemConformanceTest, LockErrors) {
  DCP_ASSERT_OK(fs_->CreateDir(Path("d")));
  EXPECT_THAT(
      fs_->TryLockFile(Path("d"), "x").status(),
      StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(Path("d"))));
  EXPECT_THAT(
      fs_->TryLockFile(Path("missing/.lock"), "x").status(),
      StatusIs(absl::StatusCode::kNotFound, HasSubstr(Path("missing/.lock"))));
  // Other errors are not lock conflicts.
  EXPECT_EQ(LockHolderInfo(fs_->TryLockFile(Path("d"), "x").status()),
            std::nullopt);
}

TEST_P(FileSystemConformanceTest, RemovedLockFileIsNoLongerHeld) {
  const std::string path = Path(".lock");
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<FileLock> first,
                           fs_->TryLockFile(path, "first"));
  DCP_ASSERT_OK(fs_->RemoveFile(path));
  EXPECT_THAT(first->CheckHeld(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr(path), HasSubstr("no longer held"))));
  // Which is why lock files must not be removed: a new file at the path
  // can be locked while the first lock object still lives.
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<FileLock> second,
                           fs_->TryLockFile(path, "second"));
  DCP_EXPECT_OK(second->CheckHeld());
  // Replacing the file by a rename is the same.
  DCP_ASSERT_OK(WriteStringToFile(*fs_, Path("other"), "", false));
  DCP_ASSERT_OK(fs_->Rename(Path("other"), path));
  EXPECT_THAT(second->CheckHeld(),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_P(FileSystemConformanceTest, RenamedLockFileStaysLockedUnderItsNewName) {
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<FileLock> lock,
                           fs_->TryLockFile(Path("a.lock"), "holder"));
  DCP_ASSERT_OK(fs_->Rename(Path("a.lock"), Path("b.lock")));
  EXPECT_THAT(lock->CheckHeld(),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(
      fs_->TryLockFile(Path("b.lock"), "other").status(),
      StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("holder")));
}

TEST_P(FileSystemConformanceTest, ConcurrentLockAttemptsHaveOneWinner) {
  constexpr int kThreads = 8;
  const std::string path = Path(".lock");
  std::vector<absl::StatusOr<std::unique_ptr<FileLock>>> results;
  for (int t = 0; t < kThreads; ++t) {
    results.emplace_back(absl::UnknownError("did not run"));
  }
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      results[t] = fs_->TryLockFile(path, absl::StrCat("thread ", t));
    });
  }
  for (std::thread& thread : threads) thread.join();
  int winner = -1;
  for (int t = 0; t < kThreads; ++t) {
    if (results[t].ok()) {
      EXPECT_EQ(winner, -1)
          << "threads " << winner << " and " << t << " both hold the lock";
      winner = t;
    } else {
      EXPECT_THAT(results[t].status(),
                  StatusIs(absl::StatusCode::kFailedPrecondition,
                           HasSubstr("is held by")))
          << "thread " << t;
    }
  }
  ASSERT_NE(winner, -1);
  EXPECT_THAT(ReadFileToString(*fs_, path),
              IsOkAndHolds(absl::StrCat("thread ", winner, "\n")));
}

}  // namespace
}  // namespace dcp::test
