#include "planner/resharding.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "checkpoint/metadata.h"
#include "glog/logging.h"
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

// ChunksOverlap on boxes given as (offsets, sizes).
bool BoxesOverlap(const Shape& a_offsets, const Shape& a_sizes,
                  const Shape& b_offsets, const Shape& b_sizes) {
  const size_t ndim = a_offsets.size();
  if (a_sizes.size() != ndim || b_offsets.size() != ndim ||
      b_sizes.size() != ndim) {
    return false;
  }
  for (size_t d = 0; d < ndim; ++d) {
    // Python's test, plus empty extents: Python would call an empty box
    // strictly inside another one overlapping.
    if (a_sizes[d] <= 0 || b_sizes[d] <= 0) return false;
    if (a_offsets[d] >= SaturatingEnd(b_offsets[d], b_sizes[d])) return false;
    if (b_offsets[d] >= SaturatingEnd(a_offsets[d], a_sizes[d])) return false;
  }
  return true;
}

// Up to this many boxes per local chunk are checked pairwise.
constexpr size_t kMaxPairwiseBoxes = 8;

}  // namespace

bool ChunksOverlap(const ChunkStorageMetadata& a,
                   const ChunkStorageMetadata& b) {
  return BoxesOverlap(a.offsets, a.sizes, b.offsets, b.sizes);
}

SavedChunkIndex::SavedChunkIndex(
    const std::vector<ChunkStorageMetadata>& chunks)
    : size_(chunks.size()) {
  // Positions of the chunks that can overlap anything, by rank.
  std::vector<std::pair<size_t, size_t>> by_ndim;  // (ndim, position)
  for (size_t i = 0; i < chunks.size(); ++i) {
    const ChunkStorageMetadata& chunk = chunks[i];
    if (IsWellFormed(chunk, chunk.offsets.size()) && HasPositiveExtent(chunk)) {
      by_ndim.emplace_back(chunk.offsets.size(), i);
    }
  }
  std::sort(by_ndim.begin(), by_ndim.end());
  for (size_t begin = 0; begin < by_ndim.size();) {
    size_t end = begin;
    while (end < by_ndim.size() && by_ndim[end].first == by_ndim[begin].first) {
      ++end;
    }
    Group group;
    group.ndim = by_ndim[begin].first;
    group.order.reserve(end - begin);
    for (size_t j = begin; j < end; ++j) {
      group.order.push_back(by_ndim[j].second);
    }
    begin = end;
    if (group.ndim == 0) {
      // 0-d chunks all overlap any 0-d box: no ordering to exploit.
      groups_.push_back(std::move(group));
      continue;
    }
    // The sweep dimension: the most distinct start offsets.
    size_t most_distinct = 0;
    std::vector<int64_t> starts(group.order.size());
    for (size_t d = 0; d < group.ndim; ++d) {
      for (size_t j = 0; j < group.order.size(); ++j) {
        starts[j] = chunks[group.order[j]].offsets[d];
      }
      std::sort(starts.begin(), starts.end());
      const size_t distinct = static_cast<size_t>(
          std::unique(starts.begin(), starts.end()) - starts.begin());
      if (distinct > most_distinct) {
        most_distinct = distinct;
        group.sweep_dim = d;
      }
    }
    const size_t sd = group.sweep_dim;
    // Stable on equal starts: `order` is ascending by position already.
    std::stable_sort(group.order.begin(), group.order.end(),
                     [&](size_t a, size_t b) {
                       return chunks[a].offsets[sd] < chunks[b].offsets[sd];
                     });
    group.starts.resize(group.order.size());
    group.leaves = 1;
    while (group.leaves < group.order.size()) group.leaves *= 2;
    group.max_end.assign(2 * group.leaves,
                         std::numeric_limits<int64_t>::min());
    for (size_t j = 0; j < group.order.size(); ++j) {
      const ChunkStorageMetadata& chunk = chunks[group.order[j]];
      group.starts[j] = chunk.offsets[sd];
      group.max_end[group.leaves + j] =
          SaturatingEnd(chunk.offsets[sd], chunk.sizes[sd]);
    }
    group.ends_sorted = std::is_sorted(
        group.max_end.begin() + group.leaves,
        group.max_end.begin() + group.leaves + group.order.size());
    for (size_t node = group.leaves - 1; node >= 1; --node) {
      group.max_end[node] =
          std::max(group.max_end[2 * node], group.max_end[2 * node + 1]);
    }
    groups_.push_back(std::move(group));
  }
}

