// Multi-rank tests of FileSystemWriter / FileSystemReader on the simulator:
// resharding round trips (N ranks save, M ranks load) over the in-memory and
// the POSIX file system, crash consistency at every file-system operation of
// a save, and failures injected into one rank.
#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "checkpoint/save_load.h"
#include "core/metadata.h"
#include "core/state_dict.h"
#include "core/status.h"
#include "glog/logging.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/file_system.h"
#include "storage/fs_storage.h"
#include "storage/posix_file_system.h"
#include "testing/checkpoint_scenarios.h"
#include "testing/fault_injecting_file_system.h"
#include "testing/forwarding_storage.h"
#include "testing/mem_file_system.h"
#include "testing/simulator.h"
#include "testing/status_matchers.h"
#include "testing/test_seed.h"

namespace dcp {
namespace {

using ::dcp::test::CheckModelStateDict;
using ::dcp::test::FaultInjectingFileSystem;
using ::dcp::test::FaultRule;
using ::dcp::test::FileOp;
using ::dcp::test::ForwardingStorageWriter;
using ::dcp::test::IsOk;
using ::dcp::test::IsOkAndHolds;
using ::dcp::test::MakeModelStateDict;
using ::dcp::test::MemFileSystem;
using ::dcp::test::ModelLayout;
using ::dcp::test::ModelValues;
using ::dcp::test::RankContext;
using ::dcp::test::Simulator;
using ::dcp::test::SimulatorOptions;
using ::dcp::test::StatusIs;
using ::testing::AllOf;
using ::testing::Each;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr absl::string_view kDir = "/ckpt";

std::unique_ptr<Simulator> MakeSimulator(int world_size,
                                         std::optional<uint64_t> seed) {
  SimulatorOptions options;
  options.world_size = world_size;
  options.collective_timeout = absl::Seconds(60);
  options.seed = seed;
  absl::StatusOr<std::unique_ptr<Simulator>> sim = Simulator::Create(options);
  CHECK(sim.ok()) << sim.status();
  return *std::move(sim);
}

// Saves the model (with `value_seed`'s values) from `world` ranks.
std::vector<absl::Status> SaveModel(Simulator& sim,
                                    std::shared_ptr<FileSystem> fs,
                                    absl::string_view dir, int value_seed,
                                    FileSystemWriterOptions options = {}) {
  const int world = sim.options().world_size;
  options.file_system = std::move(fs);
  return sim.Run([&](RankContext& ctx) -> absl::Status {
    DCP_ASSIGN_OR_RETURN(
        StateDict sd, MakeModelStateDict(ctx.rank(), world, ModelLayout::kSave,
                                         ModelValues::kTrue, value_seed));
    DCP_ASSIGN_OR_RETURN(auto writer,
                         FileSystemWriter::Create(std::string(dir), options));
    SaveOptions save;
    save.process_group = &ctx.pg();
    save.collective_timeout = absl::Seconds(60);
    return Save(sd, *writer, save).status();
  });
}

std::vector<absl::Status> SaveModel(int world, std::shared_ptr<FileSystem> fs,
                                    absl::string_view dir, int value_seed,
                                    FileSystemWriterOptions options = {},
                                    std::optional<uint64_t> seed = {}) {
  return SaveModel(*MakeSimulator(world, seed), std::move(fs), dir, value_seed,
                   std::move(options));
}

// Loads into `world` ranks in the load layout and checks the values.
std::vector<absl::Status> LoadAndCheckModel(
    int world, std::shared_ptr<FileSystem> fs, absl::string_view dir,
    int value_seed, FileSystemReaderOptions options = {}) {
  options.file_system = std::move(fs);
  auto sim = MakeSimulator(world, std::nullopt);
  return sim->Run([&](RankContext& ctx) -> absl::Status {
    DCP_ASSIGN_OR_RETURN(
        StateDict sd, MakeModelStateDict(ctx.rank(), world, ModelLayout::kLoad,
                                         ModelValues::kPlaceholder));
    DCP_ASSIGN_OR_RETURN(auto reader,
                         FileSystemReader::Create(std::string(dir), options));
    LoadOptions load;
    load.process_group = &ctx.pg();
    load.collective_timeout = absl::Seconds(60);
    DCP_RETURN_IF_ERROR(Load(sd, *reader, load));
    return CheckModelStateDict(sd, ctx.rank(), world, ModelLayout::kLoad,
                               value_seed);
  });
}

// Which model a one-rank load of `dir` finds: 0 or 1 (the value seed), or
// the load's error; Internal if the values are neither (a mix).
absl::StatusOr<int> LoadedVersion(std::shared_ptr<FileSystem> fs,
                                  absl::string_view dir) {
  DCP_ASSIGN_OR_RETURN(
      StateDict sd,
      MakeModelStateDict(0, 1, ModelLayout::kLoad, ModelValues::kPlaceholder));
  FileSystemReaderOptions options;
  options.file_system = std::move(fs);
  DCP_ASSIGN_OR_RETURN(auto reader,
                       FileSystemReader::Create(std::string(dir), options));
  LoadOptions load;
  load.no_dist = true;
  DCP_RETURN_IF_ERROR(Load(sd, *reader, load));
  for (int version : {0, 1}) {
    if (CheckModelStateDict(sd, 0, 1, ModelLayout::kLoad, version).ok()) {
      return version;
    }
  }
  return absl::InternalError(absl::StrCat(
      "loaded neither v0 nor v1: ",
      CheckModelStateDict(sd, 0, 1, ModelLayout::kLoad, 0).message()));
}

std::string ReadFile(FileSystem& fs, absl::string_view path) {
  absl::StatusOr<std::string> data = ReadFileToString(fs, path);
  CHECK(data.ok()) << data.status();
  return *data;
}

// The token of the save that wrote `md`: the random part of its data file
// names, "__<rank>_<n>_<token>.distcp".
std::string SaveTokenOf(const Metadata& md) {
  CHECK(!md.storage_data.empty());
  absl::string_view name = md.storage_data.begin()->second.relative_path;
  CHECK(absl::ConsumeSuffix(&name, ".distcp")) << name;
  return std::string(name.substr(name.rfind('_') + 1));
}

// A fresh MemFileSystem with the files of `from`.
std::shared_ptr<MemFileSystem> CopyOf(MemFileSystem& from) {
  auto to = std::make_shared<MemFileSystem>();
  for (const auto& [path, size] : from.ListAllFiles()) {
    CHECK(to->CreateDir(Dirname(path)).ok());
    CHECK(WriteStringToFile(*to, path, ReadFile(from, path), false).ok());
  }
  return to;
}

// ---- Resharding -------------------------------------------------------------

enum class FsKind { kMem, kPosix };

class FsReshardTest
    : public ::testing::TestWithParam<std::tuple<int, int, FsKind>> {
 protected:
  void SetUp() override {
    if (std::get<2>(GetParam()) == FsKind::kMem) {
      fs_ = std::make_shared<MemFileSystem>();
      dir_ = std::string(kDir);
    } else {
      fs_ = NewPosixFileSystem();
      dir_ = JoinPath(::testing::TempDir(),
                      absl::StrCat("reshard_", std::get<0>(GetParam()), "_",
                                   std::get<1>(GetParam())));
    }
  }

  std::shared_ptr<FileSystem> fs_;
  std::string dir_;
};

TEST_P(FsReshardTest, SaveWithNRanksLoadsExactlyIntoMRanks) {
  const auto [save_world, load_world, kind] = GetParam();
  // Vary the thread counts with the file system.
  FileSystemWriterOptions w;
  w.thread_count = kind == FsKind::kMem ? 1 : 4;
  FileSystemReaderOptions r;
  r.thread_count = kind == FsKind::kMem ? 4 : 1;
  ASSERT_THAT(SaveModel(save_world, fs_, dir_, 0, w), Each(IsOk()));
  EXPECT_THAT(LoadAndCheckModel(load_world, fs_, dir_, 0, r), Each(IsOk()));
  // The same through the checksum-free partial reads.
  r.verify_checksums = false;
  EXPECT_THAT(LoadAndCheckModel(load_world, fs_, dir_, 0, r), Each(IsOk()));
}

INSTANTIATE_TEST_SUITE_P(
    AllWorldSizes, FsReshardTest,
    ::testing::Combine(::testing::Values(1, 2, 3, 4),
                       ::testing::Values(1, 2, 3, 4),
                       ::testing::Values(FsKind::kMem, FsKind::kPosix)),
    [](const auto& info) {
      return absl::StrCat(
          std::get<2>(info.param) == FsKind::kMem ? "Mem" : "Posix", "_save",
          std::get<0>(info.param), "_load", std::get<1>(info.param));
    });

TEST(FsStorageMultiRankTest, OneFilePerItemReshards) {
  auto fs = std::make_shared<MemFileSystem>();
  FileSystemWriterOptions w;
  w.single_file_per_rank = false;
  w.thread_count = 3;
  ASSERT_THAT(SaveModel(3, fs, kDir, 0, w), Each(IsOk()));
  EXPECT_THAT(LoadAndCheckModel(2, fs, kDir, 0), Each(IsOk()));
}

TEST(FsStorageMultiRankTest, EveryRankWritesItsOwnFiles) {
  auto fs = std::make_shared<MemFileSystem>();
  FileSystemWriterOptions w;
  w.thread_count = 2;
  ASSERT_THAT(SaveModel(3, fs, kDir, 0, w), Each(IsOk()));
  DCP_ASSERT_OK_AND_ASSIGN(Metadata md,
                           ReadCheckpointMetadata(std::string(kDir), fs));
  const std::string token = SaveTokenOf(md);
  std::vector<std::string> expected = {".dcp.lock", ".dcp.metadata",
                                       ".metadata"};
  for (int rank = 0; rank < 3; ++rank) {
    for (int n = 0; n < 2; ++n) {
      expected.push_back(
          absl::StrCat("__", rank, "_", n, "_", token, ".distcp"));
    }
  }
  std::sort(expected.begin(), expected.end());
  EXPECT_THAT(fs->GetChildren(kDir), IsOkAndHolds(expected));
  EXPECT_EQ(md.storage_meta->checkpoint_id, std::string(kDir));
}

// ---- One saver per directory
// -------------------------------------------------

// Forwards to `target`; after the target's PrepareGlobalPlan returned OK,
// runs `pause` (so the save is held in the middle, holding the directory).
class PausingWriter : public ForwardingStorageWriter {
 public:
  PausingWriter(StorageWriter& target, std::function<void()> pause)
      : ForwardingStorageWriter(target), pause_(std::move(pause)) {}

