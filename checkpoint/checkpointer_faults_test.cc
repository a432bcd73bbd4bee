// The Checkpointer under faults, on the seeded simulator: deterministic
// async saves, failures before a round's first collective, ranks out of
// step, recovery after a failed collective, one checkpoint per load, the
// commit outcome of failed saves, bounded async memory, and lifetimes.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "ATen/ATen.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "c10/core/CPUAllocator.h"
#include "checkpoint/checkpointer.h"
#include "checkpoint/dist_wrapper.h"
#include "checkpoint/save_load.h"
#include "core/executor.h"
#include "core/future.h"
#include "core/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/fs_storage.h"
#include "storage/memory_storage.h"
#include "testing/checkpoint_scenarios.h"
#include "testing/forwarding_storage.h"
#include "testing/mem_file_system.h"
#include "testing/simulator.h"
#include "testing/status_matchers.h"

namespace dcp {
namespace {

using ::dcp::test::CheckModelStateDict;
using ::dcp::test::ForwardingStorageReader;
using ::dcp::test::ForwardingStorageWriter;
using ::dcp::test::IsOk;
using ::dcp::test::MakeModelStateDict;
using ::dcp::test::MemFileSystem;
using ::dcp::test::ModelLayout;
using ::dcp::test::ModelValues;
using ::dcp::test::RankContext;
using ::dcp::test::Simulator;
using ::dcp::test::SimulatorOptions;
using ::dcp::test::StatusIs;
using ::testing::AllOf;
using ::testing::Contains;
using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr absl::Duration kTimeout = absl::Seconds(60);

std::unique_ptr<Simulator> MakeSimulator(int world_size, uint64_t seed) {
  SimulatorOptions options;
  options.world_size = world_size;
  options.collective_timeout = kTimeout;
  options.seed = seed;
  absl::StatusOr<std::unique_ptr<Simulator>> sim = Simulator::Create(options);
  CHECK(sim.ok()) << sim.status();
  return *std::move(sim);
}

absl::StatusOr<std::unique_ptr<Checkpointer>> MakeCheckpointer(
    RankContext& ctx, std::shared_ptr<StorageWriter> writer,
    std::shared_ptr<StorageReader> reader, int max_pending_saves = 1) {
  CheckpointerOptions options;
  options.process_group = ctx.shared_pg();
  options.collective_timeout = kTimeout;
  options.max_pending_saves = max_pending_saves;
  return Checkpointer::Create(std::move(writer), std::move(reader), options);
}

absl::StatusOr<std::unique_ptr<Checkpointer>> MakeMemoryCheckpointer(
    RankContext& ctx, const std::shared_ptr<MemoryStore>& store,
    const std::string& id, int max_pending_saves = 1) {
  return MakeCheckpointer(ctx, std::make_shared<MemoryStorageWriter>(store, id),
                          std::make_shared<MemoryStorageReader>(store, id),
                          max_pending_saves);
}

// Copies every tensor and value of `src` into `dst` in place (same keys
// and shapes): the next training step changing the caller's state.
void Overwrite(Value& dst, const Value& src);

void Overwrite(StateDict& dst, const StateDict& src) {
  for (auto& [key, value] : dst.mutable_entries()) {
    const Value* from = src.Find(key);
    CHECK(from != nullptr) << key;
    Overwrite(value, *from);
  }
}

void Overwrite(Value& dst, const Value& src) {
  if (auto* t = dst.get_if<at::Tensor>()) {
    t->copy_(src.get<at::Tensor>());
  } else if (auto* s = dst.get_if<ShardedTensor>()) {
    for (size_t i = 0; i < s->local_shards.size(); ++i) {
      s->local_shards[i].tensor.copy_(
          src.get<ShardedTensor>().local_shards[i].tensor);
    }
  } else if (auto* d = dst.get_if<StateDict>()) {
    Overwrite(*d, src.get<StateDict>());
  } else if (auto* l = dst.get_if<List>()) {
    const List& from = src.get<List>();
    for (size_t i = 0; i < l->size(); ++i) Overwrite((*l)[i], from[i]);
  } else {
    dst = src;
  }
}

// ---- deterministic async save ----------------------------------------------

struct AsyncRun {
  std::vector<absl::Status> statuses;
  std::vector<std::string> trace;
};

// Every rank: AsyncSave, clobber its tensors at once, wait, load back in
// another layout and compare every element with the values at the time of
// the AsyncSave call.
AsyncRun AsyncSaveMutateWaitLoad(uint64_t seed) {
  constexpr int kWorld = 3;
  auto store = std::make_shared<MemoryStore>();
  auto sim = MakeSimulator(kWorld, seed);
  AsyncRun run;
  run.statuses = sim->Run([&](RankContext& ctx) -> absl::Status {
    DCP_ASSIGN_OR_RETURN(StateDict sd,
                         MakeModelStateDict(ctx.rank(), kWorld,
                                            ModelLayout::kSave,
                                            ModelValues::kTrue));
    DCP_ASSIGN_OR_RETURN(auto checkpointer,
                         MakeMemoryCheckpointer(ctx, store, "det"));
    Future<Metadata> saved = checkpointer->AsyncSave(sd);
    DCP_ASSIGN_OR_RETURN(StateDict next_step,
                         MakeModelStateDict(ctx.rank(), kWorld,
                                            ModelLayout::kSave,
                                            ModelValues::kTrue,
                                            /*value_seed=*/9));
    Overwrite(sd, next_step);
    DCP_RETURN_IF_ERROR(checkpointer->WaitForPendingSaves());
    DCP_RETURN_IF_ERROR(saved.result().status());
    DCP_ASSIGN_OR_RETURN(StateDict loaded,
                         MakeModelStateDict(ctx.rank(), kWorld,
                                            ModelLayout::kLoad,
                                            ModelValues::kPlaceholder));
    DCP_RETURN_IF_ERROR(checkpointer->Load(loaded));
    return CheckModelStateDict(loaded, ctx.rank(), kWorld, ModelLayout::kLoad);
  });
  run.trace = sim->trace();
  return run;
}

TEST(DeterministicAsyncSaveTest, SameSeedSameTraceAndSeedsExploreInterleavings) {
  std::set<std::vector<std::string>> distinct;
  for (uint64_t seed = 1; seed <= 12; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed ", seed));
    const AsyncRun first = AsyncSaveMutateWaitLoad(seed);
    ASSERT_THAT(first.statuses, Each(IsOk()));
    // The background threads are part of the schedule.
    EXPECT_THAT(first.trace, Contains("r0.1 start"));
    EXPECT_THAT(first.trace,
                Contains(HasSubstr("on world/dcp.async_save#")));
    EXPECT_THAT(first.trace, Contains("r2 wait"));
    const AsyncRun second = AsyncSaveMutateWaitLoad(seed);
    ASSERT_THAT(second.statuses, Each(IsOk()));
    EXPECT_EQ(first.trace, second.trace);
    distinct.insert(first.trace);
  }
  std::printf("distinct schedules over 12 seeds: %zu\n", distinct.size());
  EXPECT_GE(distinct.size(), 2u);
}

// The caller keeps using the process group while saves run behind it; the
// seeds interleave the two differently.
TEST(DeterministicAsyncSaveTest, ForegroundAndBackgroundCollectivesInterleave) {
  constexpr int kWorld = 3;
  std::set<std::vector<std::string>> distinct;
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed ", seed));
    auto store = std::make_shared<MemoryStore>();
    auto sim = MakeSimulator(kWorld, seed);
    std::vector<absl::Status> statuses =
        sim->Run([&](RankContext& ctx) -> absl::Status {
          DCP_ASSIGN_OR_RETURN(StateDict sd,
                               MakeModelStateDict(ctx.rank(), kWorld,
                                                  ModelLayout::kSave,
                                                  ModelValues::kTrue));
          DCP_ASSIGN_OR_RETURN(
              auto checkpointer,
              MakeMemoryCheckpointer(ctx, store, "busy", /*max_pending=*/2));
          for (int round = 0; round < 2; ++round) {
            Future<Metadata> saved = checkpointer->AsyncSave(sd);
            for (int i = 0; i < 4; ++i) {
              DCP_ASSIGN_OR_RETURN(
                  std::vector<std::string> all,
                  ctx.pg().AllGather("user.step",
                                     absl::StrCat(ctx.rank(), ":", i),
                                     ctx.Deadline()));
              for (int r = 0; r < kWorld; ++r) {
                if (all[r] != absl::StrCat(r, ":", i)) {
                  return absl::InternalError("a caller's all-gather mixed");
                }
              }
            }
          }
          return checkpointer->WaitForPendingSaves();
        });
    ASSERT_THAT(statuses, Each(IsOk()));
    distinct.insert(sim->trace());
  }
  std::printf("distinct schedules over 6 seeds: %zu\n", distinct.size());
  EXPECT_GE(distinct.size(), 2u);
}

// ---- every round is one round on every rank --------------------------------

// A state dict whose one tensor is on the meta device on `meta_rank`:
// staging (a copy to the CPU) fails there.
StateDict ProbeStateDict(int rank, int meta_rank, float value) {
  StateDict sd;
  sd.Set("w", rank == meta_rank
                  ? at::empty({4}, at::TensorOptions().device(at::kMeta))
                  : at::full({4}, value));
  sd.Set("step", int64_t{7});
  return sd;
}

TEST(RoundTest, StagingFailureOnOneRankFailsEveryRankAlikeAndTheNextRoundWorks) {
  constexpr int kWorld = 3;
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed ", seed));
    auto store = std::make_shared<MemoryStore>();
    auto sim = MakeSimulator(kWorld, seed);
    std::vector<absl::Status> first(kWorld);
    std::vector<absl::Status> statuses =
        sim->Run([&](RankContext& ctx) -> absl::Status {
          DCP_ASSIGN_OR_RETURN(auto checkpointer,
                               MakeMemoryCheckpointer(ctx, store, "s"));
          StateDict broken = ProbeStateDict(ctx.rank(), /*meta_rank=*/1, 1);
          first[ctx.rank()] = checkpointer->AsyncSave(broken).result().status();
          StateDict good = ProbeStateDict(ctx.rank(), /*meta_rank=*/-1, 2);
          DCP_RETURN_IF_ERROR(checkpointer->AsyncSave(good).result().status());
          StateDict loaded = ProbeStateDict(ctx.rank(), /*meta_rank=*/-1, 0);
          DCP_RETURN_IF_ERROR(checkpointer->Load(loaded));
          if (!loaded.Find("w")->get<at::Tensor>().equal(at::full({4}, 2.0f))) {
            return absl::InternalError("loaded the wrong values");
          }
          return absl::OkStatus();
        });
    EXPECT_THAT(statuses, Each(IsOk()));
    for (int r = 0; r < kWorld; ++r) {
      EXPECT_EQ(first[r], first[0]) << "rank " << r;
      EXPECT_THAT(FailedRanks(first[r]), ElementsAre(1));
    }
    EXPECT_FALSE(first[0].ok());
    EXPECT_THAT(first[0].message(), AllOf(HasSubstr("async save #1"),
                                          HasSubstr("rank 1"),
                                          HasSubstr("staging")));
  }
}

