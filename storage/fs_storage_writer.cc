// FileSystemWriter: saves into a checkpoint directory (storage/fs_storage.h).
// What it shares with the reader is in storage/fs_storage_common.h.

#include <errno.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "ATen/ATen.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/fault_point.h"
#include "core/metadata.h"
#include "core/state_dict.h"
#include "core/status.h"
#include "glog/logging.h"
#include "storage/block_checksums.h"
#include "storage/file_system.h"
#include "storage/fs_storage.h"
#include "storage/fs_storage_common.h"
#include "storage/metadata_pickle.h"
#include "storage/metadata_sidecar.h"
#include "storage/plan_storage_data.h"
#include "storage/posix_file_system.h"
#include "storage/torch_record.h"

namespace dcp {

using storage_internal::DescribeIndex;
namespace fs_storage_internal {
namespace {

constexpr absl::string_view kLockName = kCheckpointLockFileName;
constexpr absl::string_view kMetadataTmpPrefix = ".metadata.tmp";
// The sidecar's temporary file is ".dcp.metadata.<token>.tmp".
constexpr absl::string_view kSidecarTmpSuffix = ".tmp";
constexpr absl::string_view kDataSuffix = ".distcp";
// "Tag:token:prefix", the encoding of SavePlan::storage_data.
constexpr absl::string_view kPlanTag = "dcp-fs-save";
// Records (bytes values, and tensors whose record is at most
// kBatchedRecordBytes) are assembled in memory and appended in batches of
// about kWriteBatchBytes, so that a save of many small tensors makes one
// write per batch instead of several per record; larger tensor records are
// written in one pass over their data (WriteTensorRecordOnePass).
constexpr uint64_t kBatchedRecordBytes = uint64_t{1} << 20;
constexpr uint64_t kWriteBatchBytes = uint64_t{4} << 20;

// ---- Save plan storage data -------------------------------------------------

// "__<rank>_<n>_<token>.distcp".
std::string DataFileName(const storage_internal::PlanStorageData& storage,
                         size_t n) {
  return absl::StrCat(storage.prefix, n, "_", storage.token, kDataSuffix);
}

// A new save token: 16 lowercase hex digits from the kernel's CSPRNG
// (getrandom(2)), so that nothing a user can read (`.metadata`, the names
// of earlier saves' files, the save id) predicts the names of the next
// save's files. Exclusive creation makes a planted file at a guessed name
// fail the save rather than be followed; unpredictable names keep anyone
// from making saves fail that way.
absl::StatusOr<std::string> NewSaveToken() {
  uint64_t bits = 0;
  size_t done = 0;
  char* out = reinterpret_cast<char*>(&bits);
  while (done < sizeof(bits)) {
    const ssize_t n = ::getrandom(out + done, sizeof(bits) - done, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoToStatus(errno, "getrandom for a save token");
    }
    done += static_cast<size_t>(n);
  }
  return absl::StrFormat("%016x", bits);
}

// ---- Writing ----------------------------------------------------------------

// One data file to write: its name and the plan positions of its items, in
// writing order (bytes items first, then tensors).
struct FileJob {
  std::string name;
  std::vector<size_t> items;
};

// Splits the plan's items into files as PyTorch 2.6's
// `_split_by_size_and_type` and `_write_files_from_queue` do (see
// docs/format.md §3.1).
std::vector<FileJob> PlanFiles(
    const SavePlan& plan, const FileSystemWriterOptions& options,
    const storage_internal::PlanStorageData& storage) {
  const std::vector<WriteItem>& items = plan.items;
  auto is_bytes = [&](size_t i) {
    return items[i].type == WriteItemType::kByteIo;
  };
  std::vector<std::vector<size_t>> buckets;
  if (!options.single_file_per_rank) {
    for (size_t i = 0; i < items.size(); ++i) buckets.push_back({i});
  } else if (options.thread_count <= 1) {
    buckets.emplace_back();
    for (size_t i = 0; i < items.size(); ++i) buckets[0].push_back(i);
  } else {
    const size_t bins = static_cast<size_t>(options.thread_count);
    buckets.resize(bins);
    std::vector<size_t> tensors;
    size_t num_bytes = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      if (is_bytes(i)) {
        buckets[num_bytes++ % bins].push_back(i);
      } else {
        tensors.push_back(i);
      }
    }
    auto size_of = [&](size_t i) {
      return items[i].TensorStorageSize().value_or(0);
    };
    std::stable_sort(tensors.begin(), tensors.end(), [&](size_t a, size_t b) {
      return size_of(a) > size_of(b);
    });
    std::vector<int64_t> load(bins, 0);
    for (size_t i : tensors) {
      const size_t target = static_cast<size_t>(
          std::min_element(load.begin(), load.end()) - load.begin());
      buckets[target].push_back(i);
      load[target] += size_of(i);
    }
  }
  std::vector<FileJob> jobs;
  jobs.reserve(buckets.size());
  for (size_t n = 0; n < buckets.size(); ++n) {
    FileJob job;
    job.name = DataFileName(storage, n);
    for (size_t i : buckets[n]) {
      if (is_bytes(i)) job.items.push_back(i);
    }
    for (size_t i : buckets[n]) {
      if (!is_bytes(i)) job.items.push_back(i);
    }
    jobs.push_back(std::move(job));
  }
  return jobs;
}

// Resolves `item` and appends its record to `file` (a tensor record's CRC
// is patched into its header in place once its data is written); sets
// `*length` to the number of bytes appended. With `block_checksums`, adds
// the block checksums of a large tensor record's data to it.
absl::Status WriteItemRecord(const WriteItem& item, SavePlanner& planner,
                             WritableFile& file, std::string& batch,
                             BlockChecksums* block_checksums,
                             uint64_t* length) {
  DCP_ASSIGN_OR_RETURN(Value data, planner.ResolveData(item));
  uint64_t written = 0;
  auto sink = [&](absl::string_view piece) {
    written += piece.size();
    return file.Append(piece);
  };
  if (item.type == WriteItemType::kByteIo) {
    DCP_ASSIGN_OR_RETURN(std::string record, SerializeValueRecord(data));
    *length = record.size();
    batch.append(record);
    return absl::OkStatus();
  }
  const at::Tensor* tensor = data.get_if<at::Tensor>();
  if (tensor == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor item resolved to a ", data.TypeName(), ", not a tensor"));
  }
  if (!tensor->defined()) {
    return absl::InvalidArgumentError(
        "tensor item resolved to an undefined tensor");
  }
  if (item.tensor_data.has_value()) {
    const TensorWriteData& expected = *item.tensor_data;
    if (tensor->sizes() != c10::IntArrayRef(expected.chunk.sizes)) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor item resolved to a tensor of shape ",
                       FormatShape(tensor->sizes()), "; the plan says ",
                       FormatShape(expected.chunk.sizes)));
    }
    if (tensor->scalar_type() != expected.properties.dtype) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor item resolved to a ", DtypeName(tensor->scalar_type()),
          " tensor; the plan says ", DtypeName(expected.properties.dtype)));
    }
  }
  DCP_ASSIGN_OR_RETURN(TensorRecordPlan record, PlanTensorRecord(*tensor));
  if (record.size() <= kBatchedRecordBytes) {
    // Small: assembled in the batch (checksummed from the cache, then
    // copied), appended with its neighbours.
    const size_t start = batch.size();
    DCP_RETURN_IF_ERROR(WriteTensorRecord(record, [&](absl::string_view piece) {
      batch.append(piece.data(), piece.size());
      return absl::OkStatus();
    }));
    *length = batch.size() - start;
    return absl::OkStatus();
  }
  if (!batch.empty()) {
    DCP_RETURN_IF_ERROR(file.Append(batch));
    batch.clear();
  }
  // One pass over the tensor's bytes: each block is checksummed just before
  // it is appended, and the CRC is patched into the record's header after.
  const uint64_t record_start = file.size();
  TensorDataChecksums checksums;
  checksums.block_bytes = kChecksumBlockBytes;
  DCP_ASSIGN_OR_RETURN(uint64_t size,
                       WriteTensorRecordOnePass(
                           *tensor, sink,
                           [&](uint64_t offset, absl::string_view bytes) {
                             return file.WriteAt(record_start + offset, bytes);
                           },
                           kOnePassBlockSize,
                           block_checksums != nullptr ? &checksums : nullptr));
  if (written != size) {
    return absl::InternalError(
        absl::StrCat("wrote ", written, " bytes of a tensor record of ", size));
  }
  if (block_checksums != nullptr) {
    block_checksums->records.push_back(RecordBlockChecksums{
        record_start + checksums.data_offset, checksums.data_size,
        checksums.data_crc32, std::move(checksums.block_crc32)});
  }
  *length = written;
  return absl::OkStatus();
}

