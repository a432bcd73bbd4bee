// -----------------------------------------------------------------------------
// File: tools/to_torch_save.h
// -----------------------------------------------------------------------------
//
// `dcp to-torch-save DIR FILE`: PyTorch's `dcp_to_torch_save`, through
// the library's DcpToTorchSave (checkpoint/format_utils.h, which documents
// the conversion and its errors), plus progress lines and a summary.
#ifndef DCP_TOOLS_TO_TORCH_SAVE_H_
#define DCP_TOOLS_TO_TORCH_SAVE_H_

#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dcp::tools {

struct LoadFullOptions {
  // FileSystemReaderOptions.
  int thread_count = 1;
  bool verify_checksums = true;
  bool allow_symlinks = false;
};

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