  absl::StatusOr<std::vector<SavePlan>> PrepareGlobalPlan(
      std::vector<SavePlan> plans) override {
    absl::StatusOr<std::vector<SavePlan>> result =
        ForwardingStorageWriter::PrepareGlobalPlan(std::move(plans));
    if (result.ok()) pause_();
    return result;
  }

 private:
  std::function<void()> pause_;
};

TEST(FsStorageMultiRankTest, ConcurrentSaveFailsOnEveryRankAndFirstCommits) {
  auto fs = std::make_shared<MemFileSystem>();
  ASSERT_THAT(SaveModel(2, fs, kDir, 0), Each(IsOk()));
  std::vector<absl::Status> second;
  std::string first_save_id;
  auto sim = MakeSimulator(2, /*seed=*/3);
  std::vector<absl::Status> first =
      sim->Run([&](RankContext& ctx) -> absl::Status {
        DCP_ASSIGN_OR_RETURN(
            StateDict sd, MakeModelStateDict(ctx.rank(), 2, ModelLayout::kSave,
                                             ModelValues::kTrue, 1));
        FileSystemWriterOptions options;
        options.file_system = fs;
        DCP_ASSIGN_OR_RETURN(
            auto writer, FileSystemWriter::Create(std::string(kDir), options));
        // While the first save's coordinator holds the directory, a second
        // save of 3 ranks tries to write it.
        PausingWriter paused(*writer, [&] {
          first_save_id = *writer->StorageMetaForSave()->save_id;
          second = SaveModel(3, fs, kDir, 2, {}, /*seed=*/4);
        });
        SaveOptions save;
        save.process_group = &ctx.pg();
        save.collective_timeout = absl::Seconds(60);
        StorageWriter& used =
            ctx.rank() == 0 ? static_cast<StorageWriter&>(paused) : *writer;
        return Save(sd, used, save).status();
      });
  EXPECT_THAT(first, Each(IsOk()));
  ASSERT_EQ(second.size(), 3u);
  EXPECT_THAT(
      second,
      Each(StatusIs(absl::StatusCode::kFailedPrecondition,
                    AllOf(HasSubstr("rank 0"),
                          HasSubstr("checkpoint directory /ckpt is being saved "
                                    "by another writer"),
                          HasSubstr(first_save_id),
                          HasSubstr("lock file /ckpt/.dcp.lock")))));
  EXPECT_THAT(LoadAndCheckModel(3, fs, kDir, 1), Each(IsOk()));
  // Afterwards the directory is free again.
  ASSERT_THAT(SaveModel(3, fs, kDir, 2), Each(IsOk()));
  EXPECT_THAT(LoadAndCheckModel(2, fs, kDir, 2), Each(IsOk()));
}

// ---- Failures ---------------------------------------------------------------

TEST(FsStorageMultiRankTest, FailedWriteKeepsTheOldCheckpointAndCleansUp) {
  auto mem = std::make_shared<MemFileSystem>();
  ASSERT_THAT(SaveModel(3, mem, kDir, 0), Each(IsOk()));
  const std::map<std::string, uint64_t> before = mem->ListAllFiles();
  auto faulty = std::make_shared<FaultInjectingFileSystem>(mem);
  // Rank 2's data file fails to sync.
  FaultRule rule;
  rule.op = FileOp::kSync;
  rule.path_substring = "/__2_0_";
  rule.status = absl::UnavailableError("disk on fire");
  faulty->AddRule(rule);
  std::vector<absl::Status> statuses = SaveModel(3, faulty, kDir, 1);
  ASSERT_EQ(statuses.size(), 3u);
  for (const absl::Status& status : statuses) {
    EXPECT_THAT(status,
                StatusIs(absl::StatusCode::kUnavailable,
                         AllOf(HasSubstr("rank 2"), HasSubstr("disk on fire"),
                               HasSubstr("__2_0_"))));
  }
  // Rank 2 removed the files of its failed write; ranks 0 and 1 wrote
  // theirs, which nothing references.
  for (const auto& [path, size] : mem->ListAllFiles()) {
    if (absl::StrContains(path, "/__2_")) {
      EXPECT_EQ(before.count(path), 1u) << path;
    }
  }
  EXPECT_THAT(LoadedVersion(mem, kDir), IsOkAndHolds(0));
  // The next successful save removes every leftover.
  faulty->ClearRules();
  ASSERT_THAT(SaveModel(3, faulty, kDir, 1), Each(IsOk()));
  DCP_ASSERT_OK_AND_ASSIGN(Metadata md,
                           ReadCheckpointMetadata(std::string(kDir), mem));
  size_t data_files = 0;
  for (const auto& [path, size] : mem->ListAllFiles()) {
    if (!absl::EndsWith(path, ".distcp")) continue;
    ++data_files;
    EXPECT_TRUE(absl::StrContains(path, SaveTokenOf(md)))
        << path;
  }
  EXPECT_EQ(data_files, 3u);
  EXPECT_THAT(LoadedVersion(mem, kDir), IsOkAndHolds(1));
}

TEST(FsStorageMultiRankTest,
     SyncFailureAfterTheCommitSaysCommittedOnEveryRank) {
  auto mem = std::make_shared<MemFileSystem>();
  ASSERT_THAT(SaveModel(3, mem, kDir, 0), Each(IsOk()));
  auto faulty = std::make_shared<FaultInjectingFileSystem>(mem);
  // Each of the 3 ranks syncs the directory after its data files; the
  // coordinator's 4th sync, after the rename of .metadata, fails.
  faulty->AddRule({FileOp::kSyncDir, "/ckpt", /*nth=*/4, /*times=*/1,
                   absl::UnavailableError("disk gone")});
  std::vector<absl::Status> statuses = SaveModel(3, faulty, kDir, 1);
  EXPECT_THAT(statuses,
              Each(StatusIs(absl::StatusCode::kUnavailable,
                            AllOf(HasSubstr("rank 0"),
                                  HasSubstr("the new checkpoint in /ckpt is "
                                            "committed (.metadata is in "
                                            "place), but syncing the "
                                            "directory failed"),
                                  HasSubstr("disk gone")))));
  const std::vector<std::string> log = faulty->mutation_log();
  auto rename = std::find_if(log.begin(), log.end(), [](const std::string& op) {
    return absl::StartsWith(op, "rename /ckpt/.metadata.tmp.");
  });
  ASSERT_NE(rename, log.end());
  ASSERT_NE(rename + 1, log.end());
  EXPECT_EQ(*(rename + 1), "syncdir /ckpt");
  faulty->ClearRules();
  EXPECT_THAT(LoadAndCheckModel(2, faulty, kDir, 1), Each(IsOk()));
}

TEST(FsStorageMultiRankTest, FaultPointsFailTheSaveOrLoadCleanly) {
  auto fs = std::make_shared<MemFileSystem>();
  ASSERT_THAT(SaveModel(2, fs, kDir, 0), Each(IsOk()));
  for (absl::string_view point :
       {"fs_storage.write_data", "fs_storage.finish"}) {
    SCOPED_TRACE(point);
    auto sim = MakeSimulator(2, std::nullopt);
    sim->faults().FailAtPoint(0, point, absl::InternalError("injected"));
    EXPECT_THAT(
        SaveModel(*sim, fs, kDir, 1),
        Each(StatusIs(absl::StatusCode::kInternal, HasSubstr("injected"))));
    EXPECT_THAT(LoadedVersion(fs, kDir), IsOkAndHolds(0));
  }
  // A failed load.
  auto sim = MakeSimulator(2, std::nullopt);
  sim->faults().FailAtPoint(1, "fs_storage.read_data",
                            absl::DataLossError("injected read"));
  std::vector<absl::Status> statuses = sim->Run([&](RankContext& ctx) {
    absl::StatusOr<StateDict> sd = MakeModelStateDict(
        ctx.rank(), 2, ModelLayout::kLoad, ModelValues::kPlaceholder);
    if (!sd.ok()) return sd.status();
    FileSystemReaderOptions options;
    options.file_system = fs;
    absl::StatusOr<std::unique_ptr<FileSystemReader>> reader =
        FileSystemReader::Create(std::string(kDir), options);
    if (!reader.ok()) return reader.status();
    LoadOptions load;
    load.process_group = &ctx.pg();
    return Load(*sd, **reader, load);
  });
  EXPECT_THAT(statuses, Each(StatusIs(absl::StatusCode::kDataLoss,
                                      HasSubstr("injected read"))));
}

// ---- Crash consistency ------------------------------------------------------

struct CrashParam {
  int world;
  int thread_count;
};

// The simulator's schedule comes from the test seed (testing/test_seed.h),
// so a failing crash point can be replayed. With thread_count > 1 the
// writer's own threads still interleave freely; the outcome checks hold for
// every interleaving.
class FsCrashTest : public ::testing::TestWithParam<CrashParam> {
 protected:
  const uint32_t seed_ = dcp::test::TestSeed();

