// -----------------------------------------------------------------------------
// File: tools/tool_util.h
// -----------------------------------------------------------------------------
//
// Small helpers shared by the `dcp` tool's commands: human-readable sizes
// and rates, aligned text tables, JSON string escaping, directory listings,
// temporary directories and terminal progress lines.
//
// Thread safety: free functions are thread-safe; `Progress` may be stepped
// from several threads; `TextTable` is used by one thread.
#ifndef DCP_TOOLS_TOOL_UTIL_H_
#define DCP_TOOLS_TOOL_UTIL_H_

#include <cstdint>
#include <mutex>  // NOLINT(build/c++11): Debian's Abseil lacks TSan support
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "storage/file_system.h"

namespace dcp::tools {

// "512 B", "1.5 KiB", "31.25 MiB", "2.00 GiB".
std::string HumanBytes(uint64_t bytes);

// Decimal gigabytes per second ("1.23"), or "-" for a zero duration.
std::string GigabytesPerSecond(uint64_t bytes, absl::Duration elapsed);

// Seconds with millisecond resolution ("0.123").
std::string Seconds(absl::Duration elapsed);

// 1234567 -> "1,234,567".
std::string WithThousands(int64_t n);

// A table printed with columns padded to their widest cell. Columns listed
// in `right_aligned` are right-aligned (numbers); the others left-aligned.
// An empty `header` means no header row.
class TextTable {
 public:
  explicit TextTable(std::vector<std::string> header,
                     std::vector<bool> right_aligned = {});
  void AddRow(std::vector<std::string> cells);
  // Rows in insertion order, each line indented by `indent`, columns
  // separated by two spaces, trailing spaces trimmed.
  void Print(std::ostream& out, absl::string_view indent = "") const;

 private:
  std::vector<std::vector<std::string>> rows_;
  std::vector<bool> right_aligned_;
};

// `text` as a JSON string literal, quotes included. Control characters,
// quotes and backslashes are escaped; valid UTF-8 passes through, and each
// byte of invalid UTF-8 becomes U+FFFD.
std::string JsonString(absl::string_view text);

struct FileInfo {
  std::string name;  // Relative to the directory.
  uint64_t size = 0;
};

// The regular files directly inside `dir`, sorted by name (subdirectories,
// FIFOs, sockets and devices are skipped). Errors from the file system
// (NotFound, ...).
absl::StatusOr<std::vector<FileInfo>> ListFiles(FileSystem& fs,
                                                absl::string_view dir);

// The files of the checkpoint in `dir`: `ListFiles` without the writers'
// lock file (`kCheckpointLockFileName`, storage/fs_storage.h), which is not
// part of the checkpoint.
absl::StatusOr<std::vector<FileInfo>> ListCheckpointFiles(
    FileSystem& fs, absl::string_view dir);

// Creates a fresh directory "<$TMPDIR or /tmp>/<prefix>XXXXXX".
absl::StatusOr<std::string> MakeTempDir(absl::string_view prefix);

// Removes the regular files directly inside `dir`, then `dir` itself (which
// must then be empty). For directories this tool created.
absl::Status RemoveFlatDir(FileSystem& fs, absl::string_view dir);

// "saving... 3/4 ranks done" lines on a terminal. With a null stream every
// call does nothing. Each Step() rewrites the line ("\r"); the last one
// ends it with a newline.
class Progress {
 public:
  // `out` (may be null) must outlive this object.
  Progress(std::ostream* out, std::string label, int total,
           std::string unit = "ranks");
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // One more unit done.
  void Step();

 private:
  std::ostream* const out_;
  const std::string label_;
  const int total_;
  const std::string unit_;
  std::mutex mu_;
  int done_ = 0;  // Guarded by mu_.
};

}  // namespace dcp::tools

#endif  // DCP_TOOLS_TOOL_UTIL_H_
