#include "storage/torch_record.h"

#include <ATen/ATen.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "core/metadata.h"
#include "core/state_dict.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/crc32.h"
#include "storage/pickle.h"
#include "storage/zip.h"
#include "testing/runfiles.h"
#include "testing/status_matchers.h"
#include "testing/tensor_matchers.h"
#include "testing/test_seed.h"

namespace dcp {
namespace {

using ::dcp::test::IsOk;
using ::dcp::test::MakeTestTensor;
using ::dcp::test::StatusIs;
using ::dcp::test::TensorEq;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::SizeIs;

// The bytes of a tensor's elements in row-major order.
std::string ElementBytes(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()),
                     c.numel() * c.element_size());
}

std::string Serialize(const at::Tensor& t) {
  absl::StatusOr<std::string> record = SerializeTensorRecord(t);
  EXPECT_THAT(record.status(), IsOk());
  return record.ok() ? *record : std::string();
}

// Concatenates the bytes of `plan.ranges` out of an in-memory record.
std::string Pack(absl::string_view record, const BoxReadPlan& plan) {
  std::string packed;
  for (const ByteRange& r : plan.ranges) {
    packed.append(record.data() + r.offset, r.length);
  }
  return packed;
}

// ---- Writing and reading whole tensors --------------------------------------

class DtypeRoundTripTest : public ::testing::TestWithParam<c10::ScalarType> {};

