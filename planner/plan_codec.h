// -----------------------------------------------------------------------------
// File: planner/plan_codec.h
// -----------------------------------------------------------------------------
//
// dcp's compact binary encoding of the values ranks exchange during a save
// or load: `SavePlan`s and `LoadPlan`s (gathered to the coordinator and
// scattered back) and each rank's `WriteResult`s (gathered to the
// coordinator). Plans never reach disk.
//
// Layout (primitives as in core/byte_codec.h; MetadataIndex, Shape,
// ChunkStorageMetadata, TensorProperties and StorageInfo as in
// core/metadata_codec.h; `opt<X>` is a presence byte 0/1, then X):
//
//   SavePlan     := header(kSavePlan) count{WriteItem}
//                   storage_data:string planner_data:string usable:bool
//   WriteItem    := MetadataIndex type:varint(1..3) opt<TensorWriteData>
//   TensorWriteData := ChunkStorageMetadata TensorProperties size:Shape
//   LoadPlan     := header(kLoadPlan) count{ReadItem}
//                   storage_data:string planner_data:string
//   ReadItem     := type:varint(1..2) dest_index:MetadataIndex
//                   dest_offsets:Shape storage_index:MetadataIndex
//                   storage_offsets:Shape lengths:Shape
//   WriteResults := header(kWriteResults) count{WriteResult}
//   WriteResult  := MetadataIndex size_in_bytes:svarint StorageInfo
//
// Item order is preserved. `MetadataIndex::index` hints are carried even
// though == ignores them. Decoding is strict (see metadata_codec.h), so a
// successfully decoded payload re-encodes to the same bytes, and it also
// enforces the structural rule of `WriteItem`: `tensor_data` is present
// exactly for kTensor and kShard items.
//
// Errors: decoding returns `DataLoss` naming the payload, the item and the
// field, e.g. `decoding SavePlan: item 2: truncated input: reading
// MetadataIndex.fqn length at byte 41 of 42`; a payload of another kind
// fails on its magic byte ("expected a SavePlan payload (magic 0xd2) but
// found a Metadata payload (magic 0xd1)").
//
// Thread safety: free functions without shared state.
#ifndef DCP_PLANNER_PLAN_CODEC_H_
#define DCP_PLANNER_PLAN_CODEC_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "planner/load_plan.h"
#include "planner/save_plan.h"
#include "planner/write_result.h"

namespace dcp {

std::string EncodeSavePlan(const SavePlan& plan);
absl::StatusOr<SavePlan> DecodeSavePlan(absl::string_view bytes);

std::string EncodeLoadPlan(const LoadPlan& plan);
absl::StatusOr<LoadPlan> DecodeLoadPlan(absl::string_view bytes);

std::string EncodeWriteResults(const std::vector<WriteResult>& results);
absl::StatusOr<std::vector<WriteResult>> DecodeWriteResults(
    absl::string_view bytes);

}  // namespace dcp

#endif  // DCP_PLANNER_PLAN_CODEC_H_
