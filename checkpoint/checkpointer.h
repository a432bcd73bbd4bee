// -----------------------------------------------------------------------------
// File: checkpoint/checkpointer.h
// -----------------------------------------------------------------------------
//
// `Checkpointer`: the facade most callers want (PyTorch's `_Checkpointer`).
// It is bound to one storage writer, one storage reader, one process group,
// one coordinator and optional planners, and offers
//
//   Save(state_dict)       -> Metadata          blocking, collective
//   AsyncSave(state_dict)  -> Future<Metadata>  returns once staged
//   Load(state_dict)       -> Status            blocking, collective; fills
//                                               tensors in place
//
// Each takes an optional checkpoint id (e.g. a step's directory), so one
// long-lived checkpointer serves many checkpoints (checkpoint_manager.h).
//
//   auto writer = std::make_shared<MemoryStorageWriter>(store, "ckpt");
//   auto reader = std::make_shared<MemoryStorageReader>(store, "ckpt");
//   CheckpointerOptions options;
//   options.process_group = pg;  // std::shared_ptr<ProcessGroup>
//   DCP_ASSIGN_OR_RETURN(auto checkpointer,
//                        Checkpointer::Create(writer, reader, options));
//   DCP_ASSIGN_OR_RETURN(Metadata md, checkpointer->Save(state_dict));
//
// AsyncSave semantics (stronger than PyTorch 2.6):
//   * It returns once a CPU copy of every tensor is staged: the caller may
//     change or free its tensors at once, and the checkpoint still holds
//     the values at the time of the call.
//   * Before it returns, the ranks agree on the round in one small
//     collective on the caller's process group (an AllGather): a rank whose
//     staging failed makes every rank's AsyncSave fail alike, with the same
//     error naming it, and the next round starts clean on every rank.
//   * The rest (planning, writing, commit) runs on this checkpointer's own
//     background thread; the future yields the Metadata or the error.
//   * Saves from one Checkpointer complete in the order they were issued.
//     `Save` and `Load` first wait for pending async saves, so a load sees
//     every earlier save. The destructor waits for pending saves.
//   * Bounded memory: at most `max_pending_saves` staged copies exist; an
//     AsyncSave beyond that first waits for the oldest pending save. With
//     `reuse_staging_buffers` (the default), completed copies are kept and
//     the next AsyncSave copies into them (checkpoint/staging.h).
//   * Background saves never interleave their collectives with the
//     caller's: they run on a dedicated communicator forked from the
//     process group (`ProcessGroup::Fork`, in the caller's thread). After
//     a background save fails in a collective (a deadline, a lost peer),
//     that communicator is unusable; the next AsyncSave on every rank forks
//     a new one. If that fails too (a peer is gone for good), AsyncSave
//     fails with the process group's error, and so does every later one
//     until the job is restarted.
//
// Rounds: each Save, AsyncSave and Load is one round, named by kind and
// sequence number ("save #1", "async save #2", "load #3"). The ranks
// compare the names in every exchange, so a rank that is out of step is an
// error on every rank that names each rank's round, never a mixed
// checkpoint.
//
// Commit: a failed save's status says whether the new checkpoint is in
// place anyway (`GetCommitOutcome`, core/status.h; see
// checkpoint/save_load.h).
//
// Call sequence: every rank creates its Checkpointer with the same options
// and calls Save/AsyncSave/Load in the same order.
//
// Thread safety: call a Checkpointer from one thread at a time.
//
// Ownership: the checkpointer shares ownership of the storage, planners and
// process group; the state dict passed to Save/Load must outlive the call.
// Queued async saves keep what they use alive, so the last reference to a
// Checkpointer may be dropped anywhere, even in a callback of one of its
// own futures (which runs on its background thread): the destructor then
// cannot wait for itself, and returns at once while the queued saves
// finish on the background thread.
#ifndef DCP_CHECKPOINT_CHECKPOINTER_H_
#define DCP_CHECKPOINT_CHECKPOINTER_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "checkpoint/staging.h"
#include "core/executor.h"
#include "core/future.h"
#include "core/metadata.h"
#include "core/state_dict.h"
#include "distributed/process_group.h"
#include "planner/planner.h"
#include "storage/storage.h"

namespace dcp {

struct CheckpointerOptions {
  // The ranks that save and load together. Null means a single process.
  std::shared_ptr<ProcessGroup> process_group;
  // The rank that plans globally and commits.
  int coordinator_rank = 0;
  // Run without collectives, as one process, even if a group is given.
  bool no_dist = false;
  // Null uses DefaultSavePlanner / DefaultLoadPlanner.
  std::shared_ptr<SavePlanner> save_planner;
  std::shared_ptr<LoadPlanner> load_planner;
  // Deadline of each collective, from its start.
  absl::Duration collective_timeout = absl::Minutes(10);
  // Async saves that may be pending at once, each holding a staged copy of
  // its state dict; AsyncSave waits for the oldest beyond it. At least 1.
  // The default 1 matches PyTorch, where a new async save waits for the
  // previous one.
  int max_pending_saves = 1;
  // AsyncSave copies into the buffers of an earlier, completed async save
  // of the same layout instead of allocating (PyTorch's
  // `cache_staged_state_dict`), which makes staging cost about one memcpy.
  // The price: between saves the checkpointer keeps up to
  // `max_pending_saves` staged copies of the state alive (freed with the
  // checkpointer). Off: every AsyncSave allocates, and copies are freed as
  // soon as their save completes.
  bool reuse_staging_buffers = true;
  // Threads and thresholds of the staging copy.
  StagingOptions staging;
};

class Checkpointer {
 public:
  // `writer` may be null for a load-only checkpointer and `reader` for a
  // save-only one. Not collective.
  //
  // Errors: InvalidArgument if both are null, if `coordinator_rank` is not
  // a rank of the process group (of the world of one without a group or
  // with `no_dist`), or if `max_pending_saves` is below 1.
  static absl::StatusOr<std::unique_ptr<Checkpointer>> Create(
      std::shared_ptr<StorageWriter> writer,
      std::shared_ptr<StorageReader> reader, CheckpointerOptions options);

