// -----------------------------------------------------------------------------
// File: planner/resharding.h
// -----------------------------------------------------------------------------
//
// Box arithmetic for loading a tensor saved in one layout into another
// (PyTorch 2.6's `torch.distributed.checkpoint.resharding`,
// docs/format.md §5.6). A load planner describes the destination as
// a list of local chunks (global offsets and extents); every saved chunk that
// overlaps a local chunk yields one `ReadItem` copying the intersection.
//
// Example: saved chunks [0, 8) and [8, 16), local chunk [4, 11):
//
//   CreateReadItemsForChunkList("w", saved, {{{4}, {7}}})
//     -> {storage [0] idx 0, storage_offsets {4}, dest_offsets {0},
//         lengths {4}}
//        {storage [8] idx 1, storage_offsets {0}, dest_offsets {4},
//         lengths {3}}
//
// For many local chunks, or many ranks reading the same checkpoint, build a
// `SavedChunkIndex` of the saved chunks once (or an `IndexedMetadata` of the
// whole checkpoint, which the load planners of all ranks can share) and pass
// it in: each local chunk then costs O(log S + the saved chunks it meets)
// instead of O(S).
//
// Thread safety: the free functions are pure; `SavedChunkIndex` and
// `IndexedMetadata` are immutable once built, so const use from many threads
// is safe.
#ifndef DCP_PLANNER_RESHARDING_H_
#define DCP_PLANNER_RESHARDING_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/metadata.h"
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

// An index of a tensor's saved chunks (one `TensorStorageMetadata::chunks`
// list) that finds the chunks overlapping a box without looking at the
// others.
//
// Chunks are grouped by rank (number of dimensions); within a group, those
// with elements are sorted by their start along the "sweep" dimension, the
// one where they start at the most distinct offsets (rows for row sharding,
// columns for column sharding). A query binary-searches the chunks that
// start before the box ends, then visits only those of them that end after
// the box starts (walking back from the end of that prefix when, as in any
// tiling, ends ascend with starts; else descending a max-end tree) and
// applies `ChunksOverlap`'s test to each.
//
// Up to 8 chunks are simply scanned (no index is built), and so are any
// chunks given to a default-constructed index.
//
// Cost: building is O(ndim x S log S) time and O(S) memory for S chunks. A
// query is O(log S + c + k log k) when ends ascend (O((c + 1) log S + k log
// k) otherwise) for k results, where c >= k is the number of chunks meeting
// the box along the sweep dimension: c = k for row or column sharding; for
// an R x C grid swept along rows, c is the C chunks of each row band the
// box meets.
//
// The index holds positions, not chunks: queries take the same `chunks` the
// index was built from, unchanged.
class SavedChunkIndex {
 public:
  // An index that scans: FindOverlapping checks every chunk it is given
  // (any vector), in O(S).
  SavedChunkIndex() = default;
  explicit SavedChunkIndex(const std::vector<ChunkStorageMetadata>& chunks);

  // The positions in `chunks` (which must be the vector the index was built
  // from, unless default-constructed) of the chunks that overlap `box`
  // (`ChunksOverlap(box, chunk)`), ascending.
  std::vector<size_t> FindOverlapping(
      const std::vector<ChunkStorageMetadata>& chunks,
      const ChunkStorageMetadata& box) const;
  // The same positions, in `*found` (cleared first): no heap allocation
  // for up to 8 of them.
  void FindOverlapping(const std::vector<ChunkStorageMetadata>& chunks,
                       const ChunkStorageMetadata& box,
                       absl::InlinedVector<size_t, 8>* found) const;

  // The number of chunks the index was built from (0 if default-built).
  size_t size() const { return size_; }

 private:
  // The chunks with elements of one rank.
  struct Group {
    size_t ndim = 0;
    size_t sweep_dim = 0;
    // Positions sorted by (start along sweep_dim, position), and in that
    // order: the starts and (saturated) ends along sweep_dim, and each
    // chunk's box as (offset, end) per dimension, so that queries read
    // contiguous memory instead of the chunks' vectors.
    std::vector<size_t> order;
    std::vector<int64_t> starts;
    std::vector<int64_t> ends;
    std::vector<int64_t> bounds;
    // Whether `ends` ascends. If not: a complete binary tree (`leaves`
    // leaves, node 1 the root) of the largest end below each node.
    bool ends_sorted = false;
    std::vector<int64_t> max_end;
    size_t leaves = 0;
  };

