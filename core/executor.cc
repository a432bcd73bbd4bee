#include "core/executor.h"

#include <exception>
#include <memory>
#include <mutex>  // NOLINT(build/c++11)
#include <utility>

#include "glog/logging.h"

namespace dcp {
namespace executor_internal {

void RunTaskNoThrow(Task task) {
  try {
    std::move(task)();
  } catch (const std::exception& e) {
    LOG(ERROR) << "dcp executor task threw an exception (tasks must not "
                  "throw): "
               << e.what();
  } catch (...) {
    LOG(ERROR) << "dcp executor task threw a non-std exception (tasks must "
                  "not throw)";
  }
}

}  // namespace executor_internal

Executor InlineExecutor() {
  return [](Task task) { executor_internal::RunTaskNoThrow(std::move(task)); };
}

absl::StatusOr<ScheduledThread> SerialExecutor::StartWorker(
    const std::shared_ptr<Queue>& queue) {
  return ScheduledThread::Start([queue] { WorkerLoop(*queue); });
}

absl::StatusOr<std::unique_ptr<SerialExecutor>> SerialExecutor::Create() {
  auto queue = std::make_shared<Queue>();
  absl::StatusOr<ScheduledThread> thread = StartWorker(queue);
  if (!thread.ok()) return thread.status();
  return std::unique_ptr<SerialExecutor>(
      new SerialExecutor(Started{}, std::move(queue), *std::move(thread)));
}

SerialExecutor::SerialExecutor() : queue_(std::make_shared<Queue>()) {
  absl::StatusOr<ScheduledThread> thread = StartWorker(queue_);
  CHECK(thread.ok()) << "SerialExecutor: " << thread.status();
  thread_ = *std::move(thread);
}

SerialExecutor::~SerialExecutor() {
  {
    std::lock_guard<std::mutex> lock(queue_->mu);
    queue_->stopping = true;
  }
  queue_->wake.notify_one();
  NotifyWaiters(queue_.get());
  if (thread_.IsCurrentThread()) {
    // Destroyed by one of its own tasks: the worker drains the queue after
    // that task returns and exits on its own (it owns the queue too).
    thread_.Detach();
    return;
  }
  thread_.Join();
}

void SerialExecutor::Schedule(Task task) { Enqueue(*queue_, std::move(task)); }

Executor SerialExecutor::AsExecutor() {
  return [queue = queue_](Task task) { Enqueue(*queue, std::move(task)); };
}

void SerialExecutor::Enqueue(Queue& queue, Task task) {
  {
    std::lock_guard<std::mutex> lock(queue.mu);
    if (!queue.stopped) {
      queue.tasks.push_back(std::move(task));
      queue.wake.notify_one();
      NotifyWaiters(&queue);
      return;
    }
  }
  // Destroyed outside the lock: its destructor may complete promises.
  LOG(ERROR) << "task scheduled on a SerialExecutor that has shut down; "
                "dropping it";
  task = nullptr;
}

void SerialExecutor::WorkerLoop(Queue& queue) {
  while (true) {
    Task task;
    {
      std::unique_lock<std::mutex> lock(queue.mu);
      WaitUntil(lock, queue.wake, &queue,
                [&queue]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
                  return !queue.tasks.empty() || queue.stopping;
                });
      if (queue.tasks.empty()) {  // Hence stopping: drained, exit.
        queue.stopped = true;
        return;
      }
      task = std::move(queue.tasks.front());
      queue.tasks.pop_front();
    }
    executor_internal::RunTaskNoThrow(std::move(task));
  }
}

}  // namespace dcp
