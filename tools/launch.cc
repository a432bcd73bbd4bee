#include "tools/launch.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

extern char** environ;

namespace dcp::tools {
namespace {

// Variables the launcher sets; inherited values of these are dropped.
constexpr const char* kLaunchVars[] = {"RANK",        "LOCAL_RANK",
                                       "WORLD_SIZE",  "LOCAL_WORLD_SIZE",
                                       "MASTER_ADDR", "MASTER_PORT"};

bool IsLaunchVar(absl::string_view entry) {
  for (const char* name : kLaunchVars) {
    if (absl::StartsWith(entry, absl::StrCat(name, "="))) return true;
  }
  return false;
}

// Fills `child` from a waitpid status.
void RecordExit(int wait_status, ChildResult& child) {
  if (WIFEXITED(wait_status)) {
    child.exited = true;
    child.exit_code = WEXITSTATUS(wait_status);
  } else if (WIFSIGNALED(wait_status)) {
    child.exited = false;
    child.signal = WTERMSIG(wait_status);
  }
}

}  // namespace

std::string ChildResult::Describe() const {
  std::string out = absl::StrCat("rank ", rank, " (pid ", pid, ") ");
  if (exited) {
    absl::StrAppend(&out, "exited with code ", exit_code);
  } else {
    absl::StrAppend(&out, "was killed by signal ", signal, " (",
                    strsignal(signal), ")");
    if (killed_by_launcher) {
      absl::StrAppend(&out, " by dcp launch after another rank failed");
    }
  }
  return out;
}

bool LaunchResult::ok() const {
  for (const ChildResult& child : children) {
    if (!child.ok()) return false;
  }
  return true;
}

int LaunchResult::ExitCode() const {
  if (ok()) return 0;
  if (first_failure < 0 ||
      first_failure >= static_cast<int>(children.size())) {
    return 1;
  }
  const ChildResult& child = children[first_failure];
  if (!child.exited) return 128 + child.signal;
  return child.exit_code == 0 ? 1 : child.exit_code;
}

absl::StatusOr<int> PickFreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot pick a free port: socket: ", strerror(errno)));
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const int error = errno;
    close(fd);
    return absl::UnavailableError(
        absl::StrCat("cannot pick a free port: ", strerror(error)));
  }
  close(fd);
  return static_cast<int>(ntohs(addr.sin_port));
}

absl::StatusOr<LaunchResult> Launch(const LaunchOptions& options,
                                    std::ostream& log) {
  if (options.nproc < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--nproc must be at least 1, got ", options.nproc));
  }
  if (options.command.empty()) {
    return absl::InvalidArgumentError(
        "no command to launch (give it after --)");
  }
  if (options.master_port < 0 || options.master_port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--master_port must be in [0, 65535], got ", options.master_port));
  }
  if (options.grace_period < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("the grace period must not be negative");
  }
  LaunchResult result;
  result.master_port = options.master_port;
  if (result.master_port == 0) {
    absl::StatusOr<int> port = PickFreePort();
    if (!port.ok()) return port.status();
    result.master_port = *port;
  }
  log << "dcp launch: starting " << options.nproc << " processes (MASTER_ADDR="
      << options.master_addr << " MASTER_PORT=" << result.master_port
      << ")\n"
      << std::flush;

  // Everything a child needs is built before fork: after fork the child
  // only calls execvpe and _exit.
  std::vector<std::string> base_env;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    if (!IsLaunchVar(*entry)) base_env.emplace_back(*entry);
  }
  std::vector<char*> argv;
  std::vector<std::string> args = options.command;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  std::fflush(nullptr);
  for (int rank = 0; rank < options.nproc; ++rank) {
    std::vector<std::string> env = base_env;
    env.push_back(absl::StrCat("RANK=", rank));
    env.push_back(absl::StrCat("LOCAL_RANK=", rank));
    env.push_back(absl::StrCat("WORLD_SIZE=", options.nproc));
    env.push_back(absl::StrCat("LOCAL_WORLD_SIZE=", options.nproc));
    env.push_back(absl::StrCat("MASTER_ADDR=", options.master_addr));
    env.push_back(absl::StrCat("MASTER_PORT=", result.master_port));
    std::vector<char*> envp;
    for (std::string& entry : env) envp.push_back(entry.data());
    envp.push_back(nullptr);
    const std::string exec_error =
        absl::StrCat("dcp launch: rank ", rank, ": cannot execute ",
                     options.command[0], "\n");

    const pid_t pid = fork();
    if (pid < 0) {
      const int error = errno;
      for (ChildResult& child : result.children) {
        kill(child.pid, SIGKILL);
        waitpid(child.pid, nullptr, 0);
      }
      return absl::InternalError(
          absl::StrCat("dcp launch: fork failed: ", strerror(error)));
    }
    if (pid == 0) {
      execvpe(argv[0], argv.data(), envp.data());
      // Only async-signal-safe calls here.
      ssize_t ignored =
          write(STDERR_FILENO, exec_error.data(), exec_error.size());
      (void)ignored;
      _exit(127);
    }
    ChildResult child;
    child.rank = rank;
    child.pid = pid;
    result.children.push_back(child);
  }

  // Reap children as they end. After the first failure, the others get
  // `grace_period` before they are killed.
  int running = options.nproc;
  absl::Time kill_at = absl::InfiniteFuture();
  while (running > 0) {
    bool reaped = false;
    for (ChildResult& child : result.children) {
      if (child.exited || child.signal != 0) continue;
      int wait_status = 0;
      const pid_t done = waitpid(child.pid, &wait_status, WNOHANG);
      if (done != child.pid) continue;
      reaped = true;
      --running;
      RecordExit(wait_status, child);
      if (!child.ok()) {
        log << "dcp launch: " << child.Describe() << "\n" << std::flush;
        if (result.first_failure < 0) {
          result.first_failure = child.rank;
          if (running > 0) {
            kill_at = absl::Now() + options.grace_period;
            log << "dcp launch: stopping the other ranks (SIGKILL in "
                << absl::FormatDuration(options.grace_period)
                << " unless they end)\n"
                << std::flush;
          }
        }
      }
    }
    if (running > 0 && absl::Now() >= kill_at) {
      for (ChildResult& child : result.children) {
        if (child.exited || child.signal != 0) continue;
        child.killed_by_launcher = true;
        kill(child.pid, SIGKILL);
      }
      kill_at = absl::InfiniteFuture();
    }
    if (!reaped && running > 0) absl::SleepFor(absl::Milliseconds(20));
  }
  return result;
}

}  // namespace dcp::tools
