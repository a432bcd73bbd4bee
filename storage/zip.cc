#include "storage/zip.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <limits>
#include <numeric>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "core/status.h"
#include "storage/crc32.h"

namespace dcp {
namespace {

constexpr uint32_t kLocalHeaderSignature = 0x04034b50;
constexpr uint32_t kCentralHeaderSignature = 0x02014b50;
constexpr uint32_t kZip64EndSignature = 0x06064b50;
constexpr uint32_t kZip64LocatorSignature = 0x07064b50;
constexpr uint32_t kEndSignature = 0x06054b50;

constexpr uint64_t kLocalHeaderSize = 30;
constexpr uint64_t kCentralHeaderSize = 46;
constexpr uint64_t kZip64EndSize = 56;
constexpr uint64_t kZip64LocatorSize = 20;
constexpr uint64_t kEndSize = 22;
constexpr uint64_t kMaxCommentSize = 0xffff;

constexpr uint16_t kZip64ExtraId = 0x0001;
constexpr uint16_t kPaddingExtraId = 0x4246;  // "FB" as a little-endian u16.
constexpr uint16_t kUtf8Flag = 0x0800;
constexpr uint16_t kEncryptedFlag = 0x0001;
constexpr uint16_t kStrongEncryptionFlag = 0x0040;
constexpr uint16_t kZip64Version = 45;
constexpr uint16_t kDescriptorFlag = 0x0008;
constexpr uint32_t kDescriptorSignature = 0x08074b50;
constexpr uint16_t kTorchZip64MadeBy = 0x031e;  // miniz, as torch.save uses.

constexpr uint32_t kU32Sentinel = 0xffffffff;
constexpr uint16_t kU16Sentinel = 0xffff;

void PutU16(std::string& out, uint16_t v) {
  out.push_back(static_cast<char>(v & 0xff));
  out.push_back(static_cast<char>(v >> 8));
}
void PutU32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}
void PutU64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}

uint32_t Clamp32(uint64_t v) {
  return v >= kU32Sentinel ? kU32Sentinel : static_cast<uint32_t>(v);
}

// Little-endian fields from a bounded view. Callers check `remaining()` (or
// the sizes they read) before reading; reading past the end is a bug.
class LeReader {
 public:
  explicit LeReader(absl::string_view data) : data_(data) {}
  size_t position() const { return pos_; }
  size_t remaining() const { return data_.size() - pos_; }
  uint16_t U16() { return static_cast<uint16_t>(Get(2)); }
  uint32_t U32() { return static_cast<uint32_t>(Get(4)); }
  uint64_t U64() { return Get(8); }
  // Reads past the end give what is there (Bytes) or zeros (U*), never
  // out-of-bounds memory.
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

absl::Status ZipError(absl::string_view message) {
  return absl::DataLossError(absl::StrCat("zip: ", message));
}

std::string Quote(absl::string_view s) {
  // Names come from disk: keep messages printable and bounded.
  std::string out = "\"";
  const size_t limit = std::min<size_t>(s.size(), 200);
  for (size_t i = 0; i < limit; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c < 0x20 || c >= 0x7f) {
      absl::StrAppendFormat(&out, "\\x%02x", c);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  if (limit < s.size()) out += "...";
  out += "\"";
  return out;
}

// The zip64 extended-information fields of a central or local header, in
// their fixed order; each is present only if the caller says it is needed.
struct Zip64Fields {
  uint64_t uncompressed_size = 0;
  uint64_t compressed_size = 0;
  uint64_t header_offset = 0;
};

absl::StatusOr<Zip64Fields> ParseZip64Extra(absl::string_view extra,
                                            bool need_uncompressed,
                                            bool need_compressed,
                                            bool need_offset,
                                            absl::string_view where) {
  LeReader r(extra);
  while (r.remaining() >= 4) {
    const uint16_t id = r.U16();
    const uint16_t len = r.U16();
    if (len > r.remaining()) {
      return ZipError(absl::StrCat(where, ": extra field 0x", absl::Hex(id),
                                   " of ", len, " bytes overruns the header"));
    }
    absl::string_view payload = r.Bytes(len);
    if (id != kZip64ExtraId) continue;
    const size_t needed = (need_uncompressed ? 8 : 0) +
                          (need_compressed ? 8 : 0) + (need_offset ? 8 : 0);
    if (payload.size() < needed) {
      return ZipError(absl::StrCat(where, ": ZIP64 extra field has ",
                                   payload.size(), " bytes, needs ", needed));
    }
    LeReader p(payload);
    Zip64Fields fields;
    if (need_uncompressed) fields.uncompressed_size = p.U64();
    if (need_compressed) fields.compressed_size = p.U64();
    if (need_offset) fields.header_offset = p.U64();
    return fields;
  }
  if (r.remaining() != 0) {
    return ZipError(absl::StrCat(where, ": truncated extra field"));
  }
  return ZipError(absl::StrCat(where,
                               ": sizes or offset are 0xffffffff "
                               "but there is no ZIP64 extra field"));
}

std::string LocalHeader(const ZipEntrySpec& entry, uint64_t offset) {
  const bool zip64 = entry.size >= kU32Sentinel;
  const uint64_t zip64_extra_size = zip64 ? 4 + 16 : 0;
  const uint64_t unpadded =
      offset + kLocalHeaderSize + entry.name.size() + zip64_extra_size + 4;
  const uint64_t padding =
      (kZipDataAlignment - unpadded % kZipDataAlignment) % kZipDataAlignment;

  std::string out;
  out.reserve(kLocalHeaderSize + entry.name.size() + zip64_extra_size + 4 +
              padding);
  PutU32(out, kLocalHeaderSignature);
  PutU16(out, zip64 ? kZip64Version : 0);  // version needed to extract
  PutU16(out, kUtf8Flag);
  PutU16(out, 0);  // method: stored
  PutU16(out, 0);  // time
  PutU16(out, 0);  // date
  PutU32(out, entry.crc32);
  PutU32(out, Clamp32(entry.size));  // compressed size
  PutU32(out, Clamp32(entry.size));  // uncompressed size
  PutU16(out, static_cast<uint16_t>(entry.name.size()));
  PutU16(out, static_cast<uint16_t>(zip64_extra_size + 4 + padding));
  out += entry.name;
  if (zip64) {
    PutU16(out, kZip64ExtraId);
    PutU16(out, 16);
    PutU64(out, entry.size);
    PutU64(out, entry.size);
  }
  PutU16(out, kPaddingExtraId);
  PutU16(out, static_cast<uint16_t>(padding));
  out.append(padding, 'Z');
  return out;
}

void AppendCentralHeader(const ZipEntrySpec& entry, uint64_t header_offset,
                         std::string& out) {
  const bool big_size = entry.size >= kU32Sentinel;
  const bool big_offset = header_offset >= kU32Sentinel;
  const uint16_t extra_size =
      (big_size || big_offset) ? 4 + (big_size ? 16 : 0) + (big_offset ? 8 : 0)
                               : 0;
  const uint16_t version = (big_size || big_offset) ? kZip64Version : 0;
  PutU32(out, kCentralHeaderSignature);
  PutU16(out, version);  // made by
  PutU16(out, version);  // needed to extract
  PutU16(out, kUtf8Flag);
  PutU16(out, 0);  // method
  PutU16(out, 0);  // time
  PutU16(out, 0);  // date
  PutU32(out, entry.crc32);
  PutU32(out, Clamp32(entry.size));
  PutU32(out, Clamp32(entry.size));
  PutU16(out, static_cast<uint16_t>(entry.name.size()));
  PutU16(out, extra_size);
  PutU16(out, 0);  // comment length
  PutU16(out, 0);  // disk number start
  PutU16(out, 0);  // internal attributes
  PutU32(out, 0);  // external attributes
  PutU32(out, Clamp32(header_offset));
  out += entry.name;
  if (extra_size != 0) {
    PutU16(out, kZip64ExtraId);
    PutU16(out, static_cast<uint16_t>(extra_size - 4));
    if (big_size) {
      PutU64(out, entry.size);
      PutU64(out, entry.size);
    }
    if (big_offset) PutU64(out, header_offset);
  }
}

}  // namespace

// ---- ZipLayout --------------------------------------------------------------

absl::StatusOr<ZipLayout> ZipLayout::Create(std::vector<ZipEntrySpec> entries) {
  if (entries.empty()) {
    return absl::InvalidArgumentError("zip: an archive needs an entry");
  }
  std::vector<absl::string_view> names;
  for (const ZipEntrySpec& entry : entries) {
    if (entry.name.empty() || entry.name.size() > 0xffff) {
      return absl::InvalidArgumentError(
          absl::StrCat("zip: entry name ", Quote(entry.name), " of ",
                       entry.name.size(), " bytes (must be 1 to 65535)"));
    }
    names.push_back(entry.name);
  }
  std::sort(names.begin(), names.end());
  auto dup = std::adjacent_find(names.begin(), names.end());
  if (dup != names.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("zip: duplicate entry name ", Quote(*dup)));
  }