std::vector<size_t> SavedChunkIndex::FindOverlapping(
    const std::vector<ChunkStorageMetadata>& chunks,
    const ChunkStorageMetadata& box) const {
  DCHECK_EQ(chunks.size(), size_);
  std::vector<size_t> found;
  const size_t ndim = box.offsets.size();
  if (!IsWellFormed(box, ndim) || !HasPositiveExtent(box)) return found;
  auto group = std::lower_bound(
      groups_.begin(), groups_.end(), ndim,
      [](const Group& g, size_t n) { return g.ndim < n; });
  if (group == groups_.end() || group->ndim != ndim) return found;
  if (ndim == 0) return group->order;  // ascending; all overlap vacuously

  const size_t sd = group->sweep_dim;
  const int64_t lo = box.offsets[sd];
  const int64_t hi = SaturatingEnd(box.offsets[sd], box.sizes[sd]);
  // Chunks starting before `hi` form a prefix of the order; of those, the
  // ones ending after `lo` are wanted.
  const size_t prefix = static_cast<size_t>(
      std::lower_bound(group->starts.begin(), group->starts.end(), hi) -
      group->starts.begin());
  auto consider = [&](size_t j) {
    const size_t position = group->order[j];
    if (ChunksOverlap(box, chunks[position])) found.push_back(position);
  };
  if (group->ends_sorted) {
    // Ends ascend with starts (chunks do not nest along the sweep
    // dimension, as in every tiling): the wanted ones are a range.
    const int64_t* ends = group->max_end.data() + group->leaves;
    const size_t first = static_cast<size_t>(
        std::upper_bound(ends, ends + prefix, lo) - ends);
    for (size_t j = first; j < prefix; ++j) consider(j);
  } else {
    // Descend the max-end tree: (node, first leaf, leaf count).
    struct Frame {
      size_t node, first, count;
    };
    std::vector<Frame> stack;
    if (prefix > 0) stack.push_back({1, 0, group->leaves});
    while (!stack.empty()) {
      const Frame f = stack.back();
      stack.pop_back();
      if (f.first >= prefix || group->max_end[f.node] <= lo) continue;
      if (f.count == 1) {
        consider(f.first);
        continue;
      }
      const size_t half = f.count / 2;
      stack.push_back({2 * f.node + 1, f.first + half, half});
      stack.push_back({2 * f.node, f.first, half});
    }
  }
  std::sort(found.begin(), found.end());
  return found;
}

IndexedMetadata::IndexedMetadata(Metadata metadata)
    : IndexedMetadata(std::make_shared<const Metadata>(std::move(metadata))) {}

IndexedMetadata::IndexedMetadata(std::shared_ptr<const Metadata> metadata)
    : metadata_(std::move(metadata)) {
  CHECK(metadata_ != nullptr);
  entries_.reserve(metadata_->state_dict_metadata.size());
  for (const auto& [fqn, storage] : metadata_->state_dict_metadata) {
    Entry entry{&storage, SavedChunkIndex()};
    if (const auto* tensor = std::get_if<TensorStorageMetadata>(&storage)) {
      entry.chunk_index = SavedChunkIndex(tensor->chunks);
    }
    entries_.emplace(fqn, std::move(entry));
  }
}

const IndexedMetadata::Entry* IndexedMetadata::Find(
    absl::string_view fqn) const {
  auto found = entries_.find(fqn);
  return found == entries_.end() ? nullptr : &found->second;
}

std::vector<ReadItem> CreateReadItemsForChunkList(
    const std::string& fqn, const TensorStorageMetadata& saved,
    const std::vector<ChunkStorageMetadata>& local_chunks) {
  if (local_chunks.empty()) return {};
  return CreateReadItemsForChunkList(fqn, saved, SavedChunkIndex(saved.chunks),
                                     local_chunks);
}

