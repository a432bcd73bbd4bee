#include "storage/fs_storage.h"

#include <errno.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <system_error>  // NOLINT(build/c++11)
#include <thread>        // NOLINT(build/c++11)
#include <utility>
#include <variant>
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
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "checkpoint/fault_point.h"
#include "checkpoint/metadata.h"
#include "checkpoint/metadata_codec.h"
#include "checkpoint/state_dict.h"
#include "checkpoint/status.h"
#include "checkpoint/torch_status.h"
#include "glog/logging.h"
#include "storage/block_checksums.h"
#include "storage/crc32.h"
#include "storage/file_system.h"
#include "storage/metadata_pickle.h"
#include "storage/metadata_sidecar.h"
#include "storage/posix_file_system.h"
#include "storage/torch_record.h"
#include "storage/zip.h"

namespace dcp {
namespace fs_storage_internal {
namespace {

constexpr absl::string_view kMetadataName = kCheckpointMetadataFileName;
constexpr absl::string_view kLockName = kCheckpointLockFileName;
constexpr absl::string_view kMetadataTmpPrefix = ".metadata.tmp";
// The sidecar's temporary file is ".dcp.metadata.<token>.tmp".
constexpr absl::string_view kSidecarTmpSuffix = ".tmp";
constexpr absl::string_view kDataSuffix = ".distcp";
// "Tag:token:prefix", the encoding of SavePlan::storage_data.
constexpr absl::string_view kPlanTag = "dcp-fs-save";
// Block checksums are verified in reads of at most this size.
constexpr uint64_t kCrcChunkBytes = uint64_t{4} << 20;
// Zip entries up to this size (data.pkl, version, ...) are read through the
// record's cached `ZipByteSource`; larger ones are streamed.
constexpr uint64_t kSmallEntryBytes = uint64_t{1} << 20;
constexpr absl::string_view kChecksumMismatch = "checksum mismatch";
// Records (bytes values, and tensors whose record is at most
// kBatchedRecordBytes) are assembled in memory and appended in batches of
// about kWriteBatchBytes, so that a save of many small tensors makes one
// write per batch instead of several per record; larger tensor records are
// written in one pass over their data (WriteTensorRecordOnePass).
constexpr uint64_t kBatchedRecordBytes = uint64_t{1} << 20;
constexpr uint64_t kWriteBatchBytes = uint64_t{4} << 20;
// The checking phase reads records in batches: one read covers a run of
// the records a load touches in a file, at most kBatchBytes long with gaps
// of at most kMaxBatchGapBytes, so that a load of many small tensors makes
// one read per batch instead of several per record (zip directory,
// data.pkl, entries). Batched are the records it reads in full anyway
// (all up to kBatchBytes when verifying checksums) and, without
// verification, records of up to kSmallRecordBytes, for which a few reads
// of their parts would cost more than reading them whole.
constexpr uint64_t kBatchBytes = uint64_t{4} << 20;
constexpr uint64_t kMaxBatchGapBytes = uint64_t{4} << 10;
constexpr uint64_t kSmallRecordBytes = uint64_t{64} << 10;

// A random RFC 4122 version-4 UUID string, as Python's str(uuid4()).
std::string RandomUuid() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  uint64_t hi = rng();
  uint64_t lo = rng();
  hi = (hi & ~uint64_t{0xF000}) | uint64_t{0x4000};            // Version 4.
  lo = (lo & ~(uint64_t{0xC} << 60)) | (uint64_t{0x8} << 60);  // Variant.
  return absl::StrFormat("%08x-%04x-%04x-%04x-%012x", hi >> 32,
                         (hi >> 16) & 0xFFFF, hi & 0xFFFF, lo >> 48,
                         lo & uint64_t{0xFFFFFFFFFFFF});
}

// `"fqn"` or `"fqn" offset [0, 4]`, for error messages.
std::string DescribeIndex(const MetadataIndex& index) {
  std::string out = absl::StrFormat("\"%s\"", absl::CHexEscape(index.fqn));
  if (index.offset.has_value()) {
    absl::StrAppend(&out, " offset ", FormatShape(*index.offset));
  }
  return out;
}

// ---- Threads ----------------------------------------------------------------

// Runs `fn(i)` for every i in [0, n) on up to `threads` threads, the calling
// thread included, and returns each call's status by i. The calling
// thread's fault-point handler is installed on the helper threads. An
// exception escaping `fn` becomes an Internal status. Every helper thread
// is joined before returning.
std::vector<absl::Status> RunParallel(
    size_t n, int threads, const std::function<absl::Status(size_t)>& fn) {
  std::vector<absl::Status> statuses(n);
  if (n == 0) return statuses;
  std::atomic<size_t> next{0};
  FaultPointHandler* handler = CurrentFaultPointHandler();
  auto work = [&] {
    ScopedFaultPointHandler scoped(handler);
    for (size_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) {
      try {
        statuses[i] = fn(i);
      } catch (const std::exception& e) {
        statuses[i] = absl::InternalError(
            absl::StrCat("unexpected exception: ", e.what()));
      } catch (...) {
        statuses[i] = absl::InternalError("unexpected unknown exception");
      }
    }
  };
  const size_t helpers =
      std::min(n, static_cast<size_t>(std::max(threads, 1))) - 1;
  std::vector<std::thread> pool;
  pool.reserve(helpers);
  for (size_t t = 0; t < helpers; ++t) {
    try {
      pool.emplace_back(work);
    } catch (const std::system_error& e) {
      // Fewer threads only make the work slower.
      LOG(WARNING) << "fs_storage: could not start a thread (" << e.what()
                   << "); continuing with " << pool.size() + 1;
      break;
    }
  }
  work();
  for (std::thread& thread : pool) thread.join();
  return statuses;
}

// ---- Save plan storage data -------------------------------------------------

struct PlanStorageData {
  std::string token;
  std::string prefix;  // "__<rank>_"
};

std::string EncodePlanStorageData(absl::string_view token, size_t rank) {
  return absl::StrCat(kPlanTag, ":", token, ":__", rank, "_");
}

absl::StatusOr<PlanStorageData> DecodePlanStorageData(absl::string_view data) {
  if (data.empty()) {
    return absl::FailedPreconditionError(
        "save plan has no file-system storage data; was it returned by the "
        "coordinator's FileSystemWriter::PrepareGlobalPlan?");
  }
  std::vector<absl::string_view> parts = absl::StrSplit(data, ':');
  if (parts.size() != 3 || parts[0] != kPlanTag || parts[1].empty() ||
      !absl::StartsWith(parts[2], "__") || !absl::EndsWith(parts[2], "_") ||
      absl::StrContains(parts[1], '/') || absl::StrContains(parts[2], '/')) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "save plan storage data \"%s\" was not written by a FileSystemWriter",
        absl::CHexEscape(data)));
  }
  return PlanStorageData{std::string(parts[1]), std::string(parts[2])};
}

