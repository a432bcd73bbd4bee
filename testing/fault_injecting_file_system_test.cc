#include "testing/fault_injecting_file_system.h"

#include <stdlib.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/file_system.h"
#include "storage/posix_file_system.h"
#include "testing/file_system_conformance.h"
#include "testing/mem_file_system.h"
#include "testing/status_matchers.h"

namespace dcp::test {
namespace {

using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::string NewPosixTempDir() {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string templ =
      absl::StrCat(base != nullptr ? base : "/tmp", "/fault_fs_XXXXXX");
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  const char* made = ::mkdtemp(buf.data());
  EXPECT_NE(made, nullptr);
  return made != nullptr ? std::string(made) : templ;
}

// The wrapper must be transparent when no fault is configured.
INSTANTIATE_TEST_SUITE_P(
    Fault, FileSystemConformanceTest,
    ::testing::Values(
        FileSystemConformanceParams{
            "OverMem",
            [] {
              auto fs = std::make_shared<FaultInjectingFileSystem>(
                  std::make_shared<MemFileSystem>());
              DCP_EXPECT_OK(fs->CreateDir("/root"));
              return FileSystemUnderTest{fs, "/root"};
            }},
        FileSystemConformanceParams{
            "OverPosix",
            [] {
              return FileSystemUnderTest{
                  std::make_shared<FaultInjectingFileSystem>(
                      NewPosixFileSystem()),
                  NewPosixTempDir()};
            }}),
    [](const auto& info) { return info.param.name; });

class FaultInjectingFileSystemTest : public ::testing::Test {
 protected:
  // `path` as the wrapped file system has it, or "<missing>".
  std::string BaseContent(const std::string& path) {
    absl::StatusOr<std::string> content = ReadFileToString(*mem_, path);
    if (absl::IsNotFound(content.status())) return "<missing>";
    DCP_EXPECT_OK(content.status());
    return content.ok() ? *content : "<error>";
  }

  // Makes "/c" a durable, empty directory.
  void MakeDurableDir(const std::string& dir = "/c") {
    DCP_ASSERT_OK(fs_->CreateDir(dir));
    DCP_ASSERT_OK(fs_->SyncDir(Dirname(dir)));
  }

  void CrashAndRestart() {
    fs_->SimulateCrash();
    DCP_ASSERT_OK(fs_->Restart());
  }

