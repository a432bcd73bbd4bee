#include "core/sharding.h"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "ATen/ATen.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/metadata.h"
#include "core/state_dict.h"
#include "core/status.h"
#include "core/torch_status.h"

namespace dcp {
namespace {

std::string BoxString(const ChunkStorageMetadata& box) {
  return absl::StrCat("offsets ", FormatShape(box.offsets), " sizes ",
                      FormatShape(box.sizes));
}

absl::Status ValidateWorld(int rank, int64_t world_size,
                           absl::string_view what) {
  if (world_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " must be at least 1, got ", world_size));
  }
  if (rank < 0 || rank >= world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", rank, " is out of range [0, ", world_size,
                     ") for ", what, " ", world_size));
  }
  return absl::OkStatus();
}

absl::Status ValidateShape(const Shape& global) {
  for (int64_t size : global) {
    if (size < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "global size ", FormatShape(global), " has a negative dimension"));
    }
  }
  return absl::OkStatus();
}

// Python's dim wrapping: -1 is the last dimension.
absl::StatusOr<int64_t> NormalizeDim(const Shape& global, int64_t dim) {
  const auto ndim = static_cast<int64_t>(global.size());
  if (ndim == 0) {
    return absl::InvalidArgumentError("cannot shard a 0-d tensor");
  }
  if (dim < -ndim || dim >= ndim) {
    return absl::InvalidArgumentError(
        absl::StrCat("dim ", dim, " is out of range for a ", ndim,
                     "-d tensor of shape ", FormatShape(global)));
  }
  return dim < 0 ? dim + ndim : dim;
}

// DTensor's `Shard._local_shard_size_on_dim`: (offset, length) of `index`'s
// chunk when `size` is split into `count` chunks of ceil(size / count).
std::pair<int64_t, int64_t> ChunkRange(int64_t size, int index, int count) {
  const int64_t chunk = size / count + (size % count != 0 ? 1 : 0);
  // min(chunk * index, size) and min(chunk, size - start), without overflow.
  const int64_t start =
      (chunk == 0 || index > size / chunk) ? size : chunk * index;
  return {start, std::min(chunk, size - start)};
}

absl::StatusOr<Shard> CloneBox(const at::Tensor& full,
                               const ChunkStorageMetadata& box) {
  DCP_ASSIGN_OR_RETURN(at::Tensor local, TorchCall("cloning shard", [&] {
                         at::Tensor view = full;
                         for (size_t d = 0; d < box.offsets.size(); ++d) {
                           view = view.narrow(static_cast<int64_t>(d),
                                              box.offsets[d], box.sizes[d]);
                         }
                         return view.clone(at::MemoryFormat::Contiguous);
                       }));
  return Shard{std::move(local), box.offsets};
}

absl::Status ValidateTensor(const at::Tensor& full) {
  if (!full.defined()) {
    return absl::InvalidArgumentError("cannot shard an undefined tensor");
  }
  return absl::OkStatus();
}

absl::Status ValidateDtype(c10::ScalarType dtype) {
  if (dtype == c10::ScalarType::Undefined ||
      static_cast<int>(dtype) < 0 ||
      static_cast<int>(dtype) >=
          static_cast<int>(c10::ScalarType::NumOptions)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid dtype ", static_cast<int>(dtype), " for a shard"));
  }
  return absl::OkStatus();
}

absl::StatusOr<ShardedTensor> ZerosForBox(const Shape& global,
                                          c10::ScalarType dtype,
                                          const ChunkStorageMetadata& box) {
  DCP_RETURN_IF_ERROR(ValidateDtype(dtype));
  DCP_ASSIGN_OR_RETURN(
      at::Tensor local,
      TorchCall("allocating shard", [&] {
        return at::zeros(box.sizes, at::TensorOptions().dtype(dtype));
      }));
  return ShardedTensor{global, {Shard{std::move(local), box.offsets}}};
}

bool BoxesOverlap(const ChunkStorageMetadata& a,
                  const ChunkStorageMetadata& b) {
  for (size_t d = 0; d < a.offsets.size(); ++d) {
    if (a.offsets[d] + a.sizes[d] <= b.offsets[d] ||
        b.offsets[d] + b.sizes[d] <= a.offsets[d]) {
      return false;
    }
  }
  return true;
}

}  // namespace

