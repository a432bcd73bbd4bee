#include "testing/mem_file_system.h"

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/status.h"
#include "storage/file_system.h"

namespace dcp::test {
namespace mem_file_system_internal {

struct File {
  std::mutex mu;
  std::string data;  // Guarded by mu.
  // The cleaned path naming this file; empty once removed or replaced (a
  // file has at most one name: there are no hard links). Written under the
  // file system's mutex and `mu`; read under either.
  std::string name;
  // Held by a `MemFileLock`. Guarded by mu.
  bool locked = false;
};

}  // namespace mem_file_system_internal

namespace {

using mem_file_system_internal::File;

std::string Quoted(absl::string_view path) {
  return absl::StrCat("\"", path, "\"");
}

bool IsRoot(const std::string& clean) { return clean == "/" || clean == "."; }

// The proper ancestors of a cleaned path, outermost first:
// "/a/b/c" -> {"/", "/a", "/a/b"}; "a/b" -> {".", "a"}.
std::vector<std::string> Ancestors(const std::string& clean) {
  std::vector<std::string> out;
  if (IsRoot(clean)) return out;
  const bool absolute = clean.front() == '/';
  out.push_back(absolute ? "/" : ".");
  for (size_t pos = clean.find('/', 1); pos != std::string::npos;
       pos = clean.find('/', pos + 1)) {
    out.push_back(clean.substr(0, pos));
  }
  return out;
}

// Whether `path` lies strictly inside directory `dir` (both cleaned).
bool IsUnder(const std::string& path, const std::string& dir) {
  if (path == dir) return false;
  if (dir == "/") return path.front() == '/';
  if (dir == ".") return path.front() != '/' && path != ".";
  return absl::StartsWith(path, dir) && path.size() > dir.size() &&
         path[dir.size()] == '/';
}

class MemWritableFile final : public WritableFile {
 public:
  MemWritableFile(std::string path, std::shared_ptr<File> file)
      : path_(std::move(path)), file_(std::move(file)) {}

  absl::Status Append(absl::string_view data) override {
    DCP_RETURN_IF_ERROR(CheckOpen("append to"));
    std::lock_guard<std::mutex> lock(file_->mu);
    file_->data.append(data.data(), data.size());
    size_ += data.size();
    return absl::OkStatus();
  }

  absl::Status WriteAt(uint64_t offset, absl::string_view data) override {
    DCP_RETURN_IF_ERROR(CheckOpen("overwrite"));
    DCP_RETURN_IF_ERROR(CheckWriteAtRange(path_, offset, data.size(), size_));
    std::lock_guard<std::mutex> lock(file_->mu);
    // Another writer may have truncated the file since (MemFileSystem
    // shares one File per path): refuse what is no longer there.
    DCP_RETURN_IF_ERROR(
        CheckWriteAtRange(path_, offset, data.size(), file_->data.size()));
    file_->data.replace(offset, data.size(), data.data(), data.size());
    return absl::OkStatus();
  }

  absl::Status Sync() override { return CheckOpen("sync"); }

  absl::Status Close() override {
    DCP_RETURN_IF_ERROR(CheckOpen("close"));
    closed_ = true;
    return absl::OkStatus();
  }

  uint64_t size() const override { return size_; }

 private:
  absl::Status CheckOpen(absl::string_view what) const {
    if (!closed_) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot ", what, " ", Quoted(path_), ": the file is closed"));
  }

  const std::string path_;
  const std::shared_ptr<File> file_;
  uint64_t size_ = 0;
  bool closed_ = false;
};

class MemFileLock final : public FileLock {
 public:
  MemFileLock(std::string path, std::string clean, std::shared_ptr<File> file)
      : FileLock(std::move(path)),
        clean_(std::move(clean)),
        file_(std::move(file)) {}

  ~MemFileLock() override {
    std::lock_guard<std::mutex> lock(file_->mu);
    file_->locked = false;
  }

  absl::Status CheckHeld() const override {
    std::lock_guard<std::mutex> lock(file_->mu);
    if (file_->name != clean_) return LockLostError(path());
    return absl::OkStatus();
  }

 private:
  const std::string clean_;
  const std::shared_ptr<File> file_;
};

// Sets the name of `file`, which the caller holds the file system's mutex
// for.
void SetName(File& file, std::string name) {
  std::lock_guard<std::mutex> lock(file.mu);
  file.name = std::move(name);
}

class MemRandomAccessFile final : public RandomAccessFile {
 public:
  MemRandomAccessFile(std::string path, std::shared_ptr<File> file,
                      uint64_t size)
      : path_(std::move(path)), file_(std::move(file)), size_(size) {}

