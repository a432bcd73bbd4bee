// -----------------------------------------------------------------------------
// File: storage/crc32.h
// -----------------------------------------------------------------------------
//
// The CRC-32 ZIP and gzip use (reflected polynomial 0xEDB88320, initial and
// final XOR 0xFFFFFFFF), computed with Intel ISA-L (libisal, Debian's
// libisal-dev), which picks the fastest kernel the CPU supports (PCLMULQDQ
// folding, or VPCLMULQDQ with AVX-512) at run time. Results are identical to
// zlib's `crc32(crc, buf, len)`, including continuation: a checksum of data
// fed in pieces equals the checksum of the whole.
//
//   uint32_t crc = Crc32(header);
//   crc = Crc32(body, crc);        // == Crc32(StrCat(header, body))
//
// `Crc32Combine` joins the checksums of two pieces computed separately
// (zlib's `crc32_combine`), without the bytes:
//
//   Crc32Combine(Crc32(a), Crc32(b), b.size()) == Crc32(StrCat(a, b))
//
// The project's tests compare it against zlib (storage/crc32_test.cc), which
// is kept only as that reference.
//
// Errors: none; every input, including an empty one, has a checksum.
//
// Thread safety: pure functions, safe to call from any number of threads.
#ifndef DCP_STORAGE_CRC32_H_
#define DCP_STORAGE_CRC32_H_

#include <cstdint>

#include "absl/strings/string_view.h"

namespace dcp {

// CRC-32 of `data`, continuing from `crc`, the CRC-32 of the bytes before it
// (0 to start). Handles inputs of any length; `Crc32("123456789")` is
// 0xCBF43926.
uint32_t Crc32(absl::string_view data, uint32_t crc = 0);

// The CRC-32 of A followed by B, from `crc_a` = CRC-32 of A, `crc_b` = CRC-32
// of B and `length_b` = the size of B in bytes. O(log length_b).
uint32_t Crc32Combine(uint32_t crc_a, uint32_t crc_b, uint64_t length_b);

// The same when many pieces have the same length: `Crc32Shift(n)` computed
// once, then each `Crc32Combine(crc_a, crc_b, shift)` is O(1) (32 steps).
class Crc32Shift {
 public:
  explicit Crc32Shift(uint64_t length);
  uint64_t length() const { return length_; }

 private:
  friend uint32_t Crc32Combine(uint32_t crc_a, uint32_t crc_b,
                               const Crc32Shift& shift);
  uint64_t length_;
  uint32_t multiplier_;  // x^(8 * length) modulo the polynomial.
};
uint32_t Crc32Combine(uint32_t crc_a, uint32_t crc_b, const Crc32Shift& shift);

}  // namespace dcp

#endif  // DCP_STORAGE_CRC32_H_
