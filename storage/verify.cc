#include "storage/verify.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>  // NOLINT(build/c++11): Debian's Abseil lacks TSan support
#include <optional>
#include <set>
#include <string>
#include <system_error>
#include <thread>  // NOLINT(build/c++11)
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "core/metadata.h"
#include "core/status.h"
#include "planner/plan_validation.h"
#include "storage/block_checksums.h"
#include "storage/crc32.h"
#include "storage/file_system.h"
#include "storage/fs_storage.h"
#include "storage/posix_file_system.h"
#include "storage/torch_record.h"
#include "storage/zip.h"

namespace dcp {
namespace {

constexpr absl::string_view kMetadataFileName = ".metadata";
// Read size when streaming an entry's CRC-32.
constexpr uint64_t kCrcChunkBytes = uint64_t{4} << 20;
// Entries up to this size are read through the record's cached source.
constexpr uint64_t kSmallEntryBytes = uint64_t{1} << 20;

// ZIP constants (see storage/zip.h and the ZIP specification, APPNOTE 4.3).
std::string Quoted(absl::string_view s) {
  return absl::StrCat("\"", absl::CHexEscape(s), "\"");
}

class Tracker {
 public:
  Tracker(const VerifyOptions& options, int64_t files, uint64_t bytes)
      : callback_(options.progress) {
    progress_.files_total = files;
    progress_.bytes_total = bytes;
  }
  void AddBytes(uint64_t n) { Update(0, n); }
  void FileDone(uint64_t remaining_bytes) { Update(1, remaining_bytes); }

 private:
  void Update(int64_t files, uint64_t bytes) {
    if (!callback_) return;
    std::lock_guard<std::mutex> lock(mu_);
    progress_.files_done += files;
    progress_.bytes_done += bytes;
    callback_(progress_);
  }

  const std::function<void(const VerifyProgress&)>& callback_;
  std::mutex mu_;
  VerifyProgress progress_;  // Guarded by mu_.
};

// One record `.metadata` places in a file.
struct RecordRef {
  const MetadataIndex* index = nullptr;
  const StorageInfo* info = nullptr;
  // What `.metadata` says it holds: a tensor chunk (both set), a bytes value
  // (is_bytes) or nothing known (the key or chunk is missing).
  const TensorProperties* properties = nullptr;
  const ChunkStorageMetadata* chunk = nullptr;
  bool is_bytes = false;
};

struct FileJob {
  std::string name;
  std::vector<RecordRef> records;  // Sorted by offset.
  VerifyFileReport report;
};

class FileChecker {
 public:
  FileChecker(FileSystem& fs, const std::string& dir,
              const VerifyOptions& options, Tracker& tracker, FileJob& job)
      : fs_(fs), dir_(dir), options_(options), tracker_(tracker), job_(job) {}

  void Run() {
    VerifyFileReport& report = job_.report;
    const std::string path = JoinPath(dir_, job_.name);
    absl::StatusOr<std::unique_ptr<RandomAccessFile>> opened =
        fs_.NewRandomAccessFile(
            path, RandomAccessFileOptions{options_.allow_symlinks});
    if (!opened.ok()) {
      VerifyProblem p = FileProblem(absl::IsNotFound(opened.status())
                                        ? VerifyProblemKind::kMissingFile
                                        : VerifyProblemKind::kUnreadableFile);
      p.message = absl::IsNotFound(opened.status())
                      ? absl::StrCat("missing data file (", report.records,
                                     " records of .metadata are in it)")
                      : "cannot open the data file";
      if (!absl::IsNotFound(opened.status())) {
        p.detail = opened.status().ToString();
      }
      Add(std::move(p));
      tracker_.FileDone(0);
      return;
    }
    file_ = *std::move(opened);
    report.exists = true;
    report.size = file_->size();
    CheckPlacement();
    LoadBlockChecksums(path);
    for (const RecordRef& record : job_.records) {
      if (!InsideFile(record)) continue;
      counted_in_record_ = 0;
      CheckRecord(record);
      const uint64_t length = static_cast<uint64_t>(record.info->length);
      tracker_.AddBytes(length - std::min(length, counted_in_record_));
      counted_in_file_ += length;
    }
    if (blocks_.has_value()) {
      for (size_t r = 0; r < blocks_->records.size(); ++r) {
        if (blocks_matched_[r]) continue;
        const RecordBlockChecksums& extra = blocks_->records[r];
        VerifyProblem p = FileProblem(VerifyProblemKind::kBlockChecksums);
        p.message = absl::StrCat("block checksums in ", job_.name,
                                 kBlockChecksumsSuffix, " for data at byte ",
                                 extra.data_offset, " (", extra.data_size,
                                 " bytes) where no record has a large entry");
        p.byte_offset = extra.data_offset;
        Add(std::move(p));
      }
    }
    tracker_.FileDone(report.size - std::min(report.size, counted_in_file_));
  }

