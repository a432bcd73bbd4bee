#include "storage/file_system.h"

#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/status.h"

namespace dcp {

// -----------------------------------------------------------------------------
// RandomAccessFile / FileSystem
// -----------------------------------------------------------------------------

absl::Status RandomAccessFile::ReadInto(uint64_t offset,
                                        absl::Span<char> dest) const {
  DCP_ASSIGN_OR_RETURN(absl::string_view got,
                       Read(offset, dest.size(), dest.data()));
  if (got.data() != dest.data() && !got.empty()) {
    std::memmove(dest.data(), got.data(), got.size());
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> FileSystem::Exists(absl::string_view path) {
  absl::Status status = FileExists(path);
  if (status.ok()) return true;
  if (absl::IsNotFound(status)) return false;
  return status;
}

std::function<absl::StatusOr<std::string>(uint64_t offset, uint64_t length)>
FileRangeReader(const RandomAccessFile& file, uint64_t base) {
  return [&file, base](uint64_t offset,
                       uint64_t length) -> absl::StatusOr<std::string> {
    std::string bytes(static_cast<size_t>(length), '\0');
    DCP_RETURN_IF_ERROR(file.ReadInto(base + offset, absl::MakeSpan(bytes)));
    return bytes;
  };
}

absl::Status CreateDirDurably(FileSystem& fs, absl::string_view dir) {
  std::vector<std::string> missing;
  std::string current = CleanPath(dir);
  while (true) {
    DCP_ASSIGN_OR_RETURN(bool exists, fs.Exists(current));
    if (exists) break;
    missing.push_back(current);
    std::string parent = Dirname(current);
    if (parent == current) break;
    current = std::move(parent);
  }
  DCP_RETURN_IF_ERROR(fs.CreateDir(dir));
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    DCP_RETURN_IF_ERROR(fs.SyncDir(Dirname(*it)));
  }
  return absl::OkStatus();
}

// -----------------------------------------------------------------------------
// FileSystemWrapper
// -----------------------------------------------------------------------------

FileSystemWrapper::FileSystemWrapper(std::shared_ptr<FileSystem> target)
    : target_(std::move(target)) {}

absl::StatusOr<std::unique_ptr<WritableFile>>
FileSystemWrapper::NewWritableFile(absl::string_view path,
                                   const WritableFileOptions& options) {
  return target_->NewWritableFile(path, options);
}

absl::StatusOr<std::unique_ptr<RandomAccessFile>>
FileSystemWrapper::NewRandomAccessFile(absl::string_view path,
                                       const RandomAccessFileOptions& options) {
  return target_->NewRandomAccessFile(path, options);
}

absl::StatusOr<uint64_t> FileSystemWrapper::FileSize(absl::string_view path) {
  return target_->FileSize(path);
}

absl::Status FileSystemWrapper::FileExists(absl::string_view path) {
  return target_->FileExists(path);
}

absl::StatusOr<bool> FileSystemWrapper::IsDirectory(absl::string_view path) {
  return target_->IsDirectory(path);
}

absl::StatusOr<std::vector<std::string>> FileSystemWrapper::GetChildren(
    absl::string_view dir) {
  return target_->GetChildren(dir);
}

absl::Status FileSystemWrapper::CreateDir(absl::string_view dir) {
  return target_->CreateDir(dir);
}

absl::Status FileSystemWrapper::RemoveFile(absl::string_view path) {
  return target_->RemoveFile(path);
}

absl::Status FileSystemWrapper::RemoveDir(absl::string_view dir) {
  return target_->RemoveDir(dir);
}

absl::Status FileSystemWrapper::Rename(absl::string_view from,
                                       absl::string_view to) {
  return target_->Rename(from, to);
}

absl::Status FileSystemWrapper::SyncDir(absl::string_view dir) {
  return target_->SyncDir(dir);
}

absl::StatusOr<std::unique_ptr<FileLock>> FileSystemWrapper::TryLockFile(
    absl::string_view path, absl::string_view holder_info) {
  return target_->TryLockFile(path, holder_info);
}

// -----------------------------------------------------------------------------
// Path helpers
// -----------------------------------------------------------------------------

std::string JoinPath(absl::string_view a, absl::string_view b) {
  if (a.empty()) return std::string(b);
  if (b.empty()) return std::string(a);
  while (a.size() > 1 && a.back() == '/') a.remove_suffix(1);
  while (!b.empty() && b.front() == '/') b.remove_prefix(1);
  if (a == "/") return absl::StrCat("/", b);
  return absl::StrCat(a, "/", b);
}

std::string CleanPath(absl::string_view path) {
  const bool absolute = !path.empty() && path.front() == '/';
  std::vector<absl::string_view> parts;
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (!parts.empty() && parts.back() != "..") {
        parts.pop_back();
      } else if (!absolute) {
        parts.push_back(part);  // A relative path may climb above ".".
      }                         // "/.." is "/".
      continue;
    }
    parts.push_back(part);
  }
  std::string joined = absl::StrJoin(parts, "/");
  if (absolute) return absl::StrCat("/", joined);
  if (joined.empty()) return ".";
  return joined;
}

