#include "testing/simulator.h"

#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>  // NOLINT(build/c++11)
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/fault_point.h"
#include "core/status.h"
#include "distributed/process_group.h"
#include "glog/logging.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/status_matchers.h"

namespace dcp::test {
namespace {

using ::testing::AllOf;
using ::testing::Contains;
using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::Eq;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

std::unique_ptr<Simulator> MakeSimulator(int world_size,
                                         std::optional<uint64_t> seed = {}) {
  SimulatorOptions options;
  options.world_size = world_size;
  options.seed = seed;
  absl::StatusOr<std::unique_ptr<Simulator>> sim = Simulator::Create(options);
  CHECK(sim.ok()) << sim.status();
  return *std::move(sim);
}

// ---- A small save-like protocol used by several tests -----------------------
//
// 1. Every rank makes a local plan; the root (0) gathers them.
// 2. The root scatters a final plan to each rank.
// 3. Each rank "writes" (a rank-dependent side effect) and all-gathers its
//    write result.
// 4. The root broadcasts the metadata built from all write results.
// Each rank returns "<final plan>|<metadata>".
struct ProtocolLog {
  // Appended to between collectives without a lock: fine in deterministic
  // mode (one rank at a time); in free mode use one slot per rank instead.
  std::vector<std::string> events;
};

absl::StatusOr<std::string> SaveProtocol(RankContext& ctx, ProtocolLog* log) {
  ProcessGroup& pg = ctx.pg();
  const int rank = ctx.rank();
  if (log != nullptr) log->events.push_back(absl::StrCat("plan r", rank));
  DCP_ASSIGN_OR_RETURN(
      std::vector<std::string> plans,
      pg.Gather("plan", /*root=*/0, absl::StrCat("local", rank),
                ctx.Deadline()));
  std::vector<std::string> finals;
  if (rank == 0) {
    for (size_t r = 0; r < plans.size(); ++r) {
      finals.push_back(absl::StrCat("final(", plans[r], ")"));
    }
  }
  DCP_ASSIGN_OR_RETURN(
      std::string final_plan,
      pg.Scatter("plan", /*root=*/0, std::move(finals), ctx.Deadline()));
  DCP_RETURN_IF_ERROR(FaultPoint("save.write"));
  if (log != nullptr) log->events.push_back(absl::StrCat("write r", rank));
  DCP_ASSIGN_OR_RETURN(
      std::vector<std::string> written,
      pg.AllGather("write", absl::StrCat("w", rank, ":", final_plan),
                   ctx.Deadline()));
  std::string metadata = rank == 0 ? absl::StrJoin(written, ",") : "";
  DCP_ASSIGN_OR_RETURN(
      std::string agreed,
      pg.Broadcast("metadata", /*root=*/0, std::move(metadata),
                   ctx.Deadline()));
  if (log != nullptr) log->events.push_back(absl::StrCat("done r", rank));
  return absl::StrCat(final_plan, "|", agreed);
}

std::vector<std::string> ExpectedProtocolResults(int n) {
  std::vector<std::string> written;
  for (int r = 0; r < n; ++r) {
    written.push_back(absl::StrCat("w", r, ":final(local", r, ")"));
  }
  const std::string metadata = absl::StrJoin(written, ",");
  std::vector<std::string> results;
  for (int r = 0; r < n; ++r) {
    results.push_back(absl::StrCat("final(local", r, ")|", metadata));
  }
  return results;
}

std::vector<std::string> Values(
    const std::vector<absl::StatusOr<std::string>>& results) {
  std::vector<std::string> values;
  for (const auto& result : results) {
    values.push_back(result.ok() ? *result : result.status().ToString());
  }
  return values;
}

// ---- Creation and basic running --------------------------------------------

TEST(SimulatorTest, CreateValidatesOptions) {
  SimulatorOptions options;
  options.world_size = 0;
  EXPECT_THAT(Simulator::Create(options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("world_size 0")));
  options.world_size = 2;
  options.collective_timeout = absl::ZeroDuration();
  EXPECT_THAT(Simulator::Create(options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("collective_timeout")));
}

TEST(SimulatorTest, RunReturnsEveryRanksStatusInRankOrder) {
  auto sim = MakeSimulator(4);
  std::vector<absl::Status> statuses =
      sim->Run([](RankContext& ctx) -> absl::Status {
        if (ctx.world_size() != 4) return absl::InternalError("bad size");
        if (ctx.pg().rank() != ctx.rank() ||
            ctx.shared_pg()->rank() != ctx.rank()) {
          return absl::InternalError("bad handle");
        }
        if (ctx.Deadline() <= absl::Now()) {
          return absl::InternalError("deadline not in the future");
        }
        if (ctx.rank() % 2 == 1) {
          return absl::NotFoundError(absl::StrCat("odd ", ctx.rank()));
        }
        return absl::OkStatus();
      });
  EXPECT_THAT(statuses,
              ElementsAre(IsOk(), StatusIs(absl::StatusCode::kNotFound, Eq("odd 1")),
                          IsOk(), StatusIs(absl::StatusCode::kNotFound, Eq("odd 3"))));
  EXPECT_THAT(sim->trace(), IsEmpty());  // Free mode.
}

TEST(SimulatorTest, TypedRunReturnsEveryRanksResult) {
  auto sim = MakeSimulator(3);
  std::vector<absl::StatusOr<int>> results =
      sim->Run([](RankContext& ctx) -> absl::StatusOr<int> {
        if (ctx.rank() == 1) return absl::DataLossError("rank 1 lost it");
        return ctx.rank() * 10;
      });
  EXPECT_THAT(results,
              ElementsAre(IsOkAndHolds(0),
                          StatusIs(absl::StatusCode::kDataLoss),
                          IsOkAndHolds(20)));
}

TEST(SimulatorTest, ProtocolWorksOnOneRankAndIsRecordedInTheTranscript) {
  auto sim = MakeSimulator(1);
  std::vector<absl::StatusOr<std::string>> results =
      sim->Run([](RankContext& ctx) { return SaveProtocol(ctx, nullptr); });
  EXPECT_THAT(Values(results), Eq(ExpectedProtocolResults(1)));
  EXPECT_THAT(sim->transcript(),
              ElementsAre("Gather:plan", "Scatter:plan", "AllGather:write",
                          "Broadcast:metadata"));
}

TEST(SimulatorTest, SixtyFourRanksFreeMode) {
  auto sim = MakeSimulator(64);
  std::vector<absl::StatusOr<std::string>> results =
      sim->Run([](RankContext& ctx) { return SaveProtocol(ctx, nullptr); });
  EXPECT_THAT(Values(results), Eq(ExpectedProtocolResults(64)));
}

TEST(SimulatorTest, SixtyFourRanksDeterministicMode) {
  auto sim = MakeSimulator(64, /*seed=*/64);
  ProtocolLog log;
  std::vector<absl::StatusOr<std::string>> results =
      sim->Run([&log](RankContext& ctx) { return SaveProtocol(ctx, &log); });
  EXPECT_THAT(Values(results), Eq(ExpectedProtocolResults(64)));
  EXPECT_THAT(log.events, SizeIs(64 * 3));
  // start + 4 collectives + exit per rank.
  EXPECT_THAT(sim->trace(), SizeIs(64 * 6));
}

// ---- Exceptions and early exits ---------------------------------------------

TEST(SimulatorTest, ExceptionBecomesInternalAndOthersFailFast) {
  auto sim = MakeSimulator(3);
  std::vector<absl::Status> statuses =
      sim->Run([](RankContext& ctx) -> absl::Status {
        if (ctx.rank() == 2) throw std::runtime_error("boom");
        return ctx.pg().Gather("write", 0, "x", ctx.Deadline()).status();
      });
  EXPECT_THAT(statuses[2],
              StatusIs(absl::StatusCode::kInternal,
                       Eq("rank 2 threw an exception: boom")));
  for (int r : {0, 1}) {
    EXPECT_THAT(statuses[r],
                StatusIs(absl::StatusCode::kAborted,
                         HasSubstr("rank 2 failed: INTERNAL: rank 2 threw an "
                                   "exception: boom")));
  }
}

TEST(SimulatorTest, NonStandardExceptionBecomesInternal) {
  auto sim = MakeSimulator(2);
  std::vector<absl::StatusOr<int>> results =
      sim->Run([](RankContext& ctx) -> absl::StatusOr<int> {
        if (ctx.rank() == 0) throw 42;
        return 1;
      });
  EXPECT_THAT(results[0], StatusIs(absl::StatusCode::kInternal,
                                   HasSubstr("not derived from std::exception")));
  EXPECT_THAT(results[1], IsOkAndHolds(1));
}

TEST(SimulatorTest, RankThatReturnsEarlyFailsTheOthersCallsPromptly) {
  for (std::optional<uint64_t> seed : {std::optional<uint64_t>(),
                                       std::optional<uint64_t>(3)}) {
    auto sim = MakeSimulator(3, seed);
    std::vector<absl::Status> statuses =
        sim->Run([](RankContext& ctx) -> absl::Status {
          if (ctx.rank() == 2) return absl::OkStatus();
          return ctx.pg().Gather("write", 0, "x", ctx.Deadline()).status();
        });
    EXPECT_THAT(statuses[2], IsOk());
    for (int r : {0, 1}) {
      EXPECT_THAT(statuses[r],
                  StatusIs(absl::StatusCode::kAborted,
                           Eq("rank 2 exited before joining call #0 "
                              "Gather(tag=\"write\", root=0)")));
    }
  }
}

// ---- Deterministic mode -----------------------------------------------------

// Four ranks, several collectives, side effects between them.
struct TracedRun {
  std::vector<std::string> trace;
  std::vector<std::string> side_effects;
  std::vector<std::string> results;
};

TracedRun RunTraced(uint64_t seed) {
  auto sim = MakeSimulator(4, seed);
  ProtocolLog log;
  std::vector<absl::StatusOr<std::string>> results =
      sim->Run([&log](RankContext& ctx) { return SaveProtocol(ctx, &log); });
  return TracedRun{sim->trace(), log.events, Values(results)};
}

TEST(SimulatorTest, SameSeedGivesTheSameTraceAndSideEffectOrder) {
  for (uint64_t seed : {0u, 1u, 12345u}) {
    TracedRun first = RunTraced(seed);
    TracedRun second = RunTraced(seed);
    EXPECT_THAT(first.trace, SizeIs(4 * 6));
    EXPECT_EQ(first.trace, second.trace) << "seed " << seed;
    EXPECT_EQ(first.side_effects, second.side_effects) << "seed " << seed;
    EXPECT_EQ(first.results, ExpectedProtocolResults(4));
    EXPECT_EQ(second.results, ExpectedProtocolResults(4));
  }
}

TEST(SimulatorTest, DifferentSeedsGiveDifferentInterleavings) {
  std::set<std::vector<std::string>> traces;
  std::set<std::vector<std::string>> side_effect_orders;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    TracedRun run = RunTraced(seed);
    traces.insert(run.trace);
    side_effect_orders.insert(run.side_effects);
  }
  EXPECT_GE(traces.size(), 2u);
  EXPECT_GE(side_effect_orders.size(), 2u);
}

TEST(SimulatorTest, TraceRecordsStartsCallsAndExits) {
  auto sim = MakeSimulator(2, /*seed=*/5);
  std::vector<absl::Status> statuses =
      sim->Run([](RankContext& ctx) -> absl::Status {
        if (ctx.rank() == 1) {
          DCP_RETURN_IF_ERROR(ctx.pg().Barrier("b", ctx.Deadline()));
          return absl::UnavailableError("late failure");
        }
        return ctx.pg().Barrier("b", ctx.Deadline());
      });
  ASSERT_THAT(statuses,
              ElementsAre(IsOk(), StatusIs(absl::StatusCode::kUnavailable)));
  std::vector<std::string> trace = sim->trace();
  EXPECT_THAT(trace, SizeIs(6));
  EXPECT_THAT(trace, AllOf(Contains("r0 start"), Contains("r1 start"),
                           Contains("r0 Barrier(b)#0"),
                           Contains("r1 Barrier(b)#0"), Contains("r0 exit OK"),
                           Contains("r1 exit UNAVAILABLE: late failure")));
  // Every rank's own events are in program order.
  for (int r : {0, 1}) {
    std::vector<std::string> mine;
    for (const std::string& entry : trace) {
      if (absl::StartsWith(entry, absl::StrCat("r", r, " "))) {
        mine.push_back(std::vector<std::string>(
            absl::StrSplit(entry, absl::MaxSplits(' ', 1)))[1]);
      }
    }
    EXPECT_THAT(mine, ElementsAre("start", "Barrier(b)#0",
                                  r == 0 ? "exit OK"
                                         : "exit UNAVAILABLE: late failure"));
  }
}

// The protocol under 200 seeds: every interleaving gives the same, correct
// results, and the same protocol transcript.
TEST(SimulatorTest, ProtocolIsCorrectUnderTwoHundredSeeds) {
  const std::vector<std::string> expected = ExpectedProtocolResults(4);
  std::set<std::vector<std::string>> side_effect_orders;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    auto sim = MakeSimulator(4, seed);
    ProtocolLog log;
    std::vector<absl::StatusOr<std::string>> results =
        sim->Run([&log](RankContext& ctx) { return SaveProtocol(ctx, &log); });
    ASSERT_EQ(Values(results), expected) << "seed " << seed;
    ASSERT_THAT(sim->transcript(),
                ElementsAre("Gather:plan", "Scatter:plan", "AllGather:write",
                            "Broadcast:metadata"))
        << "seed " << seed;
    side_effect_orders.insert(log.events);
  }
  // The seeds really explored different interleavings.
  EXPECT_GE(side_effect_orders.size(), 10u);
}