 private:
  // Reads the data file's block checksum file into `blocks_`, if it has
  // one; reports one that cannot be used.
  void LoadBlockChecksums(const std::string& data_path) {
    absl::StatusOr<BlockChecksums> checksums = ReadBlockChecksumsFile(
        fs_, data_path, job_.report.size,
        RandomAccessFileOptions{options_.allow_symlinks});
    if (checksums.ok()) {
      blocks_ = *std::move(checksums);
      blocks_matched_.assign(blocks_->records.size(), false);
      return;
    }
    if (absl::IsNotFound(checksums.status())) return;
    const absl::Status& status = checksums.status();
    VerifyProblem p = FileProblem(VerifyProblemKind::kBlockChecksums);
    p.message = absl::StrCat("unusable block checksum file ", job_.name,
                             kBlockChecksumsSuffix,
                             " (verified loads read whole records instead)");
    p.detail = std::string(status.message());
    Add(std::move(p));
  }

  bool InsideFile(const RecordRef& record) const {
    const StorageInfo& info = *record.info;
    return info.offset >= 0 && info.length >= 0 &&
           static_cast<uint64_t>(info.offset) <= job_.report.size &&
           static_cast<uint64_t>(info.length) <=
               job_.report.size - static_cast<uint64_t>(info.offset);
  }

  VerifyProblem FileProblem(VerifyProblemKind kind) const {
    VerifyProblem p;
    p.kind = kind;
    p.file = job_.name;
    return p;
  }

  VerifyProblem RecordProblem(VerifyProblemKind kind,
                              const RecordRef& record) const {
    VerifyProblem p = FileProblem(kind);
    p.key = record.index->fqn;
    p.chunk_offsets = record.index->offset;
    p.record_offset = record.info->offset;
    return p;
  }

  void Add(VerifyProblem p) { job_.report.problems.push_back(std::move(p)); }

  // Records inside the file, not overlapping, covering it.
  void CheckPlacement() {
    const uint64_t size = job_.report.size;
    uint64_t covered_to = 0;  // End of the records so far.
    const RecordRef* last = nullptr;
    for (const RecordRef& record : job_.records) {
      const StorageInfo& info = *record.info;
      if (!InsideFile(record)) {
        VerifyProblem p = RecordProblem(VerifyProblemKind::kOutsideFile, record);
        p.message = absl::StrFormat(
            "record [%d, +%d) is outside the data file of %d bytes "
            "(truncated file?)",
            info.offset, info.length, size);
        Add(std::move(p));
        // Its bytes in the file are blamed on it, not reported as a gap.
        if (info.offset >= 0 && static_cast<uint64_t>(info.offset) <= size) {
          if (static_cast<uint64_t>(info.offset) > covered_to) {
            AddGap(covered_to, static_cast<uint64_t>(info.offset));
          }
          covered_to = size;
          last = &record;
        }
        continue;
      }
      const uint64_t begin = static_cast<uint64_t>(info.offset);
      const uint64_t end = begin + static_cast<uint64_t>(info.length);
      if (last != nullptr && begin < covered_to) {
        VerifyProblem p = RecordProblem(VerifyProblemKind::kOverlap, record);
        p.message = absl::StrCat(
            "record [", begin, ", ", end, ") overlaps the record of ",
            Quoted(last->index->fqn),
            last->index->offset.has_value()
                ? absl::StrCat(" chunk ", FormatShape(*last->index->offset))
                : "",
            " at offset ", last->info->offset);
        p.byte_offset = begin;
        Add(std::move(p));
      } else if (begin > covered_to) {
        AddGap(covered_to, begin);
      }
      if (end >= covered_to) {
        covered_to = end;
        last = &record;
      }
    }
    if (covered_to < size) AddGap(covered_to, size);
  }

