#include "distributed/fake_process_group.h"

#include <algorithm>
#include <chrono>  // NOLINT(build/c++11): std::condition_variable deadlines.
#include <condition_variable>  // NOLINT(build/c++11)
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>  // NOLINT(build/c++11)
#include <optional>
#include <string>
#include <thread>  // NOLINT(build/c++11)
#include <utility>
#include <vector>

#include "absl/memory/memory.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/scheduling.h"
#include "distributed/process_group.h"
#include "glog/logging.h"

// Implementation notes.
//
// All state lives in one `WorldState` behind one `std::mutex`, with one
// condition variable per rank. std::mutex rather than absl::Mutex on
// purpose: Debian's libabsl is not built with -fsanitize=thread, so TSan
// cannot see absl::Mutex's happens-before edges and would report false
// races on everything it guards; pthread mutexes and condition variables
// are intercepted by TSan. For the same reason no absl::Status object is
// shared between threads: errors are stored as (code, message) and every
// rank gets a freshly built status (absl::Status's reference count is
// decremented inside the uninstrumented library).
namespace dcp::test {
namespace fake_process_group_internal {
namespace {

using Kind = CollectiveKind;

// What a rank asked for; two ranks' calls match iff these are equal.
struct CallInfo {
  Kind kind;
  std::string tag;
  int root;  // -1 for kinds without a root.

  bool operator==(const CallInfo& other) const {
    return kind == other.kind && tag == other.tag && root == other.root;
  }
  bool operator!=(const CallInfo& other) const { return !(*this == other); }

  // `Gather(tag="plan", root=0)`, `AllGather(tag="plan")`.
  std::string Describe() const {
    if (CollectiveHasRoot(kind)) {
      return absl::StrFormat("%s(tag=\"%s\", root=%d)",
                             CollectiveKindName(kind), absl::CEscape(tag),
                             root);
    }
    return absl::StrFormat("%s(tag=\"%s\")", CollectiveKindName(kind),
                           absl::CEscape(tag));
  }
};

// An error that can cross threads: every reader builds its own status.
struct Error {
  absl::StatusCode code;
  std::string message;

  static Error From(const absl::Status& status) {
    return Error{status.code(), std::string(status.message())};
  }
  absl::Status ToStatus() const { return absl::Status(code, message); }
  // "INTERNAL: disk on fire", like absl::Status::ToString() without payloads.
  std::string ToString() const {
    return absl::StrCat(absl::StatusCodeToString(code), ": ", message);
  }
};

std::chrono::system_clock::time_point ChronoDeadline(absl::Time deadline) {
  // Clamp: std::condition_variable overflows on time_point::max(), and a
  // deadline a year out is as good as none for a test.
  const absl::Time now = absl::Now();
  deadline = std::max(deadline, now);
  deadline = std::min(deadline, now + absl::Hours(24 * 365));
  return absl::ToChronoTime(deadline);
}

std::string RankList(const std::vector<int>& ranks) {
  return absl::StrCat(ranks.size() == 1 ? "rank " : "ranks ",
                      absl::StrJoin(ranks, ", "));
}

}  // namespace

struct Result {
  std::string bytes;               // Broadcast, Scatter.
  std::vector<std::string> list;   // Gather (root), AllGather.
  int child_communicator = -1;     // Fork.
};

struct Collective {
  Collective(int communicator, int64_t seq, int world_size)
      : communicator(communicator),
        seq(seq),
        calls(world_size),
        joined(world_size, false),
        payloads(world_size),
        results(world_size) {}

  const int communicator;
  const int64_t seq;
  // What each rank called here, once it has called (joined or not).
  std::vector<std::optional<CallInfo>> calls;
  // Whether each rank joined the rendezvous (called and did not fail
  // locally).
  std::vector<bool> joined;
  int joined_count = 0;
  std::vector<std::string> payloads;          // By rank.
  std::vector<std::string> scatter_payloads;  // The root's.
  bool finished = false;
  std::optional<Error> error;  // Set iff finished and failed.
  std::vector<Result> results;  // By rank; valid iff finished and no error.
  int released = 0;  // Ranks that have returned from this call.

  // The call as the lowest rank that made it sees it; for messages.
  const CallInfo& AnyCall() const {
    auto it = std::find_if(calls.begin(), calls.end(),
                           [](const auto& call) { return call.has_value(); });
    CHECK(it != calls.end()) << "collective without calls";
    return **it;
  }
};

struct Communicator {
  Communicator(std::string name, int world_size)
      : name(std::move(name)), next_seq(world_size, 0) {}

