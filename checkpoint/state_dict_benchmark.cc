// StateDict build and lookup speed for many keys, to show that Set and Find
// take constant time per key: keys/s should stay about flat as the count
// grows tenfold.
//
//   bazel run -c opt //checkpoint:state_dict_benchmark -- 10000 100000 1000000
//
// For each count n it makes n realistic names ("layers.<i>.attention.wq.
// weight" and friends, eight per layer) and prints one row per case:
//
//   set    n Set calls into an empty StateDict, each key new
//   find   one Find per key in the built StateDict
//
// Timing uses the best of three runs. This is a benchmark, not a test: it
// checks only that every key is found with its value.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "checkpoint/state_dict.h"

namespace dcp {
namespace {

constexpr int kRuns = 3;

std::vector<std::string> MakeKeys(int64_t n) {
  static constexpr absl::string_view kLeaves[] = {
      "attention.wq.weight",     "attention.wk.weight",
      "attention.wv.weight",     "attention.wo.weight",
      "feed_forward.w1.weight",  "feed_forward.w2.weight",
      "attention_norm.weight",   "ffn_norm.weight",
  };
  constexpr int64_t kPerLayer = sizeof(kLeaves) / sizeof(kLeaves[0]);
  std::vector<std::string> keys;
  keys.reserve(n);
  for (int64_t i = 0; i < n; ++i) {
    keys.push_back(
        absl::StrCat("layers.", i / kPerLayer, ".", kLeaves[i % kPerLayer]));
  }
  return keys;
}

// Seconds of the fastest of kRuns calls of `fn`.
template <typename Fn>
double Best(Fn fn) {
  double best = 1e100;
  for (int run = 0; run < kRuns; ++run) {
    const auto start = std::chrono::steady_clock::now();
    fn();
    const std::chrono::duration<double> took =
        std::chrono::steady_clock::now() - start;
    best = std::min(best, took.count());
  }
  return best;
}

void Fail(const std::string& what) {
  std::fprintf(stderr, "%s\n", what.c_str());
  std::exit(1);
}

void Row(const char* name, int64_t n, double seconds) {
  std::printf("%-6s %9lld %9.4f %12.0f\n", name, static_cast<long long>(n),
              seconds, static_cast<double>(n) / seconds);
}

StateDict Build(const std::vector<std::string>& keys) {
  StateDict d;
  for (size_t i = 0; i < keys.size(); ++i) {
    d.Set(keys[i], static_cast<int64_t>(i));
  }
  return d;
}

void RunCase(int64_t n) {
  const std::vector<std::string> keys = MakeKeys(n);
  // Built dicts are kept until after timing, so their destruction is not
  // counted as building.
  std::vector<StateDict> built;
  built.reserve(kRuns);
  Row("set", n, Best([&] {
        built.push_back(Build(keys));
        if (built.back().size() != keys.size()) Fail("set: duplicate keys");
      }));
  built.clear();
  const StateDict d = Build(keys);
  Row("find", n, Best([&] {
        for (size_t i = 0; i < keys.size(); ++i) {
          const Value* value = d.Find(keys[i]);
          if (value == nullptr ||
              value->get<int64_t>() != static_cast<int64_t>(i)) {
            Fail(absl::StrCat("find: wrong answer for ", keys[i]));
          }
        }
      }));
}

}  // namespace
}  // namespace dcp

int main(int argc, char** argv) {
  std::vector<int64_t> counts;
  for (int i = 1; i < argc; ++i) {
    int64_t n = 0;
    if (!absl::SimpleAtoi(argv[i], &n) || n < 1) {
      std::fprintf(stderr, "usage: %s [keys...]\n", argv[0]);
      return 2;
    }
    counts.push_back(n);
  }
  if (counts.empty()) counts = {10000, 100000, 1000000};
  std::printf("%-6s %9s %9s %12s\n", "case", "keys", "seconds", "keys/s");
  for (int64_t n : counts) dcp::RunCase(n);
  return 0;
}
