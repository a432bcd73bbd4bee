// -----------------------------------------------------------------------------
// File: storage/file_system.h
// -----------------------------------------------------------------------------
//
// `FileSystem` is the only way the storage layer touches files (the shape of
// leveldb's and rocksdb's `Env`). Production code uses `PosixFileSystem`
// (storage/posix_file_system.h); tests use `test::MemFileSystem` and
// `test::FaultInjectingFileSystem`, which wraps any `FileSystem` to inject
// errors and simulate crashes.
//
// Paths are plain strings. Absolute paths start with '/'; relative paths are
// resolved against the process's working directory (`PosixFileSystem`) or an
// implicit "." directory (`MemFileSystem`). `JoinPath`, `CleanPath`,
// `Dirname` and `Basename` below manipulate them lexically.
//
// Durability model (what survives a machine crash, and what
// `FaultInjectingFileSystem` simulates):
//   - Bytes appended to a `WritableFile` are durable only once a later
//     `Sync()` of that file has returned OK.
//   - A new directory entry (a created file or directory, the new name of a
//     `Rename`) and the disappearance of an entry (`RemoveFile`, `RemoveDir`,
//     the old name of a `Rename`) are durable only once `SyncDir()` of the
//     directory holding the entry has returned OK.
// So the crash-safe way to publish a file is: write `name.tmp`, `Sync()`,
// `Close()`, `Rename("name.tmp", "name")`, `SyncDir(Dirname("name"))`.
//
// Locks. `TryLockFile` takes an exclusive, advisory, non-blocking lock on a
// file and returns a `FileLock` that releases it when destroyed. Locks
// exclude each other between processes and between lock objects of one
// process (the simulator runs many ranks in one process), and die with
// their process, so a crashed holder never leaves a file locked. The holder
// writes a line about itself into the lock file, so a refused caller can
// name it. Releasing a lock leaves its file in place, and lock files must
// not be removed: a holder of a removed lock file and a holder of a new
// file at the same path would not exclude each other (`FileLock::CheckHeld`
// detects that).
//
// Thread safety: all `FileSystem` methods may be called concurrently from
// any number of threads without external synchronisation. A `WritableFile`
// is used by one thread at a time. A `RandomAccessFile` may be read
// concurrently by many threads. `FileLock::CheckHeld` may be called from
// any thread.
//
// Ownership: files returned by a `FileSystem` may outlive it.
//
// Only regular files. `NewRandomAccessFile`, `NewWritableFile` and
// `FileSize` accept only regular files: a directory, FIFO, socket or device
// at the path is FailedPrecondition naming the path and what it is
// (`"/c/.metadata" is a FIFO, not a regular file`), and never blocks (a
// FIFO without a writer would otherwise block an open forever).
//
// Symbolic links. By default the last component of a path is followed if
// it is a symbolic link, like open(2). `RandomAccessFileOptions::
// follow_symlinks = false` refuses it instead (FailedPrecondition "is a
// symbolic link"), and `WritableFileOptions::exclusive` never follows one
// (AlreadyExists). Directories earlier in the path are always followed:
// these options guard the entries of a directory the caller chose, which
// may itself be reached through a link. `MemFileSystem` has no links.
//
// Errors: every implementation returns these codes, with a message that
// names the path (and, for I/O errors, the OS error text):
//   NotFound            the path (or a parent directory) does not exist
//   AlreadyExists       `CreateDir` of a path that exists and is a file;
//                       an exclusive `NewWritableFile` of a path where
//                       anything (even a dangling link) exists
//   FailedPrecondition  the path has the wrong type (a file where a directory
//                       is required or vice versa, anything but a regular
//                       file where a file is read or written, a refused
//                       symbolic link), `RemoveDir` of a
//                       non-empty directory, use of a closed `WritableFile`,
//                       `TryLockFile` of a file another holder has locked
//                       (`LockHeldError`), a lost lock (`LockLostError`)
//   InvalidArgument     a malformed path (e.g. renaming a directory into
//                       itself)
//   DataLoss            a read past the end of a file (short read)
//   OutOfRange          `WritableFile::WriteAt` beyond the bytes appended
//   PermissionDenied    the OS refused access
//   ResourceExhausted   no space left on the device
//   Unavailable         other I/O errors (possibly transient)
//   Internal            a bug (e.g. a bad file descriptor)
#ifndef DCP_STORAGE_FILE_SYSTEM_H_
#define DCP_STORAGE_FILE_SYSTEM_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace dcp {

