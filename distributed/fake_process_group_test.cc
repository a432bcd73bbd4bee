#include "distributed/fake_process_group.h"

#include <algorithm>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>  // NOLINT(build/c++11)
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "distributed/process_group.h"
#include "glog/logging.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/status_matchers.h"

namespace dcp::test {
namespace {

using ::testing::AllOf;
using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::Eq;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

// Long enough never to expire in a passing test; a test that would wait
// this long has already failed its assertion about the status code.
absl::Time Deadline() { return absl::Now() + absl::Seconds(60); }

std::unique_ptr<FakeWorld> MakeWorld(int size,
                                     std::optional<uint64_t> seed = {}) {
  FakeWorldOptions options;
  options.world_size = size;
  options.schedule_seed = seed;
  absl::StatusOr<std::unique_ptr<FakeWorld>> world = FakeWorld::Create(options);
  CHECK(world.ok()) << world.status();
  return *std::move(world);
}

using RankFn = std::function<absl::Status(int rank, ProcessGroup& pg)>;

// A minimal driver (the Simulator is the full one): one thread per rank,
// StartRank / fn / MarkRankDone, joined. Statuses in rank order.
std::vector<absl::Status> RunRanks(FakeWorld& world, const RankFn& fn) {
  const int n = world.world_size();
  std::vector<absl::Status> statuses(n);
  std::vector<std::thread> threads;
  threads.reserve(n);
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&world, &fn, &statuses, r] {
      absl::Status status = world.StartRank(r, Deadline());
      if (status.ok()) {
        std::shared_ptr<ProcessGroup> pg = world.Rank(r);
        status = fn(r, *pg);
      }
      world.MarkRankDone(r, status);
      statuses[r] = status;
    });
  }
  for (std::thread& thread : threads) thread.join();
  return statuses;
}

std::string Payload(int rank) { return absl::StrCat("p", rank); }

std::vector<std::string> Payloads(int n) {
  std::vector<std::string> payloads;
  for (int r = 0; r < n; ++r) payloads.push_back(Payload(r));
  return payloads;
}

