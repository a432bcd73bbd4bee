// -----------------------------------------------------------------------------
// File: core/sharding.h
// -----------------------------------------------------------------------------
//
// Helpers that cut a full tensor into the `ShardedTensor` one rank holds, the
// way DTensor lays out `Shard(dim)` placements, and put the pieces back
// together. Used by tests, examples and tools to build sharded state dicts
// and the empty destinations a sharded load writes into.
//
// Chunking along one dimension of size `n` over `w` ranks follows
// `torch.chunk` and DTensor's `Shard._local_shard_size_on_dim`:
//
//   chunk  = ceil(n / w)
//   rank r holds [min(r * chunk, n), min((r + 1) * chunk, n))
//
// so 10 over 4 ranks gives lengths 3, 3, 3, 1, and 2 over 4 ranks gives
// 1, 1, 0, 0. Unlike `torch.chunk`, which returns fewer chunks, every rank
// gets a shard; trailing ranks may hold an EMPTY shard (length 0 along the
// dimension, offset `n`), exactly as DTensor gives such ranks an empty local
// tensor. Other dimensions are whole.
//
// A 2-D mesh of `rows` x `cols` ranks (rank = row * cols + col) chunks
// dimension 0 over the rows and dimension 1 over the columns, like a DTensor
// with placements (Shard(0), Shard(1)).
//
// Ownership: shards are contiguous CLONES of the source data, so each rank
// owns its local tensor and writing into it never touches `full`.
//
// Errors: InvalidArgument, naming the offending value, for world sizes
// below 1, ranks outside [0, world), dimensions out of range, sharding a 0-d
// tensor, negative global sizes and undefined tensors or dtypes.
//
// Thread safety: free functions; no shared state.
#ifndef DCP_CORE_SHARDING_H_
#define DCP_CORE_SHARDING_H_

#include <cstdint>
#include <vector>

#include "ATen/core/Tensor.h"
#include "absl/status/statusor.h"
#include "c10/core/ScalarType.h"
#include "core/metadata.h"
#include "core/state_dict.h"

namespace dcp {

// The box (global offsets and extent) that `rank` of `world_size` holds
// when a tensor of shape `global` is chunked along `dim`. `dim` may be
// negative (counted from the end, as in torch).
absl::StatusOr<ChunkStorageMetadata> ShardBoxAlongDim(const Shape& global,
                                                      int64_t dim, int rank,
                                                      int world_size);

// The box `rank` holds on a `rows` x `cols` mesh: dimension 0 chunked over
// rows, dimension 1 over columns. `global` must have at least 2 dimensions,
// and `rows` and `cols` must be at least 1 (InvalidArgument otherwise).
absl::StatusOr<ChunkStorageMetadata> ShardBoxGrid2D(const Shape& global,
                                                    int rank, int rows,
                                                    int cols);

// `rank`'s chunk of `full` along `dim`: a contiguous clone plus its global
// offsets (possibly an empty shard, see the file comment).
absl::StatusOr<Shard> ChunkShard(const at::Tensor& full, int64_t dim, int rank,
                                 int world_size);

// `rank`'s part of `full` sharded along `dim`: global size `full.sizes()`
// and exactly one local shard (ChunkShard's).
absl::StatusOr<ShardedTensor> ShardAlongDim(const at::Tensor& full, int64_t dim,
                                            int rank, int world_size);

// `rank`'s part of `full` on a `rows` x `cols` mesh: exactly one local shard.
absl::StatusOr<ShardedTensor> ShardGrid2D(const at::Tensor& full, int rank,
                                          int rows, int cols);

// Load destinations: the same layouts as ShardAlongDim / ShardGrid2D for a
// tensor of shape `global` and type `dtype`, with zero-filled contiguous
// CPU local shards.
absl::StatusOr<ShardedTensor> ZerosShardAlongDim(const Shape& global,
                                                 c10::ScalarType dtype,
                                                 int64_t dim, int rank,
                                                 int world_size);
absl::StatusOr<ShardedTensor> ZerosShardGrid2D(const Shape& global,
                                               c10::ScalarType dtype, int rank,
                                               int rows, int cols);

// Reassembles the full tensor from every rank's `ShardedTensor`, indexed by
// rank, as a new contiguous CPU tensor (the shards are only read). All must
// agree on the global size and all shards on the dtype.
// Boxes with identical offsets and sizes on several ranks are replicas: they
// are used once and must hold equal data. Empty shards cover nothing.
//
// Errors: InvalidArgument (naming rank and shard) if the input is empty,
// global sizes differ, a shard has the wrong rank of dimensions or lies
// outside the global tensor, dtypes differ, replicas differ, two different
// boxes overlap, or the boxes leave a gap; also if there is no shard at all
// to take the dtype from.
absl::StatusOr<at::Tensor> Unshard(const std::vector<ShardedTensor>& per_rank);

}  // namespace dcp

#endif  // DCP_CORE_SHARDING_H_
