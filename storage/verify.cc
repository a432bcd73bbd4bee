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
#include "checkpoint/metadata.h"
#include "checkpoint/status.h"
#include "planner/plan_validation.h"
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
constexpr uint32_t kLocalHeaderSignature = 0x04034b50;
constexpr uint32_t kCentralHeaderSignature = 0x02014b50;
constexpr uint32_t kDescriptorSignature = 0x08074b50;
constexpr uint32_t kZip64EndSignature = 0x06064b50;
constexpr uint32_t kZip64LocatorSignature = 0x07064b50;
constexpr uint32_t kEndSignature = 0x06054b50;
constexpr uint64_t kLocalHeaderSize = 30;
constexpr uint64_t kCentralHeaderSize = 46;
constexpr uint64_t kZip64EndSize = 56;
constexpr uint64_t kZip64LocatorSize = 20;
constexpr uint64_t kEndSize = 22;
constexpr uint16_t kZip64ExtraId = 0x0001;
constexpr uint16_t kPaddingExtraId = 0x4246;  // "FB", torch's alignment.
constexpr uint16_t kDescriptorFlag = 0x0008;
constexpr uint16_t kZip64Version = 45;
constexpr uint16_t kTorchZip64MadeBy = 0x031e;  // miniz, as torch.save uses.
constexpr uint32_t kU32Sentinel = 0xffffffff;
constexpr uint16_t kU16Sentinel = 0xffff;

std::string FormatShape(const Shape& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

std::string Quoted(absl::string_view s) {
  return absl::StrCat("\"", absl::CHexEscape(s), "\"");
}

// Little-endian fields of a view; reads past the end give zeros (callers
// check sizes first, so that only happens for bugs).
class Fields {
 public:
  explicit Fields(absl::string_view data) : data_(data) {}
  size_t position() const { return pos_; }
  size_t remaining() const { return data_.size() - pos_; }
  uint16_t U16() { return static_cast<uint16_t>(Get(2)); }
  uint32_t U32() { return static_cast<uint32_t>(Get(4)); }
  uint64_t U64() { return Get(8); }
  absl::string_view Bytes(size_t n) {
    n = std::min(n, remaining());
    absl::string_view out = data_.substr(pos_, n);
    pos_ += n;
    return out;
  }

 private:
  uint64_t Get(size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n && pos_ + i < data_.size(); ++i) {
      v |= uint64_t{static_cast<unsigned char>(data_[pos_ + i])} << (8 * i);
    }
    pos_ = std::min(pos_ + n, data_.size());
    return v;
  }

  absl::string_view data_;
  size_t pos_ = 0;
};

uint32_t Clamp32(uint64_t v) {
  return v >= kU32Sentinel ? kU32Sentinel : static_cast<uint32_t>(v);
}

// A zip-layout problem at `offset` bytes from the start of the record.
struct LayoutIssue {
  std::string message;
  uint64_t offset = 0;
  std::optional<std::string> entry;
};

// The central-directory fields a local header must repeat.
struct CentralFields {
  uint16_t needed = 0;
  uint16_t flags = 0;
  uint16_t time = 0;
  uint16_t date = 0;
  uint32_t crc = 0;
  uint32_t compressed = 0;
  uint32_t uncompressed = 0;
};

