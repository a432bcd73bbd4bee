#include "planner/plan_codec.h"

#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "c10/core/ScalarType.h"
#include "core/byte_codec.h"
#include "core/codec_test_util.h"
#include "core/metadata.h"
#include "core/metadata_codec.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "planner/load_plan.h"
#include "planner/save_plan.h"
#include "planner/write_result.h"
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

std::string Header(PayloadKind kind) {
  ByteWriter w;
  WriteHeader(kind, w);
  return std::move(w).Finish();
}

// Shards of a 2-d tensor, a replicated 0-d tensor, an empty tensor and a
// bytes item, with and without index hints.
SavePlan RichSavePlan() {
  SavePlan plan;
  for (int64_t i = 0; i < 6; ++i) {
    WriteItem item;
    item.index = MetadataIndex("layers.0.weight", Shape{4 * i, 0}, i);
    item.type = WriteItemType::kShard;
    TensorWriteData data;
    data.chunk = ChunkStorageMetadata{{4 * i, 0}, {4, 1024}};
    data.properties.dtype = c10::kBFloat16;
    data.properties.requires_grad = (i % 2) == 0;
    data.size = {24, 1024};
    item.tensor_data = data;
    plan.items.push_back(item);
  }
  WriteItem scalar;
  scalar.index = MetadataIndex("step", Shape{});
  scalar.type = WriteItemType::kTensor;
  scalar.tensor_data = TensorWriteData{ChunkStorageMetadata{}, {}, {}};
  scalar.tensor_data->properties.dtype = c10::kLong;
  plan.items.push_back(scalar);
  WriteItem empty;
  empty.index = MetadataIndex("empty", Shape{0}, 0);
  empty.type = WriteItemType::kTensor;
  empty.tensor_data = TensorWriteData{ChunkStorageMetadata{{0}, {0}}, {}, {0}};
  empty.tensor_data->properties.memory_format = MemoryFormat::kPreserve;
  empty.tensor_data->properties.pin_memory = true;
  plan.items.push_back(empty);
  WriteItem bytes_item;
  bytes_item.index = MetadataIndex("config");
  bytes_item.type = WriteItemType::kByteIo;
  plan.items.push_back(bytes_item);
  plan.storage_data = std::string("__3_\0\xff", 6);
  plan.planner_data = "planner";
  plan.usable = false;
  return plan;
}

LoadPlan RichLoadPlan() {
  LoadPlan plan;
  for (int64_t i = 0; i < 5; ++i) {
    ReadItem item;
    item.type = LoadItemType::kTensor;
    item.dest_index = MetadataIndex("w", Shape{0, 0}, 0);
    item.dest_offsets = {i, 0};
    item.storage_index = MetadataIndex("w", Shape{i * 3, 0}, i);
    item.storage_offsets = {1, 0};
    item.lengths = {1, 300};
    plan.items.push_back(item);
  }
  ReadItem scalar;
  scalar.type = LoadItemType::kTensor;
  scalar.dest_index = MetadataIndex("step", Shape{});
  scalar.storage_index = MetadataIndex("step", Shape{});
  plan.items.push_back(scalar);
  ReadItem bytes_item;
  bytes_item.type = LoadItemType::kByteIo;
  bytes_item.dest_index = MetadataIndex("config");
  bytes_item.dest_offsets = {0};
  bytes_item.storage_index = MetadataIndex("config");
  bytes_item.storage_offsets = {0};
  bytes_item.lengths = {0};
  plan.items.push_back(bytes_item);
  plan.storage_data = "reader";
  plan.planner_data = std::string(300, 'p');  // a multi-byte length
  return plan;
}

