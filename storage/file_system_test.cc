#include "storage/file_system.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/mem_file_system.h"
#include "testing/status_matchers.h"

namespace dcp {
namespace {

using ::dcp::test::IsOkAndHolds;
using ::dcp::test::MemFileSystem;
using ::dcp::test::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(JoinPathTest, JoinsWithExactlyOneSlash) {
  EXPECT_EQ(JoinPath("/c", "x"), "/c/x");
  EXPECT_EQ(JoinPath("/c/", "x"), "/c/x");
  EXPECT_EQ(JoinPath("/c//", "/x"), "/c/x");
  EXPECT_EQ(JoinPath("/", "x"), "/x");
  EXPECT_EQ(JoinPath("c", "x/y"), "c/x/y");
  EXPECT_EQ(JoinPath("", "x"), "x");
  EXPECT_EQ(JoinPath("/c", ""), "/c");
}

TEST(CleanPathTest, NormalisesLexically) {
  EXPECT_EQ(CleanPath(""), ".");
  EXPECT_EQ(CleanPath("."), ".");
  EXPECT_EQ(CleanPath("/"), "/");
  EXPECT_EQ(CleanPath("//c///d/"), "/c/d");
  EXPECT_EQ(CleanPath("/c/./d/."), "/c/d");
  EXPECT_EQ(CleanPath("/c/e/../d"), "/c/d");
  EXPECT_EQ(CleanPath("/.."), "/");
  EXPECT_EQ(CleanPath("/../c"), "/c");
  EXPECT_EQ(CleanPath("a/../.."), "..");
  EXPECT_EQ(CleanPath("../a/./b"), "../a/b");
  EXPECT_EQ(CleanPath("./a/"), "a");
}

TEST(DirnameBasenameTest, SplitCleanedPaths) {
  EXPECT_EQ(Dirname("/c/x"), "/c");
  EXPECT_EQ(Dirname("/c/x/"), "/c");
  EXPECT_EQ(Dirname("/x"), "/");
  EXPECT_EQ(Dirname("/"), "/");
  EXPECT_EQ(Dirname("x"), ".");
  EXPECT_EQ(Dirname("a/b"), "a");
  EXPECT_EQ(Basename("/c/x/"), "x");
  EXPECT_EQ(Basename("/c/.metadata"), ".metadata");
  EXPECT_EQ(Basename("x"), "x");
  EXPECT_EQ(Basename("/"), "/");
}

TEST(ReadPastEndErrorTest, NamesFileOffsetWantedAndAvailable) {
  absl::Status status = ReadPastEndError("/c/__0_0.distcp", 1024, 4096, 100);
  EXPECT_THAT(status,
              StatusIs(absl::StatusCode::kDataLoss,
                       "file \"/c/__0_0.distcp\": read of 4096 bytes at offset "
                       "1024 goes past the end of the file: only 100 bytes "
                       "are available there"));
}

TEST(WholeFileHelpersTest, WriteStringToFileThenReadFileToString) {
  MemFileSystem fs;
  DCP_ASSERT_OK(WriteStringToFile(fs, "/a", std::string("bin\0ary", 7), true));
  EXPECT_THAT(ReadFileToString(fs, "/a"),
              IsOkAndHolds(std::string("bin\0ary", 7)));
  DCP_ASSERT_OK(WriteStringToFile(fs, "/empty", "", false));
  EXPECT_THAT(ReadFileToString(fs, "/empty"), IsOkAndHolds(std::string()));
  EXPECT_THAT(ReadFileToString(fs, "/missing"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("/missing")));
  EXPECT_THAT(WriteStringToFile(fs, "/no/dir", "x", false),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("/no/dir")));
}

// A file whose Read returns memory it owns instead of `scratch`: ReadInto
// must copy it into the destination.
class OwnedMemoryFile : public RandomAccessFile {
 public:
  absl::StatusOr<absl::string_view> Read(uint64_t offset, size_t n,
                                         char* scratch) const override {
    if (offset + n > data_.size()) {
      return ReadPastEndError("owned", offset, n, data_.size() - offset);
    }
    return absl::string_view(data_).substr(offset, n);
  }
  uint64_t size() const override { return data_.size(); }

