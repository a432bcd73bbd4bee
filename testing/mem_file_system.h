// -----------------------------------------------------------------------------
// File: testing/mem_file_system.h
// -----------------------------------------------------------------------------
//
// `MemFileSystem`: an in-memory `FileSystem` for tests (leveldb's memenv
// idea). It is fast and deterministic, and behaves like `PosixFileSystem`:
// the same error codes in the same cases (storage/file_system.h), rename(2)
// semantics for `Rename` (including directories), create-or-truncate for
// `NewWritableFile` (create-only, AlreadyExists otherwise, when
// exclusive), and a parent directory must exist before a file or
// directory can be created in it. It starts with two empty root
// directories: "/" for absolute paths and "." for relative ones. Paths are
// normalised with `CleanPath`, so "/c//x" and "/c/./x" are "/c/x"; ".." is
// resolved lexically ("/c/e/../x" is "/c/x" even if "/c/e" does not exist).
//
// Like POSIX, an open `WritableFile` or `RandomAccessFile` keeps referring
// to the same file after it is renamed or removed, and `NewWritableFile` on
// an existing path truncates that same file.
//
// `TryLockFile` keeps the lock state with the file itself, so locks behave
// like POSIX open-file-description locks: two lock objects on one file
// conflict (in one process; there is no other), a removed or replaced lock
// file no longer excludes a new file at its path, and locks may outlive the
// file system.
//
// Every file is a regular file and there are no symbolic links, so
// `RandomAccessFileOptions::follow_symlinks` changes nothing.
//
// `Sync` and `SyncDir` only check their arguments: nothing is ever lost. To
// test crash behaviour wrap it in `test::FaultInjectingFileSystem`.
//
// Thread safety: every method may be called concurrently; files follow the
// contract of storage/file_system.h.
//
// Ownership: files returned by it may outlive it.
#ifndef DCP_TESTING_MEM_FILE_SYSTEM_H_
#define DCP_TESTING_MEM_FILE_SYSTEM_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "storage/file_system.h"

namespace dcp::test {
namespace mem_file_system_internal {
struct File;  // Shared between the file system and open files.
}  // namespace mem_file_system_internal

// Each `FileSystem` method follows the interface's contract
// (storage/file_system.h) as described in the file comment.
class MemFileSystem final : public FileSystem {
 public:
  // An empty file system: only the directories "/" and ".".
  MemFileSystem();
  ~MemFileSystem() override;

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

  // Every file (not directory) and its size, keyed by cleaned path, in
  // sorted order. For test diagnostics.
  std::map<std::string, uint64_t> ListAllFiles() const;

 private:
  using File = mem_file_system_internal::File;

  enum class Kind { kMissing, kFile, kDirectory };

  Kind KindOf(const std::string& clean) const;
  // NotFound if an ancestor of `clean` is missing, FailedPrecondition if one
  // is a file. `what` and `path` are for the message.
  absl::Status CheckAncestors(const std::string& clean, absl::string_view what,
                              absl::string_view path) const;
  bool HasChildren(const std::string& clean) const;

  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<File>> files_;  // Guarded by mu_.
  std::set<std::string> dirs_;                          // Guarded by mu_.
};

}  // namespace dcp::test

#endif  // DCP_TESTING_MEM_FILE_SYSTEM_H_