// Checks an extra field: only ZIP64 blocks whose values are `expected` (in
// order; fewer values may be present) and 'Z'-filled "FB" padding blocks.
// `base` is the field's offset in the record.
std::optional<LayoutIssue> CheckExtraField(absl::string_view extra,
                                           uint64_t base,
                                           const std::vector<uint64_t>& expected,
                                           const std::string& entry) {
  Fields r(extra);
  while (r.remaining() > 0) {
    const uint64_t at = base + r.position();
    if (r.remaining() < 4) {
      return LayoutIssue{"truncated extra-field block", at, entry};
    }
    const uint16_t id = r.U16();
    const uint16_t len = r.U16();
    if (len > r.remaining()) {
      return LayoutIssue{absl::StrCat("extra-field block of ", len,
                                      " bytes overruns the extra field"),
                         at, entry};
    }
    const uint64_t payload_at = base + r.position();
    absl::string_view payload = r.Bytes(len);
    if (id == kPaddingExtraId) {
      for (size_t i = 0; i < payload.size(); ++i) {
        if (payload[i] != 'Z') {
          return LayoutIssue{"alignment padding byte is not 'Z'",
                             payload_at + i, entry};
        }
      }
    } else if (id == kZip64ExtraId) {
      if (len % 8 != 0 || len / 8 > expected.size() || len == 0) {
        return LayoutIssue{
            absl::StrCat("ZIP64 extra field of ", len, " bytes"), at, entry};
      }
      Fields z(payload);
      for (size_t i = 0; i < len / 8; ++i) {
        if (z.U64() != expected[i]) {
          return LayoutIssue{"ZIP64 extra field contradicts the entry",
                             payload_at + 8 * i, entry};
        }
      }
    } else {
      return LayoutIssue{absl::StrFormat("unknown extra-field id 0x%04x", id),
                         at, entry};
    }
  }
  return std::nullopt;
}

