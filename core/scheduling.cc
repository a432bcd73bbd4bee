#include "core/scheduling.h"

#include <exception>
#include <memory>
#include <mutex>  // NOLINT(build/c++11)
#include <system_error>  // NOLINT(build/c++11)
#include <thread>  // NOLINT(build/c++11)
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace dcp {
namespace {

// The calling thread's scheduler: one thread-local load per hook in
// production, where it stays empty.
thread_local ScheduledContext current_context;

// Installs a context for a scope.
class ScopedContext {
 public:
  explicit ScopedContext(ScheduledContext context)
      : previous_(SetScheduledContext(context)) {}
  ~ScopedContext() { SetScheduledContext(previous_); }
  ScopedContext(const ScopedContext&) = delete;
  ScopedContext& operator=(const ScopedContext&) = delete;

 private:
  const ScheduledContext previous_;
};

}  // namespace

ScheduledContext CurrentScheduledContext() { return current_context; }

ScheduledContext SetScheduledContext(ScheduledContext context) {
  return std::exchange(current_context, context);
}

void NotifyWaiters(const void* key) {
  if (current_context.scheduler != nullptr) {
    current_context.scheduler->Notify(key);
  }
}

// What `Join` waits for: the body has returned (and been destroyed).
struct ScheduledThread::Shared {
  std::mutex mu;
  std::condition_variable cv;
  bool finished = false;  // Guarded by mu.
};

ScheduledThread& ScheduledThread::operator=(ScheduledThread&& other) {
  if (this != &other) {
    if (joinable()) {
      if (IsCurrentThread()) {
        Detach();
      } else {
        Join();
      }
    }
    thread_ = std::move(other.thread_);
    shared_ = std::move(other.shared_);
  }
  return *this;
}

ScheduledThread::~ScheduledThread() {
  if (!joinable()) return;
  if (IsCurrentThread()) {
    Detach();
  } else {
    Join();
  }
}

absl::StatusOr<ScheduledThread> ScheduledThread::Start(
    absl::AnyInvocable<void() &&> body) {
  const ScheduledContext parent = CurrentScheduledContext();
  // The new thread keeps the scheduler alive until it has exited.
  std::shared_ptr<ThreadScheduler> scheduler;
  int64_t id = -1;
  if (parent.scheduler != nullptr) {
    scheduler = parent.scheduler->shared_from_this();
    id = scheduler->RegisterThread(parent.id);
  }
  auto shared = std::make_shared<Shared>();
  ScheduledThread thread;
  try {
    thread.thread_ = std::thread(
        [shared, scheduler, id, body = std::move(body)]() mutable {
          ScopedContext context({scheduler.get(), id});
          if (scheduler != nullptr) scheduler->StartThread(id);
          try {
            // Destroyed here, with the turn: a destructor may complete
            // promises, which wakes waiters.
            auto run = std::move(body);
            std::move(run)();
          } catch (const std::exception& e) {
            LOG(ERROR) << "dcp: a ScheduledThread body threw (it must not): "
                       << e.what();
          } catch (...) {
            LOG(ERROR) << "dcp: a ScheduledThread body threw a non-std "
                          "exception (it must not)";
          }
          {
            std::lock_guard<std::mutex> lock(shared->mu);
            shared->finished = true;
          }
          shared->cv.notify_all();
          NotifyWaiters(shared.get());
          if (scheduler != nullptr) scheduler->ExitThread(id);
        });
  } catch (const std::system_error& e) {
    if (scheduler != nullptr) scheduler->CancelThread(id);
    return absl::ResourceExhaustedError(
        absl::StrCat("could not start a thread: ", e.what()));
  }
  thread.shared_ = std::move(shared);
  return thread;
}

void ScheduledThread::Join() {
  CHECK(joinable()) << "ScheduledThread::Join on a thread that is not running";
  CHECK(!IsCurrentThread()) << "a ScheduledThread cannot join itself";
  {
    std::unique_lock<std::mutex> lock(shared_->mu);
    WaitUntil(lock, shared_->cv, shared_.get(),
              [this] { return shared_->finished; });
  }
  // The body has finished; only the thread's own exit remains.
  thread_.join();
}

void ScheduledThread::Detach() {
  CHECK(joinable())
      << "ScheduledThread::Detach on a thread that is not running";
  thread_.detach();
}

}  // namespace dcp