std::vector<ReadItem> CreateReadItemsForChunkList(
    const std::string& fqn, const TensorStorageMetadata& saved,
    const SavedChunkIndex& index,
    const std::vector<ChunkStorageMetadata>& local_chunks) {
  std::vector<ReadItem> items;
  for (size_t li = 0; li < local_chunks.size(); ++li) {
    const ChunkStorageMetadata& local = local_chunks[li];
    const std::vector<size_t> overlapping =
        index.FindOverlapping(saved.chunks, local);
    if (items.capacity() < items.size() + overlapping.size()) {
      // Geometric, so that many local chunks do not reallocate each time.
      items.reserve(
          std::max(items.size() + overlapping.size(), 2 * items.capacity()));
    }
    for (size_t si : overlapping) {
      const ChunkStorageMetadata& stored = saved.chunks[si];
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
  std::vector<int64_t> starts(candidates.size());
  for (size_t d = 0; d < ndim; ++d) {
    for (size_t j = 0; j < candidates.size(); ++j) {
      starts[j] = chunks[candidates[j]].offsets[d];
    }
    std::sort(starts.begin(), starts.end());
    const size_t distinct = static_cast<size_t>(
        std::unique(starts.begin(), starts.end()) - starts.begin());
    if (distinct > most_distinct) {
      most_distinct = distinct;
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
  // Per local chunk: the items reading into it.
  std::vector<std::vector<const ReadItem*>> sources(local_chunks.size());
  for (const ReadItem& item : items) {
    if (item.type != LoadItemType::kTensor ||
        !item.dest_index.index.has_value()) {
      continue;
    }
    const int64_t li = *item.dest_index.index;
    if (li < 0 || static_cast<size_t>(li) >= local_chunks.size()) continue;
    sources[li].push_back(&item);
  }
  for (size_t li = 0; li < local_chunks.size(); ++li) {
    const ChunkStorageMetadata& local = local_chunks[li];
    const std::vector<const ReadItem*>& from = sources[li];
    // The first overlapping pair (i < j, lexicographically), considering
    // the boxes of the first box's rank, as FindOverlappingChunks does.
    std::optional<std::pair<size_t, size_t>> overlap;
    if (from.size() <= kMaxPairwiseBoxes) {
      const size_t ndim = from.empty() ? 0 : from[0]->dest_offsets.size();
      for (size_t i = 0; i < from.size() && !overlap.has_value(); ++i) {
        if (from[i]->dest_offsets.size() != ndim) continue;
        for (size_t j = i + 1; j < from.size(); ++j) {
          if (BoxesOverlap(from[i]->dest_offsets, from[i]->lengths,
                           from[j]->dest_offsets, from[j]->lengths)) {
            overlap.emplace(i, j);
            break;
          }
        }
      }
    } else {
      std::vector<ChunkStorageMetadata> boxes;
      boxes.reserve(from.size());
      for (const ReadItem* item : from) {
        boxes.push_back(ChunkStorageMetadata{item->dest_offsets, item->lengths});
      }
      const std::vector<std::pair<size_t, size_t>> overlaps =
          FindOverlappingChunks(boxes, 1);
      if (!overlaps.empty()) overlap = overlaps[0];
    }
    if (overlap.has_value()) {
      const ReadItem& a = *from[overlap->first];
      const ReadItem& b = *from[overlap->second];
      return absl::DataLossError(absl::StrCat(
          "checkpoint chunks of \"", fqn, "\" overlap: saved chunks at ",
          FormatShape(a.storage_index.offset.value_or(Shape{})), " and ",
          FormatShape(b.storage_index.offset.value_or(Shape{})),
          " both fill part of destination chunk ",
          FormatChunk(local.offsets, local.sizes)));
    }
    int64_t covered = 0;
    for (const ReadItem* item : from) {
      covered = SaturatingAdd(covered, NumElements(item->lengths));
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
