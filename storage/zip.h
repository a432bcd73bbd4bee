// -----------------------------------------------------------------------------
// File: storage/zip.h
// -----------------------------------------------------------------------------
//
// The minimal ZIP dialect of torch.save archives ("records"): stored entries
// only (method 0, no compression, no encryption), one archive per record,
// ZIP64 end records always written. See docs/format.md §3.2.
//
// Writing is split from the data so that large entries (tensor bytes) go
// from their memory straight to the file without a copy: `ZipLayout` takes
// each entry's name, size and CRC-32 and produces the bytes to emit before
// each entry's data and the trailer after the last one:
//
//   ZipLayout layout = ZipLayout::Create({{"archive/data.pkl", pkl.size(),
//                                          Crc32(pkl)}, ...}).value();
//   for (size_t i = 0; i < layout.num_entries(); ++i) {
//     Write(layout.header(i));    // local header + alignment padding
//     Write(data_of_entry_i);     // exactly layout.entry(i).size bytes
//   }
//   Write(layout.trailer());      // central directory + end records
//
// Layout choices (all accepted by torch 2.6's reader and Python's zipfile):
//   * Local headers carry the real CRC-32 and sizes; there are no data
//     descriptors (general-purpose flags 0x0800: UTF-8 names only). torch
//     itself writes flags 0x0808 with zero sizes in the local headers and a
//     16-byte descriptor after each entry; both forms are equivalent to
//     every reader that uses the central directory.
//   * Entry data starts at a multiple of 64 bytes from the start of the
//     archive, padded like torch with an extra field "FB" of 'Z' bytes, so a
//     record can be sliced at aligned offsets.
//   * Entries of 4 GiB or more (and headers beyond 4 GiB) use ZIP64 extra
//     fields; the ZIP64 end record and locator are always written, followed
//     by the classic end record holding the same values where they fit.
//   * Version made by / needed 0 (45 for entries that need ZIP64), time and
//     date 0, no comments, no attributes.
//
// Reading never trusts local headers alone: `ReadZipDirectory` finds the
// end records, parses the central directory, then checks each local header
// against it, and returns where each entry's data lies. Everything is
// validated (signatures, bounds, overlaps, a common top-level directory
// prefix, method 0, sizes); input can be hostile: it never crashes, and
// allocations are bounded by the archive size and `kMaxCentralDirectorySize`.
// Reading takes O(n log n) time in the number of entries n (local headers
// are visited in offset order, names are found through a sorted index), so
// records with hundreds of thousands of entries parse in about a second.
//
// Errors: writing returns InvalidArgument for bad entry lists (duplicate or
// empty names, names over 65535 bytes). Reading returns DataLoss naming what
// is wrong and where ("zip: entry \"archive/data/0\": data [64, 4160)
// overlaps entry \"archive/byteorder\""); errors from a caller's read
// function are returned as they are.
//
// Thread safety: values are immutable after creation; `ZipByteSource` is
// not thread-safe.
#ifndef DCP_STORAGE_ZIP_H_
#define DCP_STORAGE_ZIP_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "storage/crc32.h"  // IWYU pragma: export (Crc32, for entry CRCs)

namespace dcp {

// Entry data is aligned to this many bytes from the start of the archive.
inline constexpr uint64_t kZipDataAlignment = 64;

// Upper bound on the central directory a reader accepts.
inline constexpr uint64_t kMaxCentralDirectorySize = uint64_t{64} << 20;

// ---- Writing ----------------------------------------------------------------

// One entry to lay out: its full name (with the archive's top-level
// directory, e.g. "archive/data/0"), its data size and the CRC-32 of its data.
struct ZipEntrySpec {
  std::string name;
  uint64_t size = 0;
  uint32_t crc32 = 0;
};

// The bytes of an archive except the entries' data. See the file comment.
class ZipLayout {
 public:
  // Lays out `entries` in the given order. InvalidArgument if there are no
  // entries, a name is empty or longer than 65535 bytes, or two names are
  // equal.
  static absl::StatusOr<ZipLayout> Create(std::vector<ZipEntrySpec> entries);

