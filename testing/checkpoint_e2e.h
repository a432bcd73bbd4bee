// -----------------------------------------------------------------------------
// File: testing/checkpoint_e2e.h
// -----------------------------------------------------------------------------
//
// Whole checkpoint scenarios as seen by ONE rank, written against
// `ProcessGroup` and a checkpoint directory, so the same test body runs on
// the simulator (threads over a FakeWorld) and on real worker processes
// over c10d/Gloo (testing/multiprocess.h):
//
//   // On every rank of a 4-rank group:
//   DCP_RETURN_IF_ERROR(SaveModelToDir(pg, dir, /*value_seed=*/0));
//   // Later, on every rank of a 3-rank group:
//   DCP_RETURN_IF_ERROR(LoadModelFromDirAndCheck(pg, dir, /*value_seed=*/0));
//
// The model is testing/checkpoint_scenarios.h's: saved in
// `ModelLayout::kSave` and loaded in `ModelLayout::kLoad`, so every sharded
// tensor is resharded, and every element is compared after the load.
// Storage is storage/fs_storage.h's FileSystemWriter/Reader on `dir`.
//
// Call sequence: collective. Every rank of `pg` calls the same function
// with the same `dir`, `value_seed` and options.
//
// Errors: whatever the checkpoint protocol returns (the same combined
// error on every rank for failures inside a step, see
// checkpoint/dist_wrapper.h); Internal from the check after a load.
//
// Thread safety: one call per rank at a time, on the rank's thread (fault
// handlers are per thread).
#ifndef DCP_TESTING_CHECKPOINT_E2E_H_
#define DCP_TESTING_CHECKPOINT_E2E_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "distributed/process_group.h"

namespace dcp::test {

struct E2eOptions {
  // The rank that plans globally and commits.
  int coordinator_rank = 0;
  // Deadline of each collective, from its start.
  absl::Duration collective_timeout = absl::Seconds(60);
};

// Saves this rank's part of the model (kSave layout, `value_seed`) to `dir`
// with a blocking `Checkpointer::Save`.
absl::Status SaveModelToDir(std::shared_ptr<ProcessGroup> pg,
                            const std::string& dir, int value_seed = 0,
                            const E2eOptions& options = {});

// The same with `Checkpointer::AsyncSave`; once it returns, zeroes every
// tensor of the caller's state dict (the checkpoint must still hold the
// values at the time of the call), then waits for the save.
absl::Status AsyncSaveModelToDir(std::shared_ptr<ProcessGroup> pg,
                                 const std::string& dir, int value_seed = 0,
                                 const E2eOptions& options = {});

// Two async saves on every rank. In the first, staging fails on
// `failing_rank` only (its state dict holds a meta-device tensor, which
// cannot be copied to the CPU); every rank's AsyncSave must fail alike,
// naming that rank and staging. The second (the model with `value_seed`)
// must succeed on every rank. OK if both behave; Internal describing the
// difference otherwise.
absl::Status AsyncSaveFailingStagingThenRecover(
    std::shared_ptr<ProcessGroup> pg, const std::string& dir,
    int failing_rank, int value_seed = 0, const E2eOptions& options = {});

// Loads the model in the kLoad layout of `pg->size()` ranks from `dir` and
// compares every element with the values of `value_seed`.
absl::Status LoadModelFromDirAndCheck(std::shared_ptr<ProcessGroup> pg,
                                      const std::string& dir,
                                      int value_seed = 0,
                                      const E2eOptions& options = {});

// A scenario with a fault: on rank `failing_rank`, the first visit (on
// this thread, or a thread that carries its handler) of
// `FaultPoint(fault_point)` returns
// Unavailable("injected failure at <fault_point>"). `save` selects
// `SaveModelToDir` or `LoadModelFromDirAndCheck`. Returns that scenario's
// status (expected: the same combined error on every rank).
absl::Status RunWithFaultAt(std::shared_ptr<ProcessGroup> pg,
                            const std::string& dir, bool save,
                            absl::string_view fault_point, int failing_rank,
                            int value_seed = 0,
                            const E2eOptions& options = {});

// Status <-> text, to pass a status from a worker process to the test's
// parent: keeps the code, the message and the failed-ranks payload
// (checkpoint/dist_wrapper.h), so `FailedRanks` and `==` work on the copy.
std::string EncodeStatus(const absl::Status& status);
// InvalidArgument if `text` is not an `EncodeStatus` result.
absl::Status DecodeStatus(absl::string_view text, absl::Status* status);

}  // namespace dcp::test

#endif  // DCP_TESTING_CHECKPOINT_E2E_H_
