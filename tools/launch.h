// -----------------------------------------------------------------------------
// File: tools/launch.h
// -----------------------------------------------------------------------------
//
// `dcp launch`: a minimal torchrun for one machine. Starts `nproc` copies of
// a command, rank r with the torchrun-style environment
//
//   RANK=r  LOCAL_RANK=r  WORLD_SIZE=nproc  LOCAL_WORLD_SIZE=nproc
//   MASTER_ADDR=<master_addr>  MASTER_PORT=<master_port or a free port>
//
// (the rest of the environment is inherited; stdin, stdout and stderr are
// passed through), waits for all of them, and when one fails (non-zero
// exit or killed by a signal) gives the others `grace_period` to end on
// their own (a dcp rank notices a lost peer promptly) before it SIGKILLs
// them.
//
//   LaunchOptions options;
//   options.nproc = 4;
//   options.command = {"bazel-bin/tools/dcp", "demo", "--distributed",
//                      "--dir=/tmp/ckpt"};
//   DCP_ASSIGN_OR_RETURN(LaunchResult result, Launch(options, std::cerr));
//   return result.ok() ? 0 : result.ExitCode();
//
// Errors: InvalidArgument for bad options; Unavailable if no free port can
// be found; Internal if a child cannot be forked. A command that cannot be
// executed is a child that exits with code 127 (its stderr says why).
//
// Thread safety: call from one thread; `Launch` reaps only its own children.
#ifndef DCP_TOOLS_LAUNCH_H_
#define DCP_TOOLS_LAUNCH_H_

#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace dcp::tools {

struct LaunchOptions {
  // Number of processes (ranks), >= 1.
  int nproc = 1;
  std::string master_addr = "127.0.0.1";
  // 0: a free port on this host.
  int master_port = 0;
  // The program (looked up in PATH if it has no '/') and its arguments.
  std::vector<std::string> command;
  // After the first failure, how long the others may still run.
  absl::Duration grace_period = absl::Seconds(10);
};

struct ChildResult {
  int rank = 0;
  int pid = 0;
  // Exactly one of: exited with `exit_code`, or killed by `signal`.
  bool exited = false;
  int exit_code = -1;
  int signal = 0;
  // The launcher SIGKILLed it after another rank failed.
  bool killed_by_launcher = false;

  bool ok() const { return exited && exit_code == 0; }
  // "rank 1 (pid 123) exited with code 3", "... was killed by signal 9
  // (SIGKILL from dcp launch after another rank failed)".
  std::string Describe() const;
};

struct LaunchResult {
  int master_port = 0;
  // By rank.
  std::vector<ChildResult> children;
  // The rank whose failure was seen first, or -1.
  int first_failure = -1;

  bool ok() const;
  // For the launcher's own exit: 0 if every child succeeded, else the exit
  // code of `first_failure` (128 + signal if it was killed).
  int ExitCode() const;
};

// Runs the children; writes one line per failed child (and "launching N
// processes ..." at the start) to `log`.
absl::StatusOr<LaunchResult> Launch(const LaunchOptions& options,
                                    std::ostream& log);

// A TCP port on 127.0.0.1 that was free a moment ago.
absl::StatusOr<int> PickFreePort();

}  // namespace dcp::tools

#endif  // DCP_TOOLS_LAUNCH_H_