  void AddGap(uint64_t begin, uint64_t end) {
    VerifyProblem p = FileProblem(VerifyProblemKind::kUnreferencedBytes);
    p.message = absl::StrCat(end - begin, " bytes [", begin, ", ", end,
                             ") belong to no record of .metadata");
    p.byte_offset = begin;
    Add(std::move(p));
  }

  // The CRC-32 of `size` bytes at `offset` of the file, streamed. With
  // `blocks`, also compares the checksum of each of its blocks (from
  // `offset`), adding the positions of those that differ to `*bad_blocks`.
  absl::StatusOr<uint32_t> StreamCrc32(
      uint64_t offset, uint64_t size,
      const RecordBlockChecksums* blocks = nullptr,
      std::vector<uint64_t>* bad_blocks = nullptr) {
    StreamCrc32Options options;
    options.read_bytes = kCrcChunkBytes;
    options.buffer = &buffer_;
    options.on_read = [this](uint64_t n) {
      counted_in_record_ += n;
      tracker_.AddBytes(n);
    };
    std::vector<uint32_t> actual;
    if (blocks != nullptr) {
      options.block_bytes = blocks_->block_bytes;
      options.block_crc32 = &actual;
    }
    DCP_ASSIGN_OR_RETURN(uint32_t crc,
                         dcp::StreamCrc32(*file_, offset, size, options));
    if (blocks != nullptr) AddBadBlocks(actual, *blocks, *bad_blocks);
    return crc;
  }

  // Adds the positions where `actual` differs from `expected` to `bad`.
  static void AddBadBlocks(const std::vector<uint32_t>& actual,
                           const RecordBlockChecksums& expected,
                           std::vector<uint64_t>& bad) {
    for (size_t b = 0; b < actual.size(); ++b) {
      if (b >= expected.block_crc32.size() ||
          actual[b] != expected.block_crc32[b]) {
        bad.push_back(b);
      }
    }
  }

