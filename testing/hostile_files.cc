#include "testing/hostile_files.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <chrono>  // NOLINT(build/c++11)
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace dcp::test {
namespace {

absl::Status Failed(absl::string_view what, const std::string& path) {
  return absl::UnknownError(
      absl::StrCat(what, " \"", path, "\": ", ::strerror(errno)));
}

}  // namespace

absl::Status MakeFifo(const std::string& path) {
  if (::mkfifo(path.c_str(), 0644) != 0) return Failed("mkfifo", path);
  return absl::OkStatus();
}

absl::Status MakeSocketFile(const std::string& path) {
  // mknod of a socket needs no privilege, and unlike bind(2) has no
  // 108-byte limit on the path.
  if (::mknod(path.c_str(), S_IFSOCK | 0644, 0) != 0) {
    return Failed("mknod socket", path);
  }
  return absl::OkStatus();
}

absl::Status MakeSymlink(const std::string& target, const std::string& path) {
  if (::symlink(target.c_str(), path.c_str()) != 0) {
    return Failed(absl::StrCat("symlink to \"", target, "\" at"), path);
  }
  return absl::OkStatus();
}

FifoWatchdog::FifoWatchdog(std::vector<std::string> fifos,
                           absl::Duration timeout)
    : fifos_(std::move(fifos)) {
  thread_ = std::thread([this, timeout] { Run(timeout); });
}

FifoWatchdog::~FifoWatchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  for (int fd : fds_) ::close(fd);
}

bool FifoWatchdog::fired() const {
  std::lock_guard<std::mutex> lock(mu_);
  return fired_;
}

void FifoWatchdog::Run(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                   [this] { return stop_; })) {
    return;
  }
  fired_ = true;
  // Kept open until destruction, so the released open has a peer.
  for (const std::string& fifo : fifos_) {
    const int fd = ::open(fifo.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) fds_.push_back(fd);
  }
}

}  // namespace dcp::test
