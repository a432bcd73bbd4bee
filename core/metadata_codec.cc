#include "core/metadata_codec.h"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "c10/core/Layout.h"
#include "c10/core/ScalarType.h"
#include "core/byte_codec.h"
#include "core/metadata.h"
#include "core/status.h"

namespace dcp {
namespace {

// Variant tags.
constexpr uint8_t kTensorStorageTag = 0;
constexpr uint8_t kBytesStorageTag = 1;
constexpr uint8_t kPathStringTag = 0;
constexpr uint8_t kPathIntTag = 1;

// Minimum encoded sizes, for ReadCount.
constexpr size_t kMinStateDictEntryBytes = 2;    // key length + tag
constexpr size_t kMinChunkBytes = 2;             // two shape counts
constexpr size_t kMinPlannerDataEntryBytes = 2;  // key length + path count
constexpr size_t kMinPathElementBytes = 2;       // tag + 1 byte
constexpr size_t kMinStringBytes = 1;            // length

void EncodeOptionalString(const std::optional<std::string>& value,
                          ByteWriter& writer) {
  writer.WriteBool(value.has_value());
  if (value.has_value()) writer.WriteString(*value);
}

absl::StatusOr<std::optional<std::string>> DecodeOptionalString(
    ByteReader& reader, absl::string_view presence_what,
    absl::string_view what) {
  DCP_ASSIGN_OR_RETURN(bool present, reader.ReadBool(presence_what));
  if (!present) return std::nullopt;
  DCP_ASSIGN_OR_RETURN(absl::string_view value, reader.ReadString(what));
  return std::string(value);
}

std::string Quote(absl::string_view s) {
  return absl::StrCat("\"", absl::CEscape(s), "\"");
}

void EncodeStorageMetadata(const StorageMetadata& md, ByteWriter& writer) {
  if (const auto* tensor = std::get_if<TensorStorageMetadata>(&md)) {
    writer.WriteU8(kTensorStorageTag);
    EncodeTensorProperties(tensor->properties, writer);
    EncodeShape(tensor->size, writer);
    writer.WriteCount(tensor->chunks.size());
    for (const ChunkStorageMetadata& chunk : tensor->chunks) {
      EncodeChunkStorageMetadata(chunk, writer);
    }
  } else {
    writer.WriteU8(kBytesStorageTag);
  }
}

absl::StatusOr<StorageMetadata> DecodeStorageMetadata(ByteReader& reader) {
  DCP_ASSIGN_OR_RETURN(uint8_t tag, reader.ReadU8("StorageMetadata tag"));
  if (tag == kBytesStorageTag) return BytesStorageMetadata{};
  if (tag != kTensorStorageTag) {
    return reader.Malformed(
        "StorageMetadata tag",
        absl::StrCat("unknown tag ", tag, " (0 = tensor, 1 = bytes)"));
  }
  TensorStorageMetadata tensor;
  DCP_ASSIGN_OR_RETURN(tensor.properties, DecodeTensorProperties(reader));
  DCP_ASSIGN_OR_RETURN(tensor.size,
                       DecodeShape(reader, "TensorStorageMetadata.size"));
  DCP_ASSIGN_OR_RETURN(
      size_t num_chunks,
      reader.ReadCount("TensorStorageMetadata.chunks", kMinChunkBytes));
  tensor.chunks.reserve(num_chunks);
  for (size_t i = 0; i < num_chunks; ++i) {
    absl::StatusOr<ChunkStorageMetadata> chunk =
        DecodeChunkStorageMetadata(reader);
    if (!chunk.ok()) {
      return Annotate(chunk.status(), absl::StrCat("chunk ", i));
    }
    tensor.chunks.push_back(*std::move(chunk));
  }
  return tensor;
}

void EncodeStorageMeta(const StorageMeta& meta, ByteWriter& writer) {
  EncodeOptionalString(meta.checkpoint_id, writer);
  EncodeOptionalString(meta.save_id, writer);
  EncodeOptionalString(meta.load_id, writer);
  writer.WriteCount(meta.modules.size());
  for (const std::string& module : meta.modules) writer.WriteString(module);
}

absl::StatusOr<StorageMeta> DecodeStorageMeta(ByteReader& reader) {
  StorageMeta meta;
  DCP_ASSIGN_OR_RETURN(
      meta.checkpoint_id,
      DecodeOptionalString(reader, "StorageMeta.checkpoint_id presence",
                           "StorageMeta.checkpoint_id"));
  DCP_ASSIGN_OR_RETURN(
      meta.save_id, DecodeOptionalString(reader, "StorageMeta.save_id presence",
                                         "StorageMeta.save_id"));
  DCP_ASSIGN_OR_RETURN(
      meta.load_id, DecodeOptionalString(reader, "StorageMeta.load_id presence",
                                         "StorageMeta.load_id"));
  DCP_ASSIGN_OR_RETURN(
      size_t n, reader.ReadCount("StorageMeta.modules", kMinStringBytes));
  meta.modules.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    DCP_ASSIGN_OR_RETURN(absl::string_view module,
                         reader.ReadString("StorageMeta.modules element"));
    meta.modules.emplace_back(module);
  }
  return meta;
}

// Map keys must arrive strictly increasing (checked below), which keeps the
// encoding canonical and rejects duplicates.
absl::StatusOr<Metadata> DecodeMetadataBody(ByteReader& reader) {
  Metadata md;

  DCP_ASSIGN_OR_RETURN(
      size_t num_items,
      reader.ReadCount("state_dict_metadata", kMinStateDictEntryBytes));
  for (size_t i = 0; i < num_items; ++i) {
    absl::Status status = [&]() -> absl::Status {
      DCP_ASSIGN_OR_RETURN(absl::string_view fqn,
                           reader.ReadString("state_dict_metadata key"));
      if (!md.state_dict_metadata.empty() &&
          !(md.state_dict_metadata.rbegin()->first < fqn)) {
        return reader.Malformed(
            "state_dict_metadata key",
            absl::StrCat("key ", Quote(fqn),
                         " is not after the previous key (keys must be "
                         "sorted and unique)"));
      }
      DCP_ASSIGN_OR_RETURN(StorageMetadata item, DecodeStorageMetadata(reader));
      md.state_dict_metadata.emplace_hint(md.state_dict_metadata.end(),
                                          std::string(fqn), std::move(item));
      return absl::OkStatus();
    }();
    if (!status.ok()) {
      return Annotate(status, absl::StrCat("state_dict_metadata entry ", i));
    }
  }

  DCP_ASSIGN_OR_RETURN(
      size_t num_paths,
      reader.ReadCount("planner_data", kMinPlannerDataEntryBytes));
  for (size_t i = 0; i < num_paths; ++i) {
    absl::Status status = [&]() -> absl::Status {
      DCP_ASSIGN_OR_RETURN(absl::string_view fqn,
                           reader.ReadString("planner_data key"));
      if (!md.planner_data.empty() &&
          !(md.planner_data.rbegin()->first < fqn)) {
        return reader.Malformed(
            "planner_data key",
            absl::StrCat("key ", Quote(fqn),
                         " is not after the previous key (keys must be "
                         "sorted and unique)"));
      }
      DCP_ASSIGN_OR_RETURN(ObjectPath path, DecodeObjectPath(reader));
      md.planner_data.emplace_hint(md.planner_data.end(), std::string(fqn),
                                   std::move(path));
      return absl::OkStatus();
    }();
    if (!status.ok()) {
      return Annotate(status, absl::StrCat("planner_data entry ", i));
    }
  }

  DCP_ASSIGN_OR_RETURN(
      size_t num_locations,
      reader.ReadCount("storage_data",
                       kMinMetadataIndexBytes + kMinStorageInfoBytes));
  for (size_t i = 0; i < num_locations; ++i) {
    absl::Status status = [&]() -> absl::Status {
      DCP_ASSIGN_OR_RETURN(MetadataIndex index, DecodeMetadataIndex(reader));
      if (!md.storage_data.empty() &&
          !(md.storage_data.rbegin()->first < index)) {
        return reader.Malformed(
            "storage_data key",
            absl::StrCat("key with fqn ", Quote(index.fqn),
                         " is not after the previous key (keys must be "
                         "sorted and unique)"));
      }
      DCP_ASSIGN_OR_RETURN(StorageInfo info, DecodeStorageInfo(reader));
      md.storage_data.emplace_hint(md.storage_data.end(), std::move(index),
                                   std::move(info));
      return absl::OkStatus();
    }();
    if (!status.ok()) {
      return Annotate(status, absl::StrCat("storage_data entry ", i));
    }
  }

  DCP_ASSIGN_OR_RETURN(bool has_storage_meta,
                       reader.ReadBool("storage_meta presence"));
  if (has_storage_meta) {
    absl::StatusOr<StorageMeta> meta = DecodeStorageMeta(reader);
    if (!meta.ok()) return Annotate(meta.status(), "storage_meta");
    md.storage_meta = *std::move(meta);
  }
  DCP_ASSIGN_OR_RETURN(
      md.version, DecodeOptionalString(reader, "version presence", "version"));
  DCP_RETURN_IF_ERROR(reader.ExpectEnd());
  return md;
}

}  // namespace