// The strict layout check described in verify.h, for an archive that
// `ReadZipDirectory` accepted as `dir`.
absl::StatusOr<std::optional<LayoutIssue>> CheckZipLayout(
    ZipByteSource& source, const ZipDirectory& dir) {
  const uint64_t size = source.size();
  const uint64_t n = dir.entries.size();
  if (size < kEndSize) return LayoutIssue{"archive too small", 0, {}};
  const uint64_t end_pos = size - kEndSize;
  DCP_ASSIGN_OR_RETURN(absl::string_view end, source.Read(end_pos, kEndSize));
  Fields e(end);
  if (e.U32() != kEndSignature) {
    return LayoutIssue{"bytes after the end of central directory record",
                       end_pos, {}};
  }
  const uint16_t disk = e.U16();
  const uint16_t cd_disk = e.U16();
  const uint16_t entries_disk = e.U16();
  const uint16_t entries_total = e.U16();
  const uint32_t cd_size32 = e.U32();
  const uint32_t cd_offset32 = e.U32();
  const uint16_t comment_len = e.U16();
  if (disk != 0 || cd_disk != 0) {
    return LayoutIssue{"end record disk number is not 0", end_pos + 4, {}};
  }
  if (comment_len != 0) {
    return LayoutIssue{"archive comment length is not 0", end_pos + 20, {}};
  }

  uint64_t cd_offset = cd_offset32;
  uint64_t cd_size = cd_size32;
  uint64_t cd_end = end_pos;
  bool zip64 = false;
  if (end_pos >= kZip64LocatorSize) {
    const uint64_t loc_pos = end_pos - kZip64LocatorSize;
    DCP_ASSIGN_OR_RETURN(absl::string_view loc,
                         source.Read(loc_pos, kZip64LocatorSize));
    Fields l(loc);
    if (l.U32() == kZip64LocatorSignature) {
      zip64 = true;
      const uint32_t z_disk = l.U32();
      const uint64_t z_offset = l.U64();
      const uint32_t total_disks = l.U32();
      if (z_disk != 0) {
        return LayoutIssue{"ZIP64 locator disk is not 0", loc_pos + 4, {}};
      }
      if (total_disks != 1) {
        return LayoutIssue{"ZIP64 locator disk count is not 1", loc_pos + 16,
                           {}};
      }
      if (z_offset > loc_pos || loc_pos - z_offset != kZip64EndSize) {
        return LayoutIssue{
            "ZIP64 end record does not end where the locator starts",
            loc_pos + 8, {}};
      }
      DCP_ASSIGN_OR_RETURN(absl::string_view z64,
                           source.Read(z_offset, kZip64EndSize));
      Fields z(z64);
      z.U32();  // Signature: checked by ReadZipDirectory.
      const uint64_t record_size = z.U64();
      const uint16_t made_by = z.U16();
      const uint16_t needed = z.U16();
      const uint32_t z_disk_this = z.U32();
      const uint32_t z_disk_cd = z.U32();
      const uint64_t z_entries_disk = z.U64();
      const uint64_t z_entries_total = z.U64();
      cd_size = z.U64();
      cd_offset = z.U64();
      if (record_size != kZip64EndSize - 12) {
        return LayoutIssue{"ZIP64 end record size is not 44", z_offset + 4,
                           {}};
      }
      if (made_by != kZip64Version && made_by != kTorchZip64MadeBy) {
        return LayoutIssue{absl::StrFormat("ZIP64 end record made by 0x%04x",
                                           made_by),
                           z_offset + 12, {}};
      }
      if (needed != kZip64Version) {
        return LayoutIssue{
            absl::StrCat("ZIP64 end record needs version ", needed),
            z_offset + 14, {}};
      }
      if (z_disk_this != 0 || z_disk_cd != 0) {
        return LayoutIssue{"ZIP64 end record disk number is not 0",
                           z_offset + 16, {}};
      }
      if (z_entries_disk != n || z_entries_total != n) {
        return LayoutIssue{"ZIP64 end record entry count is wrong",
                           z_offset + 24, {}};
      }
      cd_end = z_offset;
    }
  }
  if (cd_offset > cd_end || cd_end - cd_offset != cd_size) {
    return LayoutIssue{"central directory does not end where the end records "
                       "start",
                       cd_end, {}};
  }
  // The classic record: the real values, or the sentinel when they do not
  // fit (and then only with ZIP64 records).
  const uint16_t want_entries =
      static_cast<uint16_t>(std::min<uint64_t>(n, kU16Sentinel));
  if (entries_disk != want_entries || entries_total != want_entries ||
      (!zip64 && n >= kU16Sentinel)) {
    return LayoutIssue{"end record entry count is wrong", end_pos + 8, {}};
  }
  if (cd_size32 != Clamp32(cd_size) || (!zip64 && cd_size >= kU32Sentinel)) {
    return LayoutIssue{"end record central directory size is wrong",
                       end_pos + 12, {}};
  }
  if (cd_offset32 != Clamp32(cd_offset) ||
      (!zip64 && cd_offset >= kU32Sentinel)) {
    return LayoutIssue{"end record central directory offset is wrong",
                       end_pos + 16, {}};
  }

  // The central directory, entry by entry (same order as `dir.entries`).
  DCP_ASSIGN_OR_RETURN(absl::string_view cd, source.Read(cd_offset, cd_size));
  std::vector<CentralFields> central(n);
  {
    Fields r(cd);
    for (uint64_t i = 0; i < n; ++i) {
      const ZipEntry& entry = dir.entries[i];
      const uint64_t at = cd_offset + r.position();
      if (r.remaining() < kCentralHeaderSize) {
        return LayoutIssue{"central directory truncated", at, entry.name};
      }
      CentralFields& c = central[i];
      r.U32();  // Signature: checked by ReadZipDirectory.
      const uint16_t made_by = r.U16();
      c.needed = r.U16();
      c.flags = r.U16();
      r.U16();  // Method: checked by ReadZipDirectory.
      c.time = r.U16();
      c.date = r.U16();
      c.crc = r.U32();
      c.compressed = r.U32();
      c.uncompressed = r.U32();
      const uint16_t name_len = r.U16();
      const uint16_t extra_len = r.U16();
      const uint16_t entry_comment_len = r.U16();
      const uint16_t disk_start = r.U16();
      const uint16_t internal_attributes = r.U16();
      const uint32_t external_attributes = r.U32();
      const uint32_t header_offset32 = r.U32();
      if (made_by != c.needed) {
        return LayoutIssue{
            absl::StrCat("central directory entry made by version ", made_by,
                         " but needs version ", c.needed),
            at + 4, entry.name};
      }
      if (entry_comment_len != 0) {
        return LayoutIssue{"central directory entry has a comment", at + 32,
                           entry.name};
      }
      if (disk_start != 0) {
        return LayoutIssue{"central directory entry disk is not 0", at + 34,
                           entry.name};
      }
      if (internal_attributes != 0 || external_attributes != 0) {
        return LayoutIssue{"central directory entry has file attributes",
                           at + 36, entry.name};
      }
      r.Bytes(name_len);  // Compared with the local header's.
      const uint64_t extra_at = cd_offset + r.position();
      absl::string_view extra = r.Bytes(extra_len);
      std::vector<uint64_t> expected;
      if (c.uncompressed == kU32Sentinel) expected.push_back(entry.size);
      if (c.compressed == kU32Sentinel) expected.push_back(entry.size);
      if (header_offset32 == kU32Sentinel) {
        expected.push_back(entry.header_offset);
      }
      if (std::optional<LayoutIssue> issue =
              CheckExtraField(extra, extra_at, expected, entry.name)) {
        return issue;
      }
    }
  }

  // The entries, back to back from offset 0 up to the central directory.
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return dir.entries[a].header_offset < dir.entries[b].header_offset;
  });
  uint64_t expected_pos = 0;
  for (size_t k = 0; k < n; ++k) {
    const ZipEntry& entry = dir.entries[order[k]];
    const CentralFields& c = central[order[k]];
    if (entry.header_offset != expected_pos) {
      return LayoutIssue{
          absl::StrCat(entry.header_offset - expected_pos,
                       " bytes before the local header belong to no entry"),
          expected_pos, entry.name};
    }
    const uint64_t at = entry.header_offset;
    DCP_ASSIGN_OR_RETURN(absl::string_view fixed,
                         source.Read(at, kLocalHeaderSize));
    Fields r(fixed);
    r.U32();  // Signature: checked by ReadZipDirectory.
    const uint16_t needed = r.U16();
    const uint16_t flags = r.U16();
    r.U16();  // Method: checked by ReadZipDirectory.
    const uint16_t time = r.U16();
    const uint16_t date = r.U16();
    const uint32_t crc = r.U32();
    const uint32_t compressed = r.U32();
    const uint32_t uncompressed = r.U32();
    const uint16_t name_len = r.U16();
    const uint16_t extra_len = r.U16();
    const bool descriptor = (c.flags & kDescriptorFlag) != 0;
    auto mismatch = [&](absl::string_view field, uint64_t field_offset) {
      return LayoutIssue{absl::StrCat("local header ", field,
                                      " contradicts the central directory"),
                         at + field_offset, entry.name};
    };
    if (needed != c.needed) return mismatch("version", 4);
    if (flags != c.flags) return mismatch("flags", 6);
    if (time != c.time) return mismatch("time", 10);
    if (date != c.date) return mismatch("date", 12);
    if (crc != c.crc && !(descriptor && crc == 0)) return mismatch("CRC", 14);
    const bool zero_sizes = compressed == 0 && uncompressed == 0;
    if (!(descriptor && zero_sizes)) {
      if (compressed != c.compressed) return mismatch("compressed size", 18);
      if (uncompressed != c.uncompressed) return mismatch("size", 22);
    }
    const uint64_t extra_at = at + kLocalHeaderSize + name_len;
    DCP_ASSIGN_OR_RETURN(absl::string_view extra,
                         source.Read(extra_at, extra_len));
    if (std::optional<LayoutIssue> issue = CheckExtraField(
            extra, extra_at, {entry.size, entry.size}, entry.name)) {
      return issue;
    }
    const uint64_t data_end = entry.data_offset + entry.size;
    const uint64_t next =
        k + 1 < n ? dir.entries[order[k + 1]].header_offset : cd_offset;
    if (next < data_end) {  // ReadZipDirectory rejects this already.
      return LayoutIssue{"entries overlap", next, entry.name};
    }
    const uint64_t gap = next - data_end;
    if (!descriptor) {
      if (gap != 0) {
        return LayoutIssue{
            absl::StrCat(gap, " bytes after the entry's data belong to no "
                              "entry"),
            data_end, entry.name};
      }
    } else {
      if (gap != 12 && gap != 16 && gap != 24) {
        return LayoutIssue{absl::StrCat("data descriptor of ", gap, " bytes"),
                           data_end, entry.name};
      }
      DCP_ASSIGN_OR_RETURN(absl::string_view d, source.Read(data_end, gap));
      Fields dr(d);
      uint64_t pos = data_end;
      if (gap != 12) {
        if (dr.U32() != kDescriptorSignature) {
          return LayoutIssue{"bad data descriptor signature", pos, entry.name};
        }
        pos += 4;
      }
      if (dr.U32() != entry.crc32) {
        return LayoutIssue{"data descriptor CRC contradicts the central "
                           "directory",
                           pos, entry.name};
      }
      pos += 4;
      const bool wide = gap == 24;
      for (int i = 0; i < 2; ++i) {
        const uint64_t v = wide ? dr.U64() : dr.U32();
        if (v != entry.size) {
          return LayoutIssue{"data descriptor size contradicts the central "
                             "directory",
                             pos, entry.name};
        }
        pos += wide ? 8 : 4;
      }
    }
    expected_pos = next;
  }
  return std::nullopt;
}

