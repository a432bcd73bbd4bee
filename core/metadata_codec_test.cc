#include "core/metadata_codec.h"

#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "c10/core/Layout.h"
#include "c10/core/ScalarType.h"
#include "core/byte_codec.h"
#include "core/codec_test_util.h"
#include "core/metadata.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/status_matchers.h"

namespace dcp {
namespace {

using ::dcp::test::IsOk;
using ::dcp::test::IsOkAndHolds;
using ::dcp::test::StatusIs;
using ::testing::AllOf;
using ::testing::Eq;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr absl::StatusCode kDataLoss = absl::StatusCode::kDataLoss;

absl::StatusOr<Metadata> Decode(absl::string_view bytes) {
  return DecodeMetadata(bytes);
}
std::string Encode(const Metadata& md) { return EncodeMetadata(md); }

std::string Header() {
  ByteWriter w;
  WriteHeader(PayloadKind::kMetadata, w);
  return std::move(w).Finish();
}

// A checkpoint of a sharded 2-d weight (8 chunks), a 0-d tensor, a bf16
// bias, a bytes value and an optimizer state path with an int element.
Metadata RichMetadata() {
  Metadata md;
  TensorStorageMetadata weight;
  weight.properties.dtype = c10::ScalarType::Float;
  weight.properties.requires_grad = true;
  weight.size = {16, 1 << 20};
  for (int64_t i = 0; i < 8; ++i) {
    weight.chunks.push_back(ChunkStorageMetadata{{2 * i, 0}, {2, 1 << 20}});
    md.storage_data[MetadataIndex("model.weight", Shape{2 * i, 0}, i)] =
        StorageInfo{absl::StrCat("__", i % 4, "_0.distcp"), i * 1000,
                    int64_t{2} << 22};
  }
  md.state_dict_metadata["model.weight"] = weight;

  TensorStorageMetadata scalar;  // 0-d: empty size, one chunk of empty shapes.
  scalar.properties.dtype = c10::ScalarType::Long;
  scalar.chunks.push_back(ChunkStorageMetadata{{}, {}});
  md.state_dict_metadata["optim.state.0.step"] = scalar;
  md.storage_data[MetadataIndex("optim.state.0.step", Shape{})] =
      StorageInfo{"__0_0.distcp", 0, 8};

  TensorStorageMetadata bias;
  bias.properties.dtype = c10::ScalarType::BFloat16;
  bias.properties.layout = c10::kStrided;
  bias.properties.memory_format = MemoryFormat::kChannelsLast;
  bias.properties.pin_memory = true;
  bias.size = {0};  // empty tensor
  md.state_dict_metadata["model.bias"] = bias;

  md.state_dict_metadata["extra"] = BytesStorageMetadata{};
  md.storage_data[MetadataIndex("extra")] =
      StorageInfo{"__1_0.distcp", 123, 45};

  md.planner_data["model.weight"] =
      ObjectPath{std::string("model"), std::string("weight")};
  md.planner_data["optim.state.0.step"] =
      ObjectPath{std::string("optim"), std::string("state"), int64_t{0},
                 std::string("step")};
  md.planner_data["extra"] = ObjectPath{std::string("extra")};
  md.planner_data["neg"] = ObjectPath{std::numeric_limits<int64_t>::min()};

  StorageMeta meta;
  meta.checkpoint_id = "/tmp/ckpt";
  meta.save_id = "0123456789abcdef";
  meta.modules = {"model", "optim", ""};
  md.storage_meta = meta;
  md.version = "1.0.0";
  return md;
}

TEST(MetadataCodecTest, EmptyMetadataIsTiny) {
  const std::string bytes = EncodeMetadata(Metadata{});
  EXPECT_EQ(bytes, std::string("\xd1\x01\x00\x00\x00\x00\x00", 7));
  EXPECT_THAT(DecodeMetadata(bytes), IsOkAndHolds(Eq(Metadata{})));
}

TEST(MetadataCodecTest, RoundTripsRichMetadata) {
  const Metadata md = RichMetadata();
  const std::string bytes = EncodeMetadata(md);
  DCP_ASSERT_OK_AND_ASSIGN(Metadata decoded, DecodeMetadata(bytes));
  EXPECT_EQ(decoded, md);
  // == ignores MetadataIndex hints; check they survive too.
  auto it = md.storage_data.begin();
  for (const auto& [index, info] : decoded.storage_data) {
    EXPECT_EQ(index.index, it->first.index) << index;
    ++it;
  }
  EXPECT_EQ(std::get<TensorStorageMetadata>(
                decoded.state_dict_metadata.at("optim.state.0.step"))
                .chunks,
            (std::vector<ChunkStorageMetadata>{ChunkStorageMetadata{}}));
}

TEST(MetadataCodecTest, RoundTripsUnsetOptionalsAndEmptyContainers) {
  Metadata md = RichMetadata();
  md.storage_meta = StorageMeta{};  // present but all fields unset
  md.version.reset();
  md.planner_data["empty_path"] = ObjectPath{};
  md.storage_data[MetadataIndex("scalar_no_hint", Shape{})] = StorageInfo{};
  EXPECT_THAT(DecodeMetadata(EncodeMetadata(md)), IsOkAndHolds(Eq(md)));
  md.storage_meta.reset();
  EXPECT_THAT(DecodeMetadata(EncodeMetadata(md)), IsOkAndHolds(Eq(md)));
}

TEST(MetadataCodecTest, RoundTripsEveryDtypeAndLayout) {
  Metadata md;
  for (int d = 0; d < static_cast<int>(c10::ScalarType::Undefined); ++d) {
    TensorStorageMetadata t;
    t.properties.dtype = static_cast<c10::ScalarType>(d);
    t.properties.layout =
        static_cast<c10::Layout>(d % static_cast<int>(c10::Layout::NumOptions));
    md.state_dict_metadata[absl::StrCat("t", d)] = t;
  }
  EXPECT_THAT(DecodeMetadata(EncodeMetadata(md)), IsOkAndHolds(Eq(md)));
}

TEST(MetadataCodecTest, EncodingIsDeterministic) {
  const Metadata md = RichMetadata();
  EXPECT_EQ(EncodeMetadata(md), EncodeMetadata(md));

  // The same value built in the opposite insertion order.
  Metadata reversed;
  for (auto it = md.state_dict_metadata.rbegin();
       it != md.state_dict_metadata.rend(); ++it) {
    reversed.state_dict_metadata.insert(*it);
  }
  for (auto it = md.planner_data.rbegin(); it != md.planner_data.rend(); ++it) {
    reversed.planner_data.insert(*it);
  }
  for (auto it = md.storage_data.rbegin(); it != md.storage_data.rend(); ++it) {
    reversed.storage_data.insert(*it);
  }
  reversed.storage_meta = md.storage_meta;
  reversed.version = md.version;
  ASSERT_EQ(reversed, md);
  EXPECT_EQ(EncodeMetadata(reversed), EncodeMetadata(md));
}

TEST(MetadataCodecTest, EveryTruncationFails) {
  dcp::test::ExpectEveryTruncationFails(EncodeMetadata(RichMetadata()), Decode);
}

TEST(MetadataCodecTest, TrailingBytesFail) {
  std::string bytes = EncodeMetadata(RichMetadata());
  bytes.push_back('\0');
  EXPECT_THAT(DecodeMetadata(bytes),
              StatusIs(kDataLoss, AllOf(StartsWith("decoding Metadata: "),
                                        HasSubstr("trailing bytes"))));
}

TEST(MetadataCodecTest, RandomAndMutatedInputsNeverCrash) {
  dcp::test::FuzzDecoder(EncodeMetadata(RichMetadata()), Header(), Decode,
                         Encode, dcp::test::CodecTestSeed());
}

TEST(MetadataCodecTest, HugeCountFailsFastWithoutAllocating) {
  for (uint64_t count : {uint64_t{1} << 40, uint64_t{1} << 60,
                         std::numeric_limits<uint64_t>::max()}) {
    ByteWriter w;
    WriteHeader(PayloadKind::kMetadata, w);
    w.WriteCount(count);
    EXPECT_THAT(
        DecodeMetadata(w.data()),
        StatusIs(kDataLoss, AllOf(HasSubstr("state_dict_metadata count"),
                                  HasSubstr(absl::StrCat("claims ", count)))));
  }
  // A huge chunk count inside an otherwise valid entry.
  ByteWriter w;
  WriteHeader(PayloadKind::kMetadata, w);
  w.WriteCount(1);
  w.WriteString("w");
  w.WriteU8(0);  // tensor
  EncodeTensorProperties(TensorProperties{}, w);
  EncodeShape({4}, w);
  w.WriteCount(uint64_t{1} << 40);
  EXPECT_THAT(DecodeMetadata(w.data()),
              StatusIs(kDataLoss,
                       AllOf(HasSubstr("state_dict_metadata entry 0"),
                             HasSubstr("TensorStorageMetadata.chunks count"))));
}

TEST(MetadataCodecTest, WrongPayloadKindIsClear) {
  ByteWriter w;
  WriteHeader(PayloadKind::kSavePlan, w);
  w.WriteCount(0);
  EXPECT_THAT(DecodeMetadata(w.data()),
              StatusIs(kDataLoss,
                       Eq("decoding Metadata: wrong payload kind: expected a "
                          "Metadata payload (magic 0xd1) but found a SavePlan "
                          "payload (magic 0xd2)")));
}

// Encodes a Metadata holding one tensor whose properties are written by
// `write_properties`.
std::string OneTensorWithProperties(void (*write_properties)(ByteWriter&)) {
  ByteWriter w;
  WriteHeader(PayloadKind::kMetadata, w);
  w.WriteCount(1);
  w.WriteString("w");
  w.WriteU8(0);
  write_properties(w);
  EncodeShape({}, w);
  w.WriteCount(0);
  w.WriteCount(0);
  w.WriteCount(0);
  w.WriteBool(false);
  w.WriteBool(false);
  return std::move(w).Finish();
}

TEST(MetadataCodecTest, ValidatesEnumsAndTags) {
  EXPECT_THAT(DecodeMetadata(OneTensorWithProperties([](ByteWriter& w) {
                EncodeTensorProperties(TensorProperties{}, w);
              })),
              IsOk());
  EXPECT_THAT(
      DecodeMetadata(OneTensorWithProperties([](ByteWriter& w) {
        w.WriteVarint(static_cast<uint64_t>(c10::ScalarType::Undefined));
        w.WriteVarint(0);
        w.WriteBool(false);
        w.WriteVarint(0);
        w.WriteBool(false);
      })),
      StatusIs(kDataLoss, HasSubstr("TensorProperties.dtype at byte 6")));
  EXPECT_THAT(DecodeMetadata(OneTensorWithProperties([](ByteWriter& w) {
                w.WriteVarint(1000);
                w.WriteVarint(0);
                w.WriteBool(false);
                w.WriteVarint(0);
                w.WriteBool(false);
              })),
              StatusIs(kDataLoss, HasSubstr("1000 is not a storable")));
  EXPECT_THAT(DecodeMetadata(OneTensorWithProperties([](ByteWriter& w) {
                w.WriteVarint(6);
                w.WriteVarint(static_cast<uint64_t>(c10::Layout::NumOptions));
                w.WriteBool(false);
                w.WriteVarint(0);
                w.WriteBool(false);
              })),
              StatusIs(kDataLoss, HasSubstr("is not a c10::Layout")));
  EXPECT_THAT(DecodeMetadata(OneTensorWithProperties([](ByteWriter& w) {
                w.WriteVarint(6);
                w.WriteVarint(0);
                w.WriteBool(false);
                w.WriteVarint(3);
                w.WriteBool(false);
              })),
              StatusIs(kDataLoss, HasSubstr("is not a memory format")));

  // An unknown StorageMetadata tag.
  ByteWriter w;
  WriteHeader(PayloadKind::kMetadata, w);
  w.WriteCount(1);
  w.WriteString("w");
  w.WriteU8(7);
  EXPECT_THAT(DecodeMetadata(w.data()),
              StatusIs(kDataLoss, HasSubstr("StorageMetadata tag")));
}

TEST(MetadataCodecTest, EncodesInvalidDtypeButRefusesToDecodeIt) {
  Metadata md;
  TensorStorageMetadata t;
  t.properties.dtype = static_cast<c10::ScalarType>(-1);
  md.state_dict_metadata["w"] = t;
  EXPECT_THAT(DecodeMetadata(EncodeMetadata(md)),
              StatusIs(kDataLoss, HasSubstr("255 is not a storable")));
}

TEST(MetadataCodecTest, RejectsUnsortedOrDuplicateKeys) {
  ByteWriter w;
  WriteHeader(PayloadKind::kMetadata, w);
  w.WriteCount(2);
  w.WriteString("b");
  w.WriteU8(1);
  w.WriteString("a");
  w.WriteU8(1);
  EXPECT_THAT(
      DecodeMetadata(w.data()),
      StatusIs(kDataLoss, AllOf(HasSubstr("state_dict_metadata entry 1"),
                                HasSubstr("key \"a\" is not after"))));

  // Two storage_data keys equal up to the index hint.
  ByteWriter s;
  WriteHeader(PayloadKind::kMetadata, s);
  s.WriteCount(0);
  s.WriteCount(0);
  s.WriteCount(2);
  EncodeMetadataIndex(MetadataIndex("w", Shape{0}, 0), s);
  EncodeStorageInfo(StorageInfo{}, s);
  EncodeMetadataIndex(MetadataIndex("w", Shape{0}, 1), s);
  EncodeStorageInfo(StorageInfo{}, s);
  EXPECT_THAT(DecodeMetadata(s.data()),
              StatusIs(kDataLoss, HasSubstr("storage_data entry 1")));
}

TEST(MetadataCodecTest, ErrorsNameEntryAndField) {
  Metadata md;
  md.storage_data[MetadataIndex("abc", Shape{1})] =
      StorageInfo{"__0_0.distcp", 1, 2};
  std::string bytes = EncodeMetadata(md);
  // Cut inside StorageInfo.relative_path.
  const size_t cut = bytes.find("__0_0") + 2;
  EXPECT_THAT(
      DecodeMetadata(absl::string_view(bytes).substr(0, cut)),
      StatusIs(kDataLoss,
               Eq(absl::StrCat("decoding Metadata: storage_data entry 0: "
                               "truncated input: reading "
                               "StorageInfo.relative_path (12 bytes) at byte ",
                               cut - 2, " of ", cut))));
}

TEST(ShapeCodecTest, ErrorNamesRole) {
  ByteWriter w;
  w.WriteCount(2);
  w.WriteSignedVarint(5);
  w.WriteU8(0x80);  // The second element's varint never ends.
  ByteReader r(w.data());
  EXPECT_THAT(DecodeShape(r, "ReadItem.lengths"),
              StatusIs(kDataLoss,
                       Eq("ReadItem.lengths: truncated input: reading Shape "
                          "element at byte 2 of 3")));
}

TEST(PartCodecTest, PartsRoundTrip) {
  ByteWriter w;
  const MetadataIndex index(
      "a.b", Shape{-1, 0, std::numeric_limits<int64_t>::max()}, -5);
  const ChunkStorageMetadata chunk{{1, 2}, {3, 4}};
  TensorProperties props;
  props.dtype = c10::ScalarType::QUInt2x4;
  props.layout = c10::kSparseCsr;
  const StorageInfo info{"x", -1, std::numeric_limits<int64_t>::min()};
  EncodeMetadataIndex(index, w);
  EncodeChunkStorageMetadata(chunk, w);
  EncodeTensorProperties(props, w);
  EncodeStorageInfo(info, w);
  const ObjectPath path{std::string("optim"), int64_t{-3}, std::string("")};
  EncodeObjectPath(path, w);
  ByteReader r(w.data());
  DCP_ASSERT_OK_AND_ASSIGN(MetadataIndex decoded_index, DecodeMetadataIndex(r));
  EXPECT_EQ(decoded_index, index);
  EXPECT_EQ(decoded_index.index, index.index);
  EXPECT_THAT(DecodeChunkStorageMetadata(r), IsOkAndHolds(Eq(chunk)));
  EXPECT_THAT(DecodeTensorProperties(r), IsOkAndHolds(Eq(props)));
  EXPECT_THAT(DecodeStorageInfo(r), IsOkAndHolds(Eq(info)));
  DCP_ASSERT_OK_AND_ASSIGN(ObjectPath decoded_path, DecodeObjectPath(r));
  EXPECT_TRUE(decoded_path == path);
  EXPECT_THAT(r.ExpectEnd(), IsOk());
}

}  // namespace
}  // namespace dcp
