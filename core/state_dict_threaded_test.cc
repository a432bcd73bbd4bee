// Concurrent const lookups on a StateDict whose index is stale, so that
// several readers race to rebuild it. Run under --config=tsan as well.
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/state_dict.h"
#include "gtest/gtest.h"

namespace dcp {
namespace {

TEST(StateDictThreadedTest, ConcurrentConstLookupsOnStaleIndexAgree) {
  constexpr int kKeys = 2000;
  constexpr int kThreads = 4;
  StateDict d;
  for (int i = 0; i < kKeys; ++i) d.Set(absl::StrCat("k", i), i);
  // Renaming through mutable_entries() leaves the index stale.
  for (auto& [key, value] : d.mutable_entries()) key = absl::StrCat("r", key);

  const StateDict& shared = d;
  std::vector<int> wrong(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&shared, &wrong, t] {
      for (int i = 0; i < kKeys; ++i) {
        const Value* value = shared.Find(absl::StrCat("rk", i));
        if (value == nullptr || value->get<int64_t>() != i) ++wrong[t];
        if (shared.Contains(absl::StrCat("k", i))) ++wrong[t];
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(wrong[t], 0) << "thread " << t;
}

TEST(StateDictThreadedTest, ConcurrentLookupsOnCopiesOfOneDict) {
  StateDict original{{"a", 1}, {"b", 2}};
  const StateDict copy = original;  // Starts with a stale, empty index.
  std::vector<int> wrong(2, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&copy, &wrong, t] {
      for (int i = 0; i < 100; ++i) {
        const Value* b = copy.Find("b");
        if (b == nullptr || b->get<int64_t>() != 2) ++wrong[t];
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(wrong[0], 0);
  EXPECT_EQ(wrong[1], 0);
}

}  // namespace
}  // namespace dcp
