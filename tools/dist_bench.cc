#include "tools/dist_bench.h"

#include <ATen/ATen.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>  // NOLINT(build/c++11): a monotonic clock for timing
#include <cstdint>
#include <cstring>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "checkpoint/checkpointer.h"
#include "core/future.h"
#include "core/metadata.h"
#include "core/sharding.h"
#include "core/state_dict.h"
#include "core/status.h"
#include "storage/fs_storage.h"

namespace dcp::tools {
namespace {

// Rows per block when checking loaded values: bounds the expected-value
// temporaries to a few MiB.
constexpr int64_t kCheckRows = 64;

// One tensor (or row shard) this rank holds.
struct LocalTensor {
  int64_t index = 0;
  int64_t row0 = 0;
  at::Tensor tensor;
};

// Rows [row0, row0 + nrows) of tensor `index`: see the file comment of
// dist_bench.h for the formula.
at::Tensor ExpectedRows(int64_t index, int64_t row0, int64_t nrows,
                        int64_t cols) {
  at::Tensor r =
      at::arange(row0, row0 + nrows, at::kLong).mul_(cols).unsqueeze(1);
  at::Tensor c = at::arange(cols, at::kLong).unsqueeze(0);
  return (r + c).add_(index * 7919).remainder_(65521).to(at::kFloat);
}

// This rank's state dict, and its tensors in `locals`. `zeros`: load
// destinations instead of the values.
absl::StatusOr<StateDict> MakeRankStateDict(const DistBenchOptions& options,
                                            int rank, int world, bool zeros,
                                            std::vector<LocalTensor>& locals) {
  StateDict model;
  const Shape global = {options.rows, options.cols};
  for (int64_t i = 0; i < options.tensors; ++i) {
    int64_t row0 = 0;
    int64_t nrows = options.rows;
    if (options.layout == DistBenchLayout::kRows) {
      DCP_ASSIGN_OR_RETURN(ChunkStorageMetadata box,
                           ShardBoxAlongDim(global, 0, rank, world));
      row0 = box.offsets[0];
      nrows = box.sizes[0];
    } else if (i % world != rank) {
      continue;
    }
    at::Tensor t = zeros ? at::zeros({nrows, options.cols}, at::kFloat)
                         : ExpectedRows(i, row0, nrows, options.cols);
    locals.push_back(LocalTensor{i, row0, t});
    const std::string key = absl::StrCat("t", i);
    if (options.layout == DistBenchLayout::kRows) {
      ShardedTensor sharded;
      sharded.global_size = global;
      sharded.local_shards.push_back(Shard{t, {row0, 0}});
      model.Set(key, std::move(sharded));
    } else {
      model.Set(key, std::move(t));
    }
  }
  StateDict state_dict;
  state_dict.Set("model", std::move(model));
  return state_dict;
}

// Times intervals with the monotonic clock (absl::Now is the wall clock,
// which may step).
class Stopwatch {
 public:
  Stopwatch() : start_(std::chrono::steady_clock::now()) {}
  absl::Duration Elapsed() const {
    return absl::FromChrono(std::chrono::steady_clock::now() - start_);
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

int64_t TensorBytes(const std::vector<LocalTensor>& locals) {
  int64_t bytes = 0;
  for (const LocalTensor& l : locals) {
    bytes += l.tensor.numel() * static_cast<int64_t>(l.tensor.element_size());
  }
  return bytes;
}

absl::Status CheckValues(const std::vector<LocalTensor>& locals, int rank,
                         int64_t cols) {
  for (const LocalTensor& l : locals) {
    const int64_t nrows = l.tensor.size(0);
    for (int64_t b = 0; b < nrows; b += kCheckRows) {
      const int64_t n = std::min(kCheckRows, nrows - b);
      if (!at::equal(l.tensor.narrow(0, b, n),
                     ExpectedRows(l.index, l.row0 + b, n, cols))) {
        return absl::DataLossError(absl::StrCat(
            "rank ", rank, ": tensor model.t", l.index, " rows [",
            l.row0 + b, ", ", l.row0 + b + n, ") differ from what was saved"));
      }
    }
  }
  return absl::OkStatus();
}

// Copies every local tensor's bytes into one pre-touched buffer, after a
// barrier; returns the time of the copies.
absl::StatusOr<absl::Duration> TimeMemcpy(
    const std::vector<LocalTensor>& locals, ProcessGroup& pg,
    const DistBenchOptions& options) {
  const int64_t bytes = TensorBytes(locals);
  std::vector<char> destination(static_cast<size_t>(bytes));
  std::memset(destination.data(), 1, destination.size());
  DCP_RETURN_IF_ERROR(pg.Barrier("dcp.bench.memcpy",
                                 absl::Now() + options.collective_timeout));
  const Stopwatch stopwatch;
  char* out = destination.data();
  for (const LocalTensor& l : locals) {
    const size_t n = l.tensor.numel() * l.tensor.element_size();
    if (n == 0) continue;
    std::memcpy(out, l.tensor.data_ptr(), n);
    out += n;
  }
  const absl::Duration elapsed = stopwatch.Elapsed();
  // Keeps the copy observable.
  if (bytes > 0 && destination[static_cast<size_t>(bytes) - 1] == 2) {
    return absl::InternalError("unreachable");
  }
  return elapsed;
}

int64_t MaxRssKb() {
  struct rusage usage;
  if (getrusage(RUSAGE_SELF, &usage) != 0) return 0;
  return usage.ru_maxrss;
}

// One rank's figures; `extra` are the workload's additional durations.
struct RankResult {
  absl::Duration seconds;
  int64_t bytes = 0;
  int64_t max_rss_kb = 0;
  // Peak resident set size before the state dict was built: the process's
  // own baseline (libtorch and the process group).
  int64_t start_rss_kb = 0;
  std::vector<std::pair<std::string, absl::Duration>> extra;
};

std::string SecondsField(absl::Duration d) {
  return absl::StrFormat("%.6f", absl::ToDoubleSeconds(d));
}

// "seconds=.. bytes=.. max_rss_kb=.. [name=..]".
std::string Fields(const RankResult& r) {
  std::string s =
      absl::StrCat("seconds=", SecondsField(r.seconds), " bytes=", r.bytes);
  for (const auto& [name, d] : r.extra) {
    absl::StrAppend(&s, " ", name, "=", SecondsField(d));
  }
  absl::StrAppend(&s, " max_rss_kb=", r.max_rss_kb,
                  " start_rss_kb=", r.start_rss_kb);
  return s;
}

// Parses what `Fields` printed, for rank 0's aggregate.
absl::StatusOr<RankResult> ParseFields(absl::string_view text) {
  RankResult r;
  for (absl::string_view field : absl::StrSplit(text, ' ')) {
    std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(field, absl::MaxSplits('=', 1));
    double seconds = 0;
    if (kv.first == "bytes" || kv.first == "max_rss_kb" ||
        kv.first == "start_rss_kb") {
      int64_t n = 0;
      if (!absl::SimpleAtoi(kv.second, &n)) {
        return absl::InternalError(absl::StrCat("bad field ", field));
      }
      (kv.first == "bytes"        ? r.bytes
       : kv.first == "max_rss_kb" ? r.max_rss_kb
                                  : r.start_rss_kb) = n;
    } else if (absl::SimpleAtod(kv.second, &seconds)) {
      const absl::Duration d = absl::Seconds(seconds);
      if (kv.first == "seconds") {
        r.seconds = d;
      } else {
        r.extra.emplace_back(std::string(kv.first), d);
      }
    } else {
      return absl::InternalError(absl::StrCat("bad field ", field));
    }
  }
  return r;
}

absl::StatusOr<std::unique_ptr<Checkpointer>> MakeCheckpointer(
    const DistBenchOptions& options, std::shared_ptr<ProcessGroup> pg,
    bool save) {
  std::shared_ptr<StorageWriter> writer;
  std::shared_ptr<StorageReader> reader;
  if (save) {
    FileSystemWriterOptions writer_options;
    writer_options.thread_count = options.thread_count;
    writer_options.sync_files = options.sync_files;
    DCP_ASSIGN_OR_RETURN(writer,
                         FileSystemWriter::Create(options.dir, writer_options));
  } else {
    FileSystemReaderOptions reader_options;
    reader_options.thread_count = options.thread_count;
    reader_options.verify_checksums = options.verify_checksums;
    DCP_ASSIGN_OR_RETURN(reader,
                         FileSystemReader::Create(options.dir, reader_options));
  }
  CheckpointerOptions checkpointer_options;
  checkpointer_options.process_group = std::move(pg);
  checkpointer_options.collective_timeout = options.collective_timeout;
  return Checkpointer::Create(std::move(writer), std::move(reader),
                              checkpointer_options);
}

absl::Status Validate(const DistBenchOptions& options) {
  if (options.tensors < 1 || options.rows < 1 || options.cols < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tensors, --rows and --cols must be at least 1, got ",
        options.tensors, ", ", options.rows, " and ", options.cols));
  }
  if (options.thread_count < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--threads must be at least 1, got ",
                     options.thread_count));
  }
  if (options.dir.empty() && options.workload != DistBenchWorkload::kMemcpy) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bench --distributed --workload=",
        DistBenchWorkloadName(options.workload),
        " needs --dir: a checkpoint directory every rank sees"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::string_view DistBenchWorkloadName(DistBenchWorkload workload) {
  switch (workload) {
    case DistBenchWorkload::kSave:
      return "save";
    case DistBenchWorkload::kLoad:
      return "load";
    case DistBenchWorkload::kAsyncSave:
      return "async_save";
    case DistBenchWorkload::kMemcpy:
      return "memcpy";
  }
  return "?";
}

absl::StatusOr<DistBenchWorkload> ParseDistBenchWorkload(
    absl::string_view name) {
  for (DistBenchWorkload w :
       {DistBenchWorkload::kSave, DistBenchWorkload::kLoad,
        DistBenchWorkload::kAsyncSave, DistBenchWorkload::kMemcpy}) {
    if (name == DistBenchWorkloadName(w)) return w;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--workload: \"", name,
                   "\" is not save, load, async_save or memcpy"));
}

