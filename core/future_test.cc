#include "core/future.h"

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/status.h"
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
using ::testing::HasSubstr;
using ::testing::Pointee;

// Every blocking wait in these tests has this deadline.
constexpr absl::Duration kDeadline = absl::Seconds(30);

TEST(FutureTest, SetMakesReadyAndDeliversValue) {
  PromiseFuturePair<int> pair = PromiseFuturePair<int>::Make();
  EXPECT_TRUE(pair.future.valid());
  EXPECT_FALSE(pair.future.ready());
  EXPECT_FALSE(pair.promise.ready());
  EXPECT_FALSE(pair.future.WaitFor(absl::ZeroDuration()));

  EXPECT_TRUE(pair.promise.Set(42));

  EXPECT_TRUE(pair.future.ready());
  EXPECT_TRUE(pair.promise.ready());
  EXPECT_TRUE(pair.future.WaitFor(absl::ZeroDuration()));
  EXPECT_THAT(pair.future.result(), IsOkAndHolds(Eq(42)));
}

TEST(FutureTest, FirstSetWins) {
  PromiseFuturePair<int> pair = PromiseFuturePair<int>::Make();
  EXPECT_TRUE(pair.promise.Set(1));
  EXPECT_FALSE(pair.promise.Set(2));
  EXPECT_FALSE(pair.promise.Set(absl::InternalError("late")));
  EXPECT_THAT(pair.future.result(), IsOkAndHolds(Eq(1)));
}

TEST(FutureTest, ErrorResult) {
  PromiseFuturePair<std::string> pair =
      PromiseFuturePair<std::string>::Make();
  EXPECT_TRUE(pair.promise.Set(absl::UnavailableError("disk")));
  EXPECT_THAT(pair.future.result(),
              StatusIs(absl::StatusCode::kUnavailable, Eq("disk")));
}

TEST(FutureTest, VoidFutureResolvesToStatus) {
  PromiseFuturePair<void> ok = PromiseFuturePair<void>::Make();
  EXPECT_TRUE(ok.promise.Set(absl::OkStatus()));
  const absl::Status& status = ok.future.result();
  DCP_EXPECT_OK(status);

  PromiseFuturePair<void> failed = PromiseFuturePair<void>::Make();
  EXPECT_TRUE(failed.promise.Set(absl::DataLossError("torn")));
  EXPECT_THAT(failed.future.result(), StatusIs(absl::StatusCode::kDataLoss));
}

Future<int> ParseOrFail(absl::Status status) {
  DCP_RETURN_IF_ERROR(status);
  return MakeReadyFuture<int>(7);
}

TEST(FutureTest, ImplicitlyConstructibleFromErrorStatus) {
  Future<int> failed = ParseOrFail(absl::NotFoundError("no such key"));
  ASSERT_TRUE(failed.ready());
  EXPECT_THAT(failed.result(),
              StatusIs(absl::StatusCode::kNotFound, Eq("no such key")));

  Future<int> ok = ParseOrFail(absl::OkStatus());
  ASSERT_TRUE(ok.ready());
  EXPECT_THAT(ok.result(), IsOkAndHolds(Eq(7)));
}

TEST(FutureTest, VoidFutureFromOkStatusIsReadyAndOk) {
  Future<void> future = absl::OkStatus();
  ASSERT_TRUE(future.ready());
  DCP_EXPECT_OK(future.result());
  Future<void> done = MakeReadyFuture();
  DCP_EXPECT_OK(done.result());
}

TEST(FutureTest, ValueFutureFromOkStatusIsInternalError) {
  Future<int> future = absl::OkStatus();
  ASSERT_TRUE(future.ready());
  EXPECT_THAT(future.result(), StatusIs(absl::StatusCode::kInternal,
                                        HasSubstr("OK status")));
}

TEST(FutureTest, CopiesShareOneResult) {
  PromiseFuturePair<int> pair = PromiseFuturePair<int>::Make();
  Future<int> copy = pair.future;
  Promise<int> promise_copy = pair.promise;
  EXPECT_TRUE(promise_copy.Set(5));
  EXPECT_FALSE(pair.promise.Set(6));
  EXPECT_TRUE(copy.ready());
  EXPECT_EQ(&copy.result(), &pair.future.result());
  EXPECT_THAT(copy.result(), IsOkAndHolds(Eq(5)));
}

TEST(FutureTest, RvalueResultReturnsACopy) {
  absl::StatusOr<int> result = MakeReadyFuture<int>(3).result();
  EXPECT_THAT(result, IsOkAndHolds(Eq(3)));
}

TEST(FutureTest, MoveOnlyValue) {
  PromiseFuturePair<std::unique_ptr<int>> pair =
      PromiseFuturePair<std::unique_ptr<int>>::Make();
  EXPECT_TRUE(pair.promise.Set(std::make_unique<int>(9)));
  EXPECT_THAT(pair.future.result(), IsOkAndHolds(Pointee(9)));
}