void EncodeShape(const Shape& shape, ByteWriter& writer) {
  writer.WriteCount(shape.size());
  for (int64_t dim : shape) writer.WriteSignedVarint(dim);
}

absl::StatusOr<Shape> DecodeShape(ByteReader& reader, absl::string_view what) {
  absl::StatusOr<size_t> n =
      reader.ReadCount(what, /*min_bytes_per_element=*/1);
  if (!n.ok()) return n.status();
  Shape shape;
  shape.reserve(*n);
  for (size_t i = 0; i < *n; ++i) {
    absl::StatusOr<int64_t> dim = reader.ReadSignedVarint("Shape element");
    if (!dim.ok()) return Annotate(dim.status(), what);
    shape.push_back(*dim);
  }
  return shape;
}

void EncodeObjectPath(const ObjectPath& path, ByteWriter& writer) {
  writer.WriteCount(path.size());
  for (const PathElement& element : path) {
    if (const std::string* key = std::get_if<std::string>(&element)) {
      writer.WriteU8(kPathStringTag);
      writer.WriteString(*key);
    } else {
      writer.WriteU8(kPathIntTag);
      writer.WriteSignedVarint(std::get<int64_t>(element));
    }
  }
}

absl::StatusOr<ObjectPath> DecodeObjectPath(ByteReader& reader) {
  DCP_ASSIGN_OR_RETURN(size_t n,
                       reader.ReadCount("ObjectPath", kMinPathElementBytes));
  ObjectPath path;
  path.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    DCP_ASSIGN_OR_RETURN(uint8_t tag, reader.ReadU8("ObjectPath element tag"));
    if (tag == kPathStringTag) {
      DCP_ASSIGN_OR_RETURN(absl::string_view key,
                           reader.ReadString("ObjectPath key"));
      path.emplace_back(std::string(key));
    } else if (tag == kPathIntTag) {
      DCP_ASSIGN_OR_RETURN(int64_t position,
                           reader.ReadSignedVarint("ObjectPath position"));
      path.emplace_back(position);
    } else {
      return reader.Malformed(
          "ObjectPath element tag",
          absl::StrCat("unknown tag ", tag, " (0 = string, 1 = int)"));
    }
  }
  return path;
}