// Best effort, since loads verify whole records without it: writes the
// block checksum file of the data file `data_path`, created exclusively
// and not synced (a torn one fails its own CRC-32), logging failures.
void WriteBlockChecksumsFile(FileSystem& fs, const std::string& data_path,
                             const BlockChecksums& checksums) {
  const std::string path = absl::StrCat(data_path, kBlockChecksumsSuffix);
  WritableFileOptions create;
  create.exclusive = true;
  const absl::Status status =
      WriteStringToFile(fs, path, EncodeBlockChecksums(checksums),
                        /*sync=*/false, create);
  if (!status.ok()) {
    LOG(WARNING) << "fs_storage: could not write " << path
                 << " (verified loads will read whole records instead): "
                 << status;
  }
}

// Writes one data file, which must not exist yet: it is created
// exclusively, so a file or symbolic link planted at its name is neither
// followed nor truncated (AlreadyExists). On success `*results` holds one
// result per item of `job`, in job order. `*created` says whether this
// call created the file (which is then the caller's to remove on failure).
absl::Status WriteDataFile(FileSystem& fs, const std::string& dir,
                           const FileJob& job, const SavePlan& plan,
                           SavePlanner& planner, bool sync,
                           bool write_block_checksums,
                           std::vector<std::pair<size_t, WriteResult>>* results,
                           bool* created) {
  const std::string path = JoinPath(dir, job.name);
  WritableFileOptions create;
  create.exclusive = true;
  absl::StatusOr<std::unique_ptr<WritableFile>> opened =
      fs.NewWritableFile(path, create);
  if (!opened.ok()) {
    return Annotate(opened.status(), absl::StrCat("creating data file ", path));
  }
  *created = true;
  WritableFile& file = **opened;
  uint64_t offset = 0;
  // Records not yet appended (see kBatchedRecordBytes).
  std::string batch;
  BlockChecksums block_checksums;
  for (size_t i : job.items) {
    const WriteItem& item = plan.items[i];
    uint64_t length = 0;
    absl::Status status = WriteItemRecord(
        item, planner, file, batch,
        write_block_checksums ? &block_checksums : nullptr, &length);
    if (!status.ok()) {
      return Annotate(status,
                      absl::StrFormat("writing item %s to %s at offset %d",
                                      DescribeIndex(item.index), path, offset));
    }
    WriteResult result;
    result.index = item.index;
    result.size_in_bytes = static_cast<int64_t>(length);
    result.storage_data = StorageInfo{job.name, static_cast<int64_t>(offset),
                                      static_cast<int64_t>(length)};
    results->emplace_back(i, std::move(result));
    offset += length;
    if (batch.size() >= kWriteBatchBytes) {
      DCP_RETURN_IF_ERROR(Annotate(file.Append(batch),
                                   absl::StrCat("writing data file ", path)));
      batch.clear();
    }
  }
  if (!batch.empty()) {
    DCP_RETURN_IF_ERROR(
        Annotate(file.Append(batch), absl::StrCat("writing data file ", path)));
  }
  if (!block_checksums.records.empty()) {
    block_checksums.data_file_size = offset;
    WriteBlockChecksumsFile(fs, path, block_checksums);
  }
  if (sync) {
    DCP_RETURN_IF_ERROR(
        Annotate(file.Sync(), absl::StrCat("syncing data file ", path)));
  }
  return Annotate(file.Close(), absl::StrCat("closing data file ", path));
}