// The free function: the failing rank still takes part in the background
// round and reports its staging error there.
TEST(RoundTest, FreeAsyncSaveReportsStagingFailureThroughTheRound) {
  constexpr int kWorld = 3;
  auto store = std::make_shared<MemoryStore>();
  auto sim = MakeSimulator(kWorld, /*seed=*/5);
  std::vector<absl::Status> first(kWorld);
  std::vector<absl::Status> statuses =
      sim->Run([&](RankContext& ctx) -> absl::Status {
        DCP_ASSIGN_OR_RETURN(std::unique_ptr<SerialExecutor> executor,
                             SerialExecutor::Create());
        auto writer = std::make_shared<MemoryStorageWriter>(store, "f");
        AsyncSaveOptions options;
        options.process_group = ctx.shared_pg();
        options.collective_timeout = kTimeout;
        options.executor = executor->AsExecutor();
        first[ctx.rank()] =
            AsyncSave(ProbeStateDict(ctx.rank(), 2, 1), writer, options)
                .result()
                .status();
        options.executor = executor->AsExecutor();
        return AsyncSave(ProbeStateDict(ctx.rank(), -1, 1), writer, options)
            .result()
            .status();
      });
  EXPECT_THAT(statuses, Each(IsOk()));
  for (int r = 0; r < kWorld; ++r) {
    EXPECT_EQ(first[r], first[0]) << "rank " << r;
    EXPECT_THAT(FailedRanks(first[r]), ElementsAre(2));
    EXPECT_THAT(first[r].message(), HasSubstr("staging for async save"));
  }
}