  std::shared_ptr<MemFileSystem> mem_ = std::make_shared<MemFileSystem>();
  std::shared_ptr<FaultInjectingFileSystem> fs_ =
      std::make_shared<FaultInjectingFileSystem>(mem_);
};

// -----------------------------------------------------------------------------
// Operation log
// -----------------------------------------------------------------------------

TEST_F(FaultInjectingFileSystemTest, LogsEveryOperationInOrder) {
  DCP_ASSERT_OK(fs_->CreateDir("/c"));
  DCP_ASSERT_OK(WriteStringToFile(*fs_, "/c/__0_0.distcp",
                                  std::string(1180, 'x'),
                                  /*sync=*/true));
  DCP_ASSERT_OK(
      WriteStringToFile(*fs_, "/c/.metadata.tmp", "md", /*sync=*/true));
  DCP_ASSERT_OK(fs_->Rename("/c/.metadata.tmp", "/c/.metadata"));
  DCP_ASSERT_OK(fs_->SyncDir("/c"));
  EXPECT_THAT(fs_->Exists("/c/.metadata"), IsOkAndHolds(true));
  EXPECT_THAT(fs_->IsDirectory("/c"), IsOkAndHolds(true));
  EXPECT_THAT(fs_->FileSize("/c/.metadata"), IsOkAndHolds(2u));
  EXPECT_THAT(fs_->GetChildren("/c"),
              IsOkAndHolds(ElementsAre(".metadata", "__0_0.distcp")));
  EXPECT_THAT(ReadFileToString(*fs_, "/c/.metadata"),
              IsOkAndHolds(std::string("md")));
  DCP_ASSERT_OK(fs_->RemoveFile("/c/.metadata"));
  DCP_ASSERT_OK(fs_->CreateDir("/c/d"));
  DCP_ASSERT_OK(fs_->RemoveDir("/c/d"));

  EXPECT_THAT(
      fs_->op_log(),
      ElementsAre("createdir /c", "create /c/__0_0.distcp",
                  "append /c/__0_0.distcp 1180", "sync /c/__0_0.distcp",
                  "close /c/__0_0.distcp", "create /c/.metadata.tmp",
                  "append /c/.metadata.tmp 2", "sync /c/.metadata.tmp",
                  "close /c/.metadata.tmp",
                  "rename /c/.metadata.tmp /c/.metadata", "syncdir /c",
                  "exists /c/.metadata", "isdir /c", "size /c/.metadata",
                  "list /c", "open /c/.metadata", "read /c/.metadata 0 2",
                  "remove /c/.metadata", "createdir /c/d", "removedir /c/d"));
  EXPECT_THAT(
      fs_->mutation_log(),
      ElementsAre("createdir /c", "create /c/__0_0.distcp",
                  "append /c/__0_0.distcp 1180", "sync /c/__0_0.distcp",
                  "close /c/__0_0.distcp", "create /c/.metadata.tmp",
                  "append /c/.metadata.tmp 2", "sync /c/.metadata.tmp",
                  "close /c/.metadata.tmp",
                  "rename /c/.metadata.tmp /c/.metadata", "syncdir /c",
                  "remove /c/.metadata", "createdir /c/d", "removedir /c/d"));
  EXPECT_EQ(fs_->op_count(), 14);
  fs_->ClearOpLog();
  EXPECT_THAT(fs_->op_log(), IsEmpty());
  EXPECT_EQ(fs_->op_count(), 14);  // The count is not reset.
}

TEST_F(FaultInjectingFileSystemTest, FileOpNamesAndMutatingSet) {
  EXPECT_EQ(FileOpName(FileOp::kSyncDir), "syncdir");
  EXPECT_EQ(FileOpName(FileOp::kRemoveDir), "removedir");
  EXPECT_EQ(::testing::PrintToString(FileOp::kCreate), "create");
  EXPECT_TRUE(IsMutating(FileOp::kClose));
  EXPECT_TRUE(IsMutating(FileOp::kCreateDir));
  EXPECT_FALSE(IsMutating(FileOp::kRead));
  EXPECT_FALSE(IsMutating(FileOp::kOpen));
  EXPECT_FALSE(IsMutating(FileOp::kList));
  EXPECT_EQ(FileOpName(FileOp::kLock), "lock");
  EXPECT_EQ(FileOpName(FileOp::kUnlock), "unlock");
  EXPECT_TRUE(IsMutating(FileOp::kLock));
  EXPECT_FALSE(IsMutating(FileOp::kUnlock));
  EXPECT_EQ(FileOpName(FileOp::kWriteAt), "writeat");
  EXPECT_TRUE(IsMutating(FileOp::kWriteAt));
}

TEST_F(FaultInjectingFileSystemTest, WriteAtIsLoggedAndCanBeFailed) {
  DCP_ASSERT_OK(fs_->CreateDir("/c"));
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<WritableFile> w,
                           fs_->NewWritableFile("/c/f"));
  DCP_ASSERT_OK(w->Append("abcdef"));
  DCP_ASSERT_OK(w->WriteAt(1, "BC"));
  fs_->AddRule({FileOp::kWriteAt, "/c/f"});
  EXPECT_THAT(w->WriteAt(4, "EF"),
              StatusIs(absl::StatusCode::kUnavailable,
                       AllOf(HasSubstr("writeat /c/f"),
                             HasSubstr("injected fault"))));
  EXPECT_THAT(w->WriteAt(5, "xy"), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_EQ(BaseContent("/c/f"), "aBCdef");  // The failed calls did nothing.
  EXPECT_THAT(fs_->mutation_log(),
              ElementsAre("createdir /c", "create /c/f", "append /c/f 6",
                          "writeat /c/f 1 2", "writeat /c/f 4 2",
                          "writeat /c/f 5 2"));
}

// -----------------------------------------------------------------------------
// Fault rules
// -----------------------------------------------------------------------------

TEST_F(FaultInjectingFileSystemTest, RuleFailsOnlyTheNthMatchingCall) {
  MakeDurableDir();
  fs_->AddRule({FileOp::kSync, ".distcp", /*nth=*/2});
  std::vector<absl::Status> syncs;
  for (const char* name :
       {"a.distcp", ".metadata.tmp", "b.distcp", "c.distcp"}) {
    DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<WritableFile> w,
                             fs_->NewWritableFile(JoinPath("/c", name)));
    syncs.push_back(w->Sync());
  }
  DCP_EXPECT_OK(syncs[0]);
  DCP_EXPECT_OK(syncs[1]);  // Does not match the path filter.
  EXPECT_THAT(syncs[2], StatusIs(absl::StatusCode::kUnavailable,
                                 "sync /c/b.distcp: injected fault"));
  DCP_EXPECT_OK(syncs[3]);  // times = 1.
}

TEST_F(FaultInjectingFileSystemTest, RuleTimesAndForever) {
  MakeDurableDir();
  fs_->AddRule({FileOp::kCreate, "/c/x", /*nth=*/2, /*times=*/2,
                absl::ResourceExhaustedError("disk full")});
  fs_->AddRule({FileOp::kCreate, "/c/y", /*nth=*/3, /*times=*/-1});
  std::vector<absl::StatusCode> x, y;
  for (int i = 0; i < 5; ++i) {
    x.push_back(fs_->NewWritableFile("/c/x").status().code());
    y.push_back(fs_->NewWritableFile("/c/y").status().code());
  }
  using C = absl::StatusCode;
  EXPECT_THAT(x, ElementsAre(C::kOk, C::kResourceExhausted,
                             C::kResourceExhausted, C::kOk, C::kOk));
  EXPECT_THAT(y, ElementsAre(C::kOk, C::kOk, C::kUnavailable, C::kUnavailable,
                             C::kUnavailable));
  fs_->ClearRules();
  DCP_EXPECT_OK(fs_->NewWritableFile("/c/y").status());
}

TEST_F(FaultInjectingFileSystemTest, InjectedFaultsDoNotReachTheBase) {
  MakeDurableDir();
  DCP_ASSERT_OK(WriteStringToFile(*fs_, "/c/f", "abc", true));
  fs_->AddRule({FileOp::kCreate, "/c/new"});
  fs_->AddRule({FileOp::kAppend, "/c/g"});
  fs_->AddRule({FileOp::kRename, "/c/f"});
  fs_->AddRule({FileOp::kRemove, ""});
  fs_->AddRule({FileOp::kCreateDir, ""});

  EXPECT_THAT(fs_->NewWritableFile("/c/new"),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("/c/new")));
  EXPECT_EQ(BaseContent("/c/new"), "<missing>");
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<WritableFile> g,
                           fs_->NewWritableFile("/c/g"));
  EXPECT_THAT(g->Append("lost"), StatusIs(absl::StatusCode::kUnavailable));
  DCP_EXPECT_OK(g->Append("kept"));
  EXPECT_EQ(BaseContent("/c/g"), "kept");
  EXPECT_THAT(fs_->Rename("/c/f", "/c/h"),
              StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(BaseContent("/c/f"), "abc");
  EXPECT_THAT(fs_->RemoveFile("/c/f"),
              StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(BaseContent("/c/f"), "abc");
  EXPECT_THAT(fs_->CreateDir("/c/d"), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(mem_->Exists("/c/d"), IsOkAndHolds(false));
}

TEST_F(FaultInjectingFileSystemTest, RenameRulesMatchEitherPath) {
  MakeDurableDir();
  DCP_ASSERT_OK(WriteStringToFile(*fs_, "/c/a.tmp", "1", true));
  DCP_ASSERT_OK(WriteStringToFile(*fs_, "/c/b.tmp", "2", true));
  fs_->AddRule({FileOp::kRename, ".metadata", 1, -1});
  EXPECT_THAT(fs_->Rename("/c/a.tmp", "/c/.metadata"),
              StatusIs(absl::StatusCode::kUnavailable,
                       HasSubstr("rename /c/a.tmp /c/.metadata")));
  DCP_EXPECT_OK(fs_->Rename("/c/a.tmp", "/c/a"));
  EXPECT_THAT(fs_->Rename("/c/b.tmp", "/c/.metadata.old"),
              StatusIs(absl::StatusCode::kUnavailable));
}

TEST_F(FaultInjectingFileSystemTest, RulesApplyToReads) {
  DCP_ASSERT_OK(WriteStringToFile(*fs_, "/data", "0123456789", false));
  fs_->AddRule(
      {FileOp::kRead, "/data", 2, 1, absl::DataLossError("bad sector")});
  fs_->AddRule({FileOp::kOpen, "/other"});
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RandomAccessFile> r,
                           fs_->NewRandomAccessFile("/data"));
  char scratch[4];
  DCP_EXPECT_OK(r->Read(0, 4, scratch).status());
  EXPECT_THAT(r->Read(4, 4, scratch), StatusIs(absl::StatusCode::kDataLoss,
                                               "read /data 4 4: bad sector"));
  EXPECT_THAT(r->Read(4, 4, scratch), IsOkAndHolds(absl::string_view("4567")));
  EXPECT_THAT(fs_->NewRandomAccessFile("/other"),
              StatusIs(absl::StatusCode::kUnavailable));
}

// Runs the same 300 mutating operations and records which failed.
std::vector<bool> RandomFaultPattern(uint32_t seed) {
  auto fs = std::make_shared<FaultInjectingFileSystem>(
      std::make_shared<MemFileSystem>());
  fs->SetRandomFaults({seed, /*one_in=*/3});
  std::vector<bool> failed;
  for (int i = 0; i < 300; ++i) {
    failed.push_back(!fs->CreateDir(absl::StrCat("/d", i % 7)).ok());
  }
  // Reads are not eligible by default.
  DCP_EXPECT_OK(fs->FileExists("/"));
  return failed;
}

TEST_F(FaultInjectingFileSystemTest, RandomFaultsAreReproducibleFromTheSeed) {
  const std::vector<bool> first = RandomFaultPattern(42);
  EXPECT_EQ(RandomFaultPattern(42), first);
  EXPECT_NE(RandomFaultPattern(43), first);
  const int failures = std::count(first.begin(), first.end(), true);
  EXPECT_GT(failures, 50);  // About 100 expected.
  EXPECT_LT(failures, 150);
}

TEST_F(FaultInjectingFileSystemTest, RandomFaultsCanTargetChosenOps) {
  DCP_ASSERT_OK(WriteStringToFile(*fs_, "/f", "x", false));
  fs_->SetRandomFaults(
      {7, /*one_in=*/1, {FileOp::kRead}, absl::DataLossError("flaky")});
  DCP_EXPECT_OK(fs_->CreateDir("/d"));  // Not a chosen op.
  EXPECT_THAT(ReadFileToString(*fs_, "/f"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("flaky")));
  fs_->SetRandomFaults({});
  EXPECT_THAT(ReadFileToString(*fs_, "/f"), IsOkAndHolds(std::string("x")));
}

// -----------------------------------------------------------------------------
// Crash model
// -----------------------------------------------------------------------------

TEST_F(FaultInjectingFileSystemTest, UnsyncedAppendsAreLostSyncedKept) {
  MakeDurableDir();
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<WritableFile> w,
                           fs_->NewWritableFile("/c/f"));
  DCP_ASSERT_OK(fs_->SyncDir("/c"));
  DCP_ASSERT_OK(w->Append("abc"));
  DCP_ASSERT_OK(w->Sync());
  DCP_ASSERT_OK(w->Append("def"));
  EXPECT_EQ(BaseContent("/c/f"), "abcdef");
  CrashAndRestart();
  EXPECT_EQ(BaseContent("/c/f"), "abc");
}