  void CheckRecord(const RecordRef& record) {
    const uint64_t base = static_cast<uint64_t>(record.info->offset);
    const RandomAccessFile& file = *file_;
    ZipByteSource source(static_cast<uint64_t>(record.info->length),
                         FileRangeReader(file, base));
    auto io_problem = [&](const absl::Status& status) {
      VerifyProblem p = RecordProblem(
          absl::IsDataLoss(status) ? VerifyProblemKind::kZipStructure
                                   : VerifyProblemKind::kUnreadableFile,
          record);
      p.message = absl::IsDataLoss(status) ? "bad zip structure"
                                           : "cannot read the record";
      p.detail = std::string(status.message());
      Add(std::move(p));
    };
    absl::StatusOr<ZipDirectory> dir = ReadZipDirectory(source);
    if (!dir.ok()) {
      io_problem(dir.status());
      return;
    }
    absl::StatusOr<std::optional<ZipLayoutIssue>> layout =
        CheckZipLayout(source, *dir);
    if (!layout.ok()) {
      io_problem(layout.status());
      return;
    }
    if (layout->has_value()) {
      VerifyProblem p = RecordProblem(VerifyProblemKind::kZipLayout, record);
      p.message = absl::StrCat("zip layout: ", (*layout)->message);
      p.entry = (*layout)->entry;
      p.byte_offset = base + (*layout)->offset;
      Add(std::move(p));
    }
    // Every entry's CRC-32.
    bool crc_ok = true;
    for (const ZipEntry& entry : dir->entries) {
      absl::StatusOr<uint32_t> crc;
      // The entry's block checksums, if the data file has them.
      const RecordBlockChecksums* blocks = nullptr;
      if (blocks_.has_value()) {
        blocks = blocks_->Find(base + entry.data_offset);
        if (blocks != nullptr) {
          blocks_matched_[blocks - blocks_->records.data()] = true;
          if (blocks->data_size != entry.size ||
              blocks->data_crc32 != entry.crc32) {
            VerifyProblem p =
                RecordProblem(VerifyProblemKind::kBlockChecksums, record);
            p.message = absl::StrCat(
                "the block checksums in ", job_.name, kBlockChecksumsSuffix,
                " describe ", blocks->data_size,
                " bytes with another CRC-32, not this entry");
            p.entry = entry.name;
            p.byte_offset = base + entry.data_offset;
            Add(std::move(p));
            blocks = nullptr;
          }
        }
      }
      std::vector<uint64_t> bad_blocks;
      if (entry.size <= kSmallEntryBytes) {
        absl::StatusOr<absl::string_view> bytes =
            source.Read(entry.data_offset, entry.size);
        if (bytes.ok()) {
          crc = Crc32(*bytes);
          if (blocks != nullptr) {
            uint32_t unused;
            AddBadBlocks(ChecksumBlocks(*bytes, blocks_->block_bytes, &unused),
                         *blocks, bad_blocks);
          }
        } else {
          crc = bytes.status();
        }
      } else {
        crc = StreamCrc32(base + entry.data_offset, entry.size, blocks,
                          &bad_blocks);
      }
      // Only when the entry itself is intact: otherwise its blocks differ
      // because its data does, which the CRC mismatch reports.
      if (crc.ok() && *crc == entry.crc32 && !bad_blocks.empty()) {
        VerifyProblem p =
            RecordProblem(VerifyProblemKind::kBlockChecksums, record);
        p.message = absl::StrCat(
            bad_blocks.size(), " wrong block checksum(s) in ", job_.name,
            kBlockChecksumsSuffix, ", the first for block ", bad_blocks[0],
            " (bytes ", bad_blocks[0] * blocks_->block_bytes,
            " onwards of the entry)");
        p.entry = entry.name;
        p.byte_offset =
            base + entry.data_offset + bad_blocks[0] * blocks_->block_bytes;
        Add(std::move(p));
      }
      if (!crc.ok()) {
        io_problem(crc.status());
        return;
      }
      if (*crc != entry.crc32) {
        crc_ok = false;
        VerifyProblem p = RecordProblem(VerifyProblemKind::kCrcMismatch, record);
        p.message = "crc mismatch";
        p.entry = entry.name;
        p.byte_offset = base + entry.data_offset;
        Add(std::move(p));
      }
    }
    // The contents, against `.metadata`. A record whose CRCs are wrong is
    // not parsed: its problem is already reported, and a parse error would
    // only repeat it.
    if (!crc_ok) return;
    if (record.chunk != nullptr) {
      absl::StatusOr<TensorRecordInfo> info = ParseTensorRecordHeader(source);
      if (!info.ok()) {
        VerifyProblem p = RecordProblem(VerifyProblemKind::kBadRecord, record);
        p.message = "tensor record does not parse";
        p.detail = std::string(info.status().message());
        Add(std::move(p));
        return;
      }
      if (info->dtype != record.properties->dtype) {
        VerifyProblem p =
            RecordProblem(VerifyProblemKind::kRecordMismatch, record);
        p.message = absl::StrCat("holds a ", DtypeName(info->dtype),
                                 " tensor but .metadata says ",
                                 DtypeName(record.properties->dtype));
        Add(std::move(p));
      }
      if (info->sizes != record.chunk->sizes) {
        VerifyProblem p =
            RecordProblem(VerifyProblemKind::kRecordMismatch, record);
        p.message = absl::StrCat("holds a tensor of shape ",
                                 FormatShape(info->sizes),
                                 " but .metadata says ",
                                 FormatShape(record.chunk->sizes));
        Add(std::move(p));
      }
    } else if (record.is_bytes && static_cast<uint64_t>(record.info->length) <=
                                      options_.max_value_record_bytes) {
      std::string bytes(static_cast<size_t>(record.info->length), '\0');
      absl::Status read = file_->ReadInto(base, absl::MakeSpan(bytes));
      if (!read.ok()) {
        io_problem(read);
        return;
      }
      absl::StatusOr<Value> value = ParseValueRecord(bytes);
      if (!value.ok()) {
        VerifyProblem p = RecordProblem(VerifyProblemKind::kBadRecord, record);
        p.message = "value record does not parse";
        p.detail = std::string(value.status().message());
        Add(std::move(p));
      }
    }
  }

