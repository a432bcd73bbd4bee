// -----------------------------------------------------------------------------
// File: core/executor.h
// -----------------------------------------------------------------------------
//
// Executors: where async work runs. An `Executor` is any callable that
// accepts a `Task` (tensorstore's concept, with dcp's own types). Code that
// runs work asynchronously takes an `Executor` instead of creating threads,
// so tests can substitute `InlineExecutor()` or
// `test::ManualExecutor` (testing/manual_executor.h) and decide exactly
// when tasks run.
//
//   SerialExecutor serial;
//   Executor executor = serial.AsExecutor();
//   executor([promise] { promise.Set(DoSave()); });
//
// Tasks must not throw. If one does, the executor catches the exception and
// logs it with LOG(ERROR); the task is then considered finished. A task
// that completes a promise should therefore set it before anything that
// could throw, or let the promise be abandoned (core/future.h).
//
// Thread safety: an `Executor` may be called from any thread.
#ifndef DCP_CORE_EXECUTOR_H_
#define DCP_CORE_EXECUTOR_H_

#include <condition_variable>  // NOLINT(build/c++11)
#include <deque>
#include <functional>
#include <memory>
#include <mutex>  // NOLINT(build/c++11)
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "core/scheduling.h"

namespace dcp {

// A unit of work, run at most once.
using Task = absl::AnyInvocable<void() &&>;

// Runs or schedules `task`. Implementations that cannot run a task any more
// destroy it unrun, which abandons any promise it owns.
using Executor = std::function<void(Task)>;

// Runs each task immediately on the calling thread, before returning.
Executor InlineExecutor();

namespace executor_internal {

// Runs `task`, catching and logging (LOG(ERROR)) any exception it throws.
void RunTaskNoThrow(Task task);

}  // namespace executor_internal

// One background thread that runs tasks one at a time, in the order they
// were scheduled (FIFO). Used per rank so that async saves, and the
// collectives inside them, stay in order. The thread is a
// `ScheduledThread` (core/scheduling.h): under the seeded simulator
// it is scheduled with the rank that created the executor.
//
// Thread safety: `Schedule` and the executor returned by `AsExecutor` may
// be called from any thread, including from inside a task.
//
// Ownership: the destructor runs every task already queued (and any task
// those tasks queue) and then joins the thread. Called from one of this
// executor's own tasks (e.g. a future callback that drops the last
// reference to the executor's owner), it cannot wait for itself: it
// returns at once, and the thread finishes the queue after the current
// task and then exits on its own. Copies of `AsExecutor()` may outlive this
// object; tasks given to them after the thread has stopped are destroyed
// without running (logged with LOG(ERROR)).
class SerialExecutor {
 public:
  // ResourceExhausted if the thread cannot be started.
  static absl::StatusOr<std::unique_ptr<SerialExecutor>> Create();
  // As Create, but a thread that cannot be started is fatal.
  SerialExecutor();
  ~SerialExecutor();
  SerialExecutor(const SerialExecutor&) = delete;
  SerialExecutor& operator=(const SerialExecutor&) = delete;

  // Queues `task` to run after every task queued before it.
  void Schedule(Task task);

  // An `Executor` that calls `Schedule`.
  Executor AsExecutor();

  // Whether the calling thread is this executor's worker (i.e. the caller
  // is one of its tasks).
  bool InWorkerThread() const { return thread_.IsCurrentThread(); }

 private:
  // Shared with the executors handed out, which may outlive this object.
  // std::mutex, not absl::Mutex: TSan cannot see the happens-before edges
  // of Debian's uninstrumented absl::Mutex.
  struct Queue {
    std::mutex mu;
    std::condition_variable wake;  // Signalled on push and on stopping.
    std::deque<Task> tasks ABSL_GUARDED_BY(mu);
    bool stopping ABSL_GUARDED_BY(mu) = false;  // Destructor has started.
    bool stopped ABSL_GUARDED_BY(mu) = false;   // Worker has exited.
  };

  struct Started {};
  SerialExecutor(Started, std::shared_ptr<Queue> queue, ScheduledThread thread)
      : queue_(std::move(queue)), thread_(std::move(thread)) {}

  static absl::StatusOr<ScheduledThread> StartWorker(
      const std::shared_ptr<Queue>& queue);
  static void Enqueue(Queue& queue, Task task);
  static void WorkerLoop(Queue& queue);

  std::shared_ptr<Queue> queue_;
  ScheduledThread thread_;
};

}  // namespace dcp

#endif  // DCP_CORE_EXECUTOR_H_
