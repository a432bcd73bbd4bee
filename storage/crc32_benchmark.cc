// CRC-32 throughput of ISA-L (dcp::Crc32) against zlib's crc32_z, on one
// core, over a buffer of random bytes:
//
//   bazel run -c opt //storage:crc32_benchmark            # 256 MiB
//   bazel run -c opt //storage:crc32_benchmark -- 64 1024  # MiB each
//
// Prints one row per implementation and size: the seconds of the best of
// three passes and GB/s (10^9 bytes per second). This is a benchmark, not a
// test: it checks only that both give the same checksum.

#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "storage/crc32.h"
#include "testing/microbench.h"

namespace dcp {
namespace {

constexpr int kRuns = 3;

uint32_t ZlibCrc32(absl::string_view data) {
  return static_cast<uint32_t>(
      crc32_z(0, reinterpret_cast<const Bytef*>(data.data()), data.size()));
}

void PrintGbps(const char* name, int64_t mib, double seconds) {
  const double bytes = static_cast<double>(mib) * (1 << 20);
  std::printf("%-12s %9lld %9.4f %12.2f\n", name, static_cast<long long>(mib),
              seconds, bytes / seconds / 1e9);
}

void RunCase(int64_t mib) {
  std::string data(static_cast<size_t>(mib) << 20, '\0');
  std::mt19937_64 rng(42);
  for (size_t i = 0; i + 8 <= data.size(); i += 8) {
    const uint64_t word = rng();
    for (int j = 0; j < 8; ++j) data[i + j] = static_cast<char>(word >> (8 * j));
  }
  uint32_t zlib_crc = 0;
  uint32_t isal_crc = 0;
  PrintGbps("zlib", mib, microbench::BestSeconds(kRuns, [&] {
              zlib_crc = ZlibCrc32(data);
            }));
  PrintGbps("isa-l", mib, microbench::BestSeconds(kRuns, [&] {
              isal_crc = Crc32(data);
            }));
  if (zlib_crc != isal_crc) {
    microbench::Fail(absl::StrCat("checksums differ: zlib ", zlib_crc,
                                  " isa-l ", isal_crc));
  }
}

}  // namespace
}  // namespace dcp

int main(int argc, char** argv) {
  std::vector<int64_t> sizes;
  for (int i = 1; i < argc; ++i) {
    int64_t mib = 0;
    if (!absl::SimpleAtoi(argv[i], &mib) || mib < 1 || mib > (1 << 16)) {
      std::fprintf(stderr, "usage: %s [MiB...]  (1 to 65536 each)\n", argv[0]);
      return 2;
    }
    sizes.push_back(mib);
  }
  if (sizes.empty()) sizes.push_back(256);
  std::printf("%-12s %9s %9s %12s\n", "crc32", "MiB", "seconds", "GB/s");
  for (int64_t mib : sizes) dcp::RunCase(mib);
  return 0;
}