TEST(SimulatorTest, DeterministicDeadlockFailsPromptly) {
  auto sim = MakeSimulator(2, /*seed=*/9);
  std::vector<absl::Status> statuses =
      sim->Run([](RankContext& ctx) -> absl::Status {
        DCP_ASSIGN_OR_RETURN(std::shared_ptr<ProcessGroup> forked,
                             ctx.pg().Fork("bg", ctx.Deadline()));
        ProcessGroup& pg = ctx.rank() == 0 ? ctx.pg() : *forked;
        return pg.Barrier("x", ctx.Deadline());
      });
  EXPECT_THAT(statuses, Each(StatusIs(absl::StatusCode::kFailedPrecondition,
                                      HasSubstr("deadlock: no thread can run"))));
}

// ---- Fault injection --------------------------------------------------------

TEST(SimulatorTest, FailAtCollectiveFailsTheRankAndAbortsTheOthers) {
  for (std::optional<uint64_t> seed : {std::optional<uint64_t>(),
                                       std::optional<uint64_t>(11)}) {
    auto sim = MakeSimulator(4, seed);
    // Rank 2's second collective is the Scatter.
    sim->faults().FailAtCollective(2, 2, absl::UnavailableError("net down"));
    std::vector<absl::StatusOr<std::string>> results =
        sim->Run([](RankContext& ctx) { return SaveProtocol(ctx, nullptr); });
    EXPECT_THAT(results[2],
                StatusIs(absl::StatusCode::kUnavailable, Eq("net down")));
    for (int r : {0, 1, 3}) {
      EXPECT_THAT(results[r],
                  StatusIs(absl::StatusCode::kAborted,
                           Eq("rank 2 failed: UNAVAILABLE: net down (at "
                              "call #1 Scatter(tag=\"plan\", root=0))")))
          << "rank " << r;
    }
    EXPECT_THAT(sim->transcript(), ElementsAre("Gather:plan"));
  }
}