absl::StatusOr<ChunkStorageMetadata> ShardBoxAlongDim(const Shape& global,
                                                      int64_t dim, int rank,
                                                      int world_size) {
  DCP_RETURN_IF_ERROR(ValidateWorld(rank, world_size, "world size"));
  DCP_RETURN_IF_ERROR(ValidateShape(global));
  DCP_ASSIGN_OR_RETURN(const int64_t d, NormalizeDim(global, dim));
  ChunkStorageMetadata box{Shape(global.size(), 0), global};
  std::tie(box.offsets[d], box.sizes[d]) =
      ChunkRange(global[d], rank, world_size);
  return box;
}

absl::StatusOr<ChunkStorageMetadata> ShardBoxGrid2D(const Shape& global,
                                                    int rank, int rows,
                                                    int cols) {
  if (rows < 1 || cols < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "mesh shape must be at least 1 x 1, got ", rows, " x ", cols));
  }
  DCP_RETURN_IF_ERROR(
      ValidateWorld(rank, int64_t{rows} * cols, "a mesh of size"));
  DCP_RETURN_IF_ERROR(ValidateShape(global));
  if (global.size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("a 2-D mesh needs a tensor of at least 2 dimensions, got "
                     "shape ",
                     FormatShape(global)));
  }
  ChunkStorageMetadata box{Shape(global.size(), 0), global};
  std::tie(box.offsets[0], box.sizes[0]) =
      ChunkRange(global[0], rank / cols, rows);
  std::tie(box.offsets[1], box.sizes[1]) =
      ChunkRange(global[1], rank % cols, cols);
  return box;
}

absl::StatusOr<Shard> ChunkShard(const at::Tensor& full, int64_t dim,
                                 int rank, int world_size) {
  DCP_RETURN_IF_ERROR(ValidateTensor(full));
  DCP_ASSIGN_OR_RETURN(
      ChunkStorageMetadata box,
      ShardBoxAlongDim(full.sizes().vec(), dim, rank, world_size));
  return CloneBox(full, box);
}

absl::StatusOr<ShardedTensor> ShardAlongDim(const at::Tensor& full,
                                            int64_t dim, int rank,
                                            int world_size) {
  DCP_ASSIGN_OR_RETURN(Shard shard, ChunkShard(full, dim, rank, world_size));
  return ShardedTensor{full.sizes().vec(), {std::move(shard)}};
}

absl::StatusOr<ShardedTensor> ShardGrid2D(const at::Tensor& full, int rank,
                                          int rows, int cols) {
  DCP_RETURN_IF_ERROR(ValidateTensor(full));
  DCP_ASSIGN_OR_RETURN(ChunkStorageMetadata box,
                       ShardBoxGrid2D(full.sizes().vec(), rank, rows, cols));
  DCP_ASSIGN_OR_RETURN(Shard shard, CloneBox(full, box));
  return ShardedTensor{full.sizes().vec(), {std::move(shard)}};
}

absl::StatusOr<ShardedTensor> ZerosShardAlongDim(const Shape& global,
                                                 c10::ScalarType dtype,
                                                 int64_t dim, int rank,
                                                 int world_size) {
  DCP_ASSIGN_OR_RETURN(ChunkStorageMetadata box,
                       ShardBoxAlongDim(global, dim, rank, world_size));
  return ZerosForBox(global, dtype, box);
}

absl::StatusOr<ShardedTensor> ZerosShardGrid2D(const Shape& global,
                                               c10::ScalarType dtype, int rank,
                                               int rows, int cols) {
  DCP_ASSIGN_OR_RETURN(ChunkStorageMetadata box,
                       ShardBoxGrid2D(global, rank, rows, cols));
  return ZerosForBox(global, dtype, box);
}