  const std::string name;
  // Set when a collective fails: like a real process group after an error,
  // the communicator is unusable from then on. "call #3 failed: ABORTED: .."
  std::optional<std::string> broken;
  std::vector<int64_t> next_seq;  // By rank.
  std::map<int64_t, std::unique_ptr<Collective>> pending;  // By call number.
  std::vector<std::string> transcript;
};

struct RankState {
  bool started = false;
  bool done = false;          // The rank's function has returned.
  bool failed = false;        // Done with a non-OK status.
  std::string done_status;    // "OK" or "INTERNAL: disk on fire".
  int64_t calls = 0;          // Collective calls so far, all communicators.
  int live_threads = 0;       // Deterministic mode: started, not exited,
                              // other than the rank's own thread.
  int threads_started = 0;    // For naming: "r0.1", "r0.2", ...
  std::condition_variable cv;  // Free mode: signalled on every change.
};

// Deterministic mode: one scheduled thread (the rank's own thread, or a
// background thread it started through dcp::ScheduledThread).
struct ThreadState {
  enum class Wake { kNone, kNotified, kTimedOut };

  ThreadState(int64_t id, int rank, std::string name)
      : id(id), rank(rank), name(std::move(name)) {}

  const int64_t id;
  const int rank;
  const std::string name;      // "r0" (the rank's thread), "r0.1", ...
  bool arrived = false;        // Called StartRank / StartThread.
  bool exited = false;         // Exited, or its start was cancelled.
  Collective* waiting_on = nullptr;  // In an unfinished collective.
  const void* wait_key = nullptr;    // In a WaitUntil.
  bool wait_timed = false;
  Wake wake = Wake::kNone;
  std::condition_variable cv;  // Signalled on every state change.
};
struct InjectedFault {
  int rank;
  int64_t nth;
  Error error;
};

class WorldState : public ThreadScheduler {
 public:
  WorldState(int world_size, std::optional<uint64_t> seed,
             absl::Duration stall_timeout)
      : world_size_(world_size),
        deterministic_(seed.has_value()),
        stall_timeout_(stall_timeout),
        rng_state_(seed.value_or(0)) {
    ranks_.reserve(world_size);
    for (int r = 0; r < world_size; ++r) {
      ranks_.push_back(std::make_unique<RankState>());
    }
    NewCommunicatorLocked(std::string(FakeWorld::kWorldCommunicator));
  }

  int world_size() const { return world_size_; }
  bool deterministic() const { return deterministic_; }

  absl::StatusOr<Result> Call(int rank, int communicator, CallInfo info,
                              std::string payload,
                              std::vector<std::string> scatter_payloads,
                              absl::Time deadline);

  void FailCollective(int rank, int nth, const absl::Status& status) {
    std::lock_guard<std::mutex> lock(mu_);
    faults_.push_back(InjectedFault{rank, nth, Error::From(status)});
  }

  absl::Status StartRank(int rank, absl::Time deadline);
  void MarkRankDone(int rank, const absl::Status& status);

  // ThreadScheduler (deterministic mode; see core/scheduling.h).
  int64_t RegisterThread(int64_t parent) override;
  void CancelThread(int64_t id) override;
  void StartThread(int64_t id) override;
  void ExitThread(int64_t id) override;
  WaitResult Wait(int64_t self, const void* key, bool timed) override;
  void Notify(const void* key) override;

  void Abort(const absl::Status& why) {
    std::lock_guard<std::mutex> lock(mu_);
    AbortLocked(Error{absl::StatusCode::kAborted,
                      absl::StrCat("world aborted: ", Error::From(why).ToString())});
  }

  std::vector<std::string> Transcript(absl::string_view name) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = communicator_by_name_.find(std::string(name));
    if (it == communicator_by_name_.end()) return {};
    return communicators_[it->second]->transcript;
  }

  std::vector<std::string> Communicators() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::string> names;
    for (const auto& [name, id] : communicator_by_name_) names.push_back(name);
    return names;  // std::map: sorted.
  }

  bool AwaitStartedThreads(absl::Time deadline) {
    Lock lock(mu_);
    auto all_exited = [&] {
      for (const auto& r : ranks_) {
        if (r->live_threads > 0) return false;
      }
      return true;
    };
    // Every change of live_threads notifies the threads' and ranks' cvs;
    // rank 0's is as good as any for this (never a rank's turn wait).
    return ranks_[0]->cv.wait_until(lock, ChronoDeadline(deadline),
                                    all_exited);
  }

  std::vector<std::string> ScheduleTrace() const {
    std::lock_guard<std::mutex> lock(mu_);
    return trace_;
  }

 private:
  using Lock = std::unique_lock<std::mutex>;

  int NewCommunicatorLocked(std::string name) {
    const int id = static_cast<int>(communicators_.size());
    communicator_by_name_[name] = id;
    communicators_.push_back(
        std::make_unique<Communicator>(std::move(name), world_size_));
    return id;
  }