  ZipLayout layout;
  uint64_t offset = 0;
  for (const ZipEntrySpec& entry : entries) {
    layout.header_offsets_.push_back(offset);
    layout.headers_.push_back(LocalHeader(entry, offset));
    offset += layout.headers_.back().size() + entry.size;
  }
  layout.trailer_offset_ = offset;

  std::string& t = layout.trailer_;
  for (size_t i = 0; i < entries.size(); ++i) {
    AppendCentralHeader(entries[i], layout.header_offsets_[i], t);
  }
  const uint64_t cd_offset = offset;
  const uint64_t cd_size = t.size();
  const uint64_t n = entries.size();

  const uint64_t zip64_end_offset = cd_offset + cd_size;
  PutU32(t, kZip64EndSignature);
  PutU64(t, kZip64EndSize - 12);  // size of the rest of the record
  PutU16(t, kZip64Version);       // made by
  PutU16(t, kZip64Version);       // needed to extract
  PutU32(t, 0);                   // this disk
  PutU32(t, 0);                   // disk with the central directory
  PutU64(t, n);                   // entries on this disk
  PutU64(t, n);                   // entries in total
  PutU64(t, cd_size);
  PutU64(t, cd_offset);

  PutU32(t, kZip64LocatorSignature);
  PutU32(t, 0);  // disk with the ZIP64 end record
  PutU64(t, zip64_end_offset);
  PutU32(t, 1);  // total number of disks

  PutU32(t, kEndSignature);
  PutU16(t, 0);  // this disk
  PutU16(t, 0);  // disk with the central directory
  PutU16(t, static_cast<uint16_t>(std::min<uint64_t>(n, kU16Sentinel)));
  PutU16(t, static_cast<uint16_t>(std::min<uint64_t>(n, kU16Sentinel)));
  PutU32(t, Clamp32(cd_size));
  PutU32(t, Clamp32(cd_offset));
  PutU16(t, 0);  // comment length

  layout.entries_ = std::move(entries);
  return layout;
}

