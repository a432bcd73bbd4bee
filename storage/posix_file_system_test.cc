#include "storage/posix_file_system.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/file_system.h"
#include "testing/file_system_conformance.h"
#include "testing/hostile_files.h"
#include "testing/status_matchers.h"

namespace dcp {
namespace {

using ::dcp::test::FileSystemConformanceParams;
using ::dcp::test::FileSystemConformanceTest;
using ::dcp::test::FileSystemUnderTest;
using ::dcp::test::IsOkAndHolds;
using ::dcp::test::StatusIs;
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
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<WritableFile> w,
                           fs_.NewWritableFile(path));
  DCP_ASSERT_OK(w->Append("header"));
  DCP_ASSERT_OK(w->Append(data));
  EXPECT_EQ(w->size(), kSize + 6);
  DCP_ASSERT_OK(w->Sync());
  DCP_ASSERT_OK(w->Close());
  EXPECT_THAT(fs_.FileSize(path), IsOkAndHolds(kSize + 6));

  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RandomAccessFile> r,
                           fs_.NewRandomAccessFile(path));
  std::string back(kSize, '\0');
  DCP_ASSERT_OK(r->ReadInto(6, absl::MakeSpan(back)));
  EXPECT_TRUE(back == data);
}

TEST_F(PosixFileSystemTest, ErrorsCarryTheOsErrorText) {
  EXPECT_THAT(
      fs_.NewRandomAccessFile(Path("nope")),
      StatusIs(absl::StatusCode::kNotFound,
               AllOf(HasSubstr("open for reading"), HasSubstr(Path("nope")),
                     HasSubstr("No such file or directory"))));
  DCP_ASSERT_OK(fs_.CreateDir(Path("d")));
  DCP_ASSERT_OK(WriteStringToFile(fs_, Path("d/f"), "x", false));
  EXPECT_THAT(fs_.RemoveDir(Path("d")),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr(Path("d")), HasSubstr("not empty"))));
}

TEST_F(PosixFileSystemTest, RelativePathsResolveAgainstTheWorkingDirectory) {
  // Bazel runs tests in the runfiles tree; only check that a relative
  // lookup of something missing is NotFound, not an error of another kind.
  EXPECT_THAT(fs_.Exists("definitely/not/here"), IsOkAndHolds(false));
}

TEST_F(PosixFileSystemTest, LockDoesNotFollowSymlinks) {
  DCP_ASSERT_OK(WriteStringToFile(fs_, Path("target"), "precious", false));
  ASSERT_EQ(::symlink(Path("target").c_str(), Path("link").c_str()), 0)
      << "errno " << errno;
  EXPECT_THAT(fs_.TryLockFile(Path("link"), "x").status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr(Path("link")), HasSubstr("symbolic"))));
  EXPECT_THAT(ReadFileToString(fs_, Path("target")),
              IsOkAndHolds(std::string("precious")));
}

// ---- Only regular files; exclusive creation (issue 9) -----------------------

TEST_F(PosixFileSystemTest, FifoIsRefusedWithoutBlocking) {
  const std::string fifo = Path(".metadata");
  DCP_ASSERT_OK(test::MakeFifo(fifo));
  // A regression blocks in open(2) until the watchdog gives it a writer.
  test::FifoWatchdog watchdog({fifo});
  const auto is_fifo =
      StatusIs(absl::StatusCode::kFailedPrecondition,
               AllOf(HasSubstr(fifo), HasSubstr("is a FIFO, not a regular")));
  EXPECT_THAT(fs_.NewRandomAccessFile(fifo), is_fifo);
  EXPECT_THAT(ReadFileToString(fs_, fifo), is_fifo);
  EXPECT_THAT(fs_.FileSize(fifo), is_fifo);
  // Writing would block too (for a reader), and must not.
  EXPECT_THAT(fs_.NewWritableFile(fifo), is_fifo);
  EXPECT_FALSE(watchdog.fired()) << "an open blocked on the FIFO";
}