// Best effort: removes `paths`, logging (not returning) failures other than
// NotFound.
void RemoveFiles(FileSystem& fs, const std::vector<std::string>& paths,
                 absl::string_view why) {
  int failed = 0;
  absl::Status first;
  for (const std::string& path : paths) {
    absl::Status status = fs.RemoveFile(path);
    if (!status.ok() && !absl::IsNotFound(status)) {
      if (failed++ == 0) first = status;
    }
  }
  if (failed > 0) {
    LOG(WARNING) << "fs_storage: could not remove " << failed << " of "
                 << paths.size() << " " << why << " (first error: " << first
                 << ")";
  }
}

// Best effort, since loads fall back to the pickle: writes `dir`'s metadata
// sidecar for `pickle` through a temporary file (created exclusively, like
// the .metadata's) and a rename, logging failures.
void WriteMetadataSidecar(FileSystem& fs, const std::string& dir,
                          absl::string_view token, const Metadata& metadata,
                          absl::string_view pickle) {
  const std::string tmp_path = JoinPath(
      dir, absl::StrCat(kMetadataSidecarName, ".", token, kSidecarTmpSuffix));
  const std::string path = JoinPath(dir, kMetadataSidecarName);
  WritableFileOptions create;
  create.exclusive = true;
  absl::StatusOr<std::unique_ptr<WritableFile>> file =
      fs.NewWritableFile(tmp_path, create);
  absl::Status status = file.status();
  if (status.ok()) {
    // Not synced: a sidecar a crash leaves torn or empty fails its checks
    // and is not used, so it needs no durability of its own.
    status = (*file)->Append(EncodeMetadataSidecar(metadata, pickle));
    if (status.ok()) status = (*file)->Close();
    file->reset();
    if (status.ok()) status = fs.Rename(tmp_path, path);
    if (!status.ok())
      RemoveFiles(fs, {tmp_path}, "temporary metadata sidecars");
  }
  if (!status.ok()) {
    LOG(WARNING) << "fs_storage: could not write " << path
                 << " (loads will decode .metadata instead): " << status;
  }
}