TEST(SimulatorTest, FailAtPointFailsOnlyTheNthVisitOfThatRank) {
  auto sim = MakeSimulator(3);
  sim->faults().FailAtPoint(1, "save.write", absl::InternalError("disk on fire"),
                            /*nth=*/2);
  std::vector<std::vector<absl::Status>> visits(3);
  std::vector<absl::Status> statuses =
      sim->Run([&visits](RankContext& ctx) -> absl::Status {
        for (int i = 0; i < 3; ++i) {
          visits[ctx.rank()].push_back(FaultPoint("save.write"));
        }
        visits[ctx.rank()].push_back(FaultPoint("save.other"));
        return absl::OkStatus();
      });
  EXPECT_THAT(statuses, Each(IsOk()));
  EXPECT_THAT(visits[0], Each(IsOk()));
  EXPECT_THAT(visits[2], Each(IsOk()));
  EXPECT_THAT(visits[1],
              ElementsAre(IsOk(),
                          StatusIs(absl::StatusCode::kInternal,
                                   Eq("disk on fire")),
                          IsOk(), IsOk()));
  // No handler leaks out of the rank threads.
  EXPECT_EQ(CurrentFaultPointHandler(), nullptr);
}

TEST(SimulatorTest, FailAtPointMakesTheOthersFailWithAbortedNamingTheRank) {
  for (std::optional<uint64_t> seed : {std::optional<uint64_t>(),
                                       std::optional<uint64_t>(4)}) {
    auto sim = MakeSimulator(3, seed);
    sim->faults().FailAtPoint(1, "save.write",
                              absl::InternalError("disk on fire"));
    std::vector<absl::StatusOr<std::string>> results =
        sim->Run([](RankContext& ctx) { return SaveProtocol(ctx, nullptr); });
    EXPECT_THAT(results[1], StatusIs(absl::StatusCode::kInternal,
                                     Eq("disk on fire")));
    for (int r : {0, 2}) {
      EXPECT_THAT(results[r],
                  StatusIs(absl::StatusCode::kAborted,
                           Eq("rank 1 failed: INTERNAL: disk on fire (before "
                              "joining call #2 AllGather(tag=\"write\"))")))
          << "rank " << r;
    }
  }
}

