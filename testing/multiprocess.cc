#include "testing/multiprocess.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/fault_point.h"
#include "glog/logging.h"
#include "gtest/gtest.h"

extern char** environ;

namespace dcp::test {
namespace {

// Set by the parent in each worker's environment.
constexpr char kRankVar[] = "DCP_WORKER_RANK";
constexpr char kWorldSizeVar[] = "DCP_WORKER_WORLD_SIZE";
constexpr char kTestVar[] = "DCP_WORKER_TEST";
constexpr char kDeadlineVar[] = "DCP_WORKER_DEADLINE_UNIX_NS";

// Not inherited by workers: Bazel/gtest per-process outputs (a worker must
// not overwrite the parent's test.xml or shard files) and the variables
// the parent sets itself.
bool DropFromWorkerEnv(absl::string_view entry) {
  absl::string_view name = entry.substr(0, entry.find('='));
  static constexpr absl::string_view kDropped[] = {
      "XML_OUTPUT_FILE",
      "TEST_PREMATURE_EXIT_FILE",
      "TEST_SHARD_INDEX",
      "TEST_TOTAL_SHARDS",
      "TEST_SHARD_STATUS_FILE",
      "TEST_WARNINGS_OUTPUT_FILE",
      "TEST_INFRASTRUCTURE_FAILURE_FILE",
      "TEST_UNUSED_RUNFILES_LOG_FILE",
      "RANK",
      "WORLD_SIZE",
      "LOCAL_RANK",
      "MASTER_ADDR",
      "MASTER_PORT",
      "DCP_FILE_STORE",
  };
  for (absl::string_view dropped : kDropped) {
    if (name == dropped) return true;
  }
  return absl::StartsWith(name, "GTEST_") ||
         absl::StartsWith(name, "DCP_WORKER_");
}

std::optional<std::string> GetEnv(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr) return std::nullopt;
  return std::string(value);
}

int GetIntEnv(const char* name) {
  int value = 0;
  std::optional<std::string> text = GetEnv(name);
  CHECK(text.has_value() && absl::SimpleAtoi(*text, &value))
      << "worker environment variable " << name << " is missing or bad";
  return value;
}

absl::StatusOr<std::string> SelfExecutable() {
  char buffer[PATH_MAX + 1];
  ssize_t n = readlink("/proc/self/exe", buffer, PATH_MAX);
  if (n < 0) {
    return absl::InternalError(
        absl::StrCat("readlink(/proc/self/exe): ", std::strerror(errno)));
  }
  return std::string(buffer, n);
}

// A port that was free a moment ago (bind to port 0, read it, close).
absl::StatusOr<int> PickFreePort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  }
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    int error = errno;
    close(fd);
    return absl::InternalError(
        absl::StrCat("bind/getsockname: ", std::strerror(error)));
  }
  close(fd);
  return ntohs(address.sin_port);
}

std::string TempDir() {
  std::optional<std::string> dir = GetEnv("TEST_TMPDIR");
  return dir.has_value() && !dir->empty() ? *dir : std::string("/tmp");
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream content;
  content << in.rdbuf();
  return content.str();
}

// pidfd_open(2), or -1 where unavailable.
int OpenPidFd(pid_t pid) {
#ifdef SYS_pidfd_open
  return static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
#else
  return -1;
#endif
}

void RecordExit(int status, WorkerResult& result) {
  if (WIFEXITED(status)) {
    result.exited = true;
    result.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result.exited = false;
    result.signal = WTERMSIG(status);
  }
}

[[noreturn]] void RunAsWorker(
    const MultiprocessOptions& options,
    absl::FunctionRef<void(const WorkerContext&)> body,
    const std::string& test_name) {
  std::optional<std::string> expected_test = GetEnv(kTestVar);
  CHECK(expected_test.has_value() && *expected_test == test_name)
      << "worker for test " << expected_test.value_or("?")
      << " reached RunWorkers in test " << test_name;
  WorkerContext context;
  context.rank = GetIntEnv(kRankVar);
  context.world_size = GetIntEnv(kWorldSizeVar);
  context.file_store_path = GetEnv("DCP_FILE_STORE").value_or("");
  context.master_addr = GetEnv("MASTER_ADDR").value_or("");
  context.master_port = GetIntEnv("MASTER_PORT");
  int64_t deadline_ns = 0;
  CHECK(absl::SimpleAtoi(GetEnv(kDeadlineVar).value_or(""), &deadline_ns));
  context.deadline = absl::FromUnixNanos(deadline_ns);

  std::optional<SigkillAtFaultPoint> killer;
  for (const SigkillAt& kill : options.sigkill_at) {
    if (kill.rank == context.rank) killer.emplace(kill.fault_point, kill.nth);
  }
  {
    ScopedFaultPointHandler scoped(killer.has_value() ? &*killer : nullptr);
    body(context);
  }
  const int code = ::testing::Test::HasFailure() ? 1 : 0;
  std::fprintf(stderr, "[worker rank %d] body finished, exiting with %d\n",
               context.rank, code);
  std::fflush(nullptr);
  std::exit(code);
}

}  // namespace

