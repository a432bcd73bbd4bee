#include "storage/posix_file_system.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/status.h"
#include "storage/file_system.h"

namespace dcp {
namespace {

// write(2) transfers at most 0x7ffff000 bytes per call on Linux; keep each
// call comfortably below that.
constexpr size_t kMaxIoChunk = size_t{1} << 30;

// strerror_r has a GNU (char*) and an XSI (int) flavour; accept either.
[[maybe_unused]] const char* StrerrorResult(int rc, const char* buf) {
  return rc == 0 ? buf : "unknown error";
}
[[maybe_unused]] const char* StrerrorResult(const char* result, const char*) {
  return result;
}

std::string ErrnoText(int errno_value) {
  char buf[256];
  buf[0] = '\0';
  return std::string(
      StrerrorResult(strerror_r(errno_value, buf, sizeof(buf)), buf));
}

// `path` as a NUL-terminated string for the system calls.
std::string CPath(absl::string_view path) { return std::string(path); }

std::string Quoted(absl::string_view path) {
  return absl::StrCat("\"", path, "\"");
}

absl::Status PathError(int errno_value, absl::string_view what,
                       absl::string_view path) {
  return ErrnoToStatus(errno_value, absl::StrCat(what, " ", Quoted(path)));
}

absl::StatusOr<struct stat> Stat(absl::string_view path) {
  struct stat st;
  if (::stat(CPath(path).c_str(), &st) != 0) {
    return PathError(errno, "stat", path);
  }
  return st;
}

// What kind of file `mode` is, for messages: "a FIFO", "a directory", ...
absl::string_view FileTypeName(mode_t mode) {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "a special file";
}

// `what "path": is a FIFO, not a regular file`.
absl::Status NotRegularFileError(absl::string_view what,
                                 absl::string_view path, mode_t mode) {
  return absl::FailedPreconditionError(absl::StrCat(
      what, " ", Quoted(path), ": is ", FileTypeName(mode),
      ", not a regular file"));
}

// The error for an open(2) of `path` that failed with `err`. open(2) says
// only ENXIO for a socket or a FIFO without a peer, and ELOOP for a refused
// symbolic link (or a loop), so look at what is there.
absl::Status OpenError(int err, absl::string_view what,
                       absl::string_view path) {
  if (err == ENXIO || err == ELOOP || err == EEXIST) {
    struct stat st;
    if (::lstat(CPath(path).c_str(), &st) == 0) {
      if (err == EEXIST) {
        return absl::AlreadyExistsError(absl::StrCat(
            what, " ", Quoted(path), ": ", FileTypeName(st.st_mode),
            " already exists there; not following, truncating or replacing "
            "it"));
      }
      if (err == ELOOP && S_ISLNK(st.st_mode)) {
        return absl::FailedPreconditionError(
            absl::StrCat(what, " ", Quoted(path),
                         ": is a symbolic link, which is not followed here"));
      }
      if (err == ENXIO && !S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode)) {
        return NotRegularFileError(what, path, st.st_mode);
      }
      if (err == ENXIO && S_ISLNK(st.st_mode) &&
          ::stat(CPath(path).c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
        return NotRegularFileError(what, path, st.st_mode);
      }
    }
  }
  return PathError(err, what, path);
}

// Clears O_NONBLOCK, which only served to keep the open from blocking.
absl::Status ClearNonBlocking(int fd, absl::string_view path) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
    return PathError(errno, "set blocking mode of", path);
  }
  return absl::OkStatus();
}

class PosixWritableFile final : public WritableFile {
 public:
  PosixWritableFile(std::string path, int fd)
      : path_(std::move(path)), fd_(fd) {}

  ~PosixWritableFile() override {
    if (fd_ >= 0) ::close(fd_);
  }

  absl::Status Append(absl::string_view data) override {
    DCP_RETURN_IF_ERROR(CheckOpen("append to"));
    const char* p = data.data();
    size_t left = data.size();
    while (left > 0) {
      const ssize_t n = ::write(fd_, p, std::min(left, kMaxIoChunk));
      if (n < 0) {
        if (errno == EINTR) continue;
        return PathError(errno, absl::StrCat("write at offset ", size_, " of"),
                         path_);
      }
      if (n == 0) {
        return absl::UnavailableError(absl::StrCat("write at offset ", size_,
                                                   " of ", Quoted(path_),
                                                   ": write(2) returned 0"));
      }
      p += n;
      left -= static_cast<size_t>(n);
      size_ += static_cast<uint64_t>(n);
    }
    return absl::OkStatus();
  }

