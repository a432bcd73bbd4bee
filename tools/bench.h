// -----------------------------------------------------------------------------
// File: tools/bench.h
// -----------------------------------------------------------------------------
//
// `dcp bench`: save and load throughput of FileSystemWriter/Reader with
// simulated ranks, on the model of tools/model_state.h scaled to about
// `size_mb` MiB of tensors. For every combination of `thread_counts` and
// `fsync_modes` it measures
//
//   save      world_size ranks, row-sharded, into a fresh directory
//   load      world_size ranks, the same layout
//   reshard   (with `reshard`) reshard_world_size ranks, column-sharded:
//             every tensor is read in boxes that cross the saved chunks
//
// and prints one table row per case:
//
//   case     ranks  threads  fsync  layout  MiB     seconds  GB/s
//   save         4        1  on     row     255.9     0.812  0.33
//   load         4        1  on     row     255.9     0.301  0.89
//   reshard      3        1  on     column  255.9     0.402  0.67
//
// GB/s is decimal gigabytes of tensor data per second. Every load is
// verified against the saved values (outside the timing). With
// `cold_cache`, the data files are dropped from the page cache
// (fsync + posix_fadvise DONTNEED) before each load, so loads read from the
// device; otherwise loads right after the save read from the page cache.
// Each case's directory is removed afterwards.
//
// Errors: InvalidArgument for bad options; save, load, verification and
// file-system errors.
#ifndef DCP_TOOLS_BENCH_H_
#define DCP_TOOLS_BENCH_H_

#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace dcp::tools {

struct BenchOptions {
  // Approximate tensor data, in MiB.
  int64_t size_mb = 256;
  int world_size = 4;
  // Writer/reader threads per rank; one set of cases per entry.
  std::vector<int> thread_counts = {1};
  // fsync on save; one set of cases per entry.
  std::vector<bool> fsync_modes = {true};
  // Also load with another world size and layout.
  bool reshard = true;
  // World size of the resharded load; 0 means world_size - 1 (or 2 when
  // world_size is 1).
  int reshard_world_size = 0;
  // Drop the checkpoint files from the page cache before each load.
  bool cold_cache = false;
  // Where the case directories go; empty uses a fresh directory under
  // $TMPDIR or /tmp, removed at the end.
  std::string dir;
  // Progress lines; null for none.
  std::ostream* progress = nullptr;
};

absl::Status RunBench(const BenchOptions& options, std::ostream& out);

}  // namespace dcp::tools

#endif  // DCP_TOOLS_BENCH_H_
