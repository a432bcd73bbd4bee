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
//   * The rest (planning, writing, commit) runs on this checkpointer's own
//     background thread; the future yields the Metadata or the error.
//   * Saves from one Checkpointer complete in the order they were issued.
//     `Save` and `Load` first wait for pending async saves, so a load sees
//     every earlier save. The destructor waits for pending saves.
//   * Background saves never interleave their collectives with the
//     caller's: the first AsyncSave forks a dedicated communicator from the
//     process group (`ProcessGroup::Fork`, one collective in the caller's
//     thread), and every background save uses only that communicator.
//
// Call sequence: every rank creates its Checkpointer with the same options
// and calls Save/AsyncSave/Load in the same order.
//
// Thread safety: call a Checkpointer from one thread at a time.
//
// Ownership: the checkpointer shares ownership of the storage, planners and
// process group; the state dict passed to Save/Load must outlive the call.
#ifndef DCP_CHECKPOINT_CHECKPOINTER_H_
#define DCP_CHECKPOINT_CHECKPOINTER_H_

#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "checkpoint/executor.h"
#include "checkpoint/future.h"
#include "checkpoint/metadata.h"
#include "checkpoint/process_group.h"
#include "checkpoint/state_dict.h"
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
};

class Checkpointer {
 public:
  // `writer` may be null for a load-only checkpointer and `reader` for a
  // save-only one. InvalidArgument for a bad coordinator rank.
  static absl::StatusOr<std::unique_ptr<Checkpointer>> Create(
      std::shared_ptr<StorageWriter> writer,
      std::shared_ptr<StorageReader> reader, CheckpointerOptions options);

  // Waits for pending async saves.
  ~Checkpointer();
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;

  absl::StatusOr<Metadata> Save(const StateDict& state_dict);
  Future<Metadata> AsyncSave(const StateDict& state_dict);
  absl::Status Load(StateDict& state_dict);

  // Blocks until every async save issued so far has completed; returns the
  // first error among them (or OK).
  absl::Status WaitForPendingSaves();

 private:
  Checkpointer(std::shared_ptr<StorageWriter> writer,
               std::shared_ptr<StorageReader> reader,
               CheckpointerOptions options);

  std::shared_ptr<StorageWriter> writer_;
  std::shared_ptr<StorageReader> reader_;
  CheckpointerOptions options_;
  // The dedicated communicator of background saves, forked on first use.
  std::shared_ptr<ProcessGroup> async_group_;
  std::vector<Future<Metadata>> pending_;
  // Declared last: destroyed first, so queued saves finish while the
  // members they use are alive.
  std::unique_ptr<SerialExecutor> executor_;
};

}  // namespace dcp

#endif  // DCP_CHECKPOINT_CHECKPOINTER_H_
