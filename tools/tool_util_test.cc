#include "tools/tool_util.h"

#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/file_system.h"
#include "storage/posix_file_system.h"
#include "testing/status_matchers.h"

namespace dcp::tools {
namespace {

using ::dcp::test::IsOk;
using ::dcp::test::StatusIs;
using ::testing::ElementsAre;
using ::testing::Field;
using ::testing::StartsWith;

TEST(FormatTest, HumanBytesUsesBinaryUnits) {
  EXPECT_EQ(HumanBytes(0), "0 B");
  EXPECT_EQ(HumanBytes(1023), "1023 B");
  EXPECT_EQ(HumanBytes(1536), "1.50 KiB");
  EXPECT_EQ(HumanBytes(uint64_t{3} << 30), "3.00 GiB");
}

TEST(FormatTest, RatesSecondsAndThousands) {
  EXPECT_EQ(GigabytesPerSecond(2'000'000'000, absl::Seconds(4)), "0.50");
  EXPECT_EQ(GigabytesPerSecond(5, absl::ZeroDuration()), "-");
  EXPECT_EQ(Seconds(absl::Milliseconds(1234)), "1.234");
  EXPECT_EQ(WithThousands(0), "0");
  EXPECT_EQ(WithThousands(999), "999");
  EXPECT_EQ(WithThousands(1000), "1,000");
  EXPECT_EQ(WithThousands(8838070), "8,838,070");
  EXPECT_EQ(WithThousands(34024248), "34,024,248");
  EXPECT_EQ(WithThousands(100000), "100,000");
  EXPECT_EQ(WithThousands(-1234567), "-1,234,567");
}

TEST(TextTableTest, PadsColumnsAndAlignsNumbersRight) {
  TextTable table({"NAME", "SIZE"}, {false, true});
  table.AddRow({"a", "1"});
  table.AddRow({"longer", "1000"});
  std::ostringstream out;
  table.Print(out, "> ");
  EXPECT_EQ(out.str(),
            "> NAME    SIZE\n"
            "> a          1\n"
            "> longer  1000\n");
}

TEST(TextTableTest, EmptyHeaderPrintsNoHeaderRow) {
  TextTable table({});
  table.AddRow({"files", "5"});
  std::ostringstream out;
  table.Print(out);
  EXPECT_EQ(out.str(), "files  5\n");
}

TEST(JsonStringTest, EscapesWhatJsonRequires) {
  EXPECT_EQ(JsonString("plain"), "\"plain\"");
  EXPECT_EQ(JsonString("a\"b\\c"), "\"a\\\"b\\\\c\"");
  EXPECT_EQ(JsonString("l1\nl2\tx\r"), "\"l1\\nl2\\tx\\r\"");
  EXPECT_EQ(JsonString(std::string("\0\x01\x1f\x7f", 4)),
            "\"\\u0000\\u0001\\u001f\\u007f\"");
  // Valid UTF-8 passes through; invalid bytes become U+FFFD escapes.
  EXPECT_EQ(JsonString("run-\xce\xb1"), "\"run-\xce\xb1\"");
  EXPECT_EQ(JsonString("\xf0\x9f\x98\x80"), "\"\xf0\x9f\x98\x80\"");
  EXPECT_EQ(JsonString("a\xff" "b"), "\"a\\ufffdb\"");
  EXPECT_EQ(JsonString("\xce"), "\"\\ufffd\"");          // Truncated.
  EXPECT_EQ(JsonString("\xc0\x80"), "\"\\ufffd\\ufffd\"");  // Overlong.
  EXPECT_EQ(JsonString("\xed\xa0\x80"),
            "\"\\ufffd\\ufffd\\ufffd\"");  // Surrogate.
}

TEST(FilesTest, CheckpointFilesLeaveOutTheLockFile) {
  PosixFileSystem fs;
  DCP_ASSERT_OK_AND_ASSIGN(std::string dir, MakeTempDir("tool_util_test-"));
  for (const char* name : {".dcp.lock", ".metadata", "__0_0.distcp"}) {
    ASSERT_THAT(WriteStringToFile(fs, JoinPath(dir, name), "x", false), IsOk());
  }
  DCP_ASSERT_OK_AND_ASSIGN(std::vector<FileInfo> files,
                           ListCheckpointFiles(fs, dir));
  EXPECT_THAT(files, ElementsAre(Field(&FileInfo::name, ".metadata"),
                                 Field(&FileInfo::name, "__0_0.distcp")));
  EXPECT_THAT(RemoveFlatDir(fs, dir), IsOk());  // The lock file too.
}

TEST(FilesTest, ListsRegularFilesSortedAndRemovesFlatDirs) {
  PosixFileSystem fs;
  DCP_ASSERT_OK_AND_ASSIGN(std::string dir, MakeTempDir("tool_util_test-"));
  EXPECT_THAT(dir, StartsWith("/"));
  ASSERT_THAT(WriteStringToFile(fs, JoinPath(dir, "b"), "12345", false),
              IsOk());
  ASSERT_THAT(WriteStringToFile(fs, JoinPath(dir, ".a"), "", false), IsOk());
  ASSERT_THAT(fs.CreateDir(JoinPath(dir, "sub")), IsOk());
  DCP_ASSERT_OK_AND_ASSIGN(std::vector<FileInfo> files, ListFiles(fs, dir));
  EXPECT_THAT(files, ElementsAre(Field(&FileInfo::name, ".a"),
                                 Field(&FileInfo::name, "b")));
  EXPECT_EQ(files[1].size, 5u);
  // Not flat: the subdirectory stays, so removing the directory fails.
  EXPECT_THAT(RemoveFlatDir(fs, dir),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_THAT(fs.RemoveDir(JoinPath(dir, "sub")), IsOk());
  ASSERT_THAT(WriteStringToFile(fs, JoinPath(dir, "c"), "x", false), IsOk());
  EXPECT_THAT(RemoveFlatDir(fs, dir), IsOk());
  EXPECT_THAT(fs.FileExists(dir), StatusIs(absl::StatusCode::kNotFound));
}

TEST(ProgressTest, RewritesOneLineAndEndsIt) {
  std::ostringstream out;
  Progress progress(&out, "saving", 2);
  progress.Step();
  progress.Step();
  EXPECT_EQ(out.str(), "\rsaving... 1/2 ranks done\rsaving... 2/2 ranks done\n");
  Progress silent(nullptr, "x", 1);
  silent.Step();  // Does nothing.
}

}  // namespace
}  // namespace dcp::tools
