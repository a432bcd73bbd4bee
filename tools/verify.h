// -----------------------------------------------------------------------------
// File: tools/verify.h
// -----------------------------------------------------------------------------
//
// `dcp verify DIR [--json] [--threads=N]`: checks a checkpoint directory
// (dcp's or PyTorch's) without loading it, through `VerifyCheckpoint`
// (storage/verify.h, which lists every check): every record `.metadata`
// references, its zip layout, CRC-32s, dtype and shape.
//
// Human-readable output: one line for `.metadata`, one per data file, then
// a summary:
//
//   checkpoint: /tmp/ckpt
//   OK  .metadata  5 keys (4 tensors, 1 bytes values)  14 records
//   OK  __0_0.distcp  5 records  3.46 KiB
//   BAD __1_0.distcp: crc mismatch in entry "archive/data/0" of the record
//       of "row" chunk [2, 0] at offset 1116 (byte 1180)      <- one line
//       __1_0.distcp: <each further problem of the file, indented>
//   summary: 4 data files, 14 records, 15.64 KiB: 1 problem in 1 file
//
// (`summary: ...: OK` when there is none.)
//
// `--json` prints one JSON object instead:
//
//   {"checkpoint": "...", "ok": false,
//    "files": [{"name": ".metadata" or the data file, "exists", "size",
//               "records", "record_bytes", "ok", "problems": N}],
//    "problems": [{"file", "kind", "message", "description", "key",
//                  "chunk_offsets", "record_offset", "entry",
//                  "byte_offset", "detail"}],  (null for what is not known)
//    "totals": {"files", "bad_files", "records", "bytes", "problems"}}
//
// "description" is the problem as the text output shows it; "kind" is
// `VerifyProblemKindName`. Progress: when `progress` is set (the tool sets
// it to stderr when stderr is a terminal), a "verifying... 3/5 files,
// 1.20 GiB of 4.00 GiB" line is rewritten at most once per
// `progress_interval`, starting after the first interval, so short runs
// print none.
//
// Exit codes (`VerifyExitCode`): 0 when everything is OK, 1 when problems
// were found, 2 when the checkpoint cannot be verified at all (no or
// unreadable `.metadata`, bad options).
#ifndef DCP_TOOLS_VERIFY_H_
#define DCP_TOOLS_VERIFY_H_

#include <ostream>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace dcp::tools {

struct VerifyCommandOptions {
  // The checkpoint directory.
  std::string dir;
  bool json = false;
  // VerifyOptions::thread_count.
  int thread_count = 1;
  // VerifyOptions::allow_symlinks.
  bool allow_symlinks = false;
  // Progress lines; null for none. Must outlive the call.
  std::ostream* progress = nullptr;
  absl::Duration progress_interval = absl::Seconds(1);
};

// Verifies and prints the report to `out`. True if the checkpoint is OK,
// false if problems were found (they are in the output). Errors: those of
// `VerifyCheckpoint` (InvalidArgument for an empty `dir`), meaning the
// checkpoint could not be verified; nothing is printed to `out` then.
absl::StatusOr<bool> VerifyCommand(const VerifyCommandOptions& options,
                                   std::ostream& out);

// 0 (OK), 1 (problems found) or 2 (cannot verify) for `VerifyCommand`'s
// result.
int VerifyExitCode(const absl::StatusOr<bool>& result);

}  // namespace dcp::tools

#endif  // DCP_TOOLS_VERIFY_H_