TEST(FakeWorldTest, CreateRejectsBadWorldSizes) {
  FakeWorldOptions options;
  options.world_size = 0;
  EXPECT_THAT(FakeWorld::Create(options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("world_size 0")));
  options.world_size = FakeWorld::kMaxWorldSize + 1;
  EXPECT_THAT(FakeWorld::Create(options),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(FakeWorldTest, HandlesKnowTheirRankAndSize) {
  auto world = MakeWorld(3);
  EXPECT_FALSE(world->deterministic());
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(world->Rank(r)->rank(), r);
    EXPECT_EQ(world->Rank(r)->size(), 3);
  }
}

TEST(FakeWorldTest, EveryCollectiveComputesResultsByRank) {
  constexpr int kRanks = 4;
  auto world = MakeWorld(kRanks);
  std::vector<std::string> broadcast(kRanks), scattered(kRanks);
  std::vector<std::vector<std::string>> gathered(kRanks), all_gathered(kRanks);
  std::vector<absl::Status> statuses =
      RunRanks(*world, [&](int rank, ProcessGroup& pg) -> absl::Status {
        const std::string mine = Payload(rank);
        absl::Status barrier = pg.Barrier("start", Deadline());
        if (!barrier.ok()) return barrier;
        absl::StatusOr<std::string> b =
            pg.Broadcast("meta", /*root=*/2, mine, Deadline());
        if (!b.ok()) return b.status();
        broadcast[rank] = *b;
        absl::StatusOr<std::vector<std::string>> g =
            pg.Gather("plan", /*root=*/1, mine, Deadline());
        if (!g.ok()) return g.status();
        gathered[rank] = *g;
        std::vector<std::string> to_scatter;
        if (rank == 3) {
          for (int r = 0; r < kRanks; ++r) to_scatter.push_back("s" + std::to_string(r));
        }
        absl::StatusOr<std::string> s =
            pg.Scatter("plan", /*root=*/3, std::move(to_scatter), Deadline());
        if (!s.ok()) return s.status();
        scattered[rank] = *s;
        absl::StatusOr<std::vector<std::string>> ag =
            pg.AllGather("write", mine, Deadline());
        if (!ag.ok()) return ag.status();
        all_gathered[rank] = *ag;
        return absl::OkStatus();
      });
  EXPECT_THAT(statuses, Each(IsOk()));
  EXPECT_THAT(broadcast, Each(Eq("p2")));
  for (int r = 0; r < kRanks; ++r) {
    if (r == 1) {
      EXPECT_THAT(gathered[r], ElementsAre("p0", "p1", "p2", "p3"));
    } else {
      EXPECT_THAT(gathered[r], IsEmpty()) << "rank " << r;
    }
    EXPECT_EQ(scattered[r], "s" + std::to_string(r));
    EXPECT_THAT(all_gathered[r], ElementsAre("p0", "p1", "p2", "p3"));
  }
  EXPECT_THAT(world->Transcript(),
              ElementsAre("Barrier:start", "Broadcast:meta", "Gather:plan",
                          "Scatter:plan", "AllGather:write"));
}

TEST(FakeWorldTest, BinaryAndEmptyPayloadsArriveIntact) {
  auto world = MakeWorld(2);
  const std::string binary("\0\xff\x01", 3);
  std::vector<std::vector<std::string>> results(2);
  EXPECT_THAT(RunRanks(*world,
                       [&](int rank, ProcessGroup& pg) -> absl::Status {
                         absl::StatusOr<std::vector<std::string>> all =
                             pg.AllGather("x", rank == 0 ? binary : "",
                                          Deadline());
                         if (!all.ok()) return all.status();
                         results[rank] = *std::move(all);
                         return absl::OkStatus();
                       }),
              Each(IsOk()));
  EXPECT_THAT(results, Each(ElementsAre(binary, "")));
}

// In deterministic mode the arrival order at the rendezvous depends on the
// seed; the trace records it. Results must not.
TEST(FakeWorldTest, GatherResultsAreByRankWhateverTheArrivalOrder) {
  constexpr int kRanks = 4;
  bool saw_unsorted_arrival = false;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    auto world = MakeWorld(kRanks, seed);
    std::vector<std::vector<std::string>> gathered(kRanks), all(kRanks);
    std::vector<absl::Status> statuses =
        RunRanks(*world, [&](int rank, ProcessGroup& pg) -> absl::Status {
          absl::StatusOr<std::vector<std::string>> g =
              pg.Gather("g", /*root=*/0, Payload(rank), Deadline());
          if (!g.ok()) return g.status();
          gathered[rank] = *g;
          absl::StatusOr<std::vector<std::string>> a =
              pg.AllGather("a", Payload(rank), Deadline());
          if (!a.ok()) return a.status();
          all[rank] = *a;
          return absl::OkStatus();
        });
    ASSERT_THAT(statuses, Each(IsOk())) << "seed " << seed;
    EXPECT_THAT(gathered[0], ElementsAreArray(Payloads(kRanks)))
        << "seed " << seed;
    EXPECT_THAT(all, Each(ElementsAreArray(Payloads(kRanks))))
        << "seed " << seed;
    std::vector<std::string> arrivals;
    for (const std::string& entry : world->ScheduleTrace()) {
      if (absl::StrContains(entry, "Gather(g)#0")) arrivals.push_back(entry);
    }
    ASSERT_THAT(arrivals, SizeIs(kRanks));
    saw_unsorted_arrival |= !std::is_sorted(arrivals.begin(), arrivals.end());
  }
  // Otherwise this test would not show anything about arrival order.
  EXPECT_TRUE(saw_unsorted_arrival);
}