  // "call #3" or "call #3 on communicator "world/bg#0"".
  std::string CallAt(const Collective& c) const {
    const Communicator& comm = *communicators_[c.communicator];
    if (comm.name == FakeWorld::kWorldCommunicator) {
      return absl::StrCat("call #", c.seq);
    }
    return absl::StrFormat("call #%d on communicator \"%s\"", c.seq,
                           absl::CEscape(comm.name));
  }
  std::string Describe(const Collective& c) const {
    return absl::StrCat(CallAt(c), " ", c.AnyCall().Describe());
  }

  // Finishes `c` with `error` unless it has finished already.
  // The communicator is broken from then on.
  void FailLocked(Collective& c, Error error) {
    if (c.finished) return;
    c.finished = true;
    Communicator& comm = *communicators_[c.communicator];
    if (!comm.broken.has_value()) {
      comm.broken =
          absl::StrCat("call #", c.seq, " failed: ", error.ToString());
    }
    c.error = std::move(error);
  }

  // Whether `rank` will make no more calls: its function returned and every
  // thread it started has exited.
  bool DepartedLocked(int rank) const {
    const RankState& r = *ranks_[rank];
    return r.done && r.live_threads == 0;
  }

  // Fails every call that departed `rank` has not joined.
  void FailCallsOfDepartedLocked(int rank) {
    for (auto& comm : communicators_) {
      for (auto& [seq, c] : comm->pending) {
        if (!c->finished && !c->joined[rank]) {
          FailLocked(*c, DepartedError(rank, *c));
        }
      }
    }
  }

  // Why `c` cannot complete without done rank `rank`.
  Error DepartedError(int rank, const Collective& c) const {
    const RankState& r = *ranks_[rank];
    if (r.failed) {
      return Error{absl::StatusCode::kAborted,
                   absl::StrFormat("rank %d failed: %s (before joining %s)",
                                   rank, r.done_status, Describe(c))};
    }
    return Error{absl::StatusCode::kAborted,
                 absl::StrFormat("rank %d exited before joining %s", rank,
                                 Describe(c))};
  }

  // The error of `rank`'s call if it fails locally (injected fault or bad
  // arguments), without joining.
  std::optional<Error> LocalFailureLocked(int rank, int64_t call_number,
                                          const CallInfo& info,
                                          size_t scatter_payload_count) const {
    for (const InjectedFault& fault : faults_) {
      if (fault.rank == rank && fault.nth == call_number) return fault.error;
    }
    if (CollectiveHasRoot(info.kind) &&
        (info.root < 0 || info.root >= world_size_)) {
      return Error{absl::StatusCode::kInvalidArgument,
                   absl::StrFormat("%s: root %d is out of range for a world "
                                   "of size %d",
                                   info.Describe(), info.root, world_size_)};
    }
    if (info.kind == Kind::kScatter && rank == info.root &&
        scatter_payload_count != static_cast<size_t>(world_size_)) {
      return Error{absl::StatusCode::kInvalidArgument,
                   absl::StrFormat("%s: root %d passed %d payloads for a world "
                                   "of size %d",
                                   info.Describe(), rank, scatter_payload_count,
                                   world_size_)};
    }
    return std::nullopt;
  }

  Collective& GetOrCreateLocked(Communicator& comm, int communicator,
                                int64_t seq) {
    std::unique_ptr<Collective>& slot = comm.pending[seq];
    if (slot == nullptr) {
      slot = std::make_unique<Collective>(communicator, seq, world_size_);
    }
    return *slot;
  }

  // `rank` joins `c` with `info`; fails or completes `c` as needed.
  void JoinLocked(int rank, Collective& c, const CallInfo& info,
                  std::string payload,
                  std::vector<std::string> scatter_payloads) {
    c.calls[rank] = info;
    if (c.finished) return;  // Failed before this rank came.
    // Done ranks that never joined: prefer one that failed, lowest rank.
    int departed = -1;
    for (int r = 0; r < world_size_; ++r) {
      if (r == rank || c.joined[r] || !DepartedLocked(r)) continue;
      if (departed == -1 || (ranks_[r]->failed && !ranks_[departed]->failed)) {
        departed = r;
      }
    }
    if (departed != -1) {
      FailLocked(c, DepartedError(departed, c));
      return;
    }
    for (int r = 0; r < world_size_; ++r) {
      if (r == rank || !c.joined[r] || *c.calls[r] == info) continue;
      const int low = std::min(r, rank);
      const int high = std::max(r, rank);
      FailLocked(c, Error{absl::StatusCode::kFailedPrecondition,
                          absl::StrFormat("collective mismatch at %s: rank %d "
                                          "%s vs rank %d %s",
                                          CallAt(c), low,
                                          c.calls[low]->Describe(), high,
                                          c.calls[high]->Describe())});
      return;
    }
    c.joined[rank] = true;
    ++c.joined_count;
    c.payloads[rank] = std::move(payload);
    if (info.kind == Kind::kScatter && rank == info.root) {
      c.scatter_payloads = std::move(scatter_payloads);
    }
    if (c.joined_count == world_size_) CompleteLocked(c);
  }

