// -----------------------------------------------------------------------------
// File: testing/hostile_files.h
// -----------------------------------------------------------------------------
//
// Generators of the things a hostile or damaged checkpoint directory holds
// in place of regular files (FIFOs, sockets, symbolic links), and a
// watchdog that turns an open(2) blocked on a FIFO into a test failure
// instead of a hang, for the regression tests of issue 9 (only regular
// files are read; files are created exclusively).
//
// Everything here works on the real (POSIX) file system.
//
// Thread safety: the functions may be called from any thread. A
// `FifoWatchdog` is created and destroyed by one thread; `fired()` may be
// called from any thread.
#ifndef DCP_TESTING_HOSTILE_FILES_H_
#define DCP_TESTING_HOSTILE_FILES_H_

#include <condition_variable>  // NOLINT(build/c++11)
#include <mutex>               // NOLINT(build/c++11)
#include <string>
#include <thread>  // NOLINT(build/c++11)
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace dcp::test {

// Makes a FIFO (named pipe) at `path`. Opening it for reading blocks until
// a writer comes, unless O_NONBLOCK.
absl::Status MakeFifo(const std::string& path);

// Makes a UNIX-domain socket file at `path` (mknod S_IFSOCK; no one
// listens). open(2) of it fails with ENXIO.
absl::Status MakeSocketFile(const std::string& path);

// Makes a symbolic link at `path` that points at `target` (which need not
// exist).
absl::Status MakeSymlink(const std::string& target, const std::string& path);

// Guards the code under test against blocking forever on `fifos`: if it is
// still alive `timeout` after construction, it opens each FIFO for reading
// and writing (O_RDWR, which never blocks on Linux), which completes any
// open(2) blocked on it, and records that it fired. A test asserts
// `!fired()` after the code under test returned: a regression then fails
// the test instead of hanging it. The timeout is only a deadline for the
// failure case; nothing depends on it when the code does not block.
class FifoWatchdog {
 public:
  explicit FifoWatchdog(std::vector<std::string> fifos,
                        absl::Duration timeout = absl::Seconds(20));
  FifoWatchdog(const FifoWatchdog&) = delete;
  FifoWatchdog& operator=(const FifoWatchdog&) = delete;
  // Stops the watchdog (without firing) and closes what it opened.
  ~FifoWatchdog();

  // Whether the deadline passed, i.e. something blocked on a FIFO.
  bool fired() const;

 private:
  void Run(absl::Duration timeout);

  const std::vector<std::string> fifos_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;     // Guarded by mu_.
  bool fired_ = false;    // Guarded by mu_.
  std::vector<int> fds_;  // Guarded by mu_.
  std::thread thread_;
};

}  // namespace dcp::test

#endif  // DCP_TESTING_HOSTILE_FILES_H_