TEST(FakeWorldTest, KindMismatchFailsEveryRankNamingBothCalls) {
  auto world = MakeWorld(2);
  std::vector<absl::Status> statuses =
      RunRanks(*world, [](int rank, ProcessGroup& pg) -> absl::Status {
        for (int i = 0; i < 3; ++i) {
          absl::Status barrier = pg.Barrier("b", Deadline());
          if (!barrier.ok()) return barrier;
        }
        if (rank == 0) return pg.Gather("plan", 0, "x", Deadline()).status();
        return pg.Broadcast("plan", 0, "x", Deadline()).status();
      });
  EXPECT_THAT(statuses,
              Each(StatusIs(absl::StatusCode::kFailedPrecondition,
                            Eq("collective mismatch at call #3: rank 0 "
                               "Gather(tag=\"plan\", root=0) vs rank 1 "
                               "Broadcast(tag=\"plan\", root=0)"))));
  EXPECT_THAT(world->Transcript(),
              ElementsAre("Barrier:b", "Barrier:b", "Barrier:b"));
}

TEST(FakeWorldTest, RootMismatchFailsEveryRank) {
  auto world = MakeWorld(3);
  std::vector<absl::Status> statuses =
      RunRanks(*world, [](int rank, ProcessGroup& pg) -> absl::Status {
        return pg.Broadcast("meta", rank == 2 ? 1 : 0, "x", Deadline())
            .status();
      });
  EXPECT_THAT(statuses,
              Each(StatusIs(absl::StatusCode::kFailedPrecondition,
                            AllOf(HasSubstr("at call #0"),
                                  HasSubstr("Broadcast(tag=\"meta\", root=0)"),
                                  HasSubstr("rank 2 Broadcast(tag=\"meta\", "
                                            "root=1)")))));
  EXPECT_THAT(world->Transcript(), IsEmpty());
}

TEST(FakeWorldTest, TagMismatchFailsEveryRank) {
  auto world = MakeWorld(2);
  std::vector<absl::Status> statuses =
      RunRanks(*world, [](int rank, ProcessGroup& pg) -> absl::Status {
        return pg.AllGather(rank == 0 ? "plan" : "write", "x", Deadline())
            .status();
      });
  EXPECT_THAT(statuses,
              Each(StatusIs(absl::StatusCode::kFailedPrecondition,
                            Eq("collective mismatch at call #0: rank 0 "
                               "AllGather(tag=\"plan\") vs rank 1 "
                               "AllGather(tag=\"write\")"))));
}

TEST(FakeWorldTest, TimeoutNamesTheRanksThatDidNotArriveAndFailsTheCall) {
  auto world = MakeWorld(3);
  // Single-threaded: a deadline in the past times out at once.
  EXPECT_THAT(world->Rank(0)->Gather("plan", 0, "x", absl::InfinitePast()),
              StatusIs(absl::StatusCode::kDeadlineExceeded,
                       Eq("call #0 Gather(tag=\"plan\", root=0) timed out: "
                          "ranks 1, 2 did not arrive")));
  // The call failed for everyone: a late rank gets the same error at once.
  EXPECT_THAT(world->Rank(1)->Gather("plan", 0, "x", Deadline()),
              StatusIs(absl::StatusCode::kDeadlineExceeded,
                       HasSubstr("ranks 1, 2 did not arrive")));
}

TEST(FakeWorldTest, TimeoutWithOneMissingRankSaysRank) {
  auto world = MakeWorld(2);
  EXPECT_THAT(world->Rank(1)->Barrier("b", absl::Now()),
              StatusIs(absl::StatusCode::kDeadlineExceeded,
                       HasSubstr("rank 0 did not arrive")));
}