std::vector<WriteResult> RichWriteResults() {
  std::vector<WriteResult> results;
  for (int64_t i = 0; i < 7; ++i) {
    results.push_back(WriteResult{
        MetadataIndex("w", Shape{i, 0}, i), 4096 * i,
        StorageInfo{absl::StrCat("__", i, "_0.distcp"), 4096 * i, 4096}});
  }
  results.push_back(WriteResult{MetadataIndex("config"), 17,
                                StorageInfo{"__0_0.distcp", 0, 17}});
  results.push_back(
      WriteResult{MetadataIndex("scalar", Shape{}), -1,
                  StorageInfo{"", -5, std::numeric_limits<int64_t>::max()}});
  return results;
}

template <typename T>
void ExpectSameHints(const std::vector<T>& a, const std::vector<T>& b,
                     MetadataIndex T::*field) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ((a[i].*field).index, (b[i].*field).index) << "item " << i;
  }
}

// ---- SavePlan ----------------------------------------------------------

absl::StatusOr<SavePlan> DecodeSave(absl::string_view b) {
  return DecodeSavePlan(b);
}
std::string EncodeSave(const SavePlan& p) { return EncodeSavePlan(p); }

TEST(SavePlanCodecTest, RoundTrips) {
  const SavePlan plan = RichSavePlan();
  DCP_ASSERT_OK_AND_ASSIGN(SavePlan decoded,
                           DecodeSavePlan(EncodeSavePlan(plan)));
  EXPECT_EQ(decoded, plan);
  ExpectSameHints(decoded.items, plan.items, &WriteItem::index);
  EXPECT_THAT(DecodeSavePlan(EncodeSavePlan(SavePlan{})),
              IsOkAndHolds(Eq(SavePlan{})));
}

TEST(SavePlanCodecTest, IsDeterministicAndCompact) {
  const SavePlan plan = RichSavePlan();
  EXPECT_EQ(EncodeSavePlan(plan), EncodeSavePlan(RichSavePlan()));
  // An empty plan: header, item count, two empty strings, usable.
  EXPECT_EQ(EncodeSavePlan(SavePlan{}),
            std::string("\xd2\x01\x00\x00\x00\x01", 6));
}

TEST(SavePlanCodecTest, EveryTruncationFails) {
  dcp::test::ExpectEveryTruncationFails(EncodeSavePlan(RichSavePlan()),
                                        DecodeSave);
}

TEST(SavePlanCodecTest, RandomAndMutatedInputsNeverCrash) {
  dcp::test::FuzzDecoder(EncodeSavePlan(RichSavePlan()),
                         Header(PayloadKind::kSavePlan), DecodeSave, EncodeSave,
                         dcp::test::CodecTestSeed());
}

TEST(SavePlanCodecTest, HugeItemCountFailsFast) {
  ByteWriter w;
  WriteHeader(PayloadKind::kSavePlan, w);
  w.WriteCount(uint64_t{1} << 40);
  EXPECT_THAT(DecodeSavePlan(w.data()),
              StatusIs(kDataLoss, AllOf(StartsWith("decoding SavePlan: "),
                                        HasSubstr("SavePlan.items count"),
                                        HasSubstr("claims 1099511627776"))));
}

TEST(SavePlanCodecTest, RejectsWrongPayloadKinds) {
  EXPECT_THAT(DecodeSavePlan(EncodeMetadata(Metadata{})),
              StatusIs(kDataLoss,
                       Eq("decoding SavePlan: wrong payload kind: expected a "
                          "SavePlan payload (magic 0xd2) but found a Metadata "
                          "payload (magic 0xd1)")));
  EXPECT_THAT(DecodeMetadata(EncodeSavePlan(RichSavePlan())),
              StatusIs(kDataLoss, HasSubstr("found a SavePlan payload")));
  EXPECT_THAT(DecodeLoadPlan(EncodeSavePlan(SavePlan{})),
              StatusIs(kDataLoss, HasSubstr("found a SavePlan payload")));
  EXPECT_THAT(DecodeWriteResults(EncodeLoadPlan(LoadPlan{})),
              StatusIs(kDataLoss, HasSubstr("found a LoadPlan payload")));
}

