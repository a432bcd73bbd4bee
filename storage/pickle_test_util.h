// -----------------------------------------------------------------------------
// File: storage/pickle_test_util.h
// -----------------------------------------------------------------------------
//
// Test helpers for hand-assembled pickles: `Hex("80 02 4e 2e")` and the `Asm`
// builder, e.g.
//   std::string p = Asm().Proto(2).Global("torch", "Size").Op(')').Op('R')
//                       .Stop();
#ifndef DCP_STORAGE_PICKLE_TEST_UTIL_H_
#define DCP_STORAGE_PICKLE_TEST_UTIL_H_

#include <cstdint>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/string_view.h"
#include "glog/logging.h"

namespace dcp::test {

// "80 02 4b 07 2e" -> bytes; whitespace is ignored.
inline std::string Hex(absl::string_view hex) {
  std::string digits;
  for (char c : hex) {
    if (!absl::ascii_isspace(static_cast<unsigned char>(c))) digits += c;
  }
  CHECK_EQ(digits.size() % 2, 0u) << hex;
  for (char c : digits) CHECK(absl::ascii_isxdigit(c)) << hex;
  return absl::HexStringToBytes(digits);
}

// Appends opcodes and operands; converts to std::string / absl::string_view.
class Asm {
 public:
  Asm& Op(uint8_t op) {
    bytes_.push_back(static_cast<char>(op));
    return *this;
  }
  Asm& U8(uint64_t v) { return Le(v, 1); }
  Asm& U16(uint64_t v) { return Le(v, 2); }
  Asm& U32(uint64_t v) { return Le(v, 4); }
  Asm& U64(uint64_t v) { return Le(v, 8); }
  Asm& Raw(absl::string_view s) {
    bytes_.append(s.data(), s.size());
    return *this;
  }
  Asm& Proto(int v) { return Op(0x80).U8(v); }
  // SHORT_BINUNICODE / BINUNICODE.
  Asm& ShortUnicode(absl::string_view s) {
    return Op(0x8c).U8(s.size()).Raw(s);
  }
  Asm& Unicode(absl::string_view s) { return Op('X').U32(s.size()).Raw(s); }
  Asm& Global(absl::string_view module, absl::string_view name) {
    return Op('c').Raw(module).Raw("\n").Raw(name).Raw("\n");
  }
  Asm& BinInt1(int v) { return Op('K').U8(v); }
  Asm& Stop() { return Op('.'); }

  size_t size() const { return bytes_.size(); }
  std::string bytes() const { return bytes_; }
  operator std::string() const { return bytes_; }        // NOLINT
  operator absl::string_view() const { return bytes_; }  // NOLINT

 private:
  Asm& Le(uint64_t v, int width) {
    for (int i = 0; i < width; ++i) {
      bytes_.push_back(static_cast<char>(v >> (8 * i)));
    }
    return *this;
  }
  std::string bytes_;
};

}  // namespace dcp::test

#endif  // DCP_STORAGE_PICKLE_TEST_UTIL_H_