TEST(FakeWorldTest, RankDoneBeforeACallFailsItPromptly) {
  auto world = MakeWorld(3);
  world->MarkRankDone(2, absl::InternalError("disk on fire"));
  // Would block until the deadline (and then be DeadlineExceeded) if the
  // world did not know that rank 2 will never come.
  EXPECT_THAT(world->Rank(0)->Gather("write", 0, "x", Deadline()),
              StatusIs(absl::StatusCode::kAborted,
                       Eq("rank 2 failed: INTERNAL: disk on fire (before "
                          "joining call #0 Gather(tag=\"write\", root=0))")));
  EXPECT_THAT(world->Rank(1)->Gather("write", 0, "x", Deadline()),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("rank 2 failed")));
  // Later calls fail too, at once: a failed communicator is unusable.
  EXPECT_THAT(world->Rank(0)->AllGather("next", "x", Deadline()),
              StatusIs(absl::StatusCode::kAborted,
                       AllOf(HasSubstr("call #1 AllGather(tag=\"next\")"),
                             HasSubstr("failed earlier"),
                             HasSubstr("rank 2 failed: INTERNAL: disk on "
                                       "fire"))));
}

TEST(FakeWorldTest, FailedRankIsNamedInPreferenceToOneThatExitedOk) {
  auto world = MakeWorld(3);
  world->MarkRankDone(0, absl::OkStatus());
  world->MarkRankDone(2, absl::UnavailableError("flaky"));
  EXPECT_THAT(world->Rank(1)->Barrier("b", Deadline()),
              StatusIs(absl::StatusCode::kAborted,
                       HasSubstr("rank 2 failed: UNAVAILABLE: flaky")));
}

// Deterministic mode over several seeds covers both orders: rank 2 exits
// before the others arrive, and while they wait (checked with the trace).
TEST(FakeWorldTest, RankThatExitsFailsPendingAndLaterCallsPromptly) {
  bool exit_while_pending = false;
  bool exit_before_arrival = false;
  for (uint64_t seed = 0; seed < 16; ++seed) {
    for (bool fail : {false, true}) {
      auto world = MakeWorld(3, seed);
      std::vector<absl::Status> later(3);
      std::vector<absl::Status> statuses =
          RunRanks(*world, [&](int rank, ProcessGroup& pg) -> absl::Status {
            absl::Status status = pg.Barrier("start", Deadline());
            if (!status.ok()) return status;
            if (rank == 2) {
              return fail ? absl::InternalError("disk on fire")
                          : absl::OkStatus();
            }
            status = pg.Gather("write", 0, "x", Deadline()).status();
            later[rank] = pg.Barrier("after", Deadline());
            return status;
          });
      const std::string expected =
          fail ? "rank 2 failed: INTERNAL: disk on fire (before joining "
                 "call #1 Gather(tag=\"write\", root=0))"
               : "rank 2 exited before joining call #1 "
                 "Gather(tag=\"write\", root=0)";
      for (int r = 0; r < 2; ++r) {
        EXPECT_THAT(statuses[r],
                    StatusIs(absl::StatusCode::kAborted, Eq(expected)))
            << "seed " << seed << " rank " << r;
        EXPECT_THAT(later[r], StatusIs(absl::StatusCode::kAborted,
                                       HasSubstr("call #2 Barrier")))
            << "seed " << seed << " rank " << r;
      }
      const std::vector<std::string> trace = world->ScheduleTrace();
      const auto exit = std::find_if(
          trace.begin(), trace.end(),
          [](const std::string& e) { return absl::StartsWith(e, "r2 exit"); });
      const auto first_gather = std::find_if(
          trace.begin(), trace.end(), [](const std::string& e) {
            return absl::StrContains(e, "Gather(write)");
          });
      ASSERT_NE(exit, trace.end());
      if (first_gather < exit) {
        exit_while_pending = true;
      } else {
        exit_before_arrival = true;
      }
    }
  }
  EXPECT_TRUE(exit_while_pending);
  EXPECT_TRUE(exit_before_arrival);
}