void EncodeMetadataIndex(const MetadataIndex& index, ByteWriter& writer) {
  writer.WriteString(index.fqn);
  writer.WriteBool(index.offset.has_value());
  if (index.offset.has_value()) EncodeShape(*index.offset, writer);
  writer.WriteBool(index.index.has_value());
  if (index.index.has_value()) writer.WriteSignedVarint(*index.index);
}

absl::StatusOr<MetadataIndex> DecodeMetadataIndex(ByteReader& reader) {
  MetadataIndex index;
  DCP_ASSIGN_OR_RETURN(absl::string_view fqn,
                       reader.ReadString("MetadataIndex.fqn"));
  index.fqn = std::string(fqn);
  DCP_ASSIGN_OR_RETURN(bool has_offset,
                       reader.ReadBool("MetadataIndex.offset presence"));
  if (has_offset) {
    DCP_ASSIGN_OR_RETURN(index.offset,
                         DecodeShape(reader, "MetadataIndex.offset"));
  }
  DCP_ASSIGN_OR_RETURN(bool has_index,
                       reader.ReadBool("MetadataIndex.index presence"));
  if (has_index) {
    DCP_ASSIGN_OR_RETURN(index.index,
                         reader.ReadSignedVarint("MetadataIndex.index"));
  }
  return index;
}

void EncodeChunkStorageMetadata(const ChunkStorageMetadata& chunk,
                                ByteWriter& writer) {
  EncodeShape(chunk.offsets, writer);
  EncodeShape(chunk.sizes, writer);
}

absl::StatusOr<ChunkStorageMetadata> DecodeChunkStorageMetadata(
    ByteReader& reader) {
  ChunkStorageMetadata chunk;
  DCP_ASSIGN_OR_RETURN(chunk.offsets,
                       DecodeShape(reader, "ChunkStorageMetadata.offsets"));
  DCP_ASSIGN_OR_RETURN(chunk.sizes,
                       DecodeShape(reader, "ChunkStorageMetadata.sizes"));
  return chunk;
}

void EncodeTensorProperties(const TensorProperties& properties,
                            ByteWriter& writer) {
  // The enums' underlying types are signed; invalid negative values become
  // large unsigned numbers that the decoder rejects.
  writer.WriteVarint(static_cast<uint8_t>(properties.dtype));
  writer.WriteVarint(static_cast<uint8_t>(properties.layout));
  writer.WriteBool(properties.requires_grad);
  writer.WriteVarint(static_cast<uint32_t>(properties.memory_format));
  writer.WriteBool(properties.pin_memory);
}

