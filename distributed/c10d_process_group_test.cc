#include "distributed/c10d_process_group.h"

#include <signal.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/fault_point.h"
#include "distributed/c10d_process_group_wrap.h"
#include "distributed/process_group.h"
#include "glog/logging.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/multiprocess.h"
#include "testing/status_matchers.h"
#include "torch/csrc/distributed/c10d/HashStore.hpp"
#include "torch/csrc/distributed/c10d/ProcessGroupGloo.hpp"

#if defined(__SANITIZE_THREAD__)
extern "C" void __tsan_ignore_thread_begin();
extern "C" void __tsan_ignore_thread_end();
#endif

namespace dcp {
namespace {

using ::dcp::test::ExitedWithCode;
using ::dcp::test::IsOk;
using ::dcp::test::IsOkAndHolds;
using ::dcp::test::KilledBySignal;
using ::dcp::test::MultiprocessOptions;
using ::dcp::test::RunWorkers;
using ::dcp::test::StatusIs;
using ::dcp::test::WorkerContext;
using ::dcp::test::WorkerResult;
using ::testing::AllOf;
using ::testing::Each;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

// Payload sizes: every collective runs three rounds; in round k rank r
// sends kSizes[(r + k) % 3] bytes, so sizes differ between ranks and every
// rank sends each size once.
constexpr int64_t kSizes[] = {0, 1, 1 << 20};

int64_t SizeFor(int rank, int round) { return kSizes[(rank + round) % 3]; }

// Bytes that depend on (who, round, offset), so a payload delivered to the
// wrong rank or shifted is detected.
std::string Payload(int who, int round, int64_t size) {
  std::string bytes(size, '\0');
  for (int64_t i = 0; i < size; ++i) {
    bytes[i] =
        static_cast<char>((who * 131 + round * 31 + i * 7 + i / 251) & 0xff);
  }
  return bytes;
}

// Equality of byte strings without printing megabytes.
::testing::AssertionResult SameBytes(const std::string& actual,
                                     const std::string& expected) {
  if (actual.size() != expected.size()) {
    return ::testing::AssertionFailure()
           << "size " << actual.size() << ", expected " << expected.size();
  }
  for (size_t i = 0; i < actual.size(); ++i) {
    if (actual[i] != expected[i]) {
      return ::testing::AssertionFailure() << "bytes differ at offset " << i;
    }
  }
  return ::testing::AssertionSuccess();
}

// Runs every collective in three rounds with payloads of 0 B, 1 B and 1 MB
// and checks that results are indexed by rank.
void ExerciseEveryCollective(ProcessGroup& pg, absl::Time deadline) {
  const int n = pg.size();
  const int me = pg.rank();
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE(absl::StrCat("rank ", me, " round ", round));
    const int root = round % n;

    absl::StatusOr<std::vector<std::string>> all =
        pg.AllGather("all", Payload(me, round, SizeFor(me, round)), deadline);
    DCP_ASSERT_OK(all.status());
    ASSERT_THAT(*all, SizeIs(n));
    for (int r = 0; r < n; ++r) {
      EXPECT_TRUE(SameBytes((*all)[r], Payload(r, round, SizeFor(r, round))))
          << "AllGather from rank " << r;
    }

    absl::StatusOr<std::vector<std::string>> gathered = pg.Gather(
        "gather", root, Payload(me, round, SizeFor(me, round)), deadline);
    DCP_ASSERT_OK(gathered.status());
    if (me == root) {
      ASSERT_THAT(*gathered, SizeIs(n));
      for (int r = 0; r < n; ++r) {
        EXPECT_TRUE(
            SameBytes((*gathered)[r], Payload(r, round, SizeFor(r, round))))
            << "Gather from rank " << r;
      }
    } else {
      EXPECT_THAT(*gathered, IsEmpty());
    }

    std::vector<std::string> pieces;
    if (me == root) {
      for (int r = 0; r < n; ++r) {
        pieces.push_back(Payload(100 + r, round, SizeFor(r + 1, round)));
      }
    }
    absl::StatusOr<std::string> piece =
        pg.Scatter("scatter", root, std::move(pieces), deadline);
    DCP_ASSERT_OK(piece.status());
    EXPECT_TRUE(
        SameBytes(*piece, Payload(100 + me, round, SizeFor(me + 1, round))));

    absl::StatusOr<std::string> broadcast = pg.Broadcast(
        "broadcast", root,
        me == root ? Payload(root, round, SizeFor(root + 2, round))
                   : Payload(me, round, 5),  // Ignored on non-roots.
        deadline);
    DCP_ASSERT_OK(broadcast.status());
    EXPECT_TRUE(
        SameBytes(*broadcast, Payload(root, round, SizeFor(root + 2, round))));

    DCP_ASSERT_OK(pg.Barrier("barrier", deadline));
  }
}

// ---- world creation and options, in this process ---------------------------

TEST(C10dOptionsFromEnvTest, ReadsTorchrunVariables) {
  std::map<std::string, std::string> env = {{"RANK", "1"},
                                            {"WORLD_SIZE", "4"},
                                            {"MASTER_ADDR", "127.0.0.1"},
                                            {"MASTER_PORT", "29500"}};
  auto lookup = [&](absl::string_view name) -> std::optional<std::string> {
    auto it = env.find(std::string(name));
    if (it == env.end()) return std::nullopt;
    return it->second;
  };
  DCP_ASSERT_OK_AND_ASSIGN(C10dOptions options, C10dOptionsFromEnv(lookup));
  EXPECT_EQ(options.rank, 1);
  EXPECT_EQ(options.world_size, 4);
  EXPECT_EQ(options.master_addr, "127.0.0.1");
  EXPECT_EQ(options.master_port, 29500);
  EXPECT_EQ(options.file_store_path, "");
  EXPECT_EQ(options.interface_hostname, "127.0.0.1");
  EXPECT_EQ(options.timeout, absl::Minutes(5));

  env["MASTER_ADDR"] = "10.1.2.3";
  DCP_ASSERT_OK_AND_ASSIGN(options, C10dOptionsFromEnv(lookup));
  EXPECT_EQ(options.interface_hostname, "")
      << "a remote master: default device";

  env["DCP_GLOO_HOSTNAME"] = "node7";
  env["DCP_C10D_TIMEOUT_SECONDS"] = "30";
  DCP_ASSERT_OK_AND_ASSIGN(options, C10dOptionsFromEnv(lookup));
  EXPECT_EQ(options.interface_hostname, "node7");
  EXPECT_EQ(options.timeout, absl::Seconds(30));

  env = {{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"DCP_FILE_STORE", "/x/store"}};
  DCP_ASSERT_OK_AND_ASSIGN(options, C10dOptionsFromEnv(lookup));
  EXPECT_EQ(options.file_store_path, "/x/store");
  EXPECT_EQ(options.interface_hostname, "127.0.0.1");
}

TEST(C10dOptionsFromEnvTest, NamesTheMissingOrMalformedVariable) {
  struct Case {
    std::map<std::string, std::string> env;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{{"WORLD_SIZE", "2"}, {"DCP_FILE_STORE", "/s"}},
       "environment variable RANK is not set"},
      {{{"RANK", "0"}, {"DCP_FILE_STORE", "/s"}},
       "environment variable WORLD_SIZE is not set"},
      {{{"RANK", "one"}, {"WORLD_SIZE", "2"}, {"DCP_FILE_STORE", "/s"}},
       "RANK=\"one\" is not an integer"},
      {{{"RANK", "0"}, {"WORLD_SIZE", "0"}, {"DCP_FILE_STORE", "/s"}},
       "WORLD_SIZE=0 must be at least 1"},
      {{{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"DCP_FILE_STORE", "/s"}},
       "RANK=2 is out of range for WORLD_SIZE=2"},
      {{{"RANK", "-1"}, {"WORLD_SIZE", "2"}, {"DCP_FILE_STORE", "/s"}},
       "RANK=-1 is out of range"},
      {{{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "1234"}},
       "MASTER_ADDR is not set"},
      {{{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}},
       "MASTER_PORT is not set"},
      {{{"RANK", "0"},
        {"WORLD_SIZE", "2"},
        {"MASTER_ADDR", "h"},
        {"MASTER_PORT", "70000"}},
       "MASTER_PORT=70000 is not a port number"},
      {{{"RANK", "0"},
        {"WORLD_SIZE", "2"},
        {"MASTER_ADDR", "h"},
        {"MASTER_PORT", "port"}},
       "MASTER_PORT=\"port\" is not an integer"},
      {{{"RANK", "0"},
        {"WORLD_SIZE", "2"},
        {"DCP_FILE_STORE", "/s"},
        {"DCP_C10D_TIMEOUT_SECONDS", "0"}},
       "DCP_C10D_TIMEOUT_SECONDS=0 must be positive"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.message);
    auto lookup = [&](absl::string_view name) -> std::optional<std::string> {
      auto it = c.env.find(std::string(name));
      if (it == c.env.end()) return std::nullopt;
      return it->second;
    };
    EXPECT_THAT(
        C10dOptionsFromEnv(lookup),
        StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.message)));
  }
}