  absl::StatusOr<absl::string_view> Read(uint64_t offset, size_t n,
                                         char* scratch) const override {
    std::lock_guard<std::mutex> lock(file_->mu);
    const uint64_t file_size = file_->data.size();
    const uint64_t available = offset < file_size ? file_size - offset : 0;
    if (available < n) return ReadPastEndError(path_, offset, n, available);
    if (n > 0) std::memcpy(scratch, file_->data.data() + offset, n);
    return absl::string_view(scratch, n);
  }

  uint64_t size() const override { return size_; }

 private:
  const std::string path_;
  const std::shared_ptr<File> file_;
  const uint64_t size_;
};

}  // namespace

MemFileSystem::MemFileSystem() : dirs_({"/", "."}) {}

MemFileSystem::~MemFileSystem() = default;

MemFileSystem::Kind MemFileSystem::KindOf(const std::string& clean) const {
  if (files_.count(clean) > 0) return Kind::kFile;
  if (dirs_.count(clean) > 0) return Kind::kDirectory;
  return Kind::kMissing;
}

absl::Status MemFileSystem::CheckAncestors(const std::string& clean,
                                           absl::string_view what,
                                           absl::string_view path) const {
  for (const std::string& ancestor : Ancestors(clean)) {
    switch (KindOf(ancestor)) {
      case Kind::kDirectory:
        continue;
      case Kind::kFile:
        return absl::FailedPreconditionError(
            absl::StrCat(what, " ", Quoted(path), ": ", Quoted(ancestor),
                         " is not a directory"));
      case Kind::kMissing:
        return absl::NotFoundError(
            absl::StrCat(what, " ", Quoted(path), ": directory ",
                         Quoted(ancestor), " does not exist"));
    }
  }
  return absl::OkStatus();
}

bool MemFileSystem::HasChildren(const std::string& clean) const {
  for (const auto& [path, file] : files_) {
    if (IsUnder(path, clean)) return true;
  }
  for (const std::string& dir : dirs_) {
    if (IsUnder(dir, clean)) return true;
  }
  return false;
}

absl::StatusOr<std::unique_ptr<WritableFile>> MemFileSystem::NewWritableFile(
    absl::string_view path, const WritableFileOptions& options) {
  const std::string clean = CleanPath(path);
  std::lock_guard<std::mutex> lock(mu_);
  DCP_RETURN_IF_ERROR(CheckAncestors(
      clean, options.exclusive ? "create new file" : "open for writing", path));
  const Kind kind = KindOf(clean);
  if (options.exclusive && kind != Kind::kMissing) {
    return absl::AlreadyExistsError(absl::StrCat(
        "create new file ", Quoted(path), ": ",
        kind == Kind::kDirectory ? "a directory" : "a regular file",
        " already exists there; not following, truncating or replacing it"));
  }
  std::shared_ptr<File> file;
  switch (kind) {
    case Kind::kDirectory:
      return absl::FailedPreconditionError(
          absl::StrCat("open for writing ", Quoted(path), ": is a directory"));
    case Kind::kFile: {
      file = files_[clean];
      std::lock_guard<std::mutex> file_lock(file->mu);
      file->data.clear();
      break;
    }
    case Kind::kMissing:
      file = std::make_shared<File>();
      file->name = clean;
      files_[clean] = file;
      break;
  }
  return std::make_unique<MemWritableFile>(std::string(path), std::move(file));
}

absl::StatusOr<std::unique_ptr<RandomAccessFile>>
MemFileSystem::NewRandomAccessFile(
    absl::string_view path, const RandomAccessFileOptions& /*options*/) {
  // There are no symbolic links to follow or refuse.
  const std::string clean = CleanPath(path);
  std::lock_guard<std::mutex> lock(mu_);
  DCP_RETURN_IF_ERROR(CheckAncestors(clean, "open for reading", path));
  switch (KindOf(clean)) {
    case Kind::kDirectory:
      return absl::FailedPreconditionError(
          absl::StrCat("open for reading ", Quoted(path), ": is a directory"));
    case Kind::kMissing:
      return absl::NotFoundError(
          absl::StrCat("open for reading ", Quoted(path), ": no such file"));
    case Kind::kFile:
      break;
  }
  std::shared_ptr<File> file = files_[clean];
  uint64_t size;
  {
    std::lock_guard<std::mutex> file_lock(file->mu);
    size = file->data.size();
  }
  return std::make_unique<MemRandomAccessFile>(std::string(path),
                                               std::move(file), size);
}

absl::StatusOr<uint64_t> MemFileSystem::FileSize(absl::string_view path) {
  const std::string clean = CleanPath(path);
  std::lock_guard<std::mutex> lock(mu_);
  DCP_RETURN_IF_ERROR(CheckAncestors(clean, "size of", path));
  switch (KindOf(clean)) {
    case Kind::kDirectory:
      return absl::FailedPreconditionError(
          absl::StrCat("size of ", Quoted(path), ": is a directory"));
    case Kind::kMissing:
      return absl::NotFoundError(
          absl::StrCat("size of ", Quoted(path), ": no such file"));
    case Kind::kFile:
      break;
  }
  const std::shared_ptr<File>& file = files_.at(clean);
  std::lock_guard<std::mutex> file_lock(file->mu);
  return static_cast<uint64_t>(file->data.size());
}

absl::Status MemFileSystem::FileExists(absl::string_view path) {
  return IsDirectory(path).status();
}

absl::StatusOr<bool> MemFileSystem::IsDirectory(absl::string_view path) {
  const std::string clean = CleanPath(path);
  std::lock_guard<std::mutex> lock(mu_);
  DCP_RETURN_IF_ERROR(CheckAncestors(clean, "stat", path));
  switch (KindOf(clean)) {
    case Kind::kDirectory:
      return true;
    case Kind::kFile:
      return false;
    case Kind::kMissing:
      break;
  }
  return absl::NotFoundError(
      absl::StrCat("stat ", Quoted(path), ": no such file or directory"));
}

absl::StatusOr<std::vector<std::string>> MemFileSystem::GetChildren(
    absl::string_view dir) {
  const std::string clean = CleanPath(dir);
  std::lock_guard<std::mutex> lock(mu_);
  DCP_RETURN_IF_ERROR(CheckAncestors(clean, "list directory", dir));
  switch (KindOf(clean)) {
    case Kind::kFile:
      return absl::FailedPreconditionError(
          absl::StrCat("list directory ", Quoted(dir), ": not a directory"));
    case Kind::kMissing:
      return absl::NotFoundError(
          absl::StrCat("list directory ", Quoted(dir), ": no such directory"));
    case Kind::kDirectory:
      break;
  }
  std::set<std::string> names;  // Sorted and unique.
  auto consider = [&](const std::string& path) {
    if (IsRoot(path) || !IsUnder(path, clean)) return;
    if (Dirname(path) == clean) names.insert(Basename(path));
  };
  for (const auto& [path, file] : files_) consider(path);
  for (const std::string& path : dirs_) consider(path);
  return std::vector<std::string>(names.begin(), names.end());
}

absl::Status MemFileSystem::CreateDir(absl::string_view dir) {
  const std::string clean = CleanPath(dir);
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> levels = Ancestors(clean);
  levels.push_back(clean);
  for (size_t i = 0; i < levels.size(); ++i) {
    const bool last = i + 1 == levels.size();
    switch (KindOf(levels[i])) {
      case Kind::kDirectory:
        break;
      case Kind::kFile: {
        const std::string message =
            absl::StrCat("create directory ", Quoted(dir), ": ",
                         Quoted(levels[i]), " exists and is not a directory");
        if (last) return absl::AlreadyExistsError(message);
        return absl::FailedPreconditionError(message);
      }
      case Kind::kMissing:
        dirs_.insert(levels[i]);
        break;
    }
  }
  return absl::OkStatus();
}

absl::Status MemFileSystem::RemoveFile(absl::string_view path) {
  const std::string clean = CleanPath(path);
  std::lock_guard<std::mutex> lock(mu_);
  DCP_RETURN_IF_ERROR(CheckAncestors(clean, "remove file", path));
  switch (KindOf(clean)) {
    case Kind::kDirectory:
      return absl::FailedPreconditionError(
          absl::StrCat("remove file ", Quoted(path), ": is a directory"));
    case Kind::kMissing:
      return absl::NotFoundError(
          absl::StrCat("remove file ", Quoted(path), ": no such file"));
    case Kind::kFile:
      break;
  }
  SetName(*files_.at(clean), std::string());
  files_.erase(clean);
  return absl::OkStatus();
}

absl::Status MemFileSystem::RemoveDir(absl::string_view dir) {
  const std::string clean = CleanPath(dir);
  std::lock_guard<std::mutex> lock(mu_);
  if (IsRoot(clean)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "remove directory ", Quoted(dir), ": cannot remove a root"));
  }
  DCP_RETURN_IF_ERROR(CheckAncestors(clean, "remove directory", dir));
  switch (KindOf(clean)) {
    case Kind::kFile:
      return absl::FailedPreconditionError(
          absl::StrCat("remove directory ", Quoted(dir), ": not a directory"));
    case Kind::kMissing:
      return absl::NotFoundError(absl::StrCat("remove directory ", Quoted(dir),
                                              ": no such directory"));
    case Kind::kDirectory:
      break;
  }
  if (HasChildren(clean)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "remove directory ", Quoted(dir), ": directory not empty"));
  }
  dirs_.erase(clean);
  return absl::OkStatus();
}

