// -----------------------------------------------------------------------------
// File: distributed/fake_process_group.h
// -----------------------------------------------------------------------------
//
// `FakeWorld`: N ranks in one process, each with its own `ProcessGroup`
// handle (`Rank(r)`), for multi-rank tests. Most tests use it through
// `test::Simulator` (testing/simulator.h), which runs one thread per rank
// and drives the lifecycle calls below; use `FakeWorld` directly only to
// test the fake itself or for single-threaded error paths.
//
// Semantics (each is covered by distributed/fake_process_group_test.cc):
//
// * Rendezvous by call number. Every communicator numbers each rank's
//   collective calls 0, 1, 2, ...; call #k of every rank forms one
//   rendezvous. When the last rank arrives, the results are computed once
//   from the inputs indexed by rank (never by arrival order): Gather and
//   AllGather results are in rank order.
// * Matching by order and kind. If ranks disagree at call #k on the kind,
//   tag or root, call #k fails on EVERY rank with FailedPrecondition, e.g.
//     collective mismatch at call #3: rank 0 Gather(tag="plan", root=0) vs
//     rank 1 Broadcast(tag="plan", root=0)
//   (the first conflicting pair seen, lower rank first). Ranks arriving at a
//   failed call later get the same error at once.
// * Fail fast. A rank that is done (`MarkRankDone`) or that failed a call
//   locally (injected fault, invalid argument) makes every call it has not
//   joined fail promptly on the other ranks with Aborted, e.g.
//     rank 2 failed: INTERNAL: disk on fire (before joining call #4
//     Gather(tag="write", root=0))
//     rank 2 exited before joining call #4 Gather(tag="write", root=0)
//   A done rank's absence is noticed by pending calls and by later ones.
// * Deadlines. Every wait ends at the call's `deadline`; the call (on every
//   rank) then fails with DeadlineExceeded naming the ranks that did not
//   arrive: `call #2 AllGather(tag="x") timed out: ranks 1, 2 did not
//   arrive`.
// * Fork is a collective (kind "Fork") that creates a new communicator with
//   its own call numbers, matching and transcript. Communicators are named
//   by path: the world is "world"; call #k `Fork("bg")` on communicator C
//   creates `C + "/bg#k"` (e.g. "world/bg#3").
// * Transcript. `Transcript(communicator)` lists the collectives that
//   completed successfully, in call order, as "Kind:tag" (e.g.
//   {"Gather:plan", "Scatter:plan", "Fork:bg"}), for protocol tests.
// * Payloads are copied: every rank receives its own strings.
// * Invalid arguments are local failures of the calling rank:
//   InvalidArgument on that rank (root out of range; the Scatter root
//   passing other than world_size payloads), Aborted on the others.
//
// Messages on communicators other than "world" say where:
// `call #0 on communicator "world/bg#3" AllGather(tag="x")`.
//
// Scheduling modes:
//
// * Free (no `schedule_seed`): ranks run concurrently; only the
//   rendezvous orders them.
// * Deterministic (`schedule_seed` set): exactly one thread runs at a time.
//   The threads are the ranks' own threads and the threads they start
//   through `dcp::ScheduledThread` (core/scheduling.h), such as the
//   async-save executor: the world is their `dcp::ThreadScheduler`. Every
//   rank thread must first call `StartRank` (which waits until every rank
//   has started and then for its first turn; it installs the world as the
//   thread's scheduler) and finally `MarkRankDone`; the Simulator does
//   both. A thread gives up its turn only at a collective call (including
//   Fork), at a `dcp::WaitUntil` (e.g. waiting for a future), and when it
//   exits; the next thread is drawn from the runnable ones (started, not
//   exited, not waiting in an unfinished collective, not waiting for a
//   notification) by a splitmix64 PRNG seeded with the seed. A new thread
//   is scheduled only once it has started. The same seed and the same code
//   give the same interleaving, which `ScheduleTrace()` records ("r2
//   start", "r0.1 start" for rank 0's first background thread,
//   "r2 Gather(plan)#0", "r0 wait", "r0.1 exit", "r0 exit OK").
//   When no thread can run: threads waiting in collectives (e.g. rank 0
//   waits on "world" while rank 1 waits on "world/bg#0") have their calls
//   fail with FailedPrecondition "deadlock: no thread can run; ..."; if
//   none does, timed waits (`WaitUntilFor`) time out, which makes time
//   logical; if none does either, the world is aborted with that message.
//   Collectives must come from scheduled threads: a call from any other
//   thread returns Unimplemented. If a thread waits past its deadline for
//   its turn (the running thread blocked outside a collective or
//   `WaitUntil`), the world is aborted with DeadlineExceeded and scheduling
//   stops; from then on every thread runs freely.
//
// Broken communicators: once a collective fails (mismatch, departure,
// deadline, injected fault), its communicator is unusable, as a real
// process group is after an error: every later call on it fails at once
// with Aborted "... the communicator failed earlier (call #k failed: ...)".
// Ranks still arriving at the failed call get its own error.
//
// Departure: a rank has departed when its function returned
// (`MarkRankDone`) and, in deterministic mode, every thread it started has
// exited; only then do calls it has not joined fail on the others.
//
// Faults: `FailCollective(rank, nth, status)` makes rank `rank`'s nth call
// (1-based, counted over all its communicators, Fork included) return
// `status` without joining; the other ranks' call fails with Aborted
// naming the rank: `rank 1 failed: UNAVAILABLE: boom (at call #2
// Gather(tag="plan", root=0))`. Injected statuses keep code and message,
// not payloads.
//
// Thread safety: every method of `FakeWorld` and of its handles is
// thread-safe. A rank's collectives on one communicator must come from one
// thread at a time (the ProcessGroup contract).
//
// Ownership: handles share the world's state, so they stay valid (their
// calls fail with Aborted once the world is aborted) after the `FakeWorld`
// object is destroyed.
#ifndef DCP_DISTRIBUTED_FAKE_PROCESS_GROUP_H_
#define DCP_DISTRIBUTED_FAKE_PROCESS_GROUP_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "distributed/process_group.h"

