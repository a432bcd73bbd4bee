// -----------------------------------------------------------------------------
// File: testing/multiprocess.h
// -----------------------------------------------------------------------------
//
// Runs one gtest body in N worker processes, for tests of real multi-process
// code (c10d/Gloo). The workers are this test binary run again
// (fork + execve of /proc/self/exe) with `--gtest_filter=<current test>`, so
// the same TEST body runs in each of them:
//
//   TEST(C10dTest, AllGather) {
//     MultiprocessOptions options;
//     options.world_size = 2;
//     DCP_ASSERT_OK_AND_ASSIGN(
//         std::vector<WorkerResult> workers,
//         RunWorkers(options, [](const WorkerContext& worker) {
//           // Runs in each worker process only.
//           DCP_ASSERT_OK_AND_ASSIGN(auto pg,
//           C10dProcessGroup::CreateFromEnv()); EXPECT_THAT(pg->AllGather("x",
//           "hi", worker.deadline), ...);
//         }));
//     EXPECT_THAT(workers, Each(ExitedWithCode(0)));  // Runs in the parent.
//   }
//
// In the parent, `RunWorkers` starts the workers, waits for all of them
// until `options.timeout`, SIGKILLs any still running then, and returns one
// `WorkerResult` per rank (exit status and captured output). In a worker,
// `RunWorkers` runs `body` on the main thread and then exits the process:
// with code 0 if the worker's test has no failure, else 1. It never returns
// there, so the code after it runs in the parent only.
//
// Each worker's environment has torchrun-style RANK, WORLD_SIZE,
// MASTER_ADDR, MASTER_PORT (a free port picked by the parent) and, with
// `Rendezvous::kFileStore` (the default; more robust than ports),
// DCP_FILE_STORE: a fresh path under $TEST_TMPDIR. So
// `C10dProcessGroup::CreateFromEnv()` works in the body. Bazel's per-test
// variables that must not be shared (XML_OUTPUT_FILE, shard and
// premature-exit files) are removed.
//
// Killing a worker: `options.sigkill_at` makes a worker raise SIGKILL (no
// cleanup, sockets closed by the kernel, like a crash) the nth time its main
// thread reaches `FaultPoint(name)` (core/fault_point.h). For code
// that moves work to other threads, install `SigkillAtFaultPoint` on those
// threads (or rely on the code carrying the handler, as async saves do). A
// body may also call `SigkillThisProcess()` directly.
//
// Rules: call `RunWorkers` at most once per test, from the test's main
// thread, and build `options` deterministically (the workers build them
// again from the same code). Workers inherit stdin; their stdout and stderr
// go to a log file whose content ends up in `WorkerResult::output` (and is
// printed by gtest when a matcher on the result fails).
//
// Thread safety: call from the test's main thread only.
#ifndef DCP_TESTING_MULTIPROCESS_H_
#define DCP_TESTING_MULTIPROCESS_H_

#include <atomic>
#include <ostream>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "core/fault_point.h"
#include "gmock/gmock.h"

namespace dcp::test {

struct SigkillAt {
  int rank = 0;
  std::string fault_point;
  int nth = 1;  // 1-based visit of `fault_point` that kills
};

struct MultiprocessOptions {
  enum class Rendezvous { kFileStore, kTcpStore };

  // Number of worker processes (ranks), >= 1.
  int world_size = 2;
  Rendezvous rendezvous = Rendezvous::kFileStore;
  // The parent SIGKILLs workers still running this long after the start.
  absl::Duration timeout = absl::Seconds(120);
  std::vector<SigkillAt> sigkill_at;
};

// What a worker's body knows about itself.
struct WorkerContext {
  int rank = 0;
  int world_size = 1;
  // Rendezvous, as also exported in the environment. `file_store_path` is
  // empty with Rendezvous::kTcpStore.
  std::string file_store_path;
  std::string master_addr;
  int master_port = 0;
  // When the parent will SIGKILL this worker; a useful upper bound for
  // the deadlines of collectives that are expected to succeed.
  absl::Time deadline;
};

struct WorkerResult {
  int rank = 0;
  int pid = 0;
  // Exactly one of: exited (exit_code), or killed by `signal`.
  bool exited = false;
  int exit_code = -1;
  int signal = 0;
  // The parent SIGKILLed it at `MultiprocessOptions::timeout`.
  bool killed_at_deadline = false;
  // Everything the worker wrote to stdout and stderr.
  std::string output;
  // Wall time from spawn to exit.
  absl::Duration elapsed;

  // "rank 1 (pid 123): exited with code 0 after 1.2s".
  std::string Describe() const;
};

void PrintTo(const WorkerResult& result, std::ostream* os);

// True in a worker process started by `RunWorkers`.
bool IsWorker();

// See the file comment. Errors (parent only): InvalidArgument for bad
// options; Internal if a worker cannot be started.
absl::StatusOr<std::vector<WorkerResult>> RunWorkers(
    const MultiprocessOptions& options,
    absl::FunctionRef<void(const WorkerContext&)> body);

// Raises SIGKILL in this process (flushes stdio first, so the log shows
// everything written before).
[[noreturn]] void SigkillThisProcess(absl::string_view why);

// A fault-point handler that kills the process at the `nth` visit (1-based)
// of `fault_point`; other points and visits return OK. Thread-safe.
class SigkillAtFaultPoint : public FaultPointHandler {
 public:
  SigkillAtFaultPoint(std::string fault_point, int nth);
  absl::Status OnFaultPoint(absl::string_view name) override;

 private:
  const std::string fault_point_;
  const int nth_;
  std::atomic<int> visits_{0};
};

// Matchers on `WorkerResult`.
MATCHER_P(ExitedWithCode, code,
          std::string(negation ? "did not exit" : "exited") + " with code " +
              std::to_string(code)) {
  return arg.exited && arg.exit_code == code;
}
MATCHER_P(KilledBySignal, signal,
          std::string(negation ? "was not" : "was") + " killed by signal " +
              std::to_string(signal)) {
  return !arg.exited && arg.signal == signal && !arg.killed_at_deadline;
}

}  // namespace dcp::test

#endif  // DCP_TESTING_MULTIPROCESS_H_