// ---- The directory lock -----------------------------------------------------

// Who holds the lock, for the lock file and for the error another writer
// gets: "pid 123 on host h since 2026-12-06T02:00:00Z, save <save id>".
std::string DescribeThisWriter(absl::string_view save_id) {
  char host[256];
  if (::gethostname(host, sizeof(host)) != 0) host[0] = '\0';
  host[sizeof(host) - 1] = '\0';
  return absl::StrFormat(
      "pid %d on host %s since %s, save %s", static_cast<int>(::getpid()),
      host[0] != '\0' ? host : "(unknown)",
      absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now(), absl::UTCTimeZone()),
      save_id);
}

// Locks `<dir>/.dcp.lock` for the save `save_id`. FailedPrecondition naming
// the directory, the lock file and the holder (also as the
// kLockHolderPayload payload) if another writer holds it.
absl::StatusOr<std::unique_ptr<FileLock>> LockDirectory(
    FileSystem& fs, const std::string& dir, absl::string_view save_id) {
  const std::string lock_path = JoinPath(dir, kLockName);
  absl::StatusOr<std::unique_ptr<FileLock>> lock =
      fs.TryLockFile(lock_path, DescribeThisWriter(save_id));
  if (lock.ok()) return lock;
  std::optional<std::string> holder = LockHolderInfo(lock.status());
  if (!holder.has_value()) {
    return Annotate(lock.status(),
                    absl::StrCat("locking checkpoint directory ", dir));
  }
  absl::Status status = absl::FailedPreconditionError(absl::StrCat(
      "checkpoint directory ", dir, " is being saved by another writer (",
      holder->empty() ? "it did not say who" : *holder, "; lock file ",
      lock_path, "); one save at a time may write a directory"));
  status.SetPayload(kLockHolderPayload, absl::Cord(*holder));
  return status;
}

// ---- Stale files ------------------------------------------------------------

// Whether `s` is a save token: 16 lowercase hex digits (`NewSaveToken`),
// or 8 (the tokens of earlier dcp versions, whose leftovers are dcp's to
// remove too).
bool IsToken(absl::string_view s) {
  return (s.size() == 16 || s.size() == 8) &&
         std::all_of(s.begin(), s.end(), [](char c) {
           return absl::ascii_isdigit(static_cast<unsigned char>(c)) ||
                  (c >= 'a' && c <= 'f');
         });
}

bool IsNumber(absl::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return absl::ascii_isdigit(static_cast<unsigned char>(c));
  });
}

