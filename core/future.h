// -----------------------------------------------------------------------------
// File: core/future.h
// -----------------------------------------------------------------------------
//
// `Future<T>` and `Promise<T>`: a small single-assignment result channel in
// the shape of tensorstore's, used for async saves. A `Future<T>` resolves
// to `absl::StatusOr<T>`; a `Future<void>` resolves to `absl::Status`
// (`FutureResult<T>` names that type).
//
//   PromiseFuturePair<int> pair = PromiseFuturePair<int>::Make();
//   executor([promise = std::move(pair.promise)] { promise.Set(42); });
//   pair.future.ExecuteWhenReady([](const absl::StatusOr<int>& r) { ... });
//   const absl::StatusOr<int>& r = pair.future.result();  // Blocks.
//
// A function returning a `Future` may `return status;` (or use
// DCP_RETURN_IF_ERROR) because a future converts implicitly from a status.
//
// Thread safety: every method of `Future` and `Promise` may be called
// concurrently from any thread, on the same object or on copies. Completing
// a promise happens-before every observation of the result (`ready()`
// returning true, `Wait`, `result`, callbacks). Waits are visible to a
// deterministic scheduler (core/scheduling.h); under one, `WaitFor`
// times out only when no other scheduled thread can run.
//
// Callbacks: a callback given to `ExecuteWhenReady` runs exactly once,
// either on the thread that completes the future (the one calling
// `Promise::Set`, or destroying the last `Promise` copy), or inline on the
// calling thread if the future is already ready. No lock is held while it
// runs, so it may register further callbacks or complete other promises;
// it should not block, because it delays the completing thread.
//
// Abandonment: when the last copy of a `Promise` is destroyed without `Set`
// having been called, the future resolves to
// `Cancelled("promise abandoned")`, so a waiter never waits forever for a
// task that was dropped (e.g. an executor that shut down).
//
// Ownership: futures and promises share their state through reference
// counting; either side may be destroyed first.
#ifndef DCP_CORE_FUTURE_H_
#define DCP_CORE_FUTURE_H_

#include <condition_variable>  // NOLINT(build/c++11)
#include <memory>
#include <mutex>  // NOLINT(build/c++11)
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "core/scheduling.h"

namespace dcp {

// What a `Future<T>` resolves to: `absl::Status` for `T = void`, otherwise
// `absl::StatusOr<T>`.
template <typename T>
using FutureResult =
    std::conditional_t<std::is_void_v<T>, absl::Status, absl::StatusOr<T>>;

template <typename T>
class Future;
template <typename T>
class Promise;
template <typename T>
struct PromiseFuturePair;

namespace future_internal {

// Crashes with a message: using a default-constructed or moved-from
// `Future` or `Promise` is a programmer error.
[[noreturn]] void DieInvalid(const char* what);

// The shared state of one future. `result_` is written once, under `mu_`,
// before `ready_` becomes true, and never changed afterwards, so it may be
// read without the lock by anyone who has observed `ready_`.
//
// std::mutex rather than absl::Mutex on purpose: Debian's libabsl is not
// built with -fsanitize=thread, so TSan cannot see absl::Mutex's
// happens-before edges; pthread mutexes and condition variables are
// intercepted by TSan.
template <typename T>
class State {
 public:
  using Callback = absl::AnyInvocable<void(const FutureResult<T>&) &&>;

  // Returns false (and drops `result`) if already set.
  bool Set(FutureResult<T> result) ABSL_LOCKS_EXCLUDED(mu_) {
    std::vector<Callback> callbacks;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (ready_) return false;
      result_.emplace(std::move(result));
      ready_ = true;
      callbacks.swap(callbacks_);
    }
    ready_cv_.notify_all();
    NotifyWaiters(this);
    // `result_` is immutable from here on; run callbacks without the lock.
    for (Callback& callback : callbacks) std::move(callback)(*result_);
    return true;
  }

  bool ready() const ABSL_LOCKS_EXCLUDED(mu_) {
    std::lock_guard<std::mutex> lock(mu_);
    return ready_;
  }

  // Waits through `WaitUntil` (core/scheduling.h), so that a
  // deterministic scheduler sees a wait for another scheduled thread.
  void Wait() const ABSL_LOCKS_EXCLUDED(mu_) {
    std::unique_lock<std::mutex> lock(mu_);
    WaitUntil(lock, ready_cv_, this,
              [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return ready_; });
  }

  bool WaitFor(absl::Duration timeout) const ABSL_LOCKS_EXCLUDED(mu_) {
    if (timeout == absl::InfiniteDuration()) {
      Wait();
      return true;
    }
    std::unique_lock<std::mutex> lock(mu_);
    // WaitUntilFor caps the timeout far from steady_clock overflow.
    return WaitUntilFor(lock, ready_cv_, this, timeout,
                        [this]()
                            ABSL_NO_THREAD_SAFETY_ANALYSIS { return ready_; });
  }

  const FutureResult<T>& result() const {
    Wait();
    return *result_;
  }

  void ExecuteWhenReady(Callback callback) ABSL_LOCKS_EXCLUDED(mu_) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!ready_) {
        callbacks_.push_back(std::move(callback));
        return;
      }
    }
    std::move(callback)(*result_);
  }

 private:
  mutable std::mutex mu_;
  mutable std::condition_variable ready_cv_;
  bool ready_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<FutureResult<T>> result_;
  std::vector<Callback> callbacks_ ABSL_GUARDED_BY(mu_);
};

