#include "distributed/local_process_group.h"

#include <algorithm>
#include <chrono>  // NOLINT(build/c++11): condition_variable deadlines
#include <condition_variable>  // NOLINT(build/c++11)
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>  // NOLINT(build/c++11): Debian's Abseil lacks TSan support
#include <string>
#include <thread>  // NOLINT(build/c++11)
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "core/status.h"
#include "distributed/process_group.h"
#include "glog/logging.h"

namespace dcp {
namespace local_process_group_internal {

constexpr absl::string_view kWorld = "world";

enum class Op { kBarrier, kBroadcast, kGather, kScatter, kAllGather, kFork };

absl::string_view OpName(Op op) {
  switch (op) {
    case Op::kBarrier:
      return "Barrier";
    case Op::kBroadcast:
      return "Broadcast";
    case Op::kGather:
      return "Gather";
    case Op::kScatter:
      return "Scatter";
    case Op::kAllGather:
      return "AllGather";
    case Op::kFork:
      return "Fork";
  }
  return "?";
}

bool HasRoot(Op op) {
  return op == Op::kBroadcast || op == Op::kGather || op == Op::kScatter;
}

// One collective call, call number `number` on one communicator.
struct Call {
  Op op = Op::kBarrier;
  std::string tag;
  int root = 0;
  std::vector<bool> joined;
  int num_joined = 0;
  std::vector<std::string> inputs;     // By rank.
  std::vector<std::string> scattered;  // The root's Scatter payloads.
  bool complete = false;
  absl::Status error;
  int num_collected = 0;  // Ranks that took their result.
};

struct Communicator {
  std::vector<int64_t> next_call;  // By rank.
  std::map<int64_t, Call> calls;
};

struct WorldState {
  explicit WorldState(int size) : size(size), exited(size, false) {}

  const int size;
  std::mutex mu;
  std::condition_variable cv;
  absl::Status aborted;  // Guarded by mu.
  std::vector<bool> exited;  // Guarded by mu.
  std::map<std::string, Communicator> communicators;  // Guarded by mu.

  Communicator& Comm(const std::string& name) {
    Communicator& comm = communicators[name];
    if (comm.next_call.empty()) comm.next_call.assign(size, 0);
    return comm;
  }
};

std::string Describe(const std::string& comm, int64_t number, Op op,
                     absl::string_view tag, int root) {
  std::string out = absl::StrCat("call #", number);
  if (comm != kWorld) absl::StrAppend(&out, " on communicator \"", comm, "\"");
  absl::StrAppend(&out, " ", OpName(op), "(tag=\"", absl::CEscape(tag), "\"");
  if (HasRoot(op)) absl::StrAppend(&out, ", root=", root);
  absl::StrAppend(&out, ")");
  return out;
}

// Whatever a rank gets back from a call.
struct Outcome {
  std::string one;
  std::vector<std::string> all;
  std::shared_ptr<ProcessGroup> fork;
};

class LocalProcessGroup : public ProcessGroup {
 public:
  LocalProcessGroup(std::shared_ptr<WorldState> state, std::string comm,
                    int rank)
      : state_(std::move(state)), comm_(std::move(comm)), rank_(rank) {}

  int rank() const override { return rank_; }
  int size() const override { return state_->size; }

  absl::Status Barrier(absl::string_view tag, absl::Time deadline) override {
    return Run(Op::kBarrier, tag, 0, {}, {}, deadline).status();
  }

  absl::StatusOr<std::string> Broadcast(absl::string_view tag, int root,
                                        std::string payload,
                                        absl::Time deadline) override {
    DCP_ASSIGN_OR_RETURN(
        Outcome out,
        Run(Op::kBroadcast, tag, root, std::move(payload), {}, deadline));
    return std::move(out.one);
  }

  absl::StatusOr<std::vector<std::string>> Gather(
      absl::string_view tag, int root, std::string payload,
      absl::Time deadline) override {
    DCP_ASSIGN_OR_RETURN(
        Outcome out,
        Run(Op::kGather, tag, root, std::move(payload), {}, deadline));
    return std::move(out.all);
  }

  absl::StatusOr<std::string> Scatter(absl::string_view tag, int root,
                                      std::vector<std::string> payloads,
                                      absl::Time deadline) override {
    DCP_ASSIGN_OR_RETURN(
        Outcome out,
        Run(Op::kScatter, tag, root, {}, std::move(payloads), deadline));
    return std::move(out.one);
  }