  // Computes every rank's result from the inputs indexed by rank.
  void CompleteLocked(Collective& c) {
    const CallInfo& info = *c.calls[0];
    Communicator& comm = *communicators_[c.communicator];
    switch (info.kind) {
      case Kind::kBarrier:
        break;
      case Kind::kBroadcast:
        for (int r = 0; r < world_size_; ++r) {
          c.results[r].bytes = c.payloads[info.root];
        }
        break;
      case Kind::kGather:
        c.results[info.root].list = std::move(c.payloads);
        break;
      case Kind::kScatter:
        for (int r = 0; r < world_size_; ++r) {
          c.results[r].bytes = std::move(c.scatter_payloads[r]);
        }
        break;
      case Kind::kAllGather:
        for (int r = 0; r < world_size_; ++r) c.results[r].list = c.payloads;
        break;
      case Kind::kFork: {
        const int child = NewCommunicatorLocked(
            absl::StrCat(comm.name, "/", info.tag, "#", c.seq));
        for (int r = 0; r < world_size_; ++r) {
          c.results[r].child_communicator = child;
        }
        break;
      }
    }
    c.payloads.clear();
    c.scatter_payloads.clear();
    c.finished = true;
    comm.transcript.push_back(
        absl::StrCat(CollectiveKindName(info.kind), ":", info.tag));
  }

  // `rank` leaves `c` with its result or error.
  absl::StatusOr<Result> ReleaseLocked(int rank, Collective& c) {
    absl::StatusOr<Result> result =
        c.error.has_value() ? absl::StatusOr<Result>(c.error->ToStatus())
                            : absl::StatusOr<Result>(std::move(c.results[rank]));
    if (++c.released == world_size_) {
      communicators_[c.communicator]->pending.erase(c.seq);  // Destroys c.
    }
    return result;
  }

  void NotifyAllLocked() {
    for (auto& r : ranks_) r->cv.notify_all();
    for (auto& [id, t] : threads_) t->cv.notify_all();
  }

  void AbortLocked(Error error) {
    if (abort_.has_value()) return;
    abort_ = std::move(error);
    token_ = -1;
    NotifyAllLocked();
  }

