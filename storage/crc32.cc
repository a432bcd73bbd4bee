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

}  // namespace dcp
