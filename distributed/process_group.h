// -----------------------------------------------------------------------------
// File: distributed/process_group.h
// -----------------------------------------------------------------------------
//
// `ProcessGroup`: the narrow, byte-level collectives that the checkpoint
// protocol needs, and nothing else. Implementations: the in-process fake of
// the simulator (//distributed:fake_process_group), a world of one for
// `no_dist` (distributed/single_process_group.h), and c10d/Gloo for real
// multi-process runs.
//
// Call sequence: every rank calls the same collectives in the same order,
// each with the same `tag` (and the same `root` where there is one), from
// one thread per rank at a time. Payloads are arbitrary bytes and may
// differ in size between ranks.
//
// Deadlines: every call takes an absolute `deadline`. A call that cannot
// complete by then returns `DeadlineExceeded` naming the ranks that did not
// arrive; it never blocks past the deadline by more than scheduling noise.
//
// Errors:
//   DeadlineExceeded    a peer did not arrive in time
//   Aborted             a peer failed or left; the message names it
//   FailedPrecondition  ranks disagree on the call (kind, tag or root); the
//                       message names the ranks and their calls
//   InvalidArgument     bad arguments (root out of range, wrong number of
//                       scatter payloads on the root)
// After any error the group may be unusable; callers give up the operation.
//
// Thread safety: `rank()` and `size()` may be called from any thread; the
// collectives follow the call-sequence rule above.
#ifndef DCP_DISTRIBUTED_PROCESS_GROUP_H_
#define DCP_DISTRIBUTED_PROCESS_GROUP_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace dcp {

class ProcessGroup {
 public:
  virtual ~ProcessGroup() = default;

  // This process's rank in [0, size()).
  virtual int rank() const = 0;
  // Number of ranks.
  virtual int size() const = 0;

  // Returns once every rank has entered the barrier.
  virtual absl::Status Barrier(absl::string_view tag, absl::Time deadline) = 0;

  // Every rank returns `root`'s payload; other ranks' payloads are ignored.
  virtual absl::StatusOr<std::string> Broadcast(absl::string_view tag, int root,
                                                std::string payload,
                                                absl::Time deadline) = 0;

  // `root` returns every rank's payload, indexed by rank; other ranks return
  // an empty vector.
  virtual absl::StatusOr<std::vector<std::string>> Gather(
      absl::string_view tag, int root, std::string payload,
      absl::Time deadline) = 0;

  // Rank r returns `root`'s payloads[r]. `payloads` is read on `root` only,
  // where it must hold size() entries.
  virtual absl::StatusOr<std::string> Scatter(absl::string_view tag, int root,
                                              std::vector<std::string> payloads,
                                              absl::Time deadline) = 0;

  // Every rank returns every rank's payload, indexed by rank.
  virtual absl::StatusOr<std::vector<std::string>> AllGather(
      absl::string_view tag, std::string payload, absl::Time deadline) = 0;

  // Collective: creates an independent communicator over the same ranks.
  // Its collectives never match collectives on this group (or on other
  // forks), so a background thread can use it while the caller keeps using
  // this one. Every rank must call Fork with the same `tag`.
  virtual absl::StatusOr<std::shared_ptr<ProcessGroup>> Fork(
      absl::string_view tag, absl::Time deadline) = 0;
};

// The collectives of `ProcessGroup`, for implementations that match calls
// across ranks and name them in errors.
enum class CollectiveKind {
  kBarrier,
  kBroadcast,
  kGather,
  kScatter,
  kAllGather,
  kFork,
};

// "Barrier", "Broadcast", "Gather", "Scatter", "AllGather", "Fork".
absl::string_view CollectiveKindName(CollectiveKind kind);

// Whether the collective has a root rank (Broadcast, Gather, Scatter).
bool CollectiveHasRoot(CollectiveKind kind);

}  // namespace dcp

#endif  // DCP_DISTRIBUTED_PROCESS_GROUP_H_
