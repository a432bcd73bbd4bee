// -----------------------------------------------------------------------------
// File: storage/block_checksums.h
// -----------------------------------------------------------------------------
//
// Block checksums: the CRC-32 of every block (`kChecksumBlockBytes`) of the
// tensor data of a data file's large records, kept by dcp in a file of its
// own beside the data file, "<data file>.dcpcrc". PyTorch neither reads nor
// needs it (it reads only the files `.metadata` names). With it, a load
// that needs part of a record (resharding) reads and verifies only the
// blocks it touches, instead of reading the whole record to check the
// record's one CRC-32.
//
// The file is an aid, never a source of truth: every record in it names the
// tensor data entry it describes by offset, size and the CRC-32 the record's
// own zip directory holds, and its block checksums must combine to that
// CRC-32 (`Crc32Combine`). A reader uses the file only if it decodes, is for
// a data file of exactly `data_file_size` bytes and matches the record;
// otherwise it verifies the whole record as without the file. Writers
// write it unsynced after the data file: a torn file fails its own CRC-32.
//
// Layout (all integers LEB128 varints unless noted):
//   "DCPBCRC1"                         8 bytes
//   crc32 of everything after it       4 bytes, little-endian
//   data_file_size  block_bytes  record_count
//   per record, by increasing data_offset (disjoint):
//     data_offset  data_size  data_crc32  block_count  block_crc32...
//   block_count = ceil(data_size / block_bytes); the last block may be short.
//
// `StreamCrc32` checksums a range of a file, and optionally its blocks, in
// bounded memory: the one way dcp's readers and `dcp verify` checksum data
// they do not hold in memory.
//
// Errors: `DecodeBlockChecksums` returns DataLoss naming what is wrong;
// decoding is bounded by the bytes present (counts are checked against the
// bytes left before anything is allocated).
//
// Thread safety: value types and pure functions.
#ifndef DCP_STORAGE_BLOCK_CHECKSUMS_H_
#define DCP_STORAGE_BLOCK_CHECKSUMS_H_

#include <cstdint>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "storage/file_system.h"

namespace dcp {

// The block size dcp writes: small enough that a resharded load reads
// little beyond what it needs, large enough that the file stays small
// (4 bytes or so per MiB of data).
inline constexpr uint64_t kChecksumBlockBytes = uint64_t{1} << 20;

// The suffix of a data file's block checksum file.
inline constexpr absl::string_view kBlockChecksumsSuffix = ".dcpcrc";

// The block checksums of one tensor data entry of a record.
struct RecordBlockChecksums {
  uint64_t data_offset = 0;  // Of the entry's first byte, in the data file.
  uint64_t data_size = 0;
  uint32_t data_crc32 = 0;  // The entry's CRC-32, as its zip directory says.
  std::vector<uint32_t> block_crc32;

  friend bool operator==(const RecordBlockChecksums& a,
                         const RecordBlockChecksums& b) {
    return a.data_offset == b.data_offset && a.data_size == b.data_size &&
           a.data_crc32 == b.data_crc32 && a.block_crc32 == b.block_crc32;
  }
  friend std::ostream& operator<<(std::ostream& os,
                                  const RecordBlockChecksums& record);
};

// The block checksums of one data file.
struct BlockChecksums {
  uint64_t data_file_size = 0;
  uint64_t block_bytes = kChecksumBlockBytes;
  std::vector<RecordBlockChecksums> records;  // By increasing data_offset.

  // The record whose data starts at `data_offset`, or null. O(log n).
  const RecordBlockChecksums* Find(uint64_t data_offset) const;

  friend bool operator==(const BlockChecksums& a, const BlockChecksums& b) {
    return a.data_file_size == b.data_file_size &&
           a.block_bytes == b.block_bytes && a.records == b.records;
  }
  friend std::ostream& operator<<(std::ostream& os,
                                  const BlockChecksums& checksums);
};

// The checksums of `data`'s blocks of `block_bytes` (> 0), and their
// combination, the CRC-32 of `data`, in `*data_crc32`.
std::vector<uint32_t> ChecksumBlocks(absl::string_view data,
                                     uint64_t block_bytes,
                                     uint32_t* data_crc32);

// How `StreamCrc32` reads.
struct StreamCrc32Options {
  // Reads of at most this many bytes (0 counts as 1), so that memory stays
  // bounded however large the range.
  uint64_t read_bytes = uint64_t{4} << 20;
  // With `block_crc32` set, also appends the CRC-32 of each `block_bytes`
  // (> 0) block of the range to it (the last block may be short), as
  // `ChecksumBlocks` does for bytes in memory, in the same pass.
  uint64_t block_bytes = 0;
  std::vector<uint32_t>* block_crc32 = nullptr;
  // If set, called with the size of each successful read (progress and I/O
  // accounting).
  std::function<void(uint64_t bytes)> on_read;
  // If set, the read buffer, kept between calls to save allocations;
  // otherwise a temporary one.
  std::string* buffer = nullptr;
};

// The CRC-32 of the `size` bytes at `offset` of `file`, streamed in reads
// of at most `options.read_bytes` bytes. Errors: InvalidArgument for
// `block_crc32` with a `block_bytes` of 0; the file's read errors (DataLoss
// past its end) as they are, after which `block_crc32` may hold the
// checksums of the blocks read so far.
absl::StatusOr<uint32_t> StreamCrc32(const RandomAccessFile& file,
                                     uint64_t offset, uint64_t size,
                                     const StreamCrc32Options& options = {});

std::string EncodeBlockChecksums(const BlockChecksums& checksums);

// Decodes and validates: the magic, the CRC-32, a block size > 0, records
// sorted, disjoint and inside the data file, block counts, and block
// checksums that combine to each record's data_crc32.
absl::StatusOr<BlockChecksums> DecodeBlockChecksums(absl::string_view bytes);

// Reads and decodes the block checksum file of the data file `data_path`
// (`data_path` + kBlockChecksumsSuffix) through `fs`, for a data file of
// `data_file_size` bytes. Errors: NotFound if there is none; DataLoss if it
// is larger than any for such a data file could be (1 MiB + 1/1024 of the
// data file, judged before it is read), does not decode, or is for a data
// file of another size; the file system's own (not a regular file, a
// symbolic link with `options.follow_symlinks` false) otherwise.
absl::StatusOr<BlockChecksums> ReadBlockChecksumsFile(
    FileSystem& fs, const std::string& data_path, uint64_t data_file_size,
    const RandomAccessFileOptions& options = {});

}  // namespace dcp

#endif  // DCP_STORAGE_BLOCK_CHECKSUMS_H_