TEST_F(FaultInjectingFileSystemTest, OverwriteOfUnsyncedBytesKeepsSyncedPrefix) {
  MakeDurableDir();
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<WritableFile> w,
                           fs_->NewWritableFile("/c/f"));
  DCP_ASSERT_OK(fs_->SyncDir("/c"));
  DCP_ASSERT_OK(w->Append("abc"));
  DCP_ASSERT_OK(w->Sync());
  DCP_ASSERT_OK(w->Append("def"));
  DCP_ASSERT_OK(w->WriteAt(4, "E"));
  EXPECT_EQ(BaseContent("/c/f"), "abcdEf");
  CrashAndRestart();
  EXPECT_EQ(BaseContent("/c/f"), "abc");
}

TEST_F(FaultInjectingFileSystemTest, OverwriteOfSyncedBytesIsDurableOnlyAfterSync) {
  MakeDurableDir();
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<WritableFile> w,
                           fs_->NewWritableFile("/c/f"));
  DCP_ASSERT_OK(fs_->SyncDir("/c"));
  DCP_ASSERT_OK(w->Append("abcdef"));
  DCP_ASSERT_OK(w->Sync());
  DCP_ASSERT_OK(w->WriteAt(2, "XY"));
  EXPECT_EQ(BaseContent("/c/f"), "abXYef");
  CrashAndRestart();
  // The model cuts the file at the unsynced overwrite (see the header).
  EXPECT_EQ(BaseContent("/c/f"), "ab");

  DCP_ASSERT_OK_AND_ASSIGN(w, fs_->NewWritableFile("/c/g"));
  DCP_ASSERT_OK(fs_->SyncDir("/c"));
  DCP_ASSERT_OK(w->Append("abcdef"));
  DCP_ASSERT_OK(w->Sync());
  DCP_ASSERT_OK(w->WriteAt(2, "XY"));
  DCP_ASSERT_OK(w->Sync());
  CrashAndRestart();
  EXPECT_EQ(BaseContent("/c/g"), "abXYef");
}

