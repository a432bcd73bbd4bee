// -----------------------------------------------------------------------------
// File: planner/plan_validation.h
// -----------------------------------------------------------------------------
//
// Checks that the chunks recorded for every tensor of a global `Metadata`
// tile the tensor exactly once: PyTorch 2.6's `_validate_global_plan`
// (docs/format.md §5.4 step 4), run by the default save planner on
// the coordinator before anything is written.
//
// For every tensor entry whose size has at least one dimension (0-d tensors
// are skipped, as in Python):
//   * each chunk has the tensor's rank and lies in bounds:
//     offsets >= 0, sizes >= 0, offset + size <= dimension size;
//   * no two chunks overlap (see `ChunksOverlap`);
//   * the chunk volumes add up to the tensor's volume.
// Together these mean every element is saved exactly once.
//
// Python logs each violation and raises "Failed to validate global plan";
// dcp returns one status listing them all, each naming its key:
//
//   invalid global plan: "model.w": chunks [0, 0]+[2, 4] and [1, 0]+[2, 4]
//   overlap; "model.b": chunks cover 6 of 8 elements
//
// Cost: O(n log n) per tensor of n chunks for the usual row, column and grid
// layouts (see `FindOverlappingChunks`), not Python's O(n^2).
//
// Thread safety: pure functions.
#ifndef DCP_PLANNER_PLAN_VALIDATION_H_
#define DCP_PLANNER_PLAN_VALIDATION_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "core/metadata.h"

namespace dcp {

// Appends to `problems` one message per violation found in the tensor
// `fqn`, each starting with the quoted key (`"model.b": chunks cover 6 of 8
// elements`). At most a few overlapping pairs are reported per tensor.
void AppendTensorChunkProblems(absl::string_view fqn,
                               const TensorStorageMetadata& tensor,
                               std::vector<std::string>* problems);

// OK if every tensor entry of `metadata.state_dict_metadata` is tiled
// exactly once by its chunks; bytes entries are not checked.
//
// Errors: InvalidArgument "invalid global plan: <problem>; <problem>..."
// listing the problems in key order (at most 20, then a count of the rest).
absl::Status ValidateGlobalMetadata(const Metadata& metadata);

// Checks a `Metadata` read from storage, before a load plans or writes
// anything from it: a corrupt or hand-edited `.metadata` must not make
// parallel reads write the same destination bytes, or read outside a saved
// tensor. For every tensor entry:
//   * its size has no negative dimension;
//   * each chunk has the tensor's rank (a 0-d tensor's chunks have empty
//     offsets and sizes) and lies inside it: offsets >= 0, sizes >= 0,
//     offset + size <= dimension size;
//   * no two chunks overlap (`ChunksOverlap`; two 0-d chunks overlap);
//   * each chunk with elements has a `storage_data` entry (fqn, offsets);
// every bytes entry has a `storage_data` entry (fqn, no offset); and every
// `storage_data` entry has a non-negative offset and length. Entries of
// `storage_data` that nothing refers to are ignored.
//
// Gaps are not errors here: a checkpoint may hold part of a tensor (a
// custom save planner's choice), and a load may ask for less than all of
// it. The load planner checks that the saved chunks cover every box a load
// asks for (`CheckReadItemsCoverChunks`, planner/resharding.h).
//
// Errors: DataLoss "invalid checkpoint metadata: <problem>; <problem>..."
// in key order (at most 20, then a count of the rest), each problem naming
// the key and the chunks, with the files holding them:
//
//   invalid checkpoint metadata: "w": chunks [0, 0]+[3, 4] (in
//   __0_0.distcp) and [2, 0]+[2, 4] (in __1_0.distcp) overlap
//
// Cost: as `ValidateGlobalMetadata`, plus O(log n) per chunk to find its
// storage entry. Deterministic: the same `metadata` gives the same status.
absl::Status ValidateCheckpointMetadata(const Metadata& metadata);

}  // namespace dcp

#endif  // DCP_PLANNER_PLAN_VALIDATION_H_