TEST(FakeWorldTest, InjectedFailureReturnsStatusAndAbortsTheOthers) {
  auto world = MakeWorld(3);
  world->FailCollective(/*rank=*/1, /*nth=*/2, absl::UnavailableError("boom"));
  std::vector<absl::Status> statuses =
      RunRanks(*world, [](int rank, ProcessGroup& pg) -> absl::Status {
        absl::Status status = pg.Barrier("start", Deadline());
        if (!status.ok()) return status;
        return pg.Gather("plan", 0, "x", Deadline()).status();
      });
  EXPECT_THAT(statuses[1],
              StatusIs(absl::StatusCode::kUnavailable, Eq("boom")));
  for (int r : {0, 2}) {
    EXPECT_THAT(statuses[r],
                StatusIs(absl::StatusCode::kAborted,
                         Eq("rank 1 failed: UNAVAILABLE: boom (at call #1 "
                            "Gather(tag=\"plan\", root=0))")));
  }
  EXPECT_THAT(world->Transcript(), ElementsAre("Barrier:start"));
}

TEST(FakeWorldTest, RootOutOfRangeIsInvalidArgumentLocallyAndAbortsOthers) {
  auto world = MakeWorld(3);
  EXPECT_THAT(world->Rank(0)->Gather("plan", 7, "x", Deadline()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("root 7 is out of range for a world of "
                                 "size 3")));
  EXPECT_THAT(world->Rank(1)->Gather("plan", 0, "x", Deadline()),
              StatusIs(absl::StatusCode::kAborted,
                       HasSubstr("rank 0 failed: INVALID_ARGUMENT")));
}

TEST(FakeWorldTest, ScatterRootMustPassOnePayloadPerRank) {
  auto world = MakeWorld(3);
  EXPECT_THAT(world->Rank(0)->Scatter("plan", 0, {"a", "b"}, Deadline()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("root 0 passed 2 payloads for a world of "
                                 "size 3")));
  EXPECT_THAT(world->Rank(2)->Scatter("plan", 0, {}, Deadline()),
              StatusIs(absl::StatusCode::kAborted,
                       HasSubstr("rank 0 failed: INVALID_ARGUMENT")));
}

TEST(FakeWorldTest, AbortFailsWaitingAndLaterCalls) {
  auto world = MakeWorld(2);
  absl::Status waiting;
  std::thread rank0([&] { waiting = world->Rank(0)->Barrier("b", Deadline()); });
  // Whether rank 0 is already waiting or not, it must end with Aborted
  // long before its deadline.
  world->Abort(absl::InternalError("test over"));
  rank0.join();
  EXPECT_THAT(waiting, StatusIs(absl::StatusCode::kAborted,
                                Eq("world aborted: INTERNAL: test over")));
  EXPECT_THAT(world->Rank(1)->AllGather("x", "y", Deadline()),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("test over")));
}

// Free mode: a forked communicator is used on background threads while the
// rank threads keep using the world; sequence numbers and matching are
// separate, and each communicator has its own transcript.
TEST(FakeWorldTest, ForkCreatesAnIndependentCommunicator) {
  constexpr int kRanks = 3;
  auto world = MakeWorld(kRanks);
  std::vector<std::vector<std::string>> background(kRanks), foreground(kRanks);
  std::vector<absl::Status> statuses =
      RunRanks(*world, [&](int rank, ProcessGroup& pg) -> absl::Status {
        absl::StatusOr<std::shared_ptr<ProcessGroup>> forked =
            pg.Fork("bg", Deadline());
        if (!forked.ok()) return forked.status();
        EXPECT_EQ((*forked)->rank(), rank);
        EXPECT_EQ((*forked)->size(), kRanks);
        absl::Status bg_status;
        std::thread bg([&, bg_pg = *forked] {
          absl::StatusOr<std::vector<std::string>> all = bg_pg->AllGather(
              "bg-data", absl::StrCat("b", rank), Deadline());
          if (!all.ok()) {
            bg_status = all.status();
            return;
          }
          background[rank] = *all;
          bg_status = bg_pg->Barrier("bg-done", Deadline());
        });
        absl::StatusOr<std::vector<std::string>> fg =
            pg.AllGather("fg-data", absl::StrCat("f", rank), Deadline());
        bg.join();
        if (!fg.ok()) return fg.status();
        foreground[rank] = *fg;
        return bg_status;
      });
  EXPECT_THAT(statuses, Each(IsOk()));
  EXPECT_THAT(background, Each(ElementsAre("b0", "b1", "b2")));
  EXPECT_THAT(foreground, Each(ElementsAre("f0", "f1", "f2")));
  EXPECT_THAT(world->Communicators(), ElementsAre("world", "world/bg#0"));
  EXPECT_THAT(world->Transcript(), ElementsAre("Fork:bg", "AllGather:fg-data"));
  EXPECT_THAT(world->Transcript("world/bg#0"),
              ElementsAre("AllGather:bg-data", "Barrier:bg-done"));
  EXPECT_THAT(world->Transcript("no such communicator"), IsEmpty());
}

