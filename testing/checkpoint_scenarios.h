// -----------------------------------------------------------------------------
// File: testing/checkpoint_scenarios.h
// -----------------------------------------------------------------------------
//
// End-to-end checkpoint scenarios written once against `ProcessGroup`, so
// the same bodies run on the simulator (threads, FakeWorld) and on real
// multi-process c10d groups.
//
// The model: a state dict like a small training job's, with row, column
// and 2-D grid sharded tensors, replicated tensors (including 0-d and empty
// ones), every common dtype, an optimizer-style nested dict with a list of
// param groups, and non-tensor values. Every tensor's full value is a pure
// function of its key, so any rank of any world size can build exactly its
// part, and check exactly its part after a load.
//
// `ModelLayout::kSave` and `kLoad` shard the same tensors differently (rows
// vs columns, grids vs rows), so a save in one and a load in the other
// reshards every sharded tensor.
#ifndef DCP_TESTING_CHECKPOINT_SCENARIOS_H_
#define DCP_TESTING_CHECKPOINT_SCENARIOS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/state_dict.h"

namespace dcp::test {

enum class ModelLayout { kSave, kLoad };

// Rank `rank` of `world_size`'s part of the model in `layout`, with the
// true values (`ModelValues::kTrue`) or with zero tensors and placeholder
// non-tensor values (`kPlaceholder`, a load destination).
enum class ModelValues { kTrue, kPlaceholder };
absl::StatusOr<StateDict> MakeModelStateDict(int rank, int world_size,
                                             ModelLayout layout,
                                             ModelValues values,
                                             int value_seed = 0);

// OK if `loaded` equals MakeModelStateDict(rank, world_size, layout, kTrue,
// value_seed); otherwise an Internal error describing the first mismatch.
absl::Status CheckModelStateDict(const StateDict& loaded, int rank,
                                 int world_size, ModelLayout layout,
                                 int value_seed = 0);

// The rows x cols mesh used for 2-D sharding of `world_size` ranks.
void GridShape(int world_size, int* rows, int* cols);

}  // namespace dcp::test

#endif  // DCP_TESTING_CHECKPOINT_SCENARIOS_H_
