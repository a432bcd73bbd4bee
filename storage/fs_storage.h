// -----------------------------------------------------------------------------
// File: storage/fs_storage.h
// -----------------------------------------------------------------------------
//
// `FileSystemWriter` and `FileSystemReader`: checkpoints in a directory, in
// PyTorch's own DCP format (docs/format.md §2-§4), so checkpoints
// move between dcp and PyTorch 2.6+ in both directions:
//
//   <dir>/.metadata                         pickled Metadata, written last
//   <dir>/__<rank>_<n><suffix>.distcp       data files of torch.save records
//   <dir>/.dcp.lock                         held by the saving coordinator
//   <dir>/.dcp.metadata                     binary copy of .metadata that
//                                           loads read when it matches it
//                                           (storage/metadata_sidecar.h)
//   <dir>/<data file>.dcpcrc                CRC-32s of 1 MiB blocks of a
//                                           data file's large records
//                                           (storage/block_checksums.h)
//
// Every item is a complete torch.save-compatible zip record
// (storage/torch_record.h), concatenated in the data files, with its file,
// offset and length recorded in `.metadata`.
//
// Commit and crash safety. Data files of a save get fresh names (a suffix
// unique to the save), so they never overwrite the files the current
// `.metadata` points at. Each rank syncs its data files and the directory;
// then the coordinator writes `.metadata` to a temporary file, syncs it,
// renames it over `.metadata` (an atomic replace) and syncs the directory.
// Only then are stale files removed (below). (Just before `.metadata`, the
// coordinator also renames `.dcp.metadata` into place, unsynced: a sidecar
// that does not match the `.metadata` beside it byte for byte, or fails its
// own CRC-32, is never read.) So a crash at any point leaves
// either the old checkpoint or the new one, complete; a directory without
// `.metadata` is not a checkpoint.
//
// Committed means committed. An error from `Finish` after `.metadata` was
// renamed into place (so far only a failed directory sync) says so in its
// message ("the new checkpoint in /x is committed (.metadata is in place),
// but syncing the directory failed: ...") and is marked
// `CommitOutcome::kCommitted` (core/status.h): the new checkpoint is
// the one a load finds, though it may not survive a machine crash. Every
// other `Finish` error comes before the rename and is unmarked: the
// previous checkpoint is untouched. Failures to remove stale files are
// only logged.
//
// One saver per directory. The coordinator's writer locks `<dir>/.dcp.lock`
// (`FileSystem::TryLockFile`) in `PrepareGlobalPlan`, before it lists the
// directory to choose the save's file names, and holds the lock until
// `Finish` returns (after the stale files are removed), `AbortSave` or
// `Reset` is called, or the writer is destroyed. A second save into the
// directory meanwhile fails in its plan step, before it writes anything,
// with FailedPrecondition: "checkpoint directory /x is being saved by
// another writer (pid 123 on host h since 2026-12-06T02:00:00Z, save <id>;
// lock file /x/.dcp.lock); one save at a time may write a directory". The
// lock dies with its process, so a crashed saver never blocks the next
// one. `Finish` checks that the lock is still held (the lock file was not
// removed or replaced) and refuses to commit otherwise. Do not remove
// `.dcp.lock`; it is never removed by dcp either. Loads take no lock.
//
// Hostile directories. A checkpoint directory may be writable by others, or
// hold whatever a copy left there, so:
//   - Only regular files are read. A FIFO, socket, device or directory
//     named `.metadata` or like a data file fails the load (or
//     `ReadCheckpointMetadata`) at once with FailedPrecondition naming the
//     path and what it is ("... is a FIFO, not a regular file"); nothing
//     ever blocks opening it.
//   - Symbolic links inside the directory (`.metadata`, a data file) are
//     refused (FailedPrecondition "is a symbolic link") unless
//     `FileSystemReaderOptions::allow_symlinks`. The directory's own path,
//     and directories above it, may be links. (A data file in a
//     subdirectory of the checkpoint, which neither dcp nor PyTorch writes,
//     is refused only if the file itself is a link.)
//   - Files are created, never overwritten: each save's data files and its
//     temporary `.metadata.tmp.<token>` get a new random token (64 bits
//     from the kernel's CSPRNG, unrelated to anything in `.metadata` or to
//     earlier saves) and are created exclusively
//     (`WritableFileOptions::exclusive`: O_CREAT|O_EXCL|O_NOFOLLOW). If
//     anything, such as a planted symbolic link, is already at one of
//     those names, it is neither followed, truncated nor removed: the save
//     fails with AlreadyExists naming the file (it does not pick another
//     name), and the previous checkpoint stays current.
//
// Speed. Tensor bytes go from the tensor's memory to the file with no
// intermediate copy, except records of up to 1 MiB, which are assembled in
// memory and appended in batches of about 4 MiB; files are written by
// `thread_count` threads per rank. A load reads, per saved chunk, only the
// record's directory and data.pkl (small records whole, in batched reads;
// when verifying checksums, the 1 MiB blocks of each large record that
// hold what it needs, or the whole record without a usable block checksum
// file), then only the byte ranges
// of the boxes it needs (a row range of a row-major chunk is one range),
// straight into the destination tensors, so peak memory stays near the
// size of the destination tensors.
//
// Errors: NotFound "not a checkpoint: no .metadata in <dir>"; ResourceExhausted
// beyond the limits for untrusted checkpoints (below); AlreadyExists
// when `overwrite` is false and a checkpoint exists; FailedPrecondition when
// another writer is saving into the directory; DataLoss for missing,
// truncated or corrupt files and records (naming the file, the key and the
// offset); InvalidArgument for shape mismatches with the destination.
// A load checks every record it touches (zip structure, dtype and shape
// against `.metadata`, and CRC-32s when verifying) before it writes any
// destination, so such errors leave the destinations unchanged; an I/O
// error while copying, a data file replaced or removed while copying (by a
// concurrent save; see `FileSystemReaderOptions::max_open_files`), or an
// error from the planner, can leave some destinations loaded and others
// not. `.metadata` itself has no checksum
// (PyTorch's format): a corruption of it that still decodes into a
// consistent description of the same files cannot be detected.
//
// Stale files. After a commit (with `remove_stale_files` and `sync_files`),
// the writer removes only files it knows to be dcp's own and unneeded:
//   - the files the previous `.metadata` referenced (it is read before the
//     new one replaces it; if it cannot be read or decoded, none) that the
//     new `.metadata` does not reference;
//   - data files with the names dcp generates, `__<rank>_<n>_<token>.distcp`,
//     of other saves (failed or crashed attempts) that the new `.metadata`
//     does not reference, and the block checksum files (`.dcpcrc`) of the
//     data files removed or of such names;
//   - dcp's temporary `.metadata.tmp.<token>` files.
// (A token is 16 lowercase hex digits, or 8 as earlier dcp versions wrote.)
// Nothing else, ever: not other tools' files, not PyTorch-named
// `__<rank>_<n>.distcp` files that nothing references, not the lock file.
// Without `sync_files` nothing is removed: the new `.metadata` might not
// survive a crash, and the previous checkpoint must. A load of the previous
// checkpoint from the same directory that is still running may fail with
// DataLoss once its files are removed.
//
// Untrusted checkpoints. Reading is bounded by limits with safe defaults
// (`FileSystemReaderOptions`, also for `ReadCheckpointMetadata`), so a hostile
// checkpoint fails with ResourceExhausted instead of exhausting memory:
//   - `.metadata` larger than `max_metadata_bytes` (1 GiB by default) is
//     refused from its size, before any of it is read: "<dir>/.metadata is
//     N bytes, more than the 1073741824 bytes a .metadata may have
//     (max_metadata_bytes); not reading it".
//   - Decoding `.metadata` and each bytes (value) record is bounded by
//     `decode_limits` (storage/pickle.h): a nesting depth, and a decoded-
//     size budget proportional to the input (64 bytes per input byte +
//     64 KiB by default) that counts every string at every reference that
//     is copied. A 1.7 MB `.metadata` whose 20,000 entries all name one
//     memoized 1 MiB key (20 GiB of copies) fails with "decoding
//     <dir>/.metadata: decoding .metadata: pickle value expands to more
//     than N units of decoded size ...". Files PyTorch or dcp write stay far
//     below the budget; raise `budget_per_input_byte` for unusual ones.
//
// Thread safety: as storage/storage.h: one thread drives each writer or
// reader; they use internal threads.
#ifndef DCP_STORAGE_FS_STORAGE_H_
#define DCP_STORAGE_FS_STORAGE_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/metadata.h"
#include "storage/file_system.h"
#include "storage/pickle.h"
#include "storage/storage.h"

