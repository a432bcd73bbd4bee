// -----------------------------------------------------------------------------
// File: checkpoint/save_load.h
// -----------------------------------------------------------------------------
//
// The collective save and load protocol (docs/design.md §2), as free
// functions. `Checkpointer` (checkpoint/checkpointer.h) is the facade most
// callers want; these are what it runs.
//
// Save, on every rank:
//   "plan":  SetUp + local plan on all ranks -> [Gather] -> global plan and
//            Metadata on the coordinator -> [Scatter] one plan per rank
//   "write": finish plan + write on all ranks -> [Gather] write results ->
//            the coordinator commits (StorageWriter::Finish) ->
//            [Broadcast] the final Metadata (or the error) to every rank
// Load, on every rank:
//   "metadata": [Gather] -> the coordinator reads the metadata
//               (StorageReader::ReadEncodedMetadata, encoded) -> [Broadcast]
//               it (or the error), so every rank loads the same checkpoint
//               even if a save commits meanwhile; every rank decodes and
//               validates the same bytes (ValidateCheckpointMetadata,
//               planner/plan_validation.h: DataLoss for chunks outside
//               their tensor, overlapping chunks, missing storage entries)
//               and reports an error in the next step, before any rank
//               plans
//   "plan":  SetUp + local plan -> [Gather] -> global plan on the
//            coordinator -> [Scatter]
//   "read":  finish plan + read on all ranks -> [AllGather] of statuses
//
// Rounds: every rank takes part in every step of a round even when it has
// failed already (a writer's Reset, async staging): its error travels in
// the round's first exchange. Each round has a name (`round`, e.g. "save
// #3" from a Checkpointer) that the ranks compare in every exchange, so
// ranks that are out of step fail with a FailedPrecondition naming each
// rank's round rather than mixing two rounds' data.
//
// Errors: an error on any rank in any phase reaches every rank as the same
// status (see checkpoint/dist_wrapper.h), naming every failing rank with
// its message. A peer that dies or stops answering surfaces as the process
// group's Aborted or DeadlineExceeded. Bad options are InvalidArgument.
//
// Commit: a failed Save says what became of the checkpoint through
// `GetCommitOutcome` (core/status.h), and its message says it too:
//   kNotCommitted  the previous checkpoint is untouched
//   kCommitted     the new checkpoint is in place, e.g. the directory sync
//                  after the commit failed, or the coordinator committed
//                  but could not tell the other ranks
//   kUnknown       a non-coordinator lost contact with the coordinator
//                  during the write step; it may have committed
//
// Thread safety: every rank calls Save/Load (or AsyncSave) in the same order
// from one thread. Ownership: the state dict, storage, planner and process
// group must outlive the call.
#ifndef DCP_CHECKPOINT_SAVE_LOAD_H_
#define DCP_CHECKPOINT_SAVE_LOAD_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "checkpoint/staging.h"  // StageStateDict, for AsyncSave callers.
#include "core/executor.h"
#include "core/future.h"
#include "core/metadata.h"
#include "core/state_dict.h"
#include "distributed/process_group.h"
#include "planner/planner.h"
#include "storage/storage.h"

namespace dcp {

struct SaveOptions {
  // The ranks saving together. Null, or `no_dist`, saves from this process
  // alone without any collective.
  ProcessGroup* process_group = nullptr;
  bool no_dist = false;
  // The rank that plans globally and commits; a rank of `process_group`.
  int coordinator_rank = 0;
  // Null uses a DefaultSavePlanner.
  SavePlanner* planner = nullptr;
  // When set, the writer is Reset to it first.
  std::optional<std::string> checkpoint_id;
  // Deadline of each collective, from its start.
  absl::Duration collective_timeout = absl::Minutes(10);
  // The round's name, the same on every rank; empty means "save".
  std::string round;
};

struct LoadOptions {
  // The ranks loading together. Null, or `no_dist`, loads into this process
  // alone without any collective.
  ProcessGroup* process_group = nullptr;
  bool no_dist = false;
  // The rank that reads the metadata and plans globally; a rank of
  // `process_group`.
  int coordinator_rank = 0;
  // Null uses a DefaultLoadPlanner.
  LoadPlanner* planner = nullptr;
  // When set, the reader is Reset to it first.
  std::optional<std::string> checkpoint_id;
  // Deadline of each collective, from its start.
  absl::Duration collective_timeout = absl::Minutes(10);
  // The round's name, the same on every rank; empty means "load".
  std::string round;
};

// Saves `state_dict` collectively and returns the checkpoint's Metadata
// (the same on every rank). Every rank of the group calls it. Errors: see
// the file comment; InvalidArgument at once, before any collective, if
// `coordinator_rank` is not a rank of the group.
absl::StatusOr<Metadata> Save(const StateDict& state_dict,
                              StorageWriter& writer,
                              const SaveOptions& options = {});

// Loads into `state_dict` in place: tensors (and each local shard of a
// sharded tensor) receive exactly their region; non-tensor values are
// replaced by the saved ones. Every rank of the group calls it. Errors:
// see the file comment (and the planner's and reader's, e.g. NotFound for
// keys missing from the checkpoint); InvalidArgument at once, before any
// collective, if `coordinator_rank` is not a rank of the group.
absl::Status Load(StateDict& state_dict, StorageReader& reader,
                  const LoadOptions& options = {});

struct AsyncSaveOptions {
  // As in SaveOptions, but shared: the background save keeps them alive.
  // The background save runs its collectives on `process_group`, so the
  // caller must not use that group concurrently (Checkpointer uses a
  // dedicated fork of the caller's group).
  std::shared_ptr<ProcessGroup> process_group;
  bool no_dist = false;
  int coordinator_rank = 0;
  std::shared_ptr<SavePlanner> planner;
  std::optional<std::string> checkpoint_id;
  absl::Duration collective_timeout = absl::Minutes(10);
  std::string round;
  // How the state dict is copied before AsyncSave returns.
  StagingOptions staging;
  // Runs the background save. Must be set.
  Executor executor;
};

// Stages `state_dict` (StageStateDict, into fresh buffers) before
// returning, then runs Save on `options.executor`. The future yields the
// Metadata or the error. If staging fails, the background save still takes
// part in the round and reports the staging error, so every rank's future
// fails alike. InvalidArgument (at once, without a round) without an
// executor or writer.
//
// Ownership: `state_dict` need only live through the call; the task keeps
// the staged copy, `writer` and the shared options alive until it is done.
Future<Metadata> AsyncSave(const StateDict& state_dict,
                           std::shared_ptr<StorageWriter> writer,
                           AsyncSaveOptions options);

}  // namespace dcp

#endif  // DCP_CHECKPOINT_SAVE_LOAD_H_