  uint64_t NextRandomLocked() {  // splitmix64.
    uint64_t z = (rng_state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

  ThreadState& ThreadLocked(int64_t id) {
    auto it = threads_.find(id);
    CHECK(it != threads_.end()) << "FakeWorld: unknown scheduled thread " << id;
    return *it->second;
  }

  // The calling thread's scheduled state in this world, or nullptr.
  ThreadState* CallingThreadLocked() {
    const ScheduledContext context = CurrentScheduledContext();
    if (context.scheduler != this) return nullptr;
    auto it = threads_.find(context.id);
    return it == threads_.end() ? nullptr : it->second.get();
  }

  static bool RunnableLocked(const ThreadState& t) {
    return t.arrived && !t.exited &&
           (t.waiting_on == nullptr || t.waiting_on->finished) &&
           (t.wait_key == nullptr || t.wake != ThreadState::Wake::kNone);
  }

  // "r1 waits in call #3 Gather(...)", "r0.1 waits for another thread".
  std::string DescribeWaitLocked(const ThreadState& t) const {
    if (t.waiting_on != nullptr) {
      return absl::StrCat(t.name, " waits in ", Describe(*t.waiting_on));
    }
    return absl::StrCat(t.name, " waits for another thread");
  }

  // Deterministic mode: hands the turn to a runnable thread drawn by the
  // PRNG. Call only when nobody has the turn. When no thread can run:
  // collectives that threads wait in fail ("deadlock"); failing that, timed
  // waits time out; failing that, the world is aborted.
  void ScheduleNextLocked() {
    if (!deterministic_ || abort_.has_value()) return;
    for (const auto& r : ranks_) {
      if (!r->started && !r->done) return;  // Not everyone is here yet.
    }
    std::vector<ThreadState*> runnable;
    std::vector<ThreadState*> in_collectives;
    std::vector<ThreadState*> timed_waits;
    std::vector<ThreadState*> waits;
    for (auto& [id, t] : threads_) {
      if (t->exited) continue;
      if (!t->arrived) return;  // A new thread has not reached StartThread.
      if (RunnableLocked(*t)) {
        runnable.push_back(t.get());
      } else if (t->waiting_on != nullptr) {
        in_collectives.push_back(t.get());
      } else if (t->wait_timed) {
        timed_waits.push_back(t.get());
      } else {
        waits.push_back(t.get());
      }
    }
    if (runnable.empty()) {
      if (!in_collectives.empty()) {
        std::vector<std::string> descriptions;
        for (ThreadState* t : in_collectives) {
          descriptions.push_back(DescribeWaitLocked(*t));
        }
        for (ThreadState* t : waits) {
          descriptions.push_back(DescribeWaitLocked(*t));
        }
        const std::string message =
            absl::StrCat("deadlock: no thread can run; ",
                         absl::StrJoin(descriptions, "; "));
        for (ThreadState* t : in_collectives) {
          FailLocked(*t->waiting_on,
                     Error{absl::StatusCode::kFailedPrecondition, message});
          runnable.push_back(t);
        }
      } else if (!timed_waits.empty()) {
        for (ThreadState* t : timed_waits) {
          t->wake = ThreadState::Wake::kTimedOut;
          runnable.push_back(t);
        }
      } else if (!waits.empty()) {
        std::vector<std::string> descriptions;
        for (ThreadState* t : waits) {
          descriptions.push_back(DescribeWaitLocked(*t));
        }
        const std::string message =
            absl::StrCat("deadlock: no thread can run; ",
                         absl::StrJoin(descriptions, "; "));
        LOG(ERROR) << "FakeWorld: " << message;
        AbortLocked(Error{absl::StatusCode::kFailedPrecondition, message});
        return;
      } else {  // Everyone has exited.
        token_ = -1;
        return;
      }
    }
    ThreadState* next = runnable[NextRandomLocked() % runnable.size()];
    token_ = next->id;
    next->cv.notify_all();
  }

  // Deterministic mode: gives up the calling thread's turn and schedules
  // the next thread.
  void YieldLocked() {
    token_ = -1;
    ScheduleNextLocked();
  }

  // Deterministic mode: waits until thread `t` has the turn. On timeout the
  // schedule is broken for good, so the world is aborted.
  absl::Status AwaitTurnLocked(Lock& lock, ThreadState& t, absl::Time deadline,
                               absl::string_view waiting_for) {
    const bool got_turn =
        t.cv.wait_until(lock, ChronoDeadline(deadline), [&] {
          return token_ == t.id || abort_.has_value();
        });
    if (abort_.has_value()) return abort_->ToStatus();
    if (!got_turn) {
      auto holder = threads_.find(token_);
      AbortLocked(Error{
          absl::StatusCode::kDeadlineExceeded,
          absl::StrFormat("deterministic schedule stalled: %s waited past its "
                          "deadline for %s while %s had the turn (blocked "
                          "outside a collective or WaitUntil?)",
                          t.name, waiting_for,
                          holder == threads_.end() ? std::string("no thread")
                                                   : holder->second->name)});
      return abort_->ToStatus();
    }
    return absl::OkStatus();
  }

  // A new scheduled thread of `rank`: its own thread (`index` 0) or the
  // index-th thread it started. Ids order threads by (rank, index), so
  // schedules do not depend on which OS thread arrived first.
  ThreadState& NewThreadLocked(int rank, int index) {
    const int64_t id = (static_cast<int64_t>(rank) << 32) | index;
    std::string name = index == 0 ? absl::StrCat("r", rank)
                                  : absl::StrCat("r", rank, ".", index);
    auto state = std::make_unique<ThreadState>(id, rank, std::move(name));
    ThreadState& t = *state;
    threads_.emplace(id, std::move(state));
    return t;
  }

  // `t` (not a rank's own thread) is gone.
  void ThreadGoneLocked(ThreadState& t) {
    t.exited = true;
    RankState& rank = *ranks_[t.rank];
    --rank.live_threads;
    if (DepartedLocked(t.rank)) FailCallsOfDepartedLocked(t.rank);
  }

  void TraceLocked(std::string entry) {
    if (deterministic_) trace_.push_back(std::move(entry));
  }

  const int world_size_;
  const bool deterministic_;
  const absl::Duration stall_timeout_;

  mutable std::mutex mu_;
  uint64_t rng_state_;  // Guarded by mu_.
  // Guarded by mu_; entries are never removed, so references stay valid.
  std::vector<std::unique_ptr<Communicator>> communicators_;
  std::map<std::string, int> communicator_by_name_;  // Guarded by mu_.
  std::vector<std::unique_ptr<RankState>> ranks_;    // Guarded by mu_.
  std::vector<InjectedFault> faults_;                // Guarded by mu_.
  std::optional<Error> abort_;                       // Guarded by mu_.
  // Deterministic mode: every scheduled thread by id, and the one that may
  // run (-1: none). Guarded by mu_.
  std::map<int64_t, std::unique_ptr<ThreadState>> threads_;
  std::map<int, int64_t> rank_threads_;  // A rank's own thread.
  int64_t token_ = -1;
  std::vector<std::string> trace_;  // Guarded by mu_.
};

absl::StatusOr<Result> WorldState::Call(
    int rank, int communicator, CallInfo info, std::string payload,
    std::vector<std::string> scatter_payloads, absl::Time deadline) {
  Lock lock(mu_);
  if (abort_.has_value()) return abort_->ToStatus();
  RankState& me = *ranks_[rank];
  Communicator& comm = *communicators_[communicator];
  ThreadState* self = nullptr;
  if (deterministic_) {
    if (!me.started) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "deterministic FakeWorld: rank %d called %s before StartRank", rank,
          info.Describe()));
    }
    self = CallingThreadLocked();
    if (self == nullptr || self->rank != rank) {
      return absl::UnimplementedError(absl::StrFormat(
          "deterministic FakeWorld: rank %d called %s on communicator \"%s\" "
          "from a thread that the schedule does not run; start background "
          "threads with dcp::ScheduledThread (core/scheduling.h) from "
          "the rank's thread",
          rank, info.Describe(), absl::CEscape(comm.name)));
    }
    DCHECK_EQ(token_, self->id) << self->name << " runs without the turn";
  }
  const int64_t seq = comm.next_seq[rank]++;
  const int64_t call_number = ++me.calls;
  TraceLocked(
      absl::StrCat(self != nullptr ? self->name : absl::StrCat("r", rank), " ",
                   CollectiveKindName(info.kind), "(", info.tag, ")#", seq,
                   comm.name == FakeWorld::kWorldCommunicator
                       ? ""
                       : absl::StrCat(" on ", comm.name)));
  if (comm.broken.has_value() && comm.pending.count(seq) == 0) {
    // A later call on a communicator that failed: unusable, as a real
    // process group is after an error. (Ranks still arriving at the failed
    // call itself get its error below.)
    return absl::AbortedError(absl::StrFormat(
        "call #%d %s on communicator \"%s\": the communicator failed "
        "earlier (%s)",
        seq, info.Describe(), absl::CEscape(comm.name), *comm.broken));
  }

  Collective& c = GetOrCreateLocked(comm, communicator, seq);
  std::optional<Error> local =
      LocalFailureLocked(rank, call_number, info, scatter_payloads.size());
  if (local.has_value()) {
    c.calls[rank] = info;
    FailLocked(c, Error{absl::StatusCode::kAborted,
                        absl::StrFormat("rank %d failed: %s (at %s %s)", rank,
                                        local->ToString(), CallAt(c),
                                        info.Describe())});
  } else {
    JoinLocked(rank, c, info, std::move(payload), std::move(scatter_payloads));
  }
  NotifyAllLocked();

  if (deterministic_) {
    // A collective call ends the turn, whatever its outcome.
    self->waiting_on = &c;
    YieldLocked();
    absl::Status turn = AwaitTurnLocked(lock, *self, deadline,
                                        absl::StrCat("its turn after ",
                                                     CallAt(c)));
    self->waiting_on = nullptr;
    if (!turn.ok() && !c.finished) return turn;
    DCHECK(c.finished);
  } else {
    me.cv.wait_until(lock, ChronoDeadline(deadline),
                     [&] { return c.finished || abort_.has_value(); });
    if (!c.finished) {
      if (abort_.has_value()) return abort_->ToStatus();
      std::vector<int> missing;
      for (int r = 0; r < world_size_; ++r) {
        if (!c.joined[r]) missing.push_back(r);
      }
      FailLocked(c, Error{absl::StatusCode::kDeadlineExceeded,
                          absl::StrFormat("%s timed out: %s did not arrive",
                                          Describe(c), RankList(missing))});
      NotifyAllLocked();
    }
  }
  if (local.has_value()) {
    ReleaseLocked(rank, c).IgnoreError();  // The others' view of the call.
    return local->ToStatus();
  }
  return ReleaseLocked(rank, c);
}