absl::string_view DistBenchLayoutName(DistBenchLayout layout) {
  return layout == DistBenchLayout::kRows ? "row" : "round_robin";
}

absl::StatusOr<DistBenchLayout> ParseDistBenchLayout(absl::string_view name) {
  if (name == "row") return DistBenchLayout::kRows;
  if (name == "round_robin") return DistBenchLayout::kRoundRobin;
  return absl::InvalidArgumentError(
      absl::StrCat("--layout: \"", name, "\" is not row or round_robin"));
}

absl::Status RunDistributedBench(const DistBenchOptions& options,
                                 std::shared_ptr<ProcessGroup> pg,
                                 std::ostream& out) {
  DCP_RETURN_IF_ERROR(Validate(options));
  const int rank = pg->rank();
  const int world = pg->size();
  auto deadline = [&] { return absl::Now() + options.collective_timeout; };

  const bool load = options.workload == DistBenchWorkload::kLoad;
  const int64_t start_rss_kb = MaxRssKb();
  std::vector<LocalTensor> locals;
  DCP_ASSIGN_OR_RETURN(
      StateDict state_dict,
      MakeRankStateDict(options, rank, world, /*zeros=*/load, locals));

  RankResult result;
  result.bytes = TensorBytes(locals);
  result.start_rss_kb = start_rss_kb;
  switch (options.workload) {
    case DistBenchWorkload::kSave: {
      DCP_RETURN_IF_ERROR(pg->Barrier("dcp.bench.start", deadline()));
      const Stopwatch stopwatch;
      DCP_ASSIGN_OR_RETURN(std::unique_ptr<Checkpointer> checkpointer,
                           MakeCheckpointer(options, pg, /*save=*/true));
      DCP_RETURN_IF_ERROR(checkpointer->Save(state_dict).status());
      result.seconds = stopwatch.Elapsed();
      break;
    }
    case DistBenchWorkload::kLoad: {
      DCP_RETURN_IF_ERROR(pg->Barrier("dcp.bench.start", deadline()));
      const Stopwatch stopwatch;
      DCP_ASSIGN_OR_RETURN(std::unique_ptr<Checkpointer> checkpointer,
                           MakeCheckpointer(options, pg, /*save=*/false));
      DCP_RETURN_IF_ERROR(checkpointer->Load(state_dict));
      result.seconds = stopwatch.Elapsed();
      // Peak memory of the load itself, before the check's temporaries.
      result.max_rss_kb = MaxRssKb();
      if (options.check_values) {
        DCP_RETURN_IF_ERROR(CheckValues(locals, rank, options.cols));
      }
      break;
    }
    case DistBenchWorkload::kAsyncSave: {
      DCP_ASSIGN_OR_RETURN(std::unique_ptr<Checkpointer> checkpointer,
                           MakeCheckpointer(options, pg, /*save=*/true));
      // The first AsyncSave forks the background communicator and
      // allocates the staging buffers; a training loop lives in the steady
      // state, where each AsyncSave copies into the buffers of the one
      // before, so the second call is the one timed.
      DCP_RETURN_IF_ERROR(pg->Barrier("dcp.bench.warmup", deadline()));
      const Stopwatch first;
      Future<Metadata> warmup = checkpointer->AsyncSave(state_dict);
      result.extra.emplace_back("first_return_seconds", first.Elapsed());
      DCP_RETURN_IF_ERROR(warmup.result().status());
      DCP_RETURN_IF_ERROR(pg->Barrier("dcp.bench.start", deadline()));
      const Stopwatch stopwatch;
      Future<Metadata> saved = checkpointer->AsyncSave(state_dict);
      result.seconds = stopwatch.Elapsed();
      saved.Wait();
      result.extra.emplace_back("complete_seconds", stopwatch.Elapsed());
      DCP_RETURN_IF_ERROR(saved.result().status());
      checkpointer.reset();
      DCP_ASSIGN_OR_RETURN(absl::Duration memcpy_time,
                           TimeMemcpy(locals, *pg, options));
      result.extra.emplace_back("memcpy_seconds", memcpy_time);
      break;
    }
    case DistBenchWorkload::kMemcpy: {
      DCP_ASSIGN_OR_RETURN(result.seconds, TimeMemcpy(locals, *pg, options));
      break;
    }
  }
  if (result.max_rss_kb == 0) result.max_rss_kb = MaxRssKb();

  const std::string fields = Fields(result);
  const std::string workload(DistBenchWorkloadName(options.workload));
  out << absl::StrCat("dcp_bench_rank workload=", workload, " rank=", rank,
                      " world=", world, " ", fields, "\n")
      << std::flush;
  DCP_ASSIGN_OR_RETURN(std::vector<std::string> all,
                       pg->Gather("dcp.bench.result", 0, fields, deadline()));
  if (rank != 0) return absl::OkStatus();
  RankResult total;
  for (int r = 0; r < static_cast<int>(all.size()); ++r) {
    DCP_ASSIGN_OR_RETURN(RankResult one, ParseFields(all[r]));
    total.seconds = std::max(total.seconds, one.seconds);
    total.bytes += one.bytes;
    total.max_rss_kb = std::max(total.max_rss_kb, one.max_rss_kb);
    total.start_rss_kb = std::max(total.start_rss_kb, one.start_rss_kb);
    if (r == 0) {
      total.extra = one.extra;
    } else {
      for (size_t e = 0; e < total.extra.size() && e < one.extra.size(); ++e) {
        total.extra[e].second =
            std::max(total.extra[e].second, one.extra[e].second);
      }
    }
  }
  out << absl::StrCat("dcp_bench workload=", workload, " world=", world, " ",
                      Fields(total), "\n")
      << std::flush;
  return absl::OkStatus();
}

}  // namespace dcp::tools