TEST_P(DtypeRoundTripTest, WriteParseMaterialize) {
  const c10::ScalarType dtype = GetParam();
  at::Tensor t =
      dtype == at::kComplexHalf
          ? at::arange(12, at::kInt).view(at::kComplexHalf).reshape({3, 4})
          : MakeTestTensor({3, 4}, dtype, /*seed=*/3);
  const std::string record = Serialize(t);
  DCP_ASSERT_OK_AND_ASSIGN(TensorRecordInfo info,
                           ParseTensorRecordHeader(record));
  EXPECT_EQ(info.dtype, dtype);
  EXPECT_THAT(info.sizes, ElementsAre(3, 4));
  EXPECT_THAT(info.strides, ElementsAre(4, 1));
  EXPECT_EQ(info.storage_offset, 0);
  EXPECT_EQ(info.storage_key, "0");
  EXPECT_EQ(info.location, "cpu");
  EXPECT_EQ(info.storage.name, "archive/data/0");
  EXPECT_EQ(info.storage.size, 12 * t.element_size());
  EXPECT_EQ(info.storage.data_offset % 64, 0u);
  EXPECT_EQ(record.substr(info.storage.data_offset, info.storage.size),
            ElementBytes(t));
  DCP_ASSERT_OK_AND_ASSIGN(at::Tensor back,
                           ReadTensorRecord(record, {/*verify_crc=*/true}));
  EXPECT_EQ(back.scalar_type(), dtype);
  EXPECT_EQ(back.sizes(), t.sizes());
  EXPECT_EQ(ElementBytes(back), ElementBytes(t));
  if (dtype != at::kComplexHalf) {
    EXPECT_THAT(back, TensorEq(t));
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllDtypes, DtypeRoundTripTest,
    ::testing::Values(at::kBool, at::kByte, at::kChar, at::kShort, at::kInt,
                      at::kLong, at::kHalf, at::kBFloat16, at::kFloat,
                      at::kDouble, at::kComplexHalf, at::kComplexFloat,
                      at::kComplexDouble),
    [](const ::testing::TestParamInfo<c10::ScalarType>& info) {
      return std::string(c10::toString(info.param));
    });

// BINUNICODE `s` (shorter than 256 bytes).
std::string BinUnicode(absl::string_view s) {
  return absl::StrCat("X", std::string(1, static_cast<char>(s.size())),
                      std::string(3, '\0'), s);
}

// A readable transcription of the expected data.pkl (protocol 2, no memo).
std::string ExpectedFloatPickle() {
  std::string p = "\x80\x02";
  p += "ctorch._utils\n_rebuild_tensor_v2\n";
  p += "(";  // MARK (args)
  p += "(";  // MARK (pid)
  p += BinUnicode("storage");
  p += "ctorch\nFloatStorage\n";
  p += BinUnicode("0");
  p += BinUnicode("cpu");
  p += "K\x06";                          // numel 6
  p += "tQ";                             // TUPLE BINPERSID
  p += std::string("K\0", 2);            // storage offset 0
  p += "K\x02K\x03\x86";                 // (2, 3)
  p += "K\x03K\x01\x86";                 // (3, 1)
  p += "\x89";                           // False
  p += "ccollections\nOrderedDict\n)R";  // OrderedDict()
  p += "tR.";
  return p;
}

TEST(TensorRecordTest, LayoutMatchesTorchSave) {
  at::Tensor t = MakeTestTensor({2, 3}, at::kFloat, 1);
  const std::string record = Serialize(t);
  DCP_ASSERT_OK_AND_ASSIGN(ZipDirectory dir, ReadZipDirectory(record));
  std::vector<std::string> names;
  for (const ZipEntry& e : dir.entries) names.push_back(e.name);
  EXPECT_THAT(names, ElementsAre("archive/data.pkl", "archive/byteorder",
                                 "archive/data/0", "archive/version",
                                 "archive/.data/serialization_id"));
  EXPECT_EQ(*ZipEntryData(record, *dir.Find("data.pkl")),
            ExpectedFloatPickle());
  EXPECT_EQ(*ZipEntryData(record, *dir.Find("byteorder")), "little");
  EXPECT_EQ(*ZipEntryData(record, *dir.Find("version")), "3\n");
  const std::string id(
      *ZipEntryData(record, *dir.Find(".data/serialization_id")));
  EXPECT_THAT(id, SizeIs(40));
  EXPECT_EQ(id.find_first_not_of("0123456789"), std::string::npos);
  // Deterministic.
  EXPECT_EQ(Serialize(t), record);
  EXPECT_EQ(record.substr(0, 4), "PK\x03\x04");
}

TEST(TensorRecordTest, ComplexHalfUsesRebuildV3AndUntypedStorage) {
  at::Tensor t = at::arange(4, at::kInt).view(at::kComplexHalf);
  const std::string record = Serialize(t);
  DCP_ASSERT_OK_AND_ASSIGN(ZipDirectory dir, ReadZipDirectory(record));
  const std::string pkl(*ZipEntryData(record, *dir.Find("data.pkl")));
  EXPECT_THAT(pkl, HasSubstr("ctorch._utils\n_rebuild_tensor_v3\n"));
  EXPECT_THAT(pkl, HasSubstr("ctorch.storage\nUntypedStorage\n"));
  EXPECT_THAT(pkl, HasSubstr("K\x10"));  // storage size: 16 bytes
  EXPECT_THAT(pkl, HasSubstr("ctorch\ncomplex32\n"));
}

TEST(TensorRecordTest, ZeroDimAndEmptyTensors) {
  for (const at::Tensor& t :
       {at::scalar_tensor(3.5, at::kDouble), at::empty({0, 3}, at::kFloat),
        at::empty({2, 0, 4}, at::kLong), at::scalar_tensor(true, at::kBool)}) {
    SCOPED_TRACE(t.sizes());
    const std::string record = Serialize(t);
    DCP_ASSERT_OK_AND_ASSIGN(TensorRecordInfo info,
                             ParseTensorRecordHeader(record));
    EXPECT_EQ(info.sizes, t.sizes().vec());
    EXPECT_EQ(info.strides, t.strides().vec());
    DCP_ASSERT_OK_AND_ASSIGN(at::Tensor back, ReadTensorRecord(record, {true}));
    EXPECT_THAT(back, TensorEq(t));
  }
  // 0-d: size () and stride () are EMPTY_TUPLEs.
  const std::string record = Serialize(at::scalar_tensor(2.0, at::kFloat));
  DCP_ASSERT_OK_AND_ASSIGN(ZipDirectory dir, ReadZipDirectory(record));
  EXPECT_THAT(std::string(*ZipEntryData(record, *dir.Find("data.pkl"))),
              HasSubstr(std::string("K\0))\x89", 5)));
}

TEST(TensorRecordTest, TransposedTensorIsSavedWithItsStrides) {
  at::Tensor base = MakeTestTensor({3, 5}, at::kFloat, 2);
  at::Tensor t = base.t();  // storage holds exactly its elements
  DCP_ASSERT_OK_AND_ASSIGN(TensorRecordPlan plan, PlanTensorRecord(t));
  EXPECT_EQ(plan.data.data(), base.data_ptr());  // no copy
  EXPECT_EQ(plan.data.size(), 15 * 4u);
  std::string record;
  DCP_ASSERT_OK(WriteTensorRecord(plan, [&](absl::string_view piece) {
    record.append(piece.data(), piece.size());
    return absl::OkStatus();
  }));
  EXPECT_EQ(record.size(), plan.size());
  DCP_ASSERT_OK_AND_ASSIGN(TensorRecordInfo info,
                           ParseTensorRecordHeader(record));
  EXPECT_THAT(info.sizes, ElementsAre(5, 3));
  EXPECT_THAT(info.strides, ElementsAre(1, 5));
  DCP_ASSERT_OK_AND_ASSIGN(at::Tensor back, ReadTensorRecord(record));
  EXPECT_THAT(back, TensorEq(t.contiguous()));
}

TEST(TensorRecordTest, ViewsOfLargerStoragesAreCompacted) {
  at::Tensor base = MakeTestTensor({6, 4}, at::kDouble, 4);
  struct Case {
    const char* name;
    at::Tensor tensor;
  };
  for (const Case& c :
       {Case{"row slice with storage offset", base.slice(0, 2, 5)},
        Case{"column slice", base.slice(1, 1, 3)},
        Case{"expanded (stride 0)", base[0].expand({3, 4})},
        Case{"strided", base.slice(0, 0, 6, 2)}}) {
    SCOPED_TRACE(c.name);
    DCP_ASSERT_OK_AND_ASSIGN(TensorRecordPlan plan, PlanTensorRecord(c.tensor));
    EXPECT_EQ(plan.data.size(), c.tensor.numel() * 8u);
    EXPECT_NE(plan.data.data(), base.data_ptr());
    EXPECT_TRUE(plan.tensor.is_contiguous());
    std::string record = plan.prefix;
    record.append(plan.data.data(), plan.data.size());
    record += plan.suffix;
    DCP_ASSERT_OK_AND_ASSIGN(TensorRecordInfo info,
                             ParseTensorRecordHeader(record));
    EXPECT_EQ(info.storage_offset, 0);
    EXPECT_EQ(info.strides, c.tensor.contiguous().strides().vec());
    DCP_ASSERT_OK_AND_ASSIGN(at::Tensor back, ReadTensorRecord(record, {true}));
    EXPECT_THAT(back, TensorEq(c.tensor.contiguous()));
  }
}

TEST(TensorRecordTest, ChannelsLastAndContiguousSavedWithoutCopy) {
  at::Tensor t = MakeTestTensor({2, 3, 4, 5}, at::kFloat, 5)
                     .contiguous(at::MemoryFormat::ChannelsLast);
  DCP_ASSERT_OK_AND_ASSIGN(TensorRecordPlan plan, PlanTensorRecord(t));
  EXPECT_EQ(plan.data.data(), t.data_ptr());
  const std::string record = SerializeTensorRecord(t).value();
  DCP_ASSERT_OK_AND_ASSIGN(TensorRecordInfo info,
                           ParseTensorRecordHeader(record));
  EXPECT_EQ(info.strides, t.strides().vec());
  DCP_ASSERT_OK_AND_ASSIGN(at::Tensor back, ReadTensorRecord(record));
  EXPECT_THAT(back, TensorEq(t.contiguous()));
}

TEST(TensorRecordTest, ConjugateViewsAreResolved) {
  at::Tensor z = MakeTestTensor({4}, at::kComplexFloat, 6);
  at::Tensor conj = z.conj();
  ASSERT_TRUE(conj.is_conj());
  DCP_ASSERT_OK_AND_ASSIGN(at::Tensor back,
                           ReadTensorRecord(Serialize(conj), {true}));
  EXPECT_THAT(back, TensorEq(conj.resolve_conj()));
}

TEST(TensorRecordTest, RequiresGradTensorsAreSavedWithRequiresGradFalse) {
  at::Tensor t = MakeTestTensor({3}, at::kFloat, 7).set_requires_grad(true);
  const std::string record = Serialize(t.slice(0, 1, 3));
  DCP_ASSERT_OK_AND_ASSIGN(at::Tensor back, ReadTensorRecord(record));
  EXPECT_FALSE(back.requires_grad());
  EXPECT_THAT(back, TensorEq(t.slice(0, 1, 3).detach()));
}

TEST(TensorRecordTest, RejectsUnsupportedTensors) {
  EXPECT_THAT(PlanTensorRecord(at::Tensor()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  at::Tensor sparse = at::eye(3).to_sparse();
  EXPECT_THAT(
      PlanTensorRecord(sparse).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("layout")));
  at::Tensor q = at::quantize_per_tensor(at::ones({2}), 0.1, 0, at::kQInt8);
  EXPECT_THAT(PlanTensorRecord(q).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("QInt8")));
}

TEST(TensorRecordTest, WriteStopsAtTheFirstSinkError) {
  DCP_ASSERT_OK_AND_ASSIGN(TensorRecordPlan plan,
                           PlanTensorRecord(at::ones({4}, at::kFloat)));
  int calls = 0;
  EXPECT_THAT(WriteTensorRecord(plan,
                                [&](absl::string_view) {
                                  return ++calls == 2
                                             ? absl::UnavailableError("full")
                                             : absl::OkStatus();
                                }),
              StatusIs(absl::StatusCode::kUnavailable, "full"));
  EXPECT_EQ(calls, 2);
}

TEST(TensorRecordTest, HeaderThroughAReadFunctionReadsOnlyHeadAndTail) {
  at::Tensor t = MakeTestTensor({1000, 100}, at::kFloat, 8);
  const std::string record = Serialize(t);
  std::vector<std::pair<uint64_t, uint64_t>> reads;
  ZipByteSource source(record.size(), [&](uint64_t offset, uint64_t length) {
    reads.emplace_back(offset, length);
    return absl::StatusOr<std::string>(record.substr(offset, length));
  });
  DCP_ASSERT_OK_AND_ASSIGN(TensorRecordInfo info,
                           ParseTensorRecordHeader(source));
  EXPECT_THAT(info.sizes, ElementsAre(1000, 100));
  EXPECT_THAT(reads, ElementsAre(std::make_pair(record.size() - 4096, 4096),
                                 std::make_pair(0, 4096)));
}

// ---- One-pass writing -------------------------------------------------------

// A record written by `WriteTensorRecordOnePass` into memory, and what the
// writer did.
struct OnePass {
  std::string record;
  uint64_t returned = 0;
  std::vector<uint64_t> appends;                       // Sizes.
  std::vector<std::pair<uint64_t, uint64_t>> patches;  // (offset, size)
};

OnePass WriteOnePass(const at::Tensor& t, size_t block_size,
                     TensorDataChecksums* checksums = nullptr) {
  OnePass out;
  absl::StatusOr<uint64_t> size = WriteTensorRecordOnePass(
      t,
      [&](absl::string_view piece) {
        out.appends.push_back(piece.size());
        out.record.append(piece.data(), piece.size());
        return absl::OkStatus();
      },
      [&](uint64_t offset, absl::string_view bytes) {
        out.patches.emplace_back(offset, bytes.size());
        if (offset > out.record.size() ||
            bytes.size() > out.record.size() - offset) {
          return absl::OutOfRangeError("overwrite beyond the appended bytes");
        }
        out.record.replace(offset, bytes.size(), bytes.data(), bytes.size());
        return absl::OkStatus();
      },
      block_size, checksums);
  EXPECT_THAT(size.status(), IsOk());
  if (size.ok()) out.returned = *size;
  return out;
}

// Random bytes as a uint8 tensor of `n` elements.
at::Tensor RandomBytesTensor(std::mt19937& rng, int64_t n) {
  at::Tensor t = at::empty({n}, at::kByte);
  uint8_t* p = t.data_ptr<uint8_t>();
  for (int64_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(rng());
  return t;
}

TEST(OnePassRecordTest, BytesEqualTheTwoPassRecordForEveryLayout) {
  const uint32_t seed = dcp::test::TestSeed();
  SCOPED_TRACE(absl::StrCat("DCP_TEST_SEED=", seed));
  std::mt19937 rng(seed);
  at::Tensor base = MakeTestTensor({64, 48}, at::kFloat, 3);
  at::Tensor z = MakeTestTensor({5}, at::kComplexDouble, 4);
  struct Case {
    const char* name;
    at::Tensor tensor;
  };
  const std::vector<Case> cases = {
      {"empty 0x3", at::empty({0, 3}, at::kFloat)},
      {"empty 2x0x4 long", at::empty({2, 0, 4}, at::kLong)},
      {"0-d double", at::scalar_tensor(3.5, at::kDouble)},
      {"0-d bool", at::scalar_tensor(true, at::kBool)},
      {"one byte", at::ones({1}, at::kByte)},
      {"contiguous", base},
      {"transposed (saved with strides)", base.t()},
      {"column slice (copied)", base.slice(1, 5, 17)},
      {"row slice with storage offset (copied)", base.slice(0, 3, 40)},
      {"expanded (copied)", base[0].expand({7, 48})},
      {"channels last",
       MakeTestTensor({2, 3, 4, 5}, at::kBFloat16, 5)
           .contiguous(at::MemoryFormat::ChannelsLast)},
      {"conjugate view", z.conj()},
      {"random bytes, 100003", RandomBytesTensor(rng, 100003)},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string expected = Serialize(c.tensor);
    const uint64_t data_size =
        ParseTensorRecordHeader(expected).value().storage.size;
    for (size_t block : {size_t{1}, size_t{7}, size_t{4096}, size_t{65536},
                         kOnePassBlockSize}) {
      if (block == 1 && data_size > 20000) continue;  // Too many calls.
      SCOPED_TRACE(absl::StrCat("block size ", block));
      const OnePass got = WriteOnePass(c.tensor, block);
      EXPECT_EQ(got.returned, expected.size());
      EXPECT_TRUE(got.record == expected)
          << "one-pass record of " << got.record.size()
          << " bytes differs from the two-pass one of " << expected.size();
      // Data that fits in a block is checksummed first: nothing to patch.
      if (data_size <= block) {
        EXPECT_THAT(got.patches, SizeIs(0));
      }
      EXPECT_LE(got.patches.size(), 1u);
    }
  }
}

TEST(OnePassRecordTest, LargeDataIsAppendedInBlocksAndItsCrcPatchedOnce) {
  at::Tensor t = MakeTestTensor({10000}, at::kFloat, 9);  // 40000 bytes.
  const OnePass got = WriteOnePass(t, 4096);
  DCP_ASSERT_OK_AND_ASSIGN(TensorRecordInfo info,
                           ParseTensorRecordHeader(got.record));
  // Prefix, 10 blocks (9 of 4096 bytes and one of 3136), suffix.
  ASSERT_THAT(got.appends, SizeIs(12));
  EXPECT_EQ(got.appends[0], info.storage.data_offset);
  for (int i = 1; i <= 9; ++i) EXPECT_EQ(got.appends[i], 4096u);
  EXPECT_EQ(got.appends[10], 40000u - 9 * 4096);
  // One patch, inside data/0's local header, at most the 4 CRC bytes.
  ASSERT_THAT(got.patches, SizeIs(1));
  // The CRC field is bytes 14..17 of a local header.
  EXPECT_GE(got.patches[0].first, info.storage.header_offset + 14);
  EXPECT_LE(got.patches[0].first + got.patches[0].second,
            info.storage.header_offset + 18);
  EXPECT_GE(got.patches[0].second, 1u);
  // The patched record checks out, CRC included.
  DCP_ASSERT_OK_AND_ASSIGN(at::Tensor back,
                           ReadTensorRecord(got.record, {/*verify_crc=*/true}));
  EXPECT_THAT(back, TensorEq(t));
}

// With checksums requested, the record is the same, and the reported data
// range, CRC-32 and block CRC-32s are those of the record's data/0.
TEST(OnePassRecordTest, ReportsTheDataAndItsBlockChecksums) {
  std::mt19937 rng(dcp::test::TestSeed());
  for (int64_t n : {0, 1, 4095, 4096, 4097, 3 * 4096, 40000}) {
    for (size_t block : {size_t{4096}, size_t{3 * 4096}, size_t{65536}}) {
      SCOPED_TRACE(absl::StrCat(n, " bytes, write blocks of ", block));
      at::Tensor t = RandomBytesTensor(rng, n);
      TensorDataChecksums checksums;
      checksums.block_bytes = 4096;
      const OnePass got = WriteOnePass(t, block, &checksums);
      EXPECT_TRUE(got.record == Serialize(t));
      DCP_ASSERT_OK_AND_ASSIGN(TensorRecordInfo info,
                               ParseTensorRecordHeader(got.record));
      EXPECT_EQ(checksums.data_offset, info.storage.data_offset);
      EXPECT_EQ(checksums.data_size, info.storage.size);
      EXPECT_EQ(checksums.data_crc32, info.storage.crc32);
      const absl::string_view data =
          absl::string_view(got.record)
              .substr(info.storage.data_offset, info.storage.size);
      ASSERT_EQ(checksums.block_crc32.size(), (data.size() + 4095) / 4096);
      for (size_t b = 0; b < checksums.block_crc32.size(); ++b) {
        EXPECT_EQ(checksums.block_crc32[b], Crc32(data.substr(b * 4096, 4096)))
            << "block " << b;
      }
    }
  }
  // The write block size must be a multiple of the checksum block size.
  TensorDataChecksums checksums;
  checksums.block_bytes = 4096;
  EXPECT_THAT(WriteTensorRecordOnePass(
                  MakeTestTensor({10}, at::kFloat, 1),
                  [](absl::string_view) { return absl::OkStatus(); },
                  [](uint64_t, absl::string_view) { return absl::OkStatus(); },
                  6000, &checksums)
                  .status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(OnePassRecordTest, StopsAtTheFirstAppendOrOverwriteError) {
  at::Tensor t = MakeTestTensor({3000}, at::kDouble, 10);  // 24000 bytes.
  auto ok_overwrite = [](uint64_t, absl::string_view) {
    return absl::OkStatus();
  };
  for (int fail_at : {1, 2, 5, 8}) {  // Prefix, blocks, suffix.
    SCOPED_TRACE(absl::StrCat("append ", fail_at, " fails"));
    int calls = 0;
    int overwrites = 0;
    EXPECT_THAT(WriteTensorRecordOnePass(
                    t,
                    [&](absl::string_view) {
                      return ++calls == fail_at
                                 ? absl::ResourceExhaustedError("disk full")
                                 : absl::OkStatus();
                    },
                    [&](uint64_t, absl::string_view) {
                      ++overwrites;
                      return absl::OkStatus();
                    },
                    4096)
                    .status(),
                StatusIs(absl::StatusCode::kResourceExhausted, "disk full"));
    EXPECT_EQ(calls, fail_at);
    // The CRC is patched after the last block, before the suffix.
    EXPECT_EQ(overwrites, fail_at == 8 ? 1 : 0);
  }
  int appends = 0;
  EXPECT_THAT(WriteTensorRecordOnePass(
                  t,
                  [&](absl::string_view) {
                    ++appends;
                    return absl::OkStatus();
                  },
                  [&](uint64_t, absl::string_view) {
                    return absl::UnavailableError("pwrite failed");
                  },
                  4096)
                  .status(),
              StatusIs(absl::StatusCode::kUnavailable, "pwrite failed"));
  EXPECT_EQ(appends, 1 + 6);  // The suffix is not appended.
  int calls = 0;
  auto counting_append = [&](absl::string_view) {
    ++calls;
    return absl::OkStatus();
  };
  EXPECT_THAT(
      WriteTensorRecordOnePass(t, counting_append, ok_overwrite, 0).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("block size")));
  EXPECT_THAT(WriteTensorRecordOnePass(at::eye(3).to_sparse(), counting_append,
                                       ok_overwrite)
                  .status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("layout")));
  EXPECT_EQ(calls, 0);
}

// ---- Boxes ------------------------------------------------------------------

TEST(BoxReadTest, RowRangeOfARowMajorChunkIsOneRange) {
  at::Tensor t = MakeTestTensor({8, 5}, at::kFloat, 9);
  const std::string record = Serialize(t);
  DCP_ASSERT_OK_AND_ASSIGN(TensorRecordInfo info,
                           ParseTensorRecordHeader(record));
  DCP_ASSERT_OK_AND_ASSIGN(BoxReadPlan plan, PlanBoxRead(info, {2, 0}, {3, 5}));
  EXPECT_THAT(plan.ranges,
              ElementsAre(ByteRange{info.storage.data_offset + 40, 60}));
  EXPECT_EQ(plan.packed_size, 60u);
  DCP_ASSERT_OK_AND_ASSIGN(at::Tensor box,
                           MaterializeBox(plan, Pack(record, plan)));
  EXPECT_THAT(box, TensorEq(t.slice(0, 2, 5)));
}

TEST(BoxReadTest, ColumnBoxIsOneRangePerRowUnlessGapsMayBeRead) {
  at::Tensor t = MakeTestTensor({8, 5}, at::kFloat, 10);
  const std::string record = Serialize(t);
  DCP_ASSERT_OK_AND_ASSIGN(TensorRecordInfo info,
                           ParseTensorRecordHeader(record));
  const uint64_t d = info.storage.data_offset;

  DCP_ASSERT_OK_AND_ASSIGN(BoxReadPlan plan, PlanBoxRead(info, {0, 1}, {8, 2}));
  ASSERT_THAT(plan.ranges, SizeIs(8));
  for (int row = 0; row < 8; ++row) {
    EXPECT_EQ(plan.ranges[row], (ByteRange{d + row * 20 + 4, 8}));
  }
  DCP_ASSERT_OK_AND_ASSIGN(at::Tensor box,
                           MaterializeBox(plan, Pack(record, plan)));
  EXPECT_THAT(box, TensorEq(t.slice(1, 1, 3)));

  BoxReadOptions gaps;
  gaps.max_gap_bytes = 12;  // the gap between two rows' columns
  DCP_ASSERT_OK_AND_ASSIGN(BoxReadPlan merged,
                           PlanBoxRead(info, {0, 1}, {8, 2}, gaps));
  EXPECT_THAT(merged.ranges, ElementsAre(ByteRange{d + 4, 7 * 20 + 8}));
  DCP_ASSERT_OK_AND_ASSIGN(box, MaterializeBox(merged, Pack(record, merged)));
  EXPECT_THAT(box, TensorEq(t.slice(1, 1, 3)));

  gaps.max_gap_bytes = 11;
  DCP_ASSERT_OK_AND_ASSIGN(merged, PlanBoxRead(info, {0, 1}, {8, 2}, gaps));
  EXPECT_THAT(merged.ranges, SizeIs(8));

  BoxReadOptions few;
  few.max_ranges = 7;
  DCP_ASSERT_OK_AND_ASSIGN(merged, PlanBoxRead(info, {0, 1}, {8, 2}, few));
  EXPECT_THAT(merged.ranges, SizeIs(1));
}

TEST(BoxReadTest, AdjacentBlocksCoalesce) {
  at::Tensor t = MakeTestTensor({4, 3, 2}, at::kShort, 11);
  const std::string record = Serialize(t);
  DCP_ASSERT_OK_AND_ASSIGN(TensorRecordInfo info,
                           ParseTensorRecordHeader(record));
  const uint64_t d = info.storage.data_offset;
  // Full inner dims: one range.
  DCP_ASSERT_OK_AND_ASSIGN(BoxReadPlan plan,
                           PlanBoxRead(info, {1, 0, 0}, {2, 3, 2}));
  EXPECT_THAT(plan.ranges, ElementsAre(ByteRange{d + 12, 24}));
  // Middle rows 1..2 of each outer slab: 4 ranges of 2*2 elements.
  DCP_ASSERT_OK_AND_ASSIGN(plan, PlanBoxRead(info, {0, 1, 0}, {4, 2, 2}));
  EXPECT_THAT(plan.ranges,
              ElementsAre(ByteRange{d + 4, 8}, ByteRange{d + 16, 8},
                          ByteRange{d + 28, 8}, ByteRange{d + 40, 8}));
  // Column 0 of every row: twelve separate elements.
  DCP_ASSERT_OK_AND_ASSIGN(plan, PlanBoxRead(info, {0, 0, 0}, {4, 3, 1}));
  EXPECT_THAT(plan.ranges, SizeIs(12));
  // A single element.
  DCP_ASSERT_OK_AND_ASSIGN(plan, PlanBoxRead(info, {3, 2, 1}, {1, 1, 1}));
  EXPECT_THAT(plan.ranges, ElementsAre(ByteRange{d + 46, 2}));
  // Empty box: nothing to read.
  DCP_ASSERT_OK_AND_ASSIGN(plan, PlanBoxRead(info, {1, 0, 0}, {0, 3, 2}));
  EXPECT_THAT(plan.ranges, SizeIs(0));
  DCP_ASSERT_OK_AND_ASSIGN(at::Tensor empty, MaterializeBox(plan, ""));
  EXPECT_THAT(empty.sizes(), ElementsAre(0, 3, 2));
}

// Every box of several saved layouts, against narrow() of the original.
TEST(BoxReadTest, RandomBoxesMatchNarrowOnEveryLayout) {
  at::Tensor base = MakeTestTensor({4, 5, 6}, at::kInt, 12);
  std::vector<std::pair<const char*, at::Tensor>> layouts = {
      {"contiguous", base},
      {"permuted", base.permute({2, 0, 1})},
      {"transposed", base.transpose(0, 2)},
  };
  const uint32_t seed = dcp::test::TestSeed();
  SCOPED_TRACE(absl::StrCat("DCP_TEST_SEED=", seed));
  std::mt19937 rng(seed);
  for (const auto& [name, t] : layouts) {
    SCOPED_TRACE(name);
    const std::string record = Serialize(t);
    DCP_ASSERT_OK_AND_ASSIGN(TensorRecordInfo info,
                             ParseTensorRecordHeader(record));
    EXPECT_EQ(info.strides, t.strides().vec());  // saved as is
    for (int iteration = 0; iteration < 200; ++iteration) {
      Shape offsets, lengths;
      at::Tensor expected = t;
      for (int64_t dim = 0; dim < t.dim(); ++dim) {
        const int64_t size = t.size(dim);
        const int64_t off = rng() % (size + 1);
        const int64_t len = rng() % (size - off + 1);
        offsets.push_back(off);
        lengths.push_back(len);
        expected = expected.narrow(dim, off, len);
      }
      BoxReadOptions options;
      options.max_gap_bytes = rng() % 3 == 0 ? rng() % 64 : 0;
      options.max_ranges = rng() % 3 == 0 ? 1 + rng() % 4 : 1 << 16;
      SCOPED_TRACE(absl::StrCat("offsets ", absl::StrJoin(offsets, ","),
                                " lengths ", absl::StrJoin(lengths, ","),
                                " gap ", options.max_gap_bytes, " max ranges ",
                                options.max_ranges));
      DCP_ASSERT_OK_AND_ASSIGN(BoxReadPlan plan,
                               PlanBoxRead(info, offsets, lengths, options));
      EXPECT_LE(plan.ranges.size(), options.max_ranges);
      uint64_t total = 0;
      for (size_t i = 0; i < plan.ranges.size(); ++i) {
        total += plan.ranges[i].length;
        EXPECT_GE(plan.ranges[i].offset, info.storage.data_offset);
        EXPECT_LE(plan.ranges[i].offset + plan.ranges[i].length,
                  info.storage.data_offset + info.storage.size);
        if (i > 0) {
          EXPECT_GT(plan.ranges[i].offset,
                    plan.ranges[i - 1].offset + plan.ranges[i - 1].length);
        }
      }
      EXPECT_EQ(total, plan.packed_size);
      if (options.max_gap_bytes == 0 && options.max_ranges == 1 << 16) {
        EXPECT_EQ(plan.packed_size, expected.numel() * 4u);  // minimal
      }
      DCP_ASSERT_OK_AND_ASSIGN(at::Tensor box,
                               MaterializeBox(plan, Pack(record, plan)));
      EXPECT_THAT(box, TensorEq(expected.contiguous()));
    }
  }
}

TEST(BoxReadTest, CopyBoxIntoAViewConvertsTheDtype) {
  at::Tensor t = MakeTestTensor({6, 4}, at::kHalf, 13);
  const std::string record = Serialize(t);
  DCP_ASSERT_OK_AND_ASSIGN(TensorRecordInfo info,
                           ParseTensorRecordHeader(record));
  DCP_ASSERT_OK_AND_ASSIGN(BoxReadPlan plan, PlanBoxRead(info, {1, 1}, {3, 2}));
  at::Tensor dest = at::zeros({10, 10}, at::kDouble);
  at::Tensor view = dest.slice(0, 5, 8).slice(1, 2, 4);
  DCP_ASSERT_OK(CopyBoxInto(plan, Pack(record, plan), view));
  EXPECT_THAT(view, TensorEq(t.slice(0, 1, 4).slice(1, 1, 3).to(at::kDouble)));
  EXPECT_EQ(dest.sum().item<double>(), view.sum().item<double>());
}

TEST(BoxReadTest, RejectsBadBoxesPackedBytesAndDestinations) {
  const std::string record = Serialize(MakeTestTensor({4, 4}, at::kFloat, 14));
  DCP_ASSERT_OK_AND_ASSIGN(TensorRecordInfo info,
                           ParseTensorRecordHeader(record));
  EXPECT_THAT(PlanBoxRead(info, {0}, {4}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(
      PlanBoxRead(info, {1, 0}, {4, 4}).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("exceed")));
  EXPECT_THAT(PlanBoxRead(info, {-1, 0}, {1, 4}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(PlanBoxRead(info, {0, 0}, {1, -4}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  DCP_ASSERT_OK_AND_ASSIGN(BoxReadPlan plan, PlanBoxRead(info, {0, 0}, {2, 4}));
  const std::string packed = Pack(record, plan);
  EXPECT_THAT(CopyBoxInto(plan, packed.substr(1), at::empty({2, 4})),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(CopyBoxInto(plan, packed, at::empty({4, 2})),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(CopyBoxInto(plan, packed, at::Tensor()),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(BoxReadTest, OverlappingLayoutsReadOneCoveringRange) {
  // Another writer could save an expanded tensor as is (stride 0).
  TensorRecordInfo info;
  info.dtype = at::kFloat;
  info.sizes = {3, 4};
  info.strides = {0, 1};
  info.storage.data_offset = 64;
  info.storage.size = 16;
  DCP_ASSERT_OK_AND_ASSIGN(BoxReadPlan plan, PlanBoxRead(info, {0, 1}, {3, 2}));
  EXPECT_THAT(plan.ranges, ElementsAre(ByteRange{68, 8}));
  const float row[] = {1, 2, 3, 4};
  std::string record(64, '\0');
  record.append(reinterpret_cast<const char*>(row), sizeof(row));
  DCP_ASSERT_OK_AND_ASSIGN(at::Tensor box,
                           MaterializeBox(plan, Pack(record, plan)));
  at::Tensor expected = at::tensor({2.0f, 3.0f}).expand({3, 2});
  EXPECT_THAT(box, TensorEq(expected.contiguous()));
  // Out-of-storage layouts are refused even when built by hand.
  info.sizes = {3, 5};
  EXPECT_THAT(PlanBoxRead(info, {0, 0}, {1, 1}).status(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("beyond")));
}

// ---- Hostile and malformed records ------------------------------------------

// A record with a hand-written data.pkl (and storage of `storage_bytes`).
std::string RecordWithPickle(const std::string& pkl, size_t storage_bytes,
                             bool with_version = true) {
  std::string storage(storage_bytes, '\0');
  std::vector<std::pair<std::string, absl::string_view>> entries = {
      {"archive/data.pkl", pkl},
      {"archive/byteorder", "little"},
      {"archive/data/0", storage}};
  if (with_version) entries.push_back({"archive/version", "3\n"});
  return BuildZipArchive(entries).value();
}

// data.pkl for _rebuild_tensor_v2 with the given pieces.
std::string TensorPickle(absl::string_view rebuild_module,
                         absl::string_view rebuild, absl::string_view storage,
                         int64_t numel, int64_t offset,
                         std::vector<int64_t> size, std::vector<int64_t> stride,
                         absl::string_view v3_dtype = "") {
  PickleWriter w;
  w.WriteGlobal(rebuild_module, rebuild);
  w.WriteTuple(v3_dtype.empty() ? 6 : 7, [&](size_t i) {
    switch (i) {
      case 0:
        w.WriteTuple(5, [&](size_t j) {
          if (j == 0) w.WriteString("storage");
          if (j == 1) {
            if (storage == "UntypedStorage") {
              w.WriteGlobal("torch.storage", storage);
            } else {
              w.WriteGlobal("torch", storage);
            }
          }
          if (j == 2) w.WriteString("0");
          if (j == 3) w.WriteString("cpu");
          if (j == 4) w.WriteInt(numel);
        });
        w.EmitBinPersId();
        break;
      case 1:
        w.WriteInt(offset);
        break;
      case 2:
        w.WriteTuple(size.size(), [&](size_t k) { w.WriteInt(size[k]); });
        break;
      case 3:
        w.WriteTuple(stride.size(), [&](size_t k) { w.WriteInt(stride[k]); });
        break;
      case 4:
        w.WriteBool(false);
        break;
      case 5:
        w.WriteGlobal("collections", "OrderedDict");
        w.EmitEmptyTuple();
        w.EmitReduce();
        break;
      default:
        w.WriteGlobal("torch", v3_dtype);
    }
  });
  w.EmitReduce();
  return std::move(w).Finish().value();
}

TEST(MalformedRecordTest, HandWrittenPickleIsAccepted) {
  const std::string record =
      RecordWithPickle(TensorPickle("torch._utils", "_rebuild_tensor_v2",
                                    "FloatStorage", 4, 1, {3}, {1}),
                       16);
  DCP_ASSERT_OK_AND_ASSIGN(TensorRecordInfo info,
                           ParseTensorRecordHeader(record));
  EXPECT_EQ(info.storage_offset, 1);
}

TEST(MalformedRecordTest, StorageLargerThanItsEntryIsDataLoss) {
  const std::string record =
      RecordWithPickle(TensorPickle("torch._utils", "_rebuild_tensor_v2",
                                    "FloatStorage", 5, 0, {4}, {1}),
                       16);
  EXPECT_THAT(ParseTensorRecordHeader(record).status(),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("storage \"0\" claims 5 4-byte elements "
                                 "but its entry archive/data/0 holds 16 "
                                 "bytes")));
}

TEST(MalformedRecordTest, LayoutsBeyondTheStorageAreDataLoss) {
  for (const auto& [offset, size, stride] :
       std::vector<std::tuple<int64_t, Shape, Shape>>{
           {1, {4}, {1}},
           {0, {2, 3}, {3, 1}},
           {0, {2, 2}, {3, 1}},
           {0, {2}, {-1}},
           {-1, {1}, {1}},
           {0, {2}, {int64_t{1} << 62}},
           {0, {int64_t{1} << 62, 2}, {int64_t{1} << 62, 1}},
           {0, {3}, {1, 1}}}) {
    SCOPED_TRACE(absl::StrCat(offset, " [", absl::StrJoin(size, ","), "] [",
                              absl::StrJoin(stride, ","), "]"));
    const std::string record =
        RecordWithPickle(TensorPickle("torch._utils", "_rebuild_tensor_v2",
                                      "FloatStorage", 4, offset, size, stride),
                         16);
    EXPECT_THAT(ParseTensorRecordHeader(record).status(),
                StatusIs(absl::StatusCode::kDataLoss));
  }
}

TEST(MalformedRecordTest, ExpandedLayoutsAreDataLossBeforeAllocating) {
  // A 4-byte storage claiming 2^40 or 2^62 elements through stride 0, and
  // overlapping strides with more elements than the storage.
  for (const auto& [storage_bytes, size, stride] :
       std::vector<std::tuple<int64_t, Shape, Shape>>{
           {4, {int64_t{1} << 40}, {0}},
           {4, {int64_t{1} << 31, int64_t{1} << 31}, {0, 0}},
           {4, {2}, {0}},
           {16, {2, 3}, {1, 1}},
           {16, {5, 1}, {0, 1}}}) {
    SCOPED_TRACE(absl::StrCat(storage_bytes, " [", absl::StrJoin(size, ","),
                              "] [", absl::StrJoin(stride, ","), "]"));
    const std::string record = RecordWithPickle(
        TensorPickle("torch._utils", "_rebuild_tensor_v2", "FloatStorage",
                     storage_bytes / 4, 0, size, stride),
        storage_bytes);
    EXPECT_THAT(ParseTensorRecordHeader(record).status(),
                StatusIs(absl::StatusCode::kDataLoss,
                         HasSubstr("has more elements than its storage of " +
                                   std::to_string(storage_bytes / 4))));
    EXPECT_THAT(ReadTensorRecord(record).status(),
                StatusIs(absl::StatusCode::kDataLoss,
                         HasSubstr("zero or overlapping strides")));
  }
}

TEST(MalformedRecordTest, OverlapsWithinTheStorageAreRead) {
  // torch 2.6 saves x.as_strided((2, 2), (1, 1)) of a 4-element x as is: it
  // has no more elements than its storage, so reading it is bounded.
  const float values[] = {1, 2, 3, 4};
  const std::string pkl = TensorPickle("torch._utils", "_rebuild_tensor_v2",
                                       "FloatStorage", 4, 0, {2, 2}, {1, 1});
  std::vector<std::pair<std::string, absl::string_view>> entries = {
      {"archive/data.pkl", pkl},
      {"archive/byteorder", "little"},
      {"archive/data/0",
       absl::string_view(reinterpret_cast<const char*>(values),
                         sizeof(values))},
      {"archive/version", "3\n"}};
  DCP_ASSERT_OK_AND_ASSIGN(std::string record, BuildZipArchive(entries));
  DCP_ASSERT_OK_AND_ASSIGN(at::Tensor t, ReadTensorRecord(record));
  at::Tensor storage = at::tensor({1.0f, 2.0f, 3.0f, 4.0f});
  EXPECT_THAT(t, TensorEq(storage.as_strided({2, 2}, {1, 1}).contiguous()));
}

TEST(MalformedRecordTest, MissingVersionIsDataLoss) {
  const std::string record =
      RecordWithPickle(TensorPickle("torch._utils", "_rebuild_tensor_v2",
                                    "FloatStorage", 4, 0, {4}, {1}),
                       16, /*with_version=*/false);
  EXPECT_THAT(ParseTensorRecordHeader(record).status(),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("no archive/version entry")));
}

TEST(MalformedRecordTest, UnsupportedTorchFeaturesAreUnimplemented) {
  EXPECT_THAT(
      ParseTensorRecordHeader(
          RecordWithPickle(TensorPickle("torch._utils", "_rebuild_qtensor",
                                        "FloatStorage", 4, 0, {4}, {1}),
                           16))
          .status(),
      StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("quantized")));
  EXPECT_THAT(
      ParseTensorRecordHeader(
          RecordWithPickle(TensorPickle("torch._utils", "_rebuild_tensor_v2",
                                        "QInt8Storage", 4, 0, {4}, {1}),
                           4))
          .status(),
      StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("QInt8")));
  EXPECT_THAT(
      ParseTensorRecordHeader(
          RecordWithPickle(
              TensorPickle("torch._utils", "_rebuild_tensor_v3",
                           "UntypedStorage", 4, 0, {4}, {1}, "float8_e4m3fn"),
              4))
          .status(),
      StatusIs(absl::StatusCode::kUnimplemented,
               HasSubstr("torch.float8_e4m3fn is not supported")));
  // v3 with a dtype libtorch 1.13 has.
  DCP_ASSERT_OK_AND_ASSIGN(
      TensorRecordInfo info,
      ParseTensorRecordHeader(RecordWithPickle(
          TensorPickle("torch._utils", "_rebuild_tensor_v3", "UntypedStorage",
                       8, 0, {4}, {1}, "int16"),
          8)));
  EXPECT_EQ(info.dtype, at::kShort);
}

TEST(MalformedRecordTest, OtherPicklesAreNotTensors) {
  EXPECT_THAT(
      ParseTensorRecordHeader(
          RecordWithPickle(
              TensorPickle("os", "system", "FloatStorage", 4, 0, {4}, {1}), 16))
          .status(),
      StatusIs(absl::StatusCode::kDataLoss, HasSubstr("not a tensor")));
  DCP_ASSERT_OK_AND_ASSIGN(std::string value_record,
                           SerializeValueRecord(Value(7)));
  EXPECT_THAT(ParseTensorRecordHeader(value_record).status(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("not a tensor")));
  EXPECT_THAT(
      ParseTensorRecordHeader(RecordWithPickle("\x80\x02K", 16)).status(),
      StatusIs(absl::StatusCode::kDataLoss, HasSubstr("data.pkl")));
}

TEST(MalformedRecordTest, CrcMismatchIsDetectedWhenVerifying) {
  std::string record = Serialize(MakeTestTensor({16}, at::kFloat, 15));
  DCP_ASSERT_OK_AND_ASSIGN(TensorRecordInfo info,
                           ParseTensorRecordHeader(record));
  record[info.storage.data_offset + 7] ^= 1;
  DCP_EXPECT_OK(ReadTensorRecord(record).status());
  EXPECT_THAT(ReadTensorRecord(record, {/*verify_crc=*/true}).status(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("CRC-32")));
}

TEST(MalformedRecordTest, InvalidBoolBytesAreDataLoss) {
  std::string record = Serialize(at::ones({4}, at::kBool));
  DCP_ASSERT_OK_AND_ASSIGN(TensorRecordInfo info,
                           ParseTensorRecordHeader(record));
  record[info.storage.data_offset + 2] = 2;
  EXPECT_THAT(ReadTensorRecord(record).status(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("byte 0x02")));
}

TEST(MalformedRecordTest, EveryTruncationFails) {
  const std::string record = Serialize(MakeTestTensor({3, 2}, at::kFloat, 16));
  for (size_t n = 0; n < record.size(); ++n) {
    EXPECT_THAT(ParseTensorRecordHeader(absl::string_view(record).substr(0, n))
                    .status(),
                StatusIs(absl::StatusCode::kDataLoss))
        << n;
  }
}

TEST(MalformedRecordTest, RandomMutationsNeverCrash) {
  const std::string original = Serialize(MakeTestTensor({4, 3}, at::kInt, 17));
  DCP_ASSERT_OK_AND_ASSIGN(TensorRecordInfo info,
                           ParseTensorRecordHeader(original));
  DCP_ASSERT_OK_AND_ASSIGN(ZipDirectory dir, ReadZipDirectory(original));
  const ZipEntry pkl = *dir.Find("data.pkl");
  const uint32_t seed = dcp::test::TestSeed();
  SCOPED_TRACE(absl::StrCat("DCP_TEST_SEED=", seed));
  std::mt19937 rng(seed);
  int parsed = 0;
  for (int iteration = 0; iteration < 4000; ++iteration) {
    std::string record = original;
    const int flips = 1 + rng() % 3;
    for (int f = 0; f < flips; ++f) {
      // Mostly inside data.pkl, where the interesting structure is.
      const size_t at = rng() % 2 ? pkl.data_offset + rng() % pkl.size
                                  : rng() % record.size();
      record[at] = static_cast<char>(
          rng() % 3 == 0 ? rng() : record[at] ^ (1 << (rng() % 8)));
    }
    absl::StatusOr<TensorRecordInfo> parsed_info =
        ParseTensorRecordHeader(record);
    if (!parsed_info.ok()) {
      EXPECT_THAT(parsed_info.status().code(),
                  ::testing::AnyOf(absl::StatusCode::kDataLoss,
                                   absl::StatusCode::kUnimplemented))
          << parsed_info.status();
      continue;
    }
    ++parsed;
    absl::StatusOr<at::Tensor> t = ReadTensorRecord(record, {true});
    if (!t.ok()) {
      EXPECT_EQ(t.status().code(), absl::StatusCode::kDataLoss) << t.status();
    }
  }
  EXPECT_GT(parsed, 0);
  EXPECT_LT(parsed, 4000);
}

// The result of parsing `record` with `cache` (or none), as a string that
// holds either the whole TensorRecordInfo or the whole status.
std::string ParseToString(absl::string_view record, TensorPickleCache* cache) {
  ZipByteSource source(record);
  absl::StatusOr<ZipDirectory> dir = ReadZipDirectory(source);
  if (!dir.ok()) return dir.status().ToString();
  absl::StatusOr<TensorRecordInfo> info =
      ParseTensorRecordHeader(source, *dir, cache);
  if (!info.ok()) return info.status().ToString();
  std::ostringstream os;
  os << *info;
  return os.str();
}

TEST(TensorPickleCacheTest, SameResultsAndErrorsAsWithoutACache) {
  const uint32_t seed = dcp::test::TestSeed();
  SCOPED_TRACE(absl::StrCat("DCP_TEST_SEED=", seed));
  std::mt19937 rng(seed);
  // More shapes than the cache holds, repeated, plus mutated records (mostly
  // inside data.pkl) and records whose data.pkl matches a good one but whose
  // storage entry does not.
  const std::vector<Shape> shapes = {{4, 3},    {3, 4}, {12},   {2, 2, 3},
                                     {1, 12},   {6, 2}, {2, 6}, {12, 1},
                                     {3, 2, 2}, {4}};
  std::vector<std::string> good;
  for (size_t k = 0; k < shapes.size(); ++k) {
    good.push_back(Serialize(MakeTestTensor(shapes[k], at::kFloat, 30 + k)));
  }
  const std::string pickle_of_twelve = TensorPickle(
      "torch._utils", "_rebuild_tensor_v2", "FloatStorage", 12, 0, {12}, {1});
  TensorPickleCache cache;
  int hits_expected = 0;
  int mismatches = 0;
  for (int iteration = 0; iteration < 3000; ++iteration) {
    std::string record;
    switch (rng() % 4) {
      case 0:
      case 1:  // A run of one shape, as a model's layers give.
        record = good[rng() % 3];
        break;
      case 2: {
        record = good[rng() % good.size()];
        DCP_ASSERT_OK_AND_ASSIGN(ZipDirectory dir, ReadZipDirectory(record));
        const ZipEntry& pkl = *dir.Find("data.pkl");
        const size_t at = pkl.data_offset + rng() % pkl.size;
        record[at] = static_cast<char>(record[at] ^ (1 << (rng() % 8)));
        break;
      }
      default:
        // The same data.pkl as a good record, with a storage entry of 48
        // bytes (right) or 44 or 52 (wrong).
        record = RecordWithPickle(pickle_of_twelve, 44 + 4 * (rng() % 3));
        break;
    }
    const std::string uncached = ParseToString(record, nullptr);
    const uint64_t hits_before = cache.hits();
    const std::string cached = ParseToString(record, &cache);
    EXPECT_EQ(cached, uncached) << "iteration " << iteration;
    if (cached != uncached) ++mismatches;
    if (cache.hits() > hits_before) ++hits_expected;
    if (mismatches > 5) break;
  }
  // The cache was used, and repeated records were answered from it.
  EXPECT_GT(cache.hits(), 1000u);
  EXPECT_EQ(cache.hits(), static_cast<uint64_t>(hits_expected));
}

TEST(TensorPickleCacheTest, EntryPerDistinctPickleUpToTheLimit) {
  TensorPickleCache cache;
  std::vector<std::string> records;
  for (int64_t n = 1; n <= static_cast<int64_t>(TensorPickleCache::kMaxEntries);
       ++n) {
    records.push_back(Serialize(MakeTestTensor({n}, at::kFloat, 40)));
  }
  for (const std::string& record : records) ParseToString(record, &cache);
  EXPECT_EQ(cache.hits(), 0u);
  // All of them are remembered.
  for (const std::string& record : records) ParseToString(record, &cache);
  EXPECT_EQ(cache.hits(), records.size());
  // A data.pkl that parses is remembered even if the record then fails its
  // storage check, which runs again on every parse.
  const std::string bad_storage =
      RecordWithPickle(TensorPickle("torch._utils", "_rebuild_tensor_v2",
                                    "FloatStorage", 5, 0, {4}, {1}),
                       16);
  EXPECT_THAT(ParseToString(bad_storage, &cache),
              HasSubstr("storage \"0\" claims 5"));
  EXPECT_THAT(ParseToString(bad_storage, &cache),
              HasSubstr("storage \"0\" claims 5"));
  EXPECT_EQ(cache.hits(), records.size() + 1);
  // One that does not parse is not.
  const std::string not_supported =
      RecordWithPickle(TensorPickle("torch._utils", "_rebuild_qtensor",
                                    "FloatStorage", 4, 0, {4}, {1}),
                       16);
  EXPECT_THAT(ParseToString(not_supported, &cache), HasSubstr("quantized"));
  EXPECT_THAT(ParseToString(not_supported, &cache), HasSubstr("quantized"));
  EXPECT_EQ(cache.hits(), records.size() + 1);
}

// ---- Records written by PyTorch 2.6 (storage/testdata/torch26/README.md) ----

std::string TorchRecord(absl::string_view name) {
  const std::string path =
      test::RunfilePath(absl::StrCat("storage/testdata/torch26/", name, ".pt"));
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  return std::string(std::istreambuf_iterator<char>(in), {});
}

at::Tensor Base15() { return at::arange(15, at::kFloat).reshape({3, 5}); }

TEST(TorchWrittenRecordsTest, TensorsWithOffsetsStridesAndDataDescriptors) {
  struct Case {
    const char* name;
    at::Tensor expected;
    int64_t storage_offset;
    Shape strides;
  };
  at::Tensor t12 = at::arange(12, at::kDouble) - 5;
  for (const Case& c : {
           Case{"colslice", Base15().slice(1, 1, 3), 1, {5, 1}},
           Case{"rowslice", Base15().slice(0, 1, 3), 5, {5, 1}},
           Case{"expanded", Base15()[0].expand({2, 5}), 0, {0, 1}},
           Case{"transposed", Base15().t(), 0, {1, 5}},
           Case{"scalar", at::scalar_tensor(2.5, at::kFloat), 0, {}},
           Case{"t_bfloat16", t12.to(at::kBFloat16).reshape({3, 4}), 0, {4, 1}},
           Case{"t_bool", t12.to(at::kBool).reshape({3, 4}), 0, {4, 1}},
           Case{"t_complex64",
                t12.to(at::kComplexFloat).reshape({3, 4}),
                0,
                {4, 1}},
           Case{"dcp_w",
                at::arange(20, at::kFloat).reshape({4, 5}).t(),
                0,
                {1, 5}},
       }) {
    SCOPED_TRACE(c.name);
    const std::string record = TorchRecord(c.name);
    DCP_ASSERT_OK_AND_ASSIGN(TensorRecordInfo info,
                             ParseTensorRecordHeader(record));
    EXPECT_EQ(info.dtype, c.expected.scalar_type());
    EXPECT_EQ(info.sizes, c.expected.sizes().vec());
    EXPECT_EQ(info.strides, c.strides);
    EXPECT_EQ(info.storage_offset, c.storage_offset);
    EXPECT_EQ(info.storage.name, "archive/data/0");
    DCP_ASSERT_OK_AND_ASSIGN(at::Tensor back, ReadTensorRecord(record, {true}));
    EXPECT_THAT(back, TensorEq(c.expected.contiguous()));
  }
}

TEST(TorchWrittenRecordsTest, BoxesOfAViewWithAStorageOffset) {
  // torch.save(base[:, 1:3]) keeps the whole 15-element storage.
  const std::string record = TorchRecord("colslice");
  DCP_ASSERT_OK_AND_ASSIGN(TensorRecordInfo info,
                           ParseTensorRecordHeader(record));
  DCP_ASSERT_OK_AND_ASSIGN(BoxReadPlan plan, PlanBoxRead(info, {1, 0}, {2, 2}));
  const uint64_t d = info.storage.data_offset;
  EXPECT_THAT(plan.ranges,
              ElementsAre(ByteRange{d + 6 * 4, 8}, ByteRange{d + 11 * 4, 8}));
  DCP_ASSERT_OK_AND_ASSIGN(at::Tensor box,
                           MaterializeBox(plan, Pack(record, plan)));
  EXPECT_THAT(box,
              TensorEq(Base15().slice(1, 1, 3).slice(0, 1, 3).contiguous()));
}

TEST(TorchWrittenRecordsTest, UnsupportedTensors) {
  EXPECT_THAT(ParseTensorRecordHeader(TorchRecord("f8")).status(),
              StatusIs(absl::StatusCode::kUnimplemented,
                       HasSubstr("torch.float8_e4m3fn")));
  EXPECT_THAT(ParseTensorRecordHeader(TorchRecord("parameter")).status(),
              StatusIs(absl::StatusCode::kUnimplemented,
                       HasSubstr("_rebuild_parameter")));
  EXPECT_THAT(ParseTensorRecordHeader(TorchRecord("v_nested")).status(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("not a tensor")));
}

TEST(TorchWrittenRecordsTest, Values) {
  DCP_ASSERT_OK_AND_ASSIGN(Value n, ParseValueRecord(TorchRecord("v_dcp_n")));
  EXPECT_TRUE(ValuesEqual(n, Value(5))) << n;
  DCP_ASSERT_OK_AND_ASSIGN(Value nested,
                           ParseValueRecord(TorchRecord("v_nested")));
  const Value expected(
      StateDict{{"a", Value(Tuple{{Value(1), Value("x")}})},
                {"3", Value(Bytes{std::string("\0\xff", 2)})},
                {"b", Value(List{Value(1.5), Value(None{}), Value(true)})},
                {"od", Value(StateDict{{"z", Value(1)}})},
                {"e", Value(Bytes{""})}});
  EXPECT_TRUE(ValuesEqual(nested, expected)) << nested;
  EXPECT_THAT(ParseValueRecord(TorchRecord("v_set")).status(),
              StatusIs(absl::StatusCode::kUnimplemented,
                       HasSubstr("unsupported pickled type __builtin__.set")));
  EXPECT_THAT(ParseValueRecord(TorchRecord("v_tensor")).status(),
              StatusIs(absl::StatusCode::kUnimplemented,
                       HasSubstr("value record at value[\"t\"]: unsupported "
                                 "pickled type torch.Tensor")));
  EXPECT_THAT(ParseValueRecord(TorchRecord("colslice")).status(),
              StatusIs(absl::StatusCode::kUnimplemented,
                       HasSubstr("value record at value: unsupported pickled "
                                 "type torch.Tensor")));
}

// ---- Value records ----------------------------------------------------------

TEST(ValueRecordTest, RoundTripsSupportedTypes) {
  StateDict inner{{"d", Value(int64_t{-5})},
                  {"big", Value(int64_t{1} << 40)},
                  {"empty", Value(StateDict())}};
  const Value value(StateDict{
      {"a", Value(1)},
      {"b", Value(List{Value(1.5), Value(true), Value(None{}), Value("x"),
                       Value(Bytes{std::string("\0\xff\x80", 3)}),
                       Value(Bytes{""}), Value(List{})})},
      {"c", Value(std::move(inner))},
      // Tuples of every size (pickled with EMPTY_TUPLE, TUPLE1-3 and
      // MARK..TUPLE), nested, and holding a dict and a list.
      {"t",
       Value(List{Value(Tuple{}), Value(Tuple{{1}}), Value(Tuple{{0.9, 0.999}}),
                  Value(Tuple{{1, "x", None{}}}),
                  Value(Tuple{{1, 2, 3, Tuple{{4}}}}),
                  Value(Tuple{{"warmup", StateDict{{"steps", 10}}}}),
                  Value(Tuple{{List{1}}})})},
      {"utf8", Value("h\xc3\xa9llo")}});
  DCP_ASSERT_OK_AND_ASSIGN(std::string record, SerializeValueRecord(value));
  DCP_ASSERT_OK_AND_ASSIGN(ZipDirectory dir, ReadZipDirectory(record));
  EXPECT_EQ(dir.Find("data/0"), nullptr);
  EXPECT_NE(dir.Find("version"), nullptr);
  DCP_ASSERT_OK_AND_ASSIGN(Value back, ParseValueRecord(record));
  EXPECT_TRUE(ValuesEqual(back, value)) << back << " vs " << value;
  for (const Value& scalar : {Value(7), Value(-1.0), Value(false),
                              Value(None{}), Value("s"), Value(Bytes{"b"})}) {
    DCP_ASSERT_OK_AND_ASSIGN(
        Value again, ParseValueRecord(SerializeValueRecord(scalar).value()));
    EXPECT_TRUE(ValuesEqual(again, scalar)) << scalar;
  }
}

TEST(ValueRecordTest, IntSevenIsTheTorchPickle) {
  DCP_ASSERT_OK_AND_ASSIGN(std::string record, SerializeValueRecord(Value(7)));
  DCP_ASSERT_OK_AND_ASSIGN(ZipDirectory dir, ReadZipDirectory(record));
  EXPECT_EQ(*ZipEntryData(record, *dir.Find("data.pkl")),
            absl::string_view("\x80\x02K\x07.", 5));
}

TEST(ValueRecordTest, RejectsTensorsAndInvalidStrings) {
  EXPECT_THAT(
      SerializeValueRecord(Value(at::ones({2}))).status(),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("cannot pickle value: a tensor is not a value")));
  EXPECT_THAT(
      SerializeValueRecord(
          Value(StateDict{{"k", Value(List{Value(1), Value(at::ones({1}))})}}))
          .status(),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("cannot pickle value[\"k\"][1]: a tensor")));
  EXPECT_THAT(SerializeValueRecord(Value(std::string("\xff"))).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("UTF-8")));
}

std::string RecordOf(const std::string& pkl) {
  return BuildZipArchive({{"archive/data.pkl", pkl},
                          {"archive/byteorder", "little"},
                          {"archive/version", "3\n"}})
      .value();
}

TEST(ValueRecordTest, ReadsPythonShapes) {
  // (1, 'a') -> (1, "a"), a Tuple
  {
    PickleWriter w;
    w.WriteTuple(2, [&](size_t i) {
      if (i == 0)
        w.WriteInt(1);
      else
        w.WriteString("a");
    });
    DCP_ASSERT_OK_AND_ASSIGN(
        Value v, ParseValueRecord(RecordOf(std::move(w).Finish().value())));
    EXPECT_TRUE(ValuesEqual(v, Value(Tuple{{Value(1), Value("a")}}))) << v;
  }
  // {1: 'x', 'y': {2: None}} -> {"1": "x", "y": {"2": None}}
  {
    PickleWriter w;
    w.WriteDict(2, [&](size_t i) {
      if (i == 0) {
        w.WriteInt(1);
        w.WriteString("x");
      } else {
        w.WriteString("y");
        w.WriteDict(1, [&](size_t) {
          w.WriteInt(2);
          w.WriteNone();
        });
      }
    });
    DCP_ASSERT_OK_AND_ASSIGN(
        Value v, ParseValueRecord(RecordOf(std::move(w).Finish().value())));
    EXPECT_TRUE(ValuesEqual(
        v, Value(StateDict{{"1", Value("x")},
                           {"y", Value(StateDict{{"2", Value(None{})}})}})))
        << v;
  }
  // collections.OrderedDict([('w', 1)]), as Python pickles it.
  {
    PickleWriter w;
    w.WriteGlobal("collections", "OrderedDict");
    w.EmitEmptyTuple();
    w.EmitReduce();
    w.WriteString("w");
    w.WriteInt(1);
    w.EmitSetItem();
    DCP_ASSERT_OK_AND_ASSIGN(
        Value v, ParseValueRecord(RecordOf(std::move(w).Finish().value())));
    EXPECT_TRUE(ValuesEqual(v, Value(StateDict{{"w", Value(1)}}))) << v;
  }
}

TEST(ValueRecordTest, RejectsUnsupportedPickledTypes) {
  // A tensor inside a bytes record.
  const std::string tensor_pkl = TensorPickle(
      "torch._utils", "_rebuild_tensor_v2", "FloatStorage", 4, 0, {4}, {1});
  EXPECT_THAT(ParseValueRecord(RecordWithPickle(tensor_pkl, 16)).status(),
              StatusIs(absl::StatusCode::kUnimplemented,
                       HasSubstr("value record at value: unsupported pickled "
                                 "type torch.Tensor")));
  {
    PickleWriter w;
    w.WriteList(1, [&](size_t) {
      w.WriteGlobal("builtins", "set");
      w.WriteTuple(0, [](size_t) {});
      w.EmitReduce();
    });
    EXPECT_THAT(
        ParseValueRecord(RecordOf(std::move(w).Finish().value())).status(),
        StatusIs(absl::StatusCode::kUnimplemented,
                 HasSubstr("builtins.set at value[0]")));
  }
  {
    PickleWriter w;
    w.WriteBigInt(std::string("\0\0\0\0\0\0\0\0\x01", 9));
    EXPECT_THAT(
        ParseValueRecord(RecordOf(std::move(w).Finish().value())).status(),
        StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("int64")));
  }
  {
    PickleWriter w;
    w.WriteDict(2, [&](size_t i) {
      if (i == 0)
        w.WriteInt(1);
      else
        w.WriteString("1");
      w.WriteNone();
    });
    EXPECT_THAT(
        ParseValueRecord(RecordOf(std::move(w).Finish().value())).status(),
        StatusIs(absl::StatusCode::kUnimplemented,
                 HasSubstr("both the int key 1 and the str key")));
  }
  {
    PickleWriter w;
    w.WriteDict(1, [&](size_t) {
      w.WriteFloat(1.5);
      w.WriteNone();
    });
    EXPECT_THAT(
        ParseValueRecord(RecordOf(std::move(w).Finish().value())).status(),
        StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("dict key")));
  }
  EXPECT_THAT(ParseValueRecord("not a zip").status(),
              StatusIs(absl::StatusCode::kDataLoss));
}

TEST(ValueRecordTest, EveryTruncationFails) {
  const std::string record =
      SerializeValueRecord(Value(StateDict{{"a", Value(List{Value(1)})}}))
          .value();
  for (size_t n = 0; n < record.size(); ++n) {
    EXPECT_THAT(
        ParseValueRecord(absl::string_view(record).substr(0, n)).status(),
        StatusIs(absl::StatusCode::kDataLoss))
        << n;
  }
}

// ---- Decoded-size budget (issue 9) ------------------------------------------

// BINUNICODE of any length.
std::string LongBinUnicode(absl::string_view s) {
  const uint32_t n = static_cast<uint32_t>(s.size());
  std::string out = "X";
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(n >> (8 * i)));
  return absl::StrCat(out, s);
}
constexpr absl::string_view kProto2 = "\x80\x02";
constexpr absl::string_view kPut0Pop("q\0" "0", 3);  // BINPUT 0, POP
constexpr absl::string_view kGet0("h\0", 2);         // BINGET 0

// [s, s, s, ...]: one memoized 1 MiB str referenced 20,000 times, 20 GiB
// once each reference is copied into a List.
TEST(ValueRecordBudgetTest, SharedBigStringFailsCleanly) {
  std::string pkl = absl::StrCat(
      kProto2, LongBinUnicode(std::string(1 << 20, 's')), kPut0Pop, "](");
  for (int i = 0; i < 20000; ++i) absl::StrAppend(&pkl, kGet0);
  pkl += "e.";
  EXPECT_THAT(ParseValueRecord(RecordWithPickle(pkl, 0)),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       AllOf(HasSubstr("torch.save record: data.pkl"),
                             HasSubstr("expands to more than"))));
  // A few references are fine.
  std::string few =
      absl::StrCat(kProto2, LongBinUnicode("abc"), kPut0Pop, "](");
  for (int i = 0; i < 3; ++i) absl::StrAppend(&few, kGet0);
  few += "e.";
  DCP_ASSERT_OK_AND_ASSIGN(Value v, ParseValueRecord(RecordWithPickle(few, 0)));
  EXPECT_TRUE(ValuesEqual(
      v, Value(List{Value("abc"), Value("abc"), Value("abc")})))
      << v;
}