  // Waits for pending async saves (their errors are left to their
  // futures), except on this checkpointer's own background thread: see
  // Ownership in the file comment.
  ~Checkpointer();
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;

  // With a `checkpoint_id`, the call saves to (or loads from) that
  // checkpoint: the storage is Reset to it first (for the file system, the
  // checkpoint's directory), and later calls without an id use it too.
  // Every rank must pass the same id. An async save resets the writer when
  // its turn comes on the background thread, so saves to different ids can
  // be pending at once.
  //
  // Save (collective) saves `state_dict` (dcp::Save,
  // checkpoint/save_load.h) and returns the checkpoint's Metadata, the same
  // on every rank. It first waits for pending async saves; their errors are
  // not returned here (their futures report them). FailedPrecondition, on
  // every rank and without a collective, if this checkpointer has no
  // writer; else dcp::Save's errors.
  absl::StatusOr<Metadata> Save(
      const StateDict& state_dict,
      std::optional<std::string> checkpoint_id = std::nullopt);
  // AsyncSave (collective) returns once `state_dict` is staged and the
  // ranks agreed on the round; the save itself runs in the background (see
  // the file comment) and the future yields its Metadata or error. It may
  // first wait for the oldest pending save (`max_pending_saves`).
  //
  // Errors, as an already-completed future: FailedPrecondition without a
  // writer (no collective); a staging error (e.g. ResourceExhausted), or
  // ResourceExhausted if the background thread cannot start, which with a
  // process group every rank reports alike, naming the failing ranks; the
  // process group's error if the round's AllGather or the Fork of the
  // async communicator fails. Later errors are dcp::Save's, in the future.
  Future<Metadata> AsyncSave(
      const StateDict& state_dict,
      std::optional<std::string> checkpoint_id = std::nullopt);
  // Load (collective) loads into `state_dict` in place (dcp::Load). It
  // first waits for pending async saves, ignoring their errors, so that the
  // load sees every earlier save. FailedPrecondition, on every rank and
  // without a collective, if this checkpointer has no reader; else
  // dcp::Load's errors.
  absl::Status Load(StateDict& state_dict,
                    std::optional<std::string> checkpoint_id = std::nullopt);

  // Local (no collective): blocks until every async save issued so far has
  // completed; returns the first error among the saves not waited for
  // before (or OK). Saves already waited for by Save, Load or AsyncSave's
  // bound on pending saves are not reported again.
  absl::Status WaitForPendingSaves();

 private:
  struct PendingSave {
    Future<Metadata> future;
    // The communicator it runs on.
    std::shared_ptr<ProcessGroup> group;
  };

  Checkpointer(std::shared_ptr<StorageWriter> writer,
               std::shared_ptr<StorageReader> reader,
               CheckpointerOptions options);

  bool distributed() const {
    return options_.process_group != nullptr && !options_.no_dist;
  }
  // "save #3": the name of the next round.
  std::string NextRound(absl::string_view kind);
  // Waits until at most `keep` saves are pending, oldest first; returns the
  // first error among those waited for.
  absl::Status WaitUntilPending(size_t keep);
  // The staged copy of `state_dict` for an async save.
  absl::StatusOr<std::shared_ptr<const StateDict>> Stage(
      const StateDict& state_dict);
  // Agrees with the other ranks on starting `round` (this rank's `local`
  // error included), and forks a new async communicator if any rank needs
  // one. The same error on every rank, or OK on every rank.
  absl::Status BeginAsyncRound(const std::string& round,
                               const absl::Status& local);

  std::shared_ptr<StorageWriter> writer_;
  std::shared_ptr<StorageReader> reader_;
  CheckpointerOptions options_;
  int64_t rounds_ = 0;
  // The dedicated communicator of background saves, forked on first use
  // and again after a background save failed in a collective.
  std::shared_ptr<ProcessGroup> async_group_;
  bool async_group_failed_ = false;
  std::deque<PendingSave> pending_;
  // Null unless options_.reuse_staging_buffers.
  std::unique_ptr<StagingPool> staging_;
  // Declared last: destroyed first, so queued saves finish while the
  // members they use are alive.
  std::unique_ptr<SerialExecutor> executor_;
};

}  // namespace dcp

#endif  // DCP_CHECKPOINT_CHECKPOINTER_H_
