// -----------------------------------------------------------------------------
// File: testing/manual_executor.h
// -----------------------------------------------------------------------------
//
// `ManualExecutor`: an executor that only queues tasks; the test decides
// when each one runs, on the test's own thread. This makes async code
// deterministic to test:
//
//   ManualExecutor executor;
//   Future<Metadata> saved = checkpointer->AsyncSave(..., executor.AsExecutor());
//   EXPECT_FALSE(saved.ready());
//   executor.RunAll();
//   EXPECT_TRUE(saved.ready());
//
// Thread safety: `AsExecutor()`'s executor, `pending()`, `RunNext()` and
// `RunAll()` may be called from any thread. Tasks run on the thread calling
// `RunNext`/`RunAll`, with no lock held, so a task may queue more tasks.
//
// Ownership: tasks still queued when the `ManualExecutor` is destroyed are
// destroyed unrun (abandoning any promise they own). Copies of
// `AsExecutor()` may outlive this object; tasks given to them afterwards
// are destroyed unrun.
#ifndef DCP_TESTING_MANUAL_EXECUTOR_H_
#define DCP_TESTING_MANUAL_EXECUTOR_H_

#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>  // NOLINT(build/c++11)

#include "absl/base/thread_annotations.h"
#include "core/executor.h"

namespace dcp::test {

class ManualExecutor {
 public:
  ManualExecutor();
  ~ManualExecutor();
  ManualExecutor(const ManualExecutor&) = delete;
  ManualExecutor& operator=(const ManualExecutor&) = delete;

  // Enqueues each task given to it; never runs anything itself.
  dcp::Executor AsExecutor();

  // Number of queued tasks.
  size_t pending() const;

  // Runs the oldest queued task on this thread. False if none was queued.
  bool RunNext();

  // Runs tasks until the queue is empty, including tasks queued by the
  // tasks it runs. Returns how many ran.
  size_t RunAll();

 private:
  // std::mutex, not absl::Mutex, so that TSan sees the synchronisation
  // (Debian's libabsl is not instrumented).
  struct Queue {
    std::mutex mu;
    std::deque<dcp::Task> tasks ABSL_GUARDED_BY(mu);
    bool closed ABSL_GUARDED_BY(mu) = false;
  };

  std::shared_ptr<Queue> queue_;
};

}  // namespace dcp::test

#endif  // DCP_TESTING_MANUAL_EXECUTOR_H_