// If `name` is a data file name that dcp generates (`DataFileName`:
// "__<rank>_<n>_<token>.distcp"), its token.
std::optional<absl::string_view> DcpDataFileToken(absl::string_view name) {
  if (!absl::ConsumePrefix(&name, "__") ||
      !absl::ConsumeSuffix(&name, kDataSuffix)) {
    return std::nullopt;
  }
  std::vector<absl::string_view> parts = absl::StrSplit(name, '_');
  if (parts.size() != 3 || !IsNumber(parts[0]) || !IsNumber(parts[1]) ||
      !IsToken(parts[2])) {
    return std::nullopt;
  }
  return parts[2];
}

// Whether `name` is a temporary metadata file of dcp,
// ".metadata.tmp.<token>" or ".dcp.metadata.<token>.tmp" (the sidecar's).
bool IsDcpTempMetadataName(absl::string_view name) {
  if (absl::ConsumePrefix(&name, kMetadataTmpPrefix)) {
    return absl::ConsumePrefix(&name, ".") && IsToken(name);
  }
  return absl::ConsumePrefix(&name, kMetadataSidecarName) &&
         absl::ConsumePrefix(&name, ".") &&
         absl::ConsumeSuffix(&name, kSidecarTmpSuffix) && IsToken(name);
}

// The files (cleaned relative paths) the `.metadata` in `dir` references,
// read before a commit replaces it. Empty if there is none, and also if it
// cannot be read or decoded: then nothing is known to be its files.
std::set<std::string> FilesOfCurrentCheckpoint(FileSystem& fs,
                                               const std::string& dir) {
  std::set<std::string> files;
  absl::StatusOr<Metadata> metadata =
      ReadMetadataFile(fs, dir, kDefaultMaxMetadataBytes, DecodeLimits(),
                       /*use_sidecar=*/true);
  if (!metadata.ok()) {
    if (!absl::IsNotFound(metadata.status())) {
      LOG(WARNING) << "fs_storage: the checkpoint being replaced in " << dir
                   << " is unreadable, so none of its files will be removed: "
                   << metadata.status();
    }
    return files;
  }
  for (const auto& [index, info] : metadata->storage_data) {
    files.insert(CleanPath(info.relative_path));
  }
  return files;
}

// After a commit of `committed` (by the save `token`), removes what dcp
// knows to be its own files and no longer needed:
//   - files that `previous` (the replaced `.metadata`) referenced and
//     `committed` does not;
//   - data files named by dcp for another save (leftovers of failed or
//     crashed saves) that `committed` does not reference;
//   - the block checksum files of the data files above;
//   - dcp's temporary metadata files.
// Never any other file: not another tool's, not a PyTorch-named data file
// that nothing references, not `.metadata` or the lock file. Best effort:
// failures are logged, not returned.
void RemoveStaleFiles(FileSystem& fs, const std::string& dir,
                      absl::string_view token, const Metadata& committed,
                      const std::set<std::string>& previous) {
  std::set<std::string> referenced;
  for (const auto& [index, info] : committed.storage_data) {
    referenced.insert(CleanPath(info.relative_path));
  }
  std::set<std::string> stale;
  for (const std::string& name : previous) {
    if (referenced.count(name) == 0 && IsSafeRelativePath(name) &&
        name != "." && name != kCheckpointMetadataFileName &&
        name != kLockName) {
      stale.insert(name);
      // Its block checksum file, if it has one.
      stale.insert(absl::StrCat(name, kBlockChecksumsSuffix));
    }
  }
  absl::StatusOr<std::vector<std::string>> children = fs.GetChildren(dir);
  if (children.ok()) {
    for (const std::string& name : *children) {
      // A data file, or a data file's block checksum file.
      absl::string_view data_name = name;
      absl::ConsumeSuffix(&data_name, kBlockChecksumsSuffix);
      const std::optional<absl::string_view> data_token =
          DcpDataFileToken(data_name);
      if ((data_token.has_value() && *data_token != token &&
           referenced.count(std::string(data_name)) == 0) ||
          IsDcpTempMetadataName(name)) {
        stale.insert(name);
      }
    }
  } else {
    LOG(WARNING) << "fs_storage: not removing leftovers of earlier saves in "
                 << dir << ": " << children.status();
  }
  if (stale.empty()) return;
  std::vector<std::string> paths;
  for (const std::string& name : stale) paths.push_back(JoinPath(dir, name));
  RemoveFiles(fs, paths, "stale checkpoint files");
  // Durable removals: a file of the replaced checkpoint that came back
  // after a crash would be referenced by no `.metadata` any more.
  absl::Status synced = fs.SyncDir(dir);
  if (!synced.ok()) {
    LOG(WARNING) << "fs_storage: syncing " << dir
                 << " after removing stale files: " << synced;
  }
}

}  // namespace
}  // namespace fs_storage_internal

