#include "core/scheduling.h"

#include <condition_variable>  // NOLINT(build/c++11)
#include <memory>
#include <mutex>  // NOLINT(build/c++11)
#include <optional>
#include <set>
#include <string>
#include <thread>  // NOLINT(build/c++11)
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/status_matchers.h"

namespace dcp {
namespace {

using ::dcp::test::IsOk;
using ::testing::ElementsAre;
using ::testing::UnorderedElementsAre;

// A one-shot gate between threads. Open notifies under the lock, so a
// waiter that returns (and may destroy the gate) does so after it.
class Gate {
 public:
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  void Pass() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return open_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

TEST(ScheduledThreadTest, UnscheduledJoinWaitsForTheBody) {
  Gate gate;
  std::mutex mu;
  bool finished = false;
  absl::StatusOr<ScheduledThread> thread = ScheduledThread::Start([&] {
    gate.Pass();
    std::lock_guard<std::mutex> lock(mu);
    finished = true;
  });
  ASSERT_THAT(thread.status(), IsOk());
  EXPECT_TRUE(thread->joinable());
  EXPECT_FALSE(thread->IsCurrentThread());
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_FALSE(finished);
  }
  gate.Open();
  thread->Join();
  EXPECT_FALSE(thread->joinable());
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_TRUE(finished);
}

TEST(ScheduledThreadTest, DestructorJoins) {
  bool ran = false;
  {
    absl::StatusOr<ScheduledThread> thread =
        ScheduledThread::Start([&] { ran = true; });
    ASSERT_THAT(thread.status(), IsOk());
  }
  EXPECT_TRUE(ran);  // Joined: the write happened-before this read.
}

TEST(ScheduledThreadTest, DestroyedOnItsOwnThreadItDetaches) {
  auto holder = std::make_shared<std::optional<ScheduledThread>>();
  Gate started;
  Gate destroyed;
  absl::StatusOr<ScheduledThread> thread = ScheduledThread::Start([&] {
    started.Pass();
    holder->reset();  // Runs ~ScheduledThread on this very thread.
    destroyed.Open();
  });
  ASSERT_THAT(thread.status(), IsOk());
  holder->emplace(*std::move(thread));
  started.Open();
  destroyed.Pass();
  EXPECT_FALSE(holder->has_value());
}

TEST(WaitUntilTest, UnscheduledWaitsOnTheConditionVariable) {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::thread setter([&] {
    {
      std::lock_guard<std::mutex> lock(mu);
      done = true;
    }
    cv.notify_all();
    NotifyWaiters(&done);  // A no-op without a scheduler.
  });
  {
    std::unique_lock<std::mutex> lock(mu);
    WaitUntil(lock, cv, &done, [&] { return done; });
    EXPECT_TRUE(done);
    EXPECT_TRUE(lock.owns_lock());
  }
  setter.join();
}

TEST(WaitUntilTest, UnscheduledTimedWaitReportsTheCondition) {
  std::mutex mu;
  std::condition_variable cv;
  std::unique_lock<std::mutex> lock(mu);
  EXPECT_FALSE(WaitUntilFor(lock, cv, &mu, absl::ZeroDuration(),
                            [] { return false; }));
  EXPECT_TRUE(WaitUntilFor(lock, cv, &mu, absl::ZeroDuration(),
                           [] { return true; }));
  EXPECT_TRUE(lock.owns_lock());
}

// Records the hooks' calls. It does not serialize threads: every thread
// runs freely, and `Wait` returns `wait_result` (kNotified only once
// `Notify` has been called with that key, which is remembered).
class RecordingScheduler : public ThreadScheduler {
 public:
  explicit RecordingScheduler(WaitResult wait_result)
      : wait_result_(wait_result) {}

