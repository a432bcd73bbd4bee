// A load touching thousands of data files under a small `ulimit -n`: the
// reader must hold at most `FileSystemReaderOptions::max_open_files` open.
// The limit is set in a worker process (testing/multiprocess.h), so that
// neither the test runner nor other tests see it.
#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "ATen/ATen.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "checkpoint/save_load.h"
#include "core/state_dict.h"
#include "core/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/file_system.h"
#include "storage/fs_storage.h"
#include "storage/posix_file_system.h"
#include "testing/multiprocess.h"
#include "testing/status_matchers.h"
#include "testing/tensor_matchers.h"

namespace dcp {
namespace {

using ::dcp::test::ExitedWithCode;
using ::dcp::test::MultiprocessOptions;
using ::dcp::test::RunWorkers;
using ::dcp::test::StatusIs;
using ::dcp::test::TensorEq;
using ::dcp::test::WorkerContext;
using ::dcp::test::WorkerResult;
using ::testing::Each;
using ::testing::SizeIs;

constexpr int kFiles = 5000;
constexpr rlim_t kFdLimit = 256;

// File descriptors this process has open.
int OpenDescriptors() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int n = 0;
  while (readdir(dir) != nullptr) ++n;
  closedir(dir);
  return n - 3;  // ".", ".." and the directory's own descriptor.
}

// How many more files this process can open, trying up to `most`; closes
// them again. Sets `*error` to the errno of the failed open, if any.
int FilesThatCanBeOpened(int most, int* error) {
  std::vector<int> fds;
  *error = 0;
  while (static_cast<int>(fds.size()) < most) {
    const int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      *error = errno;
      break;
    }
    fds.push_back(fd);
  }
  for (int fd : fds) close(fd);
  return static_cast<int>(fds.size());
}

// Built through mutable_entries(): Set() looks each key up, which is
// quadratic for thousands of keys.
StateDict ZerosLike(const StateDict& sd) {
  StateDict out;
  out.mutable_entries().reserve(sd.entries().size());
  for (const StateDict::Entry& entry : sd.entries()) {
    out.mutable_entries().emplace_back(
        entry.first, at::zeros_like(entry.second.get<at::Tensor>()));
  }
  return out;
}

bool AllZero(const StateDict& sd) {
  for (const StateDict::Entry& entry : sd.entries()) {
    if (entry.second.get<at::Tensor>().count_nonzero().item<int64_t>() != 0) {
      return false;
    }
  }
  return true;
}

absl::Status LoadWith(const std::string& dir, StateDict& dest,
                      FileSystemReaderOptions options) {
  DCP_ASSIGN_OR_RETURN(std::unique_ptr<FileSystemReader> reader,
                       FileSystemReader::Create(dir, std::move(options)));
  LoadOptions load;
  load.no_dist = true;
  return Load(dest, *reader, load);
}

// Runs in the worker: saves one file per item, lowers RLIMIT_NOFILE to 256
// and loads.
void SaveAndLoadUnderFdLimit() {
  const char* tmp = std::getenv("TEST_TMPDIR");
  ASSERT_NE(tmp, nullptr);
  const std::string dir = JoinPath(tmp, absl::StrCat("ckpt_", getpid()));

  StateDict sd;
  for (int i = 0; i < kFiles; ++i) {
    // Nonzero values, so that an unloaded destination shows.
    sd.mutable_entries().emplace_back(absl::StrCat("t", i),
                                      at::full({2}, static_cast<float>(i + 1)));
  }
  FileSystemWriterOptions w;
  w.single_file_per_rank = false;
  w.sync_files = false;
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<FileSystemWriter> writer,
                           FileSystemWriter::Create(dir, w));
  SaveOptions save;
  save.no_dist = true;
  DCP_ASSERT_OK(Save(sd, *writer, save).status());
  std::shared_ptr<FileSystem> posix = NewPosixFileSystem();
  DCP_ASSERT_OK_AND_ASSIGN(std::vector<std::string> children,
                           posix->GetChildren(dir));
  ASSERT_GE(children.size(), static_cast<size_t>(kFiles));

  // The worker itself needs only a few descriptors (stdio, its log).
  const int in_use = OpenDescriptors();
  ASSERT_GE(in_use, 0);
  ASSERT_LT(in_use, 64);
  struct rlimit limit;
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &limit), 0);
  ASSERT_GE(limit.rlim_max, kFdLimit);
  limit.rlim_cur = kFdLimit;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &limit), 0);
  // The limit is in force: fewer than 256 more files can be opened.
  int error = 0;
  EXPECT_LT(FilesThatCanBeOpened(2 * kFdLimit, &error),
            static_cast<int>(kFdLimit));
  EXPECT_EQ(error, EMFILE);

  // Keeping every file open from its check to its copy (the reader before
  // max_open_files) runs out of descriptors, before any destination is
  // written. One thread: starting a thread while no descriptor is free
  // trips UBSan's own checks (it probes memory through a pipe).
  FileSystemReaderOptions unbounded;
  unbounded.thread_count = 1;
  unbounded.verify_checksums = false;
  unbounded.max_open_files = 2 * kFiles;
  StateDict failed = ZerosLike(sd);
  EXPECT_THAT(LoadWith(dir, failed, unbounded),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_TRUE(AllZero(failed));

  // The default bound loads every tensor (and closed every file above).
  FileSystemReaderOptions bounded;
  bounded.thread_count = 2;
  StateDict dest = ZerosLike(sd);
  DCP_ASSERT_OK(LoadWith(dir, dest, bounded));
  ASSERT_THAT(dest.entries(), SizeIs(kFiles));
  for (int i = 0; i < kFiles; ++i) {
    const StateDict::Entry& want = sd.entries()[i];
    ASSERT_EQ(dest.entries()[i].first, want.first);
    ASSERT_THAT(dest.entries()[i].second.get<at::Tensor>(),
                TensorEq(want.second.get<at::Tensor>()))
        << want.first;
  }
  EXPECT_LT(OpenDescriptors(), 64);
}

TEST(FsStorageFdLimitTest, LoadOfFiveThousandFilesWorksUnderUlimit256) {
  MultiprocessOptions options;
  options.world_size = 1;
  options.timeout = absl::Seconds(600);
  DCP_ASSERT_OK_AND_ASSIGN(std::vector<WorkerResult> workers,
                           RunWorkers(options, [](const WorkerContext&) {
                             SaveAndLoadUnderFdLimit();
                           }));
  EXPECT_THAT(workers, SizeIs(1));
  EXPECT_THAT(workers, Each(ExitedWithCode(0)));
}

}  // namespace
}  // namespace dcp
