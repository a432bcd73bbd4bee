#include "storage/posix_file_system.h"

#include <errno.h>
#include <stdlib.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/file_system.h"
#include "testing/file_system_conformance.h"
#include "testing/status_matchers.h"

namespace dcp {
namespace {

using ::dcp::testing::FileSystemConformanceParams;
using ::dcp::testing::FileSystemConformanceTest;
using ::dcp::testing::FileSystemUnderTest;
using ::dcp::testing::IsOkAndHolds;
using ::dcp::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

// A new, empty directory under $TEST_TMPDIR.
std::string NewTempDir() {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string templ =
      absl::StrCat(base != nullptr ? base : "/tmp", "/posix_fs_XXXXXX");
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  const char* made = ::mkdtemp(buf.data());
  EXPECT_NE(made, nullptr) << "mkdtemp failed, errno " << errno;
  return made != nullptr ? std::string(made) : templ;
}

INSTANTIATE_TEST_SUITE_P(
    Posix, FileSystemConformanceTest,
    ::testing::Values(FileSystemConformanceParams{
        "Posix",
        [] {
          return FileSystemUnderTest{NewPosixFileSystem(), NewTempDir()};
        }}),
    [](const auto& info) { return info.param.name; });

class PosixFileSystemTest : public ::testing::Test {
 protected:
  std::string Path(const std::string& name) const {
    return JoinPath(root_, name);
  }

  PosixFileSystem fs_;
  const std::string root_ = NewTempDir();
};

TEST_F(PosixFileSystemTest, LargeAppendFromOneBufferRoundTrips) {
  constexpr size_t kSize = size_t{64} << 20;  // 64 MiB in one Append call.
  std::string data(kSize, '\0');
  for (size_t i = 0; i < kSize; i += 4096) {
    data[i] = static_cast<char>(i >> 12);
    data[i + 4095] = static_cast<char>(~(i >> 12));
  }
  const std::string path = Path("__0_0.distcp");
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<WritableFile> w,
                       fs_.NewWritableFile(path));
  ASSERT_OK(w->Append("header"));
  ASSERT_OK(w->Append(data));
  EXPECT_EQ(w->size(), kSize + 6);
  ASSERT_OK(w->Sync());
  ASSERT_OK(w->Close());
  EXPECT_THAT(fs_.FileSize(path), IsOkAndHolds(kSize + 6));

  ASSERT_OK_AND_ASSIGN(std::unique_ptr<RandomAccessFile> r,
                       fs_.NewRandomAccessFile(path));
  std::string back(kSize, '\0');
  ASSERT_OK(r->ReadInto(6, absl::MakeSpan(back)));
  EXPECT_TRUE(back == data);
}

TEST_F(PosixFileSystemTest, ErrorsCarryTheOsErrorText) {
  EXPECT_THAT(
      fs_.NewRandomAccessFile(Path("nope")),
      StatusIs(absl::StatusCode::kNotFound,
               AllOf(HasSubstr("open for reading"), HasSubstr(Path("nope")),
                     HasSubstr("No such file or directory"))));
  ASSERT_OK(fs_.CreateDir(Path("d")));
  ASSERT_OK(WriteStringToFile(fs_, Path("d/f"), "x", false));
  EXPECT_THAT(fs_.RemoveDir(Path("d")),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr(Path("d")), HasSubstr("not empty"))));
}

TEST_F(PosixFileSystemTest, RelativePathsResolveAgainstTheWorkingDirectory) {
  // Bazel runs tests in the runfiles tree; only check that a relative
  // lookup of something missing is NotFound, not an error of another kind.
  EXPECT_THAT(fs_.Exists("definitely/not/here"), IsOkAndHolds(false));
}

TEST(ErrnoToStatusTest, MapsCodesAndKeepsContext) {
  EXPECT_THAT(ErrnoToStatus(ENOENT, "open \"/x\""),
              StatusIs(absl::StatusCode::kNotFound,
                       "open \"/x\": No such file or directory"));
  EXPECT_THAT(ErrnoToStatus(EEXIST, "c"),
              StatusIs(absl::StatusCode::kAlreadyExists));
  EXPECT_THAT(ErrnoToStatus(ENOTDIR, "c"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(ErrnoToStatus(EISDIR, "c"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(ErrnoToStatus(ENOTEMPTY, "c"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(ErrnoToStatus(EACCES, "c"),
              StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(ErrnoToStatus(EROFS, "c"),
              StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(ErrnoToStatus(ENOSPC, "c"),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       "c: No space left on device"));
  EXPECT_THAT(ErrnoToStatus(ENAMETOOLONG, "c"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ErrnoToStatus(EBADF, "c"), StatusIs(absl::StatusCode::kInternal));
  EXPECT_THAT(ErrnoToStatus(EIO, "c"), StatusIs(absl::StatusCode::kUnavailable,
                                                "c: Input/output error"));
}

}  // namespace
}  // namespace dcp