absl::StatusOr<std::string> BuildZipArchive(
    absl::Span<const std::pair<std::string, absl::string_view>> entries) {
  std::vector<ZipEntrySpec> specs;
  specs.reserve(entries.size());
  for (const auto& [name, data] : entries) {
    specs.push_back({name, data.size(), Crc32(data)});
  }
  DCP_ASSIGN_OR_RETURN(ZipLayout layout, ZipLayout::Create(std::move(specs)));
  std::string out;
  out.reserve(layout.total_size());
  for (size_t i = 0; i < entries.size(); ++i) {
    out.append(layout.header(i).data(), layout.header(i).size());
    out.append(entries[i].second.data(), entries[i].second.size());
  }
  out.append(layout.trailer().data(), layout.trailer().size());
  return out;
}

// ---- ZipByteSource ----------------------------------------------------------

ZipByteSource::ZipByteSource(absl::string_view archive)
    : size_(archive.size()), memory_(archive), in_memory_(true) {}

ZipByteSource::ZipByteSource(uint64_t archive_size, ZipReadFn read,
                             uint64_t block_size)
    : size_(archive_size),
      read_(std::move(read)),
      block_size_(std::max<uint64_t>(block_size, 1)) {}

absl::StatusOr<absl::string_view> ZipByteSource::Read(uint64_t offset,
                                                      uint64_t length) {
  if (offset > size_ || length > size_ - offset) {
    return ZipError(absl::StrCat("read of ", length, " bytes at offset ",
                                 offset, " is outside the archive of ", size_,
                                 " bytes"));
  }
  if (in_memory_) return memory_.substr(offset, length);
  if (length == 0) return absl::string_view();
  const uint64_t end = offset + length;
  // The only block that can contain the read (see `index_`).
  auto next = index_.upper_bound(offset);
  if (next != index_.begin()) {
    const Block& block = *std::prev(next)->second;
    if (end <= block.offset + block.bytes.size()) {
      return absl::string_view(block.bytes)
          .substr(offset - block.offset, length);
    }
  }
  // Fetch the read widened to at least block_size_ bytes, forwards and then
  // (near the end of the archive or the next block) backwards, over bytes
  // no block holds yet: the first look at the end records also fetches the
  // central directory, and scattered reads never fetch a byte twice except
  // the ones they ask for.
  const uint64_t want = std::max(length, block_size_);
  uint64_t start = offset;
  uint64_t stop = end;
  const uint64_t gap_end = next == index_.end() ? size_ : next->first;
  if (stop < gap_end) stop = std::min(gap_end, start + want);
  uint64_t gap_start = 0;
  if (next != index_.begin()) {
    const Block& prev = *std::prev(next)->second;
    gap_start = prev.offset + prev.bytes.size();
  }
  if (stop - start < want && gap_start < start) {
    start = std::max(gap_start, stop >= want ? stop - want : uint64_t{0});
  }
  const uint64_t window = stop - start;
  ++num_fetches_;
  absl::StatusOr<std::string> bytes = read_(start, window);
  if (!bytes.ok()) return bytes.status();
  if (bytes->size() != window) {
    return ZipError(absl::StrCat("read of ", window, " bytes at offset ", start,
                                 " returned ", bytes->size(), " bytes"));
  }
  blocks_.push_back(Block{start, *std::move(bytes)});
  const Block& added = blocks_.back();
  // Blocks inside the new one follow each other from `start` on.
  auto inside = index_.lower_bound(start);
  while (inside != index_.end() &&
         inside->second->offset + inside->second->bytes.size() <= stop) {
    inside = index_.erase(inside);
  }
  index_.emplace(start, &added);
  return absl::string_view(added.bytes).substr(offset - start, length);
}

// ---- Reading ----------------------------------------------------------------

std::ostream& operator<<(std::ostream& os, const ZipEntry& entry) {
  return os << "{" << Quote(entry.name) << " header@" << entry.header_offset
            << " data@" << entry.data_offset << " size " << entry.size
            << absl::StrFormat(" crc 0x%08x}", entry.crc32);
}

std::ostream& operator<<(std::ostream& os, const ZipDirectory& dir) {
  os << "{size " << dir.archive_size << " prefix " << Quote(dir.prefix)
     << " entries [";
  for (size_t i = 0; i < dir.entries.size(); ++i) {
    os << (i ? ", " : "") << dir.entries[i];
  }
  return os << "]}";
}

namespace {

// Compares `name` with the concatenation `a + b`, like string comparison.
int CompareWithJoined(absl::string_view name, absl::string_view a,
                      absl::string_view b) {
  const size_t n = std::min(name.size(), a.size());
  if (int c = name.substr(0, n).compare(a.substr(0, n)); c != 0) return c;
  if (n < a.size()) return -1;  // `name` is a proper prefix of `a`.
  return name.substr(n).compare(b);
}

}  // namespace

const ZipEntry* ZipDirectory::Find(absl::string_view relative_name) const {
  if (!by_name_.empty() && by_name_.size() == entries.size()) {
    auto it = std::lower_bound(
        by_name_.begin(), by_name_.end(), relative_name,
        [&](uint32_t i, absl::string_view key) {
          return CompareWithJoined(entries[i].name, prefix, key) < 0;
        });
    if (it != by_name_.end() &&
        CompareWithJoined(entries[*it].name, prefix, relative_name) == 0) {
      return &entries[*it];
    }
    return nullptr;
  }
  for (const ZipEntry& entry : entries) {
    if (entry.name.size() == prefix.size() + relative_name.size() &&
        absl::string_view(entry.name).substr(prefix.size()) == relative_name &&
        absl::string_view(entry.name).substr(0, prefix.size()) == prefix) {
      return &entry;
    }
  }
  return nullptr;
}