absl::Status MemFileSystem::Rename(absl::string_view from,
                                   absl::string_view to) {
  const std::string clean_from = CleanPath(from);
  const std::string clean_to = CleanPath(to);
  const std::string what =
      absl::StrCat("rename ", Quoted(from), " to ", Quoted(to));
  std::lock_guard<std::mutex> lock(mu_);
  if (IsRoot(clean_from) || IsRoot(clean_to)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": cannot rename a root directory"));
  }
  DCP_RETURN_IF_ERROR(CheckAncestors(clean_from, "rename", from));
  DCP_RETURN_IF_ERROR(CheckAncestors(clean_to, "rename to", to));
  const Kind from_kind = KindOf(clean_from);
  const Kind to_kind = KindOf(clean_to);
  if (from_kind == Kind::kMissing) {
    return absl::NotFoundError(
        absl::StrCat(what, ": ", Quoted(from), " does not exist"));
  }
  if (clean_from == clean_to) return absl::OkStatus();

  if (from_kind == Kind::kFile) {
    if (to_kind == Kind::kDirectory) {
      return absl::FailedPreconditionError(
          absl::StrCat(what, ": ", Quoted(to), " is a directory"));
    }
    if (to_kind == Kind::kFile) SetName(*files_.at(clean_to), std::string());
    SetName(*files_.at(clean_from), clean_to);
    files_[clean_to] = files_[clean_from];
    files_.erase(clean_from);
    return absl::OkStatus();
  }

  // Renaming a directory.
  if (IsUnder(clean_to, clean_from)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": cannot move a directory into itself"));
  }
  if (to_kind == Kind::kFile) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, ": ", Quoted(to), " is not a directory"));
  }
  if (to_kind == Kind::kDirectory) {
    if (HasChildren(clean_to)) {
      return absl::FailedPreconditionError(
          absl::StrCat(what, ": directory ", Quoted(to), " is not empty"));
    }
    dirs_.erase(clean_to);
  }
  auto moved = [&](const std::string& path) {
    return absl::StrCat(clean_to, path.substr(clean_from.size()));
  };
  std::map<std::string, std::shared_ptr<File>> files;
  for (auto& [path, file] : files_) {
    if (IsUnder(path, clean_from)) {
      SetName(*file, moved(path));
      files[moved(path)] = std::move(file);
    } else {
      files[path] = std::move(file);
    }
  }
  files_ = std::move(files);
  std::set<std::string> dirs;
  for (const std::string& path : dirs_) {
    dirs.insert(path == clean_from || IsUnder(path, clean_from) ? moved(path)
                                                                : path);
  }
  dirs_ = std::move(dirs);
  return absl::OkStatus();
}

