#include "planner/resharding.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "checkpoint/metadata.h"
#include "planner/load_plan.h"

namespace dcp {
namespace {

// offset + size, saturated to the int64 range (values may come from disk).
int64_t SaturatingEnd(int64_t offset, int64_t size) {
  int64_t end;
  if (__builtin_add_overflow(offset, size, &end)) {
    return size > 0 ? std::numeric_limits<int64_t>::max()
                    : std::numeric_limits<int64_t>::min();
  }
  return end;
}

int64_t SaturatingAdd(int64_t a, int64_t b) {
  int64_t sum;
  if (__builtin_add_overflow(a, b, &sum)) {
    return b > 0 ? std::numeric_limits<int64_t>::max()
                 : std::numeric_limits<int64_t>::min();
  }
  return sum;
}

std::string FormatShape(const Shape& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

std::string FormatChunk(const Shape& offsets, const Shape& sizes) {
  return absl::StrCat(FormatShape(offsets), "+", FormatShape(sizes));
}

bool IsWellFormed(const ChunkStorageMetadata& chunk, size_t ndim) {
  return chunk.offsets.size() == ndim && chunk.sizes.size() == ndim;
}

bool HasPositiveExtent(const ChunkStorageMetadata& chunk) {
  for (int64_t size : chunk.sizes) {
    if (size <= 0) return false;
  }
  return true;
}

}  // namespace

bool ChunksOverlap(const ChunkStorageMetadata& a,
                   const ChunkStorageMetadata& b) {
  const size_t ndim = a.offsets.size();
  if (!IsWellFormed(a, ndim) || !IsWellFormed(b, ndim)) return false;
  for (size_t d = 0; d < ndim; ++d) {
    // Python's test, plus empty extents: Python would call an empty box
    // strictly inside another one overlapping.
    if (a.sizes[d] <= 0 || b.sizes[d] <= 0) return false;
    if (a.offsets[d] >= SaturatingEnd(b.offsets[d], b.sizes[d])) return false;
    if (b.offsets[d] >= SaturatingEnd(a.offsets[d], a.sizes[d])) return false;
  }
  return true;
}

std::vector<ReadItem> CreateReadItemsForChunkList(
    const std::string& fqn, const TensorStorageMetadata& saved,
    const std::vector<ChunkStorageMetadata>& local_chunks) {
  std::vector<ReadItem> items;
  for (size_t li = 0; li < local_chunks.size(); ++li) {
    const ChunkStorageMetadata& local = local_chunks[li];
    for (size_t si = 0; si < saved.chunks.size(); ++si) {
      const ChunkStorageMetadata& stored = saved.chunks[si];
      if (!ChunksOverlap(local, stored)) continue;
      const size_t ndim = local.offsets.size();
      Shape storage_offsets(ndim);
      Shape dest_offsets(ndim);
      Shape lengths(ndim);
      for (size_t d = 0; d < ndim; ++d) {
        // Overlap guarantees both ends exceed both starts, so no overflow
        // below once the ends are saturated.
        const int64_t end =
            std::min(SaturatingEnd(stored.offsets[d], stored.sizes[d]),
                     SaturatingEnd(local.offsets[d], local.sizes[d]));
        lengths[d] = end - std::max(local.offsets[d], stored.offsets[d]);
        if (stored.offsets[d] > local.offsets[d]) {
          storage_offsets[d] = 0;
          dest_offsets[d] = stored.offsets[d] - local.offsets[d];
        } else {
          storage_offsets[d] = local.offsets[d] - stored.offsets[d];
          dest_offsets[d] = 0;
        }
      }
      ReadItem item;
      item.type = LoadItemType::kTensor;
      item.dest_index =
          MetadataIndex(fqn, local.offsets, static_cast<int64_t>(li));
      item.dest_offsets = std::move(dest_offsets);
      item.storage_index =
          MetadataIndex(fqn, stored.offsets, static_cast<int64_t>(si));
      item.storage_offsets = std::move(storage_offsets);
      item.lengths = std::move(lengths);
      items.push_back(std::move(item));
    }
  }
  return items;
}

std::vector<std::pair<size_t, size_t>> FindOverlappingChunks(
    const std::vector<ChunkStorageMetadata>& chunks, size_t max_pairs) {
  std::vector<std::pair<size_t, size_t>> pairs;
  if (chunks.empty() || max_pairs == 0) return pairs;
  const size_t ndim = chunks[0].offsets.size();
  std::vector<size_t> candidates;
  for (size_t i = 0; i < chunks.size(); ++i) {
    if (IsWellFormed(chunks[i], ndim) && HasPositiveExtent(chunks[i])) {
      candidates.push_back(i);
    }
  }
  if (ndim == 0) {
    // 0-d boxes all overlap one another.
    for (size_t a = 0; a < candidates.size(); ++a) {
      for (size_t b = a + 1; b < candidates.size(); ++b) {
        pairs.emplace_back(candidates[a], candidates[b]);
        if (pairs.size() >= max_pairs) return pairs;
      }
    }
    return pairs;
  }

  // Sweep along the dimension where the boxes start at the most distinct
  // offsets: row sharding sweeps rows, column sharding columns.
  size_t sweep_dim = 0;
  size_t most_distinct = 0;
  for (size_t d = 0; d < ndim; ++d) {
    std::set<int64_t> starts;
    for (size_t i : candidates) starts.insert(chunks[i].offsets[d]);
    if (starts.size() > most_distinct) {
      most_distinct = starts.size();
      sweep_dim = d;
    }
  }
  std::sort(candidates.begin(), candidates.end(), [&](size_t a, size_t b) {
    return std::make_pair(chunks[a].offsets[sweep_dim], a) <
           std::make_pair(chunks[b].offsets[sweep_dim], b);
  });

  // `active` holds the boxes whose extent along the sweep dimension may
  // still reach the current box.
  std::vector<size_t> active;
  for (size_t current : candidates) {
    const int64_t start = chunks[current].offsets[sweep_dim];
    active.erase(std::remove_if(active.begin(), active.end(),
                                [&](size_t a) {
                                  return SaturatingEnd(
                                             chunks[a].offsets[sweep_dim],
                                             chunks[a].sizes[sweep_dim]) <=
                                         start;
                                }),
                 active.end());
    for (size_t other : active) {
      if (ChunksOverlap(chunks[current], chunks[other])) {
        pairs.emplace_back(std::min(current, other), std::max(current, other));
        if (pairs.size() >= max_pairs) {
          std::sort(pairs.begin(), pairs.end());
          return pairs;
        }
      }
    }
    active.push_back(current);
  }
  std::sort(pairs.begin(), pairs.end());
  return pairs;
}

absl::Status CheckReadItemsCoverChunks(
    const std::string& fqn,
    const std::vector<ChunkStorageMetadata>& local_chunks,
    const std::vector<ReadItem>& items) {
  // Per local chunk: the boxes read into it (relative to the chunk) and the
  // items they come from.
  std::vector<std::vector<ChunkStorageMetadata>> boxes(local_chunks.size());
  std::vector<std::vector<const ReadItem*>> sources(local_chunks.size());
  for (const ReadItem& item : items) {
    if (item.type != LoadItemType::kTensor ||
        !item.dest_index.index.has_value()) {
      continue;
    }
    const int64_t li = *item.dest_index.index;
    if (li < 0 || static_cast<size_t>(li) >= local_chunks.size()) continue;
    boxes[li].push_back(ChunkStorageMetadata{item.dest_offsets, item.lengths});
    sources[li].push_back(&item);
  }
  for (size_t li = 0; li < local_chunks.size(); ++li) {
    const ChunkStorageMetadata& local = local_chunks[li];
    const std::vector<std::pair<size_t, size_t>> overlaps =
        FindOverlappingChunks(boxes[li], 1);
    if (!overlaps.empty()) {
      const ReadItem& a = *sources[li][overlaps[0].first];
      const ReadItem& b = *sources[li][overlaps[0].second];
      return absl::DataLossError(absl::StrCat(
          "checkpoint chunks of \"", fqn, "\" overlap: saved chunks at ",
          FormatShape(a.storage_index.offset.value_or(Shape{})), " and ",
          FormatShape(b.storage_index.offset.value_or(Shape{})),
          " both fill part of destination chunk ",
          FormatChunk(local.offsets, local.sizes)));
    }
    int64_t covered = 0;
    for (const ChunkStorageMetadata& box : boxes[li]) {
      covered = SaturatingAdd(covered, NumElements(box.sizes));
    }
    const int64_t wanted = NumElements(local.sizes);
    if (covered != wanted) {
      return absl::DataLossError(absl::StrCat(
          "checkpoint holds ", covered, " of the ", wanted, " elements of \"",
          fqn, "\" chunk ", FormatChunk(local.offsets, local.sizes)));
    }
  }
  return absl::OkStatus();
}

}  // namespace dcp
