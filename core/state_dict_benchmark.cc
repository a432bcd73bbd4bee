// StateDict build and lookup speed for many keys, to show that Set and Find
// take constant time per key: keys/s should stay about flat as the count
// grows tenfold.
//
//   bazel run -c opt //core:state_dict_benchmark -- 10000 100000 1000000
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
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/state_dict.h"
#include "testing/microbench.h"

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
  microbench::PrintRow("set", n, microbench::BestSeconds(kRuns, [&] {
        built.push_back(Build(keys));
        if (built.back().size() != keys.size()) microbench::Fail("set: duplicate keys");
      }));
  built.clear();
  const StateDict d = Build(keys);
  microbench::PrintRow("find", n, microbench::BestSeconds(kRuns, [&] {
        for (size_t i = 0; i < keys.size(); ++i) {
          const Value* value = d.Find(keys[i]);
          if (value == nullptr ||
              value->get<int64_t>() != static_cast<int64_t>(i)) {
            microbench::Fail(absl::StrCat("find: wrong answer for ", keys[i]));
          }
        }
      }));
}

}  // namespace
}  // namespace dcp

int main(int argc, char** argv) {
  for (int64_t n : dcp::microbench::CountsFromArgs(argc, argv, "keys",
                                                   {10000, 100000, 1000000})) {
    dcp::RunCase(n);
  }
  return 0;
}
