// -----------------------------------------------------------------------------
// File: checkpoint/checkpoint_manager.h
// -----------------------------------------------------------------------------
//
// `CheckpointManager`: checkpoints of a training job by step, in step
// directories under one root, with retention, as Orbax's CheckpointManager
// does for JAX:
//
//   CheckpointManagerOptions options;
//   options.checkpointer.process_group = pg;
//   options.max_to_keep = 3;
//   DCP_ASSIGN_OR_RETURN(auto manager,
//                        CheckpointManager::Create("/ckpt/run7", options));
//   DCP_ASSIGN_OR_RETURN(std::optional<int64_t> latest,
//                        manager->RestoreLatest(state));  // on restart
//   for (int64_t step = latest.value_or(0) + 1; ...; ++step) {
//     train(...);
//     if (step % 100 == 0) manager->AsyncSave(step, state);
//   }
//   DCP_RETURN_IF_ERROR(manager->WaitForPendingSaves());
//
// Layout: step `n` lives in `<root>/step_<n>` (decimal, no leading zeros),
// a DCP checkpoint directory PyTorch can load. A step exists once its
// `.metadata` exists (the file system writer commits it last, atomically,
// after every data file is durable), so a crash at any point leaves only
// complete steps visible: `AllSteps`, `LatestStep` and `RestoreLatest`
// never report a directory without `.metadata`.
//
// One checkpointer: every save and restore goes through one long-lived
// `Checkpointer` with a per-call checkpoint id, so async saves share one
// background thread and one communicator however many steps are saved.
// Saves complete in the order they were issued.
//
// Retention, after each committed save, on the coordinator only: the
// newest `max_to_keep` steps, every step that is a multiple of
// `keep_period`, and the step just saved are kept; other complete steps
// are removed, `.metadata` first (so a crash mid-removal leaves an
// incomplete directory, never a damaged step). Incomplete step directories
// below the step just saved that no save of this manager is writing (left
// by a crash) are removed too. Removal never runs before a newer step is
// committed, and its failures are logged, not returned: the save itself
// succeeded.
//
// Errors: a save of a step that already exists is AlreadyExists on every
// rank (the checkpoint is left as it was); other save and restore errors
// are the checkpointer's (checkpoint/checkpointer.h): the same error on
// every rank. RestoreLatest with no complete step returns nullopt on every
// rank and loads nothing.
//
// Call sequence: every rank creates its manager with the same root and
// options and calls Save/AsyncSave/Restore/RestoreLatest with the same
// steps in the same order. AllSteps and LatestStep are local (no
// collective): each rank lists the root itself.
//
// Thread safety: call a manager from one thread at a time. Ownership: the
// state dict given to Save/AsyncSave/Restore must outlive the call (an
// async save stages a copy before it returns).
#ifndef DCP_CHECKPOINT_CHECKPOINT_MANAGER_H_
#define DCP_CHECKPOINT_CHECKPOINT_MANAGER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "checkpoint/checkpointer.h"
#include "core/future.h"
#include "core/metadata.h"
#include "core/state_dict.h"
#include "storage/file_system.h"
#include "storage/fs_storage.h"

namespace dcp {

struct CheckpointManagerOptions {
  // Process group, coordinator, planners, deadlines, async-save queue and
  // staging, as for a Checkpointer.
  CheckpointerOptions checkpointer;
  // Keep the newest this many steps; 0 keeps every step.
  int max_to_keep = 0;
  // Also keep every step that is a multiple of this; 0 keeps none extra.
  int64_t keep_period = 0;
  // Options of each step's FileSystemWriter and FileSystemReader.
  // `writer.overwrite` is ignored (a step is never overwritten), and their
  // `file_system` is replaced by `file_system`.
  FileSystemWriterOptions writer;
  FileSystemReaderOptions reader;
  // Where the steps live; null is the local POSIX file system.
  std::shared_ptr<FileSystem> file_system;
};

class CheckpointManager {
 public:
  // Creates `root` if missing (durably: CreateDirDurably). Not collective.
  // InvalidArgument for an empty root, a negative max_to_keep or
  // keep_period, or bad checkpointer options (Checkpointer::Create); the
  // file system's errors creating the root, annotated "creating the
  // checkpoint root"; FileSystemWriter::Create's and
  // FileSystemReader::Create's errors.
  static absl::StatusOr<std::unique_ptr<CheckpointManager>> Create(
      std::string root, CheckpointManagerOptions options = {});

  // Waits for pending saves and their retention (their errors are left to
  // their futures).
  ~CheckpointManager();
  CheckpointManager(const CheckpointManager&) = delete;
  CheckpointManager& operator=(const CheckpointManager&) = delete;

  const std::string& root() const;
  // `<root>/step_<step>`.
  std::string StepDirectory(int64_t step) const;

  // Saves `state` as `step` (>= 0), then applies retention. Collective.
  // First waits for pending async saves (their errors are left to their
  // futures). InvalidArgument, without a collective, for a negative step;
  // else Checkpointer::Save's errors (AlreadyExists if the step exists).
  absl::StatusOr<Metadata> Save(int64_t step, const StateDict& state);
  // As Save, in the background once `state` is staged; the future resolves
  // after the commit and the retention that follows it. A negative step is
  // an already-failed future (InvalidArgument, no collective); other
  // errors are Checkpointer::AsyncSave's.
  Future<Metadata> AsyncSave(int64_t step, const StateDict& state);
  // Local: blocks until every save issued so far and its retention are
  // done; returns the first error among the async saves not waited for
  // before (or OK). Save, Restore and RestoreLatest wait for pending saves
  // too and drop their errors, so those saves are not reported here again.
  absl::Status WaitForPendingSaves();

  // The complete steps under the root, ascending. Local. A missing root
  // is no step at all; other errors of listing the root are returned
  // (annotated "listing steps in <root>").
  absl::StatusOr<std::vector<int64_t>> AllSteps() const;
  // The largest complete step, or nullopt if there is none. Local. Errors
  // as AllSteps.
  absl::StatusOr<std::optional<int64_t>> LatestStep() const;

  // Loads `step` into `state` (in place, resharding as needed). Collective.
  // First waits for pending async saves, ignoring their errors.
  // InvalidArgument, without a collective, for a negative step; else
  // Checkpointer::Load's errors (e.g. NotFound for a step that does not
  // exist), annotated "restoring step <n>".
  absl::Status Restore(int64_t step, StateDict& state);
  // Loads the latest complete step, as the coordinator sees it, on every
  // rank; returns it, or nullopt (loading nothing) if there is none.
  // Collective. Errors: the coordinator's listing error (AllSteps), on
  // every rank; the process group's; Restore's.
  absl::StatusOr<std::optional<int64_t>> RestoreLatest(StateDict& state);

 private:
  struct Shared;

  CheckpointManager(std::shared_ptr<Shared> shared,
                    std::unique_ptr<Checkpointer> checkpointer);

  std::shared_ptr<Shared> shared_;
  std::unique_ptr<Checkpointer> checkpointer_;
  // The futures AsyncSave returned, until waited for.
  std::vector<Future<Metadata>> pending_;
  int64_t rounds_ = 0;
};

}  // namespace dcp

#endif  // DCP_CHECKPOINT_CHECKPOINT_MANAGER_H_