// A writer whose Reset fails on one rank.
class ResetFailsWriter : public ForwardingStorageWriter {
 public:
  ResetFailsWriter(std::shared_ptr<StorageWriter> target, bool fail)
      : ForwardingStorageWriter(std::move(target)), fail_(fail) {}
  absl::Status Reset(std::optional<std::string> id) override {
    if (fail_) return absl::PermissionDeniedError("cannot open the new location");
    return ForwardingStorageWriter::Reset(std::move(id));
  }

 private:
  bool fail_;
};

TEST(RoundTest, ResetFailureOnOneRankFailsTheSaveOnEveryRank) {
  constexpr int kWorld = 3;
  auto store = std::make_shared<MemoryStore>();
  auto sim = MakeSimulator(kWorld, /*seed=*/3);
  std::vector<absl::Status> failed(kWorld);
  std::vector<absl::Status> statuses =
      sim->Run([&](RankContext& ctx) -> absl::Status {
        ResetFailsWriter failing(
            std::make_shared<MemoryStorageWriter>(store, "r0"),
            ctx.rank() == 1);
        SaveOptions options;
        options.process_group = &ctx.pg();
        options.checkpoint_id = "r1";
        StateDict sd = ProbeStateDict(ctx.rank(), -1, 1);
        failed[ctx.rank()] = Save(sd, failing, options).status();
        // The next round starts clean on every rank.
        options.checkpoint_id.reset();
        MemoryStorageWriter writer(store, "r0");
        return Save(sd, writer, options).status();
      });
  EXPECT_THAT(statuses, Each(IsOk()));
  for (int r = 0; r < kWorld; ++r) {
    EXPECT_EQ(failed[r], failed[0]) << "rank " << r;
    EXPECT_THAT(failed[r], StatusIs(absl::StatusCode::kPermissionDenied,
                                    HasSubstr("rank 1")));
  }
  EXPECT_FALSE(store->Contains("r1"));
  EXPECT_TRUE(store->Contains("r0"));
}

