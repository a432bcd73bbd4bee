#include "testing/simulator.h"

#include <exception>
#include <map>
#include <memory>
#include <mutex>  // NOLINT(build/c++11)
#include <string>
#include <system_error>  // NOLINT(build/c++11)
#include <thread>        // NOLINT(build/c++11)
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/memory/memory.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/fault_point.h"
#include "distributed/fake_process_group.h"
#include "glog/logging.h"

namespace dcp::test {
namespace {

// One rank's fault points. Thread-safe: the handler may be carried to the
// rank's other threads. std::mutex, not absl::Mutex: see the TSan note in
// fake_process_group.cc.
class RankFaultHandler : public FaultPointHandler {
 public:
  struct Rule {
    std::string name;
    int nth;
    absl::StatusCode code;
    std::string message;
  };

  explicit RankFaultHandler(std::vector<Rule> rules)
      : rules_(std::move(rules)) {}

  absl::Status OnFaultPoint(absl::string_view name) override {
    if (rules_.empty()) return absl::OkStatus();
    std::lock_guard<std::mutex> lock(mu_);
    const int visit = ++visits_[std::string(name)];
    for (const Rule& rule : rules_) {
      if (rule.nth == visit && rule.name == name) {
        // A fresh status per visit: no status object crosses threads.
        return absl::Status(rule.code, rule.message);
      }
    }
    return absl::OkStatus();
  }

 private:
  const std::vector<Rule> rules_;
  std::mutex mu_;
  std::map<std::string, int> visits_;  // Guarded by mu_.
};

absl::Status CallCatchingExceptions(
    int rank, absl::FunctionRef<absl::Status(RankContext&)> fn,
    RankContext& ctx) {
  try {
    return fn(ctx);
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrFormat("rank %d threw an exception: %s", rank, e.what()));
  } catch (...) {
    return absl::InternalError(absl::StrFormat(
        "rank %d threw an exception not derived from std::exception", rank));
  }
}

}  // namespace

absl::Time RankContext::Deadline() const {
  return absl::Now() + collective_timeout_;
}

void FaultInjector::FailAtCollective(int rank, int nth, absl::Status status) {
  CHECK(rank >= 0 && rank < world_size_)
      << "FailAtCollective: rank " << rank << " is not in [0, " << world_size_
      << ")";
  CHECK_GE(nth, 1) << "FailAtCollective: nth is 1-based";
  CHECK(!status.ok()) << "FailAtCollective needs an error status";
  collective_faults_.push_back(CollectiveFault{rank, nth, std::move(status)});
}

void FaultInjector::FailAtPoint(int rank, absl::string_view name,
                                absl::Status status, int nth) {
  CHECK(rank >= 0 && rank < world_size_)
      << "FailAtPoint: rank " << rank << " is not in [0, " << world_size_
      << ")";
  CHECK_GE(nth, 1) << "FailAtPoint: nth is 1-based";
  CHECK(!status.ok()) << "FailAtPoint needs an error status";
  point_faults_.push_back(
      PointFault{rank, std::string(name), nth, std::move(status)});
}

void FaultInjector::Clear() {
  collective_faults_.clear();
  point_faults_.clear();
}

absl::StatusOr<std::unique_ptr<Simulator>> Simulator::Create(
    SimulatorOptions options) {
  if (options.world_size < 1 || options.world_size > FakeWorld::kMaxWorldSize) {
    return absl::InvalidArgumentError(
        absl::StrFormat("Simulator: world_size %d is not in [1, %d]",
                        options.world_size, FakeWorld::kMaxWorldSize));
  }
  if (options.collective_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("Simulator: collective_timeout %s is not positive",
                        absl::FormatDuration(options.collective_timeout)));
  }
  return absl::WrapUnique(new Simulator(options));
}

absl::Status Simulator::RunRank(
    FakeWorld& world, int rank, absl::Duration collective_timeout,
    absl::FunctionRef<absl::Status(RankContext&)> fn) {
  absl::Status status =
      world.StartRank(rank, absl::Now() + collective_timeout);
  if (status.ok()) {
    RankContext ctx(rank, world.world_size(), world.Rank(rank),
                    collective_timeout);
    status = CallCatchingExceptions(rank, fn, ctx);
  }
  world.MarkRankDone(rank, status);
  return status;
}

std::vector<absl::Status> Simulator::Run(
    absl::FunctionRef<absl::Status(RankContext&)> fn) {
  const int n = options_.world_size;
  FakeWorldOptions world_options;
  world_options.world_size = n;
  world_options.schedule_seed = options_.seed;
  world_options.stall_timeout = options_.collective_timeout;
  absl::StatusOr<std::unique_ptr<FakeWorld>> created =
      FakeWorld::Create(world_options);
  CHECK(created.ok()) << created.status();  // Create validated the options.
  std::unique_ptr<FakeWorld> world = *std::move(created);

  for (const FaultInjector::CollectiveFault& fault :
       faults_.collective_faults_) {
    world->FailCollective(fault.rank, fault.nth, fault.status);
  }
  std::vector<std::vector<RankFaultHandler::Rule>> rules(n);
  for (const FaultInjector::PointFault& fault : faults_.point_faults_) {
    rules[fault.rank].push_back(RankFaultHandler::Rule{
        fault.name, fault.nth, fault.status.code(),
        std::string(fault.status.message())});
  }
  std::vector<std::unique_ptr<RankFaultHandler>> handlers;
  handlers.reserve(n);
  for (int r = 0; r < n; ++r) {
    handlers.push_back(std::make_unique<RankFaultHandler>(std::move(rules[r])));
  }

  // Each slot is written by its rank's thread only, read after join.
  std::vector<absl::Status> statuses(n);
  std::vector<std::thread> threads;
  threads.reserve(n);
  std::string thread_error;
  for (int r = 0; r < n; ++r) {
    try {
      threads.emplace_back([&, r] {
        ScopedFaultPointHandler scoped_handler(handlers[r].get());
        statuses[r] =
            RunRank(*world, r, options_.collective_timeout, fn);
      });
    } catch (const std::system_error& e) {
      thread_error = e.what();
      break;
    }
  }
  // Ranks without a thread never run; the others must not wait for them.
  for (int r = static_cast<int>(threads.size()); r < n; ++r) {
    statuses[r] = absl::ResourceExhaustedError(absl::StrFormat(
        "rank %d: could not start its thread: %s", r, thread_error));
    world->MarkRankDone(r, statuses[r]);
  }
  for (std::thread& thread : threads) thread.join();
  // Threads a rank let go of (a Checkpointer dropped by one of its own
  // callbacks) finish within this Run, not during the next one.
  if (!world->AwaitStartedThreads(absl::Now() + options_.collective_timeout)) {
    LOG(ERROR) << "Simulator: threads started by the ranks were still running "
                  "at the end of Run";
  }
  last_world_ = std::move(world);
  return statuses;
}

std::vector<std::string> Simulator::trace() const {
  if (last_world_ == nullptr) return {};
  return last_world_->ScheduleTrace();
}

std::vector<std::string> Simulator::transcript(
    absl::string_view communicator) const {
  if (last_world_ == nullptr) return {};
  return last_world_->Transcript(communicator);
}

}  // namespace dcp::test