  FileSystemWriterOptions WriterOptions() const {
    FileSystemWriterOptions options;
    options.thread_count = GetParam().thread_count;
    return options;
  }
  std::vector<absl::Status> Save(std::shared_ptr<FileSystem> fs,
                                 int value_seed) const {
    return SaveModel(GetParam().world, std::move(fs), kDir, value_seed,
                     WriterOptions(), seed_);
  }

  // The mutating operations of a clean save of v1 over `base`.
  int CountOps(MemFileSystem& base) const {
    auto fs = std::make_shared<FaultInjectingFileSystem>(CopyOf(base));
    EXPECT_THAT(Save(fs, 1), Each(IsOk()));
    EXPECT_THAT(LoadedVersion(fs, kDir), IsOkAndHolds(1));
    return fs->op_count();
  }

  // Crashes a save of v1 over `base` after n = 1, 2, ... operations; after
  // each restart the directory must hold v0 (or, if `base` has no
  // checkpoint, nothing) or v1, whole.
  void CrashAtEveryPoint(MemFileSystem& base, bool base_has_v0) const {
    SCOPED_TRACE(absl::StrCat("DCP_TEST_SEED=", seed_));
    const int total = CountOps(base);
    LOG(INFO) << "a clean save has " << total << " mutating operations";
    ASSERT_GT(total, 10);
    std::map<std::string, int> outcomes;
    for (int n = 1; n <= total; ++n) {
      SCOPED_TRACE(absl::StrCat("crash after ", n, " of ", total, " ops"));
      auto fs = std::make_shared<FaultInjectingFileSystem>(CopyOf(base));
      fs->CrashAfterOps(n);
      std::vector<absl::Status> statuses = Save(fs, 1);
      const bool committed =
          std::all_of(statuses.begin(), statuses.end(),
                      [](const absl::Status& s) { return s.ok(); });
      DCP_ASSERT_OK(fs->Restart());
      absl::StatusOr<int> version = LoadedVersion(fs, kDir);
      if (committed) {
        // A save that returned OK is durable.
        ASSERT_THAT(version, IsOkAndHolds(1));
      } else if (base_has_v0) {
        DCP_ASSERT_OK(version.status());
      } else if (!version.ok()) {
        ASSERT_THAT(version.status(), StatusIs(absl::StatusCode::kNotFound));
      }
      if (!version.ok()) {
        ++outcomes["nothing"];
      } else {
        ++outcomes[absl::StrCat("v", *version)];
        ASSERT_TRUE(*version == 1 || base_has_v0);
      }
    }
    for (const auto& [outcome, count] : outcomes) {
      LOG(INFO) << "crash outcome " << outcome << ": " << count;
    }
    // Every crash point left the old state or the new one (asserted above,
    // per point), and both occurred: early crashes keep the old state, late
    // ones (after the commit) the new.
    const std::string old_state = base_has_v0 ? "v0" : "nothing";
    EXPECT_GT(outcomes[old_state], 0);
    EXPECT_GT(outcomes["v1"], 0);
    EXPECT_EQ(outcomes[old_state] + outcomes["v1"], total);
  }
};

TEST_P(FsCrashTest, OverwriteCrashAtEveryPointLeavesOldOrNew) {
  auto base = std::make_shared<MemFileSystem>();
  ASSERT_THAT(Save(base, 0), Each(IsOk()));
  CrashAtEveryPoint(*base, /*base_has_v0=*/true);
}

TEST_P(FsCrashTest, FirstSaveCrashAtEveryPointLeavesNothingOrNew) {
  MemFileSystem base;
  CrashAtEveryPoint(base, /*base_has_v0=*/false);
}

INSTANTIATE_TEST_SUITE_P(
    Configs, FsCrashTest,
    ::testing::Values(CrashParam{3, 1}, CrashParam{2, 2}),
    [](const auto& info) {
      return absl::StrCat("ranks", info.param.world, "_threads",
                          info.param.thread_count);
    });

}  // namespace
}  // namespace dcp
