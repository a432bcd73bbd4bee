#include "planner/plan_codec.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/byte_codec.h"
#include "core/metadata.h"
#include "core/metadata_codec.h"
#include "core/status.h"

namespace dcp {
namespace {

// Lower bounds on encoded sizes, for ByteReader::ReadCount.
constexpr size_t kMinWriteItemBytes =
    kMinMetadataIndexBytes + /*type*/ 1 + /*presence*/ 1;
constexpr size_t kMinReadItemBytes =
    /*type*/ 1 + 2 * kMinMetadataIndexBytes + 3 * kMinShapeBytes;
constexpr size_t kMinWriteResultBytes =
    kMinMetadataIndexBytes + /*size*/ 1 + kMinStorageInfoBytes;

// Decodes `count` items with `decode_one`, annotating errors with the item
// number.
template <typename T, typename DecodeOne>
absl::StatusOr<std::vector<T>> DecodeItems(ByteReader& reader,
                                           absl::string_view what,
                                           size_t min_bytes,
                                           DecodeOne decode_one) {
  DCP_ASSIGN_OR_RETURN(size_t n, reader.ReadCount(what, min_bytes));
  std::vector<T> items;
  items.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    absl::StatusOr<T> item = decode_one(reader);
    if (!item.ok()) return Annotate(item.status(), absl::StrCat("item ", i));
    items.push_back(*std::move(item));
  }
  return items;
}

// Runs `decode_body` after the header, requires the input to end there, and
// prefixes errors with "decoding <kind>".
template <typename T, typename DecodeBody>
absl::StatusOr<T> DecodePayload(absl::string_view bytes, PayloadKind kind,
                                DecodeBody decode_body) {
  ByteReader reader(bytes);
  absl::StatusOr<T> value = [&]() -> absl::StatusOr<T> {
    DCP_RETURN_IF_ERROR(ReadHeader(kind, reader));
    DCP_ASSIGN_OR_RETURN(T result, decode_body(reader));
    DCP_RETURN_IF_ERROR(reader.ExpectEnd());
    return result;
  }();
  if (!value.ok()) {
    return Annotate(value.status(),
                    absl::StrCat("decoding ", PayloadKindName(kind)));
  }
  return value;
}

void EncodeWriteItem(const WriteItem& item, ByteWriter& writer) {
  EncodeMetadataIndex(item.index, writer);
  writer.WriteVarint(static_cast<uint32_t>(item.type));
  writer.WriteBool(item.tensor_data.has_value());
  if (item.tensor_data.has_value()) {
    EncodeChunkStorageMetadata(item.tensor_data->chunk, writer);
    EncodeTensorProperties(item.tensor_data->properties, writer);
    EncodeShape(item.tensor_data->size, writer);
  }
}

absl::StatusOr<WriteItem> DecodeWriteItem(ByteReader& reader) {
  WriteItem item;
  DCP_ASSIGN_OR_RETURN(item.index, DecodeMetadataIndex(reader));
  const size_t type_at = reader.position();
  DCP_ASSIGN_OR_RETURN(uint64_t type, reader.ReadVarint("WriteItem.type"));
  if (type < static_cast<uint64_t>(WriteItemType::kTensor) ||
      type > static_cast<uint64_t>(WriteItemType::kByteIo)) {
    return absl::DataLossError(absl::StrCat(
        "malformed input: WriteItem.type at byte ", type_at, " of ",
        reader.size(), ": ", type, " is not a WriteItemType (1 to 3)"));
  }
  item.type = static_cast<WriteItemType>(type);
  DCP_ASSIGN_OR_RETURN(bool has_tensor_data,
                       reader.ReadBool("WriteItem.tensor_data presence"));
  const bool wants_tensor_data = item.type != WriteItemType::kByteIo;
  if (has_tensor_data != wants_tensor_data) {
    return reader.Malformed(
        "WriteItem.tensor_data presence",
        absl::StrCat("item \"", absl::CEscape(item.index.fqn), "\" of type ",
                     type,
                     wants_tensor_data ? " lacks tensor data"
                                       : " (BYTE_IO) has tensor data"));
  }
  if (has_tensor_data) {
    TensorWriteData data;
    DCP_ASSIGN_OR_RETURN(data.chunk, DecodeChunkStorageMetadata(reader));
    DCP_ASSIGN_OR_RETURN(data.properties, DecodeTensorProperties(reader));
    DCP_ASSIGN_OR_RETURN(data.size,
                         DecodeShape(reader, "TensorWriteData.size"));
    item.tensor_data = std::move(data);
  }
  return item;
}

void EncodeReadItem(const ReadItem& item, ByteWriter& writer) {
  writer.WriteVarint(static_cast<uint32_t>(item.type));
  EncodeMetadataIndex(item.dest_index, writer);
  EncodeShape(item.dest_offsets, writer);
  EncodeMetadataIndex(item.storage_index, writer);
  EncodeShape(item.storage_offsets, writer);
  EncodeShape(item.lengths, writer);
}

absl::StatusOr<ReadItem> DecodeReadItem(ByteReader& reader) {
  ReadItem item;
  const size_t type_at = reader.position();
  DCP_ASSIGN_OR_RETURN(uint64_t type, reader.ReadVarint("ReadItem.type"));
  if (type < static_cast<uint64_t>(LoadItemType::kTensor) ||
      type > static_cast<uint64_t>(LoadItemType::kByteIo)) {
    return absl::DataLossError(absl::StrCat(
        "malformed input: ReadItem.type at byte ", type_at, " of ",
        reader.size(), ": ", type, " is not a LoadItemType (1 to 2)"));
  }
  item.type = static_cast<LoadItemType>(type);
  DCP_ASSIGN_OR_RETURN(item.dest_index, DecodeMetadataIndex(reader));
  DCP_ASSIGN_OR_RETURN(item.dest_offsets,
                       DecodeShape(reader, "ReadItem.dest_offsets"));
  DCP_ASSIGN_OR_RETURN(item.storage_index, DecodeMetadataIndex(reader));
  DCP_ASSIGN_OR_RETURN(item.storage_offsets,
                       DecodeShape(reader, "ReadItem.storage_offsets"));
  DCP_ASSIGN_OR_RETURN(item.lengths, DecodeShape(reader, "ReadItem.lengths"));
  return item;
}

void EncodeWriteResult(const WriteResult& result, ByteWriter& writer) {
  EncodeMetadataIndex(result.index, writer);
  writer.WriteSignedVarint(result.size_in_bytes);
  EncodeStorageInfo(result.storage_data, writer);
}

absl::StatusOr<WriteResult> DecodeWriteResult(ByteReader& reader) {
  WriteResult result;
  DCP_ASSIGN_OR_RETURN(result.index, DecodeMetadataIndex(reader));
  DCP_ASSIGN_OR_RETURN(result.size_in_bytes,
                       reader.ReadSignedVarint("WriteResult.size_in_bytes"));
  DCP_ASSIGN_OR_RETURN(result.storage_data, DecodeStorageInfo(reader));
  return result;
}

}  // namespace