// A file being written sequentially. Created (or truncated) by
// `FileSystem::NewWritableFile`.
//
// Thread safety: used by one thread at a time.
//
// Errors: every method returns FailedPrecondition after `Close()`.
class WritableFile {
 public:
  WritableFile(const WritableFile&) = delete;
  WritableFile& operator=(const WritableFile&) = delete;

  // Closes the file if `Close()` was not called, ignoring errors.
  virtual ~WritableFile() = default;

  // Appends `data` at the end of the file. `data` may be large (a whole
  // tensor's bytes) and is written from the caller's memory; implementations
  // do not require it to outlive the call. On error, an unknown prefix of
  // `data` may have been written.
  virtual absl::Status Append(absl::string_view data) = 0;

  // Overwrites the `data.size()` bytes at `offset` with `data`. They must be
  // bytes this object appended already (`offset + data.size() <= size()`),
  // e.g. a header patched once the data after it is known. `size()` and
  // where `Append` writes do not change. Like appended bytes, the new bytes
  // are durable only once a later `Sync()` has returned OK; until then a
  // crash may leave the old bytes (or, on a real disk, a mix).
  //
  // Errors: OutOfRange (`CheckWriteAtRange`, nothing written) if the range
  // is not inside the bytes appended so far; on I/O errors an unknown part
  // of `data` may have been written.
  virtual absl::Status WriteAt(uint64_t offset, absl::string_view data) = 0;

  // Makes every byte appended so far durable (fsync). Bytes not covered by
  // a successful `Sync()` may be lost in a crash.
  virtual absl::Status Sync() = 0;

  // Releases the file. Does not imply `Sync()`.
  virtual absl::Status Close() = 0;

  // The number of bytes appended through this object so far (the file's
  // size, since `NewWritableFile` starts from an empty file).
  virtual uint64_t size() const = 0;

 protected:
  WritableFile() = default;
};

// A file read at arbitrary offsets. Created by
// `FileSystem::NewRandomAccessFile`.
//
// Thread safety: `Read`, `ReadInto` and `size` may be called concurrently.
class RandomAccessFile {
 public:
  RandomAccessFile(const RandomAccessFile&) = delete;
  RandomAccessFile& operator=(const RandomAccessFile&) = delete;
  virtual ~RandomAccessFile() = default;

  // Reads exactly `n` bytes starting at `offset`. `scratch` must have room
  // for `n` bytes. The result views exactly `n` bytes, either in `scratch`
  // or in memory owned by this file that stays valid while it is alive.
  //
  // Errors: DataLoss if the file has fewer than `offset + n` bytes (naming
  // the file, the offset, the bytes wanted and the bytes available); I/O
  // errors as documented at the top of this file.
  virtual absl::StatusOr<absl::string_view> Read(uint64_t offset, size_t n,
                                                 char* scratch) const = 0;

  // Reads exactly `dest.size()` bytes at `offset` into `dest`, for example
  // straight into a tensor's memory. Errors as for `Read`.
  absl::Status ReadInto(uint64_t offset, absl::Span<char> dest) const;

  // The file's size when it was opened.
  virtual uint64_t size() const = 0;

 protected:
  RandomAccessFile() = default;
};

// An exclusive lock on a file, taken by `FileSystem::TryLockFile`. The lock
// is released when this object is destroyed (and, for a real file system,
// when the process holding it dies).
//
// Thread safety: `CheckHeld` may be called from any thread.
//
// Ownership: may outlive the file system that made it.
class FileLock {
 public:
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

