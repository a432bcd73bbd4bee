#include "core/byte_codec.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>

#include "absl/strings/string_view.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/status_matchers.h"

namespace dcp {
namespace {

using ::dcp::test::IsOk;
using ::dcp::test::IsOkAndHolds;
using ::dcp::test::StatusIs;
using ::testing::Eq;
using ::testing::HasSubstr;

constexpr absl::StatusCode kDataLoss = absl::StatusCode::kDataLoss;

TEST(ByteWriterTest, VarintBytes) {
  ByteWriter w;
  w.WriteVarint(0);
  w.WriteVarint(127);
  w.WriteVarint(128);
  w.WriteVarint(300);
  EXPECT_EQ(w.data(), std::string("\x00\x7f\x80\x01\xac\x02", 6));
}

TEST(ByteWriterTest, ZigzagBytes) {
  ByteWriter w;
  w.WriteSignedVarint(0);
  w.WriteSignedVarint(-1);
  w.WriteSignedVarint(1);
  w.WriteSignedVarint(-2);
  w.WriteSignedVarint(63);
  w.WriteSignedVarint(-64);
  EXPECT_EQ(w.data(), std::string("\x00\x01\x02\x03\x7e\x7f", 6));
}

TEST(ByteWriterTest, FixedWidthAndStrings) {
  ByteWriter w;
  w.WriteU8(0xAB);
  w.WriteBool(true);
  w.WriteBool(false);
  w.WriteDouble(1.0);  // 0x3FF0000000000000, little-endian.
  w.WriteString("hi");
  w.WriteString("");
  EXPECT_EQ(std::move(w).Finish(),
            std::string("\xab\x01\x00"
                        "\x00\x00\x00\x00\x00\x00\xf0\x3f"
                        "\x02hi\x00",
                        15));
}

TEST(ByteCodecTest, RoundTripsExtremes) {
  const uint64_t unsigned_values[] = {0,
                                      1,
                                      127,
                                      128,
                                      16383,
                                      16384,
                                      (uint64_t{1} << 63) - 1,
                                      uint64_t{1} << 63,
                                      std::numeric_limits<uint64_t>::max()};
  const int64_t signed_values[] = {0,
                                   1,
                                   -1,
                                   std::numeric_limits<int64_t>::max(),
                                   std::numeric_limits<int64_t>::min(),
                                   std::numeric_limits<int64_t>::min() + 1};
  const double doubles[] = {0.0,
                            -0.0,
                            3.5,
                            -1e300,
                            std::numeric_limits<double>::infinity(),
                            std::numeric_limits<double>::denorm_min()};
  ByteWriter w;
  for (uint64_t v : unsigned_values) w.WriteVarint(v);
  for (int64_t v : signed_values) w.WriteSignedVarint(v);
  for (double v : doubles) w.WriteDouble(v);
  w.WriteDouble(std::numeric_limits<double>::quiet_NaN());
  w.WriteString(std::string("a\0b", 3));
  const std::string bytes = std::move(w).Finish();

  ByteReader r(bytes);
  for (uint64_t v : unsigned_values) {
    EXPECT_THAT(r.ReadVarint("u"), IsOkAndHolds(Eq(v)));
  }
  for (int64_t v : signed_values) {
    EXPECT_THAT(r.ReadSignedVarint("s"), IsOkAndHolds(Eq(v)));
  }
  for (double v : doubles) {
    absl::StatusOr<double> d = r.ReadDouble("d");
    ASSERT_THAT(d, IsOk());
    EXPECT_EQ(std::signbit(*d), std::signbit(v));
    EXPECT_EQ(*d, v);
  }
  absl::StatusOr<double> nan = r.ReadDouble("nan");
  ASSERT_THAT(nan, IsOk());
  EXPECT_TRUE(std::isnan(*nan));
  EXPECT_THAT(r.ReadString("s"), IsOkAndHolds(Eq(std::string("a\0b", 3))));
  EXPECT_THAT(r.ExpectEnd(), IsOk());
}

TEST(ByteReaderTest, MaxVarintIsTenBytes) {
  ByteWriter w;
  w.WriteVarint(std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(w.size(), 10u);
  EXPECT_EQ(static_cast<uint8_t>(w.data().back()), 1);
}

TEST(ByteReaderTest, TruncatedStringLengthNamesFieldAndOffset) {
  // 17 bytes of padding, then a string length varint cut after one byte.
  std::string bytes(17, '\0');
  bytes += "\x80\x80\x80";
  ByteReader r(bytes);
  for (int i = 0; i < 17; ++i) ASSERT_THAT(r.ReadU8("pad"), IsOk());
  EXPECT_THAT(r.ReadString("string"),
              StatusIs(kDataLoss,
                       Eq("truncated input: reading string length at byte 17 "
                          "of 20")));
}

TEST(ByteReaderTest, TruncatedStringBody) {
  ByteReader r(
      absl::string_view("\x05"
                        "abc",
                        4));
  EXPECT_THAT(
      r.ReadString("fqn"),
      StatusIs(kDataLoss, Eq("truncated input: reading fqn (5 bytes) at byte 1 "
                             "of 4")));
}

TEST(ByteReaderTest, TruncatedFixedWidth) {
  ByteReader empty("");
  EXPECT_THAT(empty.ReadU8("tag"),
              StatusIs(kDataLoss, Eq("truncated input: reading tag at byte 0 "
                                     "of 0")));
  EXPECT_THAT(empty.ReadBool("flag"), StatusIs(kDataLoss));
  ByteReader short_double(absl::string_view("\x00\x00\x00", 3));
  EXPECT_THAT(short_double.ReadDouble("weight"),
              StatusIs(kDataLoss, HasSubstr("reading weight at byte 0 of 3")));
}

TEST(ByteReaderTest, RejectsVarintOverflow) {
  // Eleven continuation bytes.
  const std::string too_long(11, '\xff');
  ByteReader r(too_long);
  EXPECT_THAT(r.ReadVarint("count"),
              StatusIs(kDataLoss, HasSubstr("overflows 64 bits")));
  // Ten bytes whose last one holds more than the top bit.
  std::string overflow(9, '\xff');
  overflow += '\x02';
  ByteReader r2(overflow);
  EXPECT_THAT(r2.ReadVarint("count"),
              StatusIs(kDataLoss, HasSubstr("count at byte 0 of 10")));
}

TEST(ByteReaderTest, RejectsOverlongVarint) {
  ByteReader r(absl::string_view("\x80\x00", 2));
  EXPECT_THAT(r.ReadVarint("n"),
              StatusIs(kDataLoss, HasSubstr("not in shortest form")));
  std::string padded_max(9, '\xff');
  padded_max += '\x00';
  ByteReader r2(padded_max);
  EXPECT_THAT(r2.ReadVarint("n"), StatusIs(kDataLoss));
}

TEST(ByteReaderTest, RejectsNonCanonicalBool) {
  ByteReader r(absl::string_view("\x02", 1));
  EXPECT_THAT(r.ReadBool("requires_grad"),
              StatusIs(kDataLoss,
                       HasSubstr("requires_grad at byte 0 of 1: boolean byte "
                                 "is 2")));
}

TEST(ByteReaderTest, ReadCountRejectsCountsThatCannotFit) {
  ByteWriter w;
  w.WriteCount(uint64_t{1} << 60);
  w.WriteString("abc");
  const std::string bytes = std::move(w).Finish();
  ByteReader r(bytes);
  EXPECT_THAT(r.ReadCount("chunks", 1),
              StatusIs(kDataLoss, HasSubstr("chunks count at byte 0")));
}

TEST(ByteReaderTest, ReadCountUsesMinimumElementSize) {
  ByteWriter w;
  w.WriteCount(3);
  w.WriteString("abcde");  // 6 bytes follow the count.
  const std::string bytes = std::move(w).Finish();
  {
    ByteReader r(bytes);
    EXPECT_THAT(r.ReadCount("items", 2), IsOkAndHolds(Eq(3u)));
  }
  {
    ByteReader r(bytes);
    EXPECT_THAT(r.ReadCount("items", 3),
                StatusIs(kDataLoss, HasSubstr("claims 3")));
  }
  {
    ByteReader r(bytes);  // 0 is treated as 1.
    EXPECT_THAT(r.ReadCount("items", 0), IsOkAndHolds(Eq(3u)));
  }
}

TEST(ByteReaderTest, ExpectEndRejectsTrailingBytes) {
  ByteReader r(absl::string_view("\x01\x02", 2));
  ASSERT_THAT(r.ReadU8("x"), IsOk());
  EXPECT_THAT(r.ExpectEnd(),
              StatusIs(kDataLoss, HasSubstr("1 unexpected trailing bytes at "
                                            "byte 1 of 2")));
  ASSERT_THAT(r.ReadU8("y"), IsOk());
  EXPECT_THAT(r.ExpectEnd(), IsOk());
}

TEST(PayloadHeaderTest, RoundTrip) {
  ByteWriter w;
  WriteHeader(PayloadKind::kLoadPlan, w);
  EXPECT_EQ(w.data(), std::string("\xd3\x01", 2));
  ByteReader r(w.data());
  EXPECT_THAT(ReadHeader(PayloadKind::kLoadPlan, r), IsOk());
  EXPECT_THAT(r.ExpectEnd(), IsOk());
}

TEST(PayloadHeaderTest, WrongKindNamesBoth) {
  ByteWriter w;
  WriteHeader(PayloadKind::kSavePlan, w);
  ByteReader r(w.data());
  EXPECT_THAT(
      ReadHeader(PayloadKind::kMetadata, r),
      StatusIs(kDataLoss, Eq("wrong payload kind: expected a Metadata payload "
                             "(magic 0xd1) but found a SavePlan payload (magic "
                             "0xd2)")));
}

TEST(PayloadHeaderTest, UnknownMagicAndVersion) {
  ByteReader r(absl::string_view("\x42\x01", 2));
  EXPECT_THAT(ReadHeader(PayloadKind::kWriteResults, r),
              StatusIs(kDataLoss, HasSubstr("unknown magic byte 0x42")));
  ByteReader r2(absl::string_view("\xd4\x07", 2));
  EXPECT_THAT(
      ReadHeader(PayloadKind::kWriteResults, r2),
      StatusIs(kDataLoss, HasSubstr("unsupported WriteResults encoding version "
                                    "7")));
  ByteReader r3("");
  EXPECT_THAT(ReadHeader(PayloadKind::kMetadata, r3),
              StatusIs(kDataLoss, HasSubstr("truncated input")));
}

TEST(PayloadHeaderTest, KindNames) {
  EXPECT_EQ(PayloadKindName(PayloadKind::kMetadata), "Metadata");
  EXPECT_EQ(PayloadKindName(PayloadKind::kSavePlan), "SavePlan");
  EXPECT_EQ(PayloadKindName(PayloadKind::kLoadPlan), "LoadPlan");
  EXPECT_EQ(PayloadKindName(PayloadKind::kWriteResults), "WriteResults");
  EXPECT_EQ(PayloadKindName(static_cast<PayloadKind>(0)), "unknown");
}

}  // namespace
}  // namespace dcp
