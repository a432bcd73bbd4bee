// The `dcp` command-line tool. Parses flags, fills the Options of the
// command's library (tools/<command>.h) and runs it; the libraries never
// read flags.
#include <unistd.h>

#include <iostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "distributed/c10d_process_group.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "tools/bench.h"
#include "tools/demo.h"
#include "tools/dist_bench.h"
#include "tools/from_torch_save.h"
#include "tools/inspect.h"
#include "tools/launch.h"
#include "tools/model_state.h"
#include "tools/to_torch_save.h"
#include "tools/verify.h"

DEFINE_string(dir, "",
              "demo, bench: checkpoint directory (default: a fresh directory "
              "under $TMPDIR or /tmp).");
DEFINE_int32(save_ranks, 4, "demo: ranks that save (row-sharded).");
DEFINE_int32(load_ranks, 3, "demo: ranks that load.");
DEFINE_string(load_layout, "column",
              "demo: layout of the load: row, column or grid.");
DEFINE_int64(hidden, 192, "demo: model hidden size.");
DEFINE_int32(layers, 2, "demo: model layers.");
DEFINE_int64(vocab, 5000, "demo: model vocabulary size.");
DEFINE_bool(distributed, false,
            "demo, bench: run as one rank of a multi-process job (RANK, "
            "WORLD_SIZE, MASTER_ADDR, MASTER_PORT set, e.g. by dcp launch or "
            "torchrun); needs --dir (bench: except --workload=memcpy).");
DEFINE_string(workload, "save",
              "bench --distributed: save, load, async_save or memcpy.");
DEFINE_int64(tensors, 16, "bench --distributed: number of float32 tensors.");
DEFINE_int64(rows, 4096, "bench --distributed: rows of each tensor.");
DEFINE_int64(cols, 4096, "bench --distributed: columns of each tensor.");
DEFINE_string(layout, "row",
              "bench --distributed: row (every tensor row-sharded over the "
              "ranks) or round_robin (rank r holds whole tensors i with "
              "i % world == r).");
DEFINE_bool(check_values, true,
            "bench --distributed --workload=load: check every loaded element "
            "(untimed).");
DEFINE_int32(nproc, 1, "launch: number of processes to start.");
DEFINE_int32(master_port, 0, "launch: MASTER_PORT (0: a free port).");
DEFINE_bool(json, false, "inspect, verify: print JSON instead of text.");
DEFINE_int32(world_size, 4,
             "from-torch-save: ranks to shard over; bench: ranks that save "
             "and load.");
DEFINE_int64(size_mb, 256, "bench: approximate tensor data in MiB.");
DEFINE_string(threads, "1",
              "Writer/reader threads per rank. bench: a comma-separated list "
              "(e.g. 1,4) runs every count; other commands use the first.");
DEFINE_string(fsync, "true",
              "fsync data files and metadata on save: true, false, or (bench "
              "only) both.");
DEFINE_bool(reshard, true,
            "bench: also load with another world size and a column layout.");
DEFINE_int32(reshard_world_size, 0,
             "bench: world size of the resharded load (0: world_size - 1).");
DEFINE_bool(cold_cache, false,
            "bench: drop the checkpoint from the page cache before loads.");
DEFINE_bool(verify_checksums, true,
            "to-torch-save, bench --distributed: check the CRC-32 of every "
            "record read.");
DEFINE_bool(allow_symlinks, false,
            "inspect, verify, to-torch-save: read checkpoint files that are symbolic "
            "links (refused by default).");