TEST(FutureTest, AbandonedPromiseCancelsFuture) {
  Future<int> future;
  {
    PromiseFuturePair<int> pair = PromiseFuturePair<int>::Make();
    future = pair.future;
  }
  ASSERT_TRUE(future.ready());
  EXPECT_THAT(future.result(), StatusIs(absl::StatusCode::kCancelled,
                                        HasSubstr("promise abandoned")));
}

TEST(FutureTest, OnlyTheLastPromiseCopyAbandons) {
  PromiseFuturePair<int> pair = PromiseFuturePair<int>::Make();
  auto copy = std::make_unique<Promise<int>>(pair.promise);
  pair.promise = Promise<int>();  // Drops one reference.
  EXPECT_FALSE(pair.future.ready());
  copy.reset();
  ASSERT_TRUE(pair.future.ready());
  EXPECT_THAT(pair.future.result(), StatusIs(absl::StatusCode::kCancelled));
}

TEST(FutureTest, DestroyingASetPromiseKeepsTheResult) {
  Future<int> future;
  {
    PromiseFuturePair<int> pair = PromiseFuturePair<int>::Make();
    future = pair.future;
    EXPECT_TRUE(pair.promise.Set(11));
  }
  EXPECT_THAT(future.result(), IsOkAndHolds(Eq(11)));
}

TEST(FutureTest, MovedPromiseStillCompletes) {
  PromiseFuturePair<int> pair = PromiseFuturePair<int>::Make();
  Promise<int> moved = std::move(pair.promise);
  EXPECT_FALSE(pair.future.ready());  // The move did not abandon it.
  EXPECT_TRUE(moved.Set(4));
  EXPECT_THAT(pair.future.result(), IsOkAndHolds(Eq(4)));
}

TEST(FutureTest, SetWithNoFutureLeftIsHarmless) {
  PromiseFuturePair<int> pair = PromiseFuturePair<int>::Make();
  pair.future = Future<int>();
  EXPECT_TRUE(pair.promise.Set(1));
}

TEST(FutureTest, CallbackRunsOnSetAndNotBefore) {
  PromiseFuturePair<int> pair = PromiseFuturePair<int>::Make();
  std::vector<int> seen;
  pair.future.ExecuteWhenReady([&seen](const absl::StatusOr<int>& result) {
    seen.push_back(*result);
  });
  EXPECT_TRUE(seen.empty());
  EXPECT_TRUE(pair.promise.Set(3));
  EXPECT_THAT(seen, ElementsAre(3));
}

TEST(FutureTest, CallbackOnReadyFutureRunsInlineOnCallingThread) {
  Future<int> future = MakeReadyFuture<int>(8);
  std::thread::id ran_on;
  int value = 0;
  future.ExecuteWhenReady([&](const absl::StatusOr<int>& result) {
    ran_on = std::this_thread::get_id();
    value = *result;
  });
  EXPECT_EQ(ran_on, std::this_thread::get_id());
  EXPECT_EQ(value, 8);
}

TEST(FutureTest, CallbacksRunInRegistrationOrderOnCompletingThread) {
  PromiseFuturePair<void> pair = PromiseFuturePair<void>::Make();
  std::vector<int> order;
  std::vector<std::thread::id> threads;
  for (int i = 0; i < 3; ++i) {
    pair.future.ExecuteWhenReady([&, i](const absl::Status&) {
      order.push_back(i);
      threads.push_back(std::this_thread::get_id());
    });
  }
  std::thread::id setter_id;
  std::thread setter([&] {
    setter_id = std::this_thread::get_id();
    EXPECT_TRUE(pair.promise.Set(absl::OkStatus()));
  });
  setter.join();
  EXPECT_THAT(order, ElementsAre(0, 1, 2));
  EXPECT_THAT(threads, ElementsAre(setter_id, setter_id, setter_id));
}

TEST(FutureTest, CallbackMayUseTheFutureAndCompleteOtherPromises) {
  // Would deadlock if callbacks ran under the future's lock.
  PromiseFuturePair<int> first = PromiseFuturePair<int>::Make();
  PromiseFuturePair<int> second = PromiseFuturePair<int>::Make();
  Future<int> first_future = first.future;
  bool nested_ran = false;
  first.future.ExecuteWhenReady(
      [first_future, promise = second.promise,
       &nested_ran](const absl::StatusOr<int>& result) {
        EXPECT_TRUE(first_future.ready());
        EXPECT_THAT(first_future.result(), IsOkAndHolds(Eq(1)));
        first_future.ExecuteWhenReady(
            [&nested_ran](const absl::StatusOr<int>&) { nested_ran = true; });
        promise.Set(*result + 1);
      });
  EXPECT_TRUE(first.promise.Set(1));
  EXPECT_TRUE(nested_ran);
  ASSERT_TRUE(second.future.ready());
  EXPECT_THAT(second.future.result(), IsOkAndHolds(Eq(2)));
}

