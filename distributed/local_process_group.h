// -----------------------------------------------------------------------------
// File: distributed/local_process_group.h
// -----------------------------------------------------------------------------
//
// `LocalWorld`: N ranks as threads of one process, for production code that
// wants the multi-rank protocol without several processes (the `dcp` tool's
// demo, benchmark and converters). Tests use the richer, testonly
// `test::FakeWorld` (distributed/fake_process_group.h) through the simulator.
//
//   std::vector<absl::Status> statuses = RunLocalRanks(
//       4, [&](int rank, const std::shared_ptr<ProcessGroup>& pg) {
//         SaveOptions options;
//         options.process_group = pg.get();
//         return Save(state_dicts[rank], *writers[rank], options).status();
//       });
//
// Semantics:
//   * Rendezvous by call number. Each communicator numbers every rank's
//     collective calls 0, 1, 2, ...; call #k of all ranks meets. When the
//     last rank arrives the results are fixed, indexed by rank (never by
//     arrival order), and everyone is released with its own copy.
//   * Ranks must agree on the kind, tag and root of call #k; otherwise the
//     call fails on every rank with FailedPrecondition naming both calls.
//   * Deadlines: a call still missing ranks at its deadline fails on every
//     rank that waits with DeadlineExceeded naming the missing ranks.
//   * Fail fast: `Abort(why)` fails every pending and later call with
//     Aborted. `RankExited(rank)` fails every call the rank has not joined
//     with Aborted naming it. `RunLocalRanks` calls both for you: a rank that
//     returns an error aborts the world, a rank that returns OK is marked as
//     exited, so no rank waits for a peer that is gone.
//   * Invalid arguments (root out of range, a Scatter root without size()
//     payloads) fail the calling rank with InvalidArgument and the call on
//     the other ranks with Aborted.
//   * `Fork(tag)` is a collective that creates a new communicator over the
//     same ranks, with its own call numbers.
//
// Thread safety: every method of `LocalWorld` and of its handles is
// thread-safe; a rank's calls on one communicator must come from one thread
// at a time (the ProcessGroup contract).
//
// Ownership: handles share the world's state and stay valid after the
// `LocalWorld` object is gone.
#ifndef DCP_DISTRIBUTED_LOCAL_PROCESS_GROUP_H_
#define DCP_DISTRIBUTED_LOCAL_PROCESS_GROUP_H_

#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "distributed/process_group.h"

namespace dcp {

namespace local_process_group_internal {
struct WorldState;
}  // namespace local_process_group_internal

class LocalWorld {
 public:
  // InvalidArgument unless 1 <= world_size <= kMaxWorldSize.
  static absl::StatusOr<std::unique_ptr<LocalWorld>> Create(int world_size);
  static constexpr int kMaxWorldSize = 4096;

  LocalWorld(const LocalWorld&) = delete;
  LocalWorld& operator=(const LocalWorld&) = delete;
  ~LocalWorld();

  int world_size() const;

  // A handle on the world communicator for `rank`; CHECK-fails unless
  // 0 <= rank < world_size() (programmer error).
  std::shared_ptr<ProcessGroup> Rank(int rank);

  // Fails every pending and later call, on every communicator, with
  // Aborted "world aborted: <why>" (`why` as by Status::ToString). The
  // first call wins; later ones change nothing.
  void Abort(const absl::Status& why);

  // Records that `rank` makes no more calls: every call it has not joined
  // fails on the other ranks with Aborted "rank <r> exited before joining
  // call #k ...". CHECK-fails unless 0 <= rank < world_size().
  void RankExited(int rank);

 private:
  explicit LocalWorld(
      std::shared_ptr<local_process_group_internal::WorldState> state);
  std::shared_ptr<local_process_group_internal::WorldState> state_;
};

// Runs `fn(rank, pg)` on `world_size` threads over a fresh LocalWorld, joins
// them all, and returns every rank's status in rank order. `fn` is called
// concurrently, once per rank, on its rank's thread. A rank whose function
// fails (or throws: the exception becomes Internal naming the rank) aborts
// the world, so the others fail promptly instead of waiting for their
// deadlines; a rank that returns OK is marked exited (RankExited). If
// `world_size` is above kMaxWorldSize, `fn` is not called and every rank's
// status is InvalidArgument; if it is below 1, the result is empty.
std::vector<absl::Status> RunLocalRanks(
    int world_size,
    const std::function<
        absl::Status(int rank, const std::shared_ptr<ProcessGroup>& pg)>& fn);

}  // namespace dcp

#endif  // DCP_DISTRIBUTED_LOCAL_PROCESS_GROUP_H_
