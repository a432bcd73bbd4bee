// -----------------------------------------------------------------------------
// File: testing/simulator.h
// -----------------------------------------------------------------------------
//
// `Simulator` runs one function on N ranks in one process, one thread per
// rank over a fresh `FakeWorld` (distributed/fake_process_group.h) per `Run`,
// and returns every rank's status or result in rank order:
//
//   SimulatorOptions options;
//   options.world_size = 4;
//   options.seed = 42;  // Deterministic interleaving; omit for free mode.
//   DCP_ASSERT_OK_AND_ASSIGN(auto sim, Simulator::Create(options));
//   sim->faults().FailAtPoint(2, "save.write", absl::InternalError("disk"));
//   std::vector<absl::Status> statuses =
//       sim->Run([&](RankContext& ctx) -> absl::Status {
//         return SaveSomething(ctx.pg(), ctx.rank());
//       });
//   // or, with results: std::vector<absl::StatusOr<T>> results =
//   //     sim->Run([&](RankContext& ctx) -> absl::StatusOr<T> { ... });
//
// Per rank, `Run`:
//   1. installs the rank's `FaultPointHandler` (core/fault_point.h) on
//      the rank's thread, so `FaultPoint(name)` sees the injected faults;
//   2. calls `FakeWorld::StartRank` (deterministic mode: waits for all ranks
//      and for the rank's first turn);
//   3. calls the function; an exception it throws becomes an Internal
//      status naming the rank (never std::terminate);
//   4. calls `FakeWorld::MarkRankDone` with the outcome, so ranks still
//      waiting for it fail promptly with Aborted instead of timing out.
// All rank threads are joined before `Run` returns, and in deterministic
// mode every thread the ranks started has exited too (even one a rank let
// go of, such as the executor of a Checkpointer dropped in a callback).
//
// Modes (see FakeWorld for the full semantics):
// * Free (`seed` unset): ranks run concurrently between collectives.
// * Deterministic (`seed` set): one thread runs at a time: the ranks'
//   threads and every thread they start through `dcp::ScheduledThread`
//   (the async-save executor of a Checkpointer, for one). Turns change only
//   at collective calls, at waits for another scheduled thread (a
//   Future's `result()`, `WaitForPendingSaves`), and at thread start and
//   exit; the next thread is drawn by a splitmix64 PRNG from `seed`. The
//   same seed and the same function give the same interleaving (`trace()`)
//   and the same order of side effects, so ranks may even share
//   unsynchronized state between collectives, and different seeds explore
//   different interleavings of foreground and background collectives. If
//   no thread can run, the waiting collectives fail with
//   FailedPrecondition ("deadlock: ..."). A thread that blocks in any
//   other way (a mutex held across a wait, std::thread::join on a thread
//   that needs the turn) stalls the others until their deadline.
//
// Faults (`faults()`) apply to every later `Run`, counted afresh per Run,
// until `Clear()`:
// * `FailAtCollective(rank, nth, status)`: the rank's nth collective call
//   (1-based, over all its communicators, Fork included) returns `status`
//   without joining; the other ranks' same call fails with Aborted
//   "rank <r> failed: <status> (at call #k ...)".
// * `FailAtPoint(rank, name, status, nth = 1)`: the rank's nth
//   `FaultPoint(name)` (1-based, on any thread that carries the rank's
//   handler) returns `status`; other visits return OK.
// Injected statuses keep their code and message (payloads are dropped).
//
// Thread safety: a Simulator is used from one thread; `Run` is not
// reentrant. `RankContext` belongs to its rank's thread; `shared_pg()` may
// be handed to other threads (free mode).
#ifndef DCP_TESTING_SIMULATOR_H_
#define DCP_TESTING_SIMULATOR_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "distributed/fake_process_group.h"
#include "distributed/process_group.h"

namespace dcp::test {

struct SimulatorOptions {
  // Number of ranks, in [1, FakeWorld::kMaxWorldSize].
  int world_size = 1;
  // `RankContext::Deadline()` is this far from the moment it is called; it
  // also bounds each rank's wait for its first turn.
  absl::Duration collective_timeout = absl::Seconds(60);
  // Set: deterministic scheduling with this seed. Unset: free scheduling.
  std::optional<uint64_t> seed;
};

// What a rank's function gets. Valid during `Run` on the rank's thread.
class RankContext {
 public:
  RankContext(const RankContext&) = delete;
  RankContext& operator=(const RankContext&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  // The rank's handle on the world communicator.
  ProcessGroup& pg() const { return *pg_; }
  // The same handle, for code that keeps it (async work, forks).
  std::shared_ptr<ProcessGroup> shared_pg() const { return pg_; }
  // absl::Now() + collective_timeout: the deadline to pass to a collective.
  absl::Time Deadline() const;

 private:
  friend class Simulator;
  RankContext(int rank, int world_size, std::shared_ptr<ProcessGroup> pg,
              absl::Duration collective_timeout)
      : rank_(rank),
        world_size_(world_size),
        pg_(std::move(pg)),
        collective_timeout_(collective_timeout) {}

  const int rank_;
  const int world_size_;
  const std::shared_ptr<ProcessGroup> pg_;
  const absl::Duration collective_timeout_;
};

// Faults for the following `Run`s. Misuse (rank out of range, nth < 1, an
// OK status) is a programming error and CHECK-fails.
class FaultInjector {
 public:
  // Rank `rank`'s `nth` collective call (1-based) returns `status`
  // without joining; the others' matching call fails with Aborted.
  void FailAtCollective(int rank, int nth, absl::Status status);
  // Rank `rank`'s `nth` (1-based) `FaultPoint(name)` returns `status`.
  void FailAtPoint(int rank, absl::string_view name, absl::Status status,
                   int nth = 1);
  // Removes every fault.
  void Clear();

