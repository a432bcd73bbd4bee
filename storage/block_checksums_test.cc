#include "storage/block_checksums.h"

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/byte_codec.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/crc32.h"
#include "storage/file_system.h"
#include "testing/mem_file_system.h"
#include "testing/status_matchers.h"
#include "testing/test_seed.h"

namespace dcp {
namespace {

using ::dcp::test::IsOkAndHolds;
using ::dcp::test::StatusIs;
using ::testing::HasSubstr;

std::string RandomBytes(std::mt19937& rng, size_t n) {
  std::string out(n, '\0');
  for (char& c : out) c = static_cast<char>(rng());
  return out;
}

// Checksums of records laid out in a data file of random bytes, with
// `block_bytes` blocks; the records' data lie at increasing offsets.
struct Fixture {
  std::string data_file;
  BlockChecksums checksums;
};

Fixture MakeFixture(std::mt19937& rng, uint64_t block_bytes) {
  Fixture f;
  f.checksums.block_bytes = block_bytes;
  for (int r = 0; r < 4; ++r) {
    f.data_file += RandomBytes(rng, 1 + rng() % 100);  // A record header.
    RecordBlockChecksums record;
    record.data_offset = f.data_file.size();
    // Empty, shorter than a block, whole blocks, and a short last block.
    const uint64_t sizes[] = {0, block_bytes / 2, 3 * block_bytes,
                              2 * block_bytes + 7};
    const std::string data = RandomBytes(rng, sizes[r]);
    record.data_size = data.size();
    record.block_crc32 = ChecksumBlocks(data, block_bytes, &record.data_crc32);
    EXPECT_EQ(record.data_crc32, Crc32(data));
    f.data_file += data;
    f.checksums.records.push_back(record);
  }
  f.checksums.data_file_size = f.data_file.size();
  return f;
}

TEST(BlockChecksumsTest, RoundTripsAndFinds) {
  std::mt19937 rng(dcp::test::TestSeed());
  const Fixture f = MakeFixture(rng, 64);
  const std::string encoded = EncodeBlockChecksums(f.checksums);
  DCP_ASSERT_OK_AND_ASSIGN(BlockChecksums decoded,
                           DecodeBlockChecksums(encoded));
  EXPECT_EQ(decoded, f.checksums);
  for (const RecordBlockChecksums& record : f.checksums.records) {
    const RecordBlockChecksums* found = decoded.Find(record.data_offset);
    // Records of size 0 share no offset with others here.
    ASSERT_NE(found, nullptr) << record;
    EXPECT_EQ(*found, record);
    // Each block's checksum is that of its bytes.
    for (size_t b = 0; b < record.block_crc32.size(); ++b) {
      const uint64_t start = record.data_offset + b * decoded.block_bytes;
      const uint64_t end = std::min(start + decoded.block_bytes,
                                    record.data_offset + record.data_size);
      EXPECT_EQ(
          record.block_crc32[b],
          Crc32(absl::string_view(f.data_file).substr(start, end - start)));
    }
  }
  EXPECT_EQ(decoded.Find(f.checksums.records[1].data_offset + 1), nullptr);
  EXPECT_EQ(decoded.Find(f.data_file.size() + 1), nullptr);
}

TEST(BlockChecksumsTest, EveryTruncationAndEveryByteFlipIsDataLoss) {
  std::mt19937 rng(dcp::test::TestSeed());
  const std::string encoded =
      EncodeBlockChecksums(MakeFixture(rng, 32).checksums);
  for (size_t n = 0; n < encoded.size(); ++n) {
    EXPECT_THAT(DecodeBlockChecksums(encoded.substr(0, n)).status(),
                StatusIs(absl::StatusCode::kDataLoss))
        << n;
  }
  EXPECT_THAT(DecodeBlockChecksums(encoded + "x").status(),
              StatusIs(absl::StatusCode::kDataLoss));
  for (size_t i = 0; i < encoded.size(); ++i) {
    for (int bit : {0, 5}) {
      std::string damaged = encoded;
      damaged[i] = static_cast<char>(damaged[i] ^ (1 << bit));
      EXPECT_THAT(DecodeBlockChecksums(damaged).status(),
                  StatusIs(absl::StatusCode::kDataLoss))
          << "byte " << i << " bit " << bit;
    }
  }
}

// Files with a valid CRC-32 of their own whose contents are inconsistent.
TEST(BlockChecksumsTest, InconsistentContentsAreDataLoss) {
  std::mt19937 rng(dcp::test::TestSeed());
  const Fixture f = MakeFixture(rng, 16);
  auto decode = [](const BlockChecksums& c) {
    return DecodeBlockChecksums(EncodeBlockChecksums(c)).status();
  };
  {
    BlockChecksums c = f.checksums;
    c.records[2].block_crc32[1] ^= 1;
    EXPECT_THAT(decode(c), StatusIs(absl::StatusCode::kDataLoss,
                                    HasSubstr("do not combine")));
  }
  {
    BlockChecksums c = f.checksums;
    c.records[3].data_crc32 ^= 1;
    EXPECT_THAT(decode(c), StatusIs(absl::StatusCode::kDataLoss,
                                    HasSubstr("do not combine")));
  }
  {
    BlockChecksums c = f.checksums;
    c.records[2].block_crc32.pop_back();
    EXPECT_THAT(decode(c), StatusIs(absl::StatusCode::kDataLoss,
                                    HasSubstr("block checksums for")));
  }
  {
    BlockChecksums c = f.checksums;
    std::swap(c.records[1], c.records[2]);
    EXPECT_THAT(decode(c),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr("overlaps")));
  }
  {
    BlockChecksums c = f.checksums;
    c.data_file_size = c.records.back().data_offset + 1;
    EXPECT_THAT(decode(c), StatusIs(absl::StatusCode::kDataLoss,
                                    HasSubstr("outside the data file")));
  }
  {
    BlockChecksums c = f.checksums;
    c.block_bytes = 0;
    EXPECT_THAT(decode(c), StatusIs(absl::StatusCode::kDataLoss,
                                    HasSubstr("block size 0")));
  }
  {
    BlockChecksums c;
    c.data_file_size = 10;
    EXPECT_THAT(DecodeBlockChecksums(EncodeBlockChecksums(c)), IsOkAndHolds(c));
  }
}

// A file around a hand-written `payload`, with a valid CRC-32.
std::string WithHeader(const std::string& payload) {
  std::string out = "DCPBCRC1";
  const uint32_t crc = Crc32(payload);
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(crc >> (8 * i)));
  return out + payload;
}

