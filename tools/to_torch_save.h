// -----------------------------------------------------------------------------
// File: tools/to_torch_save.h
// -----------------------------------------------------------------------------
//
// `dcp to-torch-save DIR FILE`: PyTorch's `dcp_to_torch_save`. Loads a whole
// checkpoint on one rank into full tensors and writes it as ONE torch.save
// file (storage/torch_save.h) that Python's `torch.load` opens.
//
// The destination is built from the metadata alone, as PyTorch's
// `_EmptyStateDictLoadPlanner` does: every tensor key becomes a full tensor
// of its saved dtype and global shape, every bytes key a placeholder; after
// the load, each leaf goes to `Metadata::planner_data[key]` in a nested
// state dict (to the top level if the key has no path), so the file holds
// the original nesting: {"model": {...}, "optim": {"state": {...},
// "param_groups": [...]}}. Dicts come out with their keys in sorted
// flattened-key order (the metadata does not keep the original order).
//
// Before allocating, each tensor's declared bytes are checked against the
// bytes its chunks' records occupy in the data files actually present, so
// a `.metadata` that claims more than the files hold (hostile, or from
// another checkpoint) costs no memory.
//
// Likewise a list index in `planner_data` may exceed the number of keys by
// at most 65536 (empty dicts in a list leave no key), since every index
// below it becomes a placeholder.
//
// Errors: NotFound if DIR is not a checkpoint; DataLoss if `.metadata`
// declares tensors larger than their records in the data files, or list
// indices beyond that bound; errors of the load (DataLoss for corrupt data
// files, ...) and of writing FILE.
#ifndef DCP_TOOLS_TO_TORCH_SAVE_H_
#define DCP_TOOLS_TO_TORCH_SAVE_H_

#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "checkpoint/state_dict.h"

namespace dcp::tools {

struct LoadFullOptions {
  // FileSystemReaderOptions.
  int thread_count = 1;
  bool verify_checksums = true;
  bool allow_symlinks = false;
};

// The checkpoint in `dir` as one nested state dict of full (unsharded)
// tensors and values, loaded by this process alone.
absl::StatusOr<StateDict> LoadFullStateDict(const std::string& dir,
                                            const LoadFullOptions& options = {});

struct ToTorchSaveOptions {
  std::string dir;   // The checkpoint to read.
  std::string file;  // The torch.save file to write (replaced if present).
  LoadFullOptions load;
  bool sync = true;  // fsync the file.
  // Progress lines; null for none.
  std::ostream* progress = nullptr;
};

// Converts and prints a one-line summary to `out`.
absl::Status DcpToTorchSave(const ToTorchSaveOptions& options,
                            std::ostream& out);

}  // namespace dcp::tools

#endif  // DCP_TOOLS_TO_TORCH_SAVE_H_