  absl::StatusOr<std::vector<std::string>> AllGather(
      absl::string_view tag, std::string payload,
      absl::Time deadline) override {
    DCP_ASSIGN_OR_RETURN(
        Outcome out,
        Run(Op::kAllGather, tag, 0, std::move(payload), {}, deadline));
    return std::move(out.all);
  }

  absl::StatusOr<std::shared_ptr<ProcessGroup>> Fork(
      absl::string_view tag, absl::Time deadline) override {
    DCP_ASSIGN_OR_RETURN(Outcome out,
                         Run(Op::kFork, tag, 0, {}, {}, deadline));
    return std::move(out.fork);
  }

 private:
  absl::StatusOr<Outcome> Run(Op op, absl::string_view tag, int root,
                              std::string payload,
                              std::vector<std::string> payloads,
                              absl::Time deadline);

  const std::shared_ptr<WorldState> state_;
  const std::string comm_;
  const int rank_;
};

absl::StatusOr<Outcome> LocalProcessGroup::Run(
    Op op, absl::string_view tag, int root, std::string payload,
    std::vector<std::string> payloads, absl::Time deadline) {
  WorldState& w = *state_;
  std::unique_lock<std::mutex> lock(w.mu);
  if (!w.aborted.ok()) return w.aborted;
  Communicator& comm = w.Comm(comm_);
  const int64_t number = comm.next_call[rank_]++;
  Call& call = comm.calls[number];
  if (call.joined.empty()) {
    call.op = op;
    call.tag = std::string(tag);
    call.root = root;
    call.joined.assign(w.size, false);
    call.inputs.resize(w.size);
  }
  const std::string mine = Describe(comm_, number, op, tag, root);
  if (!call.error.ok()) return call.error;
  if (call.op != op || call.tag != tag || call.root != root) {
    call.error = absl::FailedPreconditionError(absl::StrCat(
        "collective mismatch: rank ", rank_, " ", mine, " vs ",
        Describe(comm_, number, call.op, call.tag, call.root),
        " of the ranks that arrived first"));
    w.cv.notify_all();
    return call.error;
  }
  absl::Status invalid;
  if (HasRoot(op) && (root < 0 || root >= w.size)) {
    invalid = absl::InvalidArgumentError(absl::StrCat(
        mine, ": root ", root, " is out of range for a world of size ",
        w.size));
  } else if (op == Op::kScatter && rank_ == root &&
             payloads.size() != static_cast<size_t>(w.size)) {
    invalid = absl::InvalidArgumentError(
        absl::StrCat(mine, ": the root passed ", payloads.size(),
                     " payloads for a world of size ", w.size));
  }
  if (!invalid.ok()) {
    call.error = absl::AbortedError(
        absl::StrCat("rank ", rank_, " failed: ", invalid.ToString()));
    w.cv.notify_all();
    return invalid;
  }

  call.inputs[rank_] = std::move(payload);
  if (op == Op::kScatter && rank_ == root) call.scattered = std::move(payloads);
  call.joined[rank_] = true;
  if (++call.num_joined == w.size) {
    call.complete = true;
    w.cv.notify_all();
  } else {
    for (int r = 0; r < w.size; ++r) {
      if (w.exited[r] && !call.joined[r]) {
        call.error = absl::AbortedError(
            absl::StrCat("rank ", r, " exited before joining ", mine));
        w.cv.notify_all();
        return call.error;
      }
    }
  }

  const bool infinite = deadline == absl::InfiniteFuture();
  while (!call.complete && call.error.ok() && w.aborted.ok()) {
    if (infinite) {
      w.cv.wait(lock);
      continue;
    }
    if (w.cv.wait_until(lock, absl::ToChronoTime(deadline)) ==
            std::cv_status::timeout &&
        !call.complete && call.error.ok() && w.aborted.ok()) {
      std::vector<int> missing;
      for (int r = 0; r < w.size; ++r) {
        if (!call.joined[r]) missing.push_back(r);
      }
      call.error = absl::DeadlineExceededError(absl::StrCat(
          mine, " timed out: ", missing.size() == 1 ? "rank " : "ranks ",
          absl::StrJoin(missing, ", "), " did not arrive"));
      w.cv.notify_all();
    }
  }
  if (!call.complete) {
    return call.error.ok() ? w.aborted : call.error;
  }

  Outcome out;
  switch (op) {
    case Op::kBarrier:
      break;
    case Op::kBroadcast:
      out.one = call.inputs[root];
      break;
    case Op::kGather:
      if (rank_ == root) out.all = call.inputs;
      break;
    case Op::kAllGather:
      out.all = call.inputs;
      break;
    case Op::kScatter:
      out.one = call.scattered[rank_];
      break;
    case Op::kFork: {
      std::string name = absl::StrCat(comm_, "/", tag, "#", number);
      w.Comm(name);
      out.fork =
          std::make_shared<LocalProcessGroup>(state_, std::move(name), rank_);
      break;
    }
  }
  if (++call.num_collected == w.size) comm.calls.erase(number);
  return out;
}

}  // namespace local_process_group_internal

using local_process_group_internal::LocalProcessGroup;
using local_process_group_internal::WorldState;

absl::StatusOr<std::unique_ptr<LocalWorld>> LocalWorld::Create(
    int world_size) {
  if (world_size < 1 || world_size > kMaxWorldSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("world size ", world_size, " is not in [1, ",
                     kMaxWorldSize, "]"));
  }
  return std::unique_ptr<LocalWorld>(
      new LocalWorld(std::make_shared<WorldState>(world_size)));
}