  FileSystem& fs_;
  const std::string& dir_;
  const VerifyOptions& options_;
  Tracker& tracker_;
  FileJob& job_;
  std::unique_ptr<RandomAccessFile> file_;
  // The data file's block checksums, if it has a usable file of them, and
  // which of its records a record's entry matched.
  std::optional<BlockChecksums> blocks_;
  std::vector<bool> blocks_matched_;
  std::string buffer_;
  uint64_t counted_in_record_ = 0;
  uint64_t counted_in_file_ = 0;
};

// OK if `relative` names a file inside the checkpoint directory.
bool IsSafeRelativePath(absl::string_view relative) {
  if (relative.empty() || relative.front() == '/') return false;
  for (absl::string_view part : absl::StrSplit(relative, '/')) {
    if (part == "..") return false;
  }
  return !absl::StrContains(relative, absl::string_view("\0", 1));
}

// Checks `.metadata` and groups its records by file.
std::vector<FileJob> PlanJobs(const Metadata& md, VerifyReport& report) {
  VerifyFileReport& mr = report.metadata;
  auto metadata_problem = [&](std::string message, const std::string& key,
                              std::optional<Shape> chunk) {
    VerifyProblem p;
    p.kind = VerifyProblemKind::kMetadata;
    p.file = std::string(kMetadataFileName);
    p.message = std::move(message);
    p.key = key;
    p.chunk_offsets = std::move(chunk);
    mr.problems.push_back(std::move(p));
  };
  // Each tensor chunk by its storage key (MetadataIndex compares fqn and
  // offsets), so that matching storage entries to chunks is O(log n) each.
  std::map<MetadataIndex, std::pair<const TensorProperties*,
                                    const ChunkStorageMetadata*>>
      chunk_of;
  for (const auto& [fqn, entry] : md.state_dict_metadata) {
    if (const auto* tensor = std::get_if<TensorStorageMetadata>(&entry)) {
      ++report.tensors;
      // The chunks must tile the tensor exactly, as every saver (dcp's and
      // PyTorch's) checks before it commits.
      std::vector<std::string> geometry;
      AppendTensorChunkProblems(fqn, *tensor, &geometry);
      const std::string key_prefix = absl::StrCat("\"", fqn, "\": ");
      for (std::string& problem : geometry) {
        // The key is named by the problem's `key` field.
        if (absl::StartsWith(problem, key_prefix)) {
          problem.erase(0, key_prefix.size());
        }
        metadata_problem(std::move(problem), fqn, std::nullopt);
      }
      for (const ChunkStorageMetadata& chunk : tensor->chunks) {
        if (md.storage_data.count(MetadataIndex(fqn, chunk.offsets)) == 0) {
          metadata_problem("no storage entry", fqn, chunk.offsets);
        }
        chunk_of.emplace(MetadataIndex(fqn, chunk.offsets),
                         std::make_pair(&tensor->properties, &chunk));
      }
    } else {
      ++report.values;
      if (md.storage_data.count(MetadataIndex(fqn)) == 0) {
        metadata_problem("no storage entry", fqn,
                         std::nullopt);
      }
    }
  }
  std::map<std::string, FileJob> jobs;
  for (const auto& [index, info] : md.storage_data) {
    ++mr.records;
    RecordRef ref;
    ref.index = &index;
    ref.info = &info;
    auto it = md.state_dict_metadata.find(index.fqn);
    if (it == md.state_dict_metadata.end()) {
      metadata_problem("storage entry without a key in state_dict_metadata",
                       index.fqn, index.offset);
    } else if (std::holds_alternative<TensorStorageMetadata>(it->second)) {
      if (auto found = chunk_of.find(index);
          index.offset.has_value() && found != chunk_of.end()) {
        ref.properties = found->second.first;
        ref.chunk = found->second.second;
      }
      if (ref.chunk == nullptr) {
        metadata_problem("storage entry without a chunk of its tensor",
                         index.fqn, index.offset);
      }
    } else if (index.offset.has_value()) {
      metadata_problem("storage entry with a chunk offset for a bytes value",
                       index.fqn, index.offset);
    } else {
      ref.is_bytes = true;
    }
    if (!IsSafeRelativePath(info.relative_path)) {
      metadata_problem(absl::StrCat("file name ", Quoted(info.relative_path),
                                    " is outside the checkpoint directory"),
                       index.fqn, index.offset);
      continue;
    }
    if (info.length > 0) {
      mr.record_bytes += static_cast<uint64_t>(info.length);
    }
    const std::string name = CleanPath(info.relative_path);
    FileJob& job = jobs[name];
    job.name = name;
    job.report.name = name;
    job.records.push_back(ref);
    ++job.report.records;
    if (info.length > 0) {
      job.report.record_bytes += static_cast<uint64_t>(info.length);
    }
  }
  std::vector<FileJob> out;
  for (auto& [name, job] : jobs) {
    std::stable_sort(job.records.begin(), job.records.end(),
                     [](const RecordRef& a, const RecordRef& b) {
                       return a.info->offset < b.info->offset;
                     });
    out.push_back(std::move(job));
  }
  return out;
}

}  // namespace

absl::string_view VerifyProblemKindName(VerifyProblemKind kind) {
  switch (kind) {
    case VerifyProblemKind::kMetadata:
      return "metadata";
    case VerifyProblemKind::kMissingFile:
      return "missing file";
    case VerifyProblemKind::kUnreadableFile:
      return "unreadable file";
    case VerifyProblemKind::kOutsideFile:
      return "outside file";
    case VerifyProblemKind::kOverlap:
      return "overlap";
    case VerifyProblemKind::kUnreferencedBytes:
      return "unreferenced bytes";
    case VerifyProblemKind::kZipStructure:
      return "zip structure";
    case VerifyProblemKind::kZipLayout:
      return "zip layout";
    case VerifyProblemKind::kCrcMismatch:
      return "crc mismatch";
    case VerifyProblemKind::kRecordMismatch:
      return "record mismatch";
    case VerifyProblemKind::kBadRecord:
      return "bad record";
    case VerifyProblemKind::kBlockChecksums:
      return "block checksums";
  }
  return "unknown";
}

std::string VerifyProblem::Describe() const {
  std::string out = message;
  if (entry.has_value()) absl::StrAppend(&out, " in entry ", Quoted(*entry));
  if (key.has_value()) {
    absl::StrAppend(&out, record_offset.has_value() ? " of the record of "
                                                    : " for ",
                    Quoted(*key));
    if (chunk_offsets.has_value()) {
      absl::StrAppend(&out, " chunk ", FormatShape(*chunk_offsets));
    }
    if (record_offset.has_value()) {
      absl::StrAppend(&out, " at offset ", *record_offset);
    }
  }
  if (byte_offset.has_value() &&
      !(record_offset.has_value() &&
        *byte_offset == static_cast<uint64_t>(*record_offset))) {
    absl::StrAppend(&out, " (byte ", *byte_offset, ")");
  }
  if (!detail.empty()) absl::StrAppend(&out, ": ", detail);
  return out;
}

std::ostream& operator<<(std::ostream& os, const VerifyProblem& problem) {
  return os << problem.file << ": " << problem.Describe();
}

int64_t VerifyReport::num_records() const {
  int64_t n = 0;
  for (const VerifyFileReport& f : files) n += f.records;
  return n;
}

uint64_t VerifyReport::num_file_bytes() const {
  uint64_t n = 0;
  for (const VerifyFileReport& f : files) n += f.size;
  return n;
}

int64_t VerifyReport::num_problems() const {
  int64_t n = static_cast<int64_t>(metadata.problems.size());
  for (const VerifyFileReport& f : files) {
    n += static_cast<int64_t>(f.problems.size());
  }
  return n;
}

int64_t VerifyReport::num_bad_files() const {
  int64_t n = metadata.ok() ? 0 : 1;
  for (const VerifyFileReport& f : files) n += f.ok() ? 0 : 1;
  return n;
}

absl::StatusOr<VerifyReport> VerifyCheckpoint(const std::string& dir,
                                              const VerifyOptions& options) {
  if (options.thread_count < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("VerifyOptions thread_count must be at least 1, got ",
                     options.thread_count));
  }
  std::shared_ptr<FileSystem> fs = options.file_system;
  if (fs == nullptr) fs = NewPosixFileSystem();
  FileSystemReaderOptions read_options;
  read_options.file_system = fs;
  read_options.allow_symlinks = options.allow_symlinks;
  DCP_ASSIGN_OR_RETURN(Metadata md, ReadCheckpointMetadata(dir, read_options));

