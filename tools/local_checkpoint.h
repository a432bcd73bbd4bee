// -----------------------------------------------------------------------------
// File: tools/local_checkpoint.h
// -----------------------------------------------------------------------------
//
// Collective saves and loads of a checkpoint directory by N ranks simulated
// as threads of this process (distributed/local_process_group.h), through
// FileSystemWriter / FileSystemReader (PyTorch's DCP format). Used by the
// `dcp` tool's demo, bench and converters.
//
// Errors: the first failing rank's error, prefixed with "rank <r>: ".
//
// Thread safety: each call runs its own world; the state dicts must not be
// touched by the caller during the call.
#ifndef DCP_TOOLS_LOCAL_CHECKPOINT_H_
#define DCP_TOOLS_LOCAL_CHECKPOINT_H_

#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/state_dict.h"

namespace dcp::tools {

struct LocalSaveOptions {
  // FileSystemWriterOptions::thread_count: writer threads (files) per rank.
  int thread_count = 1;
  // fsync data files, .metadata and the directory.
  bool sync_files = true;
  // Progress lines ("saving... 3/4 ranks done"); null for none.
  std::ostream* progress = nullptr;
  std::string progress_label = "saving";
};

// Saves `per_rank[r]` as rank r of a world of `per_rank.size()` ranks into
// the checkpoint directory `dir` (created if missing; an existing
// checkpoint is replaced). Returns the wall time of the collective save.
absl::StatusOr<absl::Duration> SaveOnLocalRanks(
    const std::vector<StateDict>& per_rank, const std::string& dir,
    const LocalSaveOptions& options = {});

struct LocalLoadOptions {
  // FileSystemReaderOptions::thread_count.
  int thread_count = 1;
  // FileSystemReaderOptions::verify_checksums.
  bool verify_checksums = true;
  std::ostream* progress = nullptr;
  std::string progress_label = "loading";
};

// Loads the checkpoint in `dir` into `per_rank[r]` (in place) as rank r of
// a world of `per_rank.size()` ranks. Returns the wall time of the
// collective load.
absl::StatusOr<absl::Duration> LoadOnLocalRanks(
    std::vector<StateDict>& per_rank, const std::string& dir,
    const LocalLoadOptions& options = {});

}  // namespace dcp::tools

#endif  // DCP_TOOLS_LOCAL_CHECKPOINT_H_