TEST(C10dProcessGroupTest, CreateFromEnvWithoutTorchrunVariablesNamesRank) {
  if (std::getenv("RANK") != nullptr) GTEST_SKIP() << "RANK is set";
  EXPECT_THAT(C10dProcessGroup::CreateFromEnv(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("RANK is not set")));
}

TEST(C10dProcessGroupTest, CreateRejectsBadOptions) {
  C10dOptions options;
  options.world_size = 2;
  options.rank = 2;
  options.master_port = 29500;
  EXPECT_THAT(C10dProcessGroup::Create(options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("rank 2 is out of range for world_size 2")));
  options.rank = 0;
  options.world_size = 0;
  EXPECT_THAT(C10dProcessGroup::Create(options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("world_size must be at least 1")));
  options.world_size = 2;
  options.master_port = 0;
  EXPECT_THAT(C10dProcessGroup::Create(options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("master_port 0 is not a port number")));
  options.master_port = 29500;
  options.timeout = absl::ZeroDuration();
  EXPECT_THAT(C10dProcessGroup::Create(options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("timeout must be positive")));
}

std::string FreshStorePath(absl::string_view name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  std::string path = absl::StrCat(dir != nullptr ? dir : "/tmp", "/", name, "_",
                                  getpid(), ".store");
  std::remove(path.c_str());
  return path;
}

