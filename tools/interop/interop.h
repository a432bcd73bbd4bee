// -----------------------------------------------------------------------------
// File: tools/interop/interop.h
// -----------------------------------------------------------------------------
//
// The dcp side of the interop tests with real PyTorch 2.6 (tools/peer/): save
// one of dcp_peer.py's cases with N simulated ranks, or load a checkpoint
// (written by PyTorch or by dcp) with M simulated ranks into the case's
// layout for M ranks and compare every element and value with the formula
// values (testing/peer_cases.h).
//
//   InteropOptions options;
//   options.dir = "/tmp/x/ckpt";
//   options.world_size = 3;
//   options.case_name = "mixed";
//   DCP_ASSIGN_OR_RETURN(LoadReport report, LoadCase(options));
//   for (const std::string& line : report.diffs) std::cout << line << "\n";
//
// Ranks are threads of one process (testing/simulator.h, free scheduling);
// each rank has its own FileSystemWriter / FileSystemReader on `dir` and
// runs dcp::Save / dcp::Load (checkpoint/save_load.h) with its rank of the
// simulated process group, so the on-disk result is what N real processes
// would produce.
//
// Errors: InvalidArgument for bad options or unknown cases; whatever Save or
// Load returns (the same status on every rank; the first failing rank's is
// returned). Element differences are not errors: they are in `LoadReport`.
//
// Thread safety: each call starts and joins its own rank threads.
#ifndef DCP_TOOLS_INTEROP_INTEROP_H_
#define DCP_TOOLS_INTEROP_INTEROP_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace dcp::tools {

struct InteropOptions {
  // The checkpoint directory.
  std::string dir;
  // Number of simulated ranks.
  int world_size = 1;
  // A case of testing/peer_cases.h (dcp_peer.py's names).
  std::string case_name;
  // Save only: FileSystemWriterOptions of every rank's writer.
  int thread_count = 1;
  bool single_file_per_rank = true;
  // Load only: also check `.metadata` (keys, dtypes, sizes, chunks,
  // planner_data), as dcp_peer.py's check_metadata does.
  bool check_metadata = true;
  // Deadline of each collective.
  absl::Duration collective_timeout = absl::Seconds(120);
  // Element differences listed per leaf and rank.
  int max_diffs_per_key = 10;
};

// Saves `case_name` (PeerValues::kTrue) from `world_size` simulated ranks
// into `dir`.
absl::Status SaveCase(const InteropOptions& options);

struct LoadReport {
  // Leaves of the case.
  int leaves = 0;
  // Every difference, in rank order: "[rank r] <what differs>", then
  // "metadata: ..." lines from the `.metadata` check. Empty if all equal.
  std::vector<std::string> diffs;
};

// Loads `dir` with `world_size` simulated ranks into the case's destination
// layout and compares (see the file comment).
absl::StatusOr<LoadReport> LoadCase(const InteropOptions& options);

}  // namespace dcp::tools

#endif  // DCP_TOOLS_INTEROP_INTEROP_H_
