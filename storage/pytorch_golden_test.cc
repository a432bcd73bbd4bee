// Golden fixtures: checkpoints written by real PyTorch 2.6
// (testdata/pytorch_golden/, see tools/peer/README.md "Golden checkpoints"),
// read by dcp without Python. Checks `.metadata` (keys, dtypes, sizes,
// chunks, record byte ranges, planner_data, storage_meta) against the
// generator's JSON descriptions and loads every checkpoint through
// FileSystemReader: `simple` and `nonstrided` with no process group,
// `sharded4` (4 ranks) with 1, 2, 3 and 4 simulated ranks into row/column
// layouts. Every element and value must equal the formula values.
#include <stdlib.h>

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "checkpoint/save_load.h"
#include "core/metadata.h"
#include "core/sharding.h"
#include "core/state_dict.h"
#include "core/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/fs_storage.h"
#include "testing/peer_cases.h"
#include "testing/runfiles.h"
#include "testing/simulator.h"
#include "testing/status_matchers.h"

namespace dcp {
namespace {

using ::dcp::test::ComparePeerCase;
using ::dcp::test::MakePeerCase;
using ::dcp::test::PeerCaseLeaves;
using ::dcp::test::PeerLeaf;
using ::dcp::test::PeerValues;
using ::dcp::test::RankContext;
using ::dcp::test::Simulator;
using ::dcp::test::SimulatorOptions;
using ::testing::ElementsAreArray;
using ::testing::IsEmpty;

std::string GoldenDir(absl::string_view name) {
  return test::PytorchGoldenPath(name);
}

// Reader options for the goldens: their files in the runfiles tree are
// symbolic links, which a reader refuses by default.
FileSystemReaderOptions GoldenReaderOptions() {
  FileSystemReaderOptions options;
  options.allow_symlinks = true;
  return options;
}

struct GoldenChunk {
  Shape offsets;
  Shape sizes;
  std::string file;
  int64_t offset;
  int64_t length;
};

struct GoldenRecord {
  std::string file;
  int64_t offset = 0;
  int64_t length = 0;
};

// One entry of NAME.json: a tensor (dtype non-empty, with chunks) or a bytes
// value (with its record).
struct GoldenEntry {
  std::string fqn;
  std::string dtype;
  Shape shape;
  std::vector<GoldenChunk> chunks;
  GoldenRecord record;
};

// testdata/pytorch_golden/simple.json, "entries".
const std::vector<GoldenEntry>& SimpleEntries() {
  static const auto* const kEntries = new std::vector<GoldenEntry>{
      {"tensor_f32",
       "float32",
       {2, 3},
       {
           {{0, 0}, {2, 3}, "__0_0.distcp", 8640, 1180},
       },
       {}},
      {"vector_i64",
       "int64",
       {4},
       {
           {{0}, {4}, "__0_0.distcp", 9820, 1180},
       },
       {}},
      {"bf16",
       "bfloat16",
       {2, 2},
       {
           {{0, 0}, {2, 2}, "__0_0.distcp", 11000, 1180},
       },
       {}},
      {"f16",
       "float16",
       {3},
       {
           {{0}, {3}, "__0_0.distcp", 12180, 1180},
       },
       {}},
      {"c64",
       "complex64",
       {2},
       {
           {{0}, {2}, "__0_0.distcp", 13360, 1180},
       },
       {}},
      {"scalar",
       "float32",
       {},
       {
           {{}, {}, "__0_0.distcp", 14540, 1180},
       },
       {}},
      {"empty",
       "float32",
       {0},
       {
           {{0}, {0}, "__0_0.distcp", 15720, 1116},
       },
       {}},
      {"empty2d",
       "int32",
       {2, 0},
       {
           {{0, 0}, {2, 0}, "__0_0.distcp", 16836, 1116},
       },
       {}},
      {"mask",
       "bool",
       {5},
       {
           {{0}, {5}, "__0_0.distcp", 17952, 1180},
       },
       {}},
      {"u8",
       "uint8",
       {3},
       {
           {{0}, {3}, "__0_0.distcp", 19132, 1180},
       },
       {}},
      {"step", "", {}, {}, {"__0_0.distcp", 0, 864}},
      {"lr", "", {}, {}, {"__0_0.distcp", 864, 864}},
      {"name", "", {}, {}, {"__0_0.distcp", 1728, 864}},
      {"none", "", {}, {}, {"__0_0.distcp", 2592, 864}},
      {"flag", "", {}, {}, {"__0_0.distcp", 3456, 864}},
      {"raw", "", {}, {}, {"__0_0.distcp", 4320, 864}},
      {"sizes", "", {}, {}, {"__0_0.distcp", 5184, 864}},
      {"pair", "", {}, {}, {"__0_0.distcp", 6048, 864}},
      {"nested.inner.w",
       "float32",
       {3},
       {
           {{0}, {3}, "__0_0.distcp", 20312, 1180},
       },
       {}},
      {"nested.inner.count", "", {}, {}, {"__0_0.distcp", 6912, 864}},
      {"nested.list.0",
       "int32",
       {2},
       {
           {{0}, {2}, "__0_0.distcp", 21492, 1180},
       },
       {}},
      {"nested.list.1", "", {}, {}, {"__0_0.distcp", 7776, 864}},
  };
  return *kEntries;
}

// testdata/pytorch_golden/sharded4.json, "entries".
const std::vector<GoldenEntry>& Sharded4Entries() {
  static const auto* const kEntries = new std::vector<GoldenEntry>{
      {"row",
       "float32",
       {6, 4},
       {
           {{0, 0}, {2, 4}, "__0_0.distcp", 0, 1180},
           {{2, 0}, {2, 4}, "__1_0.distcp", 0, 1180},
           {{4, 0}, {2, 4}, "__2_0.distcp", 864, 1180},
           {{6, 0}, {0, 4}, "__3_0.distcp", 0, 1116},
       },
       {}},
      {"col",
       "float32",
       {4, 6},
       {
           {{0, 0}, {4, 2}, "__0_0.distcp", 1180, 1180},
           {{0, 2}, {4, 2}, "__1_0.distcp", 1180, 1180},
           {{0, 4}, {4, 2}, "__2_0.distcp", 2044, 1180},
           {{0, 6}, {4, 0}, "__3_0.distcp", 1116, 1116},
       },
       {}},
      {"uneven",
       "float32",
       {5, 3},
       {
           {{0, 0}, {2, 3}, "__0_0.distcp", 2360, 1180},
           {{2, 0}, {2, 3}, "__1_0.distcp", 2360, 1180},
           {{4, 0}, {1, 3}, "__2_0.distcp", 3224, 1180},
           {{5, 0}, {0, 3}, "__3_0.distcp", 2232, 1116},
       },
       {}},
      {"bias",
       "float32",
       {3},
       {
           {{0}, {3}, "__1_0.distcp", 3540, 1180},
       },
       {}},
      {"step", "", {}, {}, {"__2_0.distcp", 0, 864}},
  };
  return *kEntries;
}

// testdata/pytorch_golden/nonstrided.json, "entries".
const std::vector<GoldenEntry>& NonstridedEntries() {
  static const auto* const kEntries = new std::vector<GoldenEntry>{
      {"transposed",
       "float32",
       {4, 3},
       {
           {{0, 0}, {4, 3}, "__0_0.distcp", 0, 1180},
       },
       {}},
      {"permuted",
       "int64",
       {3, 2, 2},
       {
           {{0, 0, 0}, {3, 2, 2}, "__0_0.distcp", 1180, 1244},
       },
       {}},
      {"column",
       "float32",
       {4},
       {
           {{0}, {4}, "__0_0.distcp", 2424, 1180},
       },
       {}},
      {"contiguous",
       "float32",
       {2, 3},
       {
           {{0, 0}, {2, 3}, "__0_0.distcp", 3604, 1180},
       },
       {}},
  };
  return *kEntries;
}

struct Golden {
  const char* name;         // directory and JSON name
  const char* case_name;    // testing/peer_cases.h
  std::set<std::string> files;
  const std::vector<GoldenEntry>& (*entries)();
};

const std::vector<Golden>& Goldens() {
  static const auto* const kGoldens = new std::vector<Golden>{
      {"simple", "golden_simple", {"__0_0.distcp"}, &SimpleEntries},
      {"sharded4",
       "golden_sharded4",
       {"__0_0.distcp", "__1_0.distcp", "__2_0.distcp", "__3_0.distcp"},
       &Sharded4Entries},
      {"nonstrided", "golden_nonstrided", {"__0_0.distcp"}, &NonstridedEntries},
  };
  return *kGoldens;
}

std::string Describe(const std::vector<std::string>& diffs) {
  return absl::StrJoin(diffs, "\n");
}

TEST(PytorchGoldenTest, MetadataMatchesTheGeneratorsDescription) {
  for (const Golden& golden : Goldens()) {
    SCOPED_TRACE(golden.name);
    DCP_ASSERT_OK_AND_ASSIGN(
        Metadata md,
        ReadCheckpointMetadata(GoldenDir(golden.name), GoldenReaderOptions()));
    DCP_ASSERT_OK_AND_ASSIGN(std::vector<PeerLeaf> leaves,
                             PeerCaseLeaves(golden.case_name));
    const std::vector<GoldenEntry>& entries = golden.entries();
    ASSERT_EQ(entries.size(), leaves.size());

    // Exactly the case's keys, and planner_data maps each to its path.
    std::vector<std::string> want_keys;
    for (const PeerLeaf& leaf : leaves) want_keys.push_back(leaf.fqn);
    std::sort(want_keys.begin(), want_keys.end());
    std::vector<std::string> keys;
    for (const auto& [fqn, unused] : md.state_dict_metadata) {
      keys.push_back(fqn);
    }
    EXPECT_THAT(keys, ElementsAreArray(want_keys));
    std::map<std::string, ObjectPath> want_paths;
    for (const PeerLeaf& leaf : leaves) want_paths[leaf.fqn] = leaf.path;
    EXPECT_EQ(md.planner_data, want_paths);

    std::set<std::string> files;
    size_t records = 0;
    for (size_t i = 0; i < entries.size(); ++i) {
      const GoldenEntry& e = entries[i];
      SCOPED_TRACE(e.fqn);
      ASSERT_EQ(e.fqn, leaves[i].fqn);
      auto it = md.state_dict_metadata.find(e.fqn);
      ASSERT_NE(it, md.state_dict_metadata.end());
      if (e.dtype.empty()) {
        EXPECT_TRUE(std::holds_alternative<BytesStorageMetadata>(it->second));
        auto info = md.storage_data.find(MetadataIndex(e.fqn));
        ASSERT_NE(info, md.storage_data.end());
        EXPECT_EQ(info->second,
                  (StorageInfo{e.record.file, e.record.offset,
                               e.record.length}));
        files.insert(e.record.file);
        ++records;
        continue;
      }
      const auto* tensor = std::get_if<TensorStorageMetadata>(&it->second);
      ASSERT_NE(tensor, nullptr);
      DCP_ASSERT_OK_AND_ASSIGN(c10::ScalarType dtype, DtypeFromName(e.dtype));
      EXPECT_EQ(tensor->properties.dtype, dtype);
      EXPECT_EQ(tensor->properties.dtype, leaves[i].dtype);
      EXPECT_FALSE(tensor->properties.requires_grad);
      EXPECT_EQ(tensor->properties.layout, c10::kStrided);
      EXPECT_EQ(tensor->size, e.shape);
      EXPECT_EQ(tensor->size, leaves[i].shape);
      ASSERT_EQ(tensor->chunks.size(), e.chunks.size());
      for (size_t c = 0; c < e.chunks.size(); ++c) {
        const GoldenChunk& want = e.chunks[c];
        EXPECT_EQ(tensor->chunks[c],
                  (ChunkStorageMetadata{want.offsets, want.sizes}))
            << "chunk " << c;
        auto info = md.storage_data.find(MetadataIndex(e.fqn, want.offsets));
        ASSERT_NE(info, md.storage_data.end()) << "chunk " << c;
        EXPECT_EQ(info->second,
                  (StorageInfo{want.file, want.offset, want.length}))
            << "chunk " << c;
        files.insert(want.file);
        ++records;
      }
    }
    EXPECT_EQ(md.storage_data.size(), records);
    EXPECT_EQ(files, golden.files);
    // checkpoint_id was a relative pathlib.PosixPath; save_id a uuid4.
    ASSERT_TRUE(md.storage_meta.has_value());
    EXPECT_EQ(md.storage_meta->checkpoint_id, std::string(golden.name));
    ASSERT_TRUE(md.storage_meta->save_id.has_value());
    EXPECT_EQ(md.storage_meta->save_id->size(), 36u);
    EXPECT_FALSE(md.version.has_value());  // 2.6 writes no version
  }
}

// Loads `name` with no process group into the case's destination.
void LoadNoDist(const Golden& golden, bool verify_checksums) {
  DCP_ASSERT_OK_AND_ASSIGN(
      StateDict sd,
      MakePeerCase(golden.case_name, 0, 1, PeerValues::kPlaceholder));
  FileSystemReaderOptions options = GoldenReaderOptions();
  options.verify_checksums = verify_checksums;
  DCP_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<FileSystemReader> reader,
      FileSystemReader::Create(GoldenDir(golden.name), options));
  LoadOptions load;
  load.no_dist = true;
  DCP_ASSERT_OK(Load(sd, *reader, load));
  std::vector<std::string> diffs =
      ComparePeerCase(golden.case_name, sd, 0, 1);
  EXPECT_THAT(diffs, IsEmpty()) << Describe(diffs);
}

TEST(PytorchGoldenTest, LoadsEveryGoldenWithoutProcessGroup) {
  for (const Golden& golden : Goldens()) {
    for (bool verify : {true, false}) {
      SCOPED_TRACE(absl::StrCat(golden.name, verify ? " verified" : ""));
      LoadNoDist(golden, verify);
    }
  }
}

TEST(PytorchGoldenTest, LoadsSharded4WithOneToFourRanks) {
  for (int world = 1; world <= 4; ++world) {
    for (bool verify : {true, false}) {
      SCOPED_TRACE(absl::StrCat("world ", world, verify ? " verified" : ""));
      SimulatorOptions sim_options;
      sim_options.world_size = world;
      DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Simulator> sim,
                               Simulator::Create(sim_options));
      std::vector<std::vector<std::string>> diffs(world);
      std::vector<absl::Status> statuses =
          sim->Run([&](RankContext& ctx) -> absl::Status {
            DCP_ASSIGN_OR_RETURN(
                StateDict sd,
                MakePeerCase("golden_sharded4", ctx.rank(), ctx.world_size(),
                             PeerValues::kPlaceholder));
            FileSystemReaderOptions options = GoldenReaderOptions();
            options.verify_checksums = verify;
            DCP_ASSIGN_OR_RETURN(
                std::unique_ptr<FileSystemReader> reader,
                FileSystemReader::Create(GoldenDir("sharded4"), options));
            LoadOptions load;
            load.process_group = &ctx.pg();
            DCP_RETURN_IF_ERROR(Load(sd, *reader, load));
            diffs[ctx.rank()] = ComparePeerCase(
                "golden_sharded4", sd, ctx.rank(), ctx.world_size());
            return absl::OkStatus();
          });
      for (int r = 0; r < world; ++r) {
        DCP_EXPECT_OK(statuses[r]) << "rank " << r;
        EXPECT_THAT(diffs[r], IsEmpty()) << "rank " << r << "\n"
                                         << Describe(diffs[r]);
      }
    }
  }
}

