#include "tools/demo.h"

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "checkpoint/checkpointer.h"
#include "core/state_dict.h"
#include "core/status.h"
#include "planner/flatten.h"
#include "storage/fs_storage.h"
#include "storage/posix_file_system.h"
#include "tools/local_checkpoint.h"
#include "tools/model_state.h"
#include "tools/tool_util.h"

namespace dcp::tools {
namespace {

struct Totals {
  int64_t tensors = 0;
  int64_t elements = 0;
  int64_t bytes = 0;
};

absl::StatusOr<Totals> CountTensors(const StateDict& state_dict) {
  DCP_ASSIGN_OR_RETURN(FlatStateDict flat, FlattenStateDict(state_dict));
  Totals totals;
  for (const auto& [fqn, value] : flat.items) {
    if (const auto* t = value.get_if<at::Tensor>()) {
      ++totals.tensors;
      totals.elements += t->numel();
      totals.bytes += t->numel() * static_cast<int64_t>(t->element_size());
    }
  }
  return totals;
}

}  // namespace

absl::Status RunDemo(const DemoOptions& options, std::ostream& out) {
  if (options.save_ranks < 1 || options.load_ranks < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--save_ranks and --load_ranks must be at least 1, got ",
                     options.save_ranks, " and ", options.load_ranks));
  }
  std::string dir = options.dir;
  if (dir.empty()) {
    DCP_ASSIGN_OR_RETURN(dir, MakeTempDir("dcp-demo-"));
  }
  out << "checkpoint: " << dir << "\n";

  DCP_ASSIGN_OR_RETURN(StateDict full, MakeModelStateDict(options.model));
  DCP_ASSIGN_OR_RETURN(Totals totals, CountTensors(full));
  out << "model: " << options.model.layers << " layers, hidden "
      << options.model.hidden << ", vocab " << options.model.vocab << " ("
      << totals.tensors << " tensors, " << WithThousands(totals.elements)
      << " elements)\n"
      << std::flush;

  std::vector<StateDict> save(options.save_ranks);
  for (int r = 0; r < options.save_ranks; ++r) {
    DCP_ASSIGN_OR_RETURN(
        save[r], ShardStateDict(full, Layout::kRows, r, options.save_ranks));
  }
  LocalSaveOptions save_options;
  save_options.thread_count = options.thread_count;
  save_options.sync_files = options.sync_files;
  save_options.progress = options.progress;
  DCP_ASSIGN_OR_RETURN(absl::Duration save_time,
                       SaveOnLocalRanks(save, dir, save_options));
  save.clear();  // Frees the shards before the load.

  PosixFileSystem fs;
  DCP_ASSIGN_OR_RETURN(std::vector<FileInfo> files,
                       ListCheckpointFiles(fs, dir));
  uint64_t file_bytes = 0;
  for (const FileInfo& f : files) file_bytes += f.size;

  std::vector<StateDict> load(options.load_ranks);
  for (int r = 0; r < options.load_ranks; ++r) {
    DCP_ASSIGN_OR_RETURN(load[r], EmptyShardedLike(full, options.load_layout,
                                                   r, options.load_ranks));
  }
  LocalLoadOptions load_options;
  load_options.thread_count = options.thread_count;
  load_options.progress = options.progress;
  DCP_ASSIGN_OR_RETURN(absl::Duration load_time,
                       LoadOnLocalRanks(load, dir, load_options));

  for (int r = 0; r < options.load_ranks; ++r) {
    DCP_RETURN_IF_ERROR(VerifyAgainstFull(load[r], full, r, nullptr));
  }

  const uint64_t bytes = static_cast<uint64_t>(totals.bytes);
  TextTable table({});
  table.AddRow({"files", absl::StrCat(files.size())});
  table.AddRow({"bytes", absl::StrCat(HumanBytes(file_bytes), " (",
                                      WithThousands(file_bytes), ")")});
  table.AddRow({"save time", absl::StrCat(Seconds(save_time), " s (",
                                          options.save_ranks,
                                          " ranks, row-sharded)")});
  table.AddRow({"load time",
                absl::StrCat(Seconds(load_time), " s (", options.load_ranks,
                             " ranks, ", LayoutName(options.load_layout),
                             "-sharded)")});
  table.AddRow({"save rate",
                absl::StrCat(GigabytesPerSecond(bytes, save_time), " GB/s")});
  table.AddRow({"load rate",
                absl::StrCat(GigabytesPerSecond(bytes, load_time), " GB/s")});
  out << "\n";
  table.Print(out, "  ");
  out << "\n";
  out << "verified " << totals.tensors << " tensors, "
      << WithThousands(totals.elements) << " elements: OK\n";
  return absl::OkStatus();
}

