// The decoded-size budget of `.metadata` decoding (issue 9 items 1 and 3):
// hostile files whose shared values expand far beyond their size fail with
// ResourceExhausted, and realistic large files stay well within it.
#include <cstddef>
#include <string>
#include <tuple>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/metadata.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/hostile_metadata_testutil.h"
#include "storage/metadata_pickle.h"
#include "storage/pickle.h"
#include "storage/pickle_test_util.h"
#include "testing/status_matchers.h"

namespace dcp {
namespace {

using ::dcp::test::Asm;
using ::dcp::test::IsOk;
using ::dcp::test::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr absl::string_view kMd = "torch.distributed.checkpoint.metadata";

// The reported file: 20,000 storage entries whose MetadataIndex.fqn is one
// memoized 1 MiB string. Decoding copied the fqn 20,000 times (20 GiB).
TEST(DecodeMetadataBudgetTest, SharedHugeKeyFailsCleanly) {
  const std::string pickle =
      dcp::test::SharedKeyMetadataPickle(20000, size_t{1} << 20);
  EXPECT_GT(pickle.size(), 1500000u);
  EXPECT_LT(pickle.size(), 2100000u);
  EXPECT_THAT(DecodeMetadataPickle(pickle),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       AllOf(HasSubstr("decoding .metadata"),
                             HasSubstr("expands to more than"))));
  // The same shape with a key of ordinary length decodes.
  DCP_ASSERT_OK_AND_ASSIGN(
      Metadata md,
      DecodeMetadataPickle(dcp::test::SharedKeyMetadataPickle(20000, 40)));
  EXPECT_EQ(md.storage_data.size(), 20000u);
}

// The pickle's own decoded size can be within its budget while the
// conversion copies far more: here every tensor's chunk list is one shared
// list, and each key gets its own copy of its chunks.
TEST(DecodeMetadataBudgetTest, SharedChunkListIsChargedPerCopy) {
  const std::string pickle = dcp::test::SharedChunksMetadataPickle(60, 1000);
  PickleReadOptions options = DecodeLimits().PickleOptions(pickle.size());
  options.allow_global = [](absl::string_view, absl::string_view) {
    return true;
  };
  ASSERT_THAT(ReadPickle(pickle, options), IsOk());
  EXPECT_THAT(DecodeMetadataPickle(pickle),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       AllOf(HasSubstr(".metadata decodes to more than its "
                                       "budget of"),
                             HasSubstr("DecodeLimits::budget_per_input_byte"),
                             HasSubstr("state_dict_metadata[\"t"))));
  // A larger multiplier is the documented way to accept such a file.
  DecodeLimits generous;
  generous.budget_per_input_byte = 1024;
  DCP_ASSERT_OK_AND_ASSIGN(Metadata md, DecodeMetadataPickle(pickle, generous));
  ASSERT_EQ(md.state_dict_metadata.size(), 60u);
  const auto* tensor =
      std::get_if<TensorStorageMetadata>(&md.state_dict_metadata.at("t59"));
  ASSERT_NE(tensor, nullptr);
  EXPECT_EQ(tensor->chunks.size(), 1000u);
}

TEST(DecodeMetadataBudgetTest, DepthLimitIsAnOption) {
  const std::string pickle = dcp::test::SharedKeyMetadataPickle(3, 10);
  ASSERT_THAT(DecodeMetadataPickle(pickle), IsOk());
  DecodeLimits shallow;
  shallow.max_depth = 3;
  EXPECT_THAT(DecodeMetadataPickle(pickle, shallow),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("deeper than 3 levels")));
}

// The budget is not too tight for what PyTorch writes: tensors with fqns of
// ~150 bytes, each fqn memoized once and referenced from planner_data and
// its MetadataIndex, as CPython's pickler does. (metadata_budget_large_test
// decodes 100,000 such keys.)
TEST(DecodeMetadataBudgetTest, LargeRealisticMetadataDecodes) {
  constexpr int kKeys = 5000;
  const std::string pickle = dcp::test::RealisticMetadataPickle(kKeys, 150, 1);
  DCP_ASSERT_OK_AND_ASSIGN(Metadata md, DecodeMetadataPickle(pickle));
  EXPECT_EQ(md.state_dict_metadata.size(), kKeys);
  EXPECT_EQ(md.planner_data.size(), kKeys);
  EXPECT_EQ(md.storage_data.size(), kKeys);
  const std::string fqn = dcp::test::RealisticFqn(kKeys - 1, 150);
  EXPECT_GE(fqn.size(), 150u);
  EXPECT_EQ(md.storage_data.count(MetadataIndex(fqn, Shape{0, 0})), 1u);
  // Many chunks per key, and very long names, fit too.
  DCP_ASSERT_OK_AND_ASSIGN(
      md,
      DecodeMetadataPickle(dcp::test::RealisticMetadataPickle(200, 150, 64)));
  EXPECT_EQ(md.storage_data.size(), 200u * 64);
  DCP_ASSERT_OK_AND_ASSIGN(
      md,
      DecodeMetadataPickle(dcp::test::RealisticMetadataPickle(200, 2000, 16)));
  EXPECT_EQ(md.storage_data.size(), 200u * 16);
}

// How far below the default budget realistic files are: they decode with
// an eighth of it (a quarter for very long names with many chunks),
// whatever their size, since the budget scales with the input.
TEST(DecodeMetadataBudgetTest, RealisticMetadataNeedsAFractionOfTheBudget) {
  DecodeLimits tight;
  tight.budget_per_input_byte = 8;
  tight.budget_base_bytes = 0;
  for (const auto& [keys, name_bytes, chunks] :
       std::vector<std::tuple<int, size_t, int>>{
           {1000, 20, 1}, {1000, 150, 1}, {100, 150, 64}}) {
    SCOPED_TRACE(absl::StrCat(keys, " keys of ", name_bytes, " bytes, ",
                              chunks, " chunks each"));
    EXPECT_THAT(DecodeMetadataPickle(dcp::test::RealisticMetadataPickle(
                                         keys, name_bytes, chunks),
                                     tight),
                IsOk());
  }
  // The worst realistic case copies a long fqn into every chunk's
  // MetadataIndex: 2000-byte names with 16 chunks each need about 10x.
  tight.budget_per_input_byte = 16;
  EXPECT_THAT(DecodeMetadataPickle(
                  dcp::test::RealisticMetadataPickle(100, 2000, 16), tight),
              IsOk());
}

TEST(DecodeMetadataBudgetTest, LongKeysAreShortenedInMessages) {
  // A schema error under a 1 MiB key names the key by its first bytes.
  const std::string key(size_t{1} << 20, 'q');
  const std::string pickle = Asm()
                                 .Proto(2)
                                 .Global(kMd, "Metadata").Op(')').Op(0x81)
                                 .Op('}').Op('(')
                                 .Unicode("state_dict_metadata").Op('}')
                                 .Op('(').Unicode(key).Op('N').Op('u')
                                 .Op('u').Op('b')
                                 .Stop();
  absl::StatusOr<Metadata> md = DecodeMetadataPickle(pickle);
  EXPECT_THAT(md, StatusIs(absl::StatusCode::kDataLoss,
                           HasSubstr("qqq\"... (1048576 bytes)")));
  EXPECT_LT(md.status().message().size(), 1000u);
}

}  // namespace
}  // namespace dcp