TEST(C10dProcessGroupTest, WorldOfOneRunsEveryCollective) {
  C10dOptions options;
  options.file_store_path = FreshStorePath("world_of_one");
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<C10dProcessGroup> pg,
                           C10dProcessGroup::Create(options));
  EXPECT_EQ(pg->rank(), 0);
  EXPECT_EQ(pg->size(), 1);
  EXPECT_EQ(pg->name(), "dcp/world");
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  ExerciseEveryCollective(*pg, deadline);
  DCP_ASSERT_OK_AND_ASSIGN(std::shared_ptr<ProcessGroup> fork,
                           pg->Fork("fork", deadline));
  ExerciseEveryCollective(*fork, deadline);
  EXPECT_THAT(pg->Gather("bad", 1, "x", deadline),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("root 1 is out of range for 1 ranks")));
  EXPECT_THAT(pg->Barrier("after", deadline),
              StatusIs(absl::StatusCode::kAborted,
                       HasSubstr("the process group failed earlier")));
}

TEST(C10dProcessGroupTest, WorldOfOneOverTcpStoreOnAnyPort) {
  C10dOptions options;  // rank 0 of 1, master_port 0: any free port.
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<C10dProcessGroup> pg,
                           C10dProcessGroup::Create(options));
  EXPECT_THAT(pg->AllGather("x", "only", absl::Now() + absl::Seconds(60)),
              IsOkAndHolds(std::vector<std::string>{"only"}));
}