TEST_F(PosixFileSystemTest, FifoWithAPeerIsStillRefused) {
  const std::string fifo = Path("__0_0.distcp");
  DCP_ASSERT_OK(test::MakeFifo(fifo));
  // With a reader and a writer present, a plain open would succeed.
  const int peer = ::open(fifo.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(peer, 0) << "errno " << errno;
  const auto is_fifo = StatusIs(absl::StatusCode::kFailedPrecondition,
                                AllOf(HasSubstr(fifo), HasSubstr("FIFO")));
  EXPECT_THAT(fs_.NewRandomAccessFile(fifo), is_fifo);
  EXPECT_THAT(fs_.NewWritableFile(fifo), is_fifo);
  ::close(peer);
}

TEST_F(PosixFileSystemTest, SocketDirectoryAndDeviceAreNotRegularFiles) {
  const std::string socket = Path("socket");
  DCP_ASSERT_OK(test::MakeSocketFile(socket));
  const auto is_socket =
      StatusIs(absl::StatusCode::kFailedPrecondition,
               AllOf(HasSubstr(socket), HasSubstr("is a socket, not a")));
  EXPECT_THAT(fs_.NewRandomAccessFile(socket), is_socket);
  EXPECT_THAT(fs_.FileSize(socket), is_socket);
  EXPECT_THAT(fs_.NewWritableFile(socket), is_socket);

  const std::string dir = Path("dir");
  DCP_ASSERT_OK(fs_.CreateDir(dir));
  EXPECT_THAT(fs_.NewRandomAccessFile(dir),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr(dir), HasSubstr("is a directory"))));
  EXPECT_THAT(fs_.FileSize(dir),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr(dir), HasSubstr("is a directory"))));

  // A device, reached through a link named like a checkpoint file.
  const std::string device = Path("__0_1.distcp");
  DCP_ASSERT_OK(test::MakeSymlink("/dev/null", device));
  const auto is_device =
      StatusIs(absl::StatusCode::kFailedPrecondition,
               AllOf(HasSubstr(device), HasSubstr("character device")));
  EXPECT_THAT(fs_.NewRandomAccessFile(device), is_device);
  EXPECT_THAT(fs_.FileSize(device), is_device);
  EXPECT_THAT(fs_.NewWritableFile(device), is_device);
}

TEST_F(PosixFileSystemTest, SymlinksAreFollowedOnlyWhenAllowed) {
  DCP_ASSERT_OK(WriteStringToFile(fs_, Path("target"), "data", false));
  DCP_ASSERT_OK(test::MakeSymlink(Path("target"), Path("link")));
  RandomAccessFileOptions no_follow;
  no_follow.follow_symlinks = false;
  EXPECT_THAT(fs_.NewRandomAccessFile(Path("link"), no_follow),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr(Path("link")),
                             HasSubstr("is a symbolic link"))));
  // The default follows it.
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RandomAccessFile> followed,
                           fs_.NewRandomAccessFile(Path("link")));
  EXPECT_EQ(followed->size(), 4u);
  // Only the last component is refused: a directory reached through a
  // link (a checkpoint directory that is a symlink) is fine.
  DCP_ASSERT_OK(fs_.CreateDir(Path("real_dir")));
  DCP_ASSERT_OK(WriteStringToFile(fs_, Path("real_dir/f"), "abc", false));
  DCP_ASSERT_OK(test::MakeSymlink(Path("real_dir"), Path("dir_link")));
  DCP_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<RandomAccessFile> through_link,
      fs_.NewRandomAccessFile(Path("dir_link/f"), no_follow));
  EXPECT_EQ(through_link->size(), 3u);
}

TEST_F(PosixFileSystemTest, ExclusiveCreateNeverFollowsOrTruncatesALink) {
  WritableFileOptions exclusive;
  exclusive.exclusive = true;
  DCP_ASSERT_OK(WriteStringToFile(fs_, Path("victim"), "precious", false));
  DCP_ASSERT_OK(test::MakeSymlink(Path("victim"), Path("link")));
  EXPECT_THAT(fs_.NewWritableFile(Path("link"), exclusive),
              StatusIs(absl::StatusCode::kAlreadyExists,
                       AllOf(HasSubstr(Path("link")),
                             HasSubstr("a symbolic link already exists"))));
  EXPECT_THAT(ReadFileToString(fs_, Path("victim")),
              IsOkAndHolds(std::string("precious")));
  // A dangling link: its target is not created either.
  DCP_ASSERT_OK(test::MakeSymlink(Path("would_be_created"), Path("dangling")));
  EXPECT_THAT(fs_.NewWritableFile(Path("dangling"), exclusive),
              StatusIs(absl::StatusCode::kAlreadyExists,
                       HasSubstr(Path("dangling"))));
  EXPECT_THAT(fs_.Exists(Path("would_be_created")), IsOkAndHolds(false));
  // A FIFO at the name is refused the same way, without blocking.
  DCP_ASSERT_OK(test::MakeFifo(Path("fifo")));
  EXPECT_THAT(fs_.NewWritableFile(Path("fifo"), exclusive),
              StatusIs(absl::StatusCode::kAlreadyExists,
                       AllOf(HasSubstr(Path("fifo")), HasSubstr("a FIFO"))));
}