std::string WorkerResult::Describe() const {
  std::string outcome;
  if (killed_at_deadline) {
    outcome = "was still running at the deadline and was SIGKILLed";
  } else if (exited) {
    outcome = absl::StrCat("exited with code ", exit_code);
  } else {
    outcome = absl::StrCat("was killed by signal ", signal, " (",
                           strsignal(signal), ")");
  }
  return absl::StrFormat("rank %d (pid %d) %s after %s", rank, pid, outcome,
                         absl::FormatDuration(elapsed));
}

void PrintTo(const WorkerResult& result, std::ostream* os) {
  *os << result.Describe();
  constexpr size_t kTail = 8000;
  absl::string_view output = result.output;
  if (output.size() > kTail) output = output.substr(output.size() - kTail);
  *os << "; output" << (output.size() < result.output.size() ? " (tail)" : "")
      << ":\n"
      << output;
}

bool IsWorker() { return std::getenv(kRankVar) != nullptr; }

void SigkillThisProcess(absl::string_view why) {
  std::fprintf(stderr, "raising SIGKILL: %.*s\n", static_cast<int>(why.size()),
               why.data());
  std::fflush(nullptr);
  raise(SIGKILL);
  _exit(137);  // Not reached.
}

SigkillAtFaultPoint::SigkillAtFaultPoint(std::string fault_point, int nth)
    : fault_point_(std::move(fault_point)), nth_(nth) {}