// "__<rank>_<n>_<token>.distcp".
std::string DataFileName(const PlanStorageData& storage, size_t n) {
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
// pytorch-dcp-format.md §3.2).
std::vector<FileJob> PlanFiles(const SavePlan& plan,
                               const FileSystemWriterOptions& options,
                               const PlanStorageData& storage) {
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
    return absl::InternalError(absl::StrCat(
        "wrote ", written, " bytes of a tensor record of ", size));
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

// ---- Reading ----------------------------------------------------------------

// Refuses a symbolic link as the last component of every file it opens for
// reading: how a reader without `FileSystemReaderOptions::allow_symlinks`
// opens `.metadata` and the data files. (The checkpoint directory's own
// path may go through links.)
class NoSymlinksFileSystem final : public FileSystemWrapper {
 public:
  using FileSystemWrapper::FileSystemWrapper;
  using FileSystemWrapper::NewRandomAccessFile;

  absl::StatusOr<std::unique_ptr<RandomAccessFile>> NewRandomAccessFile(
      absl::string_view path, const RandomAccessFileOptions& options) override {
    RandomAccessFileOptions no_follow = options;
    no_follow.follow_symlinks = false;
    return FileSystemWrapper::NewRandomAccessFile(path, no_follow);
  }
};

// The file system a reader reads checkpoint files through.
std::shared_ptr<FileSystem> ReaderFileSystem(std::shared_ptr<FileSystem> fs,
                                             bool allow_symlinks) {
  if (fs == nullptr) fs = NewPosixFileSystem();
  if (allow_symlinks) return fs;
  return std::make_shared<NoSymlinksFileSystem>(std::move(fs));
}

absl::Status NotACheckpoint(absl::string_view dir) {
  return absl::NotFoundError(
      absl::StrCat("not a checkpoint: no .metadata in ", dir));
}

// The payload of `dir`'s sidecar (the metadata's binary encoding) if it
// describes `pickle` (the bytes of its `.metadata`); nullopt if there is
// none or it cannot be used, which is logged unless the sidecar is simply
// absent or stale.
std::optional<std::string> ReadMetadataSidecarPayload(FileSystem& fs,
                                                      const std::string& dir,
                                                      absl::string_view pickle,
                                                      uint64_t max_bytes) {
  const std::string path = JoinPath(dir, kMetadataSidecarName);
  absl::StatusOr<std::unique_ptr<RandomAccessFile>> file =
      fs.NewRandomAccessFile(path);
  absl::Status status = file.status();
  if (file.ok()) {
    const uint64_t size = (*file)->size();
    if (size > max_bytes) {
      status = absl::ResourceExhaustedError(
          absl::StrCat(size, " bytes, more than max_metadata_bytes"));
    } else {
      std::string bytes(static_cast<size_t>(size), '\0');
      status = (*file)->ReadInto(0, absl::MakeSpan(bytes));
      if (status.ok()) {
        absl::StatusOr<absl::string_view> payload =
            MetadataSidecarPayload(bytes, pickle);
        if (payload.ok()) return std::string(*payload);
        status = payload.status();
      }
    }
  }
  if (!absl::IsNotFound(status) && !absl::IsFailedPrecondition(status)) {
    LOG(WARNING) << "fs_storage: not using " << path
                 << ", decoding .metadata instead: " << status;
  } else {
    VLOG(1) << "fs_storage: decoding .metadata, no usable " << path << ": "
            << status;
  }
  return std::nullopt;
}

// `dir`'s metadata, read from `.metadata` (or its sidecar): decoded, or,
// with `encoded`, as EncodeMetadata makes it (then `*encoded` is set and
// the returned Metadata is empty).
absl::StatusOr<Metadata> ReadMetadataFile(FileSystem& fs,
                                          const std::string& dir,
                                          uint64_t max_bytes,
                                          const DecodeLimits& limits,
                                          bool use_sidecar,
                                          std::string* encoded = nullptr) {
  const std::string path = JoinPath(dir, kMetadataName);
  absl::StatusOr<std::unique_ptr<RandomAccessFile>> file =
      fs.NewRandomAccessFile(path);
  if (!file.ok()) {
    if (absl::IsNotFound(file.status())) return NotACheckpoint(dir);
    return Annotate(file.status(), absl::StrCat("reading ", path));
  }
  // The size decides before anything is allocated or read.
  const uint64_t size = (*file)->size();
  if (size > max_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        path, " is ", size, " bytes, more than the ", max_bytes,
        " bytes a .metadata may have (max_metadata_bytes); not reading it"));
  }
  std::string bytes(static_cast<size_t>(size), '\0');
  absl::Status read = (*file)->ReadInto(0, absl::MakeSpan(bytes));
  if (!read.ok()) return Annotate(read, absl::StrCat("reading ", path));
  if (use_sidecar) {
    std::optional<std::string> payload =
        ReadMetadataSidecarPayload(fs, dir, bytes, max_bytes);
    if (payload.has_value() && encoded != nullptr) {
      *encoded = *std::move(payload);
      return Metadata();
    }
    if (payload.has_value()) {
      absl::StatusOr<Metadata> metadata = DecodeMetadata(*payload);
      if (metadata.ok()) return metadata;
      LOG(WARNING) << "fs_storage: not using "
                   << JoinPath(dir, kMetadataSidecarName)
                   << ", decoding .metadata instead: " << metadata.status();
    }
  }
  absl::StatusOr<Metadata> metadata = DecodeMetadataPickle(bytes, limits);
  if (!metadata.ok()) {
    return Annotate(metadata.status(), absl::StrCat("decoding ", path));
  }
  if (encoded != nullptr) {
    *encoded = EncodeMetadata(*metadata);
    return Metadata();
  }
  return metadata;
}

