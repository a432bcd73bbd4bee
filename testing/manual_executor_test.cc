#include "testing/manual_executor.h"

#include <memory>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "core/executor.h"
#include "core/future.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/status_matchers.h"

namespace dcp::test {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

TEST(ManualExecutorTest, QueuesWithoutRunningUntilAsked) {
  ManualExecutor manual;
  Executor executor = manual.AsExecutor();
  std::vector<int> order;
  executor([&order] { order.push_back(1); });
  executor([&order] { order.push_back(2); });
  EXPECT_EQ(manual.pending(), 2);
  EXPECT_THAT(order, IsEmpty());

  EXPECT_TRUE(manual.RunNext());
  EXPECT_THAT(order, ElementsAre(1));
  EXPECT_EQ(manual.pending(), 1);
  EXPECT_TRUE(manual.RunNext());
  EXPECT_THAT(order, ElementsAre(1, 2));
  EXPECT_FALSE(manual.RunNext());
  EXPECT_EQ(manual.pending(), 0);
}

TEST(ManualExecutorTest, TasksRunOnTheCallingThread) {
  ManualExecutor manual;
  std::thread::id ran_on;
  manual.AsExecutor()([&ran_on] { ran_on = std::this_thread::get_id(); });
  EXPECT_TRUE(manual.RunNext());
  EXPECT_EQ(ran_on, std::this_thread::get_id());
}

TEST(ManualExecutorTest, RunAllIncludesTasksQueuedByTasks) {
  ManualExecutor manual;
  Executor executor = manual.AsExecutor();
  std::vector<int> order;
  executor([&order, executor] {
    order.push_back(1);
    executor([&order] { order.push_back(3); });
  });
  executor([&order] { order.push_back(2); });
  EXPECT_EQ(manual.RunAll(), 3);
  EXPECT_THAT(order, ElementsAre(1, 2, 3));
  EXPECT_EQ(manual.RunAll(), 0);
}

TEST(ManualExecutorTest, DrivesAFutureDeterministically) {
  ManualExecutor manual;
  PromiseFuturePair<int> pair = PromiseFuturePair<int>::Make();
  manual.AsExecutor()([promise = pair.promise] { promise.Set(3); });
  EXPECT_FALSE(pair.future.ready());
  manual.RunAll();
  ASSERT_TRUE(pair.future.ready());
  EXPECT_THAT(pair.future.result(), IsOkAndHolds(::testing::Eq(3)));
}

TEST(ManualExecutorTest, DestroyingWithPendingTasksAbandonsTheirPromises) {
  PromiseFuturePair<int> pair = PromiseFuturePair<int>::Make();
  {
    ManualExecutor manual;
    manual.AsExecutor()(
        [promise = std::move(pair.promise)] { promise.Set(1); });
  }
  ASSERT_TRUE(pair.future.ready());
  EXPECT_THAT(pair.future.result(), StatusIs(absl::StatusCode::kCancelled));
}

TEST(ManualExecutorTest, ExecutorOutlivingItDropsTasks) {
  Executor executor;
  { ManualExecutor manual; executor = manual.AsExecutor(); }
  PromiseFuturePair<void> pair = PromiseFuturePair<void>::Make();
  executor([promise = std::move(pair.promise)] {
    promise.Set(absl::OkStatus());
  });
  ASSERT_TRUE(pair.future.ready());
  EXPECT_THAT(pair.future.result(), StatusIs(absl::StatusCode::kCancelled));
}

TEST(ManualExecutorTest, AcceptsTasksFromOtherThreads) {
  constexpr int kThreads = 4;
  ManualExecutor manual;
  Executor executor = manual.AsExecutor();
  int ran = 0;
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([executor, &ran] { executor([&ran] { ++ran; }); });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(manual.pending(), kThreads);
  EXPECT_EQ(manual.RunAll(), kThreads);
  EXPECT_EQ(ran, kThreads);
}

TEST(ManualExecutorTest, ThrowingTaskIsContained) {
  ManualExecutor manual;
  Executor executor = manual.AsExecutor();
  bool ran = false;
  executor([] { throw std::runtime_error("bad task"); });
  executor([&ran] { ran = true; });
  EXPECT_EQ(manual.RunAll(), 2);
  EXPECT_TRUE(ran);
}

}  // namespace
}  // namespace dcp::test
