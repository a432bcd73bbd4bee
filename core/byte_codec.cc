#include "core/byte_codec.h"

#include <cstdint>
#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"

namespace dcp {
namespace {

constexpr int kMaxVarintBytes = 10;

}  // namespace

void ByteWriter::WriteVarint(uint64_t value) {
  while (value >= 0x80) {
    buffer_.push_back(static_cast<char>((value & 0x7F) | 0x80));
    value >>= 7;
  }
  buffer_.push_back(static_cast<char>(value));
}

void ByteWriter::WriteSignedVarint(int64_t value) {
  // Zigzag: 0, -1, 1, -2, ... -> 0, 1, 2, 3, ... Shifts are done on the
  // unsigned representation to avoid signed-overflow UB.
  const uint64_t bits = static_cast<uint64_t>(value);
  const uint64_t sign = value < 0 ? ~uint64_t{0} : 0;
  WriteVarint((bits << 1) ^ sign);
}

void ByteWriter::WriteU8(uint8_t value) {
  buffer_.push_back(static_cast<char>(value));
}

void ByteWriter::WriteBool(bool value) { WriteU8(value ? 1 : 0); }

void ByteWriter::WriteDouble(double value) {
  uint64_t bits;
  static_assert(sizeof(bits) == sizeof(value), "double must be 64 bits");
  std::memcpy(&bits, &value, sizeof(bits));
  for (int i = 0; i < 8; ++i) {
    buffer_.push_back(static_cast<char>((bits >> (8 * i)) & 0xFF));
  }
}

void ByteWriter::WriteString(absl::string_view value) {
  WriteVarint(value.size());
  buffer_.append(value.data(), value.size());
}

absl::Status ByteReader::Truncated(absl::string_view what,
                                   absl::string_view suffix, size_t at) const {
  return absl::DataLossError(absl::StrCat("truncated input: reading ", what,
                                          suffix, " at byte ", at, " of ",
                                          data_.size()));
}

absl::Status ByteReader::MalformedAt(absl::string_view what,
                                     absl::string_view suffix, size_t at,
                                     absl::string_view detail) const {
  return absl::DataLossError(absl::StrCat("malformed input: ", what, suffix,
                                          " at byte ", at, " of ", data_.size(),
                                          ": ", detail));
}

absl::Status ByteReader::Malformed(absl::string_view what,
                                   absl::string_view detail) const {
  return MalformedAt(what, "", pos_, detail);
}

absl::StatusOr<uint64_t> ByteReader::ReadVarintImpl(absl::string_view what,
                                                    absl::string_view suffix) {
  const size_t start = pos_;
  uint64_t result = 0;
  for (int i = 0; i < kMaxVarintBytes; ++i) {
    if (start + i >= data_.size()) return Truncated(what, suffix, start);
    const uint8_t byte = static_cast<uint8_t>(data_[start + i]);
    if (i == kMaxVarintBytes - 1 && byte > 1) {
      return MalformedAt(what, suffix, start, "varint overflows 64 bits");
    }
    result |= static_cast<uint64_t>(byte & 0x7F) << (7 * i);
    if ((byte & 0x80) == 0) {
      if (byte == 0 && i > 0) {
        return MalformedAt(what, suffix, start,
                           "over-long varint (not in shortest form)");
      }
      pos_ = start + i + 1;
      return result;
    }
  }
  // Unreachable: a 10th byte of 0 or 1 has no continuation bit.
  return MalformedAt(what, suffix, start, "varint longer than 10 bytes");
}

absl::StatusOr<uint64_t> ByteReader::ReadVarint(absl::string_view what) {
  return ReadVarintImpl(what, "");
}

absl::StatusOr<int64_t> ByteReader::ReadSignedVarint(absl::string_view what) {
  absl::StatusOr<uint64_t> zigzag = ReadVarintImpl(what, "");
  if (!zigzag.ok()) return zigzag.status();
  const uint64_t sign = (*zigzag & 1) ? ~uint64_t{0} : 0;
  return static_cast<int64_t>((*zigzag >> 1) ^ sign);
}

absl::StatusOr<uint8_t> ByteReader::ReadU8(absl::string_view what) {
  if (pos_ >= data_.size()) return Truncated(what, "", pos_);
  return static_cast<uint8_t>(data_[pos_++]);
}

absl::StatusOr<bool> ByteReader::ReadBool(absl::string_view what) {
  if (pos_ >= data_.size()) return Truncated(what, "", pos_);
  const uint8_t byte = static_cast<uint8_t>(data_[pos_]);
  if (byte > 1) {
    return Malformed(
        what, absl::StrCat("boolean byte is ", byte, ", expected 0 or 1"));
  }
  ++pos_;
  return byte == 1;
}

absl::StatusOr<double> ByteReader::ReadDouble(absl::string_view what) {
  if (remaining() < 8) return Truncated(what, "", pos_);
  uint64_t bits = 0;
  for (int i = 0; i < 8; ++i) {
    bits |= static_cast<uint64_t>(static_cast<uint8_t>(data_[pos_ + i]))
            << (8 * i);
  }
  pos_ += 8;
  double value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

absl::StatusOr<absl::string_view> ByteReader::ReadString(
    absl::string_view what) {
  absl::StatusOr<uint64_t> length = ReadVarintImpl(what, " length");
  if (!length.ok()) return length.status();
  if (*length > remaining()) {
    return Truncated(what, absl::StrCat(" (", *length, " bytes)"), pos_);
  }
  absl::string_view value = data_.substr(pos_, static_cast<size_t>(*length));
  pos_ += value.size();
  return value;
}

absl::StatusOr<size_t> ByteReader::ReadCount(absl::string_view what,
                                             size_t min_bytes_per_element) {
  if (min_bytes_per_element < 1) min_bytes_per_element = 1;
  const size_t start = pos_;
  absl::StatusOr<uint64_t> count = ReadVarintImpl(what, " count");
  if (!count.ok()) return count.status();
  const size_t max_count = remaining() / min_bytes_per_element;
  if (*count > max_count) {
    const size_t left = remaining();
    pos_ = start;
    return MalformedAt(what, " count", start,
                       absl::StrCat("claims ", *count, " elements, but only ",
                                    left, " bytes follow (at least ",
                                    min_bytes_per_element, " per element)"));
  }
  return static_cast<size_t>(*count);
}

absl::Status ByteReader::ExpectEnd() const {
  if (pos_ == data_.size()) return absl::OkStatus();
  return absl::DataLossError(absl::StrCat("malformed input: ", remaining(),
                                          " unexpected trailing bytes at byte ",
                                          pos_, " of ", data_.size()));
}

absl::string_view PayloadKindName(PayloadKind kind) {
  switch (kind) {
    case PayloadKind::kMetadata:
      return "Metadata";
    case PayloadKind::kSavePlan:
      return "SavePlan";
    case PayloadKind::kLoadPlan:
      return "LoadPlan";
    case PayloadKind::kWriteResults:
      return "WriteResults";
  }
  return "unknown";
}

void WriteHeader(PayloadKind kind, ByteWriter& writer) {
  writer.WriteU8(static_cast<uint8_t>(kind));
  writer.WriteU8(kByteCodecVersion);
}

absl::Status ReadHeader(PayloadKind expected, ByteReader& reader) {
  const absl::string_view expected_name = PayloadKindName(expected);
  absl::StatusOr<uint8_t> magic =
      reader.ReadU8(absl::StrCat(expected_name, " payload magic byte"));
  if (!magic.ok()) return magic.status();
  if (*magic != static_cast<uint8_t>(expected)) {
    const absl::string_view found_name =
        PayloadKindName(static_cast<PayloadKind>(*magic));
    const std::string found =
        found_name == "unknown"
            ? absl::StrFormat("an unknown magic byte 0x%02x", *magic)
            : absl::StrFormat("a %s payload (magic 0x%02x)", found_name,
                              *magic);
    return absl::DataLossError(absl::StrFormat(
        "wrong payload kind: expected a %s payload (magic 0x%02x) but found "
        "%s",
        expected_name, static_cast<uint8_t>(expected), found));
  }
  absl::StatusOr<uint8_t> version =
      reader.ReadU8(absl::StrCat(expected_name, " encoding version"));
  if (!version.ok()) return version.status();
  if (*version != kByteCodecVersion) {
    return absl::DataLossError(absl::StrFormat(
        "unsupported %s encoding version %d (this build reads version %d)",
        expected_name, *version, kByteCodecVersion));
  }
  return absl::OkStatus();
}

}  // namespace dcp
