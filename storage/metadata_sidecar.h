// -----------------------------------------------------------------------------
// File: storage/metadata_sidecar.h
// -----------------------------------------------------------------------------
//
// `.dcp.metadata`: dcp's binary copy of a checkpoint's `.metadata`, written
// beside it so that a load need not evaluate the pickle. For a checkpoint
// of many small tensors the pickle is the slowest part of a load: 20,000
// keys are 1.8 million pickle values, about 0.4 s to decode on one core,
// while the binary form (core/metadata_codec.h) decodes in 0.03 s.
//
// The sidecar is a cache, never a second source of truth. It records the
// size and CRC-32 of the exact `.metadata` bytes it was made from, and a
// reader uses it only if those match the `.metadata` it has just read and
// the sidecar's own CRC-32 checks; anything else (no sidecar, one left by
// an earlier save, one PyTorch did not update when it overwrote the
// checkpoint, a damaged one) means decoding the pickle, as PyTorch does.
// PyTorch ignores the file.
//
// Layout (integers little-endian):
//   "DCPMETA1"          8 bytes, magic and version
//   pickle_size         u64, size of the `.metadata` it describes
//   pickle_crc32        u32, CRC-32 of those bytes
//   payload_crc32       u32, CRC-32 of the payload
//   payload_size        u64
//   payload             EncodeMetadata() of the decoded `.metadata`
//
// Thread safety: free functions without shared state.
#ifndef DCP_STORAGE_METADATA_SIDECAR_H_
#define DCP_STORAGE_METADATA_SIDECAR_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/metadata.h"

namespace dcp {

// The name of the sidecar in a checkpoint directory.
inline constexpr absl::string_view kMetadataSidecarName = ".dcp.metadata";

// The sidecar of `metadata`, whose `.metadata` file holds exactly
// `metadata_pickle` (EncodeMetadataPickle(metadata)).
std::string EncodeMetadataSidecar(const Metadata& metadata,
                                  absl::string_view metadata_pickle);

// The metadata in `sidecar` if it describes `metadata_pickle`. Errors:
// FailedPrecondition if it was made from other `.metadata` bytes (a stale
// sidecar); DataLoss if it is truncated, damaged or not a sidecar. Decoding
// is bounded by the bytes of `sidecar`.
absl::StatusOr<Metadata> DecodeMetadataSidecar(
    absl::string_view sidecar, absl::string_view metadata_pickle);

// The same checks, without decoding: the payload of `sidecar` (a view into
// it), which DecodeMetadata turns into the metadata. Its codec header (kind
// and version, core/byte_codec.h) is checked too, so that a sidecar of
// another codec version is DataLoss here rather than when decoded.
absl::StatusOr<absl::string_view> MetadataSidecarPayload(
    absl::string_view sidecar, absl::string_view metadata_pickle);

}  // namespace dcp

#endif  // DCP_STORAGE_METADATA_SIDECAR_H_
