#include "testing/manual_executor.h"

#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>  // NOLINT(build/c++11)
#include <utility>

#include "core/executor.h"

namespace dcp::test {

ManualExecutor::ManualExecutor() : queue_(std::make_shared<Queue>()) {}

ManualExecutor::~ManualExecutor() {
  std::deque<dcp::Task> dropped;
  {
    std::lock_guard<std::mutex> lock(queue_->mu);
    queue_->closed = true;
    dropped.swap(queue_->tasks);
  }
  // `dropped` is destroyed here, outside the lock: task destructors may
  // complete (abandon) promises whose callbacks use this executor.
}

dcp::Executor ManualExecutor::AsExecutor() {
  return [queue = queue_](dcp::Task task) {
    {
      std::lock_guard<std::mutex> lock(queue->mu);
      if (!queue->closed) {
        queue->tasks.push_back(std::move(task));
        return;
      }
    }
    task = nullptr;  // Closed: destroyed unrun, outside the lock.
  };
}

size_t ManualExecutor::pending() const {
  std::lock_guard<std::mutex> lock(queue_->mu);
  return queue_->tasks.size();
}

bool ManualExecutor::RunNext() {
  dcp::Task task;
  {
    std::lock_guard<std::mutex> lock(queue_->mu);
    if (queue_->tasks.empty()) return false;
    task = std::move(queue_->tasks.front());
    queue_->tasks.pop_front();
  }
  executor_internal::RunTaskNoThrow(std::move(task));
  return true;
}

size_t ManualExecutor::RunAll() {
  size_t ran = 0;
  while (RunNext()) ++ran;
  return ran;
}

}  // namespace dcp::test