TEST_F(FaultInjectingFileSystemTest, FileNeverSyncedIsEmptyAfterCrash) {
  MakeDurableDir();
  DCP_ASSERT_OK(WriteStringToFile(*fs_, "/c/f", "data", /*sync=*/false));
  DCP_ASSERT_OK(fs_->SyncDir("/c"));
  CrashAndRestart();
  EXPECT_EQ(BaseContent("/c/f"), "");
}

TEST_F(FaultInjectingFileSystemTest, CreatedFileWithoutDirSyncVanishes) {
  MakeDurableDir();
  DCP_ASSERT_OK(WriteStringToFile(*fs_, "/c/f", "synced data", /*sync=*/true));
  CrashAndRestart();
  EXPECT_EQ(BaseContent("/c/f"), "<missing>");
  EXPECT_THAT(mem_->GetChildren("/c"), IsOkAndHolds(IsEmpty()));
}

TEST_F(FaultInjectingFileSystemTest, CreatedDirWithoutParentSyncVanishes) {
  DCP_ASSERT_OK(fs_->CreateDir("/c/a/b"));
  DCP_ASSERT_OK(WriteStringToFile(*fs_, "/c/a/b/f", "x", true));
  DCP_ASSERT_OK(fs_->SyncDir("/c/a/b"));
  DCP_ASSERT_OK(fs_->SyncDir("/c/a"));  // But "/" and "/c" are not synced.
  CrashAndRestart();
  EXPECT_THAT(mem_->Exists("/c"), IsOkAndHolds(false));

  DCP_ASSERT_OK(fs_->CreateDir("/c/a/b"));
  DCP_ASSERT_OK(WriteStringToFile(*fs_, "/c/a/b/f", "x", true));
  for (const char* dir : {"/c/a/b", "/c/a", "/c", "/"}) {
    DCP_ASSERT_OK(fs_->SyncDir(dir));
  }
  CrashAndRestart();
  EXPECT_EQ(BaseContent("/c/a/b/f"), "x");
}

TEST_F(FaultInjectingFileSystemTest, PreexistingFilesAreDurable) {
  DCP_ASSERT_OK(mem_->CreateDir("/c"));
  DCP_ASSERT_OK(WriteStringToFile(*mem_, "/c/old", "old data", false));
  auto fs = std::make_shared<FaultInjectingFileSystem>(mem_);
  DCP_ASSERT_OK(WriteStringToFile(*fs, "/c/new", "new", true));
  fs->SimulateCrash();
  DCP_ASSERT_OK(fs->Restart());
  EXPECT_EQ(BaseContent("/c/old"), "old data");
  EXPECT_EQ(BaseContent("/c/new"), "<missing>");
}

TEST_F(FaultInjectingFileSystemTest, TruncationIsDurableAtOnce) {
  // leveldb's model: rewriting an existing file loses its old content even
  // though its directory entry was durable all along.
  DCP_ASSERT_OK(mem_->CreateDir("/c"));
  DCP_ASSERT_OK(WriteStringToFile(*mem_, "/c/__0_0.distcp", "old data", false));
  DCP_ASSERT_OK(WriteStringToFile(*fs_, "/c/__0_0.distcp", "new data!", false));
  CrashAndRestart();
  EXPECT_EQ(BaseContent("/c/__0_0.distcp"), "");
}

TEST_F(FaultInjectingFileSystemTest, MetadataRenameIsUndoneWithoutDirSync) {
  DCP_ASSERT_OK(mem_->CreateDir("/c"));
  DCP_ASSERT_OK(WriteStringToFile(*mem_, "/c/.metadata", "old", false));
  // PyTorch's commit (docs/format.md §2.2), without a SyncDir.
  DCP_ASSERT_OK(WriteStringToFile(*fs_, "/c/.metadata.tmp", "new", true));
  DCP_ASSERT_OK(fs_->RemoveFile("/c/.metadata"));
  DCP_ASSERT_OK(fs_->Rename("/c/.metadata.tmp", "/c/.metadata"));
  EXPECT_EQ(BaseContent("/c/.metadata"), "new");
  CrashAndRestart();
  EXPECT_EQ(BaseContent("/c/.metadata"), "old");
  EXPECT_THAT(mem_->GetChildren("/c"), IsOkAndHolds(ElementsAre(".metadata")));
}

TEST_F(FaultInjectingFileSystemTest, MetadataRenameIsDurableAfterDirSync) {
  DCP_ASSERT_OK(mem_->CreateDir("/c"));
  DCP_ASSERT_OK(WriteStringToFile(*mem_, "/c/.metadata", "old", false));
  DCP_ASSERT_OK(WriteStringToFile(*fs_, "/c/.metadata.tmp", "new", true));
  DCP_ASSERT_OK(fs_->Rename("/c/.metadata.tmp", "/c/.metadata"));  // Replaces.
  DCP_ASSERT_OK(fs_->SyncDir("/c"));
  CrashAndRestart();
  EXPECT_EQ(BaseContent("/c/.metadata"), "new");
  EXPECT_THAT(mem_->GetChildren("/c"), IsOkAndHolds(ElementsAre(".metadata")));
}

TEST_F(FaultInjectingFileSystemTest, RenamedUnsyncedFileKeepsOnlySyncedBytes) {
  MakeDurableDir();
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<WritableFile> w,
                           fs_->NewWritableFile("/c/.metadata.tmp"));
  DCP_ASSERT_OK(w->Append("synced"));
  DCP_ASSERT_OK(w->Sync());
  DCP_ASSERT_OK(w->Append("+not"));
  DCP_ASSERT_OK(w->Close());
  DCP_ASSERT_OK(fs_->Rename("/c/.metadata.tmp", "/c/.metadata"));
  DCP_ASSERT_OK(fs_->SyncDir("/c"));
  CrashAndRestart();
  EXPECT_EQ(BaseContent("/c/.metadata"), "synced");
}