TEST(SavePlanCodecTest, ErrorNamesItemAndField) {
  SavePlan plan = RichSavePlan();
  const std::string bytes = EncodeSavePlan(plan);
  // Cut in the middle of item 7's fqn ("empty").
  const size_t cut = bytes.find("empty") + 3;
  EXPECT_THAT(DecodeSavePlan(absl::string_view(bytes).substr(0, cut)),
              StatusIs(kDataLoss,
                       Eq(absl::StrCat("decoding SavePlan: item 7: truncated "
                                       "input: reading MetadataIndex.fqn (5 "
                                       "bytes) at byte ",
                                       cut - 3, " of ", cut))));
}

TEST(SavePlanCodecTest, ValidatesItemTypeAndTensorData) {
  auto encode_item = [](uint64_t type, bool with_tensor_data) {
    ByteWriter w;
    WriteHeader(PayloadKind::kSavePlan, w);
    w.WriteCount(1);
    EncodeMetadataIndex(MetadataIndex("w", Shape{0}), w);
    w.WriteVarint(type);
    w.WriteBool(with_tensor_data);
    if (with_tensor_data) {
      EncodeChunkStorageMetadata(ChunkStorageMetadata{{0}, {1}}, w);
      EncodeTensorProperties(TensorProperties{}, w);
      EncodeShape({1}, w);
    }
    w.WriteString("");
    w.WriteString("");
    w.WriteBool(true);
    return std::move(w).Finish();
  };
  EXPECT_THAT(DecodeSavePlan(encode_item(2, true)), IsOk());
  EXPECT_THAT(DecodeSavePlan(encode_item(3, false)), IsOk());
  EXPECT_THAT(DecodeSavePlan(encode_item(0, false)),
              StatusIs(kDataLoss, HasSubstr("0 is not a WriteItemType")));
  EXPECT_THAT(DecodeSavePlan(encode_item(4, true)),
              StatusIs(kDataLoss, HasSubstr("4 is not a WriteItemType")));
  EXPECT_THAT(DecodeSavePlan(encode_item(1, false)),
              StatusIs(kDataLoss,
                       AllOf(HasSubstr("item 0"),
                             HasSubstr("\"w\" of type 1 lacks tensor data"))));
  EXPECT_THAT(DecodeSavePlan(encode_item(3, true)),
              StatusIs(kDataLoss, HasSubstr("has tensor data")));
}

// ---- LoadPlan ----------------------------------------------------------

absl::StatusOr<LoadPlan> DecodeLoad(absl::string_view b) {
  return DecodeLoadPlan(b);
}
std::string EncodeLoad(const LoadPlan& p) { return EncodeLoadPlan(p); }

TEST(LoadPlanCodecTest, RoundTrips) {
  const LoadPlan plan = RichLoadPlan();
  DCP_ASSERT_OK_AND_ASSIGN(LoadPlan decoded,
                           DecodeLoadPlan(EncodeLoadPlan(plan)));
  EXPECT_EQ(decoded, plan);
  ExpectSameHints(decoded.items, plan.items, &ReadItem::dest_index);
  ExpectSameHints(decoded.items, plan.items, &ReadItem::storage_index);
  EXPECT_THAT(DecodeLoadPlan(EncodeLoadPlan(LoadPlan{})),
              IsOkAndHolds(Eq(LoadPlan{})));
}

TEST(LoadPlanCodecTest, IsDeterministic) {
  EXPECT_EQ(EncodeLoadPlan(RichLoadPlan()), EncodeLoadPlan(RichLoadPlan()));
}

TEST(LoadPlanCodecTest, EveryTruncationFails) {
  dcp::test::ExpectEveryTruncationFails(EncodeLoadPlan(RichLoadPlan()),
                                        DecodeLoad);
}

TEST(LoadPlanCodecTest, RandomAndMutatedInputsNeverCrash) {
  dcp::test::FuzzDecoder(EncodeLoadPlan(RichLoadPlan()),
                         Header(PayloadKind::kLoadPlan), DecodeLoad, EncodeLoad,
                         dcp::test::CodecTestSeed() + 1);
}