absl::StatusOr<at::Tensor> Unshard(const std::vector<ShardedTensor>& per_rank) {
  if (per_rank.empty()) {
    return absl::InvalidArgumentError("cannot unshard: no ranks given");
  }
  const Shape& global = per_rank[0].global_size;
  DCP_RETURN_IF_ERROR(ValidateShape(global));

  // Validate every shard and collect the distinct non-empty boxes.
  struct Piece {
    ChunkStorageMetadata box;
    const at::Tensor* tensor;
    int rank;
    size_t shard;
  };
  std::vector<Piece> pieces;
  std::optional<c10::ScalarType> dtype;
  for (size_t r = 0; r < per_rank.size(); ++r) {
    const ShardedTensor& st = per_rank[r];
    if (st.global_size != global) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot unshard: rank ", r, " has global size ",
                       FormatShape(st.global_size), " but rank 0 has ",
                       FormatShape(global)));
    }
    for (size_t s = 0; s < st.local_shards.size(); ++s) {
      const Shard& shard = st.local_shards[s];
      const std::string where = absl::StrCat("rank ", r, " shard ", s);
      if (!shard.tensor.defined()) {
        return absl::InvalidArgumentError(
            absl::StrCat("cannot unshard: ", where, " has no tensor"));
      }
      Shape sizes = shard.tensor.sizes().vec();
      if (shard.offsets.size() != global.size() ||
          sizes.size() != global.size()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "cannot unshard: ", where, " has offsets ",
            FormatShape(shard.offsets), " and shape ", FormatShape(sizes),
            " but the global size is ", FormatShape(global)));
      }
      for (size_t d = 0; d < global.size(); ++d) {
        if (shard.offsets[d] < 0 || shard.offsets[d] > global[d] ||
            sizes[d] > global[d] - shard.offsets[d]) {
          return absl::InvalidArgumentError(absl::StrCat(
              "cannot unshard: ", where, " at offsets ",
              FormatShape(shard.offsets), " with shape ", FormatShape(sizes),
              " lies outside the global size ", FormatShape(global)));
        }
      }
      if (dtype.has_value() && shard.tensor.scalar_type() != *dtype) {
        return absl::InvalidArgumentError(absl::StrCat(
            "cannot unshard: ", where, " has dtype ",
            DtypeName(shard.tensor.scalar_type()), " but earlier shards have ",
            DtypeName(*dtype)));
      }
      dtype = shard.tensor.scalar_type();
      if (shard.tensor.numel() == 0) continue;  // Covers nothing.

      ChunkStorageMetadata box{shard.offsets, std::move(sizes)};
      bool replica = false;
      for (const Piece& seen : pieces) {
        if (seen.box == box) {
          if (!ValuesEqual(Value(*seen.tensor), Value(shard.tensor))) {
            return absl::InvalidArgumentError(absl::StrCat(
                "cannot unshard: ", where, " and rank ", seen.rank, " shard ",
                seen.shard, " hold the same box (", BoxString(box), ")",
                " with different data"));
          }
          replica = true;
          break;
        }
        if (BoxesOverlap(seen.box, box)) {
          return absl::InvalidArgumentError(absl::StrCat(
              "cannot unshard: ", where, " (", BoxString(box),
              ") overlaps rank ", seen.rank, " shard ", seen.shard, " (",
              BoxString(seen.box), ")"));
        }
      }
      if (!replica) {
        pieces.push_back(Piece{std::move(box), &shard.tensor,
                               static_cast<int>(r), s});
      }
    }
  }
  if (!dtype.has_value()) {
    return absl::InvalidArgumentError(
        "cannot unshard: no rank holds a shard to take the dtype from");
  }
  // Disjoint boxes inside the global tensor cover it iff their volumes add
  // up to its volume.
  int64_t covered = 0;
  for (const Piece& piece : pieces) covered += NumElements(piece.box.sizes);
  const int64_t total = NumElements(global);
  if (covered != total) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot unshard: shards cover ", covered, " of the ",
                     total, " elements of global size ", FormatShape(global)));
  }

  return TorchCall("unsharding", [&] {
    at::Tensor out = at::empty(global, at::TensorOptions().dtype(*dtype));
    for (const Piece& piece : pieces) {
      at::Tensor view = out;
      for (size_t d = 0; d < global.size(); ++d) {
        view = view.narrow(static_cast<int64_t>(d), piece.box.offsets[d],
                           piece.box.sizes[d]);
      }
      view.copy_(*piece.tensor);
    }
    return out;
  });
}

}  // namespace dcp