  // Releases the lock. The lock file stays.
  virtual ~FileLock() = default;

  // The path that was locked, as the caller spelled it.
  const std::string& path() const { return path_; }

  // OK while this object holds the lock on the file now at `path()`.
  // FailedPrecondition (`LockLostError`) if the file at `path()` is no
  // longer the one locked (it was removed, renamed or replaced), since
  // another holder can then lock the new file; Aborted after a simulated
  // crash (`test::FaultInjectingFileSystem`); other codes for I/O errors.
  virtual absl::Status CheckHeld() const = 0;

 protected:
  explicit FileLock(std::string path) : path_(std::move(path)) {}

 private:
  const std::string path_;
};

// How `FileSystem::NewWritableFile` creates its file.
struct WritableFileOptions {
  // True: create a new file, atomically (O_CREAT|O_EXCL|O_NOFOLLOW).
  // AlreadyExists, naming the path and what is there, if anything exists at
  // `path` (a file, a directory, a FIFO, a symbolic link, even a dangling
  // one): it is never followed, truncated or replaced. Use it for files
  // whose names another user could guess and plant a link at.
  // False: create the file or truncate an existing regular file (following
  // a symbolic link).
  bool exclusive = false;
};

// How `FileSystem::NewRandomAccessFile` opens its file.
struct RandomAccessFileOptions {
  // False: FailedPrecondition ("is a symbolic link") if the last component
  // of `path` is a symbolic link, instead of opening its target. Earlier
  // components are followed either way.
  bool follow_symlinks = true;
};

// The file-system interface. See the file comment for the thread-safety,
// durability and error contracts every implementation follows.
//
// Implementations override the two-argument `NewWritableFile` and
// `NewRandomAccessFile` and add `using FileSystem::NewWritableFile;` and
// `using FileSystem::NewRandomAccessFile;` so the one-argument forms stay
// callable through them.
class FileSystem {
 public:
  FileSystem(const FileSystem&) = delete;
  FileSystem& operator=(const FileSystem&) = delete;
  virtual ~FileSystem() = default;

  // Creates `path` (or, unless `options.exclusive`, truncates the regular
  // file there) and opens it for appending. The parent directory must exist
  // (NotFound otherwise). FailedPrecondition if `path` is not a regular
  // file (a directory, a FIFO, ...); AlreadyExists if `options.exclusive`
  // and anything exists at `path`.
  virtual absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(
      absl::string_view path, const WritableFileOptions& options) = 0;
  // Create or truncate (default options).
  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(
      absl::string_view path) {
    return NewWritableFile(path, WritableFileOptions());
  }

  // Opens an existing regular file for reading, without blocking.
  // NotFound if it does not exist; FailedPrecondition if it is not a regular
  // file (a directory, FIFO, socket or device), or if it is a symbolic link
  // and `options.follow_symlinks` is false.
  virtual absl::StatusOr<std::unique_ptr<RandomAccessFile>> NewRandomAccessFile(
      absl::string_view path, const RandomAccessFileOptions& options) = 0;
  // Follows symbolic links (default options).
  absl::StatusOr<std::unique_ptr<RandomAccessFile>> NewRandomAccessFile(
      absl::string_view path) {
    return NewRandomAccessFile(path, RandomAccessFileOptions());
  }

  // The size of the file `path` in bytes (following a symbolic link),
  // without opening it. NotFound if it does not exist; FailedPrecondition
  // if it is not a regular file.
  virtual absl::StatusOr<uint64_t> FileSize(absl::string_view path) = 0;

  // OK if `path` exists (file or directory), NotFound if it does not, and
  // another code if that could not be determined.
  virtual absl::Status FileExists(absl::string_view path) = 0;

  // Whether `path` is a directory. NotFound if it does not exist.
  virtual absl::StatusOr<bool> IsDirectory(absl::string_view path) = 0;