TEST_F(PosixFileSystemTest, RegularFilesStillOpenReadAndTruncate) {
  DCP_ASSERT_OK(WriteStringToFile(fs_, Path("f"), "data", false));
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RandomAccessFile> r,
                           fs_.NewRandomAccessFile(Path("f")));
  char scratch[4];
  EXPECT_THAT(r->Read(0, 4, scratch), IsOkAndHolds("data"));
  // A non-exclusive create still truncates a regular file.
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<WritableFile> w,
                           fs_.NewWritableFile(Path("f")));
  DCP_ASSERT_OK(w->Append("xy"));
  DCP_ASSERT_OK(w->Close());
  EXPECT_THAT(ReadFileToString(fs_, Path("f")), IsOkAndHolds(std::string("xy")));
}

// Reads one byte from `fd`, waiting at most 60 s (a deadline, not a
// synchronisation delay). -1 on timeout, error or end of file.
int ReadByteWithDeadline(int fd) {
  struct pollfd p = {fd, POLLIN, 0};
  int rc;
  do {
    rc = ::poll(&p, 1, /*timeout_ms=*/60000);
  } while (rc < 0 && errno == EINTR);
  if (rc != 1) return -1;
  char c;
  ssize_t n;
  do {
    n = ::read(fd, &c, 1);
  } while (n < 0 && errno == EINTR);
  return n == 1 ? static_cast<unsigned char>(c) : -1;
}

TEST_F(PosixFileSystemTest, LockOfAKilledProcessIsFreeAfterwards) {
  const std::string path = Path(".lock");
  int ready[2];  // Child -> parent: 'L' once it holds the lock, 'E' if not.
  int hold[2];   // Parent -> child: never written; the child blocks on it.
  ASSERT_EQ(::pipe(ready), 0);
  ASSERT_EQ(::pipe(hold), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0) << "fork failed, errno " << errno;
  if (child == 0) {
    // The child: take the lock through the same code, report, and wait to
    // be killed. Only _exit leaves, so no gtest or atexit code runs here.
    ::close(ready[0]);
    ::close(hold[1]);
    PosixFileSystem fs;
    absl::StatusOr<std::unique_ptr<FileLock>> lock =
        fs.TryLockFile(path, "the child");
    const char report = lock.ok() ? 'L' : 'E';
    if (::write(ready[1], &report, 1) != 1) ::_exit(2);
    char c;
    ssize_t n;
    do {
      n = ::read(hold[0], &c, 1);
    } while (n != 0 && (n > 0 || errno == EINTR));
    ::_exit(3);  // Only if the parent closed the pipe (it died).
  }
  ::close(ready[1]);
  ::close(hold[0]);
  const int report = ReadByteWithDeadline(ready[0]);
  bool killed = false;
  auto kill_child = [&] {
    if (killed) return;
    killed = true;
    ::kill(child, SIGKILL);
    int status = 0;
    while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "child status " << status;
  };
  if (report != 'L') kill_child();
  ASSERT_EQ(report, 'L') << "the child did not take the lock";

  // Another process holds it: refused, naming the child.
  EXPECT_THAT(
      fs_.TryLockFile(path, "the parent").status(),
      StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("the child")));
  // SIGKILL runs no cleanup code; the kernel releases the lock when it
  // closes the dead process's descriptors, before waitpid reports it.
  kill_child();
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<FileLock> lock,
                           fs_.TryLockFile(path, "the parent"));
  DCP_EXPECT_OK(lock->CheckHeld());
  EXPECT_THAT(ReadFileToString(fs_, path),
              IsOkAndHolds(std::string("the parent\n")));
  ::close(ready[0]);
  ::close(hold[1]);
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