namespace dcp {

// The file that makes a directory a checkpoint: PyTorch's `.metadata`,
// written last (see "Commit and crash safety").
inline constexpr absl::string_view kCheckpointMetadataFileName = ".metadata";

// The lock file of a checkpoint directory (see "One saver per directory").
inline constexpr absl::string_view kCheckpointLockFileName = ".dcp.lock";

// The default largest `.metadata` a reader accepts (see "Untrusted
// checkpoints"): 1 GiB, about 10 million keys.
inline constexpr uint64_t kDefaultMaxMetadataBytes = uint64_t{1} << 30;

struct FileSystemWriterOptions {
  // Threads (and data files) per rank when `single_file_per_rank`.
  int thread_count = 1;
  // True: `thread_count` files per rank, items balanced by bytes. False: one
  // file per item.
  bool single_file_per_rank = true;
  // fsync data files, `.metadata` and the directory. Without it there is no
  // crash safety, and no stale file is removed (a crash could lose the new
  // `.metadata`, so the files of the previous checkpoint are kept).
  bool sync_files = true;
  // False: refuse (AlreadyExists) to save into a directory that already
  // holds a checkpoint.
  bool overwrite = true;
  // After a successful commit, remove the files of the replaced checkpoint
  // and dcp's own leftovers of earlier saves (see "Stale files" above).
  // Only with `sync_files`.
  bool remove_stale_files = true;
  // Also write `.dcp.metadata`, a binary copy of `.metadata` that loads
  // read instead of decoding the pickle (storage/metadata_sidecar.h). Best
  // effort: a failure to write it is logged, and loads without it decode
  // `.metadata`.
  bool write_metadata_sidecar = true;
  // Also write, beside each data file with tensor records over 1 MiB, its
  // block checksum file `<data file>.dcpcrc` (storage/block_checksums.h):
  // the CRC-32 of every 1 MiB block of those records' data, computed in the
  // same pass as the records' own CRC-32s, so that verified loads read only
  // the blocks they need. Best effort, like the sidecar.
  bool write_block_checksums = true;
  // Written as Metadata::version; PyTorch 2.6 ignores it.
  std::optional<std::string> metadata_version = std::string("1.0.0");
  // Null: the local POSIX file system.
  std::shared_ptr<FileSystem> file_system;
};

class FileSystemWriter : public StorageWriter {
 public:
  // `path` is the checkpoint directory; it is created if missing.
  static absl::StatusOr<std::unique_ptr<FileSystemWriter>> Create(
      std::string path, FileSystemWriterOptions options = {});
  ~FileSystemWriter() override;