absl::StatusOr<TensorProperties> DecodeTensorProperties(ByteReader& reader) {
  TensorProperties p;
  // Each check happens before the cast, so no out-of-range value is ever
  // converted to an enum.
  const size_t dtype_at = reader.position();
  DCP_ASSIGN_OR_RETURN(uint64_t dtype,
                       reader.ReadVarint("TensorProperties.dtype"));
  if (dtype >= static_cast<uint64_t>(c10::ScalarType::NumOptions) ||
      !ElementSize(static_cast<c10::ScalarType>(dtype)).ok()) {
    return absl::DataLossError(absl::StrCat(
        "malformed input: TensorProperties.dtype at byte ", dtype_at, " of ",
        reader.size(), ": ", dtype, " is not a storable c10::ScalarType"));
  }
  p.dtype = static_cast<c10::ScalarType>(dtype);
  const size_t layout_at = reader.position();
  DCP_ASSIGN_OR_RETURN(uint64_t layout,
                       reader.ReadVarint("TensorProperties.layout"));
  if (layout >= static_cast<uint64_t>(c10::Layout::NumOptions)) {
    return absl::DataLossError(absl::StrCat(
        "malformed input: TensorProperties.layout at byte ", layout_at, " of ",
        reader.size(), ": ", layout, " is not a c10::Layout"));
  }
  p.layout = static_cast<c10::Layout>(layout);
  DCP_ASSIGN_OR_RETURN(p.requires_grad,
                       reader.ReadBool("TensorProperties.requires_grad"));
  const size_t format_at = reader.position();
  DCP_ASSIGN_OR_RETURN(uint64_t format,
                       reader.ReadVarint("TensorProperties.memory_format"));
  if (format > static_cast<uint64_t>(MemoryFormat::kPreserve)) {
    return absl::DataLossError(
        absl::StrCat("malformed input: TensorProperties.memory_format at byte ",
                     format_at, " of ", reader.size(), ": ", format,
                     " is not a memory format (0 to 2)"));
  }
  p.memory_format = static_cast<MemoryFormat>(format);
  DCP_ASSIGN_OR_RETURN(p.pin_memory,
                       reader.ReadBool("TensorProperties.pin_memory"));
  return p;
}

void EncodeStorageInfo(const StorageInfo& info, ByteWriter& writer) {
  writer.WriteString(info.relative_path);
  writer.WriteSignedVarint(info.offset);
  writer.WriteSignedVarint(info.length);
}

absl::StatusOr<StorageInfo> DecodeStorageInfo(ByteReader& reader) {
  StorageInfo info;
  DCP_ASSIGN_OR_RETURN(absl::string_view path,
                       reader.ReadString("StorageInfo.relative_path"));
  info.relative_path = std::string(path);
  DCP_ASSIGN_OR_RETURN(info.offset,
                       reader.ReadSignedVarint("StorageInfo.offset"));
  DCP_ASSIGN_OR_RETURN(info.length,
                       reader.ReadSignedVarint("StorageInfo.length"));
  return info;
}

std::string EncodeMetadata(const Metadata& metadata) {
  ByteWriter writer;
  WriteHeader(PayloadKind::kMetadata, writer);

  writer.WriteCount(metadata.state_dict_metadata.size());
  for (const auto& [fqn, item] : metadata.state_dict_metadata) {
    writer.WriteString(fqn);
    EncodeStorageMetadata(item, writer);
  }

  writer.WriteCount(metadata.planner_data.size());
  for (const auto& [fqn, path] : metadata.planner_data) {
    writer.WriteString(fqn);
    EncodeObjectPath(path, writer);
  }

  writer.WriteCount(metadata.storage_data.size());
  for (const auto& [index, info] : metadata.storage_data) {
    EncodeMetadataIndex(index, writer);
    EncodeStorageInfo(info, writer);
  }

  writer.WriteBool(metadata.storage_meta.has_value());
  if (metadata.storage_meta.has_value()) {
    EncodeStorageMeta(*metadata.storage_meta, writer);
  }
  EncodeOptionalString(metadata.version, writer);
  return std::move(writer).Finish();
}

absl::StatusOr<Metadata> DecodeMetadata(absl::string_view bytes) {
  ByteReader reader(bytes);
  absl::Status header = ReadHeader(PayloadKind::kMetadata, reader);
  if (!header.ok()) return Annotate(header, "decoding Metadata");
  absl::StatusOr<Metadata> md = DecodeMetadataBody(reader);
  if (!md.ok()) return Annotate(md.status(), "decoding Metadata");
  return md;
}

}  // namespace dcp