  int64_t RegisterThread(int64_t parent) override {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(absl::StrCat("register by ", parent));
    return next_id_++;
  }
  void CancelThread(int64_t id) override { Record(absl::StrCat("cancel ", id)); }
  void StartThread(int64_t id) override {
    const ScheduledContext context = CurrentScheduledContext();
    Record(absl::StrCat("start ", id, context.scheduler == this ? "" : " ?"));
  }
  void ExitThread(int64_t id) override { Record(absl::StrCat("exit ", id)); }
  WaitResult Wait(int64_t self, const void* key, bool timed) override {
    std::unique_lock<std::mutex> lock(mu_);
    events_.push_back(absl::StrCat("wait by ", self, timed ? " timed" : ""));
    if (wait_result_ != WaitResult::kNotified) return wait_result_;
    cv_.wait(lock, [&] { return notified_.count(key) > 0; });
    notified_.erase(key);
    return WaitResult::kNotified;
  }
  void Notify(const void* key) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      notified_.insert(key);
    }
    cv_.notify_all();
  }

  std::vector<std::string> events() {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }

 private:
  void Record(std::string event) {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(std::move(event));
  }

  const WaitResult wait_result_;
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t next_id_ = 1;
  std::set<const void*> notified_;
  std::vector<std::string> events_;
};

// Installs `scheduler` on this thread as thread `id` for the scope.
class ScopedSchedule {
 public:
  ScopedSchedule(ThreadScheduler* scheduler, int64_t id)
      : previous_(SetScheduledContext({scheduler, id})) {}
  ~ScopedSchedule() { SetScheduledContext(previous_); }

 private:
  const ScheduledContext previous_;
};

TEST(ScheduledThreadTest, AScheduledParentRegistersAndJoinsThroughItsScheduler) {
  auto scheduler = std::make_shared<RecordingScheduler>(
      ThreadScheduler::WaitResult::kNotified);
  ScopedSchedule schedule(scheduler.get(), /*id=*/0);
  Gate started;
  Gate gate;
  absl::StatusOr<ScheduledThread> thread = ScheduledThread::Start([&] {
    started.Open();
    gate.Pass();
  });
  ASSERT_THAT(thread.status(), IsOk());
  started.Pass();  // StartThread ran before the body.
  gate.Open();
  thread->Join();
  std::vector<std::string> events = scheduler->events();
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events[0], "register by 0");
  EXPECT_EQ(events[1], "start 1");
  // The join waits through the scheduler unless the body had already
  // finished; the wait and the exit may be recorded in either order.
  std::vector<std::string> rest(events.begin() + 2, events.end());
  if (rest.size() == 2) {
    EXPECT_THAT(rest, UnorderedElementsAre("wait by 0", "exit 1"));
  } else {
    EXPECT_THAT(rest, ElementsAre("exit 1"));
  }
  EXPECT_EQ(CurrentScheduledContext().scheduler, scheduler.get());
}

TEST(WaitUntilTest, ScheduledTimedWaitTimesOutWhenTheSchedulerSaysSo) {
  auto scheduler = std::make_shared<RecordingScheduler>(
      ThreadScheduler::WaitResult::kTimedOut);
  ScopedSchedule schedule(scheduler.get(), /*id=*/7);
  std::mutex mu;
  std::condition_variable cv;
  std::unique_lock<std::mutex> lock(mu);
  EXPECT_FALSE(WaitUntilFor(lock, cv, &mu, absl::Hours(1),
                            [] { return false; }));
  EXPECT_THAT(scheduler->events(), ElementsAre("wait by 7 timed"));
}

TEST(WaitUntilTest, ScheduledWaitFallsBackToTheConditionVariableWhenUnscheduled) {
  auto scheduler = std::make_shared<RecordingScheduler>(
      ThreadScheduler::WaitResult::kUnscheduled);
  ScopedSchedule schedule(scheduler.get(), /*id=*/3);
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  Gate waiting;
  std::thread setter([&] {
    waiting.Pass();
    {
      std::lock_guard<std::mutex> lock(mu);
      done = true;
    }
    cv.notify_all();
  });
  {
    std::unique_lock<std::mutex> lock(mu);
    waiting.Open();
    WaitUntil(lock, cv, &done, [&] { return done; });
    EXPECT_TRUE(done);
  }
  setter.join();
  EXPECT_THAT(scheduler->events(), ElementsAre("wait by 3"));
}

}  // namespace
}  // namespace dcp