absl::Status WorldState::StartRank(int rank, absl::Time deadline) {
  Lock lock(mu_);
  RankState& me = *ranks_[rank];
  if (me.started) {
    return absl::FailedPreconditionError(
        absl::StrFormat("FakeWorld: rank %d started twice", rank));
  }
  me.started = true;
  if (!deterministic_) return absl::OkStatus();
  ThreadState& t = NewThreadLocked(rank, /*index=*/0);
  t.arrived = true;
  rank_threads_[rank] = t.id;
  // Threads the rank starts (dcp::ScheduledThread) join the schedule.
  SetScheduledContext({this, t.id});
  if (abort_.has_value()) return abort_->ToStatus();
  if (token_ == -1) ScheduleNextLocked();
  absl::Status turn = AwaitTurnLocked(lock, t, deadline, "its first turn");
  if (turn.ok()) TraceLocked(absl::StrCat(t.name, " start"));
  return turn;
}

void WorldState::MarkRankDone(int rank, const absl::Status& status) {
  Lock lock(mu_);
  RankState& me = *ranks_[rank];
  if (me.done) return;
  me.done = true;
  me.failed = !status.ok();
  me.done_status = status.ok() ? "OK" : Error::From(status).ToString();
  int64_t rank_thread = -1;
  if (auto it = rank_threads_.find(rank); it != rank_threads_.end()) {
    rank_thread = it->second;
    ThreadLocked(rank_thread).exited = true;
    const ScheduledContext context = CurrentScheduledContext();
    if (context.scheduler == this && context.id == rank_thread) {
      SetScheduledContext({});
    }
  }
  if (!abort_.has_value()) {
    TraceLocked(absl::StrCat("r", rank, " exit ", me.done_status));
  }
  if (DepartedLocked(rank)) FailCallsOfDepartedLocked(rank);
  if (deterministic_ && (token_ == -1 || token_ == rank_thread)) {
    YieldLocked();
  }
  NotifyAllLocked();
}

