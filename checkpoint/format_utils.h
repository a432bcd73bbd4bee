// -----------------------------------------------------------------------------
// File: checkpoint/format_utils.h
// -----------------------------------------------------------------------------
//
// Whole-checkpoint utilities, as PyTorch 2.6's
// `torch.distributed.checkpoint.format_utils` and
// `_load_state_dict_from_keys` offer them, for one process:
//
//   // Everything in a checkpoint, without knowing its shapes:
//   DCP_ASSIGN_OR_RETURN(StateDict sd, LoadWholeCheckpoint("/ckpt/step_100"));
//   // Only the model:
//   WholeCheckpointOptions options;
//   options.keys = {"model"};
//   DCP_ASSIGN_OR_RETURN(StateDict model, LoadWholeCheckpoint(dir, options));
//   // To and from one torch.save file:
//   DCP_RETURN_IF_ERROR(DcpToTorchSave("/ckpt/step_100", "/tmp/model.pt"));
//   DCP_RETURN_IF_ERROR(TorchSaveToDcp("/tmp/model.pt", "/ckpt/imported"));
//
// LoadWholeCheckpoint builds its destination from `.metadata` alone, as
// PyTorch's `_EmptyStateDictLoadPlanner`: every tensor key a full tensor of
// its saved dtype and global shape, every bytes key its value; each leaf
// then goes to its `planner_data` path, so the result has the original
// nesting ({"model": {...}, "optim": {"state": {...}, "param_groups":
// [...]}}). Dict keys come in sorted flattened-key order (the metadata
// does not keep the original order). Before allocating anything, each
// tensor's declared bytes are checked against the bytes its records occupy
// in the data files actually present, so a `.metadata` that claims more
// than the files hold (hostile, or from another checkpoint) costs no
// memory; list indices in `planner_data` are bounded likewise.
//
// TorchSaveToDcp saves the file's (possibly nested) dict from this process
// alone, as PyTorch's `torch_save_to_dcp` (every tensor whole); loading the
// result with any number of ranks reshards it as usual.
//
// Errors: NotFound if the directory is not a checkpoint, or if `keys`
// names keys the checkpoint does not have (all listed); DataLoss if
// `.metadata` declares tensors larger than their records or list indices
// beyond the bound; the load's errors (DataLoss for corrupt files, ...);
// those of reading and writing the torch.save file (storage/torch_save.h).
//
// Thread safety: free functions; concurrent calls on different paths are
// safe.
#ifndef DCP_CHECKPOINT_FORMAT_UTILS_H_
#define DCP_CHECKPOINT_FORMAT_UTILS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/state_dict.h"
#include "storage/fs_storage.h"

namespace dcp {

struct WholeCheckpointOptions {
  // How the checkpoint is read (threads, checksums, file system, limits).
  FileSystemReaderOptions reader;
  // Empty: every key. Otherwise only the leaves whose FQN, or the FQN of a
  // prefix of their path, is listed: "model" selects "model.fc1.weight",
  // "optim.param_groups" every group's values (PyTorch's `keys`).
  std::vector<std::string> keys;
};

// The checkpoint in `dir` as one nested state dict of full tensors and
// values; see the file comment. The tensors are new CPU tensors owned by
// the result. Read through `options.reader.file_system` (null: the local
// POSIX file system).
absl::StatusOr<StateDict> LoadWholeCheckpoint(
    const std::string& dir, const WholeCheckpointOptions& options = {});

struct DcpToTorchSaveOptions {
  WholeCheckpointOptions load;
  // fsync the file (and its directory after the rename into place).
  bool sync = true;
};

// Writes the whole checkpoint in `dir` as one torch.save file at `file`
// (replaced if present), which Python's `torch.load` opens. `file` is
// written through the same file system as the checkpoint is read
// (`options.load.reader.file_system`). InvalidArgument if `dir` or `file`
// is empty; else LoadWholeCheckpoint's and WriteTorchSave's errors.
absl::Status DcpToTorchSave(const std::string& dir, const std::string& file,
                            const DcpToTorchSaveOptions& options = {});

// Saves the torch.save file `file` (a dict at the top level) as a DCP
// checkpoint in `dir`, from this process alone. `file` is read through
// `options.file_system` (null: the local POSIX file system). InvalidArgument
// if `file` or `dir` is empty; else ReadTorchSave's errors, and the
// writer's (e.g. AlreadyExists if `options.overwrite` is false and `dir`
// holds a checkpoint).
absl::Status TorchSaveToDcp(const std::string& file, const std::string& dir,
                            const FileSystemWriterOptions& options = {});

}  // namespace dcp

#endif  // DCP_CHECKPOINT_FORMAT_UTILS_H_
