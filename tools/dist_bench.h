// -----------------------------------------------------------------------------
// File: tools/dist_bench.h
// -----------------------------------------------------------------------------
//
// `dcp bench --distributed`: one rank of a multi-process benchmark, the dcp
// side of tools/peer/bench_side_by_side.sh (which runs the same workloads
// with PyTorch 2.6 and prints both). Every rank of a job started by
// `dcp launch` (or torchrun) runs
//
//   dcp bench --distributed --workload=save --dir=D
//       --tensors=16 --rows=4096 --cols=4096 --layout=row  (one line)
//
// with its process group from `C10dProcessGroup::CreateFromEnv()`.
//
// The state dict is {"model": {"t<i>": tensor i}} for i in [0, tensors):
// float32 tensors of shape [rows, cols] whose element (r, c) of tensor i is
//
//   float((i * 7919 + r * cols + c) mod 65521)
//
// (exact in float32; tools/peer/dcp_peer_bench.py builds the same values).
// Layouts over a world of W ranks:
//   kRows        every tensor row-sharded over all ranks (torch.chunk and
//                DTensor Shard(0) boxes, core/sharding.h)
//   kRoundRobin  whole tensors; rank r holds tensor i iff i % W == r
//
// Workloads (each one round, all ranks together):
//   kSave       Checkpointer::Save with FileSystemWriter (`sync_files`,
//               `thread_count`) into `dir`
//   kLoad       Checkpointer::Load with FileSystemReader (`verify_checksums`,
//               `thread_count`) from `dir` into zero-filled destinations of
//               this world's layout (any saved world size: a resharded
//               load), then, untimed, checks every element in blocks of a
//               few rows (so the check adds little to peak memory)
//   kAsyncSave  two Checkpointer::AsyncSave calls into `dir`, each waited
//               for: the first forks the background communicator and
//               allocates the staging buffers (`first_return_seconds`); the
//               second, the steady state of a training loop, copies into
//               the first one's buffers and is the one timed until it
//               returns; then the time until its future is done, and then
//               the time of a memcpy of this rank's tensor bytes into
//               touched buffers, all ranks at once
//   kMemcpy     only that memcpy of this rank's tensor bytes
//
// Timing: the ranks meet in a barrier, each times its part from there, and
// the figure of the round is the slowest rank's time (the whole collective
// operation from the barrier until the last rank is done). Building the
// state dict and checking values are not timed.
//
// Output (machine-readable, one line each, `key=value` fields separated by
// single spaces, seconds as decimals, bytes as integers):
//
//   dcp_bench_rank workload=save rank=1 world=4 seconds=0.812300
//   bytes=268435456 max_rss_kb=301234 start_rss_kb=169000 dcp_bench
//   workload=save world=4 seconds=0.830100 bytes=1073741824 max_rss_kb=305000
//   start_rss_kb=169500
//
// Every rank prints its `dcp_bench_rank` line: its own time and tensor
// bytes, its peak resident set size (getrusage; for kLoad taken right after
// the load, before the value check) and that peak before the state dict
// was built (the process's baseline: libtorch, the process group). Rank 0
// then prints the `dcp_bench` line: the maximum over the ranks of seconds
// and of both RSS figures, and the sum of bytes. Fields may be added;
// parsers should look fields up by name. kAsyncSave adds
// `first_return_seconds=`, `complete_seconds=` (until the second future was
// done) and `memcpy_seconds=` to both lines; for it, `seconds` is the time
// until the second AsyncSave returned.
//
// Errors: InvalidArgument for bad options (no dir, sizes below 1); any
// save, load or collective error; DataLoss naming the rank, tensor and row
// block if a loaded element differs.
//
// Thread safety: call from the rank's one thread.
#ifndef DCP_TOOLS_DIST_BENCH_H_
#define DCP_TOOLS_DIST_BENCH_H_

#include <cstdint>
#include <memory>
#include <ostream>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "distributed/process_group.h"

namespace dcp::tools {

enum class DistBenchWorkload { kSave, kLoad, kAsyncSave, kMemcpy };
// "save", "load", "async_save", "memcpy".
absl::string_view DistBenchWorkloadName(DistBenchWorkload workload);
absl::StatusOr<DistBenchWorkload> ParseDistBenchWorkload(
    absl::string_view name);

enum class DistBenchLayout { kRows, kRoundRobin };
// "row", "round_robin".
absl::string_view DistBenchLayoutName(DistBenchLayout layout);
absl::StatusOr<DistBenchLayout> ParseDistBenchLayout(absl::string_view name);

struct DistBenchOptions {
  DistBenchWorkload workload = DistBenchWorkload::kSave;
  // Checkpoint directory every rank sees; required except for kMemcpy.
  std::string dir;
  int64_t tensors = 16;
  int64_t rows = 4096;
  int64_t cols = 4096;
  DistBenchLayout layout = DistBenchLayout::kRows;
  // Writer/reader threads per rank.
  int thread_count = 1;
  // kSave, kAsyncSave: fsync data files, .metadata and the directory.
  bool sync_files = true;
  // kLoad: check the CRC-32 of every record read.
  bool verify_checksums = true;
  // kLoad: check every loaded element (untimed).
  bool check_values = true;
  absl::Duration collective_timeout = absl::Minutes(10);
};

// Runs one round of `options.workload` as rank `pg->rank()` of `pg->size()`
// and prints the lines described above to `out`.
absl::Status RunDistributedBench(const DistBenchOptions& options,
                                 std::shared_ptr<ProcessGroup> pg,
                                 std::ostream& out);

}  // namespace dcp::tools

#endif  // DCP_TOOLS_DIST_BENCH_H_
