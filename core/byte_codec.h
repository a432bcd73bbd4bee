// -----------------------------------------------------------------------------
// File: core/byte_codec.h
// -----------------------------------------------------------------------------
//
// Primitives of dcp's compact binary encoding, used to send plans, write
// results and metadata between ranks (core/metadata_codec.h,
// planner/plan_codec.h). It is a wire format between processes of the same
// build, not a file format: checkpoints on disk use PyTorch's pickle.
//
// Primitive encodings (all little-endian where multi-byte):
//   varint   unsigned LEB128, 1 to 10 bytes, shortest form only
//   svarint  zigzag-mapped int64 ((n << 1) ^ (n >> 63)) as a varint
//   u8       one byte
//   bool     one byte, 0 or 1
//   double   8 bytes, the IEEE-754 bit pattern, little-endian
//   string   varint byte length, then the bytes (also used for bytes)
//   count    varint element count, checked against the remaining input
//   header   a payload-kind magic byte, then a format version byte
//
// Decoding is strict so that every valid encoding has exactly one decoded
// value and re-encodes to the same bytes: over-long (non-shortest) varints,
// booleans other than 0/1 and trailing bytes are errors.
//
//   ByteWriter w;
//   WriteHeader(PayloadKind::kSavePlan, w);
//   w.WriteCount(items.size());
//   ...
//   std::string bytes = std::move(w).Finish();
//
//   ByteReader r(bytes);
//   DCP_RETURN_IF_ERROR(ReadHeader(PayloadKind::kSavePlan, r));
//   DCP_ASSIGN_OR_RETURN(size_t n, r.ReadCount("write items", 5));
//   ...
//   DCP_RETURN_IF_ERROR(r.ExpectEnd());
//
// Errors: every failed read is `DataLoss`, with a message naming what was
// being read and where, e.g.
// "truncated input: reading string length at byte 17 of 20". The reader
// never allocates more than the input could hold: `ReadCount` rejects
// element counts that cannot fit in the remaining bytes, and `ReadString`
// returns a view into the input.
//
// Thread safety: `ByteWriter` and `ByteReader` are not thread-safe; use one
// per thread.
#ifndef DCP_CORE_BYTE_CODEC_H_
#define DCP_CORE_BYTE_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dcp {

// Appends encoded primitives to an owned buffer. Writing cannot fail.
class ByteWriter {
 public:
  ByteWriter() = default;
  ByteWriter(const ByteWriter&) = delete;
  ByteWriter& operator=(const ByteWriter&) = delete;

  void WriteVarint(uint64_t value);
  void WriteSignedVarint(int64_t value);  // zigzag
  void WriteU8(uint8_t value);
  void WriteBool(bool value);
  void WriteDouble(double value);
  void WriteString(absl::string_view value);  // length-prefixed
  // An element count, read back with ByteReader::ReadCount.
  void WriteCount(size_t count) { WriteVarint(count); }

  // Bytes written so far.
  size_t size() const { return buffer_.size(); }
  const std::string& data() const { return buffer_; }

  // Returns the encoding; the writer is left empty.
  std::string Finish() && { return std::move(buffer_); }

 private:
  std::string buffer_;
};

// Reads primitives from a borrowed byte string.
//
// Ownership: the bytes viewed by the constructor's `data` (and every
// string_view returned by `ReadString`) must outlive their use.
//
// Errors: each `Read*` takes `what`, a short noun naming the field being
// read ("fqn", "chunk count"), and returns `DataLoss` on failure:
//   "truncated input: reading <what> at byte <pos> of <size>"
//   "malformed input: <what> at byte <pos> of <size>: <detail>"
// After an error the reader's position is unspecified; stop decoding.
class ByteReader {
 public:
  explicit ByteReader(absl::string_view data) : data_(data) {}
  ByteReader(const ByteReader&) = delete;
  ByteReader& operator=(const ByteReader&) = delete;

  // At most 10 bytes; the 10th may only hold the top bit of a uint64, and
  // the shortest form is required (no redundant 0x80 ... 0x00 padding).
  absl::StatusOr<uint64_t> ReadVarint(absl::string_view what);
  absl::StatusOr<int64_t> ReadSignedVarint(absl::string_view what);
  absl::StatusOr<uint8_t> ReadU8(absl::string_view what);
  // Only 0 and 1 are valid.
  absl::StatusOr<bool> ReadBool(absl::string_view what);
  absl::StatusOr<double> ReadDouble(absl::string_view what);
  // A view into the input (no copy); valid while the input is.
  absl::StatusOr<absl::string_view> ReadString(absl::string_view what);

  // Reads an element count written by WriteCount, and rejects counts that
  // could not fit in the remaining input given that each element takes at
  // least `min_bytes_per_element` bytes (values below 1 are treated as 1).
  // So a corrupt count of 2^60 fails here instead of in `reserve()`.
  absl::StatusOr<size_t> ReadCount(absl::string_view what,
                                   size_t min_bytes_per_element);

  // DataLoss if any bytes remain unread.
  absl::Status ExpectEnd() const;

  // A DataLoss error "malformed input: <what> at byte <pos> of <size>:
  // <detail>" at the current position, for checks done by callers (an
  // out-of-range enum value, keys out of order...).
  absl::Status Malformed(absl::string_view what,
                         absl::string_view detail) const;

  size_t position() const { return pos_; }
  size_t remaining() const { return data_.size() - pos_; }
  size_t size() const { return data_.size(); }

 private:
  // `what` and `suffix` are concatenated only when an error is built, so
  // that successful reads never allocate.
  absl::StatusOr<uint64_t> ReadVarintImpl(absl::string_view what,
                                          absl::string_view suffix);
  absl::Status Truncated(absl::string_view what, absl::string_view suffix,
                         size_t at) const;
  absl::Status MalformedAt(absl::string_view what, absl::string_view suffix,
                           size_t at, absl::string_view detail) const;

  absl::string_view data_;
  size_t pos_ = 0;
};

// What a payload holds; the first byte of every top-level encoding, so that
// decoding the wrong kind of payload fails clearly. Add new kinds at the
// end with fresh values; never reuse one.
enum class PayloadKind : uint8_t {
  kMetadata = 0xD1,
  kSavePlan = 0xD2,
  kLoadPlan = 0xD3,
  kWriteResults = 0xD4,
};

// "Metadata", "SavePlan", ...; "unknown" for other values.
absl::string_view PayloadKindName(PayloadKind kind);

// The version byte written after the magic; bump it when any encoding that
// uses the header changes.
inline constexpr uint8_t kByteCodecVersion = 1;

// Writes the two-byte header: `kind`, then kByteCodecVersion.
void WriteHeader(PayloadKind kind, ByteWriter& writer);

// Reads and checks the header. DataLoss naming both kinds if the magic byte
// is another kind's ("expected a Metadata payload (magic 0xd1) but found a
// SavePlan payload (magic 0xd2)") or unknown, or if the version differs.
absl::Status ReadHeader(PayloadKind expected, ByteReader& reader);

}  // namespace dcp

#endif  // DCP_CORE_BYTE_CODEC_H_
