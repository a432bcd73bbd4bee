// -----------------------------------------------------------------------------
// File: storage/posix_file_system.h
// -----------------------------------------------------------------------------
//
// `PosixFileSystem`: the production `FileSystem`, over POSIX system calls.
//
//   - `WritableFile::Append` writes straight from the caller's buffer with a
//     write(2) loop (retrying EINTR and short writes, in chunks of at most
//     1 GiB); nothing is copied.
//   - `WritableFile::Sync` is fdatasync(2) (fsync(2) where unavailable).
//   - `RandomAccessFile::Read` is a pread(2) loop; reads may run
//     concurrently. A read past the end of the file is DataLoss.
//   - `Rename` is rename(2); `SyncDir` opens the directory and fsyncs it;
//     `GetChildren` uses opendir/readdir and sorts the names.
//   - Files are opened with O_CLOEXEC and created with mode 0644 (before the
//     umask); directories with 0755.
//   - Only regular files: `NewRandomAccessFile` and `NewWritableFile` open
//     with O_NONBLOCK|O_NOCTTY, so a FIFO or device cannot block the open,
//     then fstat the descriptor and refuse anything but a regular file
//     (open(2)'s ENXIO for a socket or a reader-less FIFO is reported the
//     same way, after an lstat), and only then clear O_NONBLOCK. A
//     non-exclusive `NewWritableFile` truncates (ftruncate) only after that
//     check. `FileSize` is a stat(2), which never blocks.
//   - `RandomAccessFileOptions::follow_symlinks = false` adds O_NOFOLLOW;
//     `WritableFileOptions::exclusive` adds O_EXCL|O_NOFOLLOW (with O_CREAT,
//     a symbolic link at the path, dangling or not, is EEXIST).
//   - `TryLockFile` opens the file with O_CREAT|O_RDWR|O_NOFOLLOW and takes
//     an open-file-description lock on it (fcntl F_OFD_SETLK, a write lock
//     on the whole file). Unlike flock(2) and classic POSIX record locks,
//     it conflicts between two descriptors of one process, and the kernel
//     releases it when the last descriptor of the open file description is
//     closed: when the `FileLock` is destroyed or the process dies. On NFS
//     it is a POSIX lock at the server. `FileLock::CheckHeld` compares the
//     device and inode of the locked descriptor with those at the path.
//
// Thread safety: every method may be called concurrently. The class has no
// state; one instance can serve the whole process.
//
// Errors: see storage/file_system.h. OS errors are mapped by
// `ErrnoToStatus`, and messages name the path and carry strerror's text,
// e.g. `open "/c/x" for writing: No such file or directory`.
#ifndef DCP_STORAGE_POSIX_FILE_SYSTEM_H_
#define DCP_STORAGE_POSIX_FILE_SYSTEM_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "storage/file_system.h"

namespace dcp {

// Each method follows the `FileSystem` contract (storage/file_system.h),
// implemented as described in the file comment.
class PosixFileSystem final : public FileSystem {
 public:
  PosixFileSystem() = default;

  using FileSystem::NewRandomAccessFile;
  using FileSystem::NewWritableFile;
  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(
      absl::string_view path, const WritableFileOptions& options) override;
  absl::StatusOr<std::unique_ptr<RandomAccessFile>> NewRandomAccessFile(
      absl::string_view path, const RandomAccessFileOptions& options) override;
  absl::StatusOr<uint64_t> FileSize(absl::string_view path) override;
  absl::Status FileExists(absl::string_view path) override;
  absl::StatusOr<bool> IsDirectory(absl::string_view path) override;
  absl::StatusOr<std::vector<std::string>> GetChildren(
      absl::string_view dir) override;
  absl::Status CreateDir(absl::string_view dir) override;
  absl::Status RemoveFile(absl::string_view path) override;
  absl::Status RemoveDir(absl::string_view dir) override;
  absl::Status Rename(absl::string_view from, absl::string_view to) override;
  absl::Status SyncDir(absl::string_view dir) override;
  absl::StatusOr<std::unique_ptr<FileLock>> TryLockFile(
      absl::string_view path, absl::string_view holder_info) override;

 private:
  absl::Status CreateDirRecursive(absl::string_view dir,
                                  const std::string& level, bool is_target);
};

// A new `PosixFileSystem`, shared (for the storage drivers, which take a
// `std::shared_ptr<FileSystem>`).
std::shared_ptr<FileSystem> NewPosixFileSystem();

// Converts an errno value into a status whose message is
// "`context`: <strerror text>" (never OK, even for 0). Codes:
//   ENOENT                          NotFound
//   EEXIST                          AlreadyExists
//   ENOTDIR, EISDIR, ENOTEMPTY      FailedPrecondition
//   EACCES, EPERM, EROFS            PermissionDenied
//   ENOSPC, EDQUOT, EMFILE, ENFILE  ResourceExhausted
//   EINVAL, ENAMETOOLONG, ELOOP     InvalidArgument
//   EBADF, EFAULT                   Internal
//   anything else (EIO, ...)        Unavailable
absl::Status ErrnoToStatus(int errno_value, absl::string_view context);

}  // namespace dcp

#endif  // DCP_STORAGE_POSIX_FILE_SYSTEM_H_
