#include "tools/local_checkpoint.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "checkpoint/save_load.h"
#include "core/state_dict.h"
#include "core/status.h"
#include "distributed/local_process_group.h"
#include "distributed/process_group.h"
#include "storage/fs_storage.h"
#include "tools/tool_util.h"

namespace dcp::tools {

absl::StatusOr<absl::Duration> SaveOnLocalRanks(
    const std::vector<StateDict>& per_rank, const std::string& dir,
    const LocalSaveOptions& options) {
  const int world_size = static_cast<int>(per_rank.size());
  if (world_size < 1) {
    return absl::InvalidArgumentError("saving needs at least one rank");
  }
  Progress progress(options.progress, options.progress_label, world_size);
  const absl::Time start = absl::Now();
  std::vector<absl::Status> statuses = RunLocalRanks(
      world_size,
      [&](int rank, const std::shared_ptr<ProcessGroup>& pg) -> absl::Status {
        FileSystemWriterOptions writer_options;
        writer_options.thread_count = options.thread_count;
        writer_options.sync_files = options.sync_files;
        DCP_ASSIGN_OR_RETURN(std::unique_ptr<FileSystemWriter> writer,
                             FileSystemWriter::Create(dir, writer_options));
        SaveOptions save_options;
        save_options.process_group = pg.get();
        absl::Status status =
            Save(per_rank[rank], *writer, save_options).status();
        if (status.ok()) progress.Step();
        return status;
      });
  const absl::Duration elapsed = absl::Now() - start;
  DCP_RETURN_IF_ERROR(
      Annotate(FirstError(statuses, "rank"), absl::StrCat("saving to ", dir)));
  return elapsed;
}

absl::StatusOr<absl::Duration> LoadOnLocalRanks(
    std::vector<StateDict>& per_rank, const std::string& dir,
    const LocalLoadOptions& options) {
  const int world_size = static_cast<int>(per_rank.size());
  if (world_size < 1) {
    return absl::InvalidArgumentError("loading needs at least one rank");
  }
  Progress progress(options.progress, options.progress_label, world_size);
  const absl::Time start = absl::Now();
  std::vector<absl::Status> statuses = RunLocalRanks(
      world_size,
      [&](int rank, const std::shared_ptr<ProcessGroup>& pg) -> absl::Status {
        FileSystemReaderOptions reader_options;
        reader_options.thread_count = options.thread_count;
        reader_options.verify_checksums = options.verify_checksums;
        DCP_ASSIGN_OR_RETURN(std::unique_ptr<FileSystemReader> reader,
                             FileSystemReader::Create(dir, reader_options));
        LoadOptions load_options;
        load_options.process_group = pg.get();
        absl::Status status = Load(per_rank[rank], *reader, load_options);
        if (status.ok()) progress.Step();
        return status;
      });
  const absl::Duration elapsed = absl::Now() - start;
  DCP_RETURN_IF_ERROR(Annotate(FirstError(statuses, "rank"),
                               absl::StrCat("loading from ", dir)));
  return elapsed;
}

}  // namespace dcp::tools