// A rank whose checkpointer is out of step (here: a fresh one) is told so
// on every rank, naming each rank's round; nothing is saved.
TEST(RoundTest, RanksInDifferentRoundsFailNamingEachRound) {
  constexpr int kWorld = 3;
  auto store = std::make_shared<MemoryStore>();
  auto sim = MakeSimulator(kWorld, /*seed=*/8);
  std::vector<absl::Status> mismatched(kWorld);
  std::vector<absl::Status> statuses =
      sim->Run([&](RankContext& ctx) -> absl::Status {
        DCP_ASSIGN_OR_RETURN(auto checkpointer,
                             MakeMemoryCheckpointer(ctx, store, "m"));
        StateDict sd = ProbeStateDict(ctx.rank(), -1, 1);
        DCP_RETURN_IF_ERROR(checkpointer->Save(sd).status());
        if (ctx.rank() == 1) {
          DCP_ASSIGN_OR_RETURN(checkpointer,
                               MakeMemoryCheckpointer(ctx, store, "m"));
        }
        StateDict changed = ProbeStateDict(ctx.rank(), -1, 5);
        mismatched[ctx.rank()] = checkpointer->Save(changed).status();
        return absl::OkStatus();
      });
  EXPECT_THAT(statuses, Each(IsOk()));
  for (int r = 0; r < kWorld; ++r) {
    EXPECT_EQ(mismatched[r], mismatched[0]) << "rank " << r;
    EXPECT_THAT(mismatched[r],
                StatusIs(absl::StatusCode::kFailedPrecondition,
                         HasSubstr("ranks 0, 2 are in \"save #2\"; rank 1 is "
                                   "in \"save #1\"")));
  }
  // The first save is what the store holds.
  auto loader = MakeSimulator(1, /*seed=*/1);
  EXPECT_THAT(loader->Run([&](RankContext& ctx) -> absl::Status {
    StateDict loaded = ProbeStateDict(0, -1, 0);
    DCP_ASSIGN_OR_RETURN(auto checkpointer,
                         MakeMemoryCheckpointer(ctx, store, "m"));
    DCP_RETURN_IF_ERROR(checkpointer->Load(loaded));
    return loaded.Find("w")->get<at::Tensor>().equal(at::full({4}, 1.0f))
               ? absl::OkStatus()
               : absl::InternalError("the failed round changed the checkpoint");
  }), Each(IsOk()));
}

// ---- recovery after a failed collective ------------------------------------

// Collectives per rank in the first async round: #1 AllGather (begin, on
// the world), #2 Fork, then the background save on the fork: #3 Gather,
// #4 Scatter, #5 Gather, #6 Broadcast. The second round: #7 AllGather,
// #8 Fork, ...
TEST(RecoveryTest, AFailedCollectiveBreaksTheAsyncCommunicatorAndTheNextSaveForksANewOne) {
  constexpr int kWorld = 3;
  auto store = std::make_shared<MemoryStore>();
  auto sim = MakeSimulator(kWorld, /*seed=*/11);
  sim->faults().FailAtCollective(1, 3, absl::UnavailableError("link down"));
  std::vector<absl::Status> first(kWorld);
  std::vector<absl::Status> statuses =
      sim->Run([&](RankContext& ctx) -> absl::Status {
        DCP_ASSIGN_OR_RETURN(auto checkpointer,
                             MakeMemoryCheckpointer(ctx, store, "rec"));
        first[ctx.rank()] =
            checkpointer->AsyncSave(ProbeStateDict(ctx.rank(), -1, 1))
                .result()
                .status();
        DCP_RETURN_IF_ERROR(
            checkpointer->AsyncSave(ProbeStateDict(ctx.rank(), -1, 3))
                .result()
                .status());
        StateDict loaded = ProbeStateDict(ctx.rank(), -1, 0);
        DCP_RETURN_IF_ERROR(checkpointer->Load(loaded));
        return loaded.Find("w")->get<at::Tensor>().equal(at::full({4}, 3.0f))
                   ? absl::OkStatus()
                   : absl::InternalError("loaded the wrong values");
      });
  EXPECT_THAT(statuses, Each(IsOk()));
  EXPECT_THAT(first[1], StatusIs(absl::StatusCode::kUnavailable,
                                 HasSubstr("link down")));
  EXPECT_THAT(first[0], StatusIs(absl::StatusCode::kAborted,
                                 HasSubstr("rank 1 failed")));
  for (const absl::Status& status : first) {
    EXPECT_TRUE(IsCollectiveFailure(status)) << status;
  }
  EXPECT_THAT(sim->transcript(),
              ElementsAre("AllGather:dcp.async_save.begin",
                          "Fork:dcp.async_save",
                          "AllGather:dcp.async_save.begin",
                          "Fork:dcp.async_save", "Gather:dcp.load.metadata",
                          "Broadcast:dcp.load.metadata",
                          "Gather:dcp.load.plan", "Scatter:dcp.load.plan",
                          "AllGather:dcp.load.read"));
}

