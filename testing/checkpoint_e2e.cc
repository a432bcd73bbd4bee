#include "testing/checkpoint_e2e.h"

#include <atomic>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "ATen/ATen.h"
#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "checkpoint/checkpointer.h"
#include "checkpoint/dist_wrapper.h"
#include "core/fault_point.h"
#include "core/state_dict.h"
#include "core/status.h"
#include "storage/fs_storage.h"
#include "testing/checkpoint_scenarios.h"

namespace dcp::test {
namespace {

absl::StatusOr<std::unique_ptr<Checkpointer>> MakeDirCheckpointer(
    std::shared_ptr<ProcessGroup> pg, const std::string& dir,
    const E2eOptions& options) {
  DCP_ASSIGN_OR_RETURN(std::unique_ptr<FileSystemWriter> writer,
                       FileSystemWriter::Create(dir));
  DCP_ASSIGN_OR_RETURN(std::unique_ptr<FileSystemReader> reader,
                       FileSystemReader::Create(dir));
  CheckpointerOptions checkpointer_options;
  checkpointer_options.process_group = std::move(pg);
  checkpointer_options.coordinator_rank = options.coordinator_rank;
  checkpointer_options.collective_timeout = options.collective_timeout;
  return Checkpointer::Create(std::move(writer), std::move(reader),
                              std::move(checkpointer_options));
}

void ZeroTensors(Value& value);

void ZeroTensors(StateDict& state_dict) {
  for (auto& [key, value] : state_dict.mutable_entries()) ZeroTensors(value);
}

void ZeroTensors(Value& value) {
  Value::Variant& v = value.mutable_variant();
  if (auto* tensor = std::get_if<at::Tensor>(&v)) {
    tensor->zero_();
  } else if (auto* sharded = std::get_if<ShardedTensor>(&v)) {
    for (Shard& shard : sharded->local_shards) shard.tensor.zero_();
  } else if (auto* list = std::get_if<List>(&v)) {
    for (Value& item : *list) ZeroTensors(item);
  } else if (auto* dict = std::get_if<StateDict>(&v)) {
    ZeroTensors(*dict);
  }
}

class FailAtPointHandler : public FaultPointHandler {
 public:
  explicit FailAtPointHandler(std::string point) : point_(std::move(point)) {}
  absl::Status OnFaultPoint(absl::string_view name) override {
    if (name != point_ || fired_.exchange(true)) return absl::OkStatus();
    return absl::UnavailableError(
        absl::StrCat("injected failure at ", point_));
  }

