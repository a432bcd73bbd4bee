// -----------------------------------------------------------------------------
// File: storage/verify.h
// -----------------------------------------------------------------------------
//
// `VerifyCheckpoint` checks the integrity of a checkpoint directory in
// PyTorch's DCP format (written by dcp or by PyTorch) without loading it
// into a model: it reads `.metadata`, then every record `.metadata`
// references, and reports, per data file, either OK or every problem found,
// with what is wrong and where.
//
//   VerifyOptions options;
//   options.thread_count = 4;
//   DCP_ASSIGN_OR_RETURN(VerifyReport report, VerifyCheckpoint(dir, options));
//   for (const VerifyFileReport& file : report.files) {
//     for (const VerifyProblem& p : file.problems) LOG(ERROR) << p.Describe();
//   }
//   if (!report.ok()) ...
//
// What is checked:
//   `.metadata` (the `metadata` report): every chunk of every tensor and
//     every bytes value has a storage entry; every storage entry belongs to
//     a key and chunk of `state_dict_metadata`; file names stay inside the
//     directory; offsets and lengths are not negative.
//   Data files (one report each, for every file `.metadata` names): the file
//     exists; every record lies inside it; records do not overlap; every
//     byte of the file belongs to a record (dcp and PyTorch write records
//     back to back, so unreferenced bytes would be bytes no check covers).
//   Records: the zip structure (`ReadZipDirectory`); the CRC-32 of every
//     zip entry (streamed in bounded memory); tensor records parse
//     (`ParseTensorRecordHeader`) and hold the dtype and chunk shape
//     `.metadata` says; bytes records parse (`ParseValueRecord`, for records
//     up to `max_value_record_bytes`).
//   Block checksums (`<data file>.dcpcrc`, storage/block_checksums.h), if
//     the data file has them: the file decodes and is for a data file of
//     this size; each of its records describes a large entry of a record
//     (offset, size and CRC-32); and each block checksum is that of its
//     block, checked in the same pass as the entry's CRC-32 (reported only
//     when the entry's own CRC-32 is right, so that damaged data is one
//     "crc mismatch"). A data file without one is fine: loads then verify
//     whole records.
//   Zip layout, so that a flipped byte anywhere in a record is caught, not
//     only in the bytes a CRC covers: the record is exactly its entries
//     (local header, name, extra field, data, data descriptor when flagged)
//     back to back from offset 0, then the central directory, then the end
//     records, with nothing in between or after; each local header agrees
//     with its central-directory entry field by field (version, flags, time,
//     date, name, CRC and sizes unless a data descriptor carries them);
//     extra fields hold only ZIP64 fields (with the right values) and the
//     "FB" alignment padding of 'Z' bytes; data descriptors hold the entry's
//     CRC and sizes; central-directory entries have no comment and zero
//     attributes, with "version made by" equal to "version needed"; the end
//     records (classic, and ZIP64 end record and locator when present) hold
//     exactly the directory's entry count, size and offset (the classic
//     record's fields are the ZIP64 sentinel only when the value does not
//     fit), disk numbers 0 and one disk, no archive comment, and the ZIP64
//     end record is "made by" 45 (dcp) or 0x031e (torch.save). These are
//     the layouts dcp's `ZipLayout` and torch.save write; a record written
//     by another zip writer that `torch.load` would read may be reported as
//     a "zip layout" problem.
//
// Not covered: `.metadata` has no checksum (PyTorch's format), so a
// corruption of it that still decodes into a consistent description of the
// same files cannot be detected; a byte flip that happens to keep a zip
// header valid and equal to its counterpart is impossible (each field is
// either CRC-covered or compared with another copy or a fixed value), but a
// rewrite of both copies of a field is not detected. Files in the
// directory that `.metadata` does not name, other than the block checksum
// files of the data files it names, are not read.
//
// Resources: files are checked by `thread_count` threads, each with at most
// one data file open at a time; each thread holds one 4 MiB read buffer, a
// record's small entries (up to 1 MiB each) and, for bytes records, the
// whole record (at most `max_value_record_bytes`).
//
// Errors: the returned status is an error only when the checkpoint cannot
// be verified at all: InvalidArgument for bad options; NotFound "not a
// checkpoint: no .metadata in <dir>"; DataLoss for an unreadable or
// undecodable `.metadata` (InvalidArgument for a well-formed but
// unsupported one, storage/metadata_pickle.h); FailedPrecondition if
// `.metadata` is not a regular file or is a refused symbolic link;
// ResourceExhausted beyond the default reading limits for untrusted
// checkpoints (storage/fs_storage.h); other file-system errors reading
// `.metadata`.
// Everything wrong with the records and data files is data in the report:
// a problem in one file never stops the checking of the others.
//
// Thread safety: `VerifyCheckpoint` may be called concurrently; it calls
// `progress` from its worker threads, one call at a time.
#ifndef DCP_STORAGE_VERIFY_H_
#define DCP_STORAGE_VERIFY_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/metadata.h"
#include "storage/file_system.h"