TEST(RecoveryTest, WhenTheNewCommunicatorCannotBeCreatedAsyncSaveSaysSo) {
  constexpr int kWorld = 2;
  auto store = std::make_shared<MemoryStore>();
  auto sim = MakeSimulator(kWorld, /*seed=*/2);
  sim->faults().FailAtCollective(1, 3, absl::UnavailableError("link down"));
  // Rank 0's calls: #1 AllGather, #2 Fork, #3 Gather (fails with rank 1's),
  // then the second round: #4 AllGather, #5 Fork.
  sim->faults().FailAtCollective(0, 5, absl::UnavailableError("peer gone"));
  std::vector<absl::Status> second(kWorld);
  std::vector<absl::Status> statuses =
      sim->Run([&](RankContext& ctx) -> absl::Status {
        DCP_ASSIGN_OR_RETURN(auto checkpointer,
                             MakeMemoryCheckpointer(ctx, store, "gone"));
        checkpointer->AsyncSave(ProbeStateDict(ctx.rank(), -1, 1))
            .result()
            .status()
            .IgnoreError();
        second[ctx.rank()] =
            checkpointer->AsyncSave(ProbeStateDict(ctx.rank(), -1, 3))
                .result()
                .status();
        return absl::OkStatus();
      });
  EXPECT_THAT(statuses, Each(IsOk()));
  for (const absl::Status& status : second) {
    EXPECT_FALSE(status.ok());
    EXPECT_THAT(status.message(),
                AllOf(HasSubstr("async save #2"),
                      HasSubstr("creating the async-save communicator "
                                "failed")));
  }
  EXPECT_FALSE(store->Contains("gone"));
}

// ---- one checkpoint per load -----------------------------------------------

// Runs a save of `value` into `dir` from this thread alone.
absl::Status SaveAlone(const std::shared_ptr<FileSystem>& fs,
                       const std::string& dir, float value) {
  FileSystemWriterOptions options;
  options.file_system = fs;
  options.remove_stale_files = false;  // The older data stays loadable.
  DCP_ASSIGN_OR_RETURN(auto writer, FileSystemWriter::Create(dir, options));
  SaveOptions save;
  save.no_dist = true;
  StateDict sd = ProbeStateDict(0, -1, value);
  return Save(sd, *writer, save).status();
}

// A reader that commits a new checkpoint (`value` 2) into its directory
// right after the first read of the metadata (ReadMetadata, or
// ReadEncodedMetadata, which Load calls) of any rank.
class SwapAfterFirstRead : public ForwardingStorageReader {
 public:
  SwapAfterFirstRead(std::shared_ptr<StorageReader> target,
                     std::shared_ptr<FileSystem> fs, std::string dir,
                     std::shared_ptr<std::atomic<int>> reads)
      : ForwardingStorageReader(std::move(target)),
        fs_(std::move(fs)),
        dir_(std::move(dir)),
        reads_(std::move(reads)) {}
  absl::StatusOr<Metadata> ReadMetadata() override {
    absl::StatusOr<Metadata> metadata = ForwardingStorageReader::ReadMetadata();
    if (reads_->fetch_add(1) == 0) {
      DCP_RETURN_IF_ERROR(SaveAlone(fs_, dir_, 2));
    }
    return metadata;
  }
  absl::StatusOr<EncodedMetadata> ReadEncodedMetadata() override {
    absl::StatusOr<EncodedMetadata> metadata =
        ForwardingStorageReader::ReadEncodedMetadata();
    if (reads_->fetch_add(1) == 0) {
      DCP_RETURN_IF_ERROR(SaveAlone(fs_, dir_, 2));
    }
    return metadata;
  }

 private:
  std::shared_ptr<FileSystem> fs_;
  std::string dir_;
  std::shared_ptr<std::atomic<int>> reads_;
};

TEST(OneCheckpointPerLoadTest, ASaveCommittingDuringTheLoadCannotMixCheckpoints) {
  constexpr int kWorld = 3;
  auto fs = std::make_shared<MemFileSystem>();
  const std::string dir = "/ckpt";
  ASSERT_THAT(SaveAlone(fs, dir, 1), IsOk());
  auto reads = std::make_shared<std::atomic<int>>(0);
  auto sim = MakeSimulator(kWorld, /*seed=*/4);
  std::vector<absl::Status> statuses =
      sim->Run([&](RankContext& ctx) -> absl::Status {
        FileSystemReaderOptions options;
        options.file_system = fs;
        DCP_ASSIGN_OR_RETURN(std::shared_ptr<StorageReader> reader,
                             FileSystemReader::Create(dir, options));
        auto swapping = std::make_shared<SwapAfterFirstRead>(
            std::move(reader), fs, dir, reads);
        DCP_ASSIGN_OR_RETURN(auto checkpointer,
                             MakeCheckpointer(ctx, nullptr, swapping));
        StateDict loaded = ProbeStateDict(ctx.rank(), -1, 0);
        DCP_RETURN_IF_ERROR(checkpointer->Load(loaded));
        const at::Tensor& w = loaded.Find("w")->get<at::Tensor>();
        return w.equal(at::full({4}, 1.0f))
                   ? absl::OkStatus()
                   : absl::InternalError(absl::StrCat(
                         "rank ", ctx.rank(), " loaded the newer checkpoint"));
      });
  EXPECT_THAT(statuses, Each(IsOk()));
  EXPECT_EQ(reads->load(), 1) << "only the coordinator reads .metadata";
}