// The row- and column-sharded tensors of sharded4 loaded into the other
// layout: every saved chunk is cut differently than the destination.
TEST(PytorchGoldenTest, ReshardsSharded4RowsIntoColumnsAndBack) {
  const int world = 3;
  SimulatorOptions sim_options;
  sim_options.world_size = world;
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Simulator> sim,
                           Simulator::Create(sim_options));
  std::vector<std::vector<std::string>> diffs(world);
  std::vector<absl::Status> statuses =
      sim->Run([&](RankContext& ctx) -> absl::Status {
        StateDict sd;
        // "row" [6, 4] as columns, "col" [4, 6] as rows.
        DCP_ASSIGN_OR_RETURN(at::Tensor row_full,
                             test::PeerFullValue("row", c10::kFloat, {6, 4}));
        DCP_ASSIGN_OR_RETURN(at::Tensor col_full,
                             test::PeerFullValue("col", c10::kFloat, {4, 6}));
        DCP_ASSIGN_OR_RETURN(ShardedTensor row_dest,
                             ZerosShardAlongDim({6, 4}, c10::kFloat, 1,
                                                ctx.rank(), world));
        DCP_ASSIGN_OR_RETURN(ShardedTensor col_dest,
                             ZerosShardAlongDim({4, 6}, c10::kFloat, 0,
                                                ctx.rank(), world));
        sd.Set("row", row_dest);
        sd.Set("col", col_dest);
        DCP_ASSIGN_OR_RETURN(std::unique_ptr<FileSystemReader> reader,
                             FileSystemReader::Create(GoldenDir("sharded4"),
                                                      GoldenReaderOptions()));
        LoadOptions load;
        load.process_group = &ctx.pg();
        DCP_RETURN_IF_ERROR(Load(sd, *reader, load));
        DCP_ASSIGN_OR_RETURN(ShardedTensor row_want,
                             ShardAlongDim(row_full, 1, ctx.rank(), world));
        DCP_ASSIGN_OR_RETURN(ShardedTensor col_want,
                             ShardAlongDim(col_full, 0, ctx.rank(), world));
        if (!ValuesEqual(Value(row_want), *sd.Find("row"))) {
          diffs[ctx.rank()].push_back("row differs");
        }
        if (!ValuesEqual(Value(col_want), *sd.Find("col"))) {
          diffs[ctx.rank()].push_back("col differs");
        }
        return absl::OkStatus();
      });
  for (int r = 0; r < world; ++r) {
    DCP_EXPECT_OK(statuses[r]) << "rank " << r;
    EXPECT_THAT(diffs[r], IsEmpty()) << "rank " << r;
  }
}

}  // namespace
}  // namespace dcp