  absl::Status WriteAt(uint64_t offset, absl::string_view data) override {
    DCP_RETURN_IF_ERROR(CheckOpen("overwrite"));
    DCP_RETURN_IF_ERROR(CheckWriteAtRange(path_, offset, data.size(), size_));
    // pwrite(2) leaves the file position, where Append writes, alone (the
    // file is not O_APPEND, which would make it ignore the offset).
    size_t done = 0;
    while (done < data.size()) {
      const ssize_t n =
          ::pwrite(fd_, data.data() + done,
                   std::min(data.size() - done, kMaxIoChunk),
                   static_cast<off_t>(offset + done));
      if (n < 0) {
        if (errno == EINTR) continue;
        return PathError(
            errno, absl::StrCat("overwrite at offset ", offset + done, " of"),
            path_);
      }
      if (n == 0) {
        return absl::UnavailableError(
            absl::StrCat("overwrite at offset ", offset + done, " of ",
                         Quoted(path_), ": pwrite(2) returned 0"));
      }
      done += static_cast<size_t>(n);
    }
    return absl::OkStatus();
  }

  absl::Status Sync() override {
    DCP_RETURN_IF_ERROR(CheckOpen("sync"));
#if defined(__linux__)
    const int rc = ::fdatasync(fd_);
#else
    const int rc = ::fsync(fd_);
#endif
    if (rc != 0) return PathError(errno, "sync", path_);
    return absl::OkStatus();
  }

  absl::Status Close() override {
    DCP_RETURN_IF_ERROR(CheckOpen("close"));
    const int fd = fd_;
    fd_ = -1;
    // Never retry close(2): on Linux the descriptor is gone even on EINTR.
    if (::close(fd) != 0 && errno != EINTR) {
      return PathError(errno, "close", path_);
    }
    return absl::OkStatus();
  }

  uint64_t size() const override { return size_; }

 private:
  absl::Status CheckOpen(absl::string_view what) const {
    if (fd_ >= 0) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot ", what, " ", Quoted(path_), ": the file is closed"));
  }

  const std::string path_;
  int fd_;
  uint64_t size_ = 0;
};

class PosixRandomAccessFile final : public RandomAccessFile {
 public:
  PosixRandomAccessFile(std::string path, int fd, uint64_t size)
      : path_(std::move(path)), fd_(fd), size_(size) {}

  ~PosixRandomAccessFile() override { ::close(fd_); }

  absl::StatusOr<absl::string_view> Read(uint64_t offset, size_t n,
                                         char* scratch) const override {
    size_t done = 0;
    while (done < n) {
      const ssize_t got =
          ::pread(fd_, scratch + done, std::min(n - done, kMaxIoChunk),
                  static_cast<off_t>(offset + done));
      if (got < 0) {
        if (errno == EINTR) continue;
        return PathError(errno,
                         absl::StrCat("read at offset ", offset + done, " of"),
                         path_);
      }
      if (got == 0) {  // End of file.
        return ReadPastEndError(path_, offset, n, done);
      }
      done += static_cast<size_t>(got);
    }
    return absl::string_view(scratch, n);
  }

  uint64_t size() const override { return size_; }

 private:
  const std::string path_;
  const int fd_;
  const uint64_t size_;
};

// Holds an open-file-description lock: closing the descriptor releases it.
class PosixFileLock final : public FileLock {
 public:
  PosixFileLock(std::string path, int fd)
      : FileLock(std::move(path)), fd_(fd) {}

  ~PosixFileLock() override { ::close(fd_); }

  absl::Status CheckHeld() const override {
    struct stat held;
    if (::fstat(fd_, &held) != 0) {
      return PathError(errno, "stat locked file", path());
    }
    struct stat now;
    if (::lstat(CPath(path()).c_str(), &now) != 0) {
      if (errno == ENOENT) return LockLostError(path());
      return PathError(errno, "stat lock file", path());
    }
    if (now.st_dev != held.st_dev || now.st_ino != held.st_ino) {
      return LockLostError(path());
    }
    return absl::OkStatus();
  }

 private:
  const int fd_;
};