// ---- committed means committed ----------------------------------------------

// A writer whose Finish commits and then fails, as a directory sync after
// the rename would.
class CommitThenFailWriter : public ForwardingStorageWriter {
 public:
  using ForwardingStorageWriter::ForwardingStorageWriter;
  absl::Status Finish(
      Metadata& metadata,
      const std::vector<std::vector<WriteResult>>& results) override {
    DCP_RETURN_IF_ERROR(ForwardingStorageWriter::Finish(metadata, results));
    return WithCommitOutcome(
        absl::UnavailableError("the new checkpoint is committed, but syncing "
                               "the directory failed: EIO"),
        CommitOutcome::kCommitted);
  }
};

TEST(CommitTest, AnErrorAfterTheCommitSaysCommittedOnEveryRank) {
  constexpr int kWorld = 3;
  auto store = std::make_shared<MemoryStore>();
  auto sim = MakeSimulator(kWorld, /*seed=*/6);
  std::vector<absl::Status> statuses =
      sim->Run([&](RankContext& ctx) -> absl::Status {
        CommitThenFailWriter writer(
            std::make_shared<MemoryStorageWriter>(store, "c"));
        SaveOptions options;
        options.process_group = &ctx.pg();
        StateDict sd = ProbeStateDict(ctx.rank(), -1, 4);
        return Save(sd, writer, options).status();
      });
  for (const absl::Status& status : statuses) {
    EXPECT_EQ(status, statuses[0]);
    EXPECT_THAT(status, StatusIs(absl::StatusCode::kUnavailable,
                                 HasSubstr("is committed")));
    EXPECT_EQ(GetCommitOutcome(status), CommitOutcome::kCommitted);
  }
  EXPECT_TRUE(store->Contains("c"));
}

// Collectives of a save, per rank: #1 Gather plan, #2 Scatter plan,
// #3 Gather write, #4 Broadcast of the commit's outcome.
TEST(CommitTest, LosingTheOutcomeAfterTheCommitIsCommittedOrUnknownNeverNotCommitted) {
  constexpr int kWorld = 3;
  auto store = std::make_shared<MemoryStore>();
  auto sim = MakeSimulator(kWorld, /*seed=*/7);
  sim->faults().FailAtCollective(1, 4, absl::DeadlineExceededError("timed out"));
  std::vector<absl::Status> statuses =
      sim->Run([&](RankContext& ctx) -> absl::Status {
        auto writer = std::make_shared<MemoryStorageWriter>(store, "u");
        SaveOptions options;
        options.process_group = &ctx.pg();
        StateDict sd = ProbeStateDict(ctx.rank(), -1, 4);
        return Save(sd, *writer, options).status();
      });
  EXPECT_EQ(GetCommitOutcome(statuses[0]), CommitOutcome::kCommitted);
  EXPECT_THAT(statuses[0].message(), HasSubstr("is committed"));
  for (int r : {1, 2}) {
    EXPECT_EQ(GetCommitOutcome(statuses[r]), CommitOutcome::kUnknown)
        << statuses[r];
    EXPECT_THAT(statuses[r].message(),
                HasSubstr("the outcome of the commit is unknown"));
  }
  EXPECT_TRUE(store->Contains("u"));
}

TEST(CommitTest, AFailureBeforeTheCommitIsNotCommitted) {
  constexpr int kWorld = 2;
  auto store = std::make_shared<MemoryStore>();
  auto sim = MakeSimulator(kWorld, /*seed=*/7);
  sim->faults().FailAtPoint(1, "save.write", absl::DataLossError("torn"));
  std::vector<absl::Status> statuses =
      sim->Run([&](RankContext& ctx) -> absl::Status {
        auto writer = std::make_shared<MemoryStorageWriter>(store, "n");
        SaveOptions options;
        options.process_group = &ctx.pg();
        StateDict sd = ProbeStateDict(ctx.rank(), -1, 4);
        return Save(sd, *writer, options).status();
      });
  for (const absl::Status& status : statuses) {
    EXPECT_THAT(status, StatusIs(absl::StatusCode::kDataLoss));
    EXPECT_EQ(GetCommitOutcome(status), CommitOutcome::kNotCommitted);
  }
  EXPECT_FALSE(store->Contains("n"));
}