TEST(BlockChecksumsTest, HugeCountsFailBeforeAllocating) {
  {
    ByteWriter w;
    w.WriteVarint(uint64_t{1} << 60);  // data_file_size
    w.WriteVarint(1);                  // block_bytes
    w.WriteCount(uint64_t{1} << 40);   // records
    EXPECT_THAT(DecodeBlockChecksums(WithHeader(std::move(w).Finish())),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr("records")));
  }
  {
    ByteWriter w;
    w.WriteVarint(uint64_t{1} << 60);
    w.WriteVarint(1);
    w.WriteCount(1);
    w.WriteVarint(0);                  // data_offset
    w.WriteVarint(uint64_t{1} << 50);  // data_size
    w.WriteVarint(0);                  // data_crc32
    w.WriteCount(uint64_t{1} << 50);   // block count, as the size says
    EXPECT_THAT(
        DecodeBlockChecksums(WithHeader(std::move(w).Finish())),
        StatusIs(absl::StatusCode::kDataLoss, HasSubstr("block_crc32")));
  }
}

// StreamCrc32 over ranges of a file: reads of a few bytes, blocks that
// straddle reads, a short last block, an empty range.
TEST(StreamCrc32Test, MatchesChecksumsOfTheBytesInMemory) {
  std::mt19937 rng(dcp::test::TestSeed());
  const std::string contents = RandomBytes(rng, 1000);
  dcp::test::MemFileSystem fs;
  DCP_ASSERT_OK(WriteStringToFile(fs, "/f", contents, /*sync=*/false));
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RandomAccessFile> file,
                           fs.NewRandomAccessFile("/f"));
  std::string buffer;
  for (const auto& [offset, size] : {std::pair<uint64_t, uint64_t>{0, 1000},
                                     {13, 500},
                                     {999, 1},
                                     {400, 0}}) {
    for (uint64_t read_bytes : {uint64_t{1}, uint64_t{7}, uint64_t{64}}) {
      SCOPED_TRACE(
          absl::StrCat(offset, "+", size, " in reads of ", read_bytes));
      const absl::string_view range =
          absl::string_view(contents).substr(offset, size);
      StreamCrc32Options options;
      options.read_bytes = read_bytes;
      options.buffer = &buffer;
      uint64_t read = 0;
      options.on_read = [&](uint64_t n) {
        EXPECT_LE(n, read_bytes);
        read += n;
      };
      EXPECT_THAT(StreamCrc32(*file, offset, size, options),
                  IsOkAndHolds(Crc32(range)));
      EXPECT_EQ(read, size);

      std::vector<uint32_t> blocks;
      options.block_bytes = 10;
      options.block_crc32 = &blocks;
      uint32_t expected_crc = 0;
      const std::vector<uint32_t> expected_blocks =
          ChecksumBlocks(range, 10, &expected_crc);
      EXPECT_THAT(StreamCrc32(*file, offset, size, options),
                  IsOkAndHolds(expected_crc));
      EXPECT_EQ(blocks, expected_blocks);
    }
  }
}

TEST(StreamCrc32Test, Errors) {
  dcp::test::MemFileSystem fs;
  DCP_ASSERT_OK(WriteStringToFile(fs, "/f", "0123456789", /*sync=*/false));
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RandomAccessFile> file,
                           fs.NewRandomAccessFile("/f"));
  EXPECT_THAT(StreamCrc32(*file, 5, 6), StatusIs(absl::StatusCode::kDataLoss));
  std::vector<uint32_t> blocks;
  StreamCrc32Options zero_blocks;
  zero_blocks.block_crc32 = &blocks;
  EXPECT_THAT(StreamCrc32(*file, 0, 10, zero_blocks),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace dcp