// ---- several ranks as threads of this process -------------------------------

// Runs `fn(rank)` on `n` threads and joins them.
template <typename Fn>
void RunThreads(int n, Fn fn) {
  std::vector<std::thread> threads;
  for (int rank = 0; rank < n; ++rank) threads.emplace_back(fn, rank);
  for (std::thread& t : threads) t.join();
}

// Destroys a Gloo group the test made itself. Under TSan, memory accesses
// are ignored meanwhile: Gloo's threads leave objects behind (e.g. the
// "Connection closed by peer" exception once the other rank has left) and
// libtorch joins those threads where TSan cannot see it (the same reason as
// IgnoreTsanScope in c10d_process_group.cc).
void DestroyGlooGroup(c10::intrusive_ptr<c10d::ProcessGroupGloo>& gloo) {
#if defined(__SANITIZE_THREAD__)
  __tsan_ignore_thread_begin();
#endif
  gloo.reset();
#if defined(__SANITIZE_THREAD__)
  __tsan_ignore_thread_end();
#endif
}

TEST(C10dProcessGroupThreadsTest, WrappedGlooGroupsRunEveryCollective) {
  auto store = c10::make_intrusive<c10d::HashStore>();
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  RunThreads(2, [&](int rank) {
    auto options = c10d::ProcessGroupGloo::Options::create();
    options->devices.push_back(
        c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    auto gloo =
        c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, 2, options);
    {
      absl::StatusOr<std::unique_ptr<C10dProcessGroup>> pg =
          WrapC10dProcessGroup(gloo, store);
      DCP_ASSERT_OK(pg.status());
      EXPECT_EQ((*pg)->rank(), rank);
      EXPECT_EQ((*pg)->size(), 2);
      ExerciseEveryCollective(**pg, deadline);
      absl::StatusOr<std::shared_ptr<ProcessGroup>> fork =
          (*pg)->Fork("fork", deadline);
      DCP_ASSERT_OK(fork.status());
      ExerciseEveryCollective(**fork, deadline);
    }
    DestroyGlooGroup(gloo);
  });
}

TEST(C10dProcessGroupThreadsTest, WrapRejectsNullArguments) {
  auto store = c10::make_intrusive<c10d::HashStore>();
  EXPECT_THAT(WrapC10dProcessGroup({}, store),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("pg")));
}

// Two ranks as threads, each creating its group over one FileStore.
template <typename Fn>
void RunCreatedThreads(absl::string_view name, Fn fn) {
  const std::string path = FreshStorePath(name);
  RunThreads(2, [&](int rank) {
    C10dOptions options;
    options.rank = rank;
    options.world_size = 2;
    options.file_store_path = path;
    options.timeout = absl::Seconds(60);
    DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<C10dProcessGroup> pg,
                             C10dProcessGroup::Create(options));
    fn(rank, std::move(pg));
  });
}

TEST(C10dProcessGroupThreadsTest, MismatchedCallsFailOnEveryRank) {
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  RunCreatedThreads("mismatch", [&](int rank,
                                    std::unique_ptr<C10dProcessGroup> pg) {
    absl::Status status = rank == 0
                              ? pg->AllGather("a", "x", deadline).status()
                              : pg->Broadcast("a", 0, "y", deadline).status();
    EXPECT_THAT(status,
                StatusIs(absl::StatusCode::kFailedPrecondition,
                         AllOf(HasSubstr("rank 0 calls AllGather(tag=\"a\")"),
                               HasSubstr("rank 1 calls Broadcast(tag=\"a\", "
                                         "root=0)"))));
  });
}

