// FileSystemReader: loads from a checkpoint directory (storage/fs_storage.h).
// What it shares with the writer is in storage/fs_storage_common.h.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "ATen/ATen.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/fault_point.h"
#include "core/metadata.h"
#include "core/state_dict.h"
#include "core/status.h"
#include "glog/logging.h"
#include "storage/block_checksums.h"
#include "storage/crc32.h"
#include "storage/file_system.h"
#include "storage/fs_storage.h"
#include "storage/fs_storage_common.h"
#include "storage/plan_storage_data.h"
#include "storage/posix_file_system.h"
#include "storage/torch_record.h"
#include "storage/zip.h"

namespace dcp {

using storage_internal::DescribeIndex;
namespace fs_storage_internal {
namespace {

// Block checksums are verified in reads of at most this size.
constexpr uint64_t kCrcChunkBytes = uint64_t{4} << 20;
// Zip entries up to this size (data.pkl, version, ...) are read through the
// record's cached `ZipByteSource`; larger ones are streamed.
constexpr uint64_t kSmallEntryBytes = uint64_t{1} << 20;
constexpr absl::string_view kChecksumMismatch = "checksum mismatch";
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
  DCP_RETURN_IF_ERROR(fs_storage_internal::CheckCreateArgs(
      "FileSystemReader", path,
      {{"thread_count", options.thread_count},
       {"max_open_files", options.max_open_files}}));
  auto state = std::make_unique<State>();
  state->path = std::move(path);
  state->fs = fs_storage_internal::ReaderFileSystem(options.file_system,
                                                    options.allow_symlinks);
  state->options = std::move(options);
  state->load_id = storage_internal::RandomUuid();
  return std::unique_ptr<FileSystemReader>(
      new FileSystemReader(std::move(state)));
}

const std::string& FileSystemReader::path() const { return state_->path; }

absl::Status FileSystemReader::Reset(std::optional<std::string> checkpoint_id) {
  if (checkpoint_id.has_value() && !checkpoint_id->empty()) {
    state_->path = *std::move(checkpoint_id);
  }
  state_->load_id = storage_internal::RandomUuid();
  state_->set_up = false;
  state_->metadata = nullptr;
  return absl::OkStatus();
}

absl::StatusOr<Metadata> FileSystemReader::ReadMetadata() {
  DCP_ASSIGN_OR_RETURN(
      Metadata metadata,
      fs_storage_internal::ReadMetadataFile(
          *state_->fs, state_->path, state_->options.max_metadata_bytes,
          state_->options.decode_limits, state_->options.use_metadata_sidecar));
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
  DCP_RETURN_IF_ERROR(FirstError(fs_storage_internal::RunParallel(
      file_list.size(), threads, [&](size_t f) {
        FileWork& file = *file_list[f];
        absl::Status status = fs_storage_internal::CheckFile(
            *s.fs, file, records, items, plan.items, s.options.verify_checksums,
            s.options.use_block_checksums, s.options.decode_limits);
        if (!status.ok() || file.items.empty() || kept.fetch_add(1) >= keep) {
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
