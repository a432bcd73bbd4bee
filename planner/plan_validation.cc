#include "planner/plan_validation.h"

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "core/metadata.h"
#include "planner/resharding.h"

namespace dcp {
namespace {

// Overlapping pairs reported per tensor; one more is searched for so that
// the message can say there are others.
constexpr size_t kMaxOverlapsPerTensor = 3;
// Problems listed in one status.
constexpr size_t kMaxProblems = 20;

std::string FormatChunk(const ChunkStorageMetadata& chunk) {
  return absl::StrCat(FormatShape(chunk.offsets), "+",
                      FormatShape(chunk.sizes));
}

bool InBounds(const ChunkStorageMetadata& chunk, const Shape& size) {
  for (size_t d = 0; d < size.size(); ++d) {
    const int64_t offset = chunk.offsets[d];
    const int64_t extent = chunk.sizes[d];
    if (offset < 0 || extent < 0) return false;
    int64_t end;
    if (__builtin_add_overflow(offset, extent, &end) || end > size[d]) {
      return false;
    }
  }
  return true;
}

int64_t SaturatingAdd(int64_t a, int64_t b) {
  int64_t sum;
  if (__builtin_add_overflow(a, b, &sum)) {
    return b > 0 ? std::numeric_limits<int64_t>::max()
                 : std::numeric_limits<int64_t>::min();
  }
  return sum;
}

// The chunk problems of the tensor `fqn`. With `stored` (a Metadata read
// from storage, for ValidateCheckpointMetadata): 0-d tensors are checked
// too, chunks name their files, every chunk with elements needs a storage
// entry, and gaps are left to the load planner. Without (a global save
// plan, for ValidateGlobalMetadata): 0-d tensors are skipped, as in
// Python, and the chunks must cover the tensor exactly.
void AppendChunkProblems(const Metadata* stored, absl::string_view fqn,
                         const TensorStorageMetadata& tensor,
                         std::vector<std::string>* problems) {
  const Shape& size = tensor.size;
  if (stored == nullptr && size.empty()) return;
  const std::string key = absl::StrCat("\"", fqn, "\": ");
  auto stored_in = [&](const ChunkStorageMetadata& chunk) -> std::string {
    if (stored == nullptr) return "";
    auto found = stored->storage_data.find(
        MetadataIndex(std::string(fqn), chunk.offsets));
    if (found == stored->storage_data.end()) return "";
    return absl::StrCat(" (in ", found->second.relative_path, ")");
  };
  for (int64_t dim : size) {
    if (dim < 0) {
      problems->push_back(absl::StrCat(key, "size ", FormatShape(size),
                                       " has a negative dimension"));
      return;
    }
  }
  // Chunks of the right rank, by position; only these are checked further
  // (from storage, only those also inside the tensor). Copied only if some
  // chunk is left out.
  std::vector<ChunkStorageMetadata> well_formed;
  std::vector<size_t> positions;
  bool all_well_formed = true;
  for (size_t i = 0; i < tensor.chunks.size(); ++i) {
    const ChunkStorageMetadata& chunk = tensor.chunks[i];
    if (chunk.offsets.size() != size.size() ||
        chunk.sizes.size() != size.size()) {
      problems->push_back(absl::StrCat(key, "chunk ", FormatChunk(chunk),
                                       " does not have the rank ", size.size(),
                                       " of size ", FormatShape(size)));
      all_well_formed = false;
      continue;
    }
    if (!InBounds(chunk, size)) {
      problems->push_back(absl::StrCat(key, "chunk ", FormatChunk(chunk),
                                       stored_in(chunk), " is not inside size ",
                                       FormatShape(size)));
      if (stored != nullptr) {
        all_well_formed = false;
        continue;
      }
    }
    if (stored != nullptr && NumElements(chunk.sizes) > 0 &&
        stored->storage_data.count(
            MetadataIndex(std::string(fqn), chunk.offsets)) == 0) {
      problems->push_back(absl::StrCat(key, "chunk ", FormatChunk(chunk),
                                       " has no storage entry"));
    }
    positions.push_back(i);
  }
  if (!all_well_formed) {
    well_formed.reserve(positions.size());
    for (size_t i : positions) well_formed.push_back(tensor.chunks[i]);
  }
  const std::vector<ChunkStorageMetadata>& checked =
      all_well_formed ? tensor.chunks : well_formed;
  const std::vector<std::pair<size_t, size_t>> overlaps =
      FindOverlappingChunks(checked, kMaxOverlapsPerTensor + 1);
  for (size_t k = 0; k < overlaps.size() && k < kMaxOverlapsPerTensor; ++k) {
    const ChunkStorageMetadata& a = tensor.chunks[positions[overlaps[k].first]];
    const ChunkStorageMetadata& b =
        tensor.chunks[positions[overlaps[k].second]];
    problems->push_back(absl::StrCat(key, "chunks ", FormatChunk(a),
                                     stored_in(a), " and ", FormatChunk(b),
                                     stored_in(b), " overlap"));
  }
  if (overlaps.size() > kMaxOverlapsPerTensor) {
    problems->push_back(absl::StrCat(key, "more chunks overlap"));
  }
  if (stored != nullptr) return;
  int64_t covered = 0;
  for (const ChunkStorageMetadata& chunk : checked) {
    covered = SaturatingAdd(covered, NumElements(chunk.sizes));
  }
  const int64_t volume = NumElements(size);
  if (covered != volume) {
    problems->push_back(absl::StrCat(key, "chunks cover ", covered, " of ",
                                     volume, " elements"));
  }
}

std::string JoinProblems(absl::string_view prefix,
                         std::vector<std::string> problems) {
  if (problems.size() > kMaxProblems) {
    const size_t rest = problems.size() - kMaxProblems;
    problems.resize(kMaxProblems);
    problems.push_back(absl::StrCat("and ", rest, " more problems"));
  }
  return absl::StrCat(prefix, absl::StrJoin(problems, "; "));
}

}  // namespace

void AppendTensorChunkProblems(absl::string_view fqn,
                               const TensorStorageMetadata& tensor,
                               std::vector<std::string>* problems) {
  AppendChunkProblems(nullptr, fqn, tensor, problems);
}

absl::Status ValidateGlobalMetadata(const Metadata& metadata) {
  std::vector<std::string> problems;
  for (const auto& [fqn, storage] : metadata.state_dict_metadata) {
    if (const auto* tensor = std::get_if<TensorStorageMetadata>(&storage)) {
      AppendTensorChunkProblems(fqn, *tensor, &problems);
    }
  }
  if (problems.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      JoinProblems("invalid global plan: ", std::move(problems)));
}

absl::Status ValidateCheckpointMetadata(const Metadata& metadata) {
  std::vector<std::string> problems;
  for (const auto& [fqn, storage] : metadata.state_dict_metadata) {
    if (const auto* tensor = std::get_if<TensorStorageMetadata>(&storage)) {
      AppendChunkProblems(&metadata, fqn, *tensor, &problems);
    } else if (metadata.storage_data.count(MetadataIndex(fqn)) == 0) {
      problems.push_back(
          absl::StrCat("\"", fqn, "\": bytes entry has no storage entry"));
    }
  }
  for (const auto& [index, info] : metadata.storage_data) {
    if (info.offset < 0 || info.length < 0) {
      std::string where = absl::StrCat("\"", index.fqn, "\"");
      if (index.offset.has_value()) {
        absl::StrAppend(&where, " chunk at ", FormatShape(*index.offset));
      }
      problems.push_back(absl::StrCat(
          where, ": storage entry in ", info.relative_path, " has offset ",
          info.offset, " and length ", info.length));
    }
  }
  if (problems.empty()) return absl::OkStatus();
  return absl::DataLossError(
      JoinProblems("invalid checkpoint metadata: ", std::move(problems)));
}

}  // namespace dcp
