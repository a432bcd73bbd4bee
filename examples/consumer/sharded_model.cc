#include "sharded_model.h"

#include <memory>
#include <string>
#include <utility>

#include "ATen/ops/arange.h"
#include "ATen/ops/zeros.h"
#include "checkpoint/checkpointer.h"
#include "core/sharding.h"
#include "core/status.h"
#include "storage/fs_storage.h"

namespace consumer {

absl::StatusOr<dcp::StateDict> MakeModelState(const ModelConfig& config,
                                              int rank, int world_size,
                                              int64_t step, bool zeros) {
  dcp::StateDict state;
  if (zeros) {
    DCP_ASSIGN_OR_RETURN(
        dcp::ShardedTensor embedding,
        dcp::ZerosShardAlongDim({config.vocab, config.dim}, at::kFloat,
                                /*dim=*/0, rank, world_size));
    state.Set("embedding", std::move(embedding));
    state.Set("bias", at::zeros({config.dim}, at::kFloat));
    state.Set("step", int64_t{0});
    return state;
  }
  at::Tensor rows = at::arange(config.vocab, at::kFloat).unsqueeze(1).mul(100);
  at::Tensor cols = at::arange(config.dim, at::kFloat).unsqueeze(0);
  DCP_ASSIGN_OR_RETURN(
      dcp::ShardedTensor embedding,
      dcp::ShardAlongDim(rows.add(cols), /*dim=*/0, rank, world_size));
  state.Set("embedding", std::move(embedding));
  state.Set("bias", at::arange(config.dim, at::kFloat).mul(0.5));
  state.Set("step", step);
  return state;
}

namespace {

absl::StatusOr<std::unique_ptr<dcp::Checkpointer>> MakeCheckpointer(
    const std::string& dir, std::shared_ptr<dcp::ProcessGroup> group) {
  DCP_ASSIGN_OR_RETURN(std::shared_ptr<dcp::StorageWriter> writer,
                       dcp::FileSystemWriter::Create(dir));
  DCP_ASSIGN_OR_RETURN(std::shared_ptr<dcp::StorageReader> reader,
                       dcp::FileSystemReader::Create(dir));
  dcp::CheckpointerOptions options;
  options.process_group = std::move(group);
  return dcp::Checkpointer::Create(std::move(writer), std::move(reader),
                                   std::move(options));
}

}  // namespace

absl::StatusOr<dcp::Metadata> SaveModel(
    const std::string& dir, std::shared_ptr<dcp::ProcessGroup> group,
    const dcp::StateDict& state) {
  DCP_ASSIGN_OR_RETURN(auto checkpointer,
                       MakeCheckpointer(dir, std::move(group)));
  return checkpointer->Save(state);
}

absl::Status LoadModel(const std::string& dir,
                       std::shared_ptr<dcp::ProcessGroup> group,
                       dcp::StateDict& state) {
  DCP_ASSIGN_OR_RETURN(auto checkpointer,
                       MakeCheckpointer(dir, std::move(group)));
  return checkpointer->Load(state);
}

}  // namespace consumer
