// -----------------------------------------------------------------------------
// File: testing/microbench.h
// -----------------------------------------------------------------------------
//
// The few pieces dcp's micro-benchmark binaries share (zip, state dict,
// planner): counts from the command line, best-of-N timing, and one table
// row per case. Benchmarks measure; tests never time anything.
//
//   int main(int argc, char** argv) {
//     for (int64_t n : microbench::CountsFromArgs(argc, argv, "keys",
//                                                  {10000, 100000})) {
//       microbench::PrintRow("set", n, microbench::BestSeconds(3, [&] {...}));
//     }
//   }
#ifndef DCP_TESTING_MICROBENCH_H_
#define DCP_TESTING_MICROBENCH_H_

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/string_view.h"

namespace dcp::microbench {

// Seconds of the fastest of `runs` calls of `fn`.
template <typename Fn>
double BestSeconds(int runs, Fn fn) {
  double best = 1e100;
  for (int run = 0; run < runs; ++run) {
    const auto start = std::chrono::steady_clock::now();
    fn();
    const std::chrono::duration<double> took =
        std::chrono::steady_clock::now() - start;
    best = std::min(best, took.count());
  }
  return best;
}

// Prints `what` to stderr and exits with status 1 (a benchmark whose code
// under test gave a wrong answer).
[[noreturn]] inline void Fail(absl::string_view what) {
  std::fprintf(stderr, "%.*s\n", static_cast<int>(what.size()), what.data());
  std::exit(1);
}

// The positive counts given as arguments, or `defaults` if none; exits with
// status 2 and a usage line on anything else. Prints the table header,
// whose second column is `unit` ("keys", "entries").
inline std::vector<int64_t> CountsFromArgs(int argc, char** argv,
                                           const char* unit,
                                           std::vector<int64_t> defaults) {
  std::vector<int64_t> counts;
  for (int i = 1; i < argc; ++i) {
    int64_t n = 0;
    if (!absl::SimpleAtoi(argv[i], &n) || n < 1) {
      std::fprintf(stderr, "usage: %s [%s...]\n", argv[0], unit);
      std::exit(2);
    }
    counts.push_back(n);
  }
  if (counts.empty()) counts = std::move(defaults);
  std::printf("%-12s %9s %9s %10s/s\n", "case", unit, "seconds", unit);
  return counts;
}

// One row: the case, the count, the seconds and the count per second.
inline void PrintRow(const char* name, int64_t n, double seconds) {
  std::printf("%-12s %9lld %9.4f %12.0f\n", name, static_cast<long long>(n),
              seconds, static_cast<double>(n) / seconds);
}

}  // namespace dcp::microbench

#endif  // DCP_TESTING_MICROBENCH_H_
