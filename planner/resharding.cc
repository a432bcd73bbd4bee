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
#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/metadata.h"
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

// Up to this many saved chunks are scanned instead of indexed.
constexpr size_t kMaxScannedChunks = 8;

// Up to this many boxes per local chunk are checked pairwise.
constexpr size_t kMaxPairwiseBoxes = 8;

}  // namespace

bool ChunksOverlap(const ChunkStorageMetadata& a,
                   const ChunkStorageMetadata& b) {
  return BoxesOverlap(a.offsets, a.sizes, b.offsets, b.sizes);
}

SavedChunkIndex::SavedChunkIndex(
    const std::vector<ChunkStorageMetadata>& chunks)
    : size_(chunks.size()), scan_(chunks.size() <= kMaxScannedChunks) {
  // A few chunks are scanned: cheaper than building and searching groups.
  if (scan_) return;
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
    const size_t n = group.order.size();
    group.starts.resize(n);
    group.ends.resize(n);
    group.bounds.resize(n * 2 * group.ndim);
    for (size_t j = 0; j < n; ++j) {
      const ChunkStorageMetadata& chunk = chunks[group.order[j]];
      group.starts[j] = chunk.offsets[sd];
      group.ends[j] = SaturatingEnd(chunk.offsets[sd], chunk.sizes[sd]);
      for (size_t d = 0; d < group.ndim; ++d) {
        group.bounds[(j * group.ndim + d) * 2] = chunk.offsets[d];
        group.bounds[(j * group.ndim + d) * 2 + 1] =
            SaturatingEnd(chunk.offsets[d], chunk.sizes[d]);
      }
    }
    group.ends_sorted = std::is_sorted(group.ends.begin(), group.ends.end());
    if (!group.ends_sorted) {
      group.leaves = 1;
      while (group.leaves < n) group.leaves *= 2;
      group.max_end.assign(2 * group.leaves,
                           std::numeric_limits<int64_t>::min());
      std::copy(group.ends.begin(), group.ends.end(),
                group.max_end.begin() + group.leaves);
      for (size_t node = group.leaves - 1; node >= 1; --node) {
        group.max_end[node] =
            std::max(group.max_end[2 * node], group.max_end[2 * node + 1]);
      }
    }
    groups_.push_back(std::move(group));
  }
}

std::vector<size_t> SavedChunkIndex::FindOverlapping(
    const std::vector<ChunkStorageMetadata>& chunks,
    const ChunkStorageMetadata& box) const {
  absl::InlinedVector<size_t, 8> found;
  FindOverlapping(chunks, box, &found);
  return std::vector<size_t>(found.begin(), found.end());
}