absl::Status RunDistributedDemo(const DemoOptions& options,
                                std::shared_ptr<ProcessGroup> pg,
                                std::ostream& out) {
  if (options.dir.empty()) {
    return absl::InvalidArgumentError(
        "--distributed needs --dir: a checkpoint directory every rank sees");
  }
  const int rank = pg->rank();
  const int world_size = pg->size();
  const bool print = rank == 0;
  if (print) {
    out << "checkpoint: " << options.dir << " (" << world_size
        << " processes)\n";
  }
  DCP_ASSIGN_OR_RETURN(StateDict full, MakeModelStateDict(options.model));
  DCP_ASSIGN_OR_RETURN(Totals totals, CountTensors(full));

  FileSystemWriterOptions writer_options;
  writer_options.thread_count = options.thread_count;
  writer_options.sync_files = options.sync_files;
  DCP_ASSIGN_OR_RETURN(std::unique_ptr<FileSystemWriter> writer,
                       FileSystemWriter::Create(options.dir, writer_options));
  FileSystemReaderOptions reader_options;
  reader_options.thread_count = options.thread_count;
  DCP_ASSIGN_OR_RETURN(std::unique_ptr<FileSystemReader> reader,
                       FileSystemReader::Create(options.dir, reader_options));
  CheckpointerOptions checkpointer_options;
  checkpointer_options.process_group = pg;
  DCP_ASSIGN_OR_RETURN(
      std::unique_ptr<Checkpointer> checkpointer,
      Checkpointer::Create(std::move(writer), std::move(reader),
                           checkpointer_options));

  absl::Time start = absl::Now();
  {
    DCP_ASSIGN_OR_RETURN(StateDict shard,
                         ShardStateDict(full, Layout::kRows, rank, world_size));
    DCP_RETURN_IF_ERROR(checkpointer->Save(shard).status());
  }
  const absl::Duration save_time = absl::Now() - start;

  DCP_ASSIGN_OR_RETURN(StateDict load, EmptyShardedLike(full,
                                                        options.load_layout,
                                                        rank, world_size));
  start = absl::Now();
  DCP_RETURN_IF_ERROR(checkpointer->Load(load));
  const absl::Duration load_time = absl::Now() - start;

  // Every rank learns every rank's verification result.
  const absl::Status verified = VerifyAgainstFull(load, full, rank, nullptr);
  DCP_ASSIGN_OR_RETURN(
      std::vector<std::string> results,
      pg->AllGather("dcp.demo.verify",
                    verified.ok() ? "" : std::string(verified.message()),
                    absl::Now() + checkpointer_options.collective_timeout));
  for (int r = 0; r < static_cast<int>(results.size()); ++r) {
    if (!results[r].empty()) {
      return absl::InternalError(
          absl::StrCat("verification failed on rank ", r, ": ", results[r]));
    }
  }
  if (!print) return absl::OkStatus();

  PosixFileSystem fs;
  DCP_ASSIGN_OR_RETURN(std::vector<FileInfo> files,
                       ListCheckpointFiles(fs, options.dir));
  uint64_t file_bytes = 0;
  for (const FileInfo& f : files) file_bytes += f.size;
  const uint64_t bytes = static_cast<uint64_t>(totals.bytes);
  TextTable table({});
  table.AddRow({"files", absl::StrCat(files.size())});
  table.AddRow({"bytes", absl::StrCat(HumanBytes(file_bytes), " (",
                                      WithThousands(file_bytes), ")")});
  table.AddRow({"save time", absl::StrCat(Seconds(save_time), " s (",
                                          world_size,
                                          " processes, row-sharded)")});
  table.AddRow({"load time",
                absl::StrCat(Seconds(load_time), " s (", world_size,
                             " processes, ", LayoutName(options.load_layout),
                             "-sharded)")});
  table.AddRow({"save rate",
                absl::StrCat(GigabytesPerSecond(bytes, save_time), " GB/s")});
  table.AddRow({"load rate",
                absl::StrCat(GigabytesPerSecond(bytes, load_time), " GB/s")});
  out << "\n";
  table.Print(out, "  ");
  out << "\n";
  out << "verified " << totals.tensors << " tensors, "
      << WithThousands(totals.elements) << " elements on " << world_size
      << " ranks: OK\n";
  return absl::OkStatus();
}

}  // namespace dcp::tools