namespace {

constexpr char kUsage[] =
    R"(distributed checkpoints in PyTorch's DCP format (torch.distributed.checkpoint).

usage: dcp <command> [args] [--flags]

commands:
  demo                       save a model-like state dict (weights + Adam state) with
                             --save_ranks simulated ranks, row-sharded, load it back
                             with --load_ranks ranks in --load_layout, verify every
                             element and print files, bytes, times and GB/s
  inspect DIR [--json]       keys, kinds, dtypes, shapes, chunks, bytes and files of a
                             checkpoint (dcp's or PyTorch's)
  verify DIR [--json]        check a checkpoint without loading it: every record
                             .metadata names (file exists, inside its file, no
                             overlaps, zip layout, CRC-32 of every entry, dtype and
                             shape against .metadata, .dcpcrc block checksums);
                             one OK/BAD line per file, a
                             summary; exit 0 OK, 1 problems found, 2 cannot verify
                             (no or unreadable .metadata); --threads files at once
  to-torch-save DIR FILE     load the whole checkpoint and write it as ONE torch.save
                             file that Python's torch.load opens
  from-torch-save FILE DIR   read a torch.save dict, shard every tensor along dim 0
                             over --world_size ranks and save a checkpoint
  bench                      save / load / resharded-load throughput for --size_mb of
                             tensors, --world_size ranks, --threads and --fsync
  bench --distributed --workload=W --dir=D
                             one rank of a multi-process benchmark (save, load,
                             async_save or memcpy of --tensors x --rows x --cols
                             float32, --layout row or round_robin): one
                             "dcp_bench_rank ..." line per rank, then rank 0's
                             "dcp_bench ..." line (slowest rank's seconds)
  demo --distributed --dir=D  one rank of a multi-process demo (RANK, WORLD_SIZE,
                             MASTER_ADDR, MASTER_PORT from the environment): save
                             row-sharded into D, load back resharded, verify
  launch --nproc=N -- CMD    start N copies of CMD with RANK, LOCAL_RANK, WORLD_SIZE,
                             MASTER_ADDR=127.0.0.1, MASTER_PORT (--master_port or a
                             free port); if one fails, the others are killed after
                             a grace period; exits non-zero if any rank failed

examples:
  dcp demo
  dcp launch --nproc=4 -- dcp demo --distributed --dir=/tmp/ckpt
  dcp demo --dir=/tmp/ckpt --save_ranks=8 --load_ranks=3 --load_layout=grid
  dcp inspect /tmp/ckpt
  dcp inspect /tmp/ckpt --json
  dcp verify /tmp/ckpt --threads=4
  dcp to-torch-save /tmp/ckpt /tmp/model.pt
  dcp from-torch-save /tmp/model.pt /tmp/ckpt2 --world_size=4
  dcp bench --size_mb=256 --world_size=4 --threads=1,4 --fsync=both
  dcp launch --nproc=4 -- dcp bench --distributed --workload=save --dir=/tmp/b

This tool's flags: dcp --help (--helpfull also lists libtorch's and glog's).
Progress lines go to stderr when it is a terminal (verify: at most one a second).
Exit status: 0 on success, 1 on errors, 2 on usage errors (verify: see above).)";

char kHelpShort[] = "--helpshort";

int UsageError(absl::string_view message) {
  std::cerr << "dcp: " << message << "\n\n" << kUsage << "\n";
  return 2;
}

int Fail(const absl::Status& status) {
  LOG(ERROR) << status;
  return 1;
}

absl::StatusOr<std::vector<int>> ParseThreads(absl::string_view text) {
  std::vector<int> counts;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int n = 0;
    if (!absl::SimpleAtoi(part, &n) || n < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--threads: \"", part, "\" is not a positive integer"));
    }
    counts.push_back(n);
  }
  return counts;
}

