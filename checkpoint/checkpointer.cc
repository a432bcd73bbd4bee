#include "checkpoint/checkpointer.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "checkpoint/dist_wrapper.h"
#include "checkpoint/save_load.h"
#include "core/fault_point.h"
#include "core/status.h"

namespace dcp {
namespace {

// What a rank contributes to the "begin" exchange of an async round.
constexpr absl::string_view kNeedsNewGroup = "new communicator";

}  // namespace

absl::StatusOr<std::unique_ptr<Checkpointer>> Checkpointer::Create(
    std::shared_ptr<StorageWriter> writer,
    std::shared_ptr<StorageReader> reader, CheckpointerOptions options) {
  if (writer == nullptr && reader == nullptr) {
    return absl::InvalidArgumentError(
        "a Checkpointer needs a storage writer, a storage reader, or both");
  }
  const int world = options.process_group != nullptr && !options.no_dist
                        ? options.process_group->size()
                        : 1;
  if (options.coordinator_rank < 0 || options.coordinator_rank >= world) {
    return absl::InvalidArgumentError(
        absl::StrCat("coordinator rank ", options.coordinator_rank,
                     " is not a rank of the process group (size ", world,
                     ")"));
  }
  if (options.max_pending_saves < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_pending_saves must be at least 1, got ",
                     options.max_pending_saves));
  }
  return std::unique_ptr<Checkpointer>(
      new Checkpointer(std::move(writer), std::move(reader), std::move(options)));
}

Checkpointer::Checkpointer(std::shared_ptr<StorageWriter> writer,
                           std::shared_ptr<StorageReader> reader,
                           CheckpointerOptions options)
    : writer_(std::move(writer)),
      reader_(std::move(reader)),
      options_(std::move(options)) {
  if (options_.reuse_staging_buffers) {
    staging_ = std::make_unique<StagingPool>(
        options_.staging, static_cast<size_t>(options_.max_pending_saves));
  }
}

Checkpointer::~Checkpointer() {
  if (executor_ != nullptr && executor_->InWorkerThread()) {
    // Dropped by a callback of one of our own saves, on the background
    // thread: waiting would wait for ourselves. Queued saves own what they
    // use, and the thread finishes them on its own.
    executor_.reset();
    return;
  }
  WaitForPendingSaves().IgnoreError();
  executor_.reset();
}

std::string Checkpointer::NextRound(absl::string_view kind) {
  return absl::StrCat(kind, " #", ++rounds_);
}

absl::Status Checkpointer::WaitUntilPending(size_t keep) {
  absl::Status first_error;
  while (pending_.size() > keep) {
    const PendingSave& oldest = pending_.front();
    const absl::StatusOr<Metadata>& result = oldest.future.result();
    if (!result.ok()) {
      if (first_error.ok()) first_error = result.status();
      if (IsCollectiveFailure(result.status()) &&
          oldest.group == async_group_) {
        async_group_failed_ = true;
      }
    }
    pending_.pop_front();
  }
  return first_error;
}

absl::Status Checkpointer::WaitForPendingSaves() { return WaitUntilPending(0); }

absl::StatusOr<Metadata> Checkpointer::Save(
    const StateDict& state_dict, std::optional<std::string> checkpoint_id) {
  if (writer_ == nullptr) {
    return absl::FailedPreconditionError(
        "this Checkpointer has no storage writer");
  }
  // Earlier async saves complete first; their errors were (or will be)
  // reported through their own futures.
  WaitForPendingSaves().IgnoreError();
  SaveOptions options;
  options.process_group = options_.process_group.get();
  options.no_dist = options_.no_dist;
  options.coordinator_rank = options_.coordinator_rank;
  options.planner = options_.save_planner.get();
  options.collective_timeout = options_.collective_timeout;
  options.round = NextRound("save");
  options.checkpoint_id = std::move(checkpoint_id);
  return dcp::Save(state_dict, *writer_, options);
}

