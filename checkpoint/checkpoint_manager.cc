#include "checkpoint/checkpoint_manager.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "checkpoint/dist_wrapper.h"
#include "core/status.h"
#include "glog/logging.h"
#include "storage/posix_file_system.h"

namespace dcp {
namespace {

constexpr absl::string_view kStepPrefix = "step_";

// The step of a directory name "step_<n>" (canonical decimal), or nullopt.
std::optional<int64_t> StepOfName(absl::string_view name) {
  if (!absl::ConsumePrefix(&name, kStepPrefix) || name.empty()) {
    return std::nullopt;
  }
  if (name.size() > 1 && name[0] == '0') return std::nullopt;
  for (char c : name) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  int64_t step = 0;
  if (!absl::SimpleAtoi(name, &step)) return std::nullopt;
  return step;
}

// Removes `path` and everything under it, at most `depth` levels deep.
absl::Status RemoveTree(FileSystem& fs, const std::string& path, int depth) {
  DCP_ASSIGN_OR_RETURN(bool is_dir, fs.IsDirectory(path));
  if (!is_dir) return fs.RemoveFile(path);
  if (depth == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("not removing ", path, ": nested too deeply"));
  }
  DCP_ASSIGN_OR_RETURN(std::vector<std::string> children, fs.GetChildren(path));
  for (const std::string& child : children) {
    DCP_RETURN_IF_ERROR(RemoveTree(fs, JoinPath(path, child), depth - 1));
  }
  return fs.RemoveDir(path);
}

}  // namespace

// What the manager and its pending saves' retention share; outlives the
// manager while a save's callback still runs.
struct CheckpointManager::Shared {
  std::string root;
  std::shared_ptr<FileSystem> fs;
  int max_to_keep = 0;
  int64_t keep_period = 0;
  // The checkpointer's group, for RestoreLatest's agreement; null when
  // saving and loading without collectives.
  std::shared_ptr<ProcessGroup> process_group;
  int coordinator_rank = 0;
  absl::Duration collective_timeout;
  bool is_coordinator = true;

  // std::mutex, not absl::Mutex: TSan cannot see the happens-before edges
  // of Debian's uninstrumented absl::Mutex.
  std::mutex mu;
  // Steps whose saves were issued and have not finished. Guarded by `mu`.
  std::multiset<int64_t> pending;

  std::string StepDirectory(int64_t step) const {
    return JoinPath(root, absl::StrCat(kStepPrefix, step));
  }

  // Every "step_<n>" directory under the root, with whether it is complete.
  absl::StatusOr<std::vector<std::pair<int64_t, bool>>> ListSteps() const {
    absl::StatusOr<std::vector<std::string>> names = fs->GetChildren(root);
    if (absl::IsNotFound(names.status())) {
      return std::vector<std::pair<int64_t, bool>>();
    }
    DCP_RETURN_IF_ERROR(
        Annotate(names.status(), absl::StrCat("listing steps in ", root)));
    std::vector<std::pair<int64_t, bool>> steps;
    for (const std::string& name : *names) {
      std::optional<int64_t> step = StepOfName(name);
      if (!step.has_value()) continue;
      const std::string dir = JoinPath(root, name);
      absl::StatusOr<bool> is_dir = fs->IsDirectory(dir);
      if (!is_dir.ok() || !*is_dir) continue;
      // Complete once `.metadata` is a regular file (FileSize refuses
      // anything else).
      const bool complete =
          fs->FileSize(JoinPath(dir, kCheckpointMetadataFileName)).ok();
      steps.emplace_back(*step, complete);
    }
    std::sort(steps.begin(), steps.end());
    return steps;
  }