// A writer whose WriteData waits (visibly to the scheduler) for `gate`.
class GatedWriter : public ForwardingStorageWriter {
 public:
  GatedWriter(std::shared_ptr<StorageWriter> target, Future<void> gate)
      : ForwardingStorageWriter(std::move(target)), gate_(std::move(gate)) {}
  absl::StatusOr<std::vector<WriteResult>> WriteData(
      const SavePlan& plan, SavePlanner& planner) override {
    gate_.Wait();
    return ForwardingStorageWriter::WriteData(plan, planner);
  }

 private:
  Future<void> gate_;
};

// The protocol releases the coordinator's directory lock when a save fails
// after planning, so another writer can save while this Checkpointer lives.
TEST(CommitTest, AFailedSaveReleasesTheDirectoryLock) {
  constexpr int kWorld = 2;
  auto fs = std::make_shared<MemFileSystem>();
  auto sim = MakeSimulator(kWorld, /*seed=*/12);
  sim->faults().FailAtPoint(1, "save.write", absl::DataLossError("torn"));
  std::vector<absl::Status> statuses =
      sim->Run([&](RankContext& ctx) -> absl::Status {
        FileSystemWriterOptions options;
        options.file_system = fs;
        DCP_ASSIGN_OR_RETURN(auto writer,
                             FileSystemWriter::Create("/locked", options));
        DCP_ASSIGN_OR_RETURN(auto checkpointer,
                             MakeCheckpointer(ctx, std::move(writer), nullptr));
        const absl::Status failed =
            checkpointer->Save(ProbeStateDict(ctx.rank(), -1, 1)).status();
        if (!absl::IsDataLoss(failed)) {
          return absl::InternalError(absl::StrCat("unexpected: ", failed.ToString()));
        }
        // Still alive; another writer saves into the directory (once).
        if (ctx.rank() == 0) DCP_RETURN_IF_ERROR(SaveAlone(fs, "/locked", 6));
        return absl::OkStatus();
      });
  EXPECT_THAT(statuses, Each(IsOk()));
}

// ---- bounded async memory ---------------------------------------------------

// Counts the bytes of live CPU tensors, for the process (every simulated
// rank). Installed as libtorch's CPU allocator for one scope.
class CountingAllocator : public c10::Allocator {
 public:
  CountingAllocator() : base_(c10::GetDefaultCPUAllocator()) {
    c10::SetCPUAllocator(this, /*priority=*/0);
  }
  ~CountingAllocator() override {
    c10::SetCPUAllocator(base_, /*priority=*/0);
  }

  c10::DataPtr allocate(size_t n) const override {
    c10::DataPtr inner = base_->allocate(n);
    void* data = inner.get();
    const int64_t live = live_.fetch_add(static_cast<int64_t>(n)) +
                         static_cast<int64_t>(n);
    int64_t peak = peak_.load();
    while (live > peak && !peak_.compare_exchange_weak(peak, live)) {
    }
    auto* context = new Context{std::move(inner), n, this};
    return c10::DataPtr(data, context, &Delete, inner.device());
  }

  // Resets the peak to the current live bytes.
  void ResetPeak() { peak_.store(live_.load()); }
  int64_t live() const { return live_.load(); }
  int64_t peak() const { return peak_.load(); }

 private:
  struct Context {
    c10::DataPtr inner;
    size_t bytes;
    const CountingAllocator* owner;
  };
  static void Delete(void* ptr) {
    auto* context = static_cast<Context*>(ptr);
    context->owner->live_.fetch_sub(static_cast<int64_t>(context->bytes));
    delete context;
  }

  c10::Allocator* const base_;
  mutable std::atomic<int64_t> live_{0};
  mutable std::atomic<int64_t> peak_{0};
};

constexpr int kMemWorld = 2;
constexpr int64_t kTensorBytes = int64_t{1} << 20;
constexpr int kTensors = 4;
// Bytes of every rank's state dict together.
constexpr int64_t kWorldStateBytes = kMemWorld * kTensors * kTensorBytes;

