#include "storage/block_checksums.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/byte_codec.h"
#include "core/status.h"
#include "storage/crc32.h"

namespace dcp {
namespace {

constexpr absl::string_view kMagic = "DCPBCRC1";
constexpr size_t kHeaderBytes = 8 + 4;
// Minimum encoded record: five one-byte varints.
constexpr size_t kMinRecordBytes = 5;
constexpr size_t kMinBlockBytes = 1;

uint64_t BlockCount(uint64_t data_size, uint64_t block_bytes) {
  return data_size / block_bytes + (data_size % block_bytes != 0 ? 1 : 0);
}

// The combination of `blocks`, the checksums of consecutive blocks of
// `block_bytes` covering `data_size` bytes.
uint32_t CombineBlocks(const std::vector<uint32_t>& blocks, uint64_t data_size,
                       uint64_t block_bytes, const Crc32Shift& full_block) {
  uint32_t crc = 0;
  for (size_t i = 0; i < blocks.size(); ++i) {
    const uint64_t start = i * block_bytes;
    const uint64_t length = std::min(block_bytes, data_size - start);
    crc = length == block_bytes ? Crc32Combine(crc, blocks[i], full_block)
                                : Crc32Combine(crc, blocks[i], length);
  }
  return crc;
}

absl::Status Malformed(absl::string_view what) {
  return absl::DataLossError(absl::StrCat("block checksum file: ", what));
}

}  // namespace

std::ostream& operator<<(std::ostream& os, const RecordBlockChecksums& record) {
  return os << absl::StrFormat("{data at %d, %d bytes, crc32 %08x, %d blocks}",
                               record.data_offset, record.data_size,
                               record.data_crc32, record.block_crc32.size());
}

std::ostream& operator<<(std::ostream& os, const BlockChecksums& checksums) {
  os << "{data file of " << checksums.data_file_size << " bytes, blocks of "
     << checksums.block_bytes << " bytes, records [";
  for (size_t i = 0; i < checksums.records.size(); ++i) {
    os << (i == 0 ? "" : ", ") << checksums.records[i];
  }
  return os << "]}";
}

const RecordBlockChecksums* BlockChecksums::Find(uint64_t data_offset) const {
  auto it = std::lower_bound(records.begin(), records.end(), data_offset,
                             [](const RecordBlockChecksums& r, uint64_t v) {
                               return r.data_offset < v;
                             });
  if (it == records.end() || it->data_offset != data_offset) return nullptr;
  return &*it;
}

std::vector<uint32_t> ChecksumBlocks(absl::string_view data,
                                     uint64_t block_bytes,
                                     uint32_t* data_crc32) {
  std::vector<uint32_t> blocks;
  blocks.reserve(BlockCount(data.size(), block_bytes));
  const Crc32Shift full_block(block_bytes);
  uint32_t crc = 0;
  for (uint64_t pos = 0; pos < data.size(); pos += block_bytes) {
    const absl::string_view block = data.substr(pos, block_bytes);
    blocks.push_back(Crc32(block));
    crc = block.size() == block_bytes
              ? Crc32Combine(crc, blocks.back(), full_block)
              : Crc32Combine(crc, blocks.back(), block.size());
  }
  *data_crc32 = crc;
  return blocks;
}

absl::StatusOr<uint32_t> StreamCrc32(const RandomAccessFile& file,
                                     uint64_t offset, uint64_t size,
                                     const StreamCrc32Options& options) {
  std::vector<uint32_t>* const blocks = options.block_crc32;
  const uint64_t block_bytes = options.block_bytes;
  if (blocks != nullptr && block_bytes == 0) {
    return absl::InvalidArgumentError(
        "StreamCrc32: block checksums of 0-byte "
        "blocks");
  }
  const uint64_t chunk = std::max<uint64_t>(options.read_bytes, 1);
  std::string local;
  std::string& buffer = options.buffer != nullptr ? *options.buffer : local;
  const size_t most = static_cast<size_t>(std::min(size, chunk));
  if (buffer.size() < most) buffer.resize(most);
  uint32_t crc = 0;
  uint32_t block_crc = 0;
  uint64_t in_block = 0;  // Bytes of the current block so far.
  for (uint64_t done = 0; done < size;) {
    const size_t n = static_cast<size_t>(std::min(size - done, chunk));
    DCP_ASSIGN_OR_RETURN(absl::string_view bytes,
                         file.Read(offset + done, n, buffer.data()));
    done += n;
    if (options.on_read) options.on_read(n);
    if (blocks == nullptr) {
      crc = Crc32(bytes, crc);
      continue;
    }
    // Block by block, combined into the whole: one pass over the bytes.
    while (!bytes.empty()) {
      const size_t piece = static_cast<size_t>(
          std::min<uint64_t>(bytes.size(), block_bytes - in_block));
      block_crc = Crc32(bytes.substr(0, piece), block_crc);
      in_block += piece;
      bytes.remove_prefix(piece);
      if (in_block == block_bytes || (bytes.empty() && done == size)) {
        blocks->push_back(block_crc);
        crc = Crc32Combine(crc, block_crc, in_block);
        block_crc = 0;
        in_block = 0;
      }
    }
  }
  return crc;
}

std::string EncodeBlockChecksums(const BlockChecksums& checksums) {
  ByteWriter body;
  body.WriteVarint(checksums.data_file_size);
  body.WriteVarint(checksums.block_bytes);
  body.WriteCount(checksums.records.size());
  for (const RecordBlockChecksums& record : checksums.records) {
    body.WriteVarint(record.data_offset);
    body.WriteVarint(record.data_size);
    body.WriteVarint(record.data_crc32);
    body.WriteCount(record.block_crc32.size());
    for (uint32_t crc : record.block_crc32) body.WriteVarint(crc);
  }
  const std::string payload = std::move(body).Finish();
  std::string out(kMagic);
  const uint32_t crc = Crc32(payload);
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(crc >> (8 * i)));
  out.append(payload);
  return out;
}