TEST_F(FaultInjectingFileSystemTest, RemovalsAreUndoneWithoutDirSync) {
  MakeDurableDir();
  DCP_ASSERT_OK(fs_->CreateDir("/c/sub"));
  DCP_ASSERT_OK(WriteStringToFile(*fs_, "/c/f", "f", true));
  DCP_ASSERT_OK(WriteStringToFile(*fs_, "/c/g", "g", true));
  DCP_ASSERT_OK(fs_->SyncDir("/c"));
  DCP_ASSERT_OK(fs_->RemoveFile("/c/f"));
  DCP_ASSERT_OK(fs_->RemoveDir("/c/sub"));
  CrashAndRestart();
  EXPECT_EQ(BaseContent("/c/f"), "f");
  EXPECT_THAT(mem_->IsDirectory("/c/sub"), IsOkAndHolds(true));

  DCP_ASSERT_OK(fs_->RemoveFile("/c/f"));
  DCP_ASSERT_OK(fs_->RemoveDir("/c/sub"));
  DCP_ASSERT_OK(fs_->SyncDir("/c"));
  CrashAndRestart();
  EXPECT_THAT(mem_->GetChildren("/c"), IsOkAndHolds(ElementsAre("g")));
}

TEST_F(FaultInjectingFileSystemTest, CrossDirectoryRenameNeedsBothDirsSynced) {
  auto setup = [&] {
    DCP_ASSERT_OK(fs_->CreateDir("/a"));
    DCP_ASSERT_OK(fs_->CreateDir("/b"));
    DCP_ASSERT_OK(fs_->SyncDir("/"));
    DCP_ASSERT_OK(WriteStringToFile(*fs_, "/a/f", "f", true));
    DCP_ASSERT_OK(fs_->SyncDir("/a"));
    DCP_ASSERT_OK(fs_->Rename("/a/f", "/b/f"));
  };
  auto children = [&](const char* dir) {
    return mem_->GetChildren(dir).value_or(std::vector<std::string>{"?"});
  };
  // Only the target synced: both names survive.
  setup();
  DCP_ASSERT_OK(fs_->SyncDir("/b"));
  CrashAndRestart();
  EXPECT_THAT(children("/a"), ElementsAre("f"));
  EXPECT_THAT(children("/b"), ElementsAre("f"));
  EXPECT_EQ(BaseContent("/b/f"), "f");
  DCP_ASSERT_OK(fs_->RemoveFile("/b/f"));
  DCP_ASSERT_OK(fs_->RemoveFile("/a/f"));
  DCP_ASSERT_OK(fs_->SyncDir("/a"));
  DCP_ASSERT_OK(fs_->SyncDir("/b"));

  // Only the source synced: neither survives.
  setup();
  DCP_ASSERT_OK(fs_->SyncDir("/a"));
  CrashAndRestart();
  EXPECT_THAT(children("/a"), IsEmpty());
  EXPECT_THAT(children("/b"), IsEmpty());

  // Both synced: moved.
  setup();
  DCP_ASSERT_OK(fs_->SyncDir("/a"));
  DCP_ASSERT_OK(fs_->SyncDir("/b"));
  CrashAndRestart();
  EXPECT_THAT(children("/a"), IsEmpty());
  EXPECT_THAT(children("/b"), ElementsAre("f"));
}

TEST_F(FaultInjectingFileSystemTest, SwappedNamesAreRestored) {
  MakeDurableDir();
  DCP_ASSERT_OK(WriteStringToFile(*fs_, "/c/a", "A", true));
  DCP_ASSERT_OK(WriteStringToFile(*fs_, "/c/b", "B", true));
  DCP_ASSERT_OK(fs_->SyncDir("/c"));
  DCP_ASSERT_OK(fs_->Rename("/c/a", "/c/tmp"));
  DCP_ASSERT_OK(fs_->Rename("/c/b", "/c/a"));
  DCP_ASSERT_OK(fs_->Rename("/c/tmp", "/c/b"));
  EXPECT_EQ(BaseContent("/c/a"), "B");
  CrashAndRestart();
  EXPECT_EQ(BaseContent("/c/a"), "A");
  EXPECT_EQ(BaseContent("/c/b"), "B");
  EXPECT_THAT(mem_->GetChildren("/c"), IsOkAndHolds(ElementsAre("a", "b")));
}

TEST_F(FaultInjectingFileSystemTest, DirectoryRenameSwapIsUndoneUntilSynced) {
  // An existing checkpoint, not created through the wrapper.
  DCP_ASSERT_OK(mem_->CreateDir("/ckpt/sub"));
  DCP_ASSERT_OK(WriteStringToFile(*mem_, "/ckpt/.metadata", "v1", false));
  DCP_ASSERT_OK(WriteStringToFile(*mem_, "/ckpt/sub/d", "v1 data", false));
  // A complete new version in a staging directory.
  DCP_ASSERT_OK(fs_->CreateDir("/ckpt.new"));
  DCP_ASSERT_OK(WriteStringToFile(*fs_, "/ckpt.new/.metadata", "v2", true));
  DCP_ASSERT_OK(fs_->SyncDir("/ckpt.new"));
  DCP_ASSERT_OK(fs_->SyncDir("/"));
  // Swap without syncing "/".
  DCP_ASSERT_OK(fs_->Rename("/ckpt", "/ckpt.old"));
  DCP_ASSERT_OK(fs_->Rename("/ckpt.new", "/ckpt"));
  CrashAndRestart();
  EXPECT_EQ(BaseContent("/ckpt/.metadata"), "v1");
  EXPECT_EQ(BaseContent("/ckpt/sub/d"), "v1 data");
  EXPECT_EQ(BaseContent("/ckpt.new/.metadata"), "v2");
  EXPECT_THAT(mem_->Exists("/ckpt.old"), IsOkAndHolds(false));

  // Again, synced this time.
  DCP_ASSERT_OK(fs_->Rename("/ckpt", "/ckpt.old"));
  DCP_ASSERT_OK(fs_->Rename("/ckpt.new", "/ckpt"));
  DCP_ASSERT_OK(fs_->SyncDir("/"));
  CrashAndRestart();
  EXPECT_EQ(BaseContent("/ckpt/.metadata"), "v2");
  EXPECT_EQ(BaseContent("/ckpt.old/.metadata"), "v1");
  EXPECT_EQ(BaseContent("/ckpt.old/sub/d"), "v1 data");
  EXPECT_THAT(mem_->Exists("/ckpt.new"), IsOkAndHolds(false));
}