LocalWorld::LocalWorld(std::shared_ptr<WorldState> state)
    : state_(std::move(state)) {}

LocalWorld::~LocalWorld() = default;

int LocalWorld::world_size() const { return state_->size; }

std::shared_ptr<ProcessGroup> LocalWorld::Rank(int rank) {
  CHECK(rank >= 0 && rank < state_->size)
      << "rank " << rank << " of a world of size " << state_->size;
  return std::make_shared<LocalProcessGroup>(
      state_, std::string(local_process_group_internal::kWorld), rank);
}

void LocalWorld::Abort(const absl::Status& why) {
  std::lock_guard<std::mutex> lock(state_->mu);
  if (state_->aborted.ok()) {
    state_->aborted =
        absl::AbortedError(absl::StrCat("world aborted: ", why.ToString()));
  }
  state_->cv.notify_all();
}

void LocalWorld::RankExited(int rank) {
  CHECK(rank >= 0 && rank < state_->size);
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->exited[rank] = true;
  for (auto& [name, comm] : state_->communicators) {
    for (auto& [number, call] : comm.calls) {
      if (!call.complete && call.error.ok() && !call.joined[rank]) {
        call.error = absl::AbortedError(absl::StrCat(
            "rank ", rank, " exited before joining ",
            local_process_group_internal::Describe(name, number, call.op,
                                                   call.tag, call.root)));
      }
    }
  }
  state_->cv.notify_all();
}

std::vector<absl::Status> RunLocalRanks(
    int world_size,
    const std::function<absl::Status(
        int rank, const std::shared_ptr<ProcessGroup>& pg)>& fn) {
  absl::StatusOr<std::unique_ptr<LocalWorld>> world =
      LocalWorld::Create(world_size);
  if (!world.ok()) {
    return std::vector<absl::Status>(std::max(world_size, 0), world.status());
  }
  std::vector<absl::Status> statuses(world_size);
  std::vector<std::thread> threads;
  threads.reserve(world_size);
  for (int rank = 0; rank < world_size; ++rank) {
    threads.emplace_back([&, rank] {
      std::shared_ptr<ProcessGroup> pg = (*world)->Rank(rank);
      absl::Status status;
      try {
        status = fn(rank, pg);
      } catch (const std::exception& e) {
        status = absl::InternalError(
            absl::StrCat("rank ", rank, " threw: ", e.what()));
      } catch (...) {
        status = absl::InternalError(
            absl::StrCat("rank ", rank, " threw a non-standard exception"));
      }
      if (status.ok()) {
        (*world)->RankExited(rank);
      } else {
        (*world)->Abort(absl::Status(
            status.code(),
            absl::StrCat("rank ", rank, " failed: ", status.message())));
      }
      statuses[rank] = std::move(status);
    });
  }
  for (std::thread& t : threads) t.join();
  return statuses;
}

}  // namespace dcp
