#include "core/executor.h"

#include <atomic>
#include <memory>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "core/future.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/status_matchers.h"

namespace dcp {
namespace {

using ::dcp::test::IsOk;
using ::dcp::test::IsOkAndHolds;
using ::dcp::test::StatusIs;
using ::testing::ElementsAre;
using ::testing::Eq;

// Every blocking wait in these tests has this deadline.
constexpr absl::Duration kDeadline = absl::Seconds(30);

TEST(InlineExecutorTest, RunsTaskImmediatelyOnCallingThread) {
  Executor executor = InlineExecutor();
  std::thread::id ran_on;
  executor([&ran_on] { ran_on = std::this_thread::get_id(); });
  EXPECT_EQ(ran_on, std::this_thread::get_id());
}

TEST(InlineExecutorTest, ThrowingTaskIsCaughtAndLogged) {
  Executor executor = InlineExecutor();
  executor([] { throw std::runtime_error("boom"); });
  executor([] { throw 42; });
  bool ran = false;
  executor([&ran] { ran = true; });
  EXPECT_TRUE(ran);
}

TEST(SerialExecutorTest, RunsTasksInFifoOrderOnOneBackgroundThread) {
  constexpr int kTasks = 100;
  std::vector<int> order;  // Touched only by the worker until `done`.
  std::vector<std::thread::id> threads;
  PromiseFuturePair<void> done = PromiseFuturePair<void>::Make();
  SerialExecutor serial;
  Executor executor = serial.AsExecutor();
  for (int i = 0; i < kTasks; ++i) {
    executor([&, i] {
      order.push_back(i);
      threads.push_back(std::this_thread::get_id());
      if (i == kTasks - 1) done.promise.Set(absl::OkStatus());
    });
  }
  ASSERT_TRUE(done.future.WaitFor(kDeadline));
  ASSERT_EQ(order.size(), kTasks);
  for (int i = 0; i < kTasks; ++i) EXPECT_EQ(order[i], i);
  EXPECT_NE(threads.front(), std::this_thread::get_id());
  for (const std::thread::id& id : threads) EXPECT_EQ(id, threads.front());
}

TEST(SerialExecutorTest, DestructorRunsEveryQueuedTaskBeforeReturning) {
  constexpr int kTasks = 20;
  int ran = 0;  // Read after the destructor has joined the worker.
  PromiseFuturePair<void> gate = PromiseFuturePair<void>::Make();
  {
    SerialExecutor serial;
    // Holds the worker so the other tasks are still queued below.
    serial.Schedule([gate = gate.future, &ran] {
      EXPECT_TRUE(gate.WaitFor(kDeadline));
      ++ran;
    });
    for (int i = 0; i < kTasks; ++i) serial.Schedule([&ran] { ++ran; });
    gate.promise.Set(absl::OkStatus());
  }
  EXPECT_EQ(ran, kTasks + 1);
}

TEST(SerialExecutorTest, TasksQueuedByTasksDuringShutdownStillRun) {
  std::vector<int> order;
  {
    SerialExecutor serial;
    Executor executor = serial.AsExecutor();
    executor([&order, executor] {
      order.push_back(1);
      executor([&order, executor] {
        order.push_back(2);
        executor([&order] { order.push_back(3); });
      });
    });
  }
  EXPECT_THAT(order, ElementsAre(1, 2, 3));
}

TEST(SerialExecutorTest, ThrowingTaskDoesNotStopLaterTasks) {
  std::vector<int> order;
  {
    SerialExecutor serial;
    serial.Schedule([&order] { order.push_back(1); });
    serial.Schedule([] { throw std::runtime_error("task failed"); });
    serial.Schedule([&order] { order.push_back(3); });
  }
  EXPECT_THAT(order, ElementsAre(1, 3));
}

TEST(SerialExecutorTest, CompletesFuturesOnTheWorker) {
  SerialExecutor serial;
  Executor executor = serial.AsExecutor();
  PromiseFuturePair<int> pair = PromiseFuturePair<int>::Make();
  executor([promise = pair.promise] { promise.Set(5); });
  ASSERT_TRUE(pair.future.WaitFor(kDeadline));
  EXPECT_THAT(pair.future.result(), IsOkAndHolds(Eq(5)));
}

TEST(SerialExecutorTest, TaskGivenAfterShutdownIsDroppedAndAbandonsPromise) {
  Executor executor;
  {
    SerialExecutor serial;
    executor = serial.AsExecutor();
  }
  PromiseFuturePair<int> pair = PromiseFuturePair<int>::Make();
  bool ran = false;
  executor([promise = std::move(pair.promise), &ran] {
    ran = true;
    promise.Set(1);
  });
  EXPECT_FALSE(ran);
  ASSERT_TRUE(pair.future.ready());
  EXPECT_THAT(pair.future.result(), StatusIs(absl::StatusCode::kCancelled));
}

TEST(SerialExecutorTest, ConcurrentProducersKeepTheirOwnOrder) {
  constexpr int kProducers = 4;
  constexpr int kTasksEach = 50;
  std::vector<std::vector<int>> seen(kProducers);  // Worker-only until join.
  {
    SerialExecutor serial;
    Executor executor = serial.AsExecutor();
    std::vector<std::thread> producers;
    for (int p = 0; p < kProducers; ++p) {
      producers.emplace_back([&, p] {
        for (int i = 0; i < kTasksEach; ++i) {
          executor([&seen, p, i] { seen[p].push_back(i); });
        }
      });
    }
    for (std::thread& t : producers) t.join();
  }
  for (int p = 0; p < kProducers; ++p) {
    ASSERT_EQ(seen[p].size(), kTasksEach) << "producer " << p;
    for (int i = 0; i < kTasksEach; ++i) EXPECT_EQ(seen[p][i], i);
  }
}

TEST(SerialExecutorTest, CreateStartsAWorkingExecutor) {
  absl::StatusOr<std::unique_ptr<SerialExecutor>> serial =
      SerialExecutor::Create();
  ASSERT_TRUE(serial.ok()) << serial.status();
  PromiseFuturePair<int> pair = PromiseFuturePair<int>::Make();
  (*serial)->Schedule([promise = pair.promise] { promise.Set(7); });
  EXPECT_THAT(pair.future.result(), IsOkAndHolds(7));
}

// A task that drops the last reference to its own executor: the destructor
// cannot join its own thread, so the thread finishes the queue on its own.
TEST(SerialExecutorTest, DestroyedByItsOwnTaskItFinishesTheQueueAndExits) {
  auto holder = std::make_shared<std::unique_ptr<SerialExecutor>>(
      std::make_unique<SerialExecutor>());
  Executor executor = (*holder)->AsExecutor();
  PromiseFuturePair<void> gate = PromiseFuturePair<void>::Make();
  PromiseFuturePair<void> later = PromiseFuturePair<void>::Make();
  std::atomic<bool> destroyed{false};
  // Everything is queued before the worker gets past the first task.
  executor([future = gate.future] { future.Wait(); });
  executor([holder, &destroyed] {
    holder->reset();  // ~SerialExecutor on its own worker thread.
    destroyed = true;
  });
  executor([promise = later.promise] { promise.Set(absl::OkStatus()); });
  holder.reset();
  gate.promise.Set(absl::OkStatus());
  ASSERT_TRUE(later.future.WaitFor(kDeadline));
  EXPECT_THAT(later.future.result(), IsOk());
  EXPECT_TRUE(destroyed);
}

}  // namespace
}  // namespace dcp