 private:
  const std::string point_;
  std::atomic<bool> fired_{false};
};

// This rank's part of the model in the save layout, and a Checkpointer of
// `dir` to save it with.
struct Saver {
  StateDict state_dict;
  std::unique_ptr<Checkpointer> checkpointer;
};

absl::StatusOr<Saver> MakeSaver(std::shared_ptr<ProcessGroup> pg,
                                const std::string& dir, int value_seed,
                                const E2eOptions& options) {
  Saver saver;
  DCP_ASSIGN_OR_RETURN(
      saver.state_dict,
      MakeModelStateDict(pg->rank(), pg->size(), ModelLayout::kSave,
                         ModelValues::kTrue, value_seed));
  DCP_ASSIGN_OR_RETURN(saver.checkpointer,
                       MakeDirCheckpointer(std::move(pg), dir, options));
  return saver;
}

}  // namespace

absl::Status SaveModelToDir(std::shared_ptr<ProcessGroup> pg,
                            const std::string& dir, int value_seed,
                            const E2eOptions& options) {
  DCP_ASSIGN_OR_RETURN(Saver saver, MakeSaver(pg, dir, value_seed, options));
  return saver.checkpointer->Save(saver.state_dict).status();
}

absl::Status AsyncSaveModelToDir(std::shared_ptr<ProcessGroup> pg,
                                 const std::string& dir, int value_seed,
                                 const E2eOptions& options) {
  DCP_ASSIGN_OR_RETURN(Saver saver, MakeSaver(pg, dir, value_seed, options));
  StateDict& state_dict = saver.state_dict;
  Checkpointer* checkpointer = saver.checkpointer.get();
  Future<Metadata> save = checkpointer->AsyncSave(state_dict);
  // The next training step changes the weights while the save runs.
  ZeroTensors(state_dict);
  DCP_RETURN_IF_ERROR(save.result().status());
  return checkpointer->WaitForPendingSaves();
}

absl::Status AsyncSaveFailingStagingThenRecover(
    std::shared_ptr<ProcessGroup> pg, const std::string& dir,
    int failing_rank, int value_seed, const E2eOptions& options) {
  DCP_ASSIGN_OR_RETURN(Saver saver, MakeSaver(pg, dir, value_seed, options));
  StateDict& state_dict = saver.state_dict;
  Checkpointer* checkpointer = saver.checkpointer.get();
  const int rank = pg->rank();
  StateDict broken = state_dict;
  broken.Set("staging_probe",
             rank == failing_rank
                 ? at::empty({4}, at::TensorOptions().device(at::kMeta))
                 : at::zeros({4}));
  const absl::Status failed = checkpointer->AsyncSave(broken).result().status();
  if (failed.ok()) {
    return absl::InternalError(absl::StrCat(
        "rank ", rank, ": the async save with a meta tensor on rank ",
        failing_rank, " succeeded"));
  }
  if (FailedRanks(failed) != std::vector<int>{failing_rank} ||
      !absl::StrContains(failed.message(), "staging")) {
    return absl::InternalError(
        absl::StrCat("rank ", rank, ": unexpected error of the failed async "
                     "save: ", failed.ToString()));
  }
  DCP_RETURN_IF_ERROR(Annotate(checkpointer->AsyncSave(state_dict).result().status(),
                               "the async save after a failed one"));
  return checkpointer->WaitForPendingSaves();
}

absl::Status LoadModelFromDirAndCheck(std::shared_ptr<ProcessGroup> pg,
                                      const std::string& dir, int value_seed,
                                      const E2eOptions& options) {
  const int rank = pg->rank();
  const int world_size = pg->size();
  DCP_ASSIGN_OR_RETURN(
      StateDict state_dict,
      MakeModelStateDict(rank, world_size, ModelLayout::kLoad,
                         ModelValues::kPlaceholder));
  DCP_ASSIGN_OR_RETURN(std::unique_ptr<Checkpointer> checkpointer,
                       MakeDirCheckpointer(std::move(pg), dir, options));
  DCP_RETURN_IF_ERROR(checkpointer->Load(state_dict));
  return CheckModelStateDict(state_dict, rank, world_size, ModelLayout::kLoad,
                             value_seed);
}

absl::Status RunWithFaultAt(std::shared_ptr<ProcessGroup> pg,
                            const std::string& dir, bool save,
                            absl::string_view fault_point, int failing_rank,
                            int value_seed, const E2eOptions& options) {
  FailAtPointHandler handler{std::string(fault_point)};
  ScopedFaultPointHandler scoped(pg->rank() == failing_rank
                                     ? &handler
                                     : CurrentFaultPointHandler());
  if (save) return SaveModelToDir(std::move(pg), dir, value_seed, options);
  return LoadModelFromDirAndCheck(std::move(pg), dir, value_seed, options);
}

std::string EncodeStatus(const absl::Status& status) {
  std::string failed_ranks;
  if (auto payload = status.GetPayload(kFailedRanksPayload)) {
    failed_ranks = std::string(*payload);
  }
  return absl::StrCat(static_cast<int>(status.code()), "\n", failed_ranks,
                      "\n", status.message());
}

absl::Status DecodeStatus(absl::string_view text, absl::Status* status) {
  std::vector<absl::string_view> parts =
      absl::StrSplit(text, absl::MaxSplits('\n', 2));
  int code = 0;
  if (parts.size() != 3 || !absl::SimpleAtoi(parts[0], &code) || code < 0 ||
      code > static_cast<int>(absl::StatusCode::kUnauthenticated)) {
    return absl::InvalidArgumentError(
        absl::StrCat("not an encoded status: '", text, "'"));
  }
  *status = absl::Status(static_cast<absl::StatusCode>(code), parts[2]);
  if (!parts[1].empty()) {
    status->SetPayload(kFailedRanksPayload, absl::Cord(parts[1]));
  }
  return absl::OkStatus();
}

}  // namespace dcp::test
