#include "storage/crc32.h"

#include <isa-l/crc.h>

#include <cstdint>

#include "absl/strings/string_view.h"

namespace dcp {

uint32_t Crc32(absl::string_view data, uint32_t crc) {
  // ISA-L's seed is the previous result, like zlib's: it inverts the seed on
  // entry and the result on exit. An empty input leaves the checksum as it
  // is (and `data.data()` may be null then).
  if (data.empty()) return crc;
  // ISA-L only reads the buffer; its prototype just lacks the const.
  return crc32_gzip_refl(
      crc, reinterpret_cast<uint8_t*>(const_cast<char*>(data.data())),
      data.size());
}

namespace {

// Polynomials over GF(2) modulo the CRC-32 polynomial, in the reflected
// bit order the checksum uses: bit 31 is x^0, bit 0 is x^31.
constexpr uint32_t kPolynomial = 0xEDB88320u;
constexpr uint32_t kOne = 0x80000000u;  // x^0

// a * b modulo the polynomial.
uint32_t MultiplyModP(uint32_t a, uint32_t b) {
  uint32_t product = 0;
  for (uint32_t bit = kOne; bit != 0; bit >>= 1) {
    if (a & bit) product ^= b;
    // b *= x: a shift towards higher powers, reduced when x^32 appears.
    b = (b & 1) ? (b >> 1) ^ kPolynomial : b >> 1;
  }
  return product;
}

// x^(2^k) modulo the polynomial, for k = 0..66 (8 * 2^63 = 2^66).
struct PowersOfX {
  uint32_t x_to_2_to_the[67];
  PowersOfX() {
    x_to_2_to_the[0] = kOne >> 1;  // x^1
    for (int k = 1; k < 67; ++k) {
      x_to_2_to_the[k] =
          MultiplyModP(x_to_2_to_the[k - 1], x_to_2_to_the[k - 1]);
    }
  }
};

// x^(8 * bytes) modulo the polynomial: appending `bytes` zero bytes
// multiplies a message's remainder by it.
uint32_t XToTheBits(uint64_t bytes) {
  static const PowersOfX* const kPowers = new PowersOfX();
  uint32_t result = kOne;
  // 8 * bytes = bytes << 3: walk the bits of `bytes` from power 3 up.
  for (int k = 3; bytes != 0; ++k, bytes >>= 1) {
    if (bytes & 1) result = MultiplyModP(kPowers->x_to_2_to_the[k], result);
  }
  return result;
}

}  // namespace

// CRC(A.B) = CRC(A) * x^(8|B|) + CRC(B) modulo the polynomial: the initial
// and final inversions of A and B cancel out (the standard identity behind
// zlib's crc32_combine).
uint32_t Crc32Combine(uint32_t crc_a, uint32_t crc_b, uint64_t length_b) {
  return MultiplyModP(XToTheBits(length_b), crc_a) ^ crc_b;
}

Crc32Shift::Crc32Shift(uint64_t length)
    : length_(length), multiplier_(XToTheBits(length)) {}

uint32_t Crc32Combine(uint32_t crc_a, uint32_t crc_b, const Crc32Shift& shift) {
  return MultiplyModP(shift.multiplier_, crc_a) ^ crc_b;
}

}  // namespace dcp
