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

}  // namespace dcp

#endif  // DCP_STORAGE_CRC32_H_