namespace dcp::test {

namespace fake_process_group_internal {
class WorldState;
}  // namespace fake_process_group_internal

struct FakeWorldOptions {
  // Number of ranks, in [1, FakeWorld::kMaxWorldSize].
  int world_size = 1;
  // Unset: free scheduling. Set: deterministic scheduling with this seed.
  std::optional<uint64_t> schedule_seed;
  // Deterministic mode: how long a new thread may wait for its first turn
  // before the schedule is declared stalled (the world is then aborted).
  absl::Duration stall_timeout = absl::Minutes(5);
};

class FakeWorld {
 public:
  // Name of the world communicator (the handles returned by `Rank`).
  static constexpr absl::string_view kWorldCommunicator = "world";
  static constexpr int kMaxWorldSize = 4096;

  // InvalidArgument if `world_size` is out of range or `stall_timeout` is
  // not positive.
  static absl::StatusOr<std::unique_ptr<FakeWorld>> Create(
      FakeWorldOptions options);

  FakeWorld(const FakeWorld&) = delete;
  FakeWorld& operator=(const FakeWorld&) = delete;
  // Aborts the world (Abort with Cancelled "FakeWorld destroyed"), so calls
  // through surviving handles fail with Aborted.
  ~FakeWorld();

  int world_size() const;
  bool deterministic() const;

  // A handle on the world communicator for `rank` (CHECK-fails unless
  // 0 <= rank < world_size). Every call returns a new handle; handles of
  // the same rank are interchangeable.
  std::shared_ptr<ProcessGroup> Rank(int rank);

  // Makes `rank`'s `nth` collective call (1-based, over all communicators)
  // return `status` (not OK) without joining. Call before the ranks run.
  // CHECK-fails for a rank out of range, nth < 1 or an OK status.
  void FailCollective(int rank, int nth, absl::Status status);

  // Registers the calling thread as `rank`'s thread. Free mode: returns OK
  // at once. Deterministic mode: waits until every rank has started and it
  // is this rank's turn; Aborted / DeadlineExceeded if the world is aborted
  // or `deadline` passes first. FailedPrecondition if called twice.
  // CHECK-fails for a rank out of range.
  absl::Status StartRank(int rank, absl::Time deadline);

  // Records that `rank` will make no more calls because its function
  // returned `status` (OK or not). Every call the rank has not joined then
  // fails on the other ranks with Aborted naming it. Later calls are
  // ignored. In deterministic mode, also ends the rank's turn. CHECK-fails
  // for a rank out of range.
  void MarkRankDone(int rank, const absl::Status& status);

  // Fails every pending and later call, on every rank, with
  // Aborted "world aborted: <why>". Ends deterministic scheduling. The first
  // call wins; later ones change nothing.
  void Abort(const absl::Status& why);

  // Deterministic mode: waits until every thread the ranks started
  // (`dcp::ScheduledThread`) has exited, e.g. an executor that a rank's
  // function let go of from one of its own tasks. True if they all did by
  // `deadline`; always true in free mode, where they are not tracked.
  bool AwaitStartedThreads(absl::Time deadline);

  // The collectives that completed successfully on `communicator`, in
  // order, as "Kind:tag". Empty for an unknown communicator.
  std::vector<std::string> Transcript(
      absl::string_view communicator = kWorldCommunicator) const;
  // Names of all communicators created so far, sorted.
  std::vector<std::string> Communicators() const;
  // Deterministic mode: the schedule so far, one entry per turn-relevant
  // event: "r<k> start", "r<k> <Kind>(<tag>)#<call>[ on <communicator>]",
  // "r<k> exit OK" / "r<k> exit <status>". Empty in free mode.
  std::vector<std::string> ScheduleTrace() const;

 private:
  explicit FakeWorld(
      std::shared_ptr<fake_process_group_internal::WorldState> state);

  std::shared_ptr<fake_process_group_internal::WorldState> state_;
};

}  // namespace dcp::test

#endif  // DCP_DISTRIBUTED_FAKE_PROCESS_GROUP_H_
