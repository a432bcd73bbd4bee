// -----------------------------------------------------------------------------
// File: core/metadata_codec.h
// -----------------------------------------------------------------------------
//
// dcp's compact binary encoding of `Metadata` (core/metadata.h), used
// to broadcast the global metadata between ranks, and the encodings of its
// parts that planner/plan_codec.h reuses. This is not the on-disk format:
// `.metadata` files are PyTorch pickles.
//
// Layout (primitives as in core/byte_codec.h; `opt<X>` is a presence
// byte 0/1 followed by X when 1; maps are written in std::map order, and
// decoding requires strictly increasing keys):
//
//   Metadata          := header(kMetadata) count{fqn:string StorageMetadata}
//                        count{fqn:string ObjectPath}
//                        count{MetadataIndex StorageInfo}
//                        opt<StorageMeta> opt<version:string>
//   StorageMetadata   := u8 0 TensorProperties size:Shape
//                            count{ChunkStorageMetadata}
//                      | u8 1                              (bytes value)
//   ObjectPath        := count{u8 0 string | u8 1 svarint}
//   StorageMeta       := opt<checkpoint_id:string> opt<save_id:string>
//                        opt<load_id:string> count{module:string}
//   MetadataIndex     := fqn:string opt<offset:Shape> opt<index:svarint>
//   ChunkStorageMetadata := offsets:Shape sizes:Shape
//   TensorProperties  := dtype:varint layout:varint requires_grad:bool
//                        memory_format:varint pin_memory:bool
//   StorageInfo       := relative_path:string offset:svarint length:svarint
//   Shape             := count{svarint}
//
// The structure has a fixed nesting depth (no recursive types), so decoding
// needs no depth limit; element counts are bounded by the input size
// (ByteReader::ReadCount), so decoding never allocates more than a small
// multiple of the input.
//
// Determinism: equal values (including `MetadataIndex::index` hints, which
// == ignores) encode to identical bytes, whatever order maps were filled in.
// Decoding is strict, so a successfully decoded payload re-encodes to
// exactly the input bytes.
//
// Errors: decoding returns `DataLoss` with a message that names the payload,
// the entry and the field being read, e.g. `decoding Metadata: storage_data
// entry 3: truncated input: reading StorageInfo.relative_path length at byte
// 97 of 100`. Values are validated: dtypes must have an element size
// (`ElementSize`), layouts must be c10 layouts, memory formats and variant
// tags must be in range. Shapes, offsets and lengths are not checked for
// sign or consistency; that is the consumers' job.
//
// Encoding never fails; a value holding an invalid dtype, layout or memory
// format encodes, but its encoding does not decode.
//
// Thread safety: free functions without shared state.
#ifndef DCP_CORE_METADATA_CODEC_H_
#define DCP_CORE_METADATA_CODEC_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/byte_codec.h"
#include "core/metadata.h"

namespace dcp {

// A complete payload (with its header).
std::string EncodeMetadata(const Metadata& metadata);
// DataLoss if `bytes` is not exactly one Metadata payload.
absl::StatusOr<Metadata> DecodeMetadata(absl::string_view bytes);

// Building blocks for other codecs (no header). Each Encode appends to
// `writer`; each Decode reads one value at the reader's position and
// returns DataLoss naming the field ("MetadataIndex.fqn", "<what> element")
// on failure. `what` names the shape's role in error messages
// ("ReadItem.lengths").
void EncodeShape(const Shape& shape, ByteWriter& writer);
absl::StatusOr<Shape> DecodeShape(ByteReader& reader, absl::string_view what);

void EncodeMetadataIndex(const MetadataIndex& index, ByteWriter& writer);
absl::StatusOr<MetadataIndex> DecodeMetadataIndex(ByteReader& reader);

void EncodeChunkStorageMetadata(const ChunkStorageMetadata& chunk,
                                ByteWriter& writer);
absl::StatusOr<ChunkStorageMetadata> DecodeChunkStorageMetadata(
    ByteReader& reader);

void EncodeTensorProperties(const TensorProperties& properties,
                            ByteWriter& writer);
absl::StatusOr<TensorProperties> DecodeTensorProperties(ByteReader& reader);

void EncodeStorageInfo(const StorageInfo& info, ByteWriter& writer);
absl::StatusOr<StorageInfo> DecodeStorageInfo(ByteReader& reader);

void EncodeObjectPath(const ObjectPath& path, ByteWriter& writer);
absl::StatusOr<ObjectPath> DecodeObjectPath(ByteReader& reader);

// Lower bounds on the encoded size of some parts, for ByteReader::ReadCount.
inline constexpr size_t kMinMetadataIndexBytes = 3;
inline constexpr size_t kMinStorageInfoBytes = 3;
inline constexpr size_t kMinShapeBytes = 1;

}  // namespace dcp

#endif  // DCP_CORE_METADATA_CODEC_H_
