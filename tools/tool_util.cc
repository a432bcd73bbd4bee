#include "tools/tool_util.h"

#include <stdlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>  // NOLINT(build/c++11)
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "core/status.h"
#include "storage/file_system.h"
#include "storage/fs_storage.h"
#include "storage/posix_file_system.h"

namespace dcp::tools {

std::string HumanBytes(uint64_t bytes) {
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
  double value = static_cast<double>(bytes) / 1024;
  size_t unit = 0;
  while (value >= 1024 && unit + 1 < sizeof(kUnits) / sizeof(kUnits[0])) {
    value /= 1024;
    ++unit;
  }
  return absl::StrFormat("%.2f %s", value, kUnits[unit]);
}

std::string GigabytesPerSecond(uint64_t bytes, absl::Duration elapsed) {
  const double seconds = absl::ToDoubleSeconds(elapsed);
  if (seconds <= 0) return "-";
  return absl::StrFormat("%.2f", static_cast<double>(bytes) / 1e9 / seconds);
}

std::string Seconds(absl::Duration elapsed) {
  return absl::StrFormat("%.3f", absl::ToDoubleSeconds(elapsed));
}

std::string WithThousands(int64_t n) {
  std::string digits = absl::StrCat(n < 0 ? -(n + 1) + uint64_t{1}
                                          : static_cast<uint64_t>(n));
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i != 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return n < 0 ? absl::StrCat("-", out) : out;
}

TextTable::TextTable(std::vector<std::string> header,
                     std::vector<bool> right_aligned)
    : right_aligned_(std::move(right_aligned)) {
  if (!header.empty()) rows_.push_back(std::move(header));
}

void TextTable::AddRow(std::vector<std::string> cells) {
  rows_.push_back(std::move(cells));
}

void TextTable::Print(std::ostream& out, absl::string_view indent) const {
  std::vector<size_t> widths;
  for (const auto& row : rows_) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t c = 0; c < row.size(); ++c) {
      widths[c] = std::max(widths[c], row[c].size());
    }
  }
  for (const auto& row : rows_) {
    std::string line(indent);
    for (size_t c = 0; c < row.size(); ++c) {
      if (c > 0) line += "  ";
      const std::string pad(widths[c] - row[c].size(), ' ');
      const bool right = c < right_aligned_.size() && right_aligned_[c];
      absl::StrAppend(&line, right ? pad : "", row[c], right ? "" : pad);
    }
    line.erase(line.find_last_not_of(' ') + 1);
    out << line << "\n";
  }
}

namespace {

// Length of the valid UTF-8 sequence at `s[i]`, or 0 if invalid.
size_t Utf8SequenceLength(absl::string_view s, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = byte(i);
  size_t n;
  uint32_t min;
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) {
    n = 2;
    min = 0x80;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3;
    min = 0x800;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4;
    min = 0x10000;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  uint32_t cp = c & (0x7F >> n);
  for (size_t k = 1; k < n; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (byte(i + k) & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

}  // namespace

std::string JsonString(absl::string_view text) {
  std::string out = "\"";
  for (size_t i = 0; i < text.size();) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    switch (c) {
      case '"':
        out += "\\\"";
        ++i;
        continue;
      case '\\':
        out += "\\\\";
        ++i;
        continue;
      case '\n':
        out += "\\n";
        ++i;
        continue;
      case '\r':
        out += "\\r";
        ++i;
        continue;
      case '\t':
        out += "\\t";
        ++i;
        continue;
      case '\b':
        out += "\\b";
        ++i;
        continue;
      case '\f':
        out += "\\f";
        ++i;
        continue;
      default:
        break;
    }
    if (c < 0x20 || c == 0x7F) {
      absl::StrAppendFormat(&out, "\\u%04x", c);
      ++i;
      continue;
    }
    const size_t n = Utf8SequenceLength(text, i);
    if (n == 0) {
      out += "\\ufffd";
      ++i;
      continue;
    }
    out.append(text.data() + i, n);
    i += n;
  }
  out += "\"";
  return out;
}

absl::StatusOr<std::vector<FileInfo>> ListFiles(FileSystem& fs,
                                                absl::string_view dir) {
  DCP_ASSIGN_OR_RETURN(std::vector<std::string> names, fs.GetChildren(dir));
  std::vector<FileInfo> files;
  for (std::string& name : names) {
    const std::string path = JoinPath(dir, name);
    DCP_ASSIGN_OR_RETURN(bool is_dir, fs.IsDirectory(path));
    if (is_dir) continue;
    absl::StatusOr<uint64_t> size = fs.FileSize(path);
    // Not a regular file (a FIFO, a socket, ...): not a file to list.
    if (absl::IsFailedPrecondition(size.status())) continue;
    DCP_RETURN_IF_ERROR(size.status());
    files.push_back({std::move(name), *size});
  }
  return files;  // GetChildren sorts.
}

absl::StatusOr<std::vector<FileInfo>> ListCheckpointFiles(
    FileSystem& fs, absl::string_view dir) {
  DCP_ASSIGN_OR_RETURN(std::vector<FileInfo> files, ListFiles(fs, dir));
  files.erase(std::remove_if(files.begin(), files.end(),
                             [](const FileInfo& f) {
                               return f.name == kCheckpointLockFileName;
                             }),
              files.end());
  return files;
}

absl::StatusOr<std::string> MakeTempDir(absl::string_view prefix) {
  const char* base = std::getenv("TMPDIR");
  std::string pattern = absl::StrCat(base != nullptr && *base != '\0' ? base
                                                                      : "/tmp",
                                     "/", prefix, "XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) {
    return ErrnoToStatus(errno, absl::StrCat("mkdtemp ", pattern));
  }
  return pattern;
}

absl::Status RemoveFlatDir(FileSystem& fs, absl::string_view dir) {
  DCP_ASSIGN_OR_RETURN(std::vector<FileInfo> files, ListFiles(fs, dir));
  for (const FileInfo& f : files) {
    DCP_RETURN_IF_ERROR(fs.RemoveFile(JoinPath(dir, f.name)));
  }
  return fs.RemoveDir(dir);
}

Progress::Progress(std::ostream* out, std::string label, int total,
                   std::string unit)
    : out_(out),
      label_(std::move(label)),
      total_(total),
      unit_(std::move(unit)) {}

void Progress::Step() {
  if (out_ == nullptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  ++done_;
  *out_ << "\r" << label_ << "... " << done_ << "/" << total_ << " " << unit_
        << " done" << (done_ >= total_ ? "\n" : "") << std::flush;
}

}  // namespace dcp::tools