TEST(C10dProcessGroupThreadsTest, BadRootFailsLocallyAndAbortsTheOthers) {
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  RunCreatedThreads(
      "bad_root", [&](int rank, std::unique_ptr<C10dProcessGroup> pg) {
        if (rank == 0) {
          EXPECT_THAT(
              pg->Scatter("s", 0, {"only one"}, deadline),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("the root passed 1 payloads for 2 ranks")));
        } else {
          // Waits in phase 1 for rank 0, which never joins: the failure report
          // ends the wait long before the deadline.
          EXPECT_THAT(
              pg->Scatter("s", 0, {}, deadline),
              StatusIs(absl::StatusCode::kAborted,
                       AllOf(HasSubstr("Scatter(tag=\"s\", root=0) call #0"),
                             HasSubstr("rank 0 failed"),
                             HasSubstr("INVALID_ARGUMENT"))));
        }
      });
}

TEST(C10dProcessGroupThreadsTest, DeadlineEndsTheGlooOperationToo) {
  // Rank 0 times out in a Barrier rank 1 never joins, then destroys its
  // group while rank 1 still holds its own open: destruction must not wait
  // for rank 1 (Gloo's timeout ended the abandoned operation).
  std::mutex mu;
  std::condition_variable cv;
  bool rank0_destroyed = false;
  bool rank1_saw_it = false;
  RunCreatedThreads("deadline", [&](int rank,
                                    std::unique_ptr<C10dProcessGroup> pg) {
    if (rank == 0) {
      EXPECT_THAT(pg->Barrier("lonely", absl::Now() + absl::Seconds(1)),
                  StatusIs(absl::StatusCode::kDeadlineExceeded,
                           AllOf(HasSubstr("Barrier(tag=\"lonely\") call #0"),
                                 HasSubstr("rank 1 did not arrive"))));
      pg.reset();
      std::lock_guard<std::mutex> lock(mu);
      rank0_destroyed = true;
      cv.notify_all();
    } else {
      std::unique_lock<std::mutex> lock(mu);
      rank1_saw_it = cv.wait_for(lock, std::chrono::seconds(60),
                                 [&] { return rank0_destroyed; });
    }
  });
  EXPECT_TRUE(rank1_saw_it) << "rank 0's destructor waited for rank 1 to leave";
}

// ---- worker processes ------------------------------------------------------

struct WorldParam {
  std::string name;
  int world_size;
  MultiprocessOptions::Rendezvous rendezvous;
};

class C10dWorldTest : public ::testing::TestWithParam<WorldParam> {};

TEST_P(C10dWorldTest, EveryCollectiveWithPayloadsOfEverySize) {
  MultiprocessOptions options;
  options.world_size = GetParam().world_size;
  options.rendezvous = GetParam().rendezvous;
  DCP_ASSERT_OK_AND_ASSIGN(
      std::vector<WorkerResult> workers,
      RunWorkers(options, [&](const WorkerContext& worker) {
        DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<C10dProcessGroup> pg,
                                 C10dProcessGroup::CreateFromEnv());
        EXPECT_EQ(pg->rank(), worker.rank);
        EXPECT_EQ(pg->size(), worker.world_size);
        ExerciseEveryCollective(*pg, worker.deadline);
      }));
  EXPECT_THAT(workers, Each(ExitedWithCode(0)));
}

INSTANTIATE_TEST_SUITE_P(
    Worlds, C10dWorldTest,
    ::testing::Values(WorldParam{"FileStore2", 2,
                                 MultiprocessOptions::Rendezvous::kFileStore},
                      WorldParam{"FileStore4", 4,
                                 MultiprocessOptions::Rendezvous::kFileStore},
                      WorldParam{"TcpStore2", 2,
                                 MultiprocessOptions::Rendezvous::kTcpStore}),
    [](const ::testing::TestParamInfo<WorldParam>& info) {
      return info.param.name;
    });