namespace {

struct EndInfo {
  uint64_t entries = 0;
  uint64_t cd_offset = 0;
  uint64_t cd_size = 0;
  uint64_t cd_end = 0;  // Where the end records start.
};

// Finds the classic end record: at the very end when there is no comment
// (always, for torch.save archives), else scanning back over a comment.
absl::StatusOr<uint64_t> FindEndRecord(ZipByteSource& source) {
  const uint64_t size = source.size();
  if (size < kEndSize) {
    return ZipError(absl::StrCat("archive of ", size,
                                 " bytes is too small to hold an end of "
                                 "central directory record"));
  }
  DCP_ASSIGN_OR_RETURN(absl::string_view last,
                       source.Read(size - kEndSize, kEndSize));
  LeReader r(last);
  if (r.U32() == kEndSignature) {
    LeReader c(last.substr(20));
    if (c.U16() == 0) return size - kEndSize;
  }
  const uint64_t span = std::min(size, kEndSize + kMaxCommentSize);
  DCP_ASSIGN_OR_RETURN(absl::string_view tail, source.Read(size - span, span));
  for (uint64_t i = span - kEndSize + 1; i-- > 0;) {
    LeReader e(tail.substr(i, kEndSize));
    if (e.U32() != kEndSignature) continue;
    LeReader c(tail.substr(i + 20, 2));
    if (c.U16() == span - i - kEndSize) return size - span + i;
  }
  return ZipError(absl::StrCat(
      "no end of central directory record (signature PK\\5\\6) at the end of "
      "the ",
      size, "-byte archive"));
}

absl::StatusOr<EndInfo> ReadEndRecords(ZipByteSource& source) {
  DCP_ASSIGN_OR_RETURN(const uint64_t end_pos, FindEndRecord(source));
  DCP_ASSIGN_OR_RETURN(absl::string_view end_bytes,
                       source.Read(end_pos, kEndSize));
  LeReader e(end_bytes);
  e.U32();
  const uint16_t disk = e.U16();
  const uint16_t cd_disk = e.U16();
  const uint16_t entries_disk = e.U16();
  const uint16_t entries_total = e.U16();
  const uint32_t cd_size = e.U32();
  const uint32_t cd_offset = e.U32();

  EndInfo info;
  bool zip64 = false;
  uint64_t locator_pos = 0;
  if (end_pos >= kZip64LocatorSize) {
    locator_pos = end_pos - kZip64LocatorSize;
    DCP_ASSIGN_OR_RETURN(absl::string_view loc,
                         source.Read(locator_pos, kZip64LocatorSize));
    zip64 = LeReader(loc).U32() == kZip64LocatorSignature;
  }
  if (!zip64) {
    if (disk != 0 || cd_disk != 0 || entries_disk != entries_total) {
      return ZipError(
          absl::StrCat("multi-disk archives are not supported (disk ", disk,
                       ", central directory disk ", cd_disk, ", entries ",
                       entries_disk, " of ", entries_total, ")"));
    }
    info.entries = entries_total;
    info.cd_size = cd_size;
    info.cd_offset = cd_offset;
    info.cd_end = end_pos;
  } else {
    DCP_ASSIGN_OR_RETURN(absl::string_view loc,
                         source.Read(locator_pos, kZip64LocatorSize));
    LeReader l(loc);
    l.U32();
    const uint32_t z64_disk = l.U32();
    const uint64_t z64_offset = l.U64();
    const uint32_t total_disks = l.U32();
    if (z64_disk != 0 || total_disks > 1) {
      return ZipError(absl::StrCat(
          "multi-disk archives are not supported (ZIP64 locator: disk ",
          z64_disk, ", ", total_disks, " disks)"));
    }
    if (z64_offset > locator_pos || locator_pos - z64_offset < kZip64EndSize) {
      return ZipError(absl::StrCat("ZIP64 end record offset ", z64_offset,
                                   " does not leave room for the record "
                                   "before the locator at ",
                                   locator_pos));
    }
    DCP_ASSIGN_OR_RETURN(absl::string_view z64,
                         source.Read(z64_offset, kZip64EndSize));
    LeReader z(z64);
    if (z.U32() != kZip64EndSignature) {
      return ZipError(absl::StrCat("bad ZIP64 end record signature at offset ",
                                   z64_offset));
    }
    const uint64_t record_size = z.U64();
    z.U16();
    z.U16();
    const uint32_t z_disk = z.U32();
    const uint32_t z_cd_disk = z.U32();
    const uint64_t z_entries_disk = z.U64();
    const uint64_t z_entries_total = z.U64();
    const uint64_t z_cd_size = z.U64();
    const uint64_t z_cd_offset = z.U64();
    if (record_size != locator_pos - z64_offset - 12) {
      return ZipError(absl::StrCat(
          "ZIP64 end record at offset ", z64_offset, " claims ", record_size,
          " bytes but the locator is at offset ", locator_pos));
    }
    if (z_disk != 0 || z_cd_disk != 0 || z_entries_disk != z_entries_total) {
      return ZipError(
          "multi-disk archives are not supported (ZIP64 end record)");
    }
    // The classic record holds the same values, or the sentinel when they
    // do not fit.
    auto consistent = [](uint64_t classic, uint64_t sentinel, uint64_t real) {
      return classic == sentinel || classic == real;
    };
    if (!consistent(entries_total, kU16Sentinel, z_entries_total) ||
        !consistent(entries_disk, kU16Sentinel, z_entries_disk) ||
        !consistent(cd_size, kU32Sentinel, z_cd_size) ||
        !consistent(cd_offset, kU32Sentinel, z_cd_offset)) {
      return ZipError(
          "the end of central directory record contradicts the ZIP64 end "
          "record");
    }
    info.entries = z_entries_total;
    info.cd_size = z_cd_size;
    info.cd_offset = z_cd_offset;
    info.cd_end = z64_offset;
  }
  if (info.cd_offset > info.cd_end ||
      info.cd_end - info.cd_offset != info.cd_size) {
    return ZipError(
        absl::StrCat("central directory [", info.cd_offset, ", +", info.cd_size,
                     ") does not end where the end records start (offset ",
                     info.cd_end, ")"));
  }
  if (info.cd_size > kMaxCentralDirectorySize) {
    return ZipError(absl::StrCat("central directory of ", info.cd_size,
                                 " bytes exceeds the limit of ",
                                 kMaxCentralDirectorySize));
  }
  if (info.entries == 0) return ZipError("archive has no entries");
  if (info.entries > info.cd_size / kCentralHeaderSize) {
    return ZipError(absl::StrCat(info.entries,
                                 " entries cannot fit in a central directory "
                                 "of ",
                                 info.cd_size, " bytes"));
  }
  return info;
}

absl::Status ParseCentralDirectory(absl::string_view cd, const EndInfo& end,
                                   std::vector<ZipEntry>& entries) {
  LeReader r(cd);
  for (uint64_t i = 0; i < end.entries; ++i) {
    const uint64_t at = end.cd_offset + r.position();
    // Messages are built only on errors: this loop runs once per entry.
    auto where = [&] {
      return absl::StrCat("central directory entry ", i, " (offset ", at, ")");
    };
    if (r.remaining() < kCentralHeaderSize) {
      return ZipError(absl::StrCat(where(), ": truncated"));
    }
    if (r.U32() != kCentralHeaderSignature) {
      return ZipError(absl::StrCat(where(), ": bad signature"));
    }
    r.U16();  // made by
    r.U16();  // needed
    const uint16_t flags = r.U16();
    const uint16_t method = r.U16();
    r.U16();  // time
    r.U16();  // date
    const uint32_t crc = r.U32();
    const uint32_t compressed = r.U32();
    const uint32_t uncompressed = r.U32();
    const uint16_t name_len = r.U16();
    const uint16_t extra_len = r.U16();
    const uint16_t comment_len = r.U16();
    const uint16_t disk_start = r.U16();
    r.U16();  // internal attributes
    r.U32();  // external attributes
    const uint32_t header_offset = r.U32();
    if (r.remaining() < uint64_t{name_len} + extra_len + comment_len) {
      return ZipError(absl::StrCat(where(),
                                   ": name, extra and comment overrun "
                                   "the central directory"));
    }
    ZipEntry entry;
    entry.name = std::string(r.Bytes(name_len));
    absl::string_view extra = r.Bytes(extra_len);
    r.Bytes(comment_len);
    auto named = [&] { return absl::StrCat(where(), " ", Quote(entry.name)); };
    if (flags & (kEncryptedFlag | kStrongEncryptionFlag)) {
      return ZipError(absl::StrCat(named(),
                                   ": encrypted entries are not "
                                   "supported"));
    }
    if (method != 0) {
      return ZipError(absl::StrCat(named(), ": compression method ", method,
                                   " is not supported (only 0, stored)"));
    }
    const bool big_uncompressed = uncompressed == kU32Sentinel;
    const bool big_compressed = compressed == kU32Sentinel;
    const bool big_offset = header_offset == kU32Sentinel;
    uint64_t size64 = uncompressed;
    uint64_t compressed64 = compressed;
    uint64_t offset64 = header_offset;
    if (big_uncompressed || big_compressed || big_offset) {
      // Per the ZIP spec only the sentinel fields appear, in fixed order.
      DCP_ASSIGN_OR_RETURN(Zip64Fields z,
                           ParseZip64Extra(extra, big_uncompressed,
                                           big_compressed, big_offset, named()));
      if (big_uncompressed) size64 = z.uncompressed_size;
      if (big_compressed) compressed64 = z.compressed_size;
      if (big_offset) offset64 = z.header_offset;
    }
    if (disk_start != 0 && !(disk_start == kU16Sentinel && big_offset)) {
      return ZipError(absl::StrCat(named(), ": entry on disk ", disk_start));
    }
    if (compressed64 != size64) {
      return ZipError(absl::StrCat(named(),
                                   ": stored entry with compressed "
                                   "size ",
                                   compressed64, " != size ", size64));
    }
    entry.size = size64;
    entry.crc32 = crc;
    entry.header_offset = offset64;
    entries.push_back(std::move(entry));
  }
  if (r.remaining() != 0) {
    return ZipError(absl::StrCat("central directory has ", r.remaining(),
                                 " bytes after its ", end.entries, " entries"));
  }
  return absl::OkStatus();
}

// Checks the common prefix and unique names, and returns the positions of
// the entries sorted by name (ZipDirectory::by_name_).
absl::StatusOr<std::vector<uint32_t>> CheckNames(
    const std::vector<ZipEntry>& entries, std::string& prefix) {
  const std::string& first = entries.front().name;
  const size_t slash = first.find('/');
  if (slash == std::string::npos || slash == 0) {
    return ZipError(absl::StrCat("entry ", Quote(first),
                                 " has no top-level directory prefix"));
  }
  prefix = first.substr(0, slash + 1);
  for (const ZipEntry& entry : entries) {
    if (entry.name.size() <= prefix.size() ||
        absl::string_view(entry.name).substr(0, prefix.size()) != prefix) {
      return ZipError(absl::StrCat("entry ", Quote(entry.name),
                                   " is not inside the archive's top-level "
                                   "directory ",
                                   Quote(prefix)));
    }
  }
  // Entry counts are bounded by kMaxCentralDirectorySize / 46 < 2^32.
  std::vector<uint32_t> order(entries.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
    return entries[a].name < entries[b].name;
  });
  auto dup = std::adjacent_find(
      order.begin(), order.end(),
      [&](uint32_t a, uint32_t b) { return entries[a].name == entries[b].name; });
  if (dup != order.end()) {
    return ZipError(absl::StrCat("duplicate entry ", Quote(entries[*dup].name)));
  }
  return order;
}

