#include "storage/plan_storage_data.h"

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace dcp::storage_internal {

std::string DescribeIndex(const MetadataIndex& index) {
  std::string out = absl::StrCat("\"", absl::CHexEscape(index.fqn), "\"");
  if (index.offset.has_value()) {
    absl::StrAppend(&out, " offset ", FormatShape(*index.offset));
  }
  return out;
}

std::string RandomUuid() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  uint64_t hi = rng();
  uint64_t lo = rng();
  hi = (hi & ~uint64_t{0xF000}) | uint64_t{0x4000};            // Version 4.
  lo = (lo & ~(uint64_t{0xC} << 60)) | (uint64_t{0x8} << 60);  // Variant.
  return absl::StrFormat("%08x-%04x-%04x-%04x-%012x", hi >> 32,
                         (hi >> 16) & 0xFFFF, hi & 0xFFFF, lo >> 48,
                         lo & uint64_t{0xFFFFFFFFFFFF});
}

std::string EncodePlanStorageData(absl::string_view tag,
                                  absl::string_view token, int64_t rank) {
  return absl::StrCat(tag, ":", token, ":__", rank, "_");
}

absl::StatusOr<PlanStorageData> DecodePlanStorageData(
    absl::string_view tag, absl::string_view data, absl::string_view writer) {
  if (data.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("save plan has no storage data of a ", writer,
                     "; was it returned by the coordinator's ", writer,
                     "::PrepareGlobalPlan?"));
  }
  std::vector<absl::string_view> parts = absl::StrSplit(data, ':');
  if (parts.size() != 3 || parts[0] != tag || parts[1].empty() ||
      !absl::StartsWith(parts[2], "__") || !absl::EndsWith(parts[2], "_") ||
      absl::StrContains(parts[1], '/') || absl::StrContains(parts[2], '/')) {
    return absl::InvalidArgumentError(
        absl::StrFormat("save plan storage data \"%s\" was not written by a %s",
                        absl::CHexEscape(data), writer));
  }
  return PlanStorageData{std::string(parts[1]), std::string(parts[2])};
}

}  // namespace dcp::storage_internal