TEST_F(FaultInjectingFileSystemTest, EverythingFailsWhileCrashed) {
  MakeDurableDir();
  DCP_ASSERT_OK(WriteStringToFile(*fs_, "/c/r", "r", true));
  DCP_ASSERT_OK(fs_->SyncDir("/c"));
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<WritableFile> w,
                           fs_->NewWritableFile("/c/w"));
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RandomAccessFile> r,
                           fs_->NewRandomAccessFile("/c/r"));
  const int ops = fs_->op_count();
  const size_t logged = fs_->op_log().size();
  fs_->SimulateCrash();
  EXPECT_TRUE(fs_->crashed());
  const auto aborted =
      StatusIs(absl::StatusCode::kAborted, HasSubstr("simulated crash"));
  char scratch[1];
  EXPECT_THAT(w->Append("x"), aborted);
  EXPECT_THAT(w->WriteAt(0, ""), aborted);
  EXPECT_THAT(w->Sync(), aborted);
  EXPECT_THAT(w->Close(), aborted);
  EXPECT_THAT(r->Read(0, 1, scratch), aborted);
  EXPECT_THAT(fs_->NewWritableFile("/c/x"), aborted);
  EXPECT_THAT(fs_->NewRandomAccessFile("/c/r"), aborted);
  EXPECT_THAT(fs_->FileExists("/c/r"), aborted);
  EXPECT_THAT(fs_->IsDirectory("/c"), aborted);
  EXPECT_THAT(fs_->FileSize("/c/r"), aborted);
  EXPECT_THAT(fs_->GetChildren("/c"), aborted);
  EXPECT_THAT(fs_->CreateDir("/d"), aborted);
  EXPECT_THAT(fs_->RemoveFile("/c/r"), aborted);
  EXPECT_THAT(fs_->RemoveDir("/c"), aborted);
  EXPECT_THAT(fs_->Rename("/c/r", "/c/s"), aborted);
  EXPECT_THAT(fs_->SyncDir("/c"), aborted);
  EXPECT_EQ(fs_->op_count(), ops);  // Refused calls are neither counted...
  EXPECT_EQ(fs_->op_log().size(), logged);  // ...nor logged.

  DCP_ASSERT_OK(fs_->Restart());
  EXPECT_FALSE(fs_->crashed());
  // Files opened before the crash stay dead; new ones work.
  EXPECT_THAT(w->Append("x"), aborted);
  EXPECT_THAT(r->Read(0, 1, scratch), aborted);
  DCP_ASSERT_OK_AND_ASSIGN(r, fs_->NewRandomAccessFile("/c/r"));
  EXPECT_THAT(r->Read(0, 1, scratch), IsOkAndHolds(absl::string_view("r")));
  EXPECT_EQ(BaseContent("/c/w"), "<missing>");  // Never dir-synced.
}

TEST_F(FaultInjectingFileSystemTest, RestartWithoutCrashCrashesFirst) {
  MakeDurableDir();
  DCP_ASSERT_OK(WriteStringToFile(*fs_, "/c/f", "x", true));
  DCP_ASSERT_OK(fs_->Restart());
  EXPECT_EQ(BaseContent("/c/f"), "<missing>");
  EXPECT_FALSE(fs_->crashed());
}

TEST_F(FaultInjectingFileSystemTest,
       CrashAfterZeroOpsCrashesAtTheNextMutation) {
  fs_->CrashAfterOps(0);
  DCP_EXPECT_OK(fs_->FileExists("/"));  // Not a mutation: not counted.
  EXPECT_FALSE(fs_->crashed());
  EXPECT_THAT(fs_->CreateDir("/c"), StatusIs(absl::StatusCode::kAborted));
  EXPECT_TRUE(fs_->crashed());
  EXPECT_THAT(mem_->Exists("/c"), IsOkAndHolds(false));  // Did not happen.
  EXPECT_EQ(fs_->op_count(), 0);
  EXPECT_THAT(fs_->mutation_log(), IsEmpty());
}

TEST_F(FaultInjectingFileSystemTest, CrashAfterNOpsLetsExactlyNHappen) {
  MakeDurableDir();
  const int before = fs_->op_count();
  fs_->CrashAfterOps(2);
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<WritableFile> w,
                           fs_->NewWritableFile("/c/f"));  // 1
  DCP_ASSERT_OK(w->Append("abc"));                         // 2
  EXPECT_FALSE(fs_->crashed());
  EXPECT_THAT(w->Sync(), StatusIs(absl::StatusCode::kAborted));  // 3: crash.
  EXPECT_TRUE(fs_->crashed());
  EXPECT_EQ(fs_->op_count(), before + 2);
  EXPECT_EQ(fs_->mutation_log().back(), "append /c/f 3");
  DCP_ASSERT_OK(fs_->Restart());
  EXPECT_EQ(BaseContent("/c/f"), "<missing>");
  // The scheduled crash is consumed: later operations proceed.
  DCP_ASSERT_OK(WriteStringToFile(*fs_, "/c/g", "g", true));
}

