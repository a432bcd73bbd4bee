#include "checkpoint/checkpointer.h"

#include <algorithm>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "checkpoint/save_load.h"
#include "checkpoint/status.h"

namespace dcp {

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
  return std::unique_ptr<Checkpointer>(
      new Checkpointer(std::move(writer), std::move(reader), std::move(options)));
}

Checkpointer::Checkpointer(std::shared_ptr<StorageWriter> writer,
                           std::shared_ptr<StorageReader> reader,
                           CheckpointerOptions options)
    : writer_(std::move(writer)),
      reader_(std::move(reader)),
      options_(std::move(options)) {}

Checkpointer::~Checkpointer() {
  // Destroying the executor runs every queued save to completion.
  executor_.reset();
}

absl::Status Checkpointer::WaitForPendingSaves() {
  absl::Status first_error;
  for (const Future<Metadata>& future : pending_) {
    const absl::StatusOr<Metadata>& result = future.result();
    if (!result.ok() && first_error.ok()) first_error = result.status();
  }
  pending_.clear();
  return first_error;
}

absl::StatusOr<Metadata> Checkpointer::Save(const StateDict& state_dict) {
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
  return dcp::Save(state_dict, *writer_, options);
}

Future<Metadata> Checkpointer::AsyncSave(const StateDict& state_dict) {
  if (writer_ == nullptr) {
    return absl::FailedPreconditionError(
        "this Checkpointer has no storage writer");
  }
  const bool distributed =
      options_.process_group != nullptr && !options_.no_dist;
  if (distributed && async_group_ == nullptr) {
    absl::StatusOr<std::shared_ptr<ProcessGroup>> forked =
        options_.process_group->Fork(
            "dcp.async_save", absl::Now() + options_.collective_timeout);
    if (!forked.ok()) {
      return Annotate(forked.status(),
                      "creating the async-save communicator");
    }
    async_group_ = *std::move(forked);
  }
  if (executor_ == nullptr) executor_ = std::make_unique<SerialExecutor>();

  AsyncSaveOptions options;
  options.process_group = async_group_;
  options.no_dist = !distributed;
  options.coordinator_rank = options_.coordinator_rank;
  options.planner = options_.save_planner;
  options.collective_timeout = options_.collective_timeout;
  options.executor = executor_->AsExecutor();
  Future<Metadata> future =
      dcp::AsyncSave(state_dict, writer_, std::move(options));
  // Completed saves have reported through their own futures.
  pending_.erase(std::remove_if(pending_.begin(), pending_.end(),
                                [](const Future<Metadata>& f) {
                                  return f.ready();
                                }),
                 pending_.end());
  pending_.push_back(future);
  return future;
}

absl::Status Checkpointer::Load(StateDict& state_dict) {
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
  return dcp::Load(state_dict, *reader_, options);
}

}  // namespace dcp
