// -----------------------------------------------------------------------------
// File: testing/fault_injecting_file_system.h
// -----------------------------------------------------------------------------
//
// `FaultInjectingFileSystem` wraps any `FileSystem` (usually a
// `MemFileSystem`) and adds, for tests of the storage layer:
//
//   1. Deterministic faults: rules such as "fail the 2nd Sync of any
//      `.distcp` file with Unavailable" (`AddRule`), and optional seeded
//      random faults (`SetRandomFaults`). A failed operation does not reach
//      the wrapped file system.
//   2. An operation log ("create /c/__0_0.distcp", "append /c/__0_0.distcp
//      1180", "sync /c/__0_0.distcp", "rename /c/.metadata.tmp /c/.metadata",
//      "syncdir /c", ...) for asserting write protocols.
//   3. Crash simulation (leveldb's FaultInjectionTestEnv, generalised):
//      `SimulateCrash()` or `CrashAfterOps(n)`, then `Restart()` leaves the
//      wrapped file system in the state a machine would find after a power
//      failure at that point.
//
// Typical crash-consistency test:
//
//   for (int n = 0; n <= total_mutating_ops; ++n) {
//     auto fs = std::make_shared<FaultInjectingFileSystem>(
//         std::make_shared<MemFileSystem>());
//     fs->CrashAfterOps(n);
//     Save(fs, "/c").IgnoreError();     // Fails with Aborted if it crashed.
//     DCP_ASSERT_OK(fs->Restart());
//     // Expect: no checkpoint (NotFound), or the complete new one.
//   }
//
// Operation log format: "<verb> <path>[ <details>]", one entry per attempt,
// including attempts that failed with an injected fault, but not calls
// rejected because the file system is crashed. Verbs (and `FileOp`):
//   create P (kCreate)            NewWritableFile (options are passed on)
//   append P N (kAppend)          WritableFile::Append of N bytes
//   writeat P OFFSET N (kWriteAt) WritableFile::WriteAt of N bytes at OFFSET
//   sync P (kSync)                WritableFile::Sync
//   close P (kClose)              WritableFile::Close
//   open P (kOpen)                NewRandomAccessFile (options passed on)
//   read P OFFSET N (kRead)       RandomAccessFile::Read / ReadInto
//   size P (kSize)                FileSize
//   exists P (kExists)            FileExists / Exists
//   isdir P (kExists)             IsDirectory
//   list P (kList)                GetChildren
//   createdir P (kCreateDir)      CreateDir
//   remove P (kRemove)            RemoveFile
//   removedir P (kRemoveDir)      RemoveDir
//   rename FROM TO (kRename)      Rename
//   syncdir P (kSyncDir)          SyncDir
//   lock P (kLock)                TryLockFile
//   unlock P (kUnlock)            a FileLock released (destroyed); logged
//                                 only, never fails, rules do not apply
// P is the path as the caller spelled it (for file handles, the path they
// were opened with). The mutating operations are create, append, writeat,
// sync, close, createdir, remove, removedir, rename, syncdir and lock.
//
// Crash model. Changes are durable as described in storage/file_system.h:
//   - File data: the durable content of a file is the prefix of its content
//     that the last successful `Sync()` covered. `NewWritableFile` on an
//     existing file truncates it, and the truncation is durable at once (as
//     in leveldb's model): until the next `Sync()` its durable content is
//     empty. A `WriteAt` into that durable prefix shortens it to the
//     overwrite's offset until the next `Sync()`: a crash then cuts the
//     file there. (A real disk would keep the old or the new bytes; the
//     model loses them instead, which a writer that only counts on bytes a
//     later `Sync()` covered survives all the same. Overwrites of bytes not
//     synced yet, which is how dcp patches record headers, are exact.)
//   - Directory entries: each directory has a durable set of entries,
//     updated to the live set by a successful `SyncDir()` of that
//     directory. Until then every entry added (a created file or directory,
//     the target name of a `Rename`), removed (`RemoveFile`, `RemoveDir`,
//     the source name of a `Rename`) or replaced (a `Rename` over an
//     existing name) keeps its previous durable value. So a `Rename` within
//     one directory is durable, atomically, after `SyncDir` of that
//     directory; a `Rename` across directories needs `SyncDir` of both (with
//     only the target synced, both names survive; with only the source
//     synced, neither does). A directory created by `CreateDir` needs
//     `SyncDir` of its parent.
//   - Whatever the wrapped file system holds and was not changed through
//     this wrapper since it was wrapped (or since the last `Restart()`) is
//     durable. It is discovered lazily, when an operation first touches it,
//     so a test may fill the base directly before that (e.g. an existing
//     checkpoint); afterwards, all changes must go through the wrapper.
//   - An entry is durable with its own durable content: a file renamed or
//     removed comes back, after a crash, with the bytes synced before it was
//     unlinked; data synced through an open handle after the file's last
//     name was removed or replaced is not kept. A directory cycle that the
//     per-directory model can produce with cross-directory renames is cut:
//     a directory already being restored is not restored again below
//     itself.
//   - Locks: the lock file is a file written without a sync (see
//     `TryLockFile`): it survives a crash only if its directory entry was
//     synced, and then empty. A crash releases every lock taken through
//     this wrapper, as the kernel does when the holder dies: the wrapped
//     lock is released at once, so the same path can be locked again (after
//     `Restart()`), while the old `FileLock` objects stay alive, answer
//     `CheckHeld` with Aborted and release nothing when destroyed.
// `SimulateCrash()` makes every operation (including calls on files opened
// earlier) fail with Aborted("simulated crash") until `Restart()`.
// `Restart()` rewrites the wrapped file system to its durable state, using
// only ordinary `FileSystem` calls on it (so it also works over a
// `PosixFileSystem` in a temporary directory); it holds the durable bytes
// of the files it rewrites in memory. Files opened before the crash stay
// dead (Aborted) after it. The model identifies entries by their cleaned
// paths, so do not mix relative and absolute spellings of one file.
//
// Thread safety: every method may be called concurrently. Operations are
// serialised by one mutex (held while the wrapped file system works), so
// logs and crash points are consistent; with several threads their order
// is the order in which the threads got the mutex.
//
// Ownership: shares ownership of `base`; files it returns may outlive it.
#ifndef DCP_TESTING_FAULT_INJECTING_FILE_SYSTEM_H_
#define DCP_TESTING_FAULT_INJECTING_FILE_SYSTEM_H_