// Reads and checks `entry`'s local header and sets its data offset. Reads
// the fixed part and the name, and the extra field only when the sizes are
// in it (ZIP64), so that a header costs no more reads than it needs.
absl::Status ReadLocalHeader(ZipByteSource& source, uint64_t cd_offset,
                             ZipEntry& entry) {
  auto where = [&] { return absl::StrCat("entry ", Quote(entry.name)); };
  if (entry.header_offset > cd_offset ||
      cd_offset - entry.header_offset < kLocalHeaderSize) {
    return ZipError(
        absl::StrCat(where(), ": local header offset ", entry.header_offset,
                     " is not before the central directory at ", cd_offset));
  }
  DCP_ASSIGN_OR_RETURN(absl::string_view fixed,
                       source.Read(entry.header_offset, kLocalHeaderSize));
  LeReader r(fixed);
  if (r.U32() != kLocalHeaderSignature) {
    return ZipError(absl::StrCat(where(),
                                 ": bad local header signature at "
                                 "offset ",
                                 entry.header_offset));
  }
  r.U16();  // needed
  const uint16_t flags = r.U16();
  const uint16_t method = r.U16();
  r.U16();  // time
  r.U16();  // date
  const uint32_t crc = r.U32();
  const uint32_t compressed = r.U32();
  const uint32_t uncompressed = r.U32();
  const uint16_t name_len = r.U16();
  const uint16_t extra_len = r.U16();
  const uint64_t variable = uint64_t{name_len} + extra_len;
  const uint64_t after_fixed = entry.header_offset + kLocalHeaderSize;
  if (variable > cd_offset - after_fixed) {
    return ZipError(absl::StrCat(where(),
                                 ": local header name and extra field "
                                 "overrun the central directory"));
  }
  DCP_ASSIGN_OR_RETURN(absl::string_view name,
                       source.Read(after_fixed, name_len));
  if (name != entry.name) {
    return ZipError(
        absl::StrCat(where(), ": local header names ", Quote(name)));
  }
  if (method != 0 || (flags & (kEncryptedFlag | kStrongEncryptionFlag))) {
    return ZipError(absl::StrCat(where(), ": local header has method ",
                                 method, " and flags 0x", absl::Hex(flags)));
  }
  // With a data descriptor (flag bit 3, as torch writes) the local CRC and
  // sizes may be zero; otherwise they must match the central directory.
  const bool descriptor = flags & 0x0008;
  if (!(descriptor && crc == 0) && crc != entry.crc32) {
    return ZipError(absl::StrCat(where(), ": local header CRC 0x",
                                 absl::Hex(crc),
                                 " contradicts the central directory's 0x",
                                 absl::Hex(entry.crc32)));
  }
  if (!(descriptor && compressed == 0 && uncompressed == 0)) {
    uint64_t c = compressed, u = uncompressed;
    if (c == kU32Sentinel || u == kU32Sentinel) {
      DCP_ASSIGN_OR_RETURN(absl::string_view extra,
                           source.Read(after_fixed + name_len, extra_len));
      DCP_ASSIGN_OR_RETURN(
          Zip64Fields z,
          ParseZip64Extra(extra, /*need_uncompressed=*/true,
                          /*need_compressed=*/true, /*need_offset=*/false,
                          where()));
      c = z.compressed_size;
      u = z.uncompressed_size;
    }
    if (c != entry.size || u != entry.size) {
      return ZipError(absl::StrCat(where(), ": local header sizes ", c, "/", u,
                                   " contradict the central directory's ",
                                   entry.size));
    }
  }
  entry.data_offset = after_fixed + variable;
  if (entry.size > cd_offset - entry.data_offset) {
    return ZipError(
        absl::StrCat(where(), ": data [", entry.data_offset, ", +", entry.size,
                     ") runs past the central directory at ", cd_offset));
  }
  return absl::OkStatus();
}