 private:
  friend class Simulator;
  struct CollectiveFault {
    int rank;
    int nth;
    absl::Status status;
  };
  struct PointFault {
    int rank;
    std::string name;
    int nth;
    absl::Status status;
  };

  explicit FaultInjector(int world_size) : world_size_(world_size) {}

  const int world_size_;
  std::vector<CollectiveFault> collective_faults_;
  std::vector<PointFault> point_faults_;
};

namespace simulator_internal {
template <typename T>
struct IsStatusOr : std::false_type {};
template <typename T>
struct IsStatusOr<absl::StatusOr<T>> : std::true_type {};
}  // namespace simulator_internal

class Simulator {
 public:
  // InvalidArgument if `world_size` is out of range or
  // `collective_timeout` is not positive.
  static absl::StatusOr<std::unique_ptr<Simulator>> Create(
      SimulatorOptions options);

  Simulator(const Simulator&) = delete;
  Simulator& operator=(const Simulator&) = delete;

  const SimulatorOptions& options() const { return options_; }
  FaultInjector& faults() { return faults_; }

  // Runs `fn` on every rank; returns each rank's status, in rank order.
  // `fn` is called concurrently (free mode) from the rank threads. A rank
  // whose StartRank fails (the world aborted, or its deadline passed) gets
  // that status without calling `fn`; a rank whose thread cannot be
  // started gets ResourceExhausted. The FakeWorld of this run is kept, for
  // `trace()` and `transcript()`, until the next Run replaces (and aborts)
  // it.
  std::vector<absl::Status> Run(
      absl::FunctionRef<absl::Status(RankContext&)> fn);

  // Runs `fn`, which returns `absl::StatusOr<T>`, on every rank; returns
  // each rank's result, in rank order. A rank that did not run `fn` or
  // whose `fn` threw gets its status, as from the Run above.
  template <typename Fn,
            typename R = std::invoke_result_t<const Fn&, RankContext&>,
            typename = std::enable_if_t<simulator_internal::IsStatusOr<R>::value>>
  std::vector<R> Run(const Fn& fn);

  // Of the last `Run` (empty before the first): the deterministic schedule
  // (empty in free mode), see `FakeWorld::ScheduleTrace`, e.g.
  // {"r2 start", "r2 Gather(plan)#0", ..., "r0 exit OK"}.
  std::vector<std::string> trace() const;
  // Of the last `Run` (empty before the first): the completed collectives
  // on `communicator`, e.g. {"Gather:plan", "Scatter:plan"}; see
  // `FakeWorld::Transcript`.
  std::vector<std::string> transcript(
      absl::string_view communicator = FakeWorld::kWorldCommunicator) const;

 private:
  explicit Simulator(SimulatorOptions options)
      : options_(options), faults_(options.world_size) {}

  // Steps 2-4 of a rank's life (see the file comment), on its thread.
  static absl::Status RunRank(FakeWorld& world, int rank,
                              absl::Duration collective_timeout,
                              absl::FunctionRef<absl::Status(RankContext&)> fn);

  const SimulatorOptions options_;
  FaultInjector faults_;
  std::unique_ptr<FakeWorld> last_world_;
};

template <typename Fn, typename R, typename>
std::vector<R> Simulator::Run(const Fn& fn) {
  std::vector<R> results;
  results.reserve(options_.world_size);
  for (int r = 0; r < options_.world_size; ++r) {
    results.emplace_back(absl::UnknownError("rank did not run"));
  }
  std::vector<absl::Status> statuses =
      Run([&fn, &results](RankContext& ctx) -> absl::Status {
        R result = fn(ctx);
        absl::Status status = result.status();
        results[ctx.rank()] = std::move(result);
        return status;
      });
  for (int r = 0; r < options_.world_size; ++r) {
    // Exceptions and ranks that never ran.
    if (!statuses[r].ok()) results[r] = statuses[r];
  }
  return results;
}

}  // namespace dcp::test

#endif  // DCP_TESTING_SIMULATOR_H_
