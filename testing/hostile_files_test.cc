#include "testing/hostile_files.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "testing/status_matchers.h"

namespace dcp::test {
namespace {

std::string NewTempDir() {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string templ =
      absl::StrCat(base != nullptr ? base : "/tmp", "/hostile_XXXXXX");
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  const char* made = ::mkdtemp(buf.data());
  EXPECT_NE(made, nullptr) << "mkdtemp failed, errno " << errno;
  return made != nullptr ? std::string(made) : templ;
}

mode_t TypeOf(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st.st_mode & S_IFMT;
}

TEST(HostileFilesTest, MakesAFifoASocketAndASymlink) {
  const std::string dir = NewTempDir();
  DCP_ASSERT_OK(MakeFifo(dir + "/fifo"));
  DCP_ASSERT_OK(MakeSocketFile(dir + "/socket"));
  DCP_ASSERT_OK(MakeSymlink("nowhere", dir + "/link"));
  EXPECT_EQ(TypeOf(dir + "/fifo"), S_IFIFO);
  EXPECT_EQ(TypeOf(dir + "/socket"), S_IFSOCK);
  EXPECT_EQ(TypeOf(dir + "/link"), S_IFLNK);
  EXPECT_FALSE(MakeFifo(dir + "/fifo").ok());  // Exists.
}

TEST(FifoWatchdogTest, DoesNotFireWhenNothingBlocks) {
  const std::string fifo = NewTempDir() + "/fifo";
  DCP_ASSERT_OK(MakeFifo(fifo));
  FifoWatchdog watchdog({fifo});
  const int fd = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ::close(fd);
  EXPECT_FALSE(watchdog.fired());
}

TEST(FifoWatchdogTest, ReleasesAnOpenBlockedOnAFifoAndSaysSo) {
  const std::string fifo = NewTempDir() + "/fifo";
  DCP_ASSERT_OK(MakeFifo(fifo));
  FifoWatchdog watchdog({fifo}, absl::Milliseconds(1));
  // Blocks until the watchdog opens the FIFO, however long that takes.
  const int fd = ::open(fifo.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ::close(fd);
  EXPECT_TRUE(watchdog.fired());
}

}  // namespace
}  // namespace dcp::test