// [{k: None}, {k: None}, ...] with one shared 64 KiB key: within the
// pickle's decoded size, but each dict copies the key twice (into the dict
// and into its key index), which the conversion's budget catches.
TEST(ValueRecordBudgetTest, SharedDictKeysAreChargedPerCopy) {
  auto pickle = [](int dicts) {
    std::string pkl = absl::StrCat(
        kProto2, LongBinUnicode(std::string(64 << 10, 'k')), kPut0Pop, "](");
    for (int i = 0; i < dicts; ++i) absl::StrAppend(&pkl, "}", kGet0, "Ns");
    return pkl + "e.";
  };
  ASSERT_THAT(ParseValueRecord(RecordWithPickle(pickle(3), 0)), IsOk());
  const std::string pkl = pickle(45);
  PickleReadOptions options = DecodeLimits().PickleOptions(pkl.size());
  ASSERT_THAT(ReadPickle(pkl, options), IsOk());
  const std::string record = RecordWithPickle(pkl, 0);
  EXPECT_THAT(ParseValueRecord(record),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       AllOf(HasSubstr("value record at value["),
                             HasSubstr("value record decodes to more than "
                                       "its budget of"))));
  DecodeLimits generous;
  generous.budget_per_input_byte = 256;
  DCP_ASSERT_OK_AND_ASSIGN(Value v, ParseValueRecord(record, generous));
  ASSERT_TRUE(v.is<List>());
  EXPECT_THAT(v.get<List>(), SizeIs(45));
}