absl::Status MemFileSystem::SyncDir(absl::string_view dir) {
  const std::string clean = CleanPath(dir);
  std::lock_guard<std::mutex> lock(mu_);
  DCP_RETURN_IF_ERROR(CheckAncestors(clean, "sync directory", dir));
  switch (KindOf(clean)) {
    case Kind::kFile:
      return absl::FailedPreconditionError(
          absl::StrCat("sync directory ", Quoted(dir), ": not a directory"));
    case Kind::kMissing:
      return absl::NotFoundError(
          absl::StrCat("sync directory ", Quoted(dir), ": no such directory"));
    case Kind::kDirectory:
      break;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<FileLock>> MemFileSystem::TryLockFile(
    absl::string_view path, absl::string_view holder_info) {
  const std::string clean = CleanPath(path);
  std::lock_guard<std::mutex> lock(mu_);
  DCP_RETURN_IF_ERROR(CheckAncestors(clean, "lock", path));
  std::shared_ptr<File> file;
  switch (KindOf(clean)) {
    case Kind::kDirectory:
      return absl::FailedPreconditionError(
          absl::StrCat("lock ", Quoted(path), ": is a directory"));
    case Kind::kFile:
      file = files_.at(clean);
      break;
    case Kind::kMissing:
      file = std::make_shared<File>();
      file->name = clean;
      files_[clean] = file;
      break;
  }
  std::lock_guard<std::mutex> file_lock(file->mu);
  if (file->locked) return LockHeldError(path, file->data);
  file->locked = true;
  file->data = absl::StrCat(holder_info, "\n");
  return std::make_unique<MemFileLock>(std::string(path), clean,
                                       std::move(file));
}

std::map<std::string, uint64_t> MemFileSystem::ListAllFiles() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::map<std::string, uint64_t> out;
  for (const auto& [path, file] : files_) {
    std::lock_guard<std::mutex> file_lock(file->mu);
    out[path] = file->data.size();
  }
  return out;
}

}  // namespace dcp::test