TEST(FutureTest, AbandonmentRunsCallbacks) {
  PromiseFuturePair<int> pair = PromiseFuturePair<int>::Make();
  absl::Status seen;
  pair.future.ExecuteWhenReady(
      [&seen](const absl::StatusOr<int>& result) { seen = result.status(); });
  pair.promise = Promise<int>();
  EXPECT_THAT(seen, StatusIs(absl::StatusCode::kCancelled));
}

TEST(FutureTest, WaitBlocksUntilAnotherThreadSets) {
  PromiseFuturePair<int> pair = PromiseFuturePair<int>::Make();
  std::thread setter([&] { EXPECT_TRUE(pair.promise.Set(17)); });
  EXPECT_TRUE(pair.future.WaitFor(kDeadline));
  setter.join();
  pair.future.Wait();
  EXPECT_THAT(pair.future.result(), IsOkAndHolds(Eq(17)));
}

TEST(FutureTest, ConcurrentSettersExactlyOneWins) {
  constexpr int kThreads = 8;
  PromiseFuturePair<int> pair = PromiseFuturePair<int>::Make();
  std::atomic<int> winners{0};
  std::atomic<int> winner_value{-1};
  std::atomic<int> callbacks_run{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      // Half the threads also register callbacks, racing with the setters.
      pair.future.ExecuteWhenReady(
          [&](const absl::StatusOr<int>&) { callbacks_run.fetch_add(1); });
      if (pair.promise.Set(i)) {
        winners.fetch_add(1);
        winner_value.store(i);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(winners.load(), 1);
  EXPECT_THAT(pair.future.result(), IsOkAndHolds(Eq(winner_value.load())));
  EXPECT_EQ(callbacks_run.load(), kThreads);
}

TEST(FutureTest, ConcurrentWaitersAllSeeTheResult) {
  constexpr int kThreads = 6;
  PromiseFuturePair<std::string> pair =
      PromiseFuturePair<std::string>::Make();
  std::vector<std::thread> waiters;
  std::atomic<int> ok_count{0};
  for (int i = 0; i < kThreads; ++i) {
    waiters.emplace_back([&, future = pair.future] {
      if (!future.WaitFor(kDeadline)) return;
      if (future.result().ok() && *future.result() == "done") {
        ok_count.fetch_add(1);
      }
    });
  }
  EXPECT_TRUE(pair.promise.Set(std::string("done")));
  for (std::thread& t : waiters) t.join();
  EXPECT_EQ(ok_count.load(), kThreads);
}

TEST(WaitAllTest, ReturnsFirstErrorInIndexOrder) {
  std::vector<PromiseFuturePair<void>> pairs;
  std::vector<Future<void>> futures;
  for (int i = 0; i < 3; ++i) {
    pairs.push_back(PromiseFuturePair<void>::Make());
    futures.push_back(pairs.back().future);
  }
  // Complete in reverse order; index 1's error is reported, not index 2's.
  EXPECT_TRUE(pairs[2].promise.Set(absl::AbortedError("two")));
  EXPECT_TRUE(pairs[1].promise.Set(absl::DataLossError("one")));
  EXPECT_TRUE(pairs[0].promise.Set(absl::OkStatus()));
  EXPECT_THAT(WaitAll(futures),
              StatusIs(absl::StatusCode::kDataLoss, Eq("one")));
}

TEST(WaitAllTest, WaitsForEveryFuture) {
  PromiseFuturePair<void> a = PromiseFuturePair<void>::Make();
  PromiseFuturePair<void> b = PromiseFuturePair<void>::Make();
  std::thread setter([&] {
    EXPECT_TRUE(b.promise.Set(absl::OkStatus()));
    EXPECT_TRUE(a.promise.Set(absl::OkStatus()));
  });
  std::vector<Future<void>> futures = {a.future, b.future};
  DCP_EXPECT_OK(WaitAll(futures));
  EXPECT_TRUE(a.future.ready());
  EXPECT_TRUE(b.future.ready());
  setter.join();
  DCP_EXPECT_OK(WaitAll({}));
}

TEST(FutureDeathTest, InvalidFutureCrashes) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  Future<int> future;
  EXPECT_FALSE(future.valid());
  EXPECT_DEATH((void)future.ready(), "invalid");
  Promise<int> promise;
  EXPECT_FALSE(promise.valid());
  EXPECT_DEATH((void)promise.Set(1), "invalid");
}

}  // namespace
}  // namespace dcp