// OK if `relative` names a file inside the checkpoint directory.
bool IsSafeRelativePath(absl::string_view relative) {
  if (relative.empty() || relative.front() == '/') return false;
  for (absl::string_view part : absl::StrSplit(relative, '/')) {
    if (part == "..") return false;
  }
  return !absl::StrContains(relative, absl::string_view("\0", 1));
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
        name != "." && name != kMetadataName && name != kLockName) {
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

// A saved record that the load touches.
struct RecordWork {
  const MetadataIndex* index = nullptr;  // Key in the reader's storage_data.
  const StorageInfo* info = nullptr;
  bool is_bytes = false;
  // Tensor records: what `.metadata` says about the chunk.
  const TensorProperties* properties = nullptr;
  const ChunkStorageMetadata* chunk = nullptr;
  // Filled by the checking phase.
  TensorRecordInfo tensor;
  std::optional<Value> value;
  // Entries over kSmallEntryBytes whose CRC-32 is still to check, once the
  // boxes the load needs of them are known (see VerifyLargeEntries).
  std::vector<ZipEntry> unverified;
};

// A tensor read item and the byte ranges it needs.
struct ItemWork {
  size_t item = 0;    // Position in the plan.
  size_t record = 0;  // Position in the records.
  BoxReadPlan box;
};

struct FileWork {
  std::string relative_path;
  std::string path;
  std::vector<size_t> records;  // Sorted by offset.
  std::vector<size_t> items;    // Tensor items, sorted by record offset.
  // Open while the file is checked or copied from, and between the two
  // phases for the files the reader keeps open (see ReadData).
  std::unique_ptr<RandomAccessFile> file;
  uint64_t checked_size = 0;  // The size the checking phase saw.
};

std::string DescribeRecord(const FileWork& file, const RecordWork& record) {
  return absl::StrFormat("record of %s in %s at offset %d (length %d)",
                         DescribeIndex(*record.index), file.path,
                         record.info->offset, record.info->length);
}

absl::Status ChecksumMismatch(const FileWork& file, const RecordWork& record,
                              const ZipEntry& entry) {
  return absl::DataLossError(absl::StrFormat(
      "%s in %s at offset %d for %s (entry \"%s\")", kChecksumMismatch,
      file.path, record.info->offset, DescribeIndex(*record.index),
      absl::CHexEscape(entry.name)));
}

absl::Status BlockChecksumMismatch(const FileWork& file,
                                   const RecordWork& record,
                                   const ZipEntry& entry, uint64_t block,
                                   uint64_t block_bytes) {
  const uint64_t start = block * block_bytes;
  const uint64_t end = std::min(start + block_bytes, entry.size);
  return absl::DataLossError(absl::StrFormat(
      "%s in %s at offset %d for %s (entry \"%s\", bytes %d to %d of its "
      "data, block %d of %s%s)",
      kChecksumMismatch, file.path, record.info->offset,
      DescribeIndex(*record.index), absl::CHexEscape(entry.name), start, end,
      block, file.path, kBlockChecksumsSuffix));
}

// Parses and checks a tensor record: its zip directory and data.pkl, the
// saved dtype and shape against `.metadata`, and with `verify` the CRC-32
// of every entry, except entries over kSmallEntryBytes not in memory,
// which it leaves in `record.unverified` for VerifyLargeEntries. Reads only
// the record's small entries. `in_memory`, if set, is the whole record,
// already read.
absl::Status CheckTensorRecord(const FileWork& file, RecordWork& record,
                               bool verify,
                               std::optional<absl::string_view> in_memory,
                               TensorPickleCache& pickle_cache) {
  const RandomAccessFile& data = *file.file;
  const uint64_t base = static_cast<uint64_t>(record.info->offset);
  std::optional<ZipByteSource> from_file;
  std::optional<ZipByteSource> from_memory;
  if (in_memory.has_value()) {
    from_memory.emplace(*in_memory);
  } else {
    from_file.emplace(static_cast<uint64_t>(record.info->length),
                      FileRangeReader(data, base));
  }
  ZipByteSource& source = in_memory.has_value() ? *from_memory : *from_file;
  DCP_ASSIGN_OR_RETURN(const ZipDirectory dir, ReadZipDirectory(source));
  // Checked first, so that a corrupt data.pkl reports the mismatch.
  if (verify) {
    for (const ZipEntry& entry : dir.entries) {
      if (entry.size > kSmallEntryBytes) continue;  // Streamed below.
      DCP_ASSIGN_OR_RETURN(absl::string_view bytes,
                           source.Read(entry.data_offset, entry.size));
      if (Crc32(bytes) != entry.crc32) {
        return ChecksumMismatch(file, record, entry);
      }
    }
  }
  DCP_ASSIGN_OR_RETURN(record.tensor,
                       ParseTensorRecordHeader(source, dir, &pickle_cache));
  const TensorRecordInfo& info = record.tensor;
  if (info.dtype != record.properties->dtype) {
    return absl::DataLossError(absl::StrCat(
        "holds a ", DtypeName(info.dtype), " tensor but .metadata says ",
        DtypeName(record.properties->dtype),
        " (is .metadata from another checkpoint?)"));
  }
  if (info.sizes != record.chunk->sizes) {
    return absl::DataLossError(
        absl::StrCat("holds a tensor of shape ", FormatShape(info.sizes),
                     " but .metadata says ", FormatShape(record.chunk->sizes),
                     " (is .metadata from another checkpoint?)"));
  }
  if (verify) {
    // The tensor data, after the cheaper checks against `.metadata`; data
    // not in memory once the load's boxes are known (VerifyLargeEntries).
    for (const ZipEntry& entry : dir.entries) {
      if (entry.size <= kSmallEntryBytes) continue;
      if (!in_memory.has_value()) {
        record.unverified.push_back(entry);
        continue;
      }
      // ReadZipDirectory checked that entries lie inside the record.
      if (Crc32(in_memory->substr(entry.data_offset, entry.size)) !=
          entry.crc32) {
        return ChecksumMismatch(file, record, entry);
      }
    }
  }
  return absl::OkStatus();
}

// The block checksums of `file` if it has a usable block checksum file;
// nullopt if it has none (NotFound) or it cannot be used (logged).
std::optional<BlockChecksums> ReadBlockChecksums(FileSystem& fs,
                                                 const FileWork& file) {
  absl::StatusOr<BlockChecksums> checksums =
      ReadBlockChecksumsFile(fs, file.path, file.checked_size);
  if (checksums.ok()) return *std::move(checksums);
  if (!absl::IsNotFound(checksums.status())) {
    LOG(WARNING) << "fs_storage: not using " << file.path
                 << kBlockChecksumsSuffix
                 << ", verifying whole records instead: " << checksums.status();
  }
  return std::nullopt;
}

// Checks the CRC-32s of `record`'s entries left unverified by
// CheckTensorRecord. The tensor data entry is checked block by block if
// `checksums` has its blocks (and they match the entry's own CRC-32):
// only the blocks that hold `ranges` (record-relative byte ranges the load
// reads). Other entries, and all without usable block checksums, are read
// whole.
absl::Status VerifyLargeEntries(const FileWork& file, const RecordWork& record,
                                const std::vector<ByteRange>& ranges,
                                const BlockChecksums* checksums) {
  const RandomAccessFile& data = *file.file;
  const uint64_t base = static_cast<uint64_t>(record.info->offset);
  std::string buffer;
  for (const ZipEntry& entry : record.unverified) {
    const RecordBlockChecksums* blocks =
        checksums != nullptr &&
                entry.data_offset == record.tensor.storage.data_offset
            ? checksums->Find(base + entry.data_offset)
            : nullptr;
    if (blocks == nullptr || blocks->data_size != entry.size ||
        blocks->data_crc32 != entry.crc32) {
      DCP_ASSIGN_OR_RETURN(
          uint32_t crc,
          StreamCrc32(data, base + entry.data_offset, entry.size));
      if (crc != entry.crc32) return ChecksumMismatch(file, record, entry);
      continue;
    }
    // The blocks the ranges touch, as sorted, merged [first, last] runs.
    const uint64_t block_bytes = checksums->block_bytes;
    std::vector<std::pair<uint64_t, uint64_t>> runs;
    for (const ByteRange& range : ranges) {
      const uint64_t start = std::max(range.offset, entry.data_offset);
      const uint64_t end =
          std::min(range.offset + range.length, entry.data_offset + entry.size);
      if (start >= end) continue;
      runs.emplace_back((start - entry.data_offset) / block_bytes,
                        (end - 1 - entry.data_offset) / block_bytes);
    }
    std::sort(runs.begin(), runs.end());
    size_t merged = 0;
    for (size_t i = 0; i < runs.size(); ++i) {
      if (merged > 0 && runs[i].first <= runs[merged - 1].second + 1) {
        runs[merged - 1].second =
            std::max(runs[merged - 1].second, runs[i].second);
      } else {
        runs[merged++] = runs[i];
      }
    }
    runs.resize(merged);
    // Read up to kCrcChunkBytes of whole blocks at a time.
    const uint64_t blocks_per_read =
        std::max<uint64_t>(1, kCrcChunkBytes / block_bytes);
    for (const auto& [first, last] : runs) {
      for (uint64_t b = first; b <= last; b += blocks_per_read) {
        const uint64_t b_end = std::min(last + 1, b + blocks_per_read);
        const uint64_t start = b * block_bytes;
        const uint64_t end = std::min(b_end * block_bytes, entry.size);
        if (buffer.size() < end - start) buffer.resize(end - start);
        DCP_ASSIGN_OR_RETURN(absl::string_view bytes,
                             data.Read(base + entry.data_offset + start,
                                       end - start, buffer.data()));
        for (uint64_t k = b; k < b_end; ++k) {
          const absl::string_view block =
              bytes.substr((k - b) * block_bytes, block_bytes);
          if (Crc32(block) != blocks->block_crc32[k]) {
            return BlockChecksumMismatch(file, record, entry, k, block_bytes);
          }
        }
      }
    }
  }
  return absl::OkStatus();
}

// Reads, checks and parses a bytes record (`in_memory`, if already read).
absl::Status CheckBytesRecord(const FileWork& file, RecordWork& record,
                              bool verify, const DecodeLimits& limits,
                              std::optional<absl::string_view> in_memory) {
  std::string read;
  if (!in_memory.has_value()) {
    read.resize(static_cast<size_t>(record.info->length));
    DCP_RETURN_IF_ERROR(file.file->ReadInto(
        static_cast<uint64_t>(record.info->offset), absl::MakeSpan(read)));
  }
  const absl::string_view bytes = in_memory.value_or(read);
  if (verify) {
    DCP_ASSIGN_OR_RETURN(ZipDirectory dir, ReadZipDirectory(bytes));
    for (const ZipEntry& entry : dir.entries) {
      DCP_ASSIGN_OR_RETURN(absl::string_view data, ZipEntryData(bytes, entry));
      if (Crc32(data) != entry.crc32) {
        return ChecksumMismatch(file, record, entry);
      }
    }
  }
  DCP_ASSIGN_OR_RETURN(record.value, ParseValueRecord(bytes, limits));
  return absl::OkStatus();
}

// Opens `file` into `file.file`. A missing file is DataLoss: `.metadata`
// says it holds `first`.
absl::Status OpenDataFile(FileSystem& fs, FileWork& file,
                          const RecordWork& first) {
  absl::StatusOr<std::unique_ptr<RandomAccessFile>> opened =
      fs.NewRandomAccessFile(file.path);
  if (!opened.ok()) {
    if (absl::IsNotFound(opened.status())) {
      return absl::DataLossError(absl::StrFormat(
          "missing data file %s (holding %s): %s", file.path,
          DescribeIndex(*first.index), opened.status().message()));
    }
    return Annotate(opened.status(),
                    absl::StrCat("opening data file ", file.path));
  }
  file.file = *std::move(opened);
  return absl::OkStatus();
}

// Reopens, for the copying phase, a file that the checking phase closed.
// Its records were checked through the earlier handle, so the file must
// still be the one checked; the FileSystem interface tells only its size.
absl::Status ReopenDataFile(FileSystem& fs, FileWork& file,
                            const RecordWork& first) {
  DCP_RETURN_IF_ERROR(OpenDataFile(fs, file, first));
  const uint64_t size = file.file->size();
  if (size != file.checked_size) {
    file.file.reset();
    return absl::DataLossError(absl::StrFormat(
        "data file %s changed during the load: %d bytes when checked, %d "
        "when reopened to copy (was the checkpoint overwritten?)",
        file.path, file.checked_size, size));
  }
  return absl::OkStatus();
}

// The checking phase for one file: opens it, checks every record the load
// touches and plans every tensor item's byte ranges. Touches no
// destination. Leaves the file open; the caller decides whether to keep it.
absl::Status CheckFile(FileSystem& fs, FileWork& file,
                       std::vector<RecordWork>& records,
                       std::vector<ItemWork>& items,
                       const std::vector<ReadItem>& plan_items, bool verify,
                       bool use_block_checksums, const DecodeLimits& limits) {
  DCP_RETURN_IF_ERROR(OpenDataFile(fs, file, records[file.records.front()]));
  const uint64_t file_size = file.file->size();
  file.checked_size = file_size;
  auto inside = [file_size](const StorageInfo& info) {
    return info.offset >= 0 && info.length >= 0 &&
           static_cast<uint64_t>(info.offset) <= file_size &&
           static_cast<uint64_t>(info.length) <=
               file_size - static_cast<uint64_t>(info.offset);
  };
  // Many records of a file usually share a data.pkl (same-shaped tensors).
  TensorPickleCache pickle_cache;
  // The current batch of small records: `batch` holds the file's bytes
  // from `batch_start`.
  std::string batch;
  uint64_t batch_start = 0;
  for (size_t i = 0; i < file.records.size(); ++i) {
    RecordWork& record = records[file.records[i]];
    const StorageInfo& info = *record.info;
    if (!inside(info)) {
      return absl::DataLossError(absl::StrFormat(
          "%s: outside the data file of %d bytes (truncated file?)",
          DescribeRecord(file, record), file_size));
    }
    const uint64_t offset = static_cast<uint64_t>(info.offset);
    const uint64_t length = static_cast<uint64_t>(info.length);
    std::optional<absl::string_view> in_memory;
    const uint64_t max_batched = verify ? kBatchBytes : kSmallRecordBytes;
    if (length <= max_batched) {
      if (offset < batch_start ||
          offset + length > batch_start + batch.size()) {
        // A new batch: this record and the next ones while they fit.
        uint64_t end = offset + length;
        for (size_t j = i + 1; j < file.records.size(); ++j) {
          const StorageInfo& next = *records[file.records[j]].info;
          if (!inside(next) ||
              static_cast<uint64_t>(next.length) > max_batched) {
            break;
          }
          const uint64_t next_offset = static_cast<uint64_t>(next.offset);
          const uint64_t next_end =
              next_offset + static_cast<uint64_t>(next.length);
          if (next_offset > end + kMaxBatchGapBytes ||
              next_end - offset > kBatchBytes) {
            break;
          }
          end = std::max(end, next_end);
        }
        batch.resize(static_cast<size_t>(end - offset));
        batch_start = offset;
        absl::Status read = file.file->ReadInto(offset, absl::MakeSpan(batch));
        if (!read.ok()) {
          batch.clear();
          return Annotate(read, DescribeRecord(file, record));
        }
      }
      in_memory = absl::string_view(batch).substr(
          static_cast<size_t>(offset - batch_start),
          static_cast<size_t>(length));
    }
    absl::Status status =
        record.is_bytes
            ? CheckBytesRecord(file, record, verify, limits, in_memory)
            : CheckTensorRecord(file, record, verify, in_memory, pickle_cache);
    if (!status.ok()) {
      // Checksum errors already name the file, the offset and the key.
      if (absl::StartsWith(status.message(), kChecksumMismatch)) return status;
      return Annotate(status, DescribeRecord(file, record));
    }
  }
  for (size_t w : file.items) {
    ItemWork& work = items[w];
    const ReadItem& item = plan_items[work.item];
    const RecordWork& record = records[work.record];
    absl::StatusOr<BoxReadPlan> box =
        PlanBoxRead(record.tensor, item.storage_offsets, item.lengths);
    if (!box.ok()) {
      return Annotate(box.status(),
                      absl::StrCat("reading ", DescribeIndex(item.dest_index),
                                   " from ", DescribeRecord(file, record)));
    }
    work.box = *std::move(box);
  }
  // Large records not yet verified, now that the ranges needed are known.
  std::vector<std::pair<size_t, const BoxReadPlan*>> boxes;  // (record, box)
  for (size_t w : file.items) {
    if (!records[items[w].record].unverified.empty()) {
      boxes.emplace_back(items[w].record, &items[w].box);
    }
  }
  if (boxes.empty()) return absl::OkStatus();
  std::stable_sort(
      boxes.begin(), boxes.end(),
      [](const auto& a, const auto& b) { return a.first < b.first; });
  std::optional<BlockChecksums> checksums;
  if (use_block_checksums) checksums = ReadBlockChecksums(fs, file);
  std::vector<ByteRange> ranges;
  for (size_t i = 0; i < boxes.size();) {
    const size_t r = boxes[i].first;
    ranges.clear();
    for (; i < boxes.size() && boxes[i].first == r; ++i) {
      ranges.insert(ranges.end(), boxes[i].second->ranges.begin(),
                    boxes[i].second->ranges.end());
    }
    RecordWork& record = records[r];
    absl::Status status = VerifyLargeEntries(
        file, record, ranges, checksums.has_value() ? &*checksums : nullptr);
    if (!status.ok()) {
      if (absl::StartsWith(status.message(), kChecksumMismatch)) return status;
      return Annotate(status, DescribeRecord(file, record));
    }
    record.unverified.clear();
  }
  return absl::OkStatus();
}

// Whether the box's packed bytes are exactly `dest`'s memory, so that they
// can be read straight into it.
bool CanReadStraightInto(const BoxReadPlan& box, const at::Tensor& dest) {
  if (box.dtype == c10::ScalarType::Bool) return false;  // Must be checked.
  if (!dest.device().is_cpu() || dest.scalar_type() != box.dtype ||
      dest.layout() != c10::kStrided || !dest.is_contiguous() ||
      dest.is_conj() || dest.is_neg() || dest.requires_grad() ||
      dest.sizes() != c10::IntArrayRef(box.sizes) ||
      box.strides.size() != box.sizes.size()) {
    return false;
  }
  int64_t expected = 1;
  for (size_t d = box.sizes.size(); d-- > 0;) {
    if (box.sizes[d] != 1 && box.strides[d] != expected) return false;
    expected *= box.sizes[d];
  }
  return box.packed_size ==
         static_cast<uint64_t>(dest.numel()) * dest.element_size();
}

// The copying phase for one tensor item.
absl::Status CopyItem(const FileWork& file, const RecordWork& record,
                      const ItemWork& work, const ReadItem& item,
                      LoadPlanner& planner) {
  DCP_ASSIGN_OR_RETURN(at::Tensor dest, planner.ResolveTensor(item));
  if (!dest.defined()) {
    return absl::InvalidArgumentError(
        "the planner resolved the destination to an undefined tensor");
  }
  if (dest.sizes() != c10::IntArrayRef(work.box.sizes)) {
    return absl::InvalidArgumentError(
        absl::StrCat("the destination has shape ", FormatShape(dest.sizes()),
                     " but the saved box read into it has shape ",
                     FormatShape(work.box.sizes)));
  }
  const uint64_t base = static_cast<uint64_t>(record.info->offset);
  if (CanReadStraightInto(work.box, dest)) {
    char* out = static_cast<char*>(dest.data_ptr());
    for (const ByteRange& range : work.box.ranges) {
      DCP_RETURN_IF_ERROR(file.file->ReadInto(
          base + range.offset,
          absl::MakeSpan(out, static_cast<size_t>(range.length))));
      out += range.length;
    }
  } else {
    std::string packed(static_cast<size_t>(work.box.packed_size), '\0');
    char* out = packed.data();
    for (const ByteRange& range : work.box.ranges) {
      DCP_RETURN_IF_ERROR(file.file->ReadInto(
          base + range.offset,
          absl::MakeSpan(out, static_cast<size_t>(range.length))));
      out += range.length;
    }
    DCP_RETURN_IF_ERROR(CopyBoxInto(work.box, packed, dest));
  }
  return planner.CommitTensor(item, dest);
}

// The saved chunk of `index` in `metadata`, or nullptr.
const ChunkStorageMetadata* FindChunk(const TensorStorageMetadata& metadata,
                                      const MetadataIndex& index) {
  if (!index.offset.has_value()) return nullptr;
  if (index.index.has_value() && *index.index >= 0 &&
      static_cast<size_t>(*index.index) < metadata.chunks.size() &&
      metadata.chunks[*index.index].offsets == *index.offset) {
    return &metadata.chunks[*index.index];
  }
  for (const ChunkStorageMetadata& chunk : metadata.chunks) {
    if (chunk.offsets == *index.offset) return &chunk;
  }
  return nullptr;
}

}  // namespace
}  // namespace fs_storage_internal