absl::Status Overlap(const ZipEntry& prev, const ZipEntry& next) {
  return ZipError(absl::StrCat(
      "entry ", Quote(prev.name), " (header at ", prev.header_offset,
      ", data [", prev.data_offset, ", ", prev.data_offset + prev.size,
      ")) overlaps entry ", Quote(next.name), " (header at ",
      next.header_offset, ")"));
}

// Reads every local header, in offset order, checking that each entry
// starts after the previous one's data: the reads of valid entries never
// overlap, so hostile headers (say, names and extra fields spanning other
// entries) cannot make the bytes read, or the bytes a ZipByteSource
// fetches, exceed the archive by more than one header.
absl::Status ReadLocalHeaders(ZipByteSource& source, uint64_t cd_offset,
                              std::vector<ZipEntry>& entries) {
  std::vector<uint32_t> order(entries.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
    return entries[a].header_offset < entries[b].header_offset;
  });
  const ZipEntry* prev = nullptr;
  for (uint32_t i : order) {
    ZipEntry& entry = entries[i];
    // A bad header is the likelier corruption, so it is reported first; the
    // first overlapping header is the only one read.
    DCP_RETURN_IF_ERROR(ReadLocalHeader(source, cd_offset, entry));
    if (prev != nullptr &&
        prev->data_offset + prev->size > entry.header_offset) {
      return Overlap(*prev, entry);
    }
    prev = &entry;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ZipDirectory> ReadZipDirectory(ZipByteSource& source) {
  DCP_ASSIGN_OR_RETURN(const EndInfo end, ReadEndRecords(source));
  DCP_ASSIGN_OR_RETURN(absl::string_view cd,
                       source.Read(end.cd_offset, end.cd_size));
  ZipDirectory dir;
  dir.archive_size = source.size();
  dir.entries.reserve(end.entries);
  DCP_RETURN_IF_ERROR(ParseCentralDirectory(cd, end, dir.entries));
  DCP_ASSIGN_OR_RETURN(dir.by_name_, CheckNames(dir.entries, dir.prefix));
  DCP_RETURN_IF_ERROR(ReadLocalHeaders(source, end.cd_offset, dir.entries));
  return dir;
}

absl::StatusOr<ZipDirectory> ReadZipDirectory(absl::string_view archive) {
  ZipByteSource source(archive);
  return ReadZipDirectory(source);
}

absl::Status VerifyZipEntryCrc(const ZipEntry& entry, absl::string_view data) {
  if (data.size() != entry.size) {
    return ZipError(absl::StrCat("entry ", Quote(entry.name), ": got ",
                                 data.size(), " bytes to check, expected ",
                                 entry.size));
  }
  const uint32_t actual = Crc32(data);
  if (actual != entry.crc32) {
    return ZipError(absl::StrFormat(
        "entry %s: CRC-32 mismatch: data has 0x%08x, directory says 0x%08x",
        Quote(entry.name), actual, entry.crc32));
  }
  return absl::OkStatus();
}

absl::StatusOr<absl::string_view> ZipEntryData(absl::string_view archive,
                                               const ZipEntry& entry) {
  if (entry.data_offset > archive.size() ||
      entry.size > archive.size() - entry.data_offset) {
    return ZipError(absl::StrCat(
        "entry ", Quote(entry.name), ": data [", entry.data_offset, ", +",
        entry.size, ") is outside the ", archive.size(), "-byte archive"));
  }
  return archive.substr(entry.data_offset, entry.size);
}

// ---- Layout check -----------------------------------------------------------

namespace {

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
std::optional<ZipLayoutIssue> CheckExtraField(absl::string_view extra,
                                           uint64_t base,
                                           const std::vector<uint64_t>& expected,
                                           const std::string& entry) {
  LeReader r(extra);
  while (r.remaining() > 0) {
    const uint64_t at = base + r.position();
    if (r.remaining() < 4) {
      return ZipLayoutIssue{"truncated extra-field block", at, entry};
    }
    const uint16_t id = r.U16();
    const uint16_t len = r.U16();
    if (len > r.remaining()) {
      return ZipLayoutIssue{absl::StrCat("extra-field block of ", len,
                                      " bytes overruns the extra field"),
                         at, entry};
    }
    const uint64_t payload_at = base + r.position();
    absl::string_view payload = r.Bytes(len);
    if (id == kPaddingExtraId) {
      for (size_t i = 0; i < payload.size(); ++i) {
        if (payload[i] != 'Z') {
          return ZipLayoutIssue{"alignment padding byte is not 'Z'",
                             payload_at + i, entry};
        }
      }
    } else if (id == kZip64ExtraId) {
      if (len % 8 != 0 || len / 8 > expected.size() || len == 0) {
        return ZipLayoutIssue{
            absl::StrCat("ZIP64 extra field of ", len, " bytes"), at, entry};
      }
      LeReader z(payload);
      for (size_t i = 0; i < len / 8; ++i) {
        if (z.U64() != expected[i]) {
          return ZipLayoutIssue{"ZIP64 extra field contradicts the entry",
                             payload_at + 8 * i, entry};
        }
      }
    } else {
      return ZipLayoutIssue{absl::StrFormat("unknown extra-field id 0x%04x", id),
                         at, entry};
    }
  }
  return std::nullopt;
}

}  // namespace

absl::StatusOr<std::optional<ZipLayoutIssue>> CheckZipLayout(
    ZipByteSource& source, const ZipDirectory& dir) {
  const uint64_t size = source.size();
  const uint64_t n = dir.entries.size();
  if (size < kEndSize) return ZipLayoutIssue{"archive too small", 0, {}};
  const uint64_t end_pos = size - kEndSize;
  DCP_ASSIGN_OR_RETURN(absl::string_view end, source.Read(end_pos, kEndSize));
  LeReader e(end);
  if (e.U32() != kEndSignature) {
    return ZipLayoutIssue{"bytes after the end of central directory record",
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
    return ZipLayoutIssue{"end record disk number is not 0", end_pos + 4, {}};
  }
  if (comment_len != 0) {
    return ZipLayoutIssue{"archive comment length is not 0", end_pos + 20, {}};
  }

  uint64_t cd_offset = cd_offset32;
  uint64_t cd_size = cd_size32;
  uint64_t cd_end = end_pos;
  bool zip64 = false;
  if (end_pos >= kZip64LocatorSize) {
    const uint64_t loc_pos = end_pos - kZip64LocatorSize;
    DCP_ASSIGN_OR_RETURN(absl::string_view loc,
                         source.Read(loc_pos, kZip64LocatorSize));
    LeReader l(loc);
    if (l.U32() == kZip64LocatorSignature) {
      zip64 = true;
      const uint32_t z_disk = l.U32();
      const uint64_t z_offset = l.U64();
      const uint32_t total_disks = l.U32();
      if (z_disk != 0) {
        return ZipLayoutIssue{"ZIP64 locator disk is not 0", loc_pos + 4, {}};
      }
      if (total_disks != 1) {
        return ZipLayoutIssue{"ZIP64 locator disk count is not 1", loc_pos + 16,
                           {}};
      }
      if (z_offset > loc_pos || loc_pos - z_offset != kZip64EndSize) {
        return ZipLayoutIssue{
            "ZIP64 end record does not end where the locator starts",
            loc_pos + 8, {}};
      }
      DCP_ASSIGN_OR_RETURN(absl::string_view z64,
                           source.Read(z_offset, kZip64EndSize));
      LeReader z(z64);
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
        return ZipLayoutIssue{"ZIP64 end record size is not 44", z_offset + 4,
                           {}};
      }
      if (made_by != kZip64Version && made_by != kTorchZip64MadeBy) {
        return ZipLayoutIssue{absl::StrFormat("ZIP64 end record made by 0x%04x",
                                           made_by),
                           z_offset + 12, {}};
      }
      if (needed != kZip64Version) {
        return ZipLayoutIssue{
            absl::StrCat("ZIP64 end record needs version ", needed),
            z_offset + 14, {}};
      }
      if (z_disk_this != 0 || z_disk_cd != 0) {
        return ZipLayoutIssue{"ZIP64 end record disk number is not 0",
                           z_offset + 16, {}};
      }
      if (z_entries_disk != n || z_entries_total != n) {
        return ZipLayoutIssue{"ZIP64 end record entry count is wrong",
                           z_offset + 24, {}};
      }
      cd_end = z_offset;
    }
  }
  if (cd_offset > cd_end || cd_end - cd_offset != cd_size) {
    return ZipLayoutIssue{"central directory does not end where the end records "
                       "start",
                       cd_end, {}};
  }
  // The classic record: the real values, or the sentinel when they do not
  // fit (and then only with ZIP64 records).
  const uint16_t want_entries =
      static_cast<uint16_t>(std::min<uint64_t>(n, kU16Sentinel));
  if (entries_disk != want_entries || entries_total != want_entries ||
      (!zip64 && n >= kU16Sentinel)) {
    return ZipLayoutIssue{"end record entry count is wrong", end_pos + 8, {}};
  }
  if (cd_size32 != Clamp32(cd_size) || (!zip64 && cd_size >= kU32Sentinel)) {
    return ZipLayoutIssue{"end record central directory size is wrong",
                       end_pos + 12, {}};
  }
  if (cd_offset32 != Clamp32(cd_offset) ||
      (!zip64 && cd_offset >= kU32Sentinel)) {
    return ZipLayoutIssue{"end record central directory offset is wrong",
                       end_pos + 16, {}};
  }

  // The central directory, entry by entry (same order as `dir.entries`).
  DCP_ASSIGN_OR_RETURN(absl::string_view cd, source.Read(cd_offset, cd_size));
  std::vector<CentralFields> central(n);
  {
    LeReader r(cd);
    for (uint64_t i = 0; i < n; ++i) {
      const ZipEntry& entry = dir.entries[i];
      const uint64_t at = cd_offset + r.position();
      if (r.remaining() < kCentralHeaderSize) {
        return ZipLayoutIssue{"central directory truncated", at, entry.name};
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
        return ZipLayoutIssue{
            absl::StrCat("central directory entry made by version ", made_by,
                         " but needs version ", c.needed),
            at + 4, entry.name};
      }
      if (entry_comment_len != 0) {
        return ZipLayoutIssue{"central directory entry has a comment", at + 32,
                           entry.name};
      }
      if (disk_start != 0) {
        return ZipLayoutIssue{"central directory entry disk is not 0", at + 34,
                           entry.name};
      }
      if (internal_attributes != 0 || external_attributes != 0) {
        return ZipLayoutIssue{"central directory entry has file attributes",
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
      if (std::optional<ZipLayoutIssue> issue =
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
      return ZipLayoutIssue{
          absl::StrCat(entry.header_offset - expected_pos,
                       " bytes before the local header belong to no entry"),
          expected_pos, entry.name};
    }
    const uint64_t at = entry.header_offset;
    DCP_ASSIGN_OR_RETURN(absl::string_view fixed,
                         source.Read(at, kLocalHeaderSize));
    LeReader r(fixed);
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
      return ZipLayoutIssue{absl::StrCat("local header ", field,
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
    if (std::optional<ZipLayoutIssue> issue = CheckExtraField(
            extra, extra_at, {entry.size, entry.size}, entry.name)) {
      return issue;
    }
    const uint64_t data_end = entry.data_offset + entry.size;
    const uint64_t next =
        k + 1 < n ? dir.entries[order[k + 1]].header_offset : cd_offset;
    if (next < data_end) {  // ReadZipDirectory rejects this already.
      return ZipLayoutIssue{"entries overlap", next, entry.name};
    }
    const uint64_t gap = next - data_end;
    if (!descriptor) {
      if (gap != 0) {
        return ZipLayoutIssue{
            absl::StrCat(gap, " bytes after the entry's data belong to no "
                              "entry"),
            data_end, entry.name};
      }
    } else {
      if (gap != 12 && gap != 16 && gap != 24) {
        return ZipLayoutIssue{absl::StrCat("data descriptor of ", gap, " bytes"),
                           data_end, entry.name};
      }
      DCP_ASSIGN_OR_RETURN(absl::string_view d, source.Read(data_end, gap));
      LeReader dr(d);
      uint64_t pos = data_end;
      if (gap != 12) {
        if (dr.U32() != kDescriptorSignature) {
          return ZipLayoutIssue{"bad data descriptor signature", pos, entry.name};
        }
        pos += 4;
      }
      if (dr.U32() != entry.crc32) {
        return ZipLayoutIssue{"data descriptor CRC contradicts the central "
                           "directory",
                           pos, entry.name};
      }
      pos += 4;
      const bool wide = gap == 24;
      for (int i = 0; i < 2; ++i) {
        const uint64_t v = wide ? dr.U64() : dr.U32();
        if (v != entry.size) {
          return ZipLayoutIssue{"data descriptor size contradicts the central "
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

}  // namespace dcp
