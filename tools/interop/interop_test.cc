#include "tools/interop/interop.h"

#include <ATen/ATen.h>
#include <stdlib.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "checkpoint/save_load.h"
#include "core/metadata.h"
#include "core/state_dict.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/fs_storage.h"
#include "testing/peer_cases.h"
#include "testing/status_matchers.h"

namespace dcp::tools {
namespace {

using ::dcp::test::MakePeerCase;
using ::dcp::test::PeerValues;
using ::dcp::test::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// A fresh directory under $TEST_TMPDIR.
std::string MakeTempDir() {
  const char* base = getenv("TEST_TMPDIR");
  std::string pattern =
      absl::StrCat(base != nullptr ? base : "/tmp", "/interop_XXXXXX");
  CHECK(mkdtemp(pattern.data()) != nullptr) << pattern;
  return pattern;
}

struct RoundTrip {
  const char* case_name;
  int save_world;
  int load_world;
};

TEST(InteropTest, DcpSavesAndLoadsEveryCaseWithAnotherWorldSize) {
  for (const RoundTrip& t : std::vector<RoundTrip>{{"dtensor_row", 4, 3},
                                                   {"dtensor_col", 3, 2},
                                                   {"mesh2d", 4, 3},
                                                   {"mesh2d", 2, 4},
                                                   {"replicated", 2, 1},
                                                   {"mixed", 1, 4},
                                                   {"mixed", 4, 3}}) {
    SCOPED_TRACE(absl::StrCat(t.case_name, " ", t.save_world, " -> ",
                              t.load_world));
    InteropOptions options;
    options.dir = absl::StrCat(MakeTempDir(), "/ckpt");
    options.case_name = t.case_name;
    options.world_size = t.save_world;
    DCP_ASSERT_OK(SaveCase(options));
    options.world_size = t.load_world;
    DCP_ASSERT_OK_AND_ASSIGN(LoadReport report, LoadCase(options));
    EXPECT_THAT(report.diffs, IsEmpty()) << absl::StrJoin(report.diffs, "\n");
    DCP_ASSERT_OK_AND_ASSIGN(std::vector<test::PeerLeaf> leaves,
                             test::PeerCaseLeaves(t.case_name));
    EXPECT_EQ(report.leaves, static_cast<int>(leaves.size()));
  }
}

TEST(InteropTest, ReportsEveryDifferentElementAndValue) {
  const std::string dir = absl::StrCat(MakeTempDir(), "/ckpt");
  DCP_ASSERT_OK_AND_ASSIGN(
      StateDict sd, MakePeerCase("dtensor_row", 0, 1, PeerValues::kTrue));
  // "even" [8, 4] is one shard on a world of 1; change element [5, 1].
  at::Tensor even = sd.FindMutable("even")
                        ->get<ShardedTensor>()
                        .local_shards[0]
                        .tensor;
  const float old = even[5][1].item<float>();
  even[5][1] = old + 0.5f;
  sd.Set("extra", 1);
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<FileSystemWriter> writer,
                           FileSystemWriter::Create(dir));
  SaveOptions save;
  save.no_dist = true;
  DCP_ASSERT_OK(Save(sd, *writer, save).status());

  InteropOptions options;
  options.dir = dir;
  options.case_name = "dtensor_row";
  options.world_size = 2;  // rank 1 holds rows 4..7
  DCP_ASSERT_OK_AND_ASSIGN(LoadReport report, LoadCase(options));
  EXPECT_THAT(
      report.diffs,
      ElementsAre("[rank 1] even: 1 of 16 elements differ on rank 1",
                  absl::StrCat("[rank 1]   even index [5, 1]: expected ", old,
                               ", got ", old + 0.5f),
                  "metadata: unexpected key \"extra\""));
}

TEST(InteropTest, DcpSavesTuplesAsOneLeafLikePyTorch) {
  InteropOptions options;
  options.dir = absl::StrCat(MakeTempDir(), "/ckpt");
  options.case_name = "mixed";
  options.world_size = 2;
  DCP_ASSERT_OK(SaveCase(options));
  DCP_ASSERT_OK_AND_ASSIGN(Metadata md, ReadCheckpointMetadata(options.dir));
  // A tuple holding a dict is one leaf, as in PyTorch.
  EXPECT_EQ(md.state_dict_metadata.count("extra.pair"), 1);
  EXPECT_EQ(md.state_dict_metadata.count("extra.pair.1.steps"), 0);
  EXPECT_EQ(md.state_dict_metadata.count("optim.param_groups.0.betas"), 1);
  // And loads back as a tuple.
  DCP_ASSERT_OK_AND_ASSIGN(LoadReport report, LoadCase(options));
  EXPECT_THAT(report.diffs, IsEmpty()) << absl::StrJoin(report.diffs, "\n");
}

TEST(InteropTest, BadOptions) {
  InteropOptions options;
  options.dir = MakeTempDir();
  options.case_name = "no_such_case";
  EXPECT_THAT(SaveCase(options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("unknown peer case \"no_such_case\"")));
  options.case_name = "mixed";
  options.world_size = 0;
  EXPECT_THAT(LoadCase(options).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  options.world_size = 1;
  options.dir = "";
  EXPECT_THAT(SaveCase(options), StatusIs(absl::StatusCode::kInvalidArgument));
  options.dir = absl::StrCat(MakeTempDir(), "/nothing_here");
  EXPECT_THAT(LoadCase(options).status(),
              StatusIs(absl::StatusCode::kNotFound));
}

}  // namespace
}  // namespace dcp::tools