 private:
  const std::string data_ = "0123456789";
};

TEST(FileRangeReaderTest, ReadsRelativeToItsBase) {
  MemFileSystem fs;
  DCP_ASSERT_OK(WriteStringToFile(fs, "/f", "abcdefgh", /*sync=*/false));
  DCP_ASSERT_OK_AND_ASSIGN(auto file, fs.NewRandomAccessFile("/f"));
  auto read = FileRangeReader(*file, /*base=*/2);
  EXPECT_THAT(read(1, 3), IsOkAndHolds("def"));
  EXPECT_THAT(read(0, 0), IsOkAndHolds(""));
  EXPECT_THAT(read(4, 3), StatusIs(absl::StatusCode::kDataLoss));
}

TEST(CreateDirDurablyTest, CreatesMissingParents) {
  MemFileSystem fs;
  DCP_ASSERT_OK(CreateDirDurably(fs, "/a/b/c"));
  EXPECT_THAT(fs.IsDirectory("/a/b/c"), IsOkAndHolds(true));
  DCP_ASSERT_OK(CreateDirDurably(fs, "/a/b/c"));  // Already there: fine.
  DCP_ASSERT_OK(WriteStringToFile(fs, "/a/file", "x", /*sync=*/false));
  EXPECT_FALSE(CreateDirDurably(fs, "/a/file").ok());
}

TEST(RandomAccessFileTest, ReadIntoCopiesWhenReadDoesNotUseScratch) {
  OwnedMemoryFile file;
  std::string dest(4, '?');
  DCP_ASSERT_OK(file.ReadInto(3, absl::MakeSpan(dest)));
  EXPECT_EQ(dest, "3456");
  EXPECT_THAT(file.ReadInto(8, absl::MakeSpan(dest)),
              StatusIs(absl::StatusCode::kDataLoss));
}

TEST(FileSystemTest, ExistsMapsNotFoundToFalseAndKeepsOtherErrors) {
  MemFileSystem fs;
  DCP_ASSERT_OK(WriteStringToFile(fs, "/f", "", false));
  EXPECT_THAT(fs.Exists("/f"), IsOkAndHolds(true));
  EXPECT_THAT(fs.Exists("/g"), IsOkAndHolds(false));
  EXPECT_THAT(fs.Exists("/f/under_a_file"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

// Overrides one method and counts the calls; the rest must be forwarded.
class CountingRenames : public FileSystemWrapper {
 public:
  using FileSystemWrapper::FileSystemWrapper;
  absl::Status Rename(absl::string_view from, absl::string_view to) override {
    ++renames;
    return FileSystemWrapper::Rename(from, to);
  }
  int renames = 0;
};

TEST(FileSystemWrapperTest, ForwardsEveryCallToTheTarget) {
  auto mem = std::make_shared<MemFileSystem>();
  CountingRenames fs(mem);
  EXPECT_EQ(fs.target(), mem.get());
  DCP_ASSERT_OK(fs.CreateDir("/c/d"));
  DCP_ASSERT_OK(WriteStringToFile(fs, "/c/x.tmp", "abc", true));
  DCP_ASSERT_OK(fs.Rename("/c/x.tmp", "/c/x"));
  DCP_ASSERT_OK(fs.SyncDir("/c"));
  EXPECT_EQ(fs.renames, 1);
  EXPECT_THAT(fs.FileSize("/c/x"), IsOkAndHolds(3u));
  DCP_EXPECT_OK(fs.FileExists("/c/x"));
  EXPECT_THAT(fs.IsDirectory("/c/d"), IsOkAndHolds(true));
  EXPECT_THAT(fs.GetChildren("/c"), IsOkAndHolds(ElementsAre("d", "x")));
  EXPECT_THAT(ReadFileToString(fs, "/c/x"), IsOkAndHolds(std::string("abc")));
  DCP_ASSERT_OK(fs.RemoveFile("/c/x"));
  DCP_ASSERT_OK(fs.RemoveDir("/c/d"));
  // The target saw every change.
  EXPECT_THAT(mem->GetChildren("/c"), IsOkAndHolds(::testing::IsEmpty()));
}

}  // namespace
}  // namespace dcp