int64_t WorldState::RegisterThread(int64_t parent) {
  Lock lock(mu_);
  const ThreadState& p = ThreadLocked(parent);
  RankState& rank = *ranks_[p.rank];
  ++rank.live_threads;
  return NewThreadLocked(p.rank, ++rank.threads_started).id;
}

void WorldState::CancelThread(int64_t id) {
  Lock lock(mu_);
  ThreadGoneLocked(ThreadLocked(id));
  if (token_ == -1) ScheduleNextLocked();  // It may have been awaited.
  NotifyAllLocked();
}

void WorldState::StartThread(int64_t id) {
  Lock lock(mu_);
  ThreadState& t = ThreadLocked(id);
  t.arrived = true;
  if (abort_.has_value()) return;
  if (token_ == -1) ScheduleNextLocked();
  absl::Status turn = AwaitTurnLocked(lock, t, absl::Now() + stall_timeout_,
                                      "its first turn");
  if (turn.ok()) TraceLocked(absl::StrCat(t.name, " start"));
}

void WorldState::ExitThread(int64_t id) {
  Lock lock(mu_);
  ThreadState& t = ThreadLocked(id);
  if (!abort_.has_value()) TraceLocked(absl::StrCat(t.name, " exit"));
  ThreadGoneLocked(t);
  if (token_ == -1 || token_ == id) YieldLocked();
  NotifyAllLocked();
}

ThreadScheduler::WaitResult WorldState::Wait(int64_t self, const void* key,
                                             bool timed) {
  Lock lock(mu_);
  if (abort_.has_value()) return WaitResult::kUnscheduled;
  ThreadState& t = ThreadLocked(self);
  DCHECK_EQ(token_, t.id) << t.name << " waits without the turn";
  t.wait_key = key;
  t.wait_timed = timed;
  t.wake = ThreadState::Wake::kNone;
  TraceLocked(absl::StrCat(t.name, " wait"));
  YieldLocked();
  // No deadline: the thread that will notify may legitimately work for
  // long; a stalled schedule shows up in collectives' deadlines.
  absl::Status turn = AwaitTurnLocked(lock, t, absl::InfiniteFuture(),
                                      "a notification and its turn");
  const ThreadState::Wake wake = t.wake;
  t.wait_key = nullptr;
  t.wait_timed = false;
  t.wake = ThreadState::Wake::kNone;
  if (!turn.ok()) return WaitResult::kUnscheduled;
  return wake == ThreadState::Wake::kTimedOut ? WaitResult::kTimedOut
                                              : WaitResult::kNotified;
}

void WorldState::Notify(const void* key) {
  Lock lock(mu_);
  for (auto& [id, t] : threads_) {
    if (!t->exited && t->wait_key == key &&
        t->wake == ThreadState::Wake::kNone) {
      t->wake = ThreadState::Wake::kNotified;
    }
  }
}

namespace {

// One rank's handle on one communicator.
class FakeProcessGroup : public ProcessGroup {
 public:
  FakeProcessGroup(std::shared_ptr<WorldState> world, int rank,
                   int communicator)
      : world_(std::move(world)), rank_(rank), communicator_(communicator) {}

  int rank() const override { return rank_; }
  int size() const override { return world_->world_size(); }

  absl::Status Barrier(absl::string_view tag, absl::Time deadline) override {
    return Call(Kind::kBarrier, tag, -1, "", {}, deadline).status();
  }

  absl::StatusOr<std::string> Broadcast(absl::string_view tag, int root,
                                        std::string payload,
                                        absl::Time deadline) override {
    absl::StatusOr<Result> result =
        Call(Kind::kBroadcast, tag, root, std::move(payload), {}, deadline);
    if (!result.ok()) return result.status();
    return std::move(result->bytes);
  }

  absl::StatusOr<std::vector<std::string>> Gather(
      absl::string_view tag, int root, std::string payload,
      absl::Time deadline) override {
    absl::StatusOr<Result> result =
        Call(Kind::kGather, tag, root, std::move(payload), {}, deadline);
    if (!result.ok()) return result.status();
    return std::move(result->list);
  }

