// Crc32 (ISA-L) against zlib's crc32_z, the reference: known values, every
// short length at every alignment, random long lengths with random seeds,
// and data fed in random pieces. Deterministic for a given DCP_TEST_SEED.
#include "storage/crc32.h"

#include <zlib.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "gtest/gtest.h"
#include "testing/test_seed.h"

namespace dcp {
namespace {

uint32_t ZlibCrc32(absl::string_view data, uint32_t crc = 0) {
  return static_cast<uint32_t>(crc32_z(
      crc, reinterpret_cast<const Bytef*>(data.data()), data.size()));
}

// `n` random bytes.
std::string RandomBytes(std::mt19937_64& rng, size_t n) {
  std::string out(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    uint64_t word = rng();
    for (size_t j = i; j < n && j < i + 8; ++j) {
      out[j] = static_cast<char>(word);
      word >>= 8;
    }
  }
  return out;
}

TEST(Crc32Test, KnownValues) {
  EXPECT_EQ(Crc32(""), 0u);
  EXPECT_EQ(Crc32(absl::string_view()), 0u);
  EXPECT_EQ(Crc32("", 0x12345678u), 0x12345678u);
  EXPECT_EQ(Crc32("a"), 0xe8b7be43u);
  EXPECT_EQ(Crc32("123456789"), 0xcbf43926u);
  EXPECT_EQ(Crc32("56789", Crc32("1234")), 0xcbf43926u);
  EXPECT_EQ(Crc32("The quick brown fox jumps over the lazy dog"), 0x414fa339u);
  // 1 MiB of zeros, which exercises the folding kernels' long path.
  EXPECT_EQ(Crc32(std::string(1 << 20, '\0')),
            ZlibCrc32(std::string(1 << 20, '\0')));
}

// Every length up to 1 KiB at every start offset modulo 64, so that each
// kernel's head (unaligned start) and tail (leftover bytes) paths are hit.
TEST(Crc32Test, EveryShortLengthAndAlignmentMatchesZlib) {
  const uint32_t seed = dcp::test::TestSeed();
  SCOPED_TRACE(absl::StrCat("DCP_TEST_SEED=", seed));
  std::mt19937_64 rng(seed);
  const std::string buffer = RandomBytes(rng, 64 + 1024);
  int mismatches = 0;
  for (size_t align = 0; align < 64; ++align) {
    for (size_t len = 0; len <= 1024; ++len) {
      const absl::string_view data = absl::string_view(buffer).substr(align, len);
      const uint32_t start = static_cast<uint32_t>(rng());
      if (Crc32(data, start) != ZlibCrc32(data, start) && ++mismatches <= 5) {
        ADD_FAILURE() << "align " << align << " len " << len << " start 0x"
                      << std::hex << start;
      }
    }
  }
  EXPECT_EQ(mismatches, 0);
}

// Random lengths up to 8 MiB at odd offsets, continuing from a random CRC.
TEST(Crc32Test, RandomLongInputsMatchZlib) {
  const uint32_t seed = dcp::test::TestSeed();
  SCOPED_TRACE(absl::StrCat("DCP_TEST_SEED=", seed));
  std::mt19937_64 rng(seed);
  constexpr size_t kMax = size_t{8} << 20;
  const std::string buffer = RandomBytes(rng, kMax + 64);
  for (int i = 0; i < 24; ++i) {
    // Half the lengths up to 64 KiB, half up to 8 MiB.
    const size_t len = rng() % ((i % 2 == 0 ? size_t{64} << 10 : kMax) + 1);
    const size_t align = 1 + rng() % 63;
    const uint32_t start = i % 3 == 0 ? 0 : static_cast<uint32_t>(rng());
    const absl::string_view data = absl::string_view(buffer).substr(align, len);
    EXPECT_EQ(Crc32(data, start), ZlibCrc32(data, start))
        << "len " << len << " align " << align << " start 0x" << std::hex
        << start;
  }
}

// Data fed in random pieces (some empty, some one byte, some megabytes)
// gives the CRC of the whole, as zlib computes it in one call.
TEST(Crc32Test, ChainedPiecesMatchZlibOnTheWhole) {
  const uint32_t seed = dcp::test::TestSeed();
  SCOPED_TRACE(absl::StrCat("DCP_TEST_SEED=", seed));
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 8; ++round) {
    const size_t len = rng() % ((size_t{6} << 20) + 1);
    const std::string data = RandomBytes(rng, len);
    uint32_t crc = 0;
    size_t pos = 0;
    int pieces = 0;
    while (pos < len) {
      size_t piece = 0;
      switch (rng() % 4) {
        case 0: piece = 0; break;
        case 1: piece = 1 + rng() % 16; break;
        case 2: piece = 1 + rng() % 4096; break;
        default: piece = 1 + rng() % (size_t{2} << 20); break;
      }
      piece = std::min(piece, len - pos);
      crc = Crc32(absl::string_view(data).substr(pos, piece), crc);
      pos += piece;
      ++pieces;
    }
    EXPECT_EQ(crc, ZlibCrc32(data))
        << "round " << round << ": " << len << " bytes in " << pieces
        << " pieces";
  }
}

// A CRC-32 detects every single-bit error: flipping any one bit of a
// message changes its checksum.
TEST(Crc32Test, EverySingleBitFlipChangesTheChecksum) {
  const uint32_t seed = dcp::test::TestSeed();
  SCOPED_TRACE(absl::StrCat("DCP_TEST_SEED=", seed));
  std::mt19937_64 rng(seed);
  std::string data = RandomBytes(rng, 300);
  const uint32_t original = Crc32(data);
  for (size_t bit = 0; bit < data.size() * 8; ++bit) {
    data[bit / 8] ^= static_cast<char>(1 << (bit % 8));
    EXPECT_NE(Crc32(data), original) << "bit " << bit;
    data[bit / 8] ^= static_cast<char>(1 << (bit % 8));
  }
  EXPECT_EQ(Crc32(data), original);
}

// Crc32Combine against zlib's crc32_combine64 and against the checksum of
// the concatenation, for random pieces of random lengths (empty included).
TEST(Crc32CombineTest, MatchesZlibAndTheWhole) {
  const uint32_t seed = dcp::test::TestSeed();
  SCOPED_TRACE(absl::StrCat("DCP_TEST_SEED=", seed));
  std::mt19937_64 rng(seed);
  int mismatches = 0;
  for (int iteration = 0; iteration < 300 && mismatches < 5; ++iteration) {
    const std::string a = RandomBytes(rng, rng() % 3000);
    const std::string b =
        RandomBytes(rng, iteration % 10 == 0 ? 0 : rng() % 5000);
    const uint32_t crc_a = Crc32(a);
    const uint32_t crc_b = Crc32(b);
    const uint32_t combined = Crc32Combine(crc_a, crc_b, b.size());
    const uint32_t whole = Crc32(absl::StrCat(a, b));
    const uint32_t zlib = static_cast<uint32_t>(
        crc32_combine64(crc_a, crc_b, static_cast<z_off64_t>(b.size())));
    EXPECT_EQ(combined, whole) << a.size() << " + " << b.size();
    EXPECT_EQ(combined, zlib) << a.size() << " + " << b.size();
    EXPECT_EQ(Crc32Combine(crc_a, crc_b, Crc32Shift(b.size())), whole);
    if (combined != whole || combined != zlib) ++mismatches;
  }
}

// Large lengths (without the bytes: zlib is the reference), including
// lengths with high bits set.
TEST(Crc32CombineTest, LargeLengthsMatchZlib) {
  const uint32_t seed = dcp::test::TestSeed();
  SCOPED_TRACE(absl::StrCat("DCP_TEST_SEED=", seed));
  std::mt19937_64 rng(seed);
  for (uint64_t length :
       {uint64_t{1} << 20, uint64_t{1} << 32, (uint64_t{1} << 40) + 12345,
        (uint64_t{1} << 62) + 7, rng() >> 2, rng() >> 2}) {
    const uint32_t crc_a = static_cast<uint32_t>(rng());
    const uint32_t crc_b = static_cast<uint32_t>(rng());
    EXPECT_EQ(Crc32Combine(crc_a, crc_b, length),
              static_cast<uint32_t>(crc32_combine64(
                  crc_a, crc_b, static_cast<z_off64_t>(length))))
        << length;
  }
}

// Blocks of one size combined with a shared Crc32Shift give the checksum
// of the whole, as block checksum files use them.
TEST(Crc32CombineTest, BlocksCombineToTheWhole) {
  std::mt19937_64 rng(dcp::test::TestSeed());
  const std::string data = RandomBytes(rng, 10 * 4096 + 123);
  const Crc32Shift shift(4096);
  uint32_t combined = 0;
  for (size_t pos = 0; pos < data.size(); pos += 4096) {
    const absl::string_view block = absl::string_view(data).substr(pos, 4096);
    combined = block.size() == 4096
                   ? Crc32Combine(combined, Crc32(block), shift)
                   : Crc32Combine(combined, Crc32(block), block.size());
  }
  EXPECT_EQ(combined, Crc32(data));
}

}  // namespace
}  // namespace dcp
