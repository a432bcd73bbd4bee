#include "checkpoint/staging.h"

#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "ATen/ATen.h"
#include "core/state_dict.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/status_matchers.h"
#include "testing/tensor_matchers.h"

namespace dcp {
namespace {

using ::dcp::test::MakeTestTensor;
using ::dcp::test::StateDictEq;
using ::dcp::test::TensorEq;

const at::Tensor& TensorAt(const StateDict& state, const std::string& key) {
  return state.Find(key)->get<at::Tensor>();
}

// A state with every kind of value staging handles.
StateDict MixedState(int seed) {
  ShardedTensor sharded;
  sharded.global_size = {8, 3};
  sharded.local_shards.push_back(
      Shard{MakeTestTensor({2, 3}, at::kFloat, seed + 1), {2, 0}});
  sharded.local_shards.push_back(
      Shard{MakeTestTensor({2, 3}, at::kFloat, seed + 2), {6, 0}});
  StateDict nested{{"bias", Value(MakeTestTensor({5}, at::kDouble, seed + 3))},
                   {"step", Value(int64_t{seed})}};
  List list;
  list.push_back(Value(MakeTestTensor({3}, at::kInt, seed + 4)));
  list.push_back(Value(std::string("adam")));
  return StateDict{
      {"weight", Value(MakeTestTensor({4, 6}, at::kFloat, seed))},
      {"sharded", Value(std::move(sharded))},
      {"layer", Value(std::move(nested))},
      {"groups", Value(std::move(list))},
      {"lr", Value(0.5)},
  };
}

TEST(StageStateDictTest, CopiesEveryValueIntoContiguousCpuTensors) {
  StateDict source = MixedState(10);
  // A non-contiguous view must come out contiguous with the same values.
  const at::Tensor wide = MakeTestTensor({6, 4}, at::kFloat, 20);
  source.Set("transposed", Value(wide.t()));
  DCP_ASSERT_OK_AND_ASSIGN(StateDict staged, StageStateDict(source));
  EXPECT_THAT(staged, StateDictEq(source));
  EXPECT_TRUE(TensorAt(staged, "transposed").is_contiguous());
  EXPECT_NE(TensorAt(staged, "weight").data_ptr(),
            TensorAt(source, "weight").data_ptr());

  // The copy does not follow later changes of the source.
  const StateDict before = *StageStateDict(source);
  TensorAt(source, "weight").fill_(7);
  source.FindMutable("sharded")
      ->get<ShardedTensor>()
      .local_shards[1]
      .tensor.fill_(7);
  EXPECT_THAT(staged, StateDictEq(before));
}

TEST(StageStateDictTest, ReusesMatchingTensorsAndAllocatesTheRest) {
  StateDict first = MixedState(1);
  StagingStats stats;
  DCP_ASSERT_OK_AND_ASSIGN(
      StateDict cached,
      StageStateDict(first, StagingOptions{}, nullptr, &stats));
  EXPECT_EQ(stats.reused_bytes, 0);
  EXPECT_GT(stats.bytes, 0);

  StateDict second = MixedState(2);
  // A changed shape and a changed dtype cannot reuse their buffers.
  second.Set("weight", Value(MakeTestTensor({4, 7}, at::kFloat, 5)));
  second.FindMutable("layer")->get<StateDict>().Set(
      "bias", Value(MakeTestTensor({5}, at::kFloat, 6)));
  DCP_ASSERT_OK_AND_ASSIGN(
      StateDict staged,
      StageStateDict(second, StagingOptions{}, &cached, &stats));
  EXPECT_THAT(staged, StateDictEq(second));
  const auto& cached_shards = cached.Find("sharded")->get<ShardedTensor>();
  const auto& staged_shards = staged.Find("sharded")->get<ShardedTensor>();
  EXPECT_EQ(staged_shards.local_shards[1].tensor.data_ptr(),
            cached_shards.local_shards[1].tensor.data_ptr());
  EXPECT_EQ(staged.Find("groups")->get<List>()[0].get<at::Tensor>().data_ptr(),
            cached.Find("groups")->get<List>()[0].get<at::Tensor>().data_ptr());
  EXPECT_NE(TensorAt(staged, "weight").data_ptr(),
            TensorAt(cached, "weight").data_ptr());
  EXPECT_NE(TensorAt(staged.Find("layer")->get<StateDict>(), "bias").data_ptr(),
            TensorAt(cached.Find("layer")->get<StateDict>(), "bias").data_ptr());
  // Reused: both shards (2x3 floats each) and the int list element.
  EXPECT_EQ(stats.reused_bytes, 2 * 6 * 4 + 3 * 4);
}

TEST(StageStateDictTest, ParallelCopiesSplitLargeTensorsAndKeepValues) {
  // 48 MiB in one tensor and a few small ones: split into row pieces.
  StateDict source{
      {"big", Value(MakeTestTensor({3 * 1024, 4096}, at::kFloat, 3))},
      {"small", Value(MakeTestTensor({17}, at::kFloat, 4))},
      {"odd", Value(MakeTestTensor({5, 1, 3}, at::kHalf, 5).transpose(0, 2))},
  };
  StagingOptions options;
  options.copy_threads = 3;
  options.parallel_copy_min_bytes = 0;
  StagingStats stats;
  DCP_ASSERT_OK_AND_ASSIGN(StateDict staged,
                           StageStateDict(source, options, nullptr, &stats));
  EXPECT_EQ(stats.threads, 3);
  EXPECT_THAT(staged, StateDictEq(source));

  // Into reused buffers, with new values.
  StateDict changed = source;
  changed.Set("big", Value(MakeTestTensor({3 * 1024, 4096}, at::kFloat, 9)));
  DCP_ASSERT_OK_AND_ASSIGN(StateDict again,
                           StageStateDict(changed, options, &staged, &stats));
  EXPECT_EQ(TensorAt(again, "big").data_ptr(), TensorAt(staged, "big").data_ptr());
  EXPECT_THAT(TensorAt(again, "big"), TensorEq(TensorAt(changed, "big")));
}

TEST(StageStateDictTest, SmallStatesAreCopiedByTheCallingThread) {
  StagingOptions options;
  options.copy_threads = 4;  // Below parallel_copy_min_bytes: unused.
  StagingStats stats;
  DCP_ASSERT_OK(
      StageStateDict(MixedState(3), options, nullptr, &stats).status());
  EXPECT_EQ(stats.threads, 1);
}

TEST(StagingPoolTest, ReusesTheBuffersOfAReleasedCopy) {
  StagingPool pool(StagingOptions{}, /*max_cached=*/1);
  const StateDict first = MixedState(1);
  DCP_ASSERT_OK_AND_ASSIGN(std::shared_ptr<const StateDict> staged,
                           pool.Stage(first));
  const void* weight = TensorAt(*staged, "weight").data_ptr();
  EXPECT_EQ(pool.cached(), 0u);
  staged.reset();
  EXPECT_EQ(pool.cached(), 1u);

  const StateDict second = MixedState(2);
  StagingStats stats;
  DCP_ASSERT_OK_AND_ASSIGN(staged, pool.Stage(second, &stats));
  EXPECT_EQ(TensorAt(*staged, "weight").data_ptr(), weight);
  EXPECT_EQ(stats.reused_bytes, stats.bytes);
  EXPECT_THAT(*staged, StateDictEq(second));
}

TEST(StagingPoolTest, NeverReusesACopyThatIsStillHeld) {
  StagingPool pool(StagingOptions{}, /*max_cached=*/2);
  const StateDict state = MixedState(1);
  DCP_ASSERT_OK_AND_ASSIGN(std::shared_ptr<const StateDict> a,
                           pool.Stage(state));
  DCP_ASSERT_OK_AND_ASSIGN(std::shared_ptr<const StateDict> b,
                           pool.Stage(state));
  EXPECT_NE(TensorAt(*a, "weight").data_ptr(), TensorAt(*b, "weight").data_ptr());
  const at::Tensor a_weight = TensorAt(*a, "weight").clone();
  DCP_ASSERT_OK_AND_ASSIGN(std::shared_ptr<const StateDict> c,
                           pool.Stage(MixedState(5)));
  EXPECT_THAT(TensorAt(*a, "weight"), TensorEq(a_weight));
  a.reset();
  b.reset();
  c.reset();
  EXPECT_EQ(pool.cached(), 2u);  // At most max_cached are kept.
  pool.Clear();
  EXPECT_EQ(pool.cached(), 0u);
}

TEST(StagingPoolTest, ACopyMayOutliveThePool) {
  std::shared_ptr<const StateDict> staged;
  {
    StagingPool pool(StagingOptions{}, 1);
    DCP_ASSERT_OK_AND_ASSIGN(staged, pool.Stage(MixedState(1)));
  }
  EXPECT_THAT(*staged, StateDictEq(MixedState(1)));
  staged.reset();  // Freed, not returned: the pool is gone.
}

}  // namespace
}  // namespace dcp