// Owned (shared) by all copies of one `Promise`; its destruction marks the
// last copy gone.
template <typename T>
class PromiseToken {
 public:
  explicit PromiseToken(std::shared_ptr<State<T>> state)
      : state_(std::move(state)) {}
  ~PromiseToken() {
    // No-op if the promise was set.
    state_->Set(absl::CancelledError("promise abandoned"));
  }
  PromiseToken(const PromiseToken&) = delete;
  PromiseToken& operator=(const PromiseToken&) = delete;

  const std::shared_ptr<State<T>>& state() const { return state_; }

 private:
  std::shared_ptr<State<T>> state_;
};

}  // namespace future_internal

// The consumer side. Copies share one result. A default-constructed (or
// moved-from) future is invalid: only `valid()`, assignment and destruction
// may be used on it; anything else is a programmer error and crashes.
template <typename T>
class [[nodiscard]] Future {
 public:
  Future() = default;

  // An already-completed future holding `status`. Lets a Future-returning
  // function `return status;`. For `Future<void>` any status is allowed;
  // for other `T`, `status` should not be OK: an OK status (which carries
  // no value) becomes an Internal error.
  Future(absl::Status status)  // NOLINT: implicit by design
      : state_(std::make_shared<future_internal::State<T>>()) {
    if constexpr (!std::is_void_v<T>) {
      // absl::StatusOr<T>(OkStatus()) is fatal in debug builds of Abseil.
      if (status.ok()) {
        status = absl::InternalError(
            "Future<T> constructed from an OK status without a value");
      }
    }
    state_->Set(FutureResult<T>(std::move(status)));
  }

  bool valid() const { return state_ != nullptr; }

  // True once the result is available; never blocks.
  bool ready() const { return state().ready(); }

  // Blocks until the result is available.
  void Wait() const { state().Wait(); }

  // Blocks until the result is available or `timeout` has passed; returns
  // whether it is ready.
  bool WaitFor(absl::Duration timeout) const {
    return state().WaitFor(timeout);
  }

  // Blocks until ready, then returns the result. The reference stays valid
  // while any copy of this future is alive; on a temporary future the
  // rvalue overload returns a copy instead.
  const FutureResult<T>& result() const& { return state().result(); }
  FutureResult<T> result() && { return state().result(); }

  // Runs `callback(result)` once the future is ready: on the completing
  // thread, or inline now if already ready. See the file comment.
  void ExecuteWhenReady(
      absl::AnyInvocable<void(const FutureResult<T>&) &&> callback) const {
    state().ExecuteWhenReady(std::move(callback));
  }

 private:
  friend struct PromiseFuturePair<T>;

  explicit Future(std::shared_ptr<future_internal::State<T>> state)
      : state_(std::move(state)) {}

  future_internal::State<T>& state() const {
    if (state_ == nullptr) future_internal::DieInvalid("Future");
    return *state_;
  }

  std::shared_ptr<future_internal::State<T>> state_;
};

// The producer side. Copies share one result; the future resolves to
// Cancelled("promise abandoned") when the last copy is destroyed unset.
// Using a default-constructed or moved-from promise is a programmer error.
template <typename T>
class Promise {
 public:
  Promise() = default;

  // Completes the future with `result`, running its callbacks on this
  // thread before returning. The first call wins: later calls (and the
  // abandonment of a set promise) are ignored and return false.
  bool Set(FutureResult<T> result) const {
    return state().Set(std::move(result));
  }

  // True once the future has a result (from any copy of this promise).
  bool ready() const { return state().ready(); }

  bool valid() const { return token_ != nullptr; }

 private:
  friend struct PromiseFuturePair<T>;

  explicit Promise(std::shared_ptr<future_internal::State<T>> state)
      : token_(std::make_shared<future_internal::PromiseToken<T>>(
            std::move(state))) {}

  future_internal::State<T>& state() const {
    if (token_ == nullptr) future_internal::DieInvalid("Promise");
    return *token_->state();
  }

  std::shared_ptr<future_internal::PromiseToken<T>> token_;
};

// A connected promise and future.
template <typename T>
struct PromiseFuturePair {
  Promise<T> promise;
  Future<T> future;

  static PromiseFuturePair Make() {
    auto state = std::make_shared<future_internal::State<T>>();
    return PromiseFuturePair{Promise<T>(state), Future<T>(state)};
  }
};

// An already-completed future holding `result`.
template <typename T>
Future<T> MakeReadyFuture(FutureResult<T> result) {
  PromiseFuturePair<T> pair = PromiseFuturePair<T>::Make();
  pair.promise.Set(std::move(result));
  return std::move(pair.future);
}

// An already-completed, OK `Future<void>`.
inline Future<void> MakeReadyFuture() {
  return MakeReadyFuture<void>(absl::OkStatus());
}

// Waits for every future, then returns the first error in index order, or
// OK. Every future must be valid.
absl::Status WaitAll(absl::Span<const Future<void>> futures);

}  // namespace dcp

#endif  // DCP_CORE_FUTURE_H_