  const std::string& path() const;

  absl::Status Reset(std::optional<std::string> checkpoint_id) override;
  std::optional<StorageMeta> StorageMetaForSave() const override;
  absl::Status SetUp(bool is_coordinator) override;
  absl::StatusOr<SavePlan> PrepareLocalPlan(SavePlan plan) override;
  absl::StatusOr<std::vector<SavePlan>> PrepareGlobalPlan(
      std::vector<SavePlan> plans) override;
  absl::StatusOr<std::vector<WriteResult>> WriteData(
      const SavePlan& plan, SavePlanner& planner) override;
  absl::Status Finish(
      Metadata& metadata,
      const std::vector<std::vector<WriteResult>>& results) override;
  void AbortSave() override;

 private:
  struct State;
  explicit FileSystemWriter(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

struct FileSystemReaderOptions {
  // Threads reading data files.
  int thread_count = 1;
  // The most data files one load holds open at once; at least 1, and
  // `thread_count` is capped at it. A load checks each file it touches (open,
  // check, and close unless it is among the first `max_open_files -
  // thread_count` checked), then copies from each, reopening a closed file.
  // A closed file whose size changed since its check fails the load with
  // DataLoss: before any destination is written if the change is seen then,
  // else when reopened (a concurrent overwrite of the checkpoint). So a load
  // of thousands of files (one file per item, many ranks) stays well under
  // the default `ulimit -n` of 1024, shared with the rest of the process.
  int max_open_files = 64;
  // Check the CRC-32s of what the load reads before any destination is
  // written. A record's tensor data is checked block by block against its
  // block checksum file (`use_block_checksums`), reading only the 1 MiB
  // blocks that hold the byte ranges the load needs; without a usable one
  // the whole record is read (streamed, in bounded memory) and checked
  // against its CRC-32. False reads only the byte ranges needed and checks
  // no checksums.
  bool verify_checksums = true;
  // Use `<data file>.dcpcrc` when verifying, if it decodes, is for a data
  // file of this size and its records match the records' own CRC-32s
  // (otherwise, logged: verify whole records). With block checksums a load
  // verifies what it reads, not what it does not: a damaged byte in a
  // block the load does not need is not reported (`dcp verify` checks
  // everything).
  bool use_block_checksums = true;
  // Read `.dcp.metadata` instead of decoding the `.metadata` pickle when it
  // records the exact bytes of this `.metadata` and passes its CRC-32;
  // otherwise (absent, stale, damaged: the last logged) decode `.metadata`.
  bool use_metadata_sidecar = true;
  // Open `.metadata` and data files that are symbolic links (see "Hostile
  // directories" above). False: refuse them with FailedPrecondition.
  bool allow_symlinks = false;

  // -- Limits for untrusted checkpoints (see "Untrusted checkpoints") --
  // `.metadata` larger than this is refused (ResourceExhausted) before it
  // is read.
  uint64_t max_metadata_bytes = kDefaultMaxMetadataBytes;
  // Nesting depth and decoded-size budget (multiplier and base) for
  // decoding `.metadata` and bytes (value) records.
  DecodeLimits decode_limits;

  // Null: the local POSIX file system.
  std::shared_ptr<FileSystem> file_system;
};

class FileSystemReader : public StorageReader {
 public:
  static absl::StatusOr<std::unique_ptr<FileSystemReader>> Create(
      std::string path, FileSystemReaderOptions options = {});
  ~FileSystemReader() override;

  const std::string& path() const;

  absl::Status Reset(std::optional<std::string> checkpoint_id) override;
  absl::StatusOr<Metadata> ReadMetadata() override;
  // The payload of `.dcp.metadata` as it is when it matches `.metadata`
  // (no decoding), else the decoded pickle, encoded.
  absl::StatusOr<EncodedMetadata> ReadEncodedMetadata() override;
  absl::Status SetUp(const Metadata& metadata, bool is_coordinator) override;
  absl::Status SetUpShared(std::shared_ptr<const Metadata> metadata,
                           bool is_coordinator) override;
  absl::StatusOr<LoadPlan> PrepareLocalPlan(LoadPlan plan) override;
  absl::StatusOr<std::vector<LoadPlan>> PrepareGlobalPlan(
      std::vector<LoadPlan> plans) override;
  absl::Status ReadData(const LoadPlan& plan, LoadPlanner& planner) override;

 private:
  struct State;
  explicit FileSystemReader(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// Reads and decodes `<dir>/.metadata` alone (for tools), as a
// `FileSystemReader` with default options does. NotFound if there is none;
// FailedPrecondition if it is not a regular file or is a symbolic link;
// ResourceExhausted (naming the file) beyond the limits; DataLoss or
// InvalidArgument as storage/metadata_pickle.h.
absl::StatusOr<Metadata> ReadCheckpointMetadata(
    const std::string& dir, std::shared_ptr<FileSystem> file_system = nullptr);

// The same, as a `FileSystemReader` with `options` reads it (only
// `file_system`, `allow_symlinks`, `max_metadata_bytes` and `decode_limits`
// matter).
absl::StatusOr<Metadata> ReadCheckpointMetadata(
    const std::string& dir, const FileSystemReaderOptions& options);

}  // namespace dcp

#endif  // DCP_STORAGE_FS_STORAGE_H_