  VerifyReport report;
  report.dir = dir;
  report.metadata.name = std::string(kMetadataFileName);
  report.metadata.exists = true;
  if (absl::StatusOr<uint64_t> size =
          fs->FileSize(JoinPath(dir, kMetadataFileName));
      size.ok()) {
    report.metadata.size = *size;
  }
  std::vector<FileJob> jobs = PlanJobs(md, report);

  uint64_t bytes_total = 0;
  for (const FileJob& job : jobs) {
    absl::StatusOr<uint64_t> size = fs->FileSize(JoinPath(dir, job.name));
    if (size.ok()) bytes_total += *size;
  }
  Tracker tracker(options, static_cast<int64_t>(jobs.size()), bytes_total);

  std::atomic<size_t> next{0};
  auto work = [&]() {
    for (size_t j = next++; j < jobs.size(); j = next++) {
      try {
        FileChecker(*fs, dir, options, tracker, jobs[j]).Run();
      } catch (const std::exception& e) {
        // libtorch may throw (e.g. out of memory); keep checking the rest.
        VerifyProblem p;
        p.kind = VerifyProblemKind::kUnreadableFile;
        p.file = jobs[j].name;
        p.message = "checking stopped by an exception";
        p.detail = e.what();
        jobs[j].report.problems.push_back(std::move(p));
      }
    }
  };
  const size_t helpers =
      std::min(jobs.size(), static_cast<size_t>(options.thread_count)) > 0
          ? std::min(jobs.size(), static_cast<size_t>(options.thread_count)) -
                1
          : 0;
  std::vector<std::thread> pool;
  for (size_t i = 0; i < helpers; ++i) {
    try {
      pool.emplace_back(work);
    } catch (const std::system_error&) {
      break;  // Fewer threads only make the work slower.
    }
  }
  work();
  for (std::thread& thread : pool) thread.join();

  for (FileJob& job : jobs) report.files.push_back(std::move(job.report));
  return report;
}

}  // namespace dcp