absl::StatusOr<std::vector<bool>> ParseFsync(absl::string_view text,
                                             bool allow_both) {
  const std::string t = absl::AsciiStrToLower(text);
  if (t == "true" || t == "1" || t == "on") return std::vector<bool>{true};
  if (t == "false" || t == "0" || t == "off") return std::vector<bool>{false};
  if (allow_both && t == "both") return std::vector<bool>{true, false};
  return absl::InvalidArgumentError(
      absl::StrCat("--fsync: \"", text, "\" is not true, false",
                   allow_both ? " or both" : ""));
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage(kUsage);
  // `dcp launch ... -- CMD [ARGS]`: everything after the first "--" is the
  // child's command line, hidden from gflags (it may carry dcp's own flags).
  std::vector<std::string> child_command;
  for (int i = 1; i < argc; ++i) {
    if (absl::string_view(argv[i]) == "--") {
      child_command.assign(argv + i + 1, argv + argc);
      argv[i] = nullptr;
      argc = i;
      break;
    }
  }
  // gflags' --help lists every flag linked in, most of them libtorch's and
  // glog's; show dcp's own (those of this file, gflags' --helpshort) and
  // leave the full list to --helpfull.
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--help" || arg == "-help") argv[i] = kHelpShort;
  }
  gflags::ParseCommandLineFlags(&argc, &argv, /*remove_flags=*/true);
  // Log to the terminal, not to files under /tmp, and only warnings and
  // errors (the library logs one INFO line per checkpoint phase), unless
  // asked otherwise (--logtostderr=false, --minloglevel=0).
  if (gflags::GetCommandLineFlagInfoOrDie("logtostderr").is_default) {
    FLAGS_logtostderr = true;
  }
  if (gflags::GetCommandLineFlagInfoOrDie("minloglevel").is_default) {
    FLAGS_minloglevel = google::GLOG_WARNING;
  }
  google::InitGoogleLogging(argv[0]);

  if (argc < 2) return UsageError("no command given");
  const std::string command = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);
  std::ostream* progress = isatty(STDERR_FILENO) ? &std::cerr : nullptr;

  absl::StatusOr<std::vector<int>> threads = ParseThreads(FLAGS_threads);
  if (!threads.ok()) return UsageError(threads.status().message());
  absl::StatusOr<std::vector<bool>> fsync =
      ParseFsync(FLAGS_fsync,
                 /*allow_both=*/command == "bench" && !FLAGS_distributed);
  if (!fsync.ok()) return UsageError(fsync.status().message());

  auto expect_args = [&](size_t n) { return args.size() == n; };
  absl::Status status;
  if (command == "launch") {
    // `dcp launch --nproc=N -- <command> [args]`.
    if (!expect_args(0)) return UsageError("launch: put the command after --");
    const std::vector<std::string>& child = child_command;
    if (child.empty()) return UsageError("launch needs a command after --");
    dcp::tools::LaunchOptions options;
    options.nproc = FLAGS_nproc;
    options.master_port = FLAGS_master_port;
    options.command = child;
    absl::StatusOr<dcp::tools::LaunchResult> result =
        dcp::tools::Launch(options, std::cerr);
    if (!result.ok()) return Fail(result.status());
    if (!result->ok()) {
      std::cerr << "dcp launch: failed:";
      for (const dcp::tools::ChildResult& c : result->children) {
        if (!c.ok()) std::cerr << "\n  " << c.Describe();
      }
      std::cerr << "\n";
    }
    return result->ExitCode();
  }
  if (command == "demo" && FLAGS_distributed) {
    if (!expect_args(0)) return UsageError("demo takes no arguments");
    if (FLAGS_dir.empty()) return UsageError("demo --distributed needs --dir");
    dcp::tools::DemoOptions options;
    options.dir = FLAGS_dir;
    absl::StatusOr<dcp::tools::Layout> layout =
        dcp::tools::ParseLayout(FLAGS_load_layout);
    if (!layout.ok()) return UsageError(layout.status().message());
    options.load_layout = *layout;
    options.model.hidden = FLAGS_hidden;
    options.model.layers = FLAGS_layers;
    options.model.vocab = FLAGS_vocab;
    options.thread_count = threads->front();
    options.sync_files = fsync->front();
    absl::StatusOr<std::unique_ptr<dcp::C10dProcessGroup>> pg =
        dcp::C10dProcessGroup::CreateFromEnv();
    if (!pg.ok()) return Fail(pg.status());
    status = dcp::tools::RunDistributedDemo(
        options, std::shared_ptr<dcp::ProcessGroup>(*std::move(pg)),
        std::cout);
  } else if (command == "demo") {
    if (!expect_args(0)) return UsageError("demo takes no arguments");
    dcp::tools::DemoOptions options;
    options.dir = FLAGS_dir;
    options.save_ranks = FLAGS_save_ranks;
    options.load_ranks = FLAGS_load_ranks;
    absl::StatusOr<dcp::tools::Layout> layout =
        dcp::tools::ParseLayout(FLAGS_load_layout);
    if (!layout.ok()) return UsageError(layout.status().message());
    options.load_layout = *layout;
    options.model.hidden = FLAGS_hidden;
    options.model.layers = FLAGS_layers;
    options.model.vocab = FLAGS_vocab;
    options.thread_count = threads->front();
    options.sync_files = fsync->front();
    options.progress = progress;
    status = dcp::tools::RunDemo(options, std::cout);
  } else if (command == "inspect") {
    if (!expect_args(1)) return UsageError("inspect takes one directory");
    dcp::tools::InspectOptions options;
    options.dir = args[0];
    options.json = FLAGS_json;
    options.allow_symlinks = FLAGS_allow_symlinks;
    status = dcp::tools::InspectCheckpoint(options, std::cout);
  } else if (command == "verify") {
    if (!expect_args(1)) return UsageError("verify takes one directory");
    dcp::tools::VerifyCommandOptions options;
    options.dir = args[0];
    options.json = FLAGS_json;
    options.thread_count = threads->front();
    options.allow_symlinks = FLAGS_allow_symlinks;
    options.progress = progress;
    absl::StatusOr<bool> verified =
        dcp::tools::VerifyCommand(options, std::cout);
    if (!verified.ok()) {
      std::cerr << "dcp verify: cannot verify " << args[0] << ": "
                << verified.status() << "\n";
    }
    return dcp::tools::VerifyExitCode(verified);
  } else if (command == "to-torch-save") {
    if (!expect_args(2)) {
      return UsageError("to-torch-save takes a directory and a file");
    }
    dcp::tools::ToTorchSaveOptions options;
    options.dir = args[0];
    options.file = args[1];
    options.load.thread_count = threads->front();
    options.load.verify_checksums = FLAGS_verify_checksums;
    options.load.allow_symlinks = FLAGS_allow_symlinks;
    options.sync = fsync->front();
    options.progress = progress;
    status = dcp::tools::DcpToTorchSave(options, std::cout);
  } else if (command == "from-torch-save") {
    if (!expect_args(2)) {
      return UsageError("from-torch-save takes a file and a directory");
    }
    dcp::tools::FromTorchSaveOptions options;
    options.file = args[0];
    options.dir = args[1];
    options.world_size = FLAGS_world_size;
    options.thread_count = threads->front();
    options.sync_files = fsync->front();
    options.progress = progress;
    status = dcp::tools::TorchSaveToDcp(options, std::cout);
  } else if (command == "bench" && FLAGS_distributed) {
    if (!expect_args(0)) return UsageError("bench takes no arguments");
    dcp::tools::DistBenchOptions options;
    absl::StatusOr<dcp::tools::DistBenchWorkload> workload =
        dcp::tools::ParseDistBenchWorkload(FLAGS_workload);
    if (!workload.ok()) return UsageError(workload.status().message());
    absl::StatusOr<dcp::tools::DistBenchLayout> layout =
        dcp::tools::ParseDistBenchLayout(FLAGS_layout);
    if (!layout.ok()) return UsageError(layout.status().message());
    options.workload = *workload;
    options.layout = *layout;
    options.dir = FLAGS_dir;
    options.tensors = FLAGS_tensors;
    options.rows = FLAGS_rows;
    options.cols = FLAGS_cols;
    options.thread_count = threads->front();
    options.sync_files = fsync->front();
    options.verify_checksums = FLAGS_verify_checksums;
    options.check_values = FLAGS_check_values;
    absl::StatusOr<std::unique_ptr<dcp::C10dProcessGroup>> pg =
        dcp::C10dProcessGroup::CreateFromEnv();
    if (!pg.ok()) return Fail(pg.status());
    status = dcp::tools::RunDistributedBench(
        options, std::shared_ptr<dcp::ProcessGroup>(*std::move(pg)),
        std::cout);
  } else if (command == "bench") {
    if (!expect_args(0)) return UsageError("bench takes no arguments");
    dcp::tools::BenchOptions options;
    options.size_mb = FLAGS_size_mb;
    options.world_size = FLAGS_world_size;
    options.thread_counts = *threads;
    options.fsync_modes = *fsync;
    options.reshard = FLAGS_reshard;
    options.reshard_world_size = FLAGS_reshard_world_size;
    options.cold_cache = FLAGS_cold_cache;
    options.dir = FLAGS_dir;
    options.progress = progress;
    status = dcp::tools::RunBench(options, std::cout);
  } else {
    return UsageError(absl::StrCat("unknown command \"", command, "\""));
  }
  if (!status.ok()) return Fail(status);
  return 0;
}
