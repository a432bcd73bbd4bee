// -----------------------------------------------------------------------------
// File: core/scheduling.h
// -----------------------------------------------------------------------------
//
// Hooks that let a deterministic test scheduler run every thread that works
// for a rank, and see every wait between those threads. The seeded
// simulator (//testing:simulator) is such a scheduler: it runs one thread
// at a time (the rank's own thread and the background threads dcp starts
// for it, such as the async-save executor) and hands the turn to the next
// one, drawn from a seeded PRNG, whenever the running thread calls a
// collective, waits, starts or exits. The same seed then gives the same
// interleaving of foreground and background work.
//
// In production no scheduler is installed, and each hook costs one
// thread-local load.
//
// Rules for library code, so that its threads stay schedulable:
//   * A thread that works on behalf of the calling thread beyond the
//     current call (an executor's worker) is started with `ScheduledThread`,
//     not std::thread.
//   * A wait for such a thread goes through `WaitUntil`/`WaitUntilFor` (a
//     condition-variable wait the scheduler can see), and whoever changes
//     what the waiter checks calls `NotifyWaiters(key)` with the same key
//     after notifying the condition variable.
//   * Threads that only parallelise the work of one call and are joined
//     before it returns (e.g. file I/O threads) need neither: the thread
//     that owns the call keeps the turn while they run.
// Under a scheduler, a thread that blocks in any other way (a mutex held
// across a wait, a sleep) stalls every other thread of the world.
//
// Thread safety: every function may be called from any thread.
#ifndef DCP_CORE_SCHEDULING_H_
#define DCP_CORE_SCHEDULING_H_