#include <cstdint>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "storage/file_system.h"

namespace dcp::test {
namespace fault_injecting_file_system_internal {
class State;  // Shared between the file system and its open files.
}  // namespace fault_injecting_file_system_internal

enum class FileOp {
  kCreate,
  kAppend,
  kWriteAt,
  kSync,
  kClose,
  kOpen,
  kRead,
  kRename,
  kSyncDir,
  kRemove,
  kRemoveDir,
  kCreateDir,
  kList,
  kExists,
  kSize,
  kLock,
  kUnlock,
};

// The verb used in the operation log ("create", "syncdir", ...).
absl::string_view FileOpName(FileOp op);
std::ostream& operator<<(std::ostream& os, FileOp op);

// Whether `op` changes the file system (and counts for `CrashAfterOps`).
bool IsMutating(FileOp op);

// Fails calls of `op` on paths containing `path_substring` (for a rename,
// either path): the `nth` matching call (1-based) and the `times - 1`
// matching calls after it (`times` < 0: every call from the nth on). Each
// rule counts its own matching calls. The failed call does not reach the
// wrapped file system and returns `status` with "<verb> <path>: " prefixed
// to its message.
struct FaultRule {
  FileOp op;
  std::string path_substring;  // Empty matches every path.
  int nth = 1;
  int times = 1;
  absl::Status status = absl::UnavailableError("injected fault");
};

// Random faults: each call of one of `ops` (empty: every mutating op) fails
// with probability 1/`one_in`, drawn from a std::mt19937 seeded with
// `seed`, so a single-threaded run is reproducible from the seed.
struct RandomFaultOptions {
  uint32_t seed = 0;
  int one_in = 0;  // <= 0 disables random faults.
  std::vector<FileOp> ops = {};
  absl::Status status = absl::UnavailableError("injected random fault");
};

// The `FileSystem` methods follow the interface's contract, plus the
// faults, log and crash model of the file comment.
class FaultInjectingFileSystem final : public FileSystemWrapper {
 public:
  // Wraps `base` (not null), with no rules, no random faults, no crash
  // scheduled and an empty log.
  explicit FaultInjectingFileSystem(std::shared_ptr<FileSystem> base);
  ~FaultInjectingFileSystem() override;

  // --- Faults -------------------------------------------------------------
  // Adds a rule, with its own count of matching calls starting at 0. Every
  // matching rule counts a call; when several fire, the earliest added
  // decides the status.
  void AddRule(FaultRule rule);
  // Removes every rule (and its count); random faults stay.
  void ClearRules();
  // Replaces the random-fault settings; logs the seed (glog INFO).
  void SetRandomFaults(RandomFaultOptions options);

  // --- Crashes ------------------------------------------------------------
  // Crashes now: every later operation fails with Aborted("simulated
  // crash") until `Restart()`.
  void SimulateCrash();
  // Lets the next `n` mutating operations happen and crashes when the
  // (n+1)-th is attempted (that operation does not happen). Replaces an
  // earlier `CrashAfterOps`. n = 0 (or negative) crashes at the next
  // mutating operation.
  void CrashAfterOps(int n);
  bool crashed() const;
  // Crashes (if not crashed yet), rewrites the wrapped file system to its
  // durable state (see the crash model above), and resumes normal
  // operation with everything now durable. Rules, random faults and the
  // operation log are kept; a pending `CrashAfterOps` is cancelled.
  // Errors: those of the wrapped file system while rewriting it, and
  // Internal if the model cannot restore a directory.
  absl::Status Restart();

  // --- Observation ---------------------------------------------------------
  // Every attempted operation, in order (see the format above).
  std::vector<std::string> op_log() const;
  // Only the mutating operations of `op_log()`.
  std::vector<std::string> mutation_log() const;
  // The number of mutating operations attempted and not refused by a crash
  // (those that failed with an injected fault count). After
  // `CrashAfterOps(n)` has fired, it grew by exactly n.
  int op_count() const;
  // Empties `op_log()` and `mutation_log()`; `op_count()` is kept.
  void ClearOpLog();

  // --- FileSystem ----------------------------------------------------------
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
  // Shared with open files, so they may outlive this object.
  std::shared_ptr<fault_injecting_file_system_internal::State> state_;
};

}  // namespace dcp::test

#endif  // DCP_TESTING_FAULT_INJECTING_FILE_SYSTEM_H_
