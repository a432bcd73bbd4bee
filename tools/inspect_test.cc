#include "tools/inspect.h"

#include <ATen/ATen.h>
#include <unistd.h>

#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "core/state_dict.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/file_system.h"
#include "testing/hostile_files.h"
#include "testing/runfiles.h"
#include "testing/status_matchers.h"
#include "tools/local_checkpoint.h"

namespace dcp::tools {
namespace {

using ::dcp::test::IsOk;
using ::dcp::test::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

std::string Golden(absl::string_view name) {
  return test::PytorchGoldenPath(name);
}

// `allow_symlinks` for the goldens, whose files in the runfiles tree are
// symbolic links.
std::string Inspect(const std::string& dir, bool json,
                    bool allow_symlinks = false) {
  InspectOptions options;
  options.dir = dir;
  options.json = json;
  options.allow_symlinks = allow_symlinks;
  std::ostringstream out;
  absl::Status status = InspectCheckpoint(options, out);
  EXPECT_THAT(status, IsOk());
  return out.str();
}

// The output line whose first word is `word`.
std::string LineStartingWith(const std::string& text, absl::string_view word) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(line, absl::StrCat(word, " "))) {
      return std::string(line);
    }
  }
  return "";
}

TEST(InspectTest, TableOfAPyTorchShardedCheckpoint) {
  const std::string out =
      Inspect(Golden("sharded4"), false, /*allow_symlinks=*/true);
  EXPECT_THAT(out, HasSubstr("format version: none (PyTorch 2.6 style)"));
  EXPECT_THAT(LineStartingWith(out, "row"),
              AllOf(HasSubstr("tensor"), HasSubstr("float32"),
                    HasSubstr("[6, 4]")));
  EXPECT_THAT(LineStartingWith(out, "col"),
              AllOf(HasSubstr("tensor"), HasSubstr("float32"),
                    HasSubstr("[4, 6]")));
  EXPECT_THAT(LineStartingWith(out, "bias"), HasSubstr("[3]"));
  EXPECT_THAT(LineStartingWith(out, "step"),
              AllOf(HasSubstr("bytes"), HasSubstr("864 B"),
                    HasSubstr("__2_0.distcp")));
  // Chunks, with the empty shard of the last rank.
  EXPECT_THAT(out, HasSubstr("  [6, 0] +[0, 4]"));
  EXPECT_THAT(out, HasSubstr("  [0, 2] +[4, 2]"));
  EXPECT_THAT(out, HasSubstr("5 keys (4 tensors, 1 bytes values)"));
  EXPECT_THAT(LineStartingWith(out, ".metadata"), HasSubstr("2,355"));
  EXPECT_THAT(out, HasSubstr("total (5 files)"));
  // Keys are sorted.
  EXPECT_LT(out.find("\nbias "), out.find("\ncol "));
  EXPECT_LT(out.find("\ncol "), out.find("\nrow "));
  EXPECT_LT(out.find("\nrow "), out.find("\nstep "));
}

TEST(InspectTest, JsonOfAPyTorchShardedCheckpoint) {
  const std::string out =
      Inspect(Golden("sharded4"), true, /*allow_symlinks=*/true);
  EXPECT_THAT(out, StartsWith("{\n  \"checkpoint\": \""));
  EXPECT_THAT(out, HasSubstr("\"version\": null"));
  EXPECT_THAT(out, HasSubstr(
                       "{\"key\": \"row\", \"kind\": \"tensor\", \"path\": "
                       "[\"row\"], \"dtype\": \"float32\", \"shape\": [6, 4], "
                       "\"requires_grad\": false, \"bytes\": 4656,"));
  EXPECT_THAT(out, HasSubstr("{\"offsets\": [6, 0], \"sizes\": [0, 4], "
                             "\"file\": \"__3_0.distcp\", \"offset\": 0, "
                             "\"length\": 1116}"));
  EXPECT_THAT(out, HasSubstr("{\"key\": \"step\", \"kind\": \"bytes\", "
                             "\"path\": [\"step\"], \"bytes\": 864, \"file\": "
                             "\"__2_0.distcp\", \"offset\": 0, \"length\": "
                             "864}"));
  EXPECT_THAT(out, HasSubstr("\"total_bytes\": 16012,"));
  EXPECT_THAT(out, HasSubstr("{\"name\": \".metadata\", \"size\": 2355}"));
  EXPECT_THAT(out, HasSubstr("\"total_file_bytes\": 18367\n}\n"));
}