  // The names (not paths) of the entries of directory `dir`, excluding "."
  // and "..", sorted bytewise. NotFound if `dir` does not exist;
  // FailedPrecondition if it is not a directory.
  virtual absl::StatusOr<std::vector<std::string>> GetChildren(
      absl::string_view dir) = 0;

  // Creates `dir` and any missing parents (`mkdir -p`). OK if `dir` already
  // is a directory; AlreadyExists if it exists as a file; FailedPrecondition
  // if a parent is a file. New directories are durable only after `SyncDir`
  // of their parents.
  virtual absl::Status CreateDir(absl::string_view dir) = 0;

  // Removes the file `path`. NotFound if it does not exist;
  // FailedPrecondition if it is a directory.
  virtual absl::Status RemoveFile(absl::string_view path) = 0;

  // Removes the empty directory `dir`. NotFound if it does not exist;
  // FailedPrecondition if it is not a directory or not empty.
  virtual absl::Status RemoveDir(absl::string_view dir) = 0;

  // Renames `from` to `to`, atomically replacing `to` if it exists (rename(2)
  // semantics: a file may replace a file, a directory may replace an empty
  // directory). The change is durable only after `SyncDir` of both parent
  // directories (one, if they are the same). NotFound if `from` or the
  // parent of `to` does not exist; FailedPrecondition on a type mismatch or
  // a non-empty target directory; InvalidArgument when moving a directory
  // into itself.
  virtual absl::Status Rename(absl::string_view from, absl::string_view to) = 0;

  // Makes the entries of directory `dir` durable (fsync of the directory).
  // NotFound if it does not exist; FailedPrecondition if it is a file.
  virtual absl::Status SyncDir(absl::string_view dir) = 0;

  // Locks the file `path` exclusively, without waiting, creating it (empty,
  // mode 0644) if it does not exist. Symbolic links are not followed.
  //   - The lock excludes every other lock object on the same file, in this
  //     process (even through this same `FileSystem`) or any other.
  //   - It is released when the returned object is destroyed, or when the
  //     holding process dies.
  //   - It is advisory: other operations on the file ignore it.
  //   - Once locked, the file's content is replaced by `holder_info` and a
  //     newline (not synced), so that a refused caller can say who holds
  //     it. A refused attempt changes nothing.
  //   - Releasing does not remove the file (and callers should not either:
  //     see the file comment).
  // Errors: FailedPrecondition from `LockHeldError` when another lock object
  // holds the file (its message names the path and the holder's info,
  // which `LockHolderInfo` returns); FailedPrecondition if `path` is a
  // directory or a symbolic link; NotFound if the parent does not exist;
  // Unimplemented if the platform has no suitable locks; I/O errors as
  // documented at the top of this file.
  virtual absl::StatusOr<std::unique_ptr<FileLock>> TryLockFile(
      absl::string_view path, absl::string_view holder_info) = 0;

  // Like `FileExists`, as a bool: true if `path` exists, false on NotFound,
  // and the error otherwise. Not virtual: it calls `FileExists`.
  absl::StatusOr<bool> Exists(absl::string_view path);

 protected:
  FileSystem() = default;
};

// Forwards every call to `target`. Subclass it to override a few methods.
//
// Thread safety: as `target`. Ownership: shares ownership of `target`.
class FileSystemWrapper : public FileSystem {
 public:
  // `target` must not be null.
  explicit FileSystemWrapper(std::shared_ptr<FileSystem> target);

  FileSystem* target() const { return target_.get(); }
  const std::shared_ptr<FileSystem>& shared_target() const { return target_; }

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
  std::shared_ptr<FileSystem> target_;
};

// -----------------------------------------------------------------------------
// Path helpers (lexical; they never touch a file system).
// -----------------------------------------------------------------------------

// Joins two path pieces with exactly one '/' between them: ("/c", "x") and
// ("/c/", "/x") both give "/c/x". If either piece is empty, returns the
// other.
std::string JoinPath(absl::string_view a, absl::string_view b);