// Serialises progress reports.
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
    for (const RecordRef& record : job_.records) {
      if (!InsideFile(record)) continue;
      counted_in_record_ = 0;
      CheckRecord(record);
      const uint64_t length = static_cast<uint64_t>(record.info->length);
      tracker_.AddBytes(length - std::min(length, counted_in_record_));
      counted_in_file_ += length;
    }
    tracker_.FileDone(report.size - std::min(report.size, counted_in_file_));
  }

 private:
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

  // CRC-32 of `size` bytes at `offset` of the file, in bounded chunks.
  absl::StatusOr<uint32_t> StreamCrc32(uint64_t offset, uint64_t size) {
    if (buffer_.empty()) buffer_.resize(static_cast<size_t>(kCrcChunkBytes));
    uint32_t crc = 0;
    uint64_t done = 0;
    while (done < size) {
      const size_t n =
          static_cast<size_t>(std::min(size - done, kCrcChunkBytes));
      DCP_ASSIGN_OR_RETURN(absl::string_view bytes,
                           file_->Read(offset + done, n, buffer_.data()));
      crc = Crc32(bytes, crc);
      done += n;
      counted_in_record_ += n;
      tracker_.AddBytes(n);
    }
    return crc;
  }

  void CheckRecord(const RecordRef& record) {
    const uint64_t base = static_cast<uint64_t>(record.info->offset);
    const RandomAccessFile& file = *file_;
    ZipByteSource source(
        static_cast<uint64_t>(record.info->length),
        [&file, base](uint64_t offset,
                      uint64_t length) -> absl::StatusOr<std::string> {
          std::string bytes(static_cast<size_t>(length), '\0');
          DCP_RETURN_IF_ERROR(
              file.ReadInto(base + offset, absl::MakeSpan(bytes)));
          return bytes;
        });
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
    absl::StatusOr<std::optional<LayoutIssue>> layout =
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
      if (entry.size <= kSmallEntryBytes) {
        absl::StatusOr<absl::string_view> bytes =
            source.Read(entry.data_offset, entry.size);
        if (bytes.ok()) {
          crc = Crc32(*bytes);
        } else {
          crc = bytes.status();
        }
      } else {
        crc = StreamCrc32(base + entry.data_offset, entry.size);
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
    } else if (const auto* tensor =
                   std::get_if<TensorStorageMetadata>(&it->second)) {
      for (const ChunkStorageMetadata& chunk : tensor->chunks) {
        if (index.offset.has_value() && chunk.offsets == *index.offset) {
          ref.properties = &tensor->properties;
          ref.chunk = &chunk;
          break;
        }
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