  size_t size_ = 0;
  bool scan_ = true;           // no groups: scan the chunks
  std::vector<Group> groups_;  // by ndim, ascending
};

// A checkpoint's Metadata with a `SavedChunkIndex` of every tensor entry of
// more than 8 chunks: what load planning reads. Built once, then shared
// read-only by the load planners of any number of ranks
// (DefaultLoadPlanner::SetUpShared, planner/lockstep.h), so that no rank
// copies or scans the whole Metadata.
//
// Cost: construction is O(total chunks x log) time and keeps the Metadata
// plus O(chunks) of index for each tensor of more than 8 chunks; Find is a
// std::map lookup plus a hash lookup.
class IndexedMetadata {
 public:
  // One state_dict_metadata entry: `storage` is null if the key is absent;
  // `chunk_index` indexes a tensor entry's chunks (a scanning index for
  // bytes entries and tensors of at most 8 chunks).
  struct Entry {
    const StorageMetadata* storage = nullptr;
    const SavedChunkIndex* chunk_index = nullptr;
  };

  // Indexes `metadata`, which it keeps.
  explicit IndexedMetadata(Metadata metadata);
  // Indexes `*metadata` in place, sharing it (CHECK-fails if null). A
  // caller that knows the Metadata outlives this object may pass a
  // non-owning pointer
  // (`std::shared_ptr<const Metadata>(std::shared_ptr<void>(), &md)`).
  explicit IndexedMetadata(std::shared_ptr<const Metadata> metadata);
  IndexedMetadata(const IndexedMetadata&) = delete;
  IndexedMetadata& operator=(const IndexedMetadata&) = delete;

  const Metadata& metadata() const { return *metadata_; }

  // The entry of key `fqn` (storage null if the checkpoint has no such
  // key). O(log keys).
  Entry Find(const std::string& fqn) const;

 private:
  std::shared_ptr<const Metadata> metadata_;
  // Indexes of the tensors with more chunks than are scanned; keys view
  // metadata_->state_dict_metadata's.
  absl::flat_hash_map<absl::string_view, SavedChunkIndex> indexes_;
};

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
// no item; see `CheckReadItemsCoverChunks` to detect that.
//
// Cost: builds a `SavedChunkIndex` of `saved.chunks`, O(S log S), then as
// the overload below.
std::vector<ReadItem> CreateReadItemsForChunkList(
    const std::string& fqn, const TensorStorageMetadata& saved,
    const std::vector<ChunkStorageMetadata>& local_chunks);

// As above with a prebuilt `index` of `saved.chunks`; same items, same
// order. Cost: one `SavedChunkIndex::FindOverlapping` per local chunk plus
// O(ndim) per item.
std::vector<ReadItem> CreateReadItemsForChunkList(
    const std::string& fqn, const TensorStorageMetadata& saved,
    const SavedChunkIndex& index,
    const std::vector<ChunkStorageMetadata>& local_chunks);

// As above, appending the items to `*items` (which may already hold
// others) instead of returning a new vector.
void AppendReadItemsForChunkList(
    const std::string& fqn, const TensorStorageMetadata& saved,
    const SavedChunkIndex& index,
    const std::vector<ChunkStorageMetadata>& local_chunks,
    std::vector<ReadItem>* items);

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
//
// Cost: O(items) without allocating when `items` are grouped by
// destination chunk in ascending order (as CreateReadItemsForChunkList
// returns them), plus an overlap search among the items of each chunk
// (pairwise for up to 8 items, else FindOverlappingChunks).
absl::Status CheckReadItemsCoverChunks(
    const std::string& fqn,
    const std::vector<ChunkStorageMetadata>& local_chunks,
    absl::Span<const ReadItem> items);

}  // namespace dcp

#endif  // DCP_PLANNER_RESHARDING_H_