TEST(SimulatorTest, FaultPointHandlerCanBeCarriedToAnotherThread) {
  auto sim = MakeSimulator(2);
  sim->faults().FailAtPoint(0, "async.write", absl::UnavailableError("slow"));
  std::vector<absl::Status> statuses =
      sim->Run([](RankContext& ctx) -> absl::Status {
        FaultPointHandler* handler = CurrentFaultPointHandler();
        absl::Status from_worker;
        std::thread worker([&] {
          ScopedFaultPointHandler scoped(handler);
          from_worker = FaultPoint("async.write");
        });
        worker.join();
        return from_worker;
      });
  EXPECT_THAT(statuses, ElementsAre(StatusIs(absl::StatusCode::kUnavailable),
                                    IsOk()));
}

TEST(SimulatorTest, FaultsApplyToEveryRunCountedAfreshUntilCleared) {
  auto sim = MakeSimulator(2);
  sim->faults().FailAtPoint(0, "p", absl::InternalError("x"));
  auto run = [&sim] {
    return sim->Run(
        [](RankContext& ctx) -> absl::Status { return FaultPoint("p"); });
  };
  EXPECT_THAT(run(), ElementsAre(StatusIs(absl::StatusCode::kInternal), IsOk()));
  EXPECT_THAT(run(), ElementsAre(StatusIs(absl::StatusCode::kInternal), IsOk()));
  sim->faults().Clear();
  EXPECT_THAT(run(), Each(IsOk()));
}

TEST(SimulatorTest, EachRunUsesAFreshWorld) {
  auto sim = MakeSimulator(2);
  for (int i = 0; i < 2; ++i) {
    std::vector<absl::Status> statuses =
        sim->Run([](RankContext& ctx) -> absl::Status {
          return ctx.pg().Barrier("b", ctx.Deadline());
        });
    EXPECT_THAT(statuses, Each(IsOk()));
    // Call numbers restart: the transcript holds one Barrier, not two.
    EXPECT_THAT(sim->transcript(), ElementsAre("Barrier:b"));
  }
}

}  // namespace
}  // namespace dcp::test
