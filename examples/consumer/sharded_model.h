// A user's library: a toy model whose embedding table is row-sharded over
// the ranks of a job, saved and loaded with dcp's Checkpointer into a
// directory in PyTorch's DCP format. It stands for the code a project
// writes around dcp; the tests beside it show how such code is tested.
#ifndef DCP_CONSUMER_EXAMPLE_SHARDED_MODEL_H_
#define DCP_CONSUMER_EXAMPLE_SHARDED_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/metadata.h"
#include "core/state_dict.h"
#include "distributed/process_group.h"

namespace consumer {

struct ModelConfig {
  int64_t vocab = 10;
  int64_t dim = 4;
};

// The state of `rank` of `world_size`:
//   "embedding"  ShardedTensor [vocab, dim], this rank's rows
//                (dcp::ShardAlongDim), float32, element (r, c) = 100 r + c;
//   "bias"       float32 [dim], replicated, element c = 0.5 c;
//   "step"       int64 `step`.
// With `zeros`, tensors are zero-filled and step is 0: a load destination.
absl::StatusOr<dcp::StateDict> MakeModelState(const ModelConfig& config,
                                              int rank, int world_size,
                                              int64_t step, bool zeros);

// Saves `state` into `dir` (created if missing). Collective over `group`:
// every rank calls it with its own state. Errors: those of
// dcp::Checkpointer::Save, the same on every rank.
absl::StatusOr<dcp::Metadata> SaveModel(
    const std::string& dir, std::shared_ptr<dcp::ProcessGroup> group,
    const dcp::StateDict& state);

// Loads `dir` into `state` in place, whatever the world size that saved
// it. Collective over `group`.
absl::Status LoadModel(const std::string& dir,
                       std::shared_ptr<dcp::ProcessGroup> group,
                       dcp::StateDict& state);

}  // namespace consumer

#endif  // DCP_CONSUMER_EXAMPLE_SHARDED_MODEL_H_