using fs_storage_internal::DescribeIndex;

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
  if (path.empty()) {
    return absl::InvalidArgumentError(
        "FileSystemWriter needs a checkpoint directory");
  }
  if (options.thread_count < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("FileSystemWriter thread_count must be at least 1, got ",
                     options.thread_count));
  }
  auto state = std::make_unique<State>();
  state->path = std::move(path);
  state->fs = options.file_system != nullptr ? options.file_system
                                             : NewPosixFileSystem();
  state->options = std::move(options);
  state->save_id = fs_storage_internal::RandomUuid();
  return std::unique_ptr<FileSystemWriter>(
      new FileSystemWriter(std::move(state)));
}

const std::string& FileSystemWriter::path() const { return state_->path; }

absl::Status FileSystemWriter::Reset(std::optional<std::string> checkpoint_id) {
  if (checkpoint_id.has_value() && !checkpoint_id->empty()) {
    state_->path = *std::move(checkpoint_id);
  }
  state_->save_id = fs_storage_internal::RandomUuid();
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
        JoinPath(s.path, fs_storage_internal::kMetadataName);
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
    plans[rank].storage_data =
        fs_storage_internal::EncodePlanStorageData(token, rank);
  }
  return plans;
}

absl::StatusOr<std::vector<WriteResult>> FileSystemWriter::WriteData(
    const SavePlan& plan, SavePlanner& planner) {
  DCP_RETURN_IF_ERROR(FaultPoint("fs_storage.write_data"));
  State& s = *state_;
  DCP_ASSIGN_OR_RETURN(
      fs_storage_internal::PlanStorageData storage,
      fs_storage_internal::DecodePlanStorageData(plan.storage_data));
  const std::vector<fs_storage_internal::FileJob> jobs =
      fs_storage_internal::PlanFiles(plan, s.options, storage);

  std::vector<std::vector<std::pair<size_t, WriteResult>>> per_file(
      jobs.size());
  // Not vector<bool>: threads set their own elements.
  std::vector<char> created(jobs.size(), 0);
  absl::Status status =
      FirstError(fs_storage_internal::RunParallel(
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
      JoinPath(s.path, fs_storage_internal::kMetadataName);
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

// ---- FileSystemReader -------------------------------------------------------

struct FileSystemReader::State {
  std::string path;
  FileSystemReaderOptions options;
  std::shared_ptr<FileSystem> fs;
  std::string load_id;
  // From SetUp: what ReadData reads of the checkpoint's Metadata.
  bool set_up = false;
  std::shared_ptr<const Metadata> metadata;
};

FileSystemReader::FileSystemReader(std::unique_ptr<State> state)
    : state_(std::move(state)) {}

FileSystemReader::~FileSystemReader() = default;

absl::StatusOr<std::unique_ptr<FileSystemReader>> FileSystemReader::Create(
    std::string path, FileSystemReaderOptions options) {
  if (path.empty()) {
    return absl::InvalidArgumentError(
        "FileSystemReader needs a checkpoint directory");
  }
  if (options.thread_count < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("FileSystemReader thread_count must be at least 1, got ",
                     options.thread_count));
  }
  if (options.max_open_files < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("FileSystemReader max_open_files must be at least 1, got ",
                     options.max_open_files));
  }
  auto state = std::make_unique<State>();
  state->path = std::move(path);
  state->fs = fs_storage_internal::ReaderFileSystem(options.file_system,
                                                    options.allow_symlinks);
  state->options = std::move(options);
  state->load_id = fs_storage_internal::RandomUuid();
  return std::unique_ptr<FileSystemReader>(
      new FileSystemReader(std::move(state)));
}

const std::string& FileSystemReader::path() const { return state_->path; }

absl::Status FileSystemReader::Reset(std::optional<std::string> checkpoint_id) {
  if (checkpoint_id.has_value() && !checkpoint_id->empty()) {
    state_->path = *std::move(checkpoint_id);
  }
  state_->load_id = fs_storage_internal::RandomUuid();
  state_->set_up = false;
  state_->metadata = nullptr;
  return absl::OkStatus();
}

absl::StatusOr<Metadata> FileSystemReader::ReadMetadata() {
  DCP_ASSIGN_OR_RETURN(Metadata metadata,
                       fs_storage_internal::ReadMetadataFile(
                           *state_->fs, state_->path,
                           state_->options.max_metadata_bytes,
                           state_->options.decode_limits,
                           state_->options.use_metadata_sidecar));
  if (!metadata.storage_meta.has_value()) metadata.storage_meta.emplace();
  metadata.storage_meta->load_id = state_->load_id;
  return metadata;
}

absl::StatusOr<StorageReader::EncodedMetadata>
FileSystemReader::ReadEncodedMetadata() {
  EncodedMetadata out;
  DCP_RETURN_IF_ERROR(fs_storage_internal::ReadMetadataFile(
                          *state_->fs, state_->path,
                          state_->options.max_metadata_bytes,
                          state_->options.decode_limits,
                          state_->options.use_metadata_sidecar, &out.encoded)
                          .status());
  out.load_id = state_->load_id;
  return out;
}

absl::Status FileSystemReader::SetUp(const Metadata& metadata,
                                     bool is_coordinator) {
  // A copy of what ReadData reads.
  auto needed = std::make_shared<Metadata>();
  needed->storage_data = metadata.storage_data;
  needed->state_dict_metadata = metadata.state_dict_metadata;
  return SetUpShared(std::move(needed), is_coordinator);
}

absl::Status FileSystemReader::SetUpShared(
    std::shared_ptr<const Metadata> metadata, bool is_coordinator) {
  if (metadata == nullptr) {
    return absl::InvalidArgumentError("FileSystemReader::SetUpShared: null");
  }
  state_->metadata = std::move(metadata);
  state_->set_up = true;
  return absl::OkStatus();
}

absl::StatusOr<LoadPlan> FileSystemReader::PrepareLocalPlan(LoadPlan plan) {
  return plan;
}

absl::StatusOr<std::vector<LoadPlan>> FileSystemReader::PrepareGlobalPlan(
    std::vector<LoadPlan> plans) {
  return plans;
}

// Two phases. Checking (in parallel over files): open every data file the
// plan touches, parse and check each record against `.metadata` (and its
// CRC-32s when verifying), and plan each item's byte ranges. Files beyond
// the open-file budget are closed again, their sizes checked once more
// before the copying starts, and reopened to copy (sizes checked again).
// Only then copying: bytes items are handed to the planner on this thread
// (planners may serialise LoadBytes internally), and tensor boxes are read
// and copied in parallel over files. So corrupt or mismatched data, and a
// checksum mismatch, fail the load before any destination changes; what
// can still leave destinations partly written is an I/O error while
// copying, a data file replaced or removed while copying (by a concurrent
// save), or an error from the planner (ResolveTensor, CommitTensor,
// LoadBytes, shape mismatches of resolved destinations).
absl::Status FileSystemReader::ReadData(const LoadPlan& plan,
                                        LoadPlanner& planner) {
  using fs_storage_internal::FileWork;
  using fs_storage_internal::ItemWork;
  using fs_storage_internal::RecordWork;
  DCP_RETURN_IF_ERROR(FaultPoint("fs_storage.read_data"));
  State& s = *state_;
  if (!s.set_up) {
    return absl::FailedPreconditionError(absl::StrCat(
        "ReadData of the checkpoint in ", s.path, " before SetUp"));
  }

  // Group the plan: records by saved item, files by name.
  std::vector<RecordWork> records;
  std::map<MetadataIndex, size_t> record_of;
  std::vector<ItemWork> items;
  std::vector<size_t> bytes_items;  // Plan positions.
  std::vector<size_t> bytes_records;
  std::map<std::string, FileWork> files;
  for (size_t i = 0; i < plan.items.size(); ++i) {
    const ReadItem& item = plan.items[i];
    const bool is_bytes = item.type == LoadItemType::kByteIo;
    auto found = s.metadata->storage_data.find(item.storage_index);
    if (found == s.metadata->storage_data.end()) {
      return absl::DataLossError(absl::StrCat(
          ".metadata in ", s.path, " records no storage location for ",
          DescribeIndex(item.storage_index)));
    }
    auto [it, inserted] = record_of.emplace(found->first, records.size());
    if (inserted) {
      RecordWork record;
      record.index = &found->first;
      record.info = &found->second;
      record.is_bytes = is_bytes;
      auto md = s.metadata->state_dict_metadata.find(item.storage_index.fqn);
      if (md == s.metadata->state_dict_metadata.end()) {
        return absl::DataLossError(
            absl::StrCat(".metadata in ", s.path, " has no entry for ",
                         DescribeIndex(item.storage_index)));
      }
      const auto* tensor_md = std::get_if<TensorStorageMetadata>(&md->second);
      if (is_bytes != (tensor_md == nullptr)) {
        return absl::DataLossError(
            absl::StrCat(DescribeIndex(item.storage_index), " is saved as ",
                         is_bytes ? "a tensor" : "bytes", " but read as ",
                         is_bytes ? "bytes" : "a tensor"));
      }
      if (!is_bytes) {
        record.properties = &tensor_md->properties;
        record.chunk =
            fs_storage_internal::FindChunk(*tensor_md, item.storage_index);
        if (record.chunk == nullptr) {
          return absl::DataLossError(
              absl::StrCat(".metadata in ", s.path, " has no saved chunk ",
                           DescribeIndex(item.storage_index)));
        }
      }
      const std::string& relative = found->second.relative_path;
      if (!fs_storage_internal::IsSafeRelativePath(relative)) {
        return absl::DataLossError(absl::StrFormat(
            ".metadata in %s stores %s in \"%s\", which is not a file of "
            "the checkpoint directory",
            s.path, DescribeIndex(item.storage_index),
            absl::CHexEscape(relative)));
      }
      FileWork& file = files[relative];
      if (file.path.empty()) {
        file.relative_path = relative;
        file.path = JoinPath(s.path, relative);
      }
      file.records.push_back(records.size());
      records.push_back(std::move(record));
    } else if (records[it->second].is_bytes != is_bytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("load plan reads ", DescribeIndex(item.storage_index),
                       " both as bytes and as a tensor"));
    }
    if (is_bytes) {
      bytes_items.push_back(i);
      bytes_records.push_back(it->second);
    } else {
      ItemWork work;
      work.item = i;
      work.record = it->second;
      files[records[it->second].info->relative_path].items.push_back(
          items.size());
      items.push_back(std::move(work));
    }
  }
  std::vector<FileWork*> file_list;
  for (auto& [name, file] : files) {
    auto offset_of = [&](size_t r) { return records[r].info->offset; };
    std::stable_sort(
        file.records.begin(), file.records.end(),
        [&](size_t a, size_t b) { return offset_of(a) < offset_of(b); });
    std::stable_sort(
        file.items.begin(), file.items.end(), [&](size_t a, size_t b) {
          return offset_of(items[a].record) < offset_of(items[b].record);
        });
    file_list.push_back(&file);
  }

  // Open files: each thread has at most one open that it is checking or
  // copying from; up to `keep` more stay open from their check to their
  // copy, so that a load of few files opens each once.
  const int threads =
      std::min(s.options.thread_count, s.options.max_open_files);
  const size_t keep = static_cast<size_t>(s.options.max_open_files - threads);
  std::atomic<size_t> kept{0};

  // Checking phase.
  DCP_RETURN_IF_ERROR(
      FirstError(fs_storage_internal::RunParallel(
          file_list.size(), threads, [&](size_t f) {
            FileWork& file = *file_list[f];
            absl::Status status = fs_storage_internal::CheckFile(
                *s.fs, file, records, items, plan.items,
                s.options.verify_checksums, s.options.use_block_checksums,
                s.options.decode_limits);
            if (!status.ok() || file.items.empty() ||
                kept.fetch_add(1) >= keep) {
              file.file.reset();
            }
            return status;
          })));

  // Files closed since their check must still be the files checked: a
  // cheap look before any destination is written (reopening checks again).
  for (FileWork* file : file_list) {
    if (file->file != nullptr || file->items.empty()) continue;
    absl::StatusOr<uint64_t> size = s.fs->FileSize(file->path);
    if (!size.ok() || *size != file->checked_size) {
      return absl::DataLossError(absl::StrFormat(
          "data file %s changed during the load: %d bytes when checked, %s "
          "before copying (was the checkpoint overwritten?)",
          file->path, file->checked_size,
          size.ok() ? absl::StrCat(*size, " bytes")
                    : std::string(size.status().message())));
    }
  }

  // Copying phase.
  for (size_t b = 0; b < bytes_items.size(); ++b) {
    const ReadItem& item = plan.items[bytes_items[b]];
    Value value = *records[bytes_records[b]].value;  // Copy: may repeat.
    DCP_RETURN_IF_ERROR(
        Annotate(planner.LoadBytes(item, std::move(value)),
                 absl::StrCat("loading ", DescribeIndex(item.dest_index))));
  }
  return FirstError(fs_storage_internal::RunParallel(
      file_list.size(), threads, [&](size_t f) -> absl::Status {
        FileWork& file = *file_list[f];
        if (file.items.empty()) return absl::OkStatus();
        if (file.file == nullptr) {
          DCP_RETURN_IF_ERROR(fs_storage_internal::ReopenDataFile(
              *s.fs, file, records[file.records.front()]));
        }
        absl::Status status;
        for (size_t w : file.items) {
          const ItemWork& work = items[w];
          const ReadItem& item = plan.items[work.item];
          const RecordWork& record = records[work.record];
          status =
              fs_storage_internal::CopyItem(file, record, work, item, planner);
          if (!status.ok()) {
            status = Annotate(
                status,
                absl::StrCat(
                    "loading ", DescribeIndex(item.dest_index), " from ",
                    fs_storage_internal::DescribeRecord(file, record)));
            break;
          }
        }
        file.file.reset();
        return status;
      }));
}

absl::StatusOr<Metadata> ReadCheckpointMetadata(
    const std::string& dir, std::shared_ptr<FileSystem> file_system) {
  FileSystemReaderOptions options;
  options.file_system = std::move(file_system);
  return ReadCheckpointMetadata(dir, options);
}

absl::StatusOr<Metadata> ReadCheckpointMetadata(
    const std::string& dir, const FileSystemReaderOptions& options) {
  return fs_storage_internal::ReadMetadataFile(
      *fs_storage_internal::ReaderFileSystem(options.file_system,
                                             options.allow_symlinks),
      dir, options.max_metadata_bytes, options.decode_limits,
      options.use_metadata_sidecar);
}

}  // namespace dcp
