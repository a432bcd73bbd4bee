// -----------------------------------------------------------------------------
// File: checkpoint/dist_wrapper.h
// -----------------------------------------------------------------------------
//
// `DistWrapper`: the status-robust collective steps of the checkpoint
// protocol (PyTorch's `_DistWrapper`, docs/design.md §2.2), over the
// narrow `ProcessGroup`.
//
// Each step runs a local function on every rank, exchanges the results, and
// makes sure that an error on any rank reaches every rank as the SAME error
// (PyTorch's CheckpointException): a status whose code is the first failing
// rank's code and whose message lists each failing rank with its message,
// e.g.
//
//   checkpoint step "write" failed on 1 of 4 ranks: rank 2: UNAVAILABLE: disk
//
// No rank returns early from a step while others wait in a collective:
// local errors travel inside the exchanged payloads, with their status
// payloads. Only a failure of the collective itself (a peer that died, a
// deadline) surfaces directly, as the process group reports it, marked
// `IsCollectiveFailure`.
//
// Rounds: a wrapper is created for one round (one save or load) with a
// name such as "save #3"; every step's payload carries it, and the ranks
// compare it on every exchange. Ranks in different rounds (a rank that
// skipped a save, or called Load while the others called Save) fail the
// step on every rank with the same FailedPrecondition naming each rank's
// round, instead of mixing two rounds' data.
//
// Steps (collectives in brackets):
//   ReduceScatter  local on all -> [Gather] -> reduce on the coordinator
//                  -> [Scatter] one result per rank        (the "plan" steps)
//   AllReduce      local on all -> [Gather] -> reduce on the coordinator
//                  -> [Broadcast] one result for all       (save's "write")
//   AllGather      local on all -> [AllGather] of statuses  (load's "read")
//   AllGatherResults  the same, returning every rank's result (async save's
//                  "begin")
//
// Thread safety: like the process group: one thread per rank at a time.
// Ownership: the process group must outlive the wrapper.
#ifndef DCP_CHECKPOINT_DIST_WRAPPER_H_
#define DCP_CHECKPOINT_DIST_WRAPPER_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "distributed/process_group.h"

namespace dcp {

// Payload type URL under which a combined checkpoint error lists its failing
// ranks, comma-separated ("1,3").
inline constexpr absl::string_view kFailedRanksPayload =
    "type.dcp/checkpoint_error.failed_ranks";

// Payload type URL that marks an error of the process group itself (a
// collective failed: a lost peer, a deadline), as opposed to an error that
// a rank reported through a step.
inline constexpr absl::string_view kCollectiveFailurePayload =
    "type.dcp/checkpoint_error.collective";

// Builds the combined error for `step` from `failures` (rank, status),
// sorted by rank; OK if `failures` is empty. It carries the failing ranks
// and, if any failure has one, the commit outcome (core/status.h):
// committed if any rank says so, else unknown if any rank says so.
absl::Status CheckpointError(
    absl::string_view step,
    const std::vector<std::pair<int, absl::Status>>& failures, int world_size);

// The failing ranks recorded in a combined error; empty for other statuses.
std::vector<int> FailedRanks(const absl::Status& status);

// Whether `status` came from a failed collective (see above).
bool IsCollectiveFailure(const absl::Status& status);

class DistWrapper {
 public:
  // InvalidArgument if `coordinator_rank` is not a rank of `pg`. `round`
  // names the round (the same on every rank).
  static absl::StatusOr<DistWrapper> Create(ProcessGroup& pg,
                                            int coordinator_rank,
                                            absl::Duration collective_timeout,
                                            std::string round = "");

  int rank() const { return pg_->rank(); }
  int world_size() const { return pg_->size(); }
  int coordinator_rank() const { return coordinator_rank_; }
  const std::string& round() const { return round_; }
  bool is_coordinator() const { return rank() == coordinator_rank_; }

  using LocalFn = absl::FunctionRef<absl::StatusOr<std::string>()>;
  // Receives every rank's local result, by rank; returns one per rank.
  using ScatterReduceFn = absl::FunctionRef<
      absl::StatusOr<std::vector<std::string>>(std::vector<std::string>)>;
  // Receives every rank's local result, by rank; returns one for all.
  using AllReduceFn =
      absl::FunctionRef<absl::StatusOr<std::string>(std::vector<std::string>)>;

  absl::StatusOr<std::string> ReduceScatter(absl::string_view step,
                                            LocalFn local,
                                            ScatterReduceFn reduce);
  absl::StatusOr<std::string> AllReduce(absl::string_view step, LocalFn local,
                                        AllReduceFn reduce);
  absl::Status AllGather(absl::string_view step,
                         absl::FunctionRef<absl::Status()> local);
  // Every rank's local result, by rank, on every rank.
  absl::StatusOr<std::vector<std::string>> AllGatherResults(
      absl::string_view step, LocalFn local);

 private:
  DistWrapper(ProcessGroup& pg, int coordinator_rank, absl::Duration timeout,
              std::string round)
      : pg_(&pg),
        coordinator_rank_(coordinator_rank),
        timeout_(timeout),
        round_(std::move(round)) {}

  absl::Time Deadline() const { return absl::Now() + timeout_; }

  // The combined failure of gathered envelopes (a round mismatch, or every
  // failing rank's error), or OK with every rank's payload in `payloads`.
  absl::Status CheckGathered(absl::string_view step,
                             const std::vector<std::string>& gathered,
                             std::vector<std::string>& payloads) const;

  ProcessGroup* pg_;
  int coordinator_rank_;
  absl::Duration timeout_;
  std::string round_;
};

}  // namespace dcp

#endif  // DCP_CHECKPOINT_DIST_WRAPPER_H_