TEST(C10dProcessGroupProcessTest, ForkIsIndependentOfItsParent) {
  MultiprocessOptions options;
  options.world_size = 2;
  DCP_ASSERT_OK_AND_ASSIGN(
      std::vector<WorkerResult> workers,
      RunWorkers(options, [&](const WorkerContext& worker) {
        DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<C10dProcessGroup> pg,
                                 C10dProcessGroup::CreateFromEnv());
        const absl::Time deadline = worker.deadline;
        DCP_ASSERT_OK_AND_ASSIGN(std::shared_ptr<ProcessGroup> fork,
                                 pg->Fork("background", deadline));
        constexpr int kRounds = 20;
        // The fork's collectives run on another thread, interleaved with
        // the parent's in no particular order; each must see only its own.
        std::vector<absl::StatusOr<std::vector<std::string>>> fork_results;
        std::thread background([&] {
          for (int i = 0; i < kRounds; ++i) {
            fork_results.push_back(fork->AllGather(
                "bg", absl::StrCat("fork ", worker.rank, " #", i), deadline));
          }
        });
        for (int i = 0; i < kRounds; ++i) {
          EXPECT_THAT(
              pg->AllGather("fg",
                            absl::StrCat("parent ", worker.rank, " #", i,
                                         std::string(i * 1000, 'p')),
                            deadline),
              IsOkAndHolds(std::vector<std::string>{
                  absl::StrCat("parent 0 #", i, std::string(i * 1000, 'p')),
                  absl::StrCat("parent 1 #", i, std::string(i * 1000, 'p'))}));
        }
        background.join();
        ASSERT_THAT(fork_results, SizeIs(kRounds));
        for (int i = 0; i < kRounds; ++i) {
          EXPECT_THAT(fork_results[i], IsOkAndHolds(std::vector<std::string>{
                                           absl::StrCat("fork 0 #", i),
                                           absl::StrCat("fork 1 #", i)}));
        }
        // Forks of forks, and a second fork of the parent.
        DCP_ASSERT_OK_AND_ASSIGN(std::shared_ptr<ProcessGroup> nested,
                                 fork->Fork("nested", deadline));
        DCP_ASSERT_OK_AND_ASSIGN(std::shared_ptr<ProcessGroup> second,
                                 pg->Fork("second", deadline));
        EXPECT_THAT(nested->Broadcast("n", 1, "from 1", deadline),
                    IsOkAndHolds(std::string("from 1")));
        EXPECT_THAT(second->Broadcast("s", 0, "from 0", deadline),
                    IsOkAndHolds(std::string("from 0")));
      }));
  EXPECT_THAT(workers, Each(ExitedWithCode(0)));
}

TEST(C10dProcessGroupProcessTest, DeadlineExceededWhenARankNeverCalls) {
  MultiprocessOptions options;
  options.world_size = 2;
  DCP_ASSERT_OK_AND_ASSIGN(
      std::vector<WorkerResult> workers,
      RunWorkers(options, [&](const WorkerContext& worker) {
        DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<C10dProcessGroup> pg,
                                 C10dProcessGroup::CreateFromEnv());
        // Rank 1 waits on a fork until rank 0 has timed out, so it stays
        // alive (and connected) without ever joining rank 0's Barrier.
        DCP_ASSERT_OK_AND_ASSIGN(std::shared_ptr<ProcessGroup> side,
                                 pg->Fork("side", worker.deadline));
        if (worker.rank == 0) {
          absl::Status status =
              pg->Barrier("lonely", absl::Now() + absl::Seconds(2));
          LOG(INFO) << "rank 0: " << status;
          EXPECT_THAT(
              status,
              StatusIs(absl::StatusCode::kDeadlineExceeded,
                       AllOf(HasSubstr("Barrier(tag=\"lonely\") call #1"),
                             HasSubstr("rank 1 did not arrive"))));
          EXPECT_THAT(pg->Barrier("later", worker.deadline),
                      StatusIs(absl::StatusCode::kAborted,
                               HasSubstr("failed earlier")));
        }
        DCP_EXPECT_OK(side->Barrier("release", worker.deadline));
      }));
  EXPECT_THAT(workers, Each(ExitedWithCode(0)));
}