absl::Status Checkpointer::BeginAsyncRound(const std::string& round,
                                           const absl::Status& local) {
  DCP_ASSIGN_OR_RETURN(
      DistWrapper dist,
      DistWrapper::Create(*options_.process_group, options_.coordinator_rank,
                          options_.collective_timeout, round));
  const bool needs_group = async_group_ == nullptr || async_group_failed_;
  absl::StatusOr<std::vector<std::string>> needs = dist.AllGatherResults(
      "async_save.begin", [&]() -> absl::StatusOr<std::string> {
        DCP_RETURN_IF_ERROR(local);
        return std::string(needs_group ? kNeedsNewGroup : "");
      });
  if (!needs.ok()) {
    return Annotate(needs.status(), absl::StrCat("starting ", round));
  }
  bool fork = false;
  for (const std::string& need : *needs) fork |= need == kNeedsNewGroup;
  if (!fork) return absl::OkStatus();
  // Every rank forks, so every rank's background saves meet on the new
  // communicator; the old one (if any) is dropped once no save uses it.
  async_group_ = nullptr;
  absl::StatusOr<std::shared_ptr<ProcessGroup>> forked =
      options_.process_group->Fork("dcp.async_save",
                                   absl::Now() + options_.collective_timeout);
  if (!forked.ok()) {
    return Annotate(
        forked.status(),
        absl::StrCat("starting ", round,
                     ": creating the async-save communicator failed (the "
                     "next AsyncSave tries again)"));
  }
  async_group_ = *std::move(forked);
  async_group_failed_ = false;
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const StateDict>> Checkpointer::Stage(
    const StateDict& state_dict) {
  if (staging_ != nullptr) return staging_->Stage(state_dict);
  DCP_ASSIGN_OR_RETURN(StateDict staged,
                       StageStateDict(state_dict, options_.staging));
  return std::make_shared<const StateDict>(std::move(staged));
}

Future<Metadata> Checkpointer::AsyncSave(
    const StateDict& state_dict, std::optional<std::string> checkpoint_id) {
  if (writer_ == nullptr) {
    return absl::FailedPreconditionError(
        "this Checkpointer has no storage writer");
  }
  const std::string round = NextRound("async save");
  // Bounded memory: the oldest pending saves complete (and free their
  // staged copies) before another copy is made. Their errors were (or will
  // be) reported through their own futures.
  WaitUntilPending(static_cast<size_t>(options_.max_pending_saves - 1))
      .IgnoreError();

  // This rank's part; a failure still joins the round below.
  absl::Status local;
  if (executor_ == nullptr) {
    absl::StatusOr<std::unique_ptr<SerialExecutor>> executor =
        SerialExecutor::Create();
    if (executor.ok()) {
      executor_ = *std::move(executor);
    } else {
      local = Annotate(executor.status(), "starting the async-save thread");
    }
  }
  using Staged = absl::StatusOr<std::shared_ptr<const StateDict>>;
  Staged staged = local.ok() ? Stage(state_dict) : Staged(local);
  if (local.ok() && !staged.ok()) {
    staged = Annotate(staged.status(), "staging for async save");
  }
  if (distributed()) {
    DCP_RETURN_IF_ERROR(BeginAsyncRound(round, staged.status()));
  } else if (!staged.ok()) {
    return staged.status();
  }

  SaveOptions options;
  options.no_dist = !distributed();
  options.coordinator_rank = options_.coordinator_rank;
  options.collective_timeout = options_.collective_timeout;
  options.round = round;
  options.checkpoint_id = std::move(checkpoint_id);
  PromiseFuturePair<Metadata> pair = PromiseFuturePair<Metadata>::Make();
  // The task owns everything it uses (never `this`), so it may outlive
  // this Checkpointer. Fault points fire for the rank that scheduled it.
  executor_->Schedule(
      [promise = std::move(pair.promise),
       staged = *std::move(staged),
       writer = writer_, group = async_group_,
       planner = options_.save_planner, options = std::move(options),
       fault_handler = CurrentFaultPointHandler()]() mutable {
        ScopedFaultPointHandler faults(fault_handler);
        options.process_group = group.get();
        options.planner = planner.get();
        absl::StatusOr<Metadata> result = dcp::Save(*staged, *writer, options);
        // Freed (or given back to the staging pool) before anyone can see
        // the result, so that a waiter in AsyncSave never holds two staged
        // copies of one save.
        staged.reset();
        promise.Set(std::move(result));
      });
  pending_.push_back(PendingSave{pair.future, async_group_});
  return std::move(pair.future);
}

absl::Status Checkpointer::Load(StateDict& state_dict,
                                std::optional<std::string> checkpoint_id) {
  if (reader_ == nullptr) {
    return absl::FailedPreconditionError(
        "this Checkpointer has no storage reader");
  }
  WaitForPendingSaves().IgnoreError();
  LoadOptions options;
  options.process_group = options_.process_group.get();
  options.no_dist = options_.no_dist;
  options.coordinator_rank = options_.coordinator_rank;
  options.planner = options_.load_planner.get();
  options.collective_timeout = options_.collective_timeout;
  options.round = NextRound("load");
  options.checkpoint_id = std::move(checkpoint_id);
  return dcp::Load(state_dict, *reader_, options);
}

}  // namespace dcp