#include <algorithm>
#include <chrono>  // NOLINT(build/c++11)
#include <condition_variable>  // NOLINT(build/c++11)
#include <cstdint>
#include <memory>
#include <mutex>  // NOLINT(build/c++11)
#include <thread>  // NOLINT(build/c++11)

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace dcp {

// Implemented by a deterministic scheduler. Every thread it schedules has an
// id; exactly one of them (the one "with the turn") runs at a time. Library
// code does not call these directly; it uses `ScheduledThread`, `WaitUntil`
// and `NotifyWaiters` below.
class ThreadScheduler : public std::enable_shared_from_this<ThreadScheduler> {
 public:
  virtual ~ThreadScheduler() = default;

  // Called by the scheduled thread `parent` (which has the turn) before it
  // starts a thread on its own behalf; returns the new thread's id. The
  // scheduler makes no further decision until that thread has called
  // `StartThread` (or the registration was cancelled).
  virtual int64_t RegisterThread(int64_t parent) = 0;
  // Undoes `RegisterThread` for a thread that could not be started.
  virtual void CancelThread(int64_t id) = 0;
  // First call on the new thread: waits for its first turn.
  virtual void StartThread(int64_t id) = 0;
  // Last call on a thread started with `StartThread`: gives up the turn for
  // good.
  virtual void ExitThread(int64_t id) = 0;

  enum class WaitResult {
    kNotified,     // Someone called Notify(key); check the condition again.
    kTimedOut,     // A timed wait, and no other thread could run.
    kUnscheduled,  // Scheduling has ended (e.g. the world was aborted):
                   // wait on your own from now on.
  };
  // Gives up `self`'s turn until `Notify(key)` is called, or, if `timed`,
  // until no other thread can run; then waits for the turn again.
  virtual WaitResult Wait(int64_t self, const void* key, bool timed) = 0;
  // Makes every thread waiting on `key` runnable. Does not give up the turn.
  virtual void Notify(const void* key) = 0;
};

// The scheduler of a thread and the thread's id under it.
struct ScheduledContext {
  ThreadScheduler* scheduler = nullptr;  // Null: not scheduled.
  int64_t id = -1;
};

// The calling thread's context; `scheduler` is null in production.
ScheduledContext CurrentScheduledContext();

// For schedulers: installs `context` on the calling thread and returns the
// previous one. The scheduler must outlive the installation.
ScheduledContext SetScheduledContext(ScheduledContext context);

// Makes the threads waiting on `key` (in `WaitUntil`) runnable, if the
// calling thread is scheduled. Call it after changing the state they check,
// in addition to notifying the condition variable.
void NotifyWaiters(const void* key);

// `cv.wait(lock, done)`, visible to a scheduler: when the calling thread is
// scheduled it gives up its turn until `NotifyWaiters(key)` instead of
// blocking the world. `lock` must hold the mutex that guards what `done`
// reads; it is held when `done` is called and when this returns.
template <typename Predicate>
void WaitUntil(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
               const void* key, Predicate done) {
  const ScheduledContext context = CurrentScheduledContext();
  while (!done()) {
    if (context.scheduler == nullptr) {
      cv.wait(lock, done);
      return;
    }
    lock.unlock();
    const ThreadScheduler::WaitResult result =
        context.scheduler->Wait(context.id, key, /*timed=*/false);
    lock.lock();
    if (result == ThreadScheduler::WaitResult::kUnscheduled) {
      cv.wait(lock, done);
      return;
    }
  }
}

// `WaitUntil` with a timeout; returns `done()`. Under a scheduler, time is
// logical: the wait times out only when no other scheduled thread can run,
// which keeps runs reproducible.
template <typename Predicate>
bool WaitUntilFor(std::unique_lock<std::mutex>& lock,
                  std::condition_variable& cv, const void* key,
                  absl::Duration timeout, Predicate done) {
  // Far from steady_clock overflow; about a century is forever here.
  timeout = std::min(timeout, absl::Hours(24 * 365 * 100));
  const auto deadline =
      std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(timeout);
  const ScheduledContext context = CurrentScheduledContext();
  while (!done()) {
    if (timeout <= absl::ZeroDuration()) return false;
    if (context.scheduler == nullptr) return cv.wait_until(lock, deadline, done);
    lock.unlock();
    const ThreadScheduler::WaitResult result =
        context.scheduler->Wait(context.id, key, /*timed=*/true);
    lock.lock();
    switch (result) {
      case ThreadScheduler::WaitResult::kNotified:
        break;
      case ThreadScheduler::WaitResult::kTimedOut:
        return done();
      case ThreadScheduler::WaitResult::kUnscheduled:
        return cv.wait_until(lock, deadline, done);
    }
  }
  return true;
}

// A thread that works on behalf of the thread that starts it. If the
// starting thread is scheduled, the new thread is scheduled by the same
// scheduler; otherwise it is a plain thread.
//
// Like std::jthread, destroying a joinable ScheduledThread joins it (or,
// when the destructor runs on the thread itself, detaches it).
//
// Thread safety: `Join`, `Detach` and destruction from one thread at a time.
class ScheduledThread {
 public:
  ScheduledThread() = default;
  ScheduledThread(ScheduledThread&&) = default;
  ScheduledThread& operator=(ScheduledThread&& other);
  ~ScheduledThread();

  // Starts `body` on a new thread. `body` must not throw; an exception is
  // caught and logged. ResourceExhausted if the thread cannot be started.
  static absl::StatusOr<ScheduledThread> Start(
      absl::AnyInvocable<void() &&> body);

  bool joinable() const { return thread_.joinable(); }
  // Whether the calling thread is this thread.
  bool IsCurrentThread() const {
    return thread_.get_id() == std::this_thread::get_id();
  }

  // Waits until the thread has finished (giving up the turn while it runs,
  // when scheduled). Must not be called on the thread itself.
  void Join();
  // Lets the thread finish on its own.
  void Detach();

 private:
  struct Shared;

  std::thread thread_;
  std::shared_ptr<Shared> shared_;
};

}  // namespace dcp

#endif  // DCP_CORE_SCHEDULING_H_