  size_t num_entries() const { return entries_.size(); }
  const ZipEntrySpec& entry(size_t i) const { return entries_[i]; }

  // The bytes to write immediately before entry `i`'s data: its local
  // header, including the alignment padding.
  absl::string_view header(size_t i) const { return headers_[i]; }
  // Offset of entry `i`'s local header / first data byte from the start of
  // the archive. `data_offset(i)` is a multiple of `kZipDataAlignment`.
  uint64_t header_offset(size_t i) const { return header_offsets_[i]; }
  uint64_t data_offset(size_t i) const {
    return header_offsets_[i] + headers_[i].size();
  }

  // The bytes after the last entry's data: central directory, ZIP64 end
  // record, ZIP64 locator and end record.
  absl::string_view trailer() const { return trailer_; }
  uint64_t trailer_offset() const { return trailer_offset_; }

  // Size of the whole archive, data included.
  uint64_t total_size() const { return trailer_offset_ + trailer_.size(); }

 private:
  ZipLayout() = default;

  std::vector<ZipEntrySpec> entries_;
  std::vector<std::string> headers_;
  std::vector<uint64_t> header_offsets_;
  std::string trailer_;
  uint64_t trailer_offset_ = 0;
};

// A complete archive built in memory from small entries, in order:
// {full name, contents}. Same errors as `ZipLayout::Create`.
absl::StatusOr<std::string> BuildZipArchive(
    absl::Span<const std::pair<std::string, absl::string_view>> entries);

// ---- Reading ----------------------------------------------------------------

// One entry as found through the central directory. Offsets are from the
// start of the archive.
struct ZipEntry {
  std::string name;  // Full name, e.g. "archive/data/0".
  uint64_t header_offset = 0;
  uint64_t data_offset = 0;
  uint64_t size = 0;
  uint32_t crc32 = 0;

  friend bool operator==(const ZipEntry& a, const ZipEntry& b) {
    return a.name == b.name && a.header_offset == b.header_offset &&
           a.data_offset == b.data_offset && a.size == b.size &&
           a.crc32 == b.crc32;
  }
  friend bool operator!=(const ZipEntry& a, const ZipEntry& b) {
    return !(a == b);
  }
  friend std::ostream& operator<<(std::ostream& os, const ZipEntry& entry);
};

class ZipByteSource;

// The entries of a validated archive.
struct ZipDirectory {
  uint64_t archive_size = 0;
  // The top-level directory every entry name starts with, including the
  // slash ("archive/").
  std::string prefix;
  // In central-directory order. Data ranges are inside the archive, before
  // the central directory, and pairwise disjoint; names are unique.
  std::vector<ZipEntry> entries;

  // The entry named `prefix + relative_name` ("data.pkl"), or nullptr.
  // O(log n) on a directory from `ReadZipDirectory`, which indexes the
  // names; a directory built by hand, or with entries added or removed, is
  // searched linearly. Renaming entries in place invalidates the index.
  const ZipEntry* Find(absl::string_view relative_name) const;

  friend bool operator==(const ZipDirectory& a, const ZipDirectory& b) {
    return a.archive_size == b.archive_size && a.prefix == b.prefix &&
           a.entries == b.entries;
  }
  friend bool operator!=(const ZipDirectory& a, const ZipDirectory& b) {
    return !(a == b);
  }
  friend std::ostream& operator<<(std::ostream& os, const ZipDirectory& dir);

 private:
  friend absl::StatusOr<ZipDirectory> ReadZipDirectory(ZipByteSource& source);