absl::StatusOr<BlockChecksums> DecodeBlockChecksums(absl::string_view bytes) {
  if (bytes.size() < kHeaderBytes || bytes.substr(0, kMagic.size()) != kMagic) {
    return Malformed(absl::StrCat("not one (", bytes.size(),
                                  " bytes, expected the header \"", kMagic,
                                  "\")"));
  }
  uint32_t expected_crc = 0;
  for (int i = 0; i < 4; ++i) {
    expected_crc |= uint32_t{static_cast<uint8_t>(bytes[kMagic.size() + i])}
                    << (8 * i);
  }
  const absl::string_view payload = bytes.substr(kHeaderBytes);
  if (Crc32(payload) != expected_crc) {
    return Malformed("fails its CRC-32 check (torn or damaged)");
  }
  ByteReader reader(payload);
  BlockChecksums out;
  DCP_ASSIGN_OR_RETURN(out.data_file_size, reader.ReadVarint("data_file_size"));
  DCP_ASSIGN_OR_RETURN(out.block_bytes, reader.ReadVarint("block_bytes"));
  if (out.block_bytes == 0) return Malformed("block size 0");
  const Crc32Shift full_block(out.block_bytes);
  DCP_ASSIGN_OR_RETURN(size_t count,
                       reader.ReadCount("records", kMinRecordBytes));
  out.records.reserve(count);
  uint64_t previous_end = 0;
  for (size_t i = 0; i < count; ++i) {
    RecordBlockChecksums record;
    DCP_ASSIGN_OR_RETURN(record.data_offset, reader.ReadVarint("data_offset"));
    DCP_ASSIGN_OR_RETURN(record.data_size, reader.ReadVarint("data_size"));
    DCP_ASSIGN_OR_RETURN(uint64_t crc, reader.ReadVarint("data_crc32"));
    if (crc > UINT32_MAX) {
      return Malformed(absl::StrCat("record ", i, ": CRC-32 ", crc,
                                    " does not fit 32 bits"));
    }
    record.data_crc32 = static_cast<uint32_t>(crc);
    if (record.data_offset < previous_end ||
        record.data_offset > out.data_file_size ||
        record.data_size > out.data_file_size - record.data_offset) {
      return Malformed(absl::StrFormat(
          "record %d: data at %d (%d bytes) overlaps the previous record or "
          "lies outside the data file of %d bytes",
          i, record.data_offset, record.data_size, out.data_file_size));
    }
    previous_end = record.data_offset + record.data_size;
    DCP_ASSIGN_OR_RETURN(size_t blocks,
                         reader.ReadCount("block_crc32", kMinBlockBytes));
    if (blocks != BlockCount(record.data_size, out.block_bytes)) {
      return Malformed(absl::StrFormat(
          "record %d: %d block checksums for %d bytes in blocks of %d", i,
          blocks, record.data_size, out.block_bytes));
    }
    record.block_crc32.reserve(blocks);
    for (size_t b = 0; b < blocks; ++b) {
      DCP_ASSIGN_OR_RETURN(uint64_t block_crc,
                           reader.ReadVarint("block_crc32"));
      if (block_crc > UINT32_MAX) {
        return Malformed(absl::StrCat("record ", i, " block ", b, ": CRC-32 ",
                                      block_crc, " does not fit 32 bits"));
      }
      record.block_crc32.push_back(static_cast<uint32_t>(block_crc));
    }
    if (CombineBlocks(record.block_crc32, record.data_size, out.block_bytes,
                      full_block) != record.data_crc32) {
      return Malformed(absl::StrFormat(
          "record %d: block checksums do not combine to the record's CRC-32 "
          "%08x",
          i, record.data_crc32));
    }
    out.records.push_back(std::move(record));
  }
  DCP_RETURN_IF_ERROR(reader.ExpectEnd());
  return out;
}

absl::StatusOr<BlockChecksums> ReadBlockChecksumsFile(
    FileSystem& fs, const std::string& data_path, uint64_t data_file_size,
    const RandomAccessFileOptions& options) {
  const std::string path = absl::StrCat(data_path, kBlockChecksumsSuffix);
  DCP_ASSIGN_OR_RETURN(std::unique_ptr<RandomAccessFile> file,
                       fs.NewRandomAccessFile(path, options));
  // About 5 bytes per MiB of data and a few dozen per record: anything
  // much larger is not one.
  const uint64_t size = file->size();
  if (size > (uint64_t{1} << 20) + data_file_size / 1024) {
    return Malformed(absl::StrCat(size, " bytes, too large for a data file of ",
                                  data_file_size, " bytes"));
  }
  std::string bytes(static_cast<size_t>(size), '\0');
  DCP_RETURN_IF_ERROR(file->ReadInto(0, absl::MakeSpan(bytes)));
  DCP_ASSIGN_OR_RETURN(BlockChecksums checksums, DecodeBlockChecksums(bytes));
  if (checksums.data_file_size != data_file_size) {
    return Malformed(absl::StrCat("it is for a data file of ",
                                  checksums.data_file_size, " bytes, not ",
                                  data_file_size));
  }
  return checksums;
}

}  // namespace dcp