  // Retention after `saved` was committed; see the header.
  void Prune(int64_t saved) {
    absl::StatusOr<std::vector<std::pair<int64_t, bool>>> steps = ListSteps();
    if (!steps.ok()) {
      LOG(WARNING) << "checkpoint retention after step " << saved
                   << " skipped: " << steps.status();
      return;
    }
    std::vector<int64_t> complete;
    for (const auto& [step, is_complete] : *steps) {
      if (is_complete) complete.push_back(step);
    }
    std::set<int64_t> keep = {saved};
    if (max_to_keep == 0) keep.insert(complete.begin(), complete.end());
    for (size_t i = complete.size() > static_cast<size_t>(max_to_keep)
                        ? complete.size() - max_to_keep
                        : 0;
         i < complete.size(); ++i) {
      keep.insert(complete[i]);
    }
    std::multiset<int64_t> busy;
    {
      std::lock_guard<std::mutex> lock(mu);
      busy = pending;
    }
    for (const auto& [step, is_complete] : *steps) {
      if (keep.count(step) > 0 || busy.count(step) > 0) continue;
      if (is_complete && keep_period > 0 && step % keep_period == 0) continue;
      if (!is_complete && step > saved) continue;
      absl::Status removed = RemoveStep(step, is_complete);
      if (removed.ok()) {
        LOG(INFO) << "removed " << (is_complete ? "" : "incomplete ")
                  << "checkpoint step " << step << " (" << StepDirectory(step)
                  << ")";
      } else {
        LOG(WARNING) << "could not remove checkpoint step " << step << ": "
                     << removed;
      }
    }
  }

  // `.metadata` first, durably, so the step stops being one before any of
  // its data goes.
  absl::Status RemoveStep(int64_t step, bool complete) {
    const std::string dir = StepDirectory(step);
    if (complete) {
      DCP_RETURN_IF_ERROR(
          fs->RemoveFile(JoinPath(dir, kCheckpointMetadataFileName)));
      DCP_RETURN_IF_ERROR(fs->SyncDir(dir));
    }
    DCP_RETURN_IF_ERROR(RemoveTree(*fs, dir, /*depth=*/4));
    return fs->SyncDir(root);
  }
};

absl::StatusOr<std::unique_ptr<CheckpointManager>> CheckpointManager::Create(
    std::string root, CheckpointManagerOptions options) {
  if (root.empty()) {
    return absl::InvalidArgumentError(
        "CheckpointManager needs a root directory");
  }
  if (options.max_to_keep < 0 || options.keep_period < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CheckpointManager: max_to_keep (", options.max_to_keep,
        ") and keep_period (", options.keep_period, ") must not be negative"));
  }
  auto shared = std::make_shared<Shared>();
  shared->root = std::move(root);
  shared->fs = options.file_system != nullptr ? options.file_system
                                              : NewPosixFileSystem();
  shared->max_to_keep = options.max_to_keep;
  shared->keep_period = options.keep_period;
  const CheckpointerOptions& c = options.checkpointer;
  if (c.process_group != nullptr && !c.no_dist) {
    shared->process_group = c.process_group;
    shared->is_coordinator = c.process_group->rank() == c.coordinator_rank;
  }
  shared->coordinator_rank = c.coordinator_rank;
  shared->collective_timeout = c.collective_timeout;
  // Durably, or a crash could take every step with the root's entry.
  DCP_RETURN_IF_ERROR(Annotate(CreateDirDurably(*shared->fs, shared->root),
                               "creating the checkpoint root"));

  options.writer.overwrite = false;
  options.writer.file_system = shared->fs;
  options.reader.file_system = shared->fs;
  DCP_ASSIGN_OR_RETURN(std::unique_ptr<FileSystemWriter> writer,
                       FileSystemWriter::Create(shared->root, options.writer));
  DCP_ASSIGN_OR_RETURN(std::unique_ptr<FileSystemReader> reader,
                       FileSystemReader::Create(shared->root, options.reader));
  DCP_ASSIGN_OR_RETURN(
      std::unique_ptr<Checkpointer> checkpointer,
      Checkpointer::Create(std::move(writer), std::move(reader),
                           std::move(options.checkpointer)));
  return std::unique_ptr<CheckpointManager>(
      new CheckpointManager(std::move(shared), std::move(checkpointer)));
}

CheckpointManager::CheckpointManager(std::shared_ptr<Shared> shared,
                                     std::unique_ptr<Checkpointer> checkpointer)
    : shared_(std::move(shared)), checkpointer_(std::move(checkpointer)) {}

CheckpointManager::~CheckpointManager() { WaitForPendingSaves().IgnoreError(); }

const std::string& CheckpointManager::root() const { return shared_->root; }

std::string CheckpointManager::StepDirectory(int64_t step) const {
  return shared_->StepDirectory(step);
}

