#include "testing/mem_file_system.h"

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/file_system.h"
#include "testing/file_system_conformance.h"
#include "testing/status_matchers.h"

namespace dcp::test {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

INSTANTIATE_TEST_SUITE_P(Mem, FileSystemConformanceTest,
                         ::testing::Values(FileSystemConformanceParams{
                             "Mem",
                             [] {
                               auto fs = std::make_shared<MemFileSystem>();
                               DCP_EXPECT_OK(fs->CreateDir("/root"));
                               return FileSystemUnderTest{fs, "/root"};
                             }}),
                         [](const auto& info) { return info.param.name; });

TEST(MemFileSystemTest, StartsWithEmptyRoots) {
  MemFileSystem fs;
  EXPECT_THAT(fs.IsDirectory("/"), IsOkAndHolds(true));
  EXPECT_THAT(fs.IsDirectory("."), IsOkAndHolds(true));
  EXPECT_THAT(fs.GetChildren("/"), IsOkAndHolds(::testing::IsEmpty()));
  EXPECT_THAT(fs.RemoveDir("/"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(fs.Rename("/", "/x"),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(MemFileSystemTest, PathsAreNormalised) {
  MemFileSystem fs;
  DCP_ASSERT_OK(fs.CreateDir("/c//d/"));
  DCP_ASSERT_OK(WriteStringToFile(fs, "/c/./d//x", "x", false));
  EXPECT_THAT(ReadFileToString(fs, "/c/d/x"), IsOkAndHolds(std::string("x")));
  // ".." is resolved lexically (unlike POSIX, /c/e need not exist).
  EXPECT_THAT(ReadFileToString(fs, "/c/e/../d/x"),
              IsOkAndHolds(std::string("x")));
  EXPECT_THAT(fs.ListAllFiles(), ElementsAre(Pair("/c/d/x", 1u)));
}

TEST(MemFileSystemTest, RelativePathsLiveUnderDot) {
  MemFileSystem fs;
  DCP_ASSERT_OK(fs.CreateDir("ckpt"));
  DCP_ASSERT_OK(WriteStringToFile(fs, "ckpt/a", "rel", false));
  EXPECT_THAT(fs.GetChildren("."), IsOkAndHolds(ElementsAre("ckpt")));
  EXPECT_THAT(fs.GetChildren("./ckpt"), IsOkAndHolds(ElementsAre("a")));
  EXPECT_THAT(fs.Exists("/ckpt"), IsOkAndHolds(false));
  EXPECT_THAT(fs.ListAllFiles(), ElementsAre(Pair("ckpt/a", 3u)));
}

TEST(MemFileSystemTest, TruncationIsVisibleThroughAnOpenReader) {
  // As with POSIX O_TRUNC, the same file is truncated, so a reader opened
  // earlier sees the short file.
  MemFileSystem fs;
  DCP_ASSERT_OK(WriteStringToFile(fs, "/f", "0123456789", false));
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RandomAccessFile> r,
                           fs.NewRandomAccessFile("/f"));
  EXPECT_EQ(r->size(), 10u);  // The size at open.
  DCP_ASSERT_OK(WriteStringToFile(fs, "/f", "ab", false));
  char scratch[10];
  EXPECT_THAT(r->Read(0, 10, scratch),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("only 2")));
}

TEST(MemFileSystemTest, RemovedFileStaysReadableThroughOpenHandles) {
  MemFileSystem fs;
  DCP_ASSERT_OK(WriteStringToFile(fs, "/f", "data", false));
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RandomAccessFile> r,
                           fs.NewRandomAccessFile("/f"));
  DCP_ASSERT_OK(fs.RemoveFile("/f"));
  char scratch[4];
  EXPECT_THAT(r->Read(0, 4, scratch), IsOkAndHolds(absl::string_view("data")));
  EXPECT_THAT(fs.ListAllFiles(), ::testing::IsEmpty());
}

TEST(MemFileSystemTest, FilesMayOutliveTheFileSystem) {
  std::unique_ptr<WritableFile> w;
  {
    MemFileSystem fs;
    DCP_ASSERT_OK_AND_ASSIGN(w, fs.NewWritableFile("/f"));
  }
  DCP_EXPECT_OK(w->Append("still fine"));
  DCP_EXPECT_OK(w->Close());
}

}  // namespace
}  // namespace dcp::test
