// -----------------------------------------------------------------------------
// File: tools/inspect.h
// -----------------------------------------------------------------------------
//
// `dcp inspect DIR [--json]`: what a checkpoint directory (written by dcp or
// by PyTorch's DCP) holds, from its `.metadata` and a listing of the
// directory. Reads no data file.
//
// Human-readable output: a header (directory, format version, save id),
// then one row per key in sorted order, with one indented row per saved
// chunk of a tensor:
//
//   KEY / CHUNK      KIND    DTYPE    SHAPE   CHUNKS  BYTES     FILE          OFFSET
//   col              tensor  float32  [4, 6]       4  4.61 KiB
//     [0, 0] +[4, 2]                                  1.15 KiB  __0_0.distcp    8640
//   ...
//   step             bytes                         1     864 B  __1_0.distcp       0
//
// followed by totals and the files with their sizes. BYTES are the sizes of
// the stored records (torch.save zips), OFFSET their byte offsets in FILE.
//
// `--json` prints one JSON object instead:
//
//   {"checkpoint": "...", "version": "1.0.0" or null,
//    "storage_meta": {"checkpoint_id": ..., "save_id": ..., "load_id": ...}
//                    or null,
//    "keys": [{"key", "kind": "tensor", "path": [...], "dtype", "shape",
//              "requires_grad", "bytes", "chunks": [{"offsets", "sizes",
//              "file", "offset", "length"}]},
//             {"key", "kind": "bytes", "path", "bytes", "file", "offset",
//              "length"}],
//    "total_bytes": N, "files": [{"name", "size"}], "total_file_bytes": N}
//
// A chunk without a storage entry shows FILE "<missing>" (null in JSON).
//
// Only regular files are listed (FIFOs, sockets, devices and directories
// are left out).
//
// Errors: NotFound if `dir` holds no `.metadata`; DataLoss for an
// unreadable `.metadata`; FailedPrecondition if `.metadata` is not a
// regular file (a FIFO fails at once, never hangs) or is a symbolic link
// without `allow_symlinks`; file-system errors listing the directory.
#ifndef DCP_TOOLS_INSPECT_H_
#define DCP_TOOLS_INSPECT_H_

#include <ostream>
#include <string>

#include "absl/status/status.h"

namespace dcp::tools {

struct InspectOptions {
  // The checkpoint directory.
  std::string dir;
  bool json = false;
  // Read a `.metadata` that is a symbolic link
  // (FileSystemReaderOptions::allow_symlinks).
  bool allow_symlinks = false;
};

absl::Status InspectCheckpoint(const InspectOptions& options,
                               std::ostream& out);

}  // namespace dcp::tools

#endif  // DCP_TOOLS_INSPECT_H_
