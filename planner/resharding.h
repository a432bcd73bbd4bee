// -----------------------------------------------------------------------------
// File: planner/resharding.h
// -----------------------------------------------------------------------------
//
// Box arithmetic for loading a tensor saved in one layout into another
// (PyTorch 2.6's `torch.distributed.checkpoint.resharding`,
// pytorch-dcp-format.md §5.6). A load planner describes the destination as
// a list of local chunks (global offsets and extents); every saved chunk that
// overlaps a local chunk yields one `ReadItem` copying the intersection.
//
// Example: saved chunks [0, 8) and [8, 16), local chunk [4, 11):
//
//   CreateReadItemsForChunkList("w", saved, {{{4}, {7}}})
//     -> {storage [0] idx 0, storage_offsets {4}, dest_offsets {0}, lengths
//     {4}}
//        {storage [8] idx 1, storage_offsets {0}, dest_offsets {4}, lengths
//        {3}}
//
// Thread safety: pure functions.
#ifndef DCP_PLANNER_RESHARDING_H_
#define DCP_PLANNER_RESHARDING_H_

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "checkpoint/metadata.h"
#include "planner/load_plan.h"

namespace dcp {

// True if the boxes `a` and `b` share at least one element position: in
// every dimension d, neither box starts at or after the other's end
// (Python's `_check_shard_metadata_pair_overlap`). Two 0-d boxes overlap
// (vacuously), as in Python. A box with a zero (or negative) extent overlaps
// nothing; Python agrees except for an empty box strictly inside another
// one, which it calls overlapping (harmless there: such boxes only yield
// zero-length read items, and DTensor puts empty shards at the end of the
// dimension). Boxes of different rank (or with offsets and sizes of
// different lengths) never overlap. Offset arithmetic saturates, so corrupt
// values cannot overflow.
bool ChunksOverlap(const ChunkStorageMetadata& a,
                   const ChunkStorageMetadata& b);

// The read items that fill `local_chunks` (the destination's boxes of the
// tensor `fqn`, in global coordinates) from the saved chunks of `saved`,
// exactly as Python's `create_read_items_for_chunk_list`: for each local
// chunk L (position li) and each overlapping saved chunk S (position si), in
// that nesting order, one kTensor item with
//   dest_index      = MetadataIndex(fqn, L.offsets, li)
//   dest_offsets    = start of the intersection relative to L
//   storage_index   = MetadataIndex(fqn, S.offsets, si)
//   storage_offsets = start of the intersection relative to S
//   lengths         = extent of the intersection.
// A 0-d tensor (one chunk with empty offsets) yields one item with empty
// offsets and lengths. Parts of a local chunk that no saved chunk covers get
// no item; see `CheckReadItemsCoverChunk` to detect that.
//
// Cost: O(local chunks x saved chunks).
std::vector<ReadItem> CreateReadItemsForChunkList(
    const std::string& fqn, const TensorStorageMetadata& saved,
    const std::vector<ChunkStorageMetadata>& local_chunks);

// Pairs (i, j), i < j, of positions in `chunks` whose boxes overlap, at most
// `max_pairs` of them (all pairs are found when fewer exist). Boxes with a
// zero extent and boxes whose rank differs from `chunks[0]`'s are ignored.
// The result is sorted.
//
// Cost: a sort-and-sweep along the dimension with the most distinct start
// offsets, so row-, column- and grid-sharded layouts cost about
// O(n log n + n * boxes per slab); only pathological layouts approach
// O(n^2).
std::vector<std::pair<size_t, size_t>> FindOverlappingChunks(
    const std::vector<ChunkStorageMetadata>& chunks, size_t max_pairs);

// Checks that `items` (read items of the tensor `fqn`, as returned by
// `CreateReadItemsForChunkList` for `local_chunks`) fill every local chunk
// exactly once: the boxes read into each chunk do not overlap and their
// volumes add up to the chunk's volume. Items whose `dest_index.index` is
// not a valid position in `local_chunks` are ignored.
//
// Errors: DataLoss naming `fqn` and the chunk, if part of a local chunk is
// covered by no saved chunk (`checkpoint holds 12 of the 16 elements of
// "w" chunk [0, 0]+[4, 4]`), or by more than one (overlapping saved
// chunks, which a valid checkpoint never has).
absl::Status CheckReadItemsCoverChunks(
    const std::string& fqn,
    const std::vector<ChunkStorageMetadata>& local_chunks,
    const std::vector<ReadItem>& items);

}  // namespace dcp

#endif  // DCP_PLANNER_RESHARDING_H_
