#include "tools/bench.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "core/state_dict.h"
#include "core/status.h"
#include "storage/file_system.h"
#include "storage/posix_file_system.h"
#include "tools/local_checkpoint.h"
#include "tools/model_state.h"
#include "tools/tool_util.h"

namespace dcp::tools {
namespace {

// Writes back and evicts every file of `dir` from the page cache.
absl::Status DropFromPageCache(FileSystem& fs, const std::string& dir) {
  DCP_ASSIGN_OR_RETURN(std::vector<FileInfo> files, ListFiles(fs, dir));
  for (const FileInfo& f : files) {
    const std::string path = JoinPath(dir, f.name);
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoToStatus(errno, absl::StrCat("open ", path));
    int err = fsync(fd) == 0 ? 0 : errno;
    if (err == 0) err = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
    if (err != 0) {
      return ErrnoToStatus(err, absl::StrCat("dropping ", path, " from cache"));
    }
  }
  return absl::OkStatus();
}

struct Row {
  std::string name;
  int ranks;
  int threads;
  bool fsync;
  Layout layout;
  absl::Duration elapsed;
};

}  // namespace

absl::Status RunBench(const BenchOptions& options, std::ostream& out) {
  if (options.size_mb < 1 || options.world_size < 1 ||
      options.reshard_world_size < 0 || options.thread_counts.empty() ||
      options.fsync_modes.empty()) {
    return absl::InvalidArgumentError(
        "bench needs --size_mb >= 1, --world_size >= 1, "
        "--reshard_world_size >= 0 and at least one thread count and fsync "
        "mode");
  }
  for (int t : options.thread_counts) {
    if (t < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("thread counts must be at least 1, got ", t));
    }
  }
  const int reshard_world =
      options.reshard_world_size > 0
          ? options.reshard_world_size
          : (options.world_size > 1 ? options.world_size - 1 : 2);

  PosixFileSystem fs;
  std::string root = options.dir;
  const bool own_root = root.empty();
  if (own_root) {
    DCP_ASSIGN_OR_RETURN(root, MakeTempDir("dcp-bench-"));
  } else {
    DCP_RETURN_IF_ERROR(fs.CreateDir(root));
  }

  const ModelShape shape = ModelShapeForBytes(options.size_mb << 20);
  const uint64_t bytes = static_cast<uint64_t>(ModelTensorBytes(shape));
  DCP_ASSIGN_OR_RETURN(StateDict full, MakeModelStateDict(shape));
  out << "dcp bench: model with " << shape.layers << " layers, hidden "
      << shape.hidden << ", vocab " << shape.vocab << ": "
      << HumanBytes(bytes) << " of tensors; checkpoints under " << root
      << (options.cold_cache ? "; cold page cache for loads" : "") << "\n"
      << std::flush;

  std::vector<StateDict> save(options.world_size);
  for (int r = 0; r < options.world_size; ++r) {
    DCP_ASSIGN_OR_RETURN(save[r],
                         ShardStateDict(full, Layout::kRows, r,
                                        options.world_size));
  }

  std::vector<Row> rows;
  int case_number = 0;
  for (int threads : options.thread_counts) {
    for (bool fsync : options.fsync_modes) {
      const std::string dir = JoinPath(root, absl::StrCat("case", case_number++));
      LocalSaveOptions save_options;
      save_options.thread_count = threads;
      save_options.sync_files = fsync;
      save_options.progress = options.progress;
      save_options.progress_label =
          absl::StrCat("save (", threads, " threads, fsync ",
                       fsync ? "on" : "off", ")");
      DCP_ASSIGN_OR_RETURN(absl::Duration save_time,
                           SaveOnLocalRanks(save, dir, save_options));
      rows.push_back({"save", options.world_size, threads, fsync,
                      Layout::kRows, save_time});

      struct LoadCase {
        const char* name;
        int ranks;
        Layout layout;
      };
      std::vector<LoadCase> loads = {
          {"load", options.world_size, Layout::kRows}};
      if (options.reshard) {
        loads.push_back({"reshard", reshard_world, Layout::kColumns});
      }
      for (const LoadCase& c : loads) {
        std::vector<StateDict> dest(c.ranks);
        for (int r = 0; r < c.ranks; ++r) {
          DCP_ASSIGN_OR_RETURN(dest[r],
                               EmptyShardedLike(full, c.layout, r, c.ranks));
        }
        if (options.cold_cache) {
          DCP_RETURN_IF_ERROR(DropFromPageCache(fs, dir));
        }
        LocalLoadOptions load_options;
        load_options.thread_count = threads;
        load_options.progress = options.progress;
        load_options.progress_label =
            absl::StrCat(c.name, " (", threads, " threads)");
        DCP_ASSIGN_OR_RETURN(absl::Duration load_time,
                             LoadOnLocalRanks(dest, dir, load_options));
        for (int r = 0; r < c.ranks; ++r) {
          DCP_RETURN_IF_ERROR(VerifyAgainstFull(dest[r], full, r, nullptr));
        }
        rows.push_back({c.name, c.ranks, threads, fsync, c.layout, load_time});
      }
      DCP_RETURN_IF_ERROR(RemoveFlatDir(fs, dir));
    }
  }
  if (own_root) DCP_RETURN_IF_ERROR(fs.RemoveDir(root));

  TextTable table(
      {"case", "ranks", "threads", "fsync", "layout", "MiB", "seconds", "GB/s"},
      {false, true, true, false, false, true, true, true});
  for (const Row& row : rows) {
    table.AddRow({row.name, absl::StrCat(row.ranks),
                  absl::StrCat(row.threads), row.fsync ? "on" : "off",
                  std::string(LayoutName(row.layout)),
                  absl::StrFormat("%.1f", bytes / 1048576.0),
                  Seconds(row.elapsed),
                  GigabytesPerSecond(bytes, row.elapsed)});
  }
  table.Print(out);
  return absl::OkStatus();
}

}  // namespace dcp::tools