// 300 nested dicts, each under its own 4 KiB key: a path naming every key
// would be 1.2 MB at the bottom (and each level holds its own path).
TEST(ValueRecordBudgetTest, PathsStayShortUnderDeepLongKeys) {
  constexpr int kLevels = 300;
  std::string pkl(kProto2);
  for (int i = 0; i < kLevels; ++i) {
    absl::StrAppend(&pkl, "}",
                    LongBinUnicode(std::string(4096, 'a' + i % 26)));
  }
  pkl += "\x8f";  // EMPTY_SET: unsupported, so the error names the path.
  for (int i = 0; i < kLevels; ++i) pkl += "s";
  pkl += ".";
  absl::Status status = ParseValueRecord(RecordWithPickle(pkl, 0)).status();
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kUnimplemented,
                               AllOf(HasSubstr("unsupported pickled type set "
                                               "at value[\"aaaa"),
                                     HasSubstr("...\"][\"bbbb"))));
  EXPECT_LT(status.message().size(), 1200u);
}

TEST(ValueRecordBudgetTest, DepthLimitIsAnOption) {
  const std::string record =
      SerializeValueRecord(Value(List{Value(List{Value(List{})})})).value();
  ASSERT_THAT(ParseValueRecord(record), IsOk());
  DecodeLimits shallow;
  shallow.max_depth = 2;
  EXPECT_THAT(ParseValueRecord(record, shallow),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("deeper than 2 levels")));
}

}  // namespace
}  // namespace dcp