// ---- FileSystemWriter -------------------------------------------------------

struct FileSystemWriter::State {
  std::string path;
  FileSystemWriterOptions options;
  std::shared_ptr<FileSystem> fs;
  std::string save_id;
  bool is_coordinator = false;
  // The save begun by this (coordinator) writer's PrepareGlobalPlan, until
  // its Finish returns or AbortSave: its token, and the directory's lock.
  std::string token;
  std::unique_ptr<FileLock> lock;
};

FileSystemWriter::FileSystemWriter(std::unique_ptr<State> state)
    : state_(std::move(state)) {}

FileSystemWriter::~FileSystemWriter() = default;

absl::StatusOr<std::unique_ptr<FileSystemWriter>> FileSystemWriter::Create(
    std::string path, FileSystemWriterOptions options) {
  DCP_RETURN_IF_ERROR(fs_storage_internal::CheckCreateArgs(
      "FileSystemWriter", path, {{"thread_count", options.thread_count}}));
  auto state = std::make_unique<State>();
  state->path = std::move(path);
  state->fs = options.file_system != nullptr ? options.file_system
                                             : NewPosixFileSystem();
  state->options = std::move(options);
  state->save_id = storage_internal::RandomUuid();
  return std::unique_ptr<FileSystemWriter>(
      new FileSystemWriter(std::move(state)));
}

const std::string& FileSystemWriter::path() const { return state_->path; }

absl::Status FileSystemWriter::Reset(std::optional<std::string> checkpoint_id) {
  if (checkpoint_id.has_value() && !checkpoint_id->empty()) {
    state_->path = *std::move(checkpoint_id);
  }
  state_->save_id = storage_internal::RandomUuid();
  state_->token.clear();
  state_->lock.reset();
  return absl::OkStatus();
}

std::optional<StorageMeta> FileSystemWriter::StorageMetaForSave() const {
  StorageMeta meta;
  meta.checkpoint_id = state_->path;
  meta.save_id = state_->save_id;
  return meta;
}

absl::Status FileSystemWriter::SetUp(bool is_coordinator) {
  state_->is_coordinator = is_coordinator;
  return absl::OkStatus();
}

absl::StatusOr<SavePlan> FileSystemWriter::PrepareLocalPlan(SavePlan plan) {
  State& s = *state_;
  DCP_RETURN_IF_ERROR(
      Annotate(s.options.sync_files ? CreateDirDurably(*s.fs, s.path)
                                    : s.fs->CreateDir(s.path),
               absl::StrCat("creating checkpoint directory ", s.path)));
  if (!s.options.overwrite) {
    const std::string metadata_path =
        JoinPath(s.path, kCheckpointMetadataFileName);
    DCP_ASSIGN_OR_RETURN(bool exists, s.fs->Exists(metadata_path));
    if (exists) {
      return absl::AlreadyExistsError(
          absl::StrCat("a checkpoint already exists in ", s.path, " (",
                       metadata_path, ") and overwrite is off"));
    }
  }
  return plan;
}