// Every rank issues `saves` AsyncSaves of a 4 MiB state dict into an
// in-memory file system (whose bytes are not tensors) without waiting in
// between, then waits. `gate`, if set, holds every background write until
// the last AsyncSave has returned. Returns the peak of live tensor bytes
// above what the ranks' own state dicts hold.
int64_t PeakStagedBytes(int max_pending_saves, int saves, bool gate) {
  auto fs = std::make_shared<MemFileSystem>();
  auto sim = MakeSimulator(kMemWorld, /*seed=*/9);
  std::vector<StateDict> state(kMemWorld);
  for (int r = 0; r < kMemWorld; ++r) {
    for (int t = 0; t < kTensors; ++t) {
      state[r].Set(absl::StrCat("t", t),
                   at::full({kTensorBytes / 4}, static_cast<float>(r + t)));
    }
  }
  std::vector<PromiseFuturePair<void>> gates;
  for (int r = 0; r < kMemWorld; ++r) {
    gates.push_back(PromiseFuturePair<void>::Make());
    if (!gate) gates[r].promise.Set(absl::OkStatus());
  }
  CountingAllocator counting;
  std::vector<absl::Status> statuses =
      sim->Run([&](RankContext& ctx) -> absl::Status {
        FileSystemWriterOptions options;
        options.file_system = fs;
        DCP_ASSIGN_OR_RETURN(auto inner, FileSystemWriter::Create(
                                             "/mem", options));
        auto writer = std::make_shared<GatedWriter>(std::move(inner),
                                                    gates[ctx.rank()].future);
        DCP_ASSIGN_OR_RETURN(
            auto checkpointer,
            MakeCheckpointer(ctx, writer, nullptr, max_pending_saves));
        for (int i = 0; i < saves; ++i) {
          // Each future's result is also WaitForPendingSaves's.
          Future<Metadata> ignored = checkpointer->AsyncSave(state[ctx.rank()]);
        }
        gates[ctx.rank()].promise.Set(absl::OkStatus());
        return checkpointer->WaitForPendingSaves();
      });
  EXPECT_THAT(statuses, Each(IsOk()));
  return counting.peak();
}

TEST(BoundedMemoryTest, ManyQuickAsyncSavesHoldAtMostMaxPendingStagedCopies) {
  // Peak live bytes counted from an empty start: the ranks' state dicts
  // were allocated before counting began.
  const int64_t one = PeakStagedBytes(/*max_pending_saves=*/1, 8, false);
  EXPECT_GE(one, kWorldStateBytes);  // A copy per rank was staged.
  EXPECT_LE(one, kWorldStateBytes + kWorldStateBytes / 8);
  const int64_t two = PeakStagedBytes(/*max_pending_saves=*/2, 8, false);
  EXPECT_LE(two, 2 * kWorldStateBytes + kWorldStateBytes / 8);
}

// What the bound prevents: with room for every save and the writes held
// back, every staged copy is alive at once.
TEST(BoundedMemoryTest, WithoutTheBoundStagedCopiesAccumulate) {
  const int64_t unbounded = PeakStagedBytes(/*max_pending_saves=*/8, 8, true);
  EXPECT_GE(unbounded, 8 * kWorldStateBytes);
}

// ---- lifetimes -------------------------------------------------------------

// A callback of the Checkpointer's own future drops its last reference, on
// the Checkpointer's background thread; a save queued behind still runs.
// The first save's write waits for a gate that opens only once the caller
// has let go, so the callback runs on the background thread in any mode.
void DropLastReferenceInACallback(std::optional<uint64_t> seed) {
  constexpr int kWorld = 2;
  auto store = std::make_shared<MemoryStore>();
  SimulatorOptions options;
  options.world_size = kWorld;
  options.collective_timeout = kTimeout;
  options.seed = seed;
  auto sim = *Simulator::Create(options);
  std::vector<absl::Status> statuses =
      sim->Run([&](RankContext& ctx) -> absl::Status {
        PromiseFuturePair<void> gate = PromiseFuturePair<void>::Make();
        auto writer = std::make_shared<GatedWriter>(
            std::make_shared<MemoryStorageWriter>(store, "life"), gate.future);
        DCP_ASSIGN_OR_RETURN(
            std::unique_ptr<Checkpointer> owned,
            MakeCheckpointer(ctx, writer, nullptr, /*max_pending=*/2));
        std::shared_ptr<Checkpointer> checkpointer(std::move(owned));
        auto destroyed_on = std::make_shared<std::atomic<bool>>(false);
        Future<Metadata> first =
            checkpointer->AsyncSave(ProbeStateDict(ctx.rank(), -1, 1));
        first.ExecuteWhenReady(
            [checkpointer, destroyed_on](const absl::StatusOr<Metadata>&) mutable {
              checkpointer.reset();  // The last reference, when it runs.
              destroyed_on->store(true);
            });
        Future<Metadata> second =
            checkpointer->AsyncSave(ProbeStateDict(ctx.rank(), -1, 2));
        checkpointer.reset();
        gate.promise.Set(absl::OkStatus());
        DCP_RETURN_IF_ERROR(first.result().status());
        DCP_RETURN_IF_ERROR(second.result().status());
        return destroyed_on->load() ? absl::OkStatus()
                                    : absl::InternalError("callback not run");
      });
  EXPECT_THAT(statuses, Each(IsOk()));
  EXPECT_TRUE(store->Contains("life"));
}

TEST(LifetimeTest, DroppingTheLastReferenceFromAFutureCallbackIsSafeSeeded) {
  for (uint64_t seed = 1; seed <= 4; ++seed) DropLastReferenceInACallback(seed);
}

TEST(LifetimeTest, DroppingTheLastReferenceFromAFutureCallbackIsSafeFree) {
  DropLastReferenceInACallback(std::nullopt);
}

}  // namespace
}  // namespace dcp