TEST(InspectTest, NestedPathsAndDtypesOfTheSimpleGolden) {
  const std::string text =
      Inspect(Golden("simple"), false, /*allow_symlinks=*/true);
  EXPECT_THAT(LineStartingWith(text, "bf16"), HasSubstr("bfloat16"));
  EXPECT_THAT(LineStartingWith(text, "c64"), HasSubstr("complex64"));
  EXPECT_THAT(LineStartingWith(text, "scalar"), HasSubstr("[]"));
  EXPECT_THAT(LineStartingWith(text, "empty2d"),
              AllOf(HasSubstr("int32"), HasSubstr("[2, 0]")));
  const std::string json =
      Inspect(Golden("simple"), true, /*allow_symlinks=*/true);
  EXPECT_THAT(json, HasSubstr("{\"key\": \"nested.list.0\", \"kind\": "
                              "\"tensor\", \"path\": [\"nested\", \"list\", 0]"));
  EXPECT_THAT(json, HasSubstr("\"dtype\": \"bool\", \"shape\": [5]"));
}

TEST(InspectTest, JsonEscapesKeysAndShowsDcpMetadata) {
  const std::string dir = JoinPath(::testing::TempDir(), "inspect_escape");
  std::vector<StateDict> ranks(1);
  ranks[0].Set("quote\"back\\slash\ttab", at::ones({2}));
  ranks[0].Set("caf\xc3\xa9", int64_t{7});
  DCP_ASSERT_OK_AND_ASSIGN(absl::Duration unused, SaveOnLocalRanks(ranks, dir));
  (void)unused;
  const std::string json = Inspect(dir, true);
  EXPECT_THAT(json, HasSubstr("{\"key\": \"quote\\\"back\\\\slash\\ttab\""));
  EXPECT_THAT(json, HasSubstr("{\"key\": \"caf\xc3\xa9\", \"kind\": \"bytes\""));
  EXPECT_THAT(json, HasSubstr("\"version\": \"1.0.0\""));
  EXPECT_THAT(json, HasSubstr("\"save_id\": \""));
  const std::string text = Inspect(dir, false);
  EXPECT_THAT(text, HasSubstr("format version: 1.0.0"));
  EXPECT_THAT(text, HasSubstr("2 keys (1 tensors, 1 bytes values)"));
}

TEST(InspectTest, FifoMetadataIsAnErrorNotAHang) {
  const std::string dir = JoinPath(::testing::TempDir(), "inspect_fifo");
  std::vector<StateDict> ranks(1);
  ranks[0].Set("w", at::ones({2}));
  DCP_ASSERT_OK_AND_ASSIGN(absl::Duration unused, SaveOnLocalRanks(ranks, dir));
  (void)unused;
  const std::string metadata = JoinPath(dir, ".metadata");
  ASSERT_EQ(::unlink(metadata.c_str()), 0);
  DCP_ASSERT_OK(test::MakeFifo(metadata));
  // A regression blocks in open(2) until the watchdog gives it a writer.
  test::FifoWatchdog watchdog({metadata});
  InspectOptions options;
  options.dir = dir;
  std::ostringstream out;
  EXPECT_THAT(InspectCheckpoint(options, out),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr(metadata), HasSubstr("is a FIFO"))));
  EXPECT_FALSE(watchdog.fired()) << "opening the FIFO .metadata blocked";
}

TEST(InspectTest, FilesThatAreNotRegularAreLeftOutOfTheListing) {
  const std::string dir = JoinPath(::testing::TempDir(), "inspect_socket");
  std::vector<StateDict> ranks(1);
  ranks[0].Set("w", at::ones({2}));
  DCP_ASSERT_OK_AND_ASSIGN(absl::Duration unused, SaveOnLocalRanks(ranks, dir));
  (void)unused;
  DCP_ASSERT_OK(test::MakeSocketFile(JoinPath(dir, "__9_0.distcp")));
  DCP_ASSERT_OK(test::MakeFifo(JoinPath(dir, "__9_1.distcp")));
  const std::string text = Inspect(dir, false);
  EXPECT_THAT(text, HasSubstr(".metadata"));
  EXPECT_THAT(text, Not(HasSubstr("__9_")));
}

TEST(InspectTest, SymlinkedMetadataIsRefusedUnlessAllowed) {
  InspectOptions options;
  options.dir = Golden("simple");  // Runfiles: every file is a link.
  std::ostringstream out;
  EXPECT_THAT(InspectCheckpoint(options, out),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr(".metadata"),
                             HasSubstr("symbolic link"))));
  options.allow_symlinks = true;
  EXPECT_THAT(InspectCheckpoint(options, out), IsOk());
}

TEST(InspectTest, DirectoryWithoutMetadataIsNotFound) {
  InspectOptions options;
  options.dir = ::testing::TempDir();
  std::ostringstream out;
  EXPECT_THAT(InspectCheckpoint(options, out),
              StatusIs(absl::StatusCode::kNotFound));
  options.dir = "";
  EXPECT_THAT(InspectCheckpoint(options, out),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace dcp::tools