  absl::StatusOr<std::string> Scatter(absl::string_view tag, int root,
                                      std::vector<std::string> payloads,
                                      absl::Time deadline) override {
    absl::StatusOr<Result> result =
        Call(Kind::kScatter, tag, root, "", std::move(payloads), deadline);
    if (!result.ok()) return result.status();
    return std::move(result->bytes);
  }

  absl::StatusOr<std::vector<std::string>> AllGather(
      absl::string_view tag, std::string payload,
      absl::Time deadline) override {
    absl::StatusOr<Result> result =
        Call(Kind::kAllGather, tag, -1, std::move(payload), {}, deadline);
    if (!result.ok()) return result.status();
    return std::move(result->list);
  }

  absl::StatusOr<std::shared_ptr<ProcessGroup>> Fork(
      absl::string_view tag, absl::Time deadline) override {
    absl::StatusOr<Result> result =
        Call(Kind::kFork, tag, -1, "", {}, deadline);
    if (!result.ok()) return result.status();
    return std::shared_ptr<ProcessGroup>(std::make_shared<FakeProcessGroup>(
        world_, rank_, result->child_communicator));
  }

 private:
  absl::StatusOr<Result> Call(Kind kind, absl::string_view tag, int root,
                              std::string payload,
                              std::vector<std::string> scatter_payloads,
                              absl::Time deadline) {
    return world_->Call(rank_, communicator_,
                        CallInfo{kind, std::string(tag), root},
                        std::move(payload), std::move(scatter_payloads),
                        deadline);
  }

  const std::shared_ptr<WorldState> world_;
  const int rank_;
  const int communicator_;
};

}  // namespace
}  // namespace fake_process_group_internal

using fake_process_group_internal::WorldState;

absl::StatusOr<std::unique_ptr<FakeWorld>> FakeWorld::Create(
    FakeWorldOptions options) {
  if (options.world_size < 1 || options.world_size > kMaxWorldSize) {
    return absl::InvalidArgumentError(
        absl::StrFormat("FakeWorld: world_size %d is not in [1, %d]",
                        options.world_size, kMaxWorldSize));
  }
  if (options.stall_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("FakeWorld: stall_timeout %s is not positive",
                        absl::FormatDuration(options.stall_timeout)));
  }
  return absl::WrapUnique(new FakeWorld(std::make_shared<WorldState>(
      options.world_size, options.schedule_seed, options.stall_timeout)));
}

FakeWorld::FakeWorld(std::shared_ptr<WorldState> state)
    : state_(std::move(state)) {}

FakeWorld::~FakeWorld() {
  state_->Abort(absl::CancelledError("FakeWorld destroyed"));
}

int FakeWorld::world_size() const { return state_->world_size(); }

bool FakeWorld::deterministic() const { return state_->deterministic(); }

std::shared_ptr<ProcessGroup> FakeWorld::Rank(int rank) {
  CHECK(rank >= 0 && rank < world_size())
      << "FakeWorld::Rank(" << rank << ") for a world of size "
      << world_size();
  return std::make_shared<fake_process_group_internal::FakeProcessGroup>(
      state_, rank, /*communicator=*/0);
}

void FakeWorld::FailCollective(int rank, int nth, absl::Status status) {
  CHECK(rank >= 0 && rank < world_size())
      << "FakeWorld::FailCollective: rank " << rank << " out of range";
  CHECK_GE(nth, 1) << "FakeWorld::FailCollective: nth is 1-based";
  CHECK(!status.ok()) << "FakeWorld::FailCollective needs an error";
  state_->FailCollective(rank, nth, status);
}

absl::Status FakeWorld::StartRank(int rank, absl::Time deadline) {
  CHECK(rank >= 0 && rank < world_size())
      << "FakeWorld::StartRank: rank " << rank << " out of range";
  return state_->StartRank(rank, deadline);
}

void FakeWorld::MarkRankDone(int rank, const absl::Status& status) {
  CHECK(rank >= 0 && rank < world_size())
      << "FakeWorld::MarkRankDone: rank " << rank << " out of range";
  state_->MarkRankDone(rank, status);
}

void FakeWorld::Abort(const absl::Status& why) { state_->Abort(why); }

bool FakeWorld::AwaitStartedThreads(absl::Time deadline) {
  return state_->AwaitStartedThreads(deadline);
}

std::vector<std::string> FakeWorld::Transcript(
    absl::string_view communicator) const {
  return state_->Transcript(communicator);
}

std::vector<std::string> FakeWorld::Communicators() const {
  return state_->Communicators();
}

std::vector<std::string> FakeWorld::ScheduleTrace() const {
  return state_->ScheduleTrace();
}

}  // namespace dcp::test
