// -----------------------------------------------------------------------------
// File: tools/from_torch_save.h
// -----------------------------------------------------------------------------
//
// `dcp from-torch-save FILE DIR --world_size=N`: PyTorch's
// `torch_save_to_dcp`, as N simulated ranks. Reads a torch.save file whose
// top-level object is a dict (possibly nested; storage/torch_save.h lists
// what it may hold), shards every tensor with at least one dimension along
// dimension 0 over the N ranks (rank r holds rows [r*c, (r+1)*c) with
// c = ceil(rows / N), as DTensor's Shard(0)), replicates 0-d tensors and
// non-tensor values, and saves the ranks' state dicts collectively into the
// checkpoint directory DIR. Loading DIR with any world size and layout gives
// back the file's contents (empty nested dicts are not saved, as in
// PyTorch).
//
// Errors: those of reading FILE (NotFound, DataLoss, Unimplemented for
// contents dcp cannot represent, InvalidArgument for a non-dict top level),
// InvalidArgument for world_size < 1, and those of the save.
#ifndef DCP_TOOLS_FROM_TORCH_SAVE_H_
#define DCP_TOOLS_FROM_TORCH_SAVE_H_

#include <ostream>
#include <string>

#include "absl/status/status.h"

namespace dcp::tools {

struct FromTorchSaveOptions {
  std::string file;  // The torch.save file to read.
  std::string dir;   // The checkpoint directory to write.
  int world_size = 1;
  // FileSystemWriterOptions.
  int thread_count = 1;
  bool sync_files = true;
  // Progress lines; null for none.
  std::ostream* progress = nullptr;
};

// Converts and prints a short summary to `out`.
absl::Status TorchSaveToDcp(const FromTorchSaveOptions& options,
                            std::ostream& out);

}  // namespace dcp::tools

#endif  // DCP_TOOLS_FROM_TORCH_SAVE_H_