struct VictimParam {
  std::string name;
  int world_size;
  MultiprocessOptions::Rendezvous rendezvous;
  int victim;
};

class C10dLostRankTest : public ::testing::TestWithParam<VictimParam> {};

TEST_P(C10dLostRankTest, SigkilledRankFailsTheOthersPromptly) {
  const VictimParam& param = GetParam();
  MultiprocessOptions options;
  options.world_size = param.world_size;
  options.rendezvous = param.rendezvous;
  options.sigkill_at = {{param.victim, "test.before_gather"}};
  DCP_ASSERT_OK_AND_ASSIGN(
      std::vector<WorkerResult> workers,
      RunWorkers(options, [&](const WorkerContext& worker) {
        DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<C10dProcessGroup> pg,
                                 C10dProcessGroup::CreateFromEnv());
        DCP_ASSERT_OK(pg->AllGather("warmup", "w", worker.deadline).status());
        DCP_ASSERT_OK(
            FaultPoint("test.before_gather"));  // The victim dies here.
        // The deadline is the parent's (two minutes away): failing with
        // Aborted, not DeadlineExceeded, means the loss was noticed early.
        const absl::Time start = absl::Now();
        absl::Status status =
            pg->Gather("after", 0, std::string(1000, 'x'), worker.deadline)
                .status();
        LOG(INFO) << "rank " << worker.rank << " after "
                  << absl::FormatDuration(absl::Now() - start) << ": "
                  << status;
        EXPECT_THAT(
            status,
            StatusIs(absl::StatusCode::kAborted,
                     AllOf(HasSubstr("Gather(tag=\"after\", root=0) call #1"),
                           HasSubstr(absl::StrCat("rank ", param.victim)))));
        EXPECT_THAT(
            pg->Barrier("later", worker.deadline),
            StatusIs(absl::StatusCode::kAborted, HasSubstr("failed earlier")));
      }));
  ASSERT_THAT(workers, SizeIs(param.world_size));
  for (const WorkerResult& w : workers) {
    if (w.rank == param.victim) {
      EXPECT_THAT(w, KilledBySignal(SIGKILL));
    } else {
      EXPECT_THAT(w, ExitedWithCode(0));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Victims, C10dLostRankTest,
    ::testing::Values(
        VictimParam{"ThreeRanksFileStoreRank2", 3,
                    MultiprocessOptions::Rendezvous::kFileStore, 2},
        VictimParam{"FourRanksFileStoreRank0", 4,
                    MultiprocessOptions::Rendezvous::kFileStore, 0},
        VictimParam{"TwoRanksTcpStoreHostRank0", 2,
                    MultiprocessOptions::Rendezvous::kTcpStore, 0}),
    [](const ::testing::TestParamInfo<VictimParam>& info) {
      return info.param.name;
    });

TEST(C10dProcessGroupProcessTest, RankThatExitsFailsTheOthersPromptly) {
  MultiprocessOptions options;
  options.world_size = 2;
  DCP_ASSERT_OK_AND_ASSIGN(
      std::vector<WorkerResult> workers,
      RunWorkers(options, [&](const WorkerContext& worker) {
        DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<C10dProcessGroup> pg,
                                 C10dProcessGroup::CreateFromEnv());
        if (worker.rank == 1) return;  // Leaves: destroys its group, exits.
        absl::Status status =
            pg->AllGather("alone", "x", worker.deadline).status();
        LOG(INFO) << "rank 0: " << status;
        EXPECT_THAT(status,
                    StatusIs(absl::StatusCode::kAborted,
                             AllOf(HasSubstr("AllGather(tag=\"alone\")"),
                                   HasSubstr("rank 1"))));
      }));
  EXPECT_THAT(workers, Each(ExitedWithCode(0)));
}

}  // namespace
}  // namespace dcp