void SavedChunkIndex::FindOverlapping(
    const std::vector<ChunkStorageMetadata>& chunks,
    const ChunkStorageMetadata& box,
    absl::InlinedVector<size_t, 8>* found_out) const {
  DCHECK(scan_ || chunks.size() == size_);
  absl::InlinedVector<size_t, 8>& found = *found_out;
  found.clear();
  const size_t ndim = box.offsets.size();
  if (!IsWellFormed(box, ndim) || !HasPositiveExtent(box)) return;
  if (scan_) {
    for (size_t i = 0; i < chunks.size(); ++i) {
      if (ChunksOverlap(box, chunks[i])) found.push_back(i);
    }
    return;
  }
  auto group =
      std::lower_bound(groups_.begin(), groups_.end(), ndim,
                       [](const Group& g, size_t n) { return g.ndim < n; });
  if (group == groups_.end() || group->ndim != ndim) return;
  if (ndim == 0) {  // ascending; all overlap vacuously
    found.assign(group->order.begin(), group->order.end());
    return;
  }

  const size_t sd = group->sweep_dim;
  const int64_t lo = box.offsets[sd];
  const int64_t hi = SaturatingEnd(box.offsets[sd], box.sizes[sd]);
  // Chunks starting before `hi` form a prefix of the order; of those, the
  // ones ending after `lo` are wanted.
  const size_t prefix = static_cast<size_t>(
      std::lower_bound(group->starts.begin(), group->starts.end(), hi) -
      group->starts.begin());
  // ChunksOverlap(box, chunk) on the chunk's copy in `bounds` (well formed,
  // positive extents), without touching `chunks`.
  auto consider = [&](size_t j) {
    const int64_t* bounds = group->bounds.data() + j * ndim * 2;
    for (size_t d = 0; d < ndim; ++d) {
      if (box.offsets[d] >= bounds[2 * d + 1] ||
          bounds[2 * d] >= SaturatingEnd(box.offsets[d], box.sizes[d])) {
        return;
      }
    }
    found.push_back(group->order[j]);
  };
  if (group->ends_sorted) {
    // Ends ascend with starts (chunks do not nest along the sweep
    // dimension, as in every tiling): the wanted ones are the last of the
    // prefix, found walking back until one ends at or before `lo`.
    for (size_t j = prefix; j > 0 && group->ends[j - 1] > lo; --j) {
      consider(j - 1);
    }
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
}

IndexedMetadata::IndexedMetadata(Metadata metadata)
    : IndexedMetadata(std::make_shared<const Metadata>(std::move(metadata))) {}

IndexedMetadata::IndexedMetadata(std::shared_ptr<const Metadata> metadata)
    : metadata_(std::move(metadata)) {
  CHECK(metadata_ != nullptr);
  for (const auto& [fqn, storage] : metadata_->state_dict_metadata) {
    const auto* tensor = std::get_if<TensorStorageMetadata>(&storage);
    if (tensor != nullptr && tensor->chunks.size() > kMaxScannedChunks) {
      indexes_.emplace(fqn, SavedChunkIndex(tensor->chunks));
    }
  }
}

IndexedMetadata::Entry IndexedMetadata::Find(const std::string& fqn) const {
  static const SavedChunkIndex* const kScan = new SavedChunkIndex();
  Entry entry;
  auto found = metadata_->state_dict_metadata.find(fqn);
  if (found == metadata_->state_dict_metadata.end()) return entry;
  entry.storage = &found->second;
  auto index = indexes_.find(found->first);
  entry.chunk_index = index == indexes_.end() ? kScan : &index->second;
  return entry;
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
  AppendReadItemsForChunkList(fqn, saved, index, local_chunks, &items);
  return items;
}

void AppendReadItemsForChunkList(
    const std::string& fqn, const TensorStorageMetadata& saved,
    const SavedChunkIndex& index,
    const std::vector<ChunkStorageMetadata>& local_chunks,
    std::vector<ReadItem>* items_out) {
  std::vector<ReadItem>& items = *items_out;
  absl::InlinedVector<size_t, 8> overlapping;
  for (size_t li = 0; li < local_chunks.size(); ++li) {
    const ChunkStorageMetadata& local = local_chunks[li];
    index.FindOverlapping(saved.chunks, local, &overlapping);
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
    absl::Span<const ReadItem> items) {
  // The tensor items with a valid destination position.
  auto position_of = [&](const ReadItem& item) -> std::optional<size_t> {
    if (item.type != LoadItemType::kTensor ||
        !item.dest_index.index.has_value()) {
      return std::nullopt;
    }
    const int64_t li = *item.dest_index.index;
    if (li < 0 || static_cast<size_t>(li) >= local_chunks.size()) {
      return std::nullopt;
    }
    return static_cast<size_t>(li);
  };
  // Per local chunk: the items reading into it, as runs of `items` when
  // they come grouped by ascending position (no allocation), else
  // gathered.
  bool grouped = true;
  std::optional<size_t> last;
  for (const ReadItem& item : items) {
    const std::optional<size_t> li = position_of(item);
    if (!li.has_value()) continue;
    if (last.has_value() && *li < *last) {
      grouped = false;
      break;
    }
    last = li;
  }
  std::vector<std::vector<const ReadItem*>> gathered;
  if (!grouped) {
    gathered.resize(local_chunks.size());
    for (const ReadItem& item : items) {
      if (const std::optional<size_t> li = position_of(item)) {
        gathered[*li].push_back(&item);
      }
    }
  }
  absl::InlinedVector<const ReadItem*, 8> from;
  size_t next = 0;  // in `items`, when grouped
  for (size_t li = 0; li < local_chunks.size(); ++li) {
    const ChunkStorageMetadata& local = local_chunks[li];
    from.clear();
    if (grouped) {
      for (; next < items.size(); ++next) {
        const std::optional<size_t> position = position_of(items[next]);
        if (!position.has_value()) continue;
        if (*position != li) break;
        from.push_back(&items[next]);
      }
    } else {
      from.assign(gathered[li].begin(), gathered[li].end());
    }
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
        boxes.push_back(
            ChunkStorageMetadata{item->dest_offsets, item->lengths});
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
