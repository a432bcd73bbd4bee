#include "storage/metadata_sidecar.h"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <random>
#include <string>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "core/metadata.h"
#include "core/metadata_codec.h"
#include "gtest/gtest.h"
#include "storage/crc32.h"
#include "storage/metadata_pickle.h"
#include "testing/status_matchers.h"
#include "testing/test_seed.h"

namespace dcp {
namespace {

using ::testing::HasSubstr;

// A checkpoint's metadata with every kind of field, varied by `rng`.
Metadata RandomMetadata(std::mt19937& rng) {
  const c10::ScalarType dtypes[] = {
      c10::ScalarType::Float, c10::ScalarType::BFloat16, c10::ScalarType::Long,
      c10::ScalarType::Bool};
  Metadata md;
  const int keys = absl::Uniform(rng, 0, 40);
  for (int k = 0; k < keys; ++k) {
    const std::string fqn = absl::StrCat(
        "m.", k, absl::Uniform(rng, 0, 3) == 0 ? ".caf\xc3\xa9" : ".w");
    if (absl::Uniform(rng, 0, 5) == 0) {
      md.state_dict_metadata[fqn] = BytesStorageMetadata{};
      md.storage_data[MetadataIndex(fqn)] = StorageInfo{
          "__0_0.distcp", absl::Uniform<int64_t>(rng, 0, 1 << 20), 9};
      continue;
    }
    TensorStorageMetadata tensor;
    tensor.properties.dtype = dtypes[absl::Uniform(rng, 0, 4)];
    tensor.properties.requires_grad = absl::Bernoulli(rng, 0.5);
    const int64_t rows = absl::Uniform<int64_t>(rng, 1, 9);
    tensor.size = {rows, 3};
    for (int64_t r = 0; r < rows; r += 4) {
      ChunkStorageMetadata chunk{{r, 0}, {std::min<int64_t>(4, rows - r), 3}};
      tensor.chunks.push_back(chunk);
      const std::optional<int64_t> index =
          absl::Bernoulli(rng, 0.5) ? std::optional<int64_t>(r) : std::nullopt;
      md.storage_data[MetadataIndex(fqn, chunk.offsets, index)] =
          StorageInfo{absl::StrCat("__", r % 3, "_0.distcp"),
                      absl::Uniform<int64_t>(rng, 0, int64_t{1} << 40), 1180};
    }
    md.state_dict_metadata[fqn] = tensor;
    md.planner_data[fqn] = ObjectPath{std::string("m"), int64_t{k}};
  }
  if (absl::Bernoulli(rng, 0.7)) {
    StorageMeta meta;
    meta.checkpoint_id = "/ckpt/7";
    meta.save_id = "33a75ced13aeac48";
    if (absl::Bernoulli(rng, 0.5)) meta.modules = {"model", "optim"};
    md.storage_meta = meta;
  }
  if (absl::Bernoulli(rng, 0.5)) md.version = "1.0.0";
  return md;
}

TEST(MetadataSidecarTest, DecodesToWhatThePickleDecodesTo) {
  const uint32_t seed = test::TestSeed();
  SCOPED_TRACE(absl::StrCat("DCP_TEST_SEED=", seed));
  std::mt19937 rng(seed);
  for (int round = 0; round < 200; ++round) {
    const Metadata md = RandomMetadata(rng);
    DCP_ASSERT_OK_AND_ASSIGN(std::string pickle, EncodeMetadataPickle(md));
    const std::string sidecar = EncodeMetadataSidecar(md, pickle);
    DCP_ASSERT_OK_AND_ASSIGN(Metadata from_sidecar,
                             DecodeMetadataSidecar(sidecar, pickle));
    DCP_ASSERT_OK_AND_ASSIGN(Metadata from_pickle,
                             DecodeMetadataPickle(pickle));
    EXPECT_EQ(from_sidecar, from_pickle) << "round " << round;
    // == ignores the index hints; they must agree too.
    ASSERT_EQ(from_sidecar.storage_data.size(),
              from_pickle.storage_data.size());
    auto it = from_pickle.storage_data.begin();
    for (const auto& [index, info] : from_sidecar.storage_data) {
      EXPECT_EQ(index.index, it->first.index) << index;
      ++it;
    }
  }
}

TEST(MetadataSidecarTest, AStaleSidecarIsNotUsed) {
  const uint32_t seed = test::TestSeed();
  SCOPED_TRACE(absl::StrCat("DCP_TEST_SEED=", seed));
  std::mt19937 rng(seed);
  Metadata md = RandomMetadata(rng);
  md.version = "1.0.0";
  DCP_ASSERT_OK_AND_ASSIGN(std::string pickle, EncodeMetadataPickle(md));
  const std::string sidecar = EncodeMetadataSidecar(md, pickle);

  // Another checkpoint's .metadata (as after PyTorch overwrote the files).
  md.version = "2.0.0";
  DCP_ASSERT_OK_AND_ASSIGN(std::string other, EncodeMetadataPickle(md));
  EXPECT_THAT(DecodeMetadataSidecar(sidecar, other),
              test::StatusIs(absl::StatusCode::kFailedPrecondition,
                             HasSubstr("describes a .metadata of")));
  // The same size with one byte changed.
  for (size_t i = 0; i < pickle.size(); i += 7) {
    std::string changed = pickle;
    changed[i] ^= 0x20;
    EXPECT_THAT(DecodeMetadataSidecar(sidecar, changed),
                test::StatusIs(absl::StatusCode::kFailedPrecondition))
        << "byte " << i;
  }
}

// MetadataSidecarPayload makes the same checks without decoding, and its
// payload decodes to the metadata.
TEST(MetadataSidecarTest, PayloadIsTheEncodingOfTheMetadata) {
  const uint32_t seed = test::TestSeed();
  SCOPED_TRACE(absl::StrCat("DCP_TEST_SEED=", seed));
  std::mt19937 rng(seed);
  const Metadata md = RandomMetadata(rng);
  DCP_ASSERT_OK_AND_ASSIGN(std::string pickle, EncodeMetadataPickle(md));
  const std::string sidecar = EncodeMetadataSidecar(md, pickle);
  DCP_ASSERT_OK_AND_ASSIGN(absl::string_view payload,
                           MetadataSidecarPayload(sidecar, pickle));
  EXPECT_EQ(payload, EncodeMetadata(md));
  DCP_ASSERT_OK_AND_ASSIGN(Metadata decoded, DecodeMetadata(payload));
  EXPECT_EQ(decoded, md);
  EXPECT_THAT(MetadataSidecarPayload(sidecar, pickle + " "),
              test::StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(
      MetadataSidecarPayload(sidecar.substr(0, sidecar.size() - 1), pickle),
      test::StatusIs(absl::StatusCode::kDataLoss));
}

// A payload of another codec version (or kind), CRC-32s intact, is refused
// before decoding: a reader never hands it on as its metadata.
TEST(MetadataSidecarTest, AnotherCodecVersionIsDataLoss) {
  Metadata md;
  md.version = "1.0.0";
  DCP_ASSERT_OK_AND_ASSIGN(std::string pickle, EncodeMetadataPickle(md));
  for (size_t header_byte : {0, 1}) {
    std::string sidecar = EncodeMetadataSidecar(md, pickle);
    constexpr size_t kPayload = 32;  // After the fixed header.
    sidecar[kPayload + header_byte] ^= 0x40;
    const uint32_t crc = Crc32(absl::string_view(sidecar).substr(kPayload));
    for (int i = 0; i < 4; ++i)
      sidecar[20 + i] = static_cast<char>(crc >> (8 * i));
    EXPECT_THAT(MetadataSidecarPayload(sidecar, pickle),
                test::StatusIs(absl::StatusCode::kDataLoss))
        << "header byte " << header_byte;
    EXPECT_THAT(DecodeMetadataSidecar(sidecar, pickle),
                test::StatusIs(absl::StatusCode::kDataLoss));
  }
}

TEST(MetadataSidecarTest, ADamagedSidecarIsDataLossNeverAValue) {
  const uint32_t seed = test::TestSeed();
  SCOPED_TRACE(absl::StrCat("DCP_TEST_SEED=", seed));
  std::mt19937 rng(seed);
  Metadata md;
  while (md.storage_data.empty()) md = RandomMetadata(rng);
  DCP_ASSERT_OK_AND_ASSIGN(std::string pickle, EncodeMetadataPickle(md));
  const std::string sidecar = EncodeMetadataSidecar(md, pickle);
  // Every truncation.
  for (size_t n = 0; n < sidecar.size(); ++n) {
    EXPECT_THAT(DecodeMetadataSidecar(sidecar.substr(0, n), pickle),
                test::StatusIs(absl::StatusCode::kDataLoss))
        << n << " of " << sidecar.size() << " bytes";
  }
  // Every flipped byte: the header's record of the .metadata makes it
  // stale; anything else is damage.
  for (size_t i = 0; i < sidecar.size(); ++i) {
    std::string flipped = sidecar;
    flipped[i] ^= 0x01;
    const absl::StatusCode expected =
        i >= 8 && i < 20 ? absl::StatusCode::kFailedPrecondition
                         : absl::StatusCode::kDataLoss;
    EXPECT_THAT(DecodeMetadataSidecar(flipped, pickle),
                test::StatusIs(expected))
        << "byte " << i;
  }
  // Not a sidecar at all.
  EXPECT_THAT(DecodeMetadataSidecar(pickle, pickle),
              test::StatusIs(absl::StatusCode::kDataLoss,
                             HasSubstr("not a dcp metadata sidecar")));
}

}  // namespace
}  // namespace dcp
