// End-to-end save and load through the Checkpointer on the simulator:
// resharding across world sizes, randomized layouts and dtypes, failures on
// every rank in every phase, and async save.
#include <algorithm>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "ATen/ATen.h"
#include "absl/strings/str_cat.h"
#include "checkpoint/checkpointer.h"
#include "checkpoint/dist_wrapper.h"
#include "core/sharding.h"
#include "core/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/memory_storage.h"
#include "testing/checkpoint_scenarios.h"
#include "testing/simulator.h"
#include "testing/status_matchers.h"
#include "testing/tensor_matchers.h"

namespace dcp {
namespace {

using ::dcp::test::CheckModelStateDict;
using ::dcp::test::IsOk;
using ::dcp::test::MakeModelStateDict;
using ::dcp::test::MakeTestTensor;
using ::dcp::test::ModelLayout;
using ::dcp::test::ModelValues;
using ::dcp::test::RankContext;
using ::dcp::test::Simulator;
using ::dcp::test::SimulatorOptions;
using ::dcp::test::StatusIs;
using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::unique_ptr<Simulator> MakeSimulator(int world_size,
                                         std::optional<uint64_t> seed = {}) {
  SimulatorOptions options;
  options.world_size = world_size;
  options.collective_timeout = absl::Seconds(60);
  options.seed = seed;
  absl::StatusOr<std::unique_ptr<Simulator>> sim = Simulator::Create(options);
  CHECK(sim.ok()) << sim.status();
  return *std::move(sim);
}

absl::StatusOr<std::unique_ptr<Checkpointer>> MakeCheckpointer(
    RankContext& ctx, std::shared_ptr<MemoryStore> store,
    const std::string& id, int coordinator = 0, int max_pending_saves = 1) {
  CheckpointerOptions options;
  options.process_group = ctx.shared_pg();
  options.coordinator_rank = coordinator;
  options.max_pending_saves = max_pending_saves;
  options.collective_timeout = absl::Seconds(60);
  return Checkpointer::Create(std::make_shared<MemoryStorageWriter>(store, id),
                              std::make_shared<MemoryStorageReader>(store, id),
                              options);
}

std::vector<absl::Status> SaveModel(int world_size,
                                    std::shared_ptr<MemoryStore> store,
                                    const std::string& id,
                                    int coordinator = 0) {
  auto sim = MakeSimulator(world_size);
  return sim->Run([&](RankContext& ctx) -> absl::Status {
    DCP_ASSIGN_OR_RETURN(StateDict sd,
                         MakeModelStateDict(ctx.rank(), world_size,
                                            ModelLayout::kSave,
                                            ModelValues::kTrue));
    DCP_ASSIGN_OR_RETURN(auto checkpointer,
                         MakeCheckpointer(ctx, store, id, coordinator));
    return checkpointer->Save(sd).status();
  });
}

std::vector<absl::Status> LoadAndCheckModel(int world_size,
                                            std::shared_ptr<MemoryStore> store,
                                            const std::string& id,
                                            int coordinator = 0) {
  auto sim = MakeSimulator(world_size);
  return sim->Run([&](RankContext& ctx) -> absl::Status {
    DCP_ASSIGN_OR_RETURN(StateDict sd,
                         MakeModelStateDict(ctx.rank(), world_size,
                                            ModelLayout::kLoad,
                                            ModelValues::kPlaceholder));
    DCP_ASSIGN_OR_RETURN(auto checkpointer,
                         MakeCheckpointer(ctx, store, id, coordinator));
    DCP_RETURN_IF_ERROR(checkpointer->Load(sd));
    return CheckModelStateDict(sd, ctx.rank(), world_size, ModelLayout::kLoad);
  });
}

class ReshardTest : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(ReshardTest, SaveWithNRanksLoadsExactlyIntoMRanks) {
  const auto [save_world, load_world] = GetParam();
  auto store = std::make_shared<MemoryStore>();
  EXPECT_THAT(SaveModel(save_world, store, "ckpt"), Each(IsOk()));
  EXPECT_THAT(LoadAndCheckModel(load_world, store, "ckpt"), Each(IsOk()));
}

INSTANTIATE_TEST_SUITE_P(
    AllWorldSizes, ReshardTest,
    ::testing::Combine(::testing::Values(1, 2, 3, 4, 8),
                       ::testing::Values(1, 2, 3, 4, 8)),
    [](const auto& info) {
      return absl::StrCat("save", std::get<0>(info.param), "_load",
                          std::get<1>(info.param));
    });

TEST(CheckpointerMultiRankTest, ProtocolIsGatherScatterGatherBroadcast) {
  auto store = std::make_shared<MemoryStore>();
  auto sim = MakeSimulator(3);
  std::vector<absl::Status> statuses = sim->Run([&](RankContext& ctx) {
    absl::StatusOr<StateDict> sd = MakeModelStateDict(
        ctx.rank(), 3, ModelLayout::kSave, ModelValues::kTrue);
    if (!sd.ok()) return sd.status();
    auto checkpointer = MakeCheckpointer(ctx, store, "p");
    if (!checkpointer.ok()) return checkpointer.status();
    return (*checkpointer)->Save(*sd).status();
  });
  EXPECT_THAT(statuses, Each(IsOk()));
  EXPECT_THAT(sim->transcript(),
              ElementsAre("Gather:dcp.save.plan", "Scatter:dcp.save.plan",
                          "Gather:dcp.save.write", "Broadcast:dcp.save.write"));
}

TEST(CheckpointerMultiRankTest, AnyRankCanBeTheCoordinator) {
  auto store = std::make_shared<MemoryStore>();
  EXPECT_THAT(SaveModel(4, store, "c", /*coordinator=*/3), Each(IsOk()));
  EXPECT_THAT(LoadAndCheckModel(3, store, "c", /*coordinator=*/2), Each(IsOk()));
}

TEST(CheckpointerMultiRankTest, EveryRankReturnsTheSameMetadata) {
  auto store = std::make_shared<MemoryStore>();
  auto sim = MakeSimulator(4);
  std::vector<absl::StatusOr<Metadata>> results =
      sim->Run([&](RankContext& ctx) -> absl::StatusOr<Metadata> {
        DCP_ASSIGN_OR_RETURN(StateDict sd,
                             MakeModelStateDict(ctx.rank(), 4, ModelLayout::kSave,
                                                ModelValues::kTrue));
        DCP_ASSIGN_OR_RETURN(auto checkpointer, MakeCheckpointer(ctx, store, "m"));
        return checkpointer->Save(sd);
      });
  ASSERT_THAT(results, Each(IsOk()));
  for (const auto& result : results) EXPECT_EQ(*result, *results[0]);
  // Sharded keys record one chunk per non-empty rank box; the flattened
  // optimizer key is there with its nested path.
  const auto& sdm = results[0]->state_dict_metadata;
  ASSERT_TRUE(sdm.count("model.embed"));
  EXPECT_EQ(std::get<TensorStorageMetadata>(sdm.at("model.embed")).size,
            (Shape{10, 6}));
  EXPECT_TRUE(sdm.count("optim.param_groups.0.lr"));
  EXPECT_TRUE(std::holds_alternative<BytesStorageMetadata>(sdm.at("step")));
}

TEST(CheckpointerMultiRankTest, NoDistSavesAndLoadsInOneProcess) {
  auto store = std::make_shared<MemoryStore>();
  CheckpointerOptions options;
  options.no_dist = true;
  DCP_ASSERT_OK_AND_ASSIGN(
      auto checkpointer,
      Checkpointer::Create(std::make_shared<MemoryStorageWriter>(store, "solo"),
                           std::make_shared<MemoryStorageReader>(store, "solo"),
                           options));
  DCP_ASSERT_OK_AND_ASSIGN(
      StateDict sd,
      MakeModelStateDict(0, 1, ModelLayout::kSave, ModelValues::kTrue));
  DCP_ASSERT_OK(checkpointer->Save(sd).status());
  DCP_ASSERT_OK_AND_ASSIGN(
      StateDict dest,
      MakeModelStateDict(0, 1, ModelLayout::kLoad, ModelValues::kPlaceholder));
  DCP_ASSERT_OK(checkpointer->Load(dest));
  DCP_EXPECT_OK(CheckModelStateDict(dest, 0, 1, ModelLayout::kLoad));
}

TEST(CheckpointerMultiRankTest, BadCoordinatorIsRejected) {
  CheckpointerOptions options;
  options.coordinator_rank = 1;  // no group: a world of one
  auto store = std::make_shared<MemoryStore>();
  EXPECT_THAT(Checkpointer::Create(std::make_shared<MemoryStorageWriter>(store, "x"),
                                   nullptr, options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("coordinator rank 1")));
}

TEST(CheckpointerMultiRankTest, MissingCheckpointFailsEveryRankAlike) {
  auto store = std::make_shared<MemoryStore>();
  std::vector<absl::Status> statuses = LoadAndCheckModel(3, store, "nothing-here");
  ASSERT_EQ(statuses.size(), 3u);
  for (const absl::Status& status : statuses) {
    EXPECT_THAT(status, StatusIs(absl::StatusCode::kNotFound,
                                 HasSubstr("nothing-here")));
    EXPECT_EQ(status, statuses[0]);
  }
}

// ---- failures in every phase -------------------------------------------------

struct PhaseFault {
  const char* point;
  bool coordinator_only;
  bool during_save;
};

// Every (fault point, failing rank) pair; coordinator-only points fail on
// the coordinator, rank 1.
std::vector<std::tuple<PhaseFault, int>> PhaseFaults() {
  const PhaseFault faults[] = {
      {"save.plan", false, true},
      {"save.global_plan", true, true},
      {"save.write", false, true},
      {"memory_storage.write_data", false, true},
      {"save.finish", true, true},
      {"memory_storage.finish", true, true},
      {"load.plan", false, false},
      {"load.global_plan", true, false},
      {"load.read", false, false},
      {"memory_storage.read_data", false, false},
  };
  std::vector<std::tuple<PhaseFault, int>> out;
  for (const PhaseFault& fault : faults) {
    for (int rank = 0; rank < 3; ++rank) {
      if (!fault.coordinator_only || rank == 1) out.emplace_back(fault, rank);
    }
  }
  return out;
}

class PhaseFailureTest
    : public ::testing::TestWithParam<std::tuple<PhaseFault, int>> {};

TEST_P(PhaseFailureTest, EveryRankGetsTheSameErrorNamingTheFailedRank) {
  const auto [fault, failing_rank] = GetParam();
  constexpr int kWorld = 3;
  const int coordinator = 1;
  auto store = std::make_shared<MemoryStore>();
  if (!fault.during_save) {
    ASSERT_THAT(SaveModel(kWorld, store, "f", coordinator), Each(IsOk()));
  }
  auto sim = MakeSimulator(kWorld);
  sim->faults().FailAtPoint(failing_rank, fault.point,
                            absl::UnavailableError("injected disk failure"));
  std::vector<absl::Status> statuses = sim->Run([&](RankContext& ctx) -> absl::Status {
    DCP_ASSIGN_OR_RETURN(auto checkpointer,
                         MakeCheckpointer(ctx, store, "f", coordinator));
    if (fault.during_save) {
      DCP_ASSIGN_OR_RETURN(StateDict sd,
                           MakeModelStateDict(ctx.rank(), kWorld, ModelLayout::kSave,
                                              ModelValues::kTrue));
      return checkpointer->Save(sd).status();
    }
    DCP_ASSIGN_OR_RETURN(StateDict sd,
                         MakeModelStateDict(ctx.rank(), kWorld, ModelLayout::kLoad,
                                            ModelValues::kPlaceholder));
    return checkpointer->Load(sd);
  });
  ASSERT_EQ(statuses.size(), static_cast<size_t>(kWorld));
  for (int r = 0; r < kWorld; ++r) {
    SCOPED_TRACE(absl::StrCat("rank ", r));
    EXPECT_THAT(statuses[r],
                StatusIs(absl::StatusCode::kUnavailable,
                         HasSubstr(absl::StrCat("rank ", failing_rank,
                                                ": UNAVAILABLE: injected disk failure"))));
    EXPECT_EQ(statuses[r], statuses[0]);
    EXPECT_THAT(FailedRanks(statuses[r]), ElementsAre(failing_rank));
  }
  if (fault.during_save) {
    // Nothing was committed.
    EXPECT_FALSE(store->Contains("f"));
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllPhases, PhaseFailureTest, ::testing::ValuesIn(PhaseFaults()),
    [](const auto& info) {
      std::string name = std::get<0>(info.param).point;
      std::replace(name.begin(), name.end(), '.', '_');
      return absl::StrCat(name, "_rank", std::get<1>(info.param));
    });

TEST(CheckpointerMultiRankTest, ARankLostInACollectiveFailsEveryRankPromptly) {
  constexpr int kWorld = 4;
  auto store = std::make_shared<MemoryStore>();
  for (int nth = 1; nth <= 4; ++nth) {
    SCOPED_TRACE(absl::StrCat("collective #", nth));
    auto sim = MakeSimulator(kWorld);
    sim->faults().FailAtCollective(2, nth, absl::AbortedError("rank 2 crashed"));
    const absl::Time start = absl::Now();
    std::vector<absl::Status> statuses = sim->Run([&](RankContext& ctx) -> absl::Status {
      DCP_ASSIGN_OR_RETURN(StateDict sd,
                           MakeModelStateDict(ctx.rank(), kWorld, ModelLayout::kSave,
                                              ModelValues::kTrue));
      DCP_ASSIGN_OR_RETURN(auto checkpointer, MakeCheckpointer(ctx, store, "lost"));
      return checkpointer->Save(sd).status();
    });
    // Far below the 60 s collective deadline: nobody waited for rank 2.
    EXPECT_LT(absl::Now() - start, absl::Seconds(30));
    for (int r = 0; r < kWorld; ++r) {
      EXPECT_FALSE(statuses[r].ok()) << "rank " << r;
      EXPECT_THAT(std::string(statuses[r].message()), HasSubstr("rank 2")) << "rank " << r;
    }
    if (nth < 4) {
      EXPECT_FALSE(store->Contains("lost"));
    } else {
      // Lost at the final broadcast: the coordinator had already committed,
      // and what it committed is complete.
      EXPECT_THAT(LoadAndCheckModel(2, store, "lost"), Each(IsOk()));
    }
  }
}

TEST(CheckpointerMultiRankTest, FailedOverwriteKeepsThePreviousCheckpoint) {
  auto store = std::make_shared<MemoryStore>();
  ASSERT_THAT(SaveModel(2, store, "keep"), Each(IsOk()));
  auto sim = MakeSimulator(2);
  sim->faults().FailAtPoint(1, "save.write", absl::InternalError("boom"));
  std::vector<absl::Status> statuses = sim->Run([&](RankContext& ctx) -> absl::Status {
    DCP_ASSIGN_OR_RETURN(StateDict sd,
                         MakeModelStateDict(ctx.rank(), 2, ModelLayout::kSave,
                                            ModelValues::kTrue, /*value_seed=*/7));
    DCP_ASSIGN_OR_RETURN(auto checkpointer, MakeCheckpointer(ctx, store, "keep"));
    return checkpointer->Save(sd).status();
  });
  EXPECT_THAT(statuses, Each(StatusIs(absl::StatusCode::kInternal)));
  EXPECT_THAT(LoadAndCheckModel(3, store, "keep"), Each(IsOk()));
}

// ---- randomized layouts and dtypes ---------------------------------------------

struct RandomTensor {
  std::string key;
  Shape shape;
  c10::ScalarType dtype;
  int save_dim;  // -1: replicated, -2: grid
  int load_dim;
};

std::vector<RandomTensor> RandomModel(uint64_t seed) {
  std::mt19937_64 rng(seed);
  const c10::ScalarType dtypes[] = {c10::kFloat,  c10::kDouble, c10::kHalf,
                                    c10::kBFloat16, c10::kChar,  c10::kByte,
                                    c10::kBool,   c10::kLong,   c10::kInt,
                                    c10::kShort,  c10::kComplexFloat};
  std::vector<RandomTensor> tensors;
  const int count = 1 + static_cast<int>(rng() % 5);
  for (int i = 0; i < count; ++i) {
    RandomTensor t;
    t.key = absl::StrCat("layer", i, ".w");
    const int ndim = static_cast<int>(rng() % 4);  // 0-d to 3-d
    for (int d = 0; d < ndim; ++d) t.shape.push_back(static_cast<int64_t>(rng() % 7));
    t.dtype = dtypes[rng() % (sizeof(dtypes) / sizeof(dtypes[0]))];
    auto pick = [&]() {
      if (ndim == 0) return -1;
      const int choice = static_cast<int>(rng() % (ndim + 2)) - 2;
      if (choice == -2 && ndim < 2) return -1;
      return choice;
    };
    t.save_dim = pick();
    t.load_dim = pick();
    tensors.push_back(std::move(t));
  }
  return tensors;
}

absl::StatusOr<StateDict> RandomStateDict(const std::vector<RandomTensor>& model,
                                          int rank, int world, bool for_save,
                                          uint64_t seed) {
  StateDict sd;
  for (size_t i = 0; i < model.size(); ++i) {
    const RandomTensor& t = model[i];
    at::Tensor full = MakeTestTensor(t.shape, t.dtype, static_cast<int>(seed * 31 + i));
    if (!for_save) full = at::zeros_like(full);
    const int dim = for_save ? t.save_dim : t.load_dim;
    Value value;
    if (dim == -1) {
      value = Value(full);
    } else if (dim == -2) {
      int rows, cols;
      ::dcp::test::GridShape(world, &rows, &cols);
      DCP_ASSIGN_OR_RETURN(ShardedTensor s, ShardGrid2D(full, rank, rows, cols));
      value = Value(std::move(s));
    } else {
      DCP_ASSIGN_OR_RETURN(ShardedTensor s, ShardAlongDim(full, dim, rank, world));
      value = Value(std::move(s));
    }
    sd.Set(t.key, std::move(value));
  }
  sd.Set("seed", static_cast<int64_t>(for_save ? seed : 0));
  return sd;
}

TEST(CheckpointerPropertyTest, RandomLayoutsAndDtypesRoundTripExactly) {
  constexpr int kSeeds = 40;
  for (uint64_t seed = 1; seed <= kSeeds; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed ", seed));
    std::mt19937_64 rng(seed * 7919);
    const int save_world = 1 + static_cast<int>(rng() % 5);
    const int load_world = 1 + static_cast<int>(rng() % 5);
    const std::vector<RandomTensor> model = RandomModel(seed);
    auto store = std::make_shared<MemoryStore>();
    auto saver = MakeSimulator(save_world, /*seed=*/seed);
    ASSERT_THAT(saver->Run([&](RankContext& ctx) -> absl::Status {
      DCP_ASSIGN_OR_RETURN(StateDict sd, RandomStateDict(model, ctx.rank(), save_world,
                                                         /*for_save=*/true, seed));
      DCP_ASSIGN_OR_RETURN(auto checkpointer, MakeCheckpointer(ctx, store, "r"));
      return checkpointer->Save(sd).status();
    }), Each(IsOk()));
    auto loader = MakeSimulator(load_world, /*seed=*/seed + 1);
    ASSERT_THAT(loader->Run([&](RankContext& ctx) -> absl::Status {
      DCP_ASSIGN_OR_RETURN(StateDict sd, RandomStateDict(model, ctx.rank(), load_world,
                                                         /*for_save=*/false, seed));
      DCP_ASSIGN_OR_RETURN(auto checkpointer, MakeCheckpointer(ctx, store, "r"));
      DCP_RETURN_IF_ERROR(checkpointer->Load(sd));
      // Same layout as the destination, true values.
      DCP_ASSIGN_OR_RETURN(StateDict expected_load_layout,
                           [&]() -> absl::StatusOr<StateDict> {
                             std::vector<RandomTensor> relaid = model;
                             for (auto& t : relaid) t.save_dim = t.load_dim;
                             return RandomStateDict(relaid, ctx.rank(), load_world,
                                                    /*for_save=*/true, seed);
                           }());
      std::string mismatch =
          ::dcp::test::tensor_matchers_internal::DescribeStateDictMismatch(
              sd, expected_load_layout);
      if (!mismatch.empty()) {
        return absl::InternalError(absl::StrCat("rank ", ctx.rank(), ": ", mismatch));
      }
      return absl::OkStatus();
    }), Each(IsOk()));
  }
}

// ---- async save ----------------------------------------------------------------
//
// Seeded (deterministic) unless said otherwise: the background save cannot
// run before the caller yields, so a test of staging cannot pass by luck.

TEST(AsyncSaveTest, CallerMayMutateTensorsRightAfterReturn) {
  auto store = std::make_shared<MemoryStore>();
  auto sim = MakeSimulator(3, /*seed=*/21);
  std::vector<absl::Status> statuses = sim->Run([&](RankContext& ctx) -> absl::Status {
    DCP_ASSIGN_OR_RETURN(StateDict sd, MakeModelStateDict(ctx.rank(), 3, ModelLayout::kSave,
                                                          ModelValues::kTrue));
    DCP_ASSIGN_OR_RETURN(auto checkpointer, MakeCheckpointer(ctx, store, "a"));
    Future<Metadata> saved = checkpointer->AsyncSave(sd);
    // Clobber every tensor and value of the caller's state dict at once.
    DCP_ASSIGN_OR_RETURN(StateDict garbage,
                         MakeModelStateDict(ctx.rank(), 3, ModelLayout::kSave,
                                            ModelValues::kTrue, /*value_seed=*/9));
    std::function<void(Value&, const Value&)> overwrite = [&](Value& dst, const Value& src) {
      if (auto* t = dst.get_if<at::Tensor>()) {
        t->copy_(src.get<at::Tensor>());
      } else if (auto* s = dst.get_if<ShardedTensor>()) {
        for (size_t i = 0; i < s->local_shards.size(); ++i) {
          s->local_shards[i].tensor.copy_(src.get<ShardedTensor>().local_shards[i].tensor);
        }
      } else if (auto* d = dst.get_if<StateDict>()) {
        for (auto& [key, child] : d->mutable_entries()) {
          overwrite(child, *src.get<StateDict>().Find(key));
        }
      } else {
        dst = src;
      }
    };
    for (auto& [key, value] : sd.mutable_entries()) overwrite(value, *garbage.Find(key));
    DCP_RETURN_IF_ERROR(saved.result().status());
    return absl::OkStatus();
  });
  ASSERT_THAT(statuses, Each(IsOk()));
  // The checkpoint holds the values at the time of the AsyncSave call.
  EXPECT_THAT(LoadAndCheckModel(2, store, "a"), Each(IsOk()));
}

// Free mode: the one smoke test of async save on real concurrency.
TEST(AsyncSaveTest, BackgroundCollectivesNeverInterleaveWithTheCallersFreeMode) {
  constexpr int kWorld = 4;
  auto store = std::make_shared<MemoryStore>();
  auto sim = MakeSimulator(kWorld);
  std::vector<absl::Status> statuses = sim->Run([&](RankContext& ctx) -> absl::Status {
    DCP_ASSIGN_OR_RETURN(StateDict sd, MakeModelStateDict(ctx.rank(), kWorld,
                                                          ModelLayout::kSave,
                                                          ModelValues::kTrue));
    DCP_ASSIGN_OR_RETURN(auto checkpointer,
                         MakeCheckpointer(ctx, store, "busy", 0, /*max_pending_saves=*/3));
    std::vector<Future<Metadata>> saves;
    for (int round = 0; round < 3; ++round) {
      saves.push_back(checkpointer->AsyncSave(sd));
      // The caller keeps doing its own collectives on the same group while
      // the save runs in the background.
      for (int i = 0; i < 20; ++i) {
        DCP_ASSIGN_OR_RETURN(
            std::vector<std::string> all,
            ctx.pg().AllGather("user.step", absl::StrCat(ctx.rank(), ":", round, ":", i),
                               ctx.Deadline()));
        for (int r = 0; r < kWorld; ++r) {
          if (all[r] != absl::StrCat(r, ":", round, ":", i)) {
            return absl::InternalError(absl::StrCat("caller's all-gather got '", all[r],
                                                    "' from rank ", r));
          }
        }
      }
    }
    for (auto& save : saves) DCP_RETURN_IF_ERROR(save.result().status());
    return absl::OkStatus();
  });
  EXPECT_THAT(statuses, Each(IsOk()));
  EXPECT_THAT(LoadAndCheckModel(3, store, "busy"), Each(IsOk()));
}

TEST(AsyncSaveTest, SavesCompleteInOrderAndTheLastOneWins) {
  auto store = std::make_shared<MemoryStore>();
  auto sim = MakeSimulator(2, /*seed=*/22);
  std::mutex mu;
  std::vector<std::pair<int, int>> completions;  // (rank, round)
  std::vector<absl::Status> statuses = sim->Run([&](RankContext& ctx) -> absl::Status {
    DCP_ASSIGN_OR_RETURN(auto checkpointer,
                         MakeCheckpointer(ctx, store, "order", 0, /*max_pending_saves=*/4));
    std::vector<Future<Metadata>> saves;
    for (int round = 0; round < 4; ++round) {
      DCP_ASSIGN_OR_RETURN(StateDict sd,
                           MakeModelStateDict(ctx.rank(), 2, ModelLayout::kSave,
                                              ModelValues::kTrue, /*value_seed=*/round));
      Future<Metadata> save = checkpointer->AsyncSave(sd);
      save.ExecuteWhenReady([&, rank = ctx.rank(), round](const absl::StatusOr<Metadata>&) {
        std::lock_guard<std::mutex> lock(mu);
        completions.emplace_back(rank, round);
      });
      saves.push_back(std::move(save));
    }
    // Destroying the checkpointer waits for every pending save.
    checkpointer.reset();
    for (auto& save : saves) {
      if (!save.ready()) return absl::InternalError("a save was still pending");
      DCP_RETURN_IF_ERROR(save.result().status());
    }
    return absl::OkStatus();
  });
  ASSERT_THAT(statuses, Each(IsOk()));
  for (int rank = 0; rank < 2; ++rank) {
    std::vector<int> rounds;
    for (const auto& [r, round] : completions) {
      if (r == rank) rounds.push_back(round);
    }
    EXPECT_THAT(rounds, ElementsAre(0, 1, 2, 3)) << "rank " << rank;
  }
  auto loader = MakeSimulator(1);
  EXPECT_THAT(loader->Run([&](RankContext& ctx) -> absl::Status {
    DCP_ASSIGN_OR_RETURN(StateDict sd, MakeModelStateDict(0, 1, ModelLayout::kLoad,
                                                          ModelValues::kPlaceholder));
    DCP_ASSIGN_OR_RETURN(auto checkpointer, MakeCheckpointer(ctx, store, "order"));
    DCP_RETURN_IF_ERROR(checkpointer->Load(sd));
    return CheckModelStateDict(sd, 0, 1, ModelLayout::kLoad, /*value_seed=*/3);
  }), Each(IsOk()));
}

// Each AsyncSave after the first copies into the staging buffers of the one
// before (reuse_staging_buffers, the default): every checkpoint must still
// hold its own call's values, also when the caller changes them right away.
TEST(AsyncSaveTest, ReusedStagingBuffersHoldEachSavesOwnValues) {
  constexpr int kWorld = 2;
  auto store = std::make_shared<MemoryStore>();
  auto sim = MakeSimulator(kWorld, /*seed=*/24);
  std::vector<absl::Status> statuses = sim->Run([&](RankContext& ctx) -> absl::Status {
    DCP_ASSIGN_OR_RETURN(auto checkpointer, MakeCheckpointer(ctx, store, "reuse"));
    DCP_ASSIGN_OR_RETURN(StateDict sd, MakeModelStateDict(ctx.rank(), kWorld,
                                                          ModelLayout::kSave,
                                                          ModelValues::kTrue));
    for (int round = 0; round < 3; ++round) {
      DCP_ASSIGN_OR_RETURN(StateDict values,
                           MakeModelStateDict(ctx.rank(), kWorld, ModelLayout::kSave,
                                              ModelValues::kTrue, /*value_seed=*/round));
      sd = values;
      Future<Metadata> save = checkpointer->AsyncSave(sd);
      // Overwritten before the background save has run (seeded mode).
      DCP_ASSIGN_OR_RETURN(sd, MakeModelStateDict(ctx.rank(), kWorld, ModelLayout::kSave,
                                                  ModelValues::kTrue, /*value_seed=*/99));
      DCP_RETURN_IF_ERROR(save.result().status());
      DCP_ASSIGN_OR_RETURN(StateDict loaded, MakeModelStateDict(ctx.rank(), kWorld,
                                                                ModelLayout::kLoad,
                                                                ModelValues::kPlaceholder));
      DCP_RETURN_IF_ERROR(checkpointer->Load(loaded));
      DCP_RETURN_IF_ERROR(Annotate(
          CheckModelStateDict(loaded, ctx.rank(), kWorld, ModelLayout::kLoad, round),
          absl::StrCat("round ", round)));
    }
    return absl::OkStatus();
  });
  EXPECT_THAT(statuses, Each(IsOk()));
}

TEST(CheckpointerTest, PerCallCheckpointIdsSaveAndLoadEachCheckpoint) {
  // One checkpointer, three checkpoints: two async saves pending at once
  // into different ids, then a blocking save without an id (the last id).
  constexpr int kWorld = 2;
  auto store = std::make_shared<MemoryStore>();
  auto sim = MakeSimulator(kWorld, /*seed=*/31);
  std::vector<absl::Status> statuses =
      sim->Run([&](RankContext& ctx) -> absl::Status {
        DCP_ASSIGN_OR_RETURN(
            auto checkpointer,
            MakeCheckpointer(ctx, store, "default", /*coordinator=*/0,
                             /*max_pending_saves=*/2));
        auto values = [&](int seed) {
          return MakeModelStateDict(ctx.rank(), kWorld, ModelLayout::kSave,
                                    ModelValues::kTrue, /*value_seed=*/seed);
        };
        DCP_ASSIGN_OR_RETURN(StateDict one, values(1));
        DCP_ASSIGN_OR_RETURN(StateDict two, values(2));
        DCP_ASSIGN_OR_RETURN(StateDict three, values(3));
        Future<Metadata> first = checkpointer->AsyncSave(one, "step_1");
        Future<Metadata> second = checkpointer->AsyncSave(two, "step_2");
        DCP_RETURN_IF_ERROR(checkpointer->Save(three).status());  // into step_2
        DCP_RETURN_IF_ERROR(first.result().status());
        DCP_RETURN_IF_ERROR(second.result().status());
        for (const auto& [id, seed] :
             {std::pair<std::string, int>{"step_1", 1},
              std::pair<std::string, int>{"step_2", 3}}) {
          DCP_ASSIGN_OR_RETURN(
              StateDict loaded,
              MakeModelStateDict(ctx.rank(), kWorld, ModelLayout::kLoad,
                                 ModelValues::kPlaceholder));
          DCP_RETURN_IF_ERROR(checkpointer->Load(loaded, id));
          DCP_RETURN_IF_ERROR(
              Annotate(CheckModelStateDict(loaded, ctx.rank(), kWorld,
                                           ModelLayout::kLoad, seed),
                       id));
        }
        return absl::OkStatus();
      });
  EXPECT_THAT(statuses, Each(IsOk()));
  EXPECT_THAT(store->ListCheckpoints(), ElementsAre("step_1", "step_2"));
}

TEST(AsyncSaveTest, BackgroundFailureReachesEveryRanksFuture) {
  auto store = std::make_shared<MemoryStore>();
  auto sim = MakeSimulator(3, /*seed=*/23);
  sim->faults().FailAtPoint(1, "save.write", absl::DataLossError("torn write"));
  std::vector<absl::Status> statuses = sim->Run([&](RankContext& ctx) -> absl::Status {
    DCP_ASSIGN_OR_RETURN(StateDict sd, MakeModelStateDict(ctx.rank(), 3, ModelLayout::kSave,
                                                          ModelValues::kTrue));
    DCP_ASSIGN_OR_RETURN(auto checkpointer, MakeCheckpointer(ctx, store, "bad"));
    return checkpointer->AsyncSave(sd).result().status();
  });
  for (const absl::Status& status : statuses) {
    EXPECT_THAT(status, StatusIs(absl::StatusCode::kDataLoss, HasSubstr("rank 1: DATA_LOSS: torn write")));
  }
  EXPECT_FALSE(store->Contains("bad"));
}

}  // namespace
}  // namespace dcp
