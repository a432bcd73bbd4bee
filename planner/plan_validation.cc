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
#include "checkpoint/metadata.h"
#include "planner/resharding.h"

namespace dcp {
namespace {

// Overlapping pairs reported per tensor; one more is searched for so that
// the message can say there are others.
constexpr size_t kMaxOverlapsPerTensor = 3;
// Problems listed in one status.
constexpr size_t kMaxProblems = 20;

std::string FormatShape(const Shape& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

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

}  // namespace

void AppendTensorChunkProblems(absl::string_view fqn,
                               const TensorStorageMetadata& tensor,
                               std::vector<std::string>* problems) {
  const Shape& size = tensor.size;
  if (size.empty()) return;  // 0-d: skipped, as in Python.
  const std::string key = absl::StrCat("\"", fqn, "\": ");

  for (int64_t dim : size) {
    if (dim < 0) {
      problems->push_back(absl::StrCat(key, "size ", FormatShape(size),
                                       " has a negative dimension"));
      return;
    }
  }

  // Chunks of the right rank, by position; only these are checked for
  // overlap and counted.
  std::vector<ChunkStorageMetadata> well_formed;
  std::vector<size_t> positions;
  for (size_t i = 0; i < tensor.chunks.size(); ++i) {
    const ChunkStorageMetadata& chunk = tensor.chunks[i];
    if (chunk.offsets.size() != size.size() ||
        chunk.sizes.size() != size.size()) {
      problems->push_back(absl::StrCat(key, "chunk ", FormatChunk(chunk),
                                       " does not have the rank ", size.size(),
                                       " of size ", FormatShape(size)));
      continue;
    }
    if (!InBounds(chunk, size)) {
      problems->push_back(absl::StrCat(key, "chunk ", FormatChunk(chunk),
                                       " is out of bounds of size ",
                                       FormatShape(size)));
    }
    well_formed.push_back(chunk);
    positions.push_back(i);
  }

  const std::vector<std::pair<size_t, size_t>> overlaps =
      FindOverlappingChunks(well_formed, kMaxOverlapsPerTensor + 1);
  for (size_t k = 0; k < overlaps.size() && k < kMaxOverlapsPerTensor; ++k) {
    problems->push_back(absl::StrCat(
        key, "chunks ",
        FormatChunk(tensor.chunks[positions[overlaps[k].first]]), " and ",
        FormatChunk(tensor.chunks[positions[overlaps[k].second]]), " overlap"));
  }
  if (overlaps.size() > kMaxOverlapsPerTensor) {
    problems->push_back(absl::StrCat(key, "more chunks overlap"));
  }

  int64_t covered = 0;
  for (const ChunkStorageMetadata& chunk : well_formed) {
    covered = SaturatingAdd(covered, NumElements(chunk.sizes));
  }
  const int64_t volume = NumElements(size);
  if (covered != volume) {
    problems->push_back(absl::StrCat(key, "chunks cover ", covered, " of ",
                                     volume, " elements"));
  }
}

absl::Status ValidateGlobalMetadata(const Metadata& metadata) {
  std::vector<std::string> problems;
  for (const auto& [fqn, storage] : metadata.state_dict_metadata) {
    if (const auto* tensor = std::get_if<TensorStorageMetadata>(&storage)) {
      AppendTensorChunkProblems(fqn, *tensor, &problems);
    }
  }
  if (problems.empty()) return absl::OkStatus();
  std::string message = "invalid global plan: ";
  if (problems.size() > kMaxProblems) {
    const size_t rest = problems.size() - kMaxProblems;
    problems.resize(kMaxProblems);
    problems.push_back(absl::StrCat("and ", rest, " more problems"));
  }
  absl::StrAppend(&message, absl::StrJoin(problems, "; "));
  return absl::InvalidArgumentError(message);
}

}  // namespace dcp