TEST(LoadPlanCodecTest, HugeCountsFailFast) {
  ByteWriter w;
  WriteHeader(PayloadKind::kLoadPlan, w);
  w.WriteCount(uint64_t{1} << 40);
  EXPECT_THAT(DecodeLoadPlan(w.data()),
              StatusIs(kDataLoss, HasSubstr("LoadPlan.items count")));
  // A huge shape inside an item.
  ByteWriter s;
  WriteHeader(PayloadKind::kLoadPlan, s);
  s.WriteCount(1);
  s.WriteVarint(1);
  EncodeMetadataIndex(MetadataIndex("w", Shape{0}), s);
  s.WriteCount(uint64_t{1} << 40);
  s.WriteString(std::string(20, 'x'));
  EXPECT_THAT(
      DecodeLoadPlan(s.data()),
      StatusIs(kDataLoss, AllOf(HasSubstr("item 0"),
                                HasSubstr("ReadItem.dest_offsets count"))));
}

TEST(LoadPlanCodecTest, ValidatesItemType) {
  std::string bytes = EncodeLoadPlan(RichLoadPlan());
  // The first item's type is the byte after the header and the item count.
  ASSERT_EQ(bytes[3], '\x01');
  bytes[3] = '\x03';
  EXPECT_THAT(DecodeLoadPlan(bytes),
              StatusIs(kDataLoss, AllOf(HasSubstr("item 0"),
                                        HasSubstr("3 is not a LoadItemType"))));
}

// ---- WriteResults ------------------------------------------------------

absl::StatusOr<std::vector<WriteResult>> DecodeResults(absl::string_view b) {
  return DecodeWriteResults(b);
}
std::string EncodeResults(const std::vector<WriteResult>& r) {
  return EncodeWriteResults(r);
}

TEST(WriteResultsCodecTest, RoundTrips) {
  const std::vector<WriteResult> results = RichWriteResults();
  DCP_ASSERT_OK_AND_ASSIGN(std::vector<WriteResult> decoded,
                           DecodeWriteResults(EncodeWriteResults(results)));
  EXPECT_EQ(decoded, results);
  ExpectSameHints(decoded, results, &WriteResult::index);
  EXPECT_THAT(DecodeWriteResults(EncodeWriteResults({})),
              IsOkAndHolds(::testing::IsEmpty()));
}

TEST(WriteResultsCodecTest, IsDeterministic) {
  EXPECT_EQ(EncodeWriteResults(RichWriteResults()),
            EncodeWriteResults(RichWriteResults()));
}

TEST(WriteResultsCodecTest, EveryTruncationFails) {
  dcp::test::ExpectEveryTruncationFails(EncodeWriteResults(RichWriteResults()),
                                        DecodeResults);
}

TEST(WriteResultsCodecTest, RandomAndMutatedInputsNeverCrash) {
  dcp::test::FuzzDecoder(EncodeWriteResults(RichWriteResults()),
                         Header(PayloadKind::kWriteResults), DecodeResults,
                         EncodeResults, dcp::test::CodecTestSeed() + 2);
}

TEST(WriteResultsCodecTest, HugeCountFailsFast) {
  ByteWriter w;
  WriteHeader(PayloadKind::kWriteResults, w);
  w.WriteCount(uint64_t{1} << 40);
  EXPECT_THAT(DecodeWriteResults(w.data()),
              StatusIs(kDataLoss, AllOf(StartsWith("decoding WriteResults: "),
                                        HasSubstr("claims 1099511627776"))));
}

TEST(WriteResultsCodecTest, TrailingBytesFail) {
  std::string bytes = EncodeWriteResults(RichWriteResults());
  bytes += "x";
  EXPECT_THAT(DecodeWriteResults(bytes),
              StatusIs(kDataLoss, HasSubstr("1 unexpected trailing bytes")));
}

}  // namespace
}  // namespace dcp
