#include "storage/metadata_sidecar.h"

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/byte_codec.h"
#include "core/metadata_codec.h"
#include "core/status.h"
#include "storage/crc32.h"

namespace dcp {
namespace {

constexpr absl::string_view kMagic = "DCPMETA1";
constexpr size_t kHeaderSize = 8 + 8 + 4 + 4 + 8;

void AppendLe(std::string& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) {
    out.push_back(static_cast<char>(value >> (8 * i)));
  }
}

uint64_t LoadLe(absl::string_view in, size_t pos, int bytes) {
  uint64_t value = 0;
  for (int i = 0; i < bytes; ++i) {
    value |= uint64_t{static_cast<uint8_t>(in[pos + i])} << (8 * i);
  }
  return value;
}

}  // namespace

std::string EncodeMetadataSidecar(const Metadata& metadata,
                                  absl::string_view metadata_pickle) {
  const std::string payload = EncodeMetadata(metadata);
  std::string out;
  out.reserve(kHeaderSize + payload.size());
  out.append(kMagic.data(), kMagic.size());
  AppendLe(out, metadata_pickle.size(), 8);
  AppendLe(out, Crc32(metadata_pickle), 4);
  AppendLe(out, Crc32(payload), 4);
  AppendLe(out, payload.size(), 8);
  out.append(payload);
  return out;
}

absl::StatusOr<absl::string_view> MetadataSidecarPayload(
    absl::string_view sidecar, absl::string_view metadata_pickle) {
  if (sidecar.size() < kHeaderSize || sidecar.substr(0, 8) != kMagic) {
    return absl::DataLossError(
        absl::StrCat("not a dcp metadata sidecar (", sidecar.size(),
                     " bytes, expected the header \"", kMagic, "\")"));
  }
  const uint64_t pickle_size = LoadLe(sidecar, 8, 8);
  const uint32_t pickle_crc = static_cast<uint32_t>(LoadLe(sidecar, 16, 4));
  const uint32_t payload_crc = static_cast<uint32_t>(LoadLe(sidecar, 20, 4));
  const uint64_t payload_size = LoadLe(sidecar, 24, 8);
  if (payload_size != sidecar.size() - kHeaderSize) {
    return absl::DataLossError(
        absl::StrCat("metadata sidecar says its payload is ", payload_size,
                     " bytes, but it has ", sidecar.size() - kHeaderSize));
  }
  const absl::string_view payload = sidecar.substr(kHeaderSize);
  if (Crc32(payload) != payload_crc) {
    return absl::DataLossError("metadata sidecar fails its CRC-32 check");
  }
  if (pickle_size != metadata_pickle.size() ||
      Crc32(metadata_pickle) != pickle_crc) {
    return absl::FailedPreconditionError(
        absl::StrCat("metadata sidecar describes a .metadata of ", pickle_size,
                     " bytes with another CRC-32, not this one of ",
                     metadata_pickle.size(), " bytes"));
  }
  ByteReader header(payload);
  absl::Status kind = ReadHeader(PayloadKind::kMetadata, header);
  if (!kind.ok()) return Annotate(kind, "the metadata sidecar's payload");
  return payload;
}

absl::StatusOr<Metadata> DecodeMetadataSidecar(
    absl::string_view sidecar, absl::string_view metadata_pickle) {
  DCP_ASSIGN_OR_RETURN(absl::string_view payload,
                       MetadataSidecarPayload(sidecar, metadata_pickle));
  absl::StatusOr<Metadata> metadata = DecodeMetadata(payload);
  if (!metadata.ok()) {
    return Annotate(metadata.status(), "decoding the metadata sidecar");
  }
  return metadata;
}

}  // namespace dcp