std::string EncodeSavePlan(const SavePlan& plan) {
  ByteWriter writer;
  WriteHeader(PayloadKind::kSavePlan, writer);
  writer.WriteCount(plan.items.size());
  for (const WriteItem& item : plan.items) EncodeWriteItem(item, writer);
  writer.WriteString(plan.storage_data);
  writer.WriteString(plan.planner_data);
  writer.WriteBool(plan.usable);
  return std::move(writer).Finish();
}

absl::StatusOr<SavePlan> DecodeSavePlan(absl::string_view bytes) {
  return DecodePayload<SavePlan>(
      bytes, PayloadKind::kSavePlan,
      [](ByteReader& reader) -> absl::StatusOr<SavePlan> {
        SavePlan plan;
        DCP_ASSIGN_OR_RETURN(
            plan.items,
            DecodeItems<WriteItem>(reader, "SavePlan.items", kMinWriteItemBytes,
                                   DecodeWriteItem));
        DCP_ASSIGN_OR_RETURN(absl::string_view storage_data,
                             reader.ReadString("SavePlan.storage_data"));
        plan.storage_data = std::string(storage_data);
        DCP_ASSIGN_OR_RETURN(absl::string_view planner_data,
                             reader.ReadString("SavePlan.planner_data"));
        plan.planner_data = std::string(planner_data);
        DCP_ASSIGN_OR_RETURN(plan.usable, reader.ReadBool("SavePlan.usable"));
        return plan;
      });
}

std::string EncodeLoadPlan(const LoadPlan& plan) {
  ByteWriter writer;
  WriteHeader(PayloadKind::kLoadPlan, writer);
  writer.WriteCount(plan.items.size());
  for (const ReadItem& item : plan.items) EncodeReadItem(item, writer);
  writer.WriteString(plan.storage_data);
  writer.WriteString(plan.planner_data);
  return std::move(writer).Finish();
}

absl::StatusOr<LoadPlan> DecodeLoadPlan(absl::string_view bytes) {
  return DecodePayload<LoadPlan>(
      bytes, PayloadKind::kLoadPlan,
      [](ByteReader& reader) -> absl::StatusOr<LoadPlan> {
        LoadPlan plan;
        DCP_ASSIGN_OR_RETURN(
            plan.items,
            DecodeItems<ReadItem>(reader, "LoadPlan.items", kMinReadItemBytes,
                                  DecodeReadItem));
        DCP_ASSIGN_OR_RETURN(absl::string_view storage_data,
                             reader.ReadString("LoadPlan.storage_data"));
        plan.storage_data = std::string(storage_data);
        DCP_ASSIGN_OR_RETURN(absl::string_view planner_data,
                             reader.ReadString("LoadPlan.planner_data"));
        plan.planner_data = std::string(planner_data);
        return plan;
      });
}

std::string EncodeWriteResults(const std::vector<WriteResult>& results) {
  ByteWriter writer;
  WriteHeader(PayloadKind::kWriteResults, writer);
  writer.WriteCount(results.size());
  for (const WriteResult& result : results) EncodeWriteResult(result, writer);
  return std::move(writer).Finish();
}

absl::StatusOr<std::vector<WriteResult>> DecodeWriteResults(
    absl::string_view bytes) {
  return DecodePayload<std::vector<WriteResult>>(
      bytes, PayloadKind::kWriteResults, [](ByteReader& reader) {
        return DecodeItems<WriteResult>(
            reader, "WriteResults", kMinWriteResultBytes, DecodeWriteResult);
      });
}

}  // namespace dcp