// Lexically normalises `path` (like Go's path.Clean): collapses repeated
// '/', removes "." components and trailing '/', and resolves ".." against
// the preceding component ("/.." is "/"). The empty path becomes ".".
std::string CleanPath(absl::string_view path);

// The directory part of `path`, cleaned: "/c/x" -> "/c", "/x" -> "/",
// "x" -> ".", "/" -> "/".
std::string Dirname(absl::string_view path);

// The last component of `path`, cleaned: "/c/x/" -> "x", "/" -> "/".
std::string Basename(absl::string_view path);

// -----------------------------------------------------------------------------
// Whole-file helpers.
// -----------------------------------------------------------------------------

// Creates `dir` and its missing parents, as `CreateDir`, and makes the
// entry of each directory it created durable (`SyncDir` of its parent,
// outermost first). Directories that already existed are left as they are.
// Errors: those of `Exists`, `CreateDir` and `SyncDir`; it stops at the
// first.
absl::Status CreateDirDurably(FileSystem& fs, absl::string_view dir);

// Creates or truncates `path` (as `NewWritableFile` with `options`), writes
// `data`, `Sync()`s if `sync`, and closes it. Not atomic: on error the file
// may be left partly written (publish through a rename for atomicity, see
// the file comment). Errors: those of the calls it makes.
absl::Status WriteStringToFile(FileSystem& fs, absl::string_view path,
                               absl::string_view data, bool sync,
                               const WritableFileOptions& options = {});

// Reads the whole file `path`: as many bytes as its size when opened.
// Errors: those of `NewRandomAccessFile` and `Read` (DataLoss if the file
// shrank meanwhile).
absl::StatusOr<std::string> ReadFileToString(FileSystem& fs,
                                             absl::string_view path);

// A reader of the part of `file` that starts at `base`: it returns the
// `length` bytes at `offset` of that part as a new string, or the read's
// error (DataLoss past the end). For archives inside a file, e.g. a
// record's ZipByteSource. `file` must outlive the reader.
std::function<absl::StatusOr<std::string>(uint64_t offset, uint64_t length)>
FileRangeReader(const RandomAccessFile& file, uint64_t base);

// The DataLoss status every `RandomAccessFile::Read` returns for a read of
// `wanted` bytes at `offset` from file `path`, of which only `available`
// exist.
absl::Status ReadPastEndError(absl::string_view path, uint64_t offset,
                              uint64_t wanted, uint64_t available);

// OK if `n` bytes at `offset` lie inside the first `size` bytes of file
// `path`, else the OutOfRange status every `WritableFile::WriteAt` returns
// for them (naming the file, the range and `size`). Safe against overflow.
absl::Status CheckWriteAtRange(absl::string_view path, uint64_t offset,
                               uint64_t n, uint64_t size);

// -----------------------------------------------------------------------------
// Lock errors (shared by the implementations, so every one reports alike).
// -----------------------------------------------------------------------------

// Payload type URL of a `LockHeldError`: the holder's info.
inline constexpr absl::string_view kLockHolderPayload =
    "type.dcp/file_lock.holder";

// The FailedPrecondition `TryLockFile` returns when the file `path` is
// locked by another holder, given the lock file's content as read (the
// holder's info; possibly empty or partial if the holder is still writing
// it). The message is `lock file "<path>" is held by <holder info>`; the
// info (trimmed, at most 1 KiB, control characters escaped) is also the
// `kLockHolderPayload` payload.
absl::Status LockHeldError(absl::string_view path,
                           absl::string_view lock_file_content);

// The holder's info if `status` (possibly annotated) is a `LockHeldError`;
// empty if the holder did not say. nullopt for any other status.
std::optional<std::string> LockHolderInfo(const absl::Status& status);

// The FailedPrecondition `FileLock::CheckHeld` returns when the file at
// `path` is no longer the locked one.
absl::Status LockLostError(absl::string_view path);

}  // namespace dcp

#endif  // DCP_STORAGE_FILE_SYSTEM_H_