absl::StatusOr<Metadata> CheckpointManager::Save(int64_t step,
                                                 const StateDict& state) {
  if (step < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint step ", step, " is negative"));
  }
  // Earlier async saves and their retention come first.
  WaitForPendingSaves().IgnoreError();
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    shared_->pending.insert(step);
  }
  absl::StatusOr<Metadata> metadata =
      checkpointer_->Save(state, StepDirectory(step));
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    shared_->pending.erase(shared_->pending.find(step));
  }
  if (metadata.ok() && shared_->is_coordinator) shared_->Prune(step);
  return metadata;
}

Future<Metadata> CheckpointManager::AsyncSave(int64_t step,
                                              const StateDict& state) {
  if (step < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint step ", step, " is negative"));
  }
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    shared_->pending.insert(step);
  }
  Future<Metadata> save = checkpointer_->AsyncSave(state, StepDirectory(step));
  // The caller's future resolves after retention, which runs where the
  // save completes (the checkpointer's background thread).
  PromiseFuturePair<Metadata> pair = PromiseFuturePair<Metadata>::Make();
  save.ExecuteWhenReady(
      [shared = shared_, step, promise = std::move(pair.promise)](
          const absl::StatusOr<Metadata>& result) mutable {
        {
          std::lock_guard<std::mutex> lock(shared->mu);
          shared->pending.erase(shared->pending.find(step));
        }
        if (result.ok() && shared->is_coordinator) shared->Prune(step);
        promise.Set(result);
      });
  pending_.push_back(pair.future);
  return std::move(pair.future);
}

absl::Status CheckpointManager::WaitForPendingSaves() {
  absl::Status first;
  for (Future<Metadata>& save : pending_) {
    const absl::StatusOr<Metadata>& result = save.result();
    if (first.ok() && !result.ok()) first = result.status();
  }
  pending_.clear();
  return first;
}

absl::StatusOr<std::vector<int64_t>> CheckpointManager::AllSteps() const {
  DCP_ASSIGN_OR_RETURN(auto steps, shared_->ListSteps());
  std::vector<int64_t> out;
  for (const auto& [step, complete] : steps) {
    if (complete) out.push_back(step);
  }
  return out;
}

absl::StatusOr<std::optional<int64_t>> CheckpointManager::LatestStep() const {
  DCP_ASSIGN_OR_RETURN(std::vector<int64_t> steps, AllSteps());
  if (steps.empty()) return std::optional<int64_t>();
  return std::optional<int64_t>(steps.back());
}

absl::Status CheckpointManager::Restore(int64_t step, StateDict& state) {
  if (step < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint step ", step, " is negative"));
  }
  WaitForPendingSaves().IgnoreError();
  return Annotate(checkpointer_->Load(state, StepDirectory(step)),
                  absl::StrCat("restoring step ", step));
}

absl::StatusOr<std::optional<int64_t>> CheckpointManager::RestoreLatest(
    StateDict& state) {
  WaitForPendingSaves().IgnoreError();
  // The coordinator's view decides, so every rank restores the same step
  // even if a listing races with another job's writes.
  std::optional<int64_t> latest;
  const Shared& s = *shared_;
  if (s.process_group == nullptr) {
    DCP_ASSIGN_OR_RETURN(latest, LatestStep());
  } else {
    DCP_ASSIGN_OR_RETURN(
        DistWrapper dist,
        DistWrapper::Create(*s.process_group, s.coordinator_rank,
                            s.collective_timeout,
                            absl::StrCat("latest step #", ++rounds_)));
    DCP_ASSIGN_OR_RETURN(
        std::string agreed,
        dist.AllReduce(
            "latest_step",
            [&]() -> absl::StatusOr<std::string> {
              if (!dist.is_coordinator()) return std::string();
              DCP_ASSIGN_OR_RETURN(std::optional<int64_t> step, LatestStep());
              return step.has_value() ? absl::StrCat(*step) : std::string();
            },
            [&](std::vector<std::string> all) -> absl::StatusOr<std::string> {
              return all[s.coordinator_rank];
            }));
    if (!agreed.empty()) {
      int64_t step = 0;
      if (!absl::SimpleAtoi(agreed, &step)) {
        return absl::InternalError(
            absl::StrCat("bad latest step from the coordinator: ", agreed));
      }
      latest = step;
    }
  }
  if (!latest.has_value()) return latest;
  DCP_RETURN_IF_ERROR(Restore(*latest, state));
  return latest;
}

}  // namespace dcp
