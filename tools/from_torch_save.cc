#include "tools/from_torch_save.h"

#include <ATen/ATen.h>

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "checkpoint/format_utils.h"
#include "core/state_dict.h"
#include "core/status.h"
#include "planner/flatten.h"
#include "storage/fs_storage.h"
#include "storage/posix_file_system.h"
#include "storage/torch_save.h"
#include "tools/local_checkpoint.h"
#include "tools/model_state.h"
#include "tools/tool_util.h"

namespace dcp::tools {

absl::Status TorchSaveToDcp(const FromTorchSaveOptions& options,
                            std::ostream& out) {
  if (options.file.empty() || options.dir.empty()) {
    return absl::InvalidArgumentError(
        "from-torch-save needs a file name and a checkpoint directory");
  }
  if (options.world_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--world_size must be at least 1, got ", options.world_size));
  }
  DCP_ASSIGN_OR_RETURN(StateDict full, ReadTorchSave(options.file));
  DCP_ASSIGN_OR_RETURN(FlatStateDict flat, FlattenStateDict(full));
  int64_t sharded = 0, replicated = 0, values = 0;
  for (const auto& [fqn, value] : flat.items) {
    if (const auto* t = value.get_if<at::Tensor>()) {
      ++(t->dim() >= 1 ? sharded : replicated);
    } else {
      ++values;
    }
  }

  absl::Duration elapsed;
  if (options.world_size == 1) {
    // One rank: the library's conversion (PyTorch's torch_save_to_dcp).
    FileSystemWriterOptions writer_options;
    writer_options.thread_count = options.thread_count;
    writer_options.sync_files = options.sync_files;
    const absl::Time start = absl::Now();
    DCP_RETURN_IF_ERROR(
        ::dcp::TorchSaveToDcp(options.file, options.dir, writer_options));
    elapsed = absl::Now() - start;
  } else {
    std::vector<StateDict> per_rank(options.world_size);
    for (int r = 0; r < options.world_size; ++r) {
      DCP_ASSIGN_OR_RETURN(per_rank[r], ShardStateDict(full, Layout::kRows, r,
                                                       options.world_size));
    }
    LocalSaveOptions save_options;
    save_options.thread_count = options.thread_count;
    save_options.sync_files = options.sync_files;
    save_options.progress = options.progress;
    DCP_ASSIGN_OR_RETURN(elapsed,
                         SaveOnLocalRanks(per_rank, options.dir, save_options));
  }

  PosixFileSystem fs;
  DCP_ASSIGN_OR_RETURN(std::vector<FileInfo> files,
                       ListCheckpointFiles(fs, options.dir));
  uint64_t bytes = 0;
  for (const FileInfo& f : files) bytes += f.size;
  out << "saved " << options.dir << " with " << options.world_size
      << (options.world_size == 1 ? " rank: " : " ranks: ") << sharded
      << " tensors sharded along dim 0, " << replicated
      << " 0-d tensors replicated, " << values << " values; " << files.size()
      << " files, " << HumanBytes(bytes) << " in " << Seconds(elapsed)
      << " s\n";
  return absl::OkStatus();
}

}  // namespace dcp::tools