TEST(FakeWorldTest, MismatchOnAForkNamesTheCommunicatorAndItsOwnCallNumber) {
  auto world = MakeWorld(2);
  std::vector<absl::Status> statuses =
      RunRanks(*world, [](int rank, ProcessGroup& pg) -> absl::Status {
        absl::Status status = pg.Barrier("b", Deadline());
        if (!status.ok()) return status;
        absl::StatusOr<std::shared_ptr<ProcessGroup>> forked =
            pg.Fork("io", Deadline());
        if (!forked.ok()) return forked.status();
        return (*forked)
            ->AllGather(rank == 0 ? "a" : "b", "x", Deadline())
            .status();
      });
  EXPECT_THAT(statuses,
              Each(StatusIs(absl::StatusCode::kFailedPrecondition,
                            Eq("collective mismatch at call #0 on "
                               "communicator \"world/io#1\": rank 0 "
                               "AllGather(tag=\"a\") vs rank 1 "
                               "AllGather(tag=\"b\")"))));
}

TEST(FakeWorldTest, DeterministicForkWorksOnTheRankThread) {
  auto world = MakeWorld(2, /*seed=*/7);
  std::vector<std::vector<std::string>> results(2);
  EXPECT_THAT(
      RunRanks(*world,
               [&](int rank, ProcessGroup& pg) -> absl::Status {
                 absl::StatusOr<std::shared_ptr<ProcessGroup>> forked =
                     pg.Fork("bg", Deadline());
                 if (!forked.ok()) return forked.status();
                 absl::StatusOr<std::vector<std::string>> all =
                     (*forked)->AllGather("x", Payload(rank), Deadline());
                 if (!all.ok()) return all.status();
                 results[rank] = *all;
                 return pg.Barrier("done", Deadline());
               }),
      Each(IsOk()));
  EXPECT_THAT(results, Each(ElementsAre("p0", "p1")));
  EXPECT_THAT(world->ScheduleTrace(),
              ::testing::Contains("r1 AllGather(x)#0 on world/bg#0"));
}

TEST(FakeWorldTest, DeterministicModeRejectsCollectivesFromOtherThreads) {
  auto world = MakeWorld(1, /*seed=*/1);
  std::vector<absl::Status> statuses =
      RunRanks(*world, [](int rank, ProcessGroup& pg) -> absl::Status {
        absl::StatusOr<std::shared_ptr<ProcessGroup>> forked =
            pg.Fork("bg", Deadline());
        if (!forked.ok()) return forked.status();
        absl::Status from_other_thread;
        std::thread bg([&] {
          from_other_thread = (*forked)->Barrier("x", Deadline());
        });
        bg.join();
        return from_other_thread;
      });
  EXPECT_THAT(statuses[0], StatusIs(absl::StatusCode::kUnimplemented,
                                    HasSubstr("dcp::ScheduledThread")));
}

TEST(FakeWorldTest, DeterministicModeNeedsStartRank) {
  auto world = MakeWorld(2, /*seed=*/1);
  EXPECT_THAT(world->Rank(0)->Barrier("b", Deadline()),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("before StartRank")));
}

TEST(FakeWorldTest, StartRankTwiceIsAnError) {
  auto world = MakeWorld(1);
  EXPECT_THAT(world->StartRank(0, Deadline()), IsOk());
  EXPECT_THAT(world->StartRank(0, Deadline()),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("started twice")));
}