  // Positions in `entries`, sorted by name; used only while it has as many
  // positions as there are entries. Positions, not pointers, so that copies
  // stay valid.
  std::vector<uint32_t> by_name_;
};

// Reads `length` bytes at `offset` of the archive. Must return exactly
// `length` bytes or an error.
using ZipReadFn = std::function<absl::StatusOr<std::string>(uint64_t offset,
                                                            uint64_t length)>;

// Random access to an archive's bytes: either an in-memory archive (reads
// are views, nothing is copied) or a read function with a small cache, so
// that the headers, central directory and small entries of a record cost a
// few reads (one block at each end of the archive for typical torch.save
// records). A read that misses the cache fetches at least `block_size`
// bytes around it (clamped to the archive), widened only over bytes not
// cached yet, and every fetched block is kept until the object dies. So
// the bytes fetched are at most the archive's size plus the total length
// of the reads that missed, and a lookup costs O(log blocks).
class ZipByteSource {
 public:
  // `archive` must outlive this object.
  explicit ZipByteSource(absl::string_view archive);
  ZipByteSource(uint64_t archive_size, ZipReadFn read,
                uint64_t block_size = 4096);

  ZipByteSource(const ZipByteSource&) = delete;
  ZipByteSource& operator=(const ZipByteSource&) = delete;

  uint64_t size() const { return size_; }

  // The `length` bytes at `offset`, valid as long as this object. DataLoss
  // if the range is not inside the archive, or if the read function returns
  // the wrong number of bytes; the read function's own errors are returned
  // as they are.
  absl::StatusOr<absl::string_view> Read(uint64_t offset, uint64_t length);

  // How many times the read function was called (0 for in-memory archives).
  int num_fetches() const { return num_fetches_; }

 private:
  struct Block {
    uint64_t offset;
    std::string bytes;
  };

  uint64_t size_ = 0;
  absl::string_view memory_;
  bool in_memory_ = false;
  ZipReadFn read_;
  uint64_t block_size_ = 0;
  std::deque<Block> blocks_;  // deque: growing keeps element addresses.
  // The blocks by offset, none containing another, so that their ends
  // increase with their offsets: the block with the greatest offset at or
  // before a read is the only one that can contain it. Blocks contained in
  // a newer one leave the index but stay alive (their views are out).
  std::map<uint64_t, const Block*> index_;
  int num_fetches_ = 0;
};

// Parses and validates the archive through its end records and central
// directory. DataLoss (see the file comment) if anything is malformed.
absl::StatusOr<ZipDirectory> ReadZipDirectory(ZipByteSource& source);
absl::StatusOr<ZipDirectory> ReadZipDirectory(absl::string_view archive);

// DataLoss "CRC-32 mismatch" unless `data` (the entry's bytes) has the CRC
// the central directory recorded, and if `data` is not `entry.size` bytes.
absl::Status VerifyZipEntryCrc(const ZipEntry& entry, absl::string_view data);

// The bytes of `entry` inside the in-memory `archive` (a view). DataLoss if
// they are not inside `archive`.
absl::StatusOr<absl::string_view> ZipEntryData(absl::string_view archive,
                                               const ZipEntry& entry);

// ---- Strict layout ------------------------------------------------------------

// A byte of an archive that the zip structure accepts but that neither
// dcp's writer (`ZipLayout`) nor torch.save's would produce: a field no
// CRC-32 covers (padding, a local header's copy of a central field, the
// end records) that was changed.
struct ZipLayoutIssue {
  std::string message;
  // Bytes from the start of the archive.
  uint64_t offset = 0;
  // The entry whose header or padding holds the byte, if any.
  std::optional<std::string> entry;
};

// Checks, byte for byte, that an archive `ReadZipDirectory` accepted as
// `dir` has exactly a layout dcp or torch.save (2.x, with or without data
// descriptors) writes: signatures, versions, flags, sizes and CRCs repeated
// in local headers and descriptors, ZIP64 fields and end records, and
// 'Z'-filled "FB" padding. Returns the first issue, or nullopt. Errors are
// those of `source`'s read function.
absl::StatusOr<std::optional<ZipLayoutIssue>> CheckZipLayout(
    ZipByteSource& source, const ZipDirectory& dir);

}  // namespace dcp

#endif  // DCP_STORAGE_ZIP_H_