absl::StatusOr<std::vector<SavePlan>> FileSystemWriter::PrepareGlobalPlan(
    std::vector<SavePlan> plans) {
  State& s = *state_;
  // A new save ends an unfinished one of this writer, and its lock.
  const std::string previous_token = std::exchange(s.token, std::string());
  s.lock.reset();
  // One save at a time per directory, from before the listing below (which
  // chooses the token) until the commit and the stale-file removal are
  // done. Kept only if this returns OK.
  DCP_ASSIGN_OR_RETURN(
      std::unique_ptr<FileLock> lock,
      fs_storage_internal::LockDirectory(*s.fs, s.path, s.save_id));
  // Data files get names no existing file has, so a save never overwrites
  // the files of the checkpoint it replaces (nor of an unfinished save).
  absl::StatusOr<std::vector<std::string>> children = s.fs->GetChildren(s.path);
  if (!children.ok()) {
    return Annotate(children.status(),
                    absl::StrCat("listing checkpoint directory ", s.path));
  }
  std::string token;
  for (int attempt = 0; token.empty(); ++attempt) {
    if (attempt == 100) {
      return absl::InternalError(absl::StrCat(
          "no unused data file suffix found in ", s.path, " after 100 tries"));
    }
    DCP_ASSIGN_OR_RETURN(std::string candidate,
                         fs_storage_internal::NewSaveToken());
    const std::string in_use = absl::StrCat("_", candidate, ".");
    const bool taken = candidate == previous_token ||
                       std::any_of(children->begin(), children->end(),
                                   [&](const std::string& name) {
                                     return absl::StrContains(name, in_use);
                                   });
    if (!taken) token = std::move(candidate);
  }
  s.token = token;
  s.lock = std::move(lock);
  for (size_t rank = 0; rank < plans.size(); ++rank) {
    plans[rank].storage_data = storage_internal::EncodePlanStorageData(
        fs_storage_internal::kPlanTag, token, rank);
  }
  return plans;
}

absl::StatusOr<std::vector<WriteResult>> FileSystemWriter::WriteData(
    const SavePlan& plan, SavePlanner& planner) {
  DCP_RETURN_IF_ERROR(FaultPoint("fs_storage.write_data"));
  State& s = *state_;
  DCP_ASSIGN_OR_RETURN(storage_internal::PlanStorageData storage,
                       storage_internal::DecodePlanStorageData(
                           fs_storage_internal::kPlanTag, plan.storage_data,
                           "FileSystemWriter"));
  const std::vector<fs_storage_internal::FileJob> jobs =
      fs_storage_internal::PlanFiles(plan, s.options, storage);

  std::vector<std::vector<std::pair<size_t, WriteResult>>> per_file(
      jobs.size());
  // Not vector<bool>: threads set their own elements.
  std::vector<char> created(jobs.size(), 0);
  absl::Status status = FirstError(fs_storage_internal::RunParallel(
      jobs.size(), s.options.thread_count, [&](size_t j) {
        bool made = false;
        absl::Status written = fs_storage_internal::WriteDataFile(
            *s.fs, s.path, jobs[j], plan, planner, s.options.sync_files,
            s.options.write_block_checksums, &per_file[j], &made);
        created[j] = made;
        return written;
      }));
  if (status.ok() && s.options.sync_files && !jobs.empty()) {
    status = Annotate(s.fs->SyncDir(s.path),
                      absl::StrCat("syncing checkpoint directory ", s.path));
  }
  if (!status.ok()) {
    // Nothing references these files; a later save would remove them too.
    // Only those this save created: whatever was at the name of one it
    // could not create is not dcp's.
    std::vector<std::string> paths;
    for (size_t j = 0; j < jobs.size(); ++j) {
      if (!created[j]) continue;
      paths.push_back(JoinPath(s.path, jobs[j].name));
      paths.push_back(
          JoinPath(s.path, absl::StrCat(jobs[j].name, kBlockChecksumsSuffix)));
    }
    fs_storage_internal::RemoveFiles(*s.fs, paths,
                                     "data files of a failed save");
    return status;
  }
  std::vector<std::optional<WriteResult>> by_item(plan.items.size());
  for (auto& file_results : per_file) {
    for (auto& [i, result] : file_results) by_item[i] = std::move(result);
  }
  std::vector<WriteResult> results;
  results.reserve(by_item.size());
  for (std::optional<WriteResult>& result : by_item) {
    results.push_back(*std::move(result));
  }
  return results;
}