TEST_F(FaultInjectingFileSystemTest, InjectedFailuresCountAsOperations) {
  fs_->AddRule({FileOp::kCreateDir, "/a"});
  fs_->CrashAfterOps(1);
  EXPECT_THAT(fs_->CreateDir("/a"), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(fs_->CreateDir("/b"), StatusIs(absl::StatusCode::kAborted));
  EXPECT_EQ(fs_->op_count(), 1);
}

// -----------------------------------------------------------------------------
// Locks
// -----------------------------------------------------------------------------

TEST_F(FaultInjectingFileSystemTest, LocksAreLoggedAndLockIsAMutation) {
  MakeDurableDir();
  fs_->ClearOpLog();
  const int before = fs_->op_count();
  {
    DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<FileLock> lock,
                             fs_->TryLockFile("/c/.lock", "me"));
    EXPECT_THAT(fs_->TryLockFile("/c/.lock", "you").status(),
                StatusIs(absl::StatusCode::kFailedPrecondition,
                         HasSubstr("is held by me")));
  }
  EXPECT_THAT(fs_->op_log(),
              ElementsAre("lock /c/.lock", "lock /c/.lock", "unlock /c/.lock"));
  EXPECT_THAT(fs_->mutation_log(),
              ElementsAre("lock /c/.lock", "lock /c/.lock"));
  EXPECT_EQ(fs_->op_count(), before + 2);
  EXPECT_EQ(BaseContent("/c/.lock"), "me\n");
}

TEST_F(FaultInjectingFileSystemTest, RulesCanFailLocks) {
  MakeDurableDir();
  fs_->AddRule({FileOp::kLock, ".lock", 1, 1, absl::UnavailableError("nfs")});
  EXPECT_THAT(fs_->TryLockFile("/c/.lock", "me").status(),
              StatusIs(absl::StatusCode::kUnavailable,
                       AllOf(HasSubstr("lock /c/.lock"), HasSubstr("nfs"))));
  EXPECT_EQ(BaseContent("/c/.lock"), "<missing>");  // Did not reach the base.
  DCP_EXPECT_OK(fs_->TryLockFile("/c/.lock", "me").status());
}

TEST_F(FaultInjectingFileSystemTest, CrashReleasesLocksOfTheDeadHolder) {
  MakeDurableDir();
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<FileLock> dead,
                           fs_->TryLockFile("/c/.lock", "dead writer"));
  DCP_ASSERT_OK(fs_->SyncDir("/c"));
  fs_->SimulateCrash();
  // Released at once in the wrapped file system, as the kernel would.
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<FileLock> direct,
                           mem_->TryLockFile("/c/.lock", "direct"));
  direct.reset();
  EXPECT_THAT(dead->CheckHeld(),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("crash")));
  EXPECT_THAT(fs_->TryLockFile("/c/.lock", "too early").status(),
              StatusIs(absl::StatusCode::kAborted));
  DCP_ASSERT_OK(fs_->Restart());
  // The lock file's entry was synced, its content never: it is empty.
  EXPECT_EQ(BaseContent("/c/.lock"), "");
  fs_->ClearOpLog();
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<FileLock> next,
                           fs_->TryLockFile("/c/.lock", "next writer"));
  DCP_EXPECT_OK(next->CheckHeld());
  // Dropping the dead holder's object releases nothing (and logs nothing).
  dead.reset();
  DCP_EXPECT_OK(next->CheckHeld());
  EXPECT_THAT(fs_->TryLockFile("/c/.lock", "third").status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("next writer")));
  EXPECT_THAT(fs_->op_log(), ElementsAre("lock /c/.lock", "lock /c/.lock"));
}

TEST_F(FaultInjectingFileSystemTest, CrashAfterOpsReleasesLocksToo) {
  MakeDurableDir();
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<FileLock> dead,
                           fs_->TryLockFile("/c/.lock", "dead writer"));
  fs_->CrashAfterOps(0);
  EXPECT_THAT(fs_->CreateDir("/c/d"), StatusIs(absl::StatusCode::kAborted));
  DCP_ASSERT_OK(fs_->Restart());
  // The lock file was never dir-synced: it is gone, and free.
  EXPECT_EQ(BaseContent("/c/.lock"), "<missing>");
  DCP_EXPECT_OK(fs_->TryLockFile("/c/.lock", "next").status());
}

// -----------------------------------------------------------------------------
// Crash-consistency loop over a checkpoint commit protocol
// -----------------------------------------------------------------------------

struct ProtocolOptions {
  bool sync_data = true;
  bool sync_dir = true;
};

// Writes two data files and a ".metadata" listing "name:size" of each, then
// commits .metadata through a temporary file and a rename.
absl::Status SaveCheckpoint(FileSystem& fs, const ProtocolOptions& options) {
  absl::Status s = fs.CreateDir("/c");
  if (s.ok()) s = fs.SyncDir("/");
  std::string metadata;
  for (int rank = 0; rank < 2 && s.ok(); ++rank) {
    const std::string name = absl::StrCat("__", rank, "_0.distcp");
    const std::string data(1000 + 100 * rank, static_cast<char>('a' + rank));
    s = WriteStringToFile(fs, JoinPath("/c", name), data, options.sync_data);
    absl::StrAppend(&metadata, name, ":", data.size(), "\n");
  }
  if (s.ok()) s = WriteStringToFile(fs, "/c/.metadata.tmp", metadata, true);
  if (s.ok()) s = fs.Rename("/c/.metadata.tmp", "/c/.metadata");
  if (s.ok() && options.sync_dir) s = fs.SyncDir("/c");
  return s;
}

// OK if there is no checkpoint or a complete one; an error describing what
// is wrong otherwise.
absl::Status CheckNothingOrComplete(FileSystem& fs, bool* complete) {
  *complete = false;
  absl::StatusOr<std::string> metadata = ReadFileToString(fs, "/c/.metadata");
  if (absl::IsNotFound(metadata.status())) return absl::OkStatus();
  if (!metadata.ok()) return metadata.status();
  for (absl::string_view line :
       absl::StrSplit(*metadata, '\n', absl::SkipEmpty())) {
    std::vector<std::string> parts = absl::StrSplit(line, ':');
    uint64_t size = 0;
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[1], &size)) {
      return absl::DataLossError(absl::StrCat("bad metadata line ", line));
    }
    absl::StatusOr<uint64_t> actual = fs.FileSize(JoinPath("/c", parts[0]));
    if (!actual.ok()) return actual.status();
    if (*actual != size) {
      return absl::DataLossError(absl::StrCat(parts[0], " has ", *actual,
                                              " bytes, metadata says ", size));
    }
  }
  *complete = true;
  return absl::OkStatus();
}