std::string Dirname(absl::string_view path) {
  std::string clean = CleanPath(path);
  const size_t slash = clean.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  clean.resize(slash);
  return clean;
}

std::string Basename(absl::string_view path) {
  std::string clean = CleanPath(path);
  if (clean == "/") return clean;
  const size_t slash = clean.rfind('/');
  if (slash == std::string::npos) return clean;
  return clean.substr(slash + 1);
}

// -----------------------------------------------------------------------------
// Whole-file helpers
// -----------------------------------------------------------------------------

absl::Status WriteStringToFile(FileSystem& fs, absl::string_view path,
                               absl::string_view data, bool sync,
                               const WritableFileOptions& options) {
  DCP_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file,
                       fs.NewWritableFile(path, options));
  DCP_RETURN_IF_ERROR(file->Append(data));
  if (sync) DCP_RETURN_IF_ERROR(file->Sync());
  return file->Close();
}

absl::StatusOr<std::string> ReadFileToString(FileSystem& fs,
                                             absl::string_view path) {
  DCP_ASSIGN_OR_RETURN(std::unique_ptr<RandomAccessFile> file,
                       fs.NewRandomAccessFile(path));
  std::string data(file->size(), '\0');
  DCP_RETURN_IF_ERROR(file->ReadInto(0, absl::MakeSpan(data)));
  return data;
}

absl::Status ReadPastEndError(absl::string_view path, uint64_t offset,
                              uint64_t wanted, uint64_t available) {
  return absl::DataLossError(
      absl::StrCat("file \"", path, "\": read of ", wanted, " bytes at offset ",
                   offset, " goes past the end of the file: only ", available,
                   " bytes are available there"));
}

absl::Status CheckWriteAtRange(absl::string_view path, uint64_t offset,
                               uint64_t n, uint64_t size) {
  if (offset <= size && n <= size - offset) return absl::OkStatus();
  return absl::OutOfRangeError(absl::StrCat(
      "file \"", path, "\": cannot overwrite ", n, " bytes at offset ", offset,
      ": only ", size, " bytes have been written"));
}

// -----------------------------------------------------------------------------
// Lock errors
// -----------------------------------------------------------------------------

namespace {
// Enough for any holder line; a lock file is not read further.
constexpr size_t kMaxHolderInfo = 1024;
}  // namespace

absl::Status LockHeldError(absl::string_view path,
                           absl::string_view lock_file_content) {
  absl::string_view info = absl::StripAsciiWhitespace(lock_file_content);
  if (info.size() > kMaxHolderInfo) info = info.substr(0, kMaxHolderInfo);
  std::string holder;
  for (char c : info) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      holder += absl::CHexEscape(absl::string_view(&c, 1));
    } else {
      holder.push_back(c);
    }
  }
  absl::Status status = absl::FailedPreconditionError(absl::StrCat(
      "lock file \"", path, "\" is held by ",
      holder.empty() ? "another holder (it did not say who)" : holder));
  status.SetPayload(kLockHolderPayload, absl::Cord(holder));
  return status;
}

std::optional<std::string> LockHolderInfo(const absl::Status& status) {
  auto payload = status.GetPayload(kLockHolderPayload);
  if (!payload.has_value()) return std::nullopt;
  return std::string(*payload);
}

absl::Status LockLostError(absl::string_view path) {
  return absl::FailedPreconditionError(absl::StrCat(
      "lock file \"", path,
      "\" is no longer held: the file at that path is not the one locked (it "
      "was removed, renamed or replaced), so another holder can lock it"));
}

}  // namespace dcp
