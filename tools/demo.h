// -----------------------------------------------------------------------------
// File: tools/demo.h
// -----------------------------------------------------------------------------
//
// `dcp demo`: the whole library on one screen. Builds a model-like state
// dict (tools/model_state.h: transformer weights plus Adam state, param
// groups and counters), saves it with `save_ranks` simulated ranks, each
// holding a row shard of every tensor, into a checkpoint directory in
// PyTorch's DCP format, loads it back with `load_ranks` ranks in another
// layout (column or grid: every tensor is resharded), verifies every
// element and value, and prints
//
//   checkpoint: /tmp/dcp-demo-Ab12Cd
//   model: 2 layers, hidden 192, vocab 5000 (70 tensors, 8,838,070 elements)
//
//     files      5
//     bytes      33.79 MiB (35,432,960)
//     save time  0.105 s (4 ranks, row-sharded)
//     load time  0.061 s (3 ranks, column-sharded)
//     save rate  0.34 GB/s
//     load rate  0.58 GB/s
//
//   verified 70 tensors, 8,838,070 elements: OK
//
// Throughput is tensor bytes (not file bytes) per second, in decimal GB.
//
// Errors: InvalidArgument for bad options; any save, load or file-system
// error; DataLoss naming the rank and key if a loaded element or value
// differs from what was saved.
#ifndef DCP_TOOLS_DEMO_H_
#define DCP_TOOLS_DEMO_H_

#include <memory>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "distributed/process_group.h"
#include "tools/model_state.h"

namespace dcp::tools {

struct DemoOptions {
  // Checkpoint directory; empty creates a fresh one under $TMPDIR or /tmp
  // (left in place, so it can be inspected).
  std::string dir;
  int save_ranks = 4;
  int load_ranks = 3;
  // The layout of the load (the save is row-sharded).
  Layout load_layout = Layout::kColumns;
  ModelShape model;
  // Writer/reader threads per rank.
  int thread_count = 1;
  bool sync_files = true;
  // Progress lines while saving and loading; null for none.
  std::ostream* progress = nullptr;
};

// Runs the demo and prints its report to `out`.
absl::Status RunDemo(const DemoOptions& options, std::ostream& out);

// `dcp demo --distributed`: this process is rank `pg->rank()` of
// `pg->size()` (e.g. started by `dcp launch` or torchrun, with the group
// from `C10dProcessGroup::CreateFromEnv()`). Collective: every rank saves
// its row shard of the model into `options.dir` (required: a directory
// every rank sees), then loads it back with the same world size in
// `options.load_layout` (resharding) and verifies every element; rank 0
// prints the table to `out`, the other ranks print nothing.
// `save_ranks`/`load_ranks` are ignored. Errors: InvalidArgument without a
// dir; the checkpoint's errors; Internal naming the rank whose
// verification failed (on every rank).
absl::Status RunDistributedDemo(const DemoOptions& options,
                                std::shared_ptr<ProcessGroup> pg,
                                std::ostream& out);

}  // namespace dcp::tools

#endif  // DCP_TOOLS_DEMO_H_