struct LoopResult {
  int crash_points = 0;
  int nothing = 0;
  int complete = 0;
  std::vector<std::string> violations;
};

LoopResult CrashAtEveryPoint(const ProtocolOptions& options) {
  LoopResult result;
  int total;
  {
    auto fs = std::make_shared<FaultInjectingFileSystem>(
        std::make_shared<MemFileSystem>());
    DCP_EXPECT_OK(SaveCheckpoint(*fs, options));
    total = fs->op_count();
  }
  for (int n = 0; n <= total; ++n) {
    auto fs = std::make_shared<FaultInjectingFileSystem>(
        std::make_shared<MemFileSystem>());
    fs->CrashAfterOps(n);
    const absl::Status saved = SaveCheckpoint(*fs, options);
    EXPECT_EQ(saved.ok(), n == total) << "n=" << n << " " << saved;
    DCP_EXPECT_OK(fs->Restart());
    bool complete = false;
    const absl::Status check = CheckNothingOrComplete(*fs, &complete);
    ++result.crash_points;
    if (!check.ok()) {
      result.violations.push_back(
          absl::StrCat("crash after ", n, ": ", check.ToString()));
    } else if (complete) {
      ++result.complete;
    } else {
      ++result.nothing;
    }
  }
  return result;
}

TEST(CrashConsistencyTest, CorrectProtocolLeavesNothingOrComplete) {
  const LoopResult result = CrashAtEveryPoint({});
  EXPECT_THAT(result.violations, IsEmpty());
  EXPECT_EQ(result.crash_points, 16 + 1);
  EXPECT_EQ(result.complete, 1);  // Only once the final SyncDir happened.
  EXPECT_EQ(result.nothing, 16);
}

TEST(CrashConsistencyTest, MissingDataSyncIsCaught) {
  const LoopResult result = CrashAtEveryPoint({/*sync_data=*/false});
  EXPECT_THAT(result.violations,
              Contains(HasSubstr("__0_0.distcp has 0 bytes, metadata says "
                                 "1000")));
}

TEST(CrashConsistencyTest, MissingDirSyncNeverCommits) {
  const LoopResult result =
      CrashAtEveryPoint({/*sync_data=*/true, /*sync_dir=*/false});
  EXPECT_THAT(result.violations, IsEmpty());
  EXPECT_EQ(result.complete, 0);  // Durable .metadata needs the SyncDir.
}

// -----------------------------------------------------------------------------
// Over a real file system, and with threads
// -----------------------------------------------------------------------------

TEST(FaultInjectingPosixTest, RestartRewritesRealFiles) {
  const std::string root = NewPosixTempDir();
  auto posix = NewPosixFileSystem();
  auto fs = std::make_shared<FaultInjectingFileSystem>(posix);
  const std::string dir = JoinPath(root, "c");
  DCP_ASSERT_OK(fs->CreateDir(dir));
  DCP_ASSERT_OK(fs->SyncDir(root));
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<WritableFile> w,
                           fs->NewWritableFile(JoinPath(dir, "f")));
  DCP_ASSERT_OK(fs->SyncDir(dir));
  DCP_ASSERT_OK(w->Append("abc"));
  DCP_ASSERT_OK(w->Sync());
  DCP_ASSERT_OK(w->Append("def"));
  DCP_ASSERT_OK(WriteStringToFile(*fs, JoinPath(dir, "g"), "g", true));
  fs->SimulateCrash();
  DCP_ASSERT_OK(fs->Restart());
  EXPECT_THAT(ReadFileToString(*posix, JoinPath(dir, "f")),
              IsOkAndHolds(std::string("abc")));
  EXPECT_THAT(posix->Exists(JoinPath(dir, "g")), IsOkAndHolds(false));
}

TEST(FaultInjectingThreadsTest, ConcurrentWritersAreCountedAndCrashCleanly) {
  constexpr int kThreads = 4;
  constexpr int kFiles = 25;
  auto mem = std::make_shared<MemFileSystem>();
  auto fs = std::make_shared<FaultInjectingFileSystem>(mem);
  DCP_ASSERT_OK(fs->CreateDir("/c"));
  const int start = fs->op_count();
  auto write_all = [&](int t) {
    absl::Status status;
    for (int i = 0; i < kFiles && status.ok(); ++i) {
      status = WriteStringToFile(*fs, absl::StrCat("/c/", t, "_", i),
                                 std::string(100 + i, 'x'), true);
    }
    return status;
  };
  {
    std::vector<absl::Status> statuses(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] { statuses[t] = write_all(t); });
    }
    for (std::thread& thread : threads) thread.join();
    for (const absl::Status& status : statuses) DCP_EXPECT_OK(status);
  }
  // create + append + sync + close per file.
  EXPECT_EQ(fs->op_count() - start, kThreads * kFiles * 4);

  // A crash in the middle: every thread stops with Aborted.
  // Fewer than one thread's 100 operations, so no thread can finish.
  fs->CrashAfterOps(50);
  {
    std::vector<absl::Status> statuses(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] { statuses[t] = write_all(t); });
    }
    for (std::thread& thread : threads) thread.join();
    for (const absl::Status& status : statuses) {
      EXPECT_THAT(status, StatusIs(absl::StatusCode::kAborted));
    }
  }
  DCP_ASSERT_OK(fs->Restart());
  // "/c" was never dir-synced, and neither was "/".
  EXPECT_THAT(mem->Exists("/c"), IsOkAndHolds(false));
}

}  // namespace
}  // namespace dcp::test