// Up to `max` bytes from the start of `fd` (best effort: what a read gets).
std::string ReadHead(int fd, size_t max) {
  std::string data(max, '\0');
  size_t done = 0;
  while (done < max) {
    const ssize_t n =
        ::pread(fd, data.data() + done, max - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  data.resize(done);
  return data;
}

// Replaces the content of `fd` with `data`.
absl::Status Overwrite(int fd, absl::string_view data, absl::string_view path) {
  if (::ftruncate(fd, 0) != 0) return PathError(errno, "truncate", path);
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::pwrite(fd, data.data() + done, data.size() - done,
                               static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return PathError(errno, "write", path);
    }
    if (n == 0) {
      return absl::UnavailableError(
          absl::StrCat("write ", Quoted(path), ": write(2) returned 0"));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ErrnoToStatus(int errno_value, absl::string_view context) {
  const std::string message =
      absl::StrCat(context, ": ", ErrnoText(errno_value));
  switch (errno_value) {
    case ENOENT:
      return absl::NotFoundError(message);
    case EEXIST:
      return absl::AlreadyExistsError(message);
    case ENOTDIR:
    case EISDIR:
    case ENOTEMPTY:
      return absl::FailedPreconditionError(message);
    case EACCES:
    case EPERM:
    case EROFS:
      return absl::PermissionDeniedError(message);
    case ENOSPC:
    case EDQUOT:
    case EMFILE:
    case ENFILE:
      return absl::ResourceExhaustedError(message);
    case EINVAL:
    case ENAMETOOLONG:
    case ELOOP:
      return absl::InvalidArgumentError(message);
    case EBADF:
    case EFAULT:
      return absl::InternalError(message);
    default:
      return absl::UnavailableError(message);
  }
}

std::shared_ptr<FileSystem> NewPosixFileSystem() {
  return std::make_shared<PosixFileSystem>();
}

absl::StatusOr<std::unique_ptr<WritableFile>> PosixFileSystem::NewWritableFile(
    absl::string_view path, const WritableFileOptions& options) {
  // O_NONBLOCK: opening a FIFO for writing would otherwise wait for a
  // reader. No O_TRUNC: only a regular file may be truncated, after fstat.
  int flags = O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
  if (options.exclusive) flags |= O_EXCL | O_NOFOLLOW;
  const absl::string_view what =
      options.exclusive ? "create new file" : "open for writing";
  int fd;
  do {
    fd = ::open(CPath(path).c_str(), flags, 0644);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return OpenError(errno, what, path);
  auto fail = [fd](absl::Status status) {
    ::close(fd);
    return status;
  };
  struct stat st;
  if (::fstat(fd, &st) != 0) return fail(PathError(errno, "stat", path));
  if (!S_ISREG(st.st_mode)) {
    return fail(NotRegularFileError(what, path, st.st_mode));
  }
  absl::Status status = ClearNonBlocking(fd, path);
  if (!status.ok()) return fail(status);
  if (!options.exclusive && st.st_size != 0) {
    int rc;
    do {
      rc = ::ftruncate(fd, 0);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) return fail(PathError(errno, "truncate", path));
  }
  return std::make_unique<PosixWritableFile>(std::string(path), fd);
}

absl::StatusOr<std::unique_ptr<RandomAccessFile>>
PosixFileSystem::NewRandomAccessFile(absl::string_view path,
                                     const RandomAccessFileOptions& options) {
  // O_NONBLOCK: opening a FIFO would otherwise wait for a writer, forever.
  int flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
  if (!options.follow_symlinks) flags |= O_NOFOLLOW;
  int fd;
  do {
    fd = ::open(CPath(path).c_str(), flags);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return OpenError(errno, "open for reading", path);
  auto fail = [fd](absl::Status status) {
    ::close(fd);
    return status;
  };
  struct stat st;
  if (::fstat(fd, &st) != 0) return fail(PathError(errno, "stat", path));
  if (!S_ISREG(st.st_mode)) {
    return fail(NotRegularFileError("open for reading", path, st.st_mode));
  }
  absl::Status status = ClearNonBlocking(fd, path);
  if (!status.ok()) return fail(status);
  return std::make_unique<PosixRandomAccessFile>(
      std::string(path), fd, static_cast<uint64_t>(st.st_size));
}

absl::StatusOr<uint64_t> PosixFileSystem::FileSize(absl::string_view path) {
  DCP_ASSIGN_OR_RETURN(struct stat st, Stat(path));
  if (!S_ISREG(st.st_mode)) {
    return NotRegularFileError("size of", path, st.st_mode);
  }
  return static_cast<uint64_t>(st.st_size);
}

absl::Status PosixFileSystem::FileExists(absl::string_view path) {
  return Stat(path).status();
}

absl::StatusOr<bool> PosixFileSystem::IsDirectory(absl::string_view path) {
  DCP_ASSIGN_OR_RETURN(struct stat st, Stat(path));
  return S_ISDIR(st.st_mode);
}

absl::StatusOr<std::vector<std::string>> PosixFileSystem::GetChildren(
    absl::string_view dir) {
  DIR* d = ::opendir(CPath(dir).c_str());
  if (d == nullptr) return PathError(errno, "list directory", dir);
  std::vector<std::string> names;
  while (true) {
    errno = 0;
    struct dirent* entry = ::readdir(d);
    if (entry == nullptr) {
      if (errno != 0) {
        absl::Status status = PathError(errno, "list directory", dir);
        ::closedir(d);
        return status;
      }
      break;
    }
    absl::string_view name(entry->d_name);
    if (name == "." || name == "..") continue;
    names.emplace_back(name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

absl::Status PosixFileSystem::CreateDir(absl::string_view dir) {
  return CreateDirRecursive(dir, CleanPath(dir), /*is_target=*/true);
}

absl::Status PosixFileSystem::CreateDirRecursive(absl::string_view dir,
                                                 const std::string& level,
                                                 bool is_target) {
  // mkdir(level); on ENOENT create the parent first, then retry. EEXIST is
  // fine for a directory (possibly made by a concurrent caller).
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (::mkdir(level.c_str(), 0755) == 0) return absl::OkStatus();
    const int err = errno;
    if (err == EEXIST) {
      DCP_ASSIGN_OR_RETURN(bool is_dir, IsDirectory(level));
      if (is_dir) return absl::OkStatus();
      const std::string message =
          absl::StrCat("create directory ", Quoted(dir), ": ", Quoted(level),
                       " exists and is not a directory");
      if (is_target) return absl::AlreadyExistsError(message);
      return absl::FailedPreconditionError(message);
    }
    const std::string parent = Dirname(level);
    if (err != ENOENT || attempt > 0 || parent == level) {
      absl::Status status = PathError(err, "create directory", level);
      if (level == CleanPath(dir)) return status;
      return Annotate(status, absl::StrCat("create directory ", Quoted(dir)));
    }
    DCP_RETURN_IF_ERROR(CreateDirRecursive(dir, parent, /*is_target=*/false));
  }
  return absl::OkStatus();  // Not reached.
}

absl::Status PosixFileSystem::RemoveFile(absl::string_view path) {
  if (::unlink(CPath(path).c_str()) != 0) {
    return PathError(errno, "remove file", path);
  }
  return absl::OkStatus();
}

absl::Status PosixFileSystem::RemoveDir(absl::string_view dir) {
  if (::rmdir(CPath(dir).c_str()) != 0) {
    const int err = errno;
    if (err == EEXIST || err == ENOTEMPTY) {
      return absl::FailedPreconditionError(absl::StrCat(
          "remove directory ", Quoted(dir), ": directory not empty"));
    }
    return PathError(err, "remove directory", dir);
  }
  return absl::OkStatus();
}

absl::Status PosixFileSystem::Rename(absl::string_view from,
                                     absl::string_view to) {
  if (::rename(CPath(from).c_str(), CPath(to).c_str()) != 0) {
    const int err = errno;
    const std::string what =
        absl::StrCat("rename ", Quoted(from), " to ", Quoted(to));
    if (err == EEXIST || err == ENOTEMPTY) {
      return absl::FailedPreconditionError(
          absl::StrCat(what, ": target directory not empty"));
    }
    return ErrnoToStatus(err, what);
  }
  return absl::OkStatus();
}

absl::Status PosixFileSystem::SyncDir(absl::string_view dir) {
  int fd;
  do {
    fd = ::open(CPath(dir).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return PathError(errno, "open directory for sync", dir);
  absl::Status status;
  if (::fsync(fd) != 0) status = PathError(errno, "sync directory", dir);
  ::close(fd);
  return status;
}

absl::StatusOr<std::unique_ptr<FileLock>> PosixFileSystem::TryLockFile(
    absl::string_view path, absl::string_view holder_info) {
  int fd;
  do {
    // No O_TRUNC: a refused attempt must leave the holder's info alone.
    fd = ::open(CPath(path).c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW,
                0644);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    if (errno == ELOOP) {
      return absl::FailedPreconditionError(
          absl::StrCat("lock ", Quoted(path), ": is a symbolic link"));
    }
    return PathError(errno, "open lock file", path);
  }
  auto fail = [fd](absl::Status status) {
    ::close(fd);
    return status;
  };
  struct stat st;
  if (::fstat(fd, &st) != 0) return fail(PathError(errno, "stat", path));
  if (!S_ISREG(st.st_mode)) {
    return fail(absl::FailedPreconditionError(
        absl::StrCat("lock ", Quoted(path), ": not a regular file")));
  }
  struct flock lock = {};
  lock.l_type = F_WRLCK;
  lock.l_whence = SEEK_SET;
  lock.l_start = 0;
  lock.l_len = 0;  // The whole file, however long.
  int rc;
  do {
    rc = ::fcntl(fd, F_OFD_SETLK, &lock);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    const int err = errno;
    if (err == EAGAIN || err == EACCES) {
      return fail(LockHeldError(path, ReadHead(fd, 4096)));
    }
    if (err == EINVAL) {
      return fail(absl::UnimplementedError(
          absl::StrCat("lock ", Quoted(path),
                       ": open file description locks (F_OFD_SETLK) are not "
                       "supported here: ",
                       ErrnoText(err))));
    }
    return fail(PathError(err, "lock", path));
  }
  // Closing the descriptor on error releases the lock again.
  absl::Status status = Overwrite(fd, absl::StrCat(holder_info, "\n"), path);
  if (!status.ok()) return fail(status);
  return std::make_unique<PosixFileLock>(std::string(path), fd);
}

}  // namespace dcp