absl::Status FileSystemWriter::Finish(
    Metadata& metadata, const std::vector<std::vector<WriteResult>>& results) {
  State& s = *state_;
  if (s.token.empty() || s.lock == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "Finish of the checkpoint in ", s.path,
        " without a save begun by PrepareGlobalPlan on this writer (or "
        "after AbortSave)"));
  }
  // The save ends here: the lock is released when this returns, after the
  // stale files are removed.
  const std::unique_ptr<FileLock> lock = std::move(s.lock);
  const std::string token = std::exchange(s.token, std::string());
  DCP_RETURN_IF_ERROR(FaultPoint("fs_storage.finish"));
  // Someone removed or replaced the lock file, so another writer may be
  // saving here too: committing could publish files it removes.
  DCP_RETURN_IF_ERROR(Annotate(
      lock->CheckHeld(),
      absl::StrCat("not committing the checkpoint in ", s.path,
                   ": this save no longer holds the directory's lock")));
  const std::string metadata_path =
      JoinPath(s.path, kCheckpointMetadataFileName);
  if (!s.options.overwrite) {
    DCP_ASSIGN_OR_RETURN(bool exists, s.fs->Exists(metadata_path));
    if (exists) {
      return absl::AlreadyExistsError(
          absl::StrCat("a checkpoint already exists in ", s.path, " (",
                       metadata_path, ") and overwrite is off"));
    }
  }
  // Without synced files the new .metadata may not survive a crash, so the
  // files of the one it replaces must.
  const bool remove_stale =
      s.options.remove_stale_files && s.options.sync_files;
  // Which files are the replaced checkpoint's is known only before the
  // rename below replaces its .metadata.
  std::set<std::string> previous_files;
  if (remove_stale) {
    previous_files =
        fs_storage_internal::FilesOfCurrentCheckpoint(*s.fs, s.path);
  }

  std::map<MetadataIndex, StorageInfo> storage_data;
  for (const std::vector<WriteResult>& rank_results : results) {
    for (const WriteResult& result : rank_results) {
      storage_data.insert_or_assign(result.index, result.storage_data);
    }
  }
  metadata.storage_data = std::move(storage_data);
  metadata.storage_meta = StorageMetaForSave();
  metadata.version = s.options.metadata_version;
  DCP_ASSIGN_OR_RETURN(std::string pickle, EncodeMetadataPickle(metadata));
  if (s.options.write_metadata_sidecar) {
    // Before .metadata, so a committed checkpoint has its sidecar; a crash
    // in between leaves a sidecar that describes no .metadata, never used.
    fs_storage_internal::WriteMetadataSidecar(*s.fs, s.path, token, metadata,
                                              pickle);
  }

  // Publish: temporary file, sync, atomic rename, directory sync. The
  // temporary file is created exclusively, like the data files: whatever
  // is already at its name (a planted symbolic link) is neither followed
  // nor removed, and the save fails (AlreadyExists).
  const std::string tmp_path = JoinPath(
      s.path,
      absl::StrCat(fs_storage_internal::kMetadataTmpPrefix, ".", token));
  WritableFileOptions create;
  create.exclusive = true;
  absl::StatusOr<std::unique_ptr<WritableFile>> tmp_file =
      s.fs->NewWritableFile(tmp_path, create);
  if (!tmp_file.ok()) {
    return Annotate(tmp_file.status(), absl::StrCat("creating ", tmp_path));
  }
  absl::Status status = (*tmp_file)->Append(pickle);
  if (status.ok() && s.options.sync_files) status = (*tmp_file)->Sync();
  if (status.ok()) status = (*tmp_file)->Close();
  status = Annotate(status, absl::StrCat("writing ", tmp_path));
  if (status.ok()) {
    status = Annotate(s.fs->Rename(tmp_path, metadata_path),
                      absl::StrCat("renaming ", tmp_path, " to .metadata"));
  }
  if (!status.ok()) {
    tmp_file->reset();
    fs_storage_internal::RemoveFiles(*s.fs, {tmp_path},
                                     "temporary metadata files");
    return status;
  }
  // From here on the new checkpoint is in place: an error must say so, or
  // a caller would take the previous checkpoint for the current one.
  if (s.options.sync_files) {
    absl::Status synced = s.fs->SyncDir(s.path);
    if (!synced.ok()) {
      // Not removing stale files either: the rename may not be durable.
      return WithCommitOutcome(
          Annotate(synced,
                   absl::StrCat("the new checkpoint in ", s.path,
                                " is committed (.metadata is in place), but "
                                "syncing the directory failed")),
          CommitOutcome::kCommitted);
    }
  }

  if (remove_stale) {
    fs_storage_internal::RemoveStaleFiles(*s.fs, s.path, token, metadata,
                                          previous_files);
  }
  return absl::OkStatus();
}

void FileSystemWriter::AbortSave() {
  state_->lock.reset();
  state_->token.clear();
}

}  // namespace dcp
