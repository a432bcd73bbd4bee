// -----------------------------------------------------------------------------
// File: storage/plan_storage_data.h
// -----------------------------------------------------------------------------
//
// What dcp's storage drivers share (internal to //storage): how their
// errors name an item, the save and load ids they hand out, and the
// storage data the coordinator's
// `PrepareGlobalPlan` puts in each rank's save plan,
// "<tag>:<token>:__<rank>_", where `tag` names the writer ("dcp-fs-save",
// "dcp-memory-save") and `token` the save. A rank's `WriteData` decodes it
// to name its files (or entries) "__<rank>_<n>...".
//
// Thread safety: every function may be called from any thread.
#ifndef DCP_STORAGE_PLAN_STORAGE_DATA_H_
#define DCP_STORAGE_PLAN_STORAGE_DATA_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/metadata.h"

namespace dcp::storage_internal {

// `"fqn"` or `"fqn" offset [0, 4]`, the fqn C-escaped (it may come from an
// untrusted checkpoint): how error messages name an item.
std::string DescribeIndex(const MetadataIndex& index);

// A random RFC 4122 version-4 UUID string, as Python's str(uuid4()).
std::string RandomUuid();

struct PlanStorageData {
  std::string token;
  std::string prefix;  // "__<rank>_"
};

// "<tag>:<token>:__<rank>_". `token` must not contain ':' or '/'.
std::string EncodePlanStorageData(absl::string_view tag,
                                  absl::string_view token, int64_t rank);

// The inverse of EncodePlanStorageData for `tag`. `writer` names the writer
// class in messages. FailedPrecondition if `data` is empty (the plan did
// not come from the coordinator's PrepareGlobalPlan); InvalidArgument if it
// is not "<tag>:<token>:__<rank>_" with a non-empty token and no '/'.
absl::StatusOr<PlanStorageData> DecodePlanStorageData(absl::string_view tag,
                                                      absl::string_view data,
                                                      absl::string_view writer);

}  // namespace dcp::storage_internal

#endif  // DCP_STORAGE_PLAN_STORAGE_DATA_H_