absl::Status SigkillAtFaultPoint::OnFaultPoint(absl::string_view name) {
  if (name != fault_point_) return absl::OkStatus();
  if (visits_.fetch_add(1) + 1 == nth_) {
    SigkillThisProcess(absl::StrCat("fault point \"", name, "\" visit ", nth_));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<WorkerResult>> RunWorkers(
    const MultiprocessOptions& options,
    absl::FunctionRef<void(const WorkerContext&)> body) {
  const ::testing::TestInfo* info =
      ::testing::UnitTest::GetInstance()->current_test_info();
  if (info == nullptr) {
    return absl::FailedPreconditionError(
        "RunWorkers must be called from a test body");
  }
  const std::string test_name =
      absl::StrCat(info->test_suite_name(), ".", info->name());
  if (IsWorker()) RunAsWorker(options, body, test_name);

  if (options.world_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "world_size must be at least 1, got ", options.world_size));
  }
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("timeout must be positive");
  }
  for (const SigkillAt& kill : options.sigkill_at) {
    if (kill.rank < 0 || kill.rank >= options.world_size || kill.nth < 1) {
      return absl::InvalidArgumentError(
          absl::StrFormat("bad sigkill_at {rank %d, \"%s\", nth %d}", kill.rank,
                          kill.fault_point, kill.nth));
    }
  }
  absl::StatusOr<std::string> exe = SelfExecutable();
  if (!exe.ok()) return exe.status();
  absl::StatusOr<int> port = PickFreePort();
  if (!port.ok()) return port.status();

  static int run_counter = 0;
  const std::string run_id = absl::StrCat(getpid(), "_", run_counter++);
  const std::string dir = TempDir();
  std::string file_store;
  if (options.rendezvous == MultiprocessOptions::Rendezvous::kFileStore) {
    file_store = absl::StrCat(dir, "/dcp_multiprocess_", run_id, ".store");
    unlink(file_store.c_str());
  }
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + options.timeout;

  std::vector<std::string> base_env;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    if (!DropFromWorkerEnv(*entry)) base_env.emplace_back(*entry);
  }
  std::vector<std::string> args = {*exe,
                                   absl::StrCat("--gtest_filter=", test_name)};
  if (absl::StrContains(test_name, "DISABLED_")) {
    args.push_back("--gtest_also_run_disabled_tests");
  }
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  std::vector<WorkerResult> results(options.world_size);
  std::vector<std::string> log_paths(options.world_size);
  std::vector<int> pidfds(options.world_size, -1);
  std::vector<bool> running(options.world_size, false);
  const pid_t parent = getpid();
  absl::Status spawn_error;
  for (int rank = 0; rank < options.world_size; ++rank) {
    std::vector<std::string> env = base_env;
    env.push_back(absl::StrCat(kRankVar, "=", rank));
    env.push_back(absl::StrCat(kWorldSizeVar, "=", options.world_size));
    env.push_back(absl::StrCat(kTestVar, "=", test_name));
    env.push_back(absl::StrCat(kDeadlineVar, "=", absl::ToUnixNanos(deadline)));
    env.push_back(absl::StrCat("RANK=", rank));
    env.push_back(absl::StrCat("LOCAL_RANK=", rank));
    env.push_back(absl::StrCat("WORLD_SIZE=", options.world_size));
    env.push_back("MASTER_ADDR=127.0.0.1");
    env.push_back(absl::StrCat("MASTER_PORT=", *port));
    if (!file_store.empty()) {
      env.push_back(absl::StrCat("DCP_FILE_STORE=", file_store));
    }
    std::vector<char*> envp;
    for (std::string& entry : env) envp.push_back(entry.data());
    envp.push_back(nullptr);
    log_paths[rank] =
        absl::StrCat(dir, "/dcp_multiprocess_", run_id, "_rank", rank, ".log");
    const char* log_path = log_paths[rank].c_str();

    results[rank].rank = rank;
    pid_t pid = fork();
    if (pid < 0) {
      spawn_error = absl::InternalError(
          absl::StrCat("fork for rank ", rank, ": ", std::strerror(errno)));
      break;
    }
    if (pid == 0) {
      // Child: async-signal-safe calls only until execve.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(126);
      int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd >= 0) {
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
      }
      execve(argv[0], argv.data(), envp.data());
      _exit(127);
    }
    results[rank].pid = pid;
    running[rank] = true;
    pidfds[rank] = OpenPidFd(pid);
  }

  // Wait for every worker until the deadline.
  auto reap = [&](int rank, int wait_flags) {
    int status = 0;
    pid_t reaped = waitpid(results[rank].pid, &status, wait_flags);
    if (reaped != results[rank].pid) return false;
    RecordExit(status, results[rank]);
    results[rank].elapsed = absl::Now() - start;
    running[rank] = false;
    if (pidfds[rank] >= 0) close(pidfds[rank]);
    pidfds[rank] = -1;
    return true;
  };
  auto any_running = [&] {
    for (bool r : running) {
      if (r) return true;
    }
    return false;
  };
  while (any_running() && spawn_error.ok()) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) break;
    std::vector<pollfd> fds;
    bool all_have_pidfd = true;
    for (int rank = 0; rank < options.world_size; ++rank) {
      if (!running[rank]) continue;
      if (pidfds[rank] < 0) all_have_pidfd = false;
      if (pidfds[rank] >= 0) fds.push_back(pollfd{pidfds[rank], POLLIN, 0});
    }
    // Without pidfds (old kernels), poll waitpid every 20 ms.
    int timeout_ms = all_have_pidfd
                         ? static_cast<int>(std::min<int64_t>(
                               absl::ToInt64Milliseconds(left) + 1, INT_MAX))
                         : 20;
    int ready = poll(fds.data(), fds.size(), timeout_ms);
    if (ready < 0 && errno != EINTR) {
      spawn_error =
          absl::InternalError(absl::StrCat("poll: ", std::strerror(errno)));
      break;
    }
    for (int rank = 0; rank < options.world_size; ++rank) {
      if (running[rank]) reap(rank, WNOHANG);
    }
  }
  for (int rank = 0; rank < options.world_size; ++rank) {
    if (!running[rank]) continue;
    if (spawn_error.ok()) results[rank].killed_at_deadline = true;
    kill(results[rank].pid, SIGKILL);
    reap(rank, 0);
  }

  for (int rank = 0; rank < options.world_size; ++rank) {
    if (results[rank].pid == 0) continue;
    results[rank].output = ReadFile(log_paths[rank]);
    std::cerr << "======== worker " << results[rank].Describe() << " ========\n"
              << results[rank].output << "======== end of worker rank " << rank
              << " ========\n";
  }
  if (!spawn_error.ok()) return spawn_error;
  return results;
}

}  // namespace dcp::test