namespace dcp {

// What kind of problem was found.
enum class VerifyProblemKind {
  kMetadata,           // .metadata is inconsistent (missing storage entry...).
  kMissingFile,        // A data file .metadata names does not exist.
  kUnreadableFile,     // An I/O error opening or reading a data file.
  kOutsideFile,        // A record extends past the end of its file.
  kOverlap,            // Two records share bytes.
  kUnreferencedBytes,  // Bytes of a data file that belong to no record.
  kZipStructure,       // The record is not a valid archive.
  kZipLayout,          // Valid archive, but a field no CRC covers is wrong.
  kCrcMismatch,        // An entry's bytes do not have the recorded CRC-32.
  kRecordMismatch,     // dtype or shape differ from .metadata.
  kBadRecord,          // data.pkl or the value does not parse.
  kBlockChecksums,     // The data file's .dcpcrc is unusable or wrong.
};

// "crc mismatch", "missing file", ... (also the JSON "kind" of the CLI).
absl::string_view VerifyProblemKindName(VerifyProblemKind kind);

// One problem, with where it is. Optional fields are set when known.
struct VerifyProblem {
  VerifyProblemKind kind = VerifyProblemKind::kMetadata;
  // The data file (relative to the checkpoint), or ".metadata".
  std::string file;
  // What is wrong, e.g. "crc mismatch".
  std::string message;
  // The record's key (fqn) and, for tensor records, the chunk's offsets.
  std::optional<std::string> key;
  std::optional<Shape> chunk_offsets;
  // Where the record starts in `file`.
  std::optional<int64_t> record_offset;
  // The zip entry, e.g. "archive/data/0".
  std::optional<std::string> entry;
  // The byte of `file` where the problem was seen, when it is one place.
  std::optional<uint64_t> byte_offset;
  // The underlying error's text, if any (e.g. what the zip reader found).
  std::string detail;

  // `message` with the location, e.g. `crc mismatch in entry
  // "archive/data/0" of the record of "model.w" chunk [4, 0] at offset 8640
  // (byte 8704)`, then ": " and `detail` if set. Does not name `file`.
  std::string Describe() const;
};

// `file`, ": ", then `Describe()`.
std::ostream& operator<<(std::ostream& os, const VerifyProblem& problem);

struct VerifyFileReport {
  // Relative to the checkpoint directory (".metadata" for the metadata
  // report).
  std::string name;
  bool exists = false;
  uint64_t size = 0;
  // Records `.metadata` places in this file (for `.metadata`: storage
  // entries), and the sum of their lengths.
  int64_t records = 0;
  uint64_t record_bytes = 0;
  std::vector<VerifyProblem> problems;

  bool ok() const { return problems.empty(); }
};

struct VerifyReport {
  std::string dir;
  // Keys of `state_dict_metadata`: tensors and bytes values.
  int64_t tensors = 0;
  int64_t values = 0;
  // Problems of `.metadata` itself.
  VerifyFileReport metadata;
  // Every data file `.metadata` names, sorted by name.
  std::vector<VerifyFileReport> files;

  // Records in the data files (sum of their `records`).
  int64_t num_records() const;
  uint64_t num_file_bytes() const;  // Sum of the data files' sizes.
  // Problems of `.metadata` and of every data file.
  int64_t num_problems() const;
  int64_t num_bad_files() const;  // `.metadata` included.
  bool ok() const { return num_problems() == 0; }
};

// Progress, for long runs. Byte counts are of data files.
struct VerifyProgress {
  int64_t files_done = 0;
  int64_t files_total = 0;
  uint64_t bytes_done = 0;
  uint64_t bytes_total = 0;
};

struct VerifyOptions {
  // Null: the local POSIX file system.
  std::shared_ptr<FileSystem> file_system;
  // Read `.metadata` and data files that are symbolic links (refused by
  // default, as by FileSystemReaderOptions::allow_symlinks: a refused data
  // file link is a problem of its file; a refused `.metadata` link fails
  // the call).
  bool allow_symlinks = false;
  // Threads checking data files in parallel; also the most data files open
  // at once. At least 1.
  int thread_count = 1;
  // Called after each file and every few MiB of data read, from the worker
  // threads but never concurrently. May be empty.
  std::function<void(const VerifyProgress&)> progress;
  // Bytes records up to this size are read whole and parsed; larger ones
  // get only the zip and CRC checks (bounding memory).
  uint64_t max_value_record_bytes = uint64_t{256} << 20;
};

// Verifies the checkpoint in `dir`. See the file comment.
absl::StatusOr<VerifyReport> VerifyCheckpoint(const std::string& dir,
                                              const VerifyOptions& options = {});

}  // namespace dcp

#endif  // DCP_STORAGE_VERIFY_H_