// Rank 0 waits on the world, rank 1 on a fork: nobody can run. Free mode
// would wait for the deadline; deterministic mode knows at once.
TEST(FakeWorldTest, DeterministicDeadlockFailsEveryWaitingRank) {
  for (uint64_t seed = 0; seed < 4; ++seed) {
    auto world = MakeWorld(2, seed);
    std::vector<absl::Status> statuses =
        RunRanks(*world, [](int rank, ProcessGroup& pg) -> absl::Status {
          absl::StatusOr<std::shared_ptr<ProcessGroup>> forked =
              pg.Fork("bg", Deadline());
          if (!forked.ok()) return forked.status();
          if (rank == 0) return pg.AllGather("a", "x", Deadline()).status();
          return (*forked)->AllGather("b", "x", Deadline()).status();
        });
    EXPECT_THAT(statuses,
                Each(StatusIs(absl::StatusCode::kFailedPrecondition,
                              Eq("deadlock: no thread can run; r0 waits in "
                                 "call #1 AllGather(tag=\"a\"); r1 waits "
                                 "in call #0 on communicator \"world/bg#0\" "
                                 "AllGather(tag=\"b\")"))))
        << "seed " << seed;
  }
}

// With one rank running at a time, side effects between collectives happen
// in trace order: the log each rank appends to (without a lock) equals the
// trace without its "start" entries. Same seed, same everything.
TEST(FakeWorldTest, DeterministicModeRunsOneRankAtATimeInTraceOrder) {
  constexpr int kRanks = 4;
  std::set<std::vector<std::string>> distinct_traces;
  for (uint64_t seed = 0; seed < 10; ++seed) {
    std::vector<std::string> first_trace;
    for (int attempt = 0; attempt < 2; ++attempt) {
      auto world = MakeWorld(kRanks, seed);
      std::vector<std::string> log;  // Unsynchronized on purpose.
      std::vector<absl::Status> statuses =
          RunRanks(*world, [&](int rank, ProcessGroup& pg) -> absl::Status {
            for (int i = 0; i < 3; ++i) {
              log.push_back(absl::StrCat("r", rank, " AllGather(x)#", i));
              absl::Status status =
                  pg.AllGather("x", Payload(rank), Deadline()).status();
              if (!status.ok()) return status;
            }
            log.push_back(absl::StrCat("r", rank, " exit OK"));
            return absl::OkStatus();
          });
      ASSERT_THAT(statuses, Each(IsOk()));
      std::vector<std::string> trace = world->ScheduleTrace();
      ASSERT_THAT(trace, SizeIs(kRanks * 5));
      std::vector<std::string> without_starts;
      for (const std::string& entry : trace) {
        if (!absl::EndsWith(entry, " start")) without_starts.push_back(entry);
      }
      EXPECT_EQ(log, without_starts) << "seed " << seed;
      if (attempt == 0) {
        first_trace = trace;
      } else {
        EXPECT_EQ(trace, first_trace) << "seed " << seed;
      }
    }
    distinct_traces.insert(first_trace);
  }
  EXPECT_GE(distinct_traces.size(), 2u);
}

TEST(FakeWorldTest, SixtyFourRanksAllGather) {
  constexpr int kRanks = 64;
  auto world = MakeWorld(kRanks);
  std::vector<std::vector<std::string>> results(kRanks);
  EXPECT_THAT(RunRanks(*world,
                       [&](int rank, ProcessGroup& pg) -> absl::Status {
                         absl::StatusOr<std::vector<std::string>> all =
                             pg.AllGather("x", Payload(rank), Deadline());
                         if (!all.ok()) return all.status();
                         results[rank] = *std::move(all);
                         return absl::OkStatus();
                       }),
              Each(IsOk()));
  EXPECT_THAT(results, Each(ElementsAreArray(Payloads(kRanks))));
}

}  // namespace
}  // namespace dcp::test
