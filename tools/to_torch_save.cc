#include "tools/to_torch_save.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "checkpoint/metadata.h"
#include "checkpoint/save_load.h"
#include "checkpoint/state_dict.h"
#include "checkpoint/status.h"
#include "checkpoint/torch_status.h"
#include "planner/flatten.h"
#include "storage/file_system.h"
#include "storage/fs_storage.h"
#include "storage/posix_file_system.h"
#include "storage/torch_save.h"
#include "tools/tool_util.h"

namespace dcp::tools {

namespace {

using u128 = unsigned __int128;

// Byte ranges [begin, end) of the data files, by file name.
using FileRanges = std::map<std::string, std::vector<std::pair<uint64_t,
                                                               uint64_t>>>;

// Bytes covered by `ranges` (overlaps counted once).
uint64_t CoveredBytes(FileRanges ranges) {
  uint64_t total = 0;
  for (auto& [file, list] : ranges) {
    std::sort(list.begin(), list.end());
    uint64_t covered_to = 0;
    for (const auto& [begin, end] : list) {
      const uint64_t from = std::max(begin, covered_to);
      if (end > from) total += end - from;
      covered_to = std::max(covered_to, end);
    }
  }
  return total;
}

// Bytes of a tensor of `size` and `dtype`, saturating above 2^64.
u128 TensorBytes(const Shape& size, c10::ScalarType dtype) {
  u128 bytes = c10::elementSize(dtype);
  for (int64_t d : size) {
    if (d <= 0) return 0;  // Negative sizes are left to the load to reject.
  }
  for (int64_t d : size) {
    bytes *= static_cast<uint64_t>(d);
    if (bytes >> 64) return u128{1} << 64;  // Keeps the product < 2^127.
  }
  return bytes;
}

// .metadata declares every tensor's size, but only the data files hold the
// bytes: a hostile or mismatched .metadata must not make the destination
// tensors allocate more than is there. Each tensor's chunk records (parts
// that exist in the directory's files, overlaps counted once) must hold at
// least its bytes, and all records together at least all tensors' bytes.
absl::Status CheckTensorsFitTheData(const std::string& dir,
                                    const Metadata& md) {
  PosixFileSystem fs;
  // The size of each data file a chunk names; a file that is missing or
  // not a regular file fails here, as the load would (later, after
  // allocating).
  std::map<std::string, uint64_t> file_size;
  for (const auto& [index, info] : md.storage_data) {
    if (file_size.count(info.relative_path) > 0) continue;
    absl::StatusOr<uint64_t> size =
        fs.FileSize(JoinPath(dir, info.relative_path));
    if (!size.ok()) {
      if (absl::IsNotFound(size.status())) {
        return absl::DataLossError(absl::StrCat(
            "missing data file ", JoinPath(dir, info.relative_path),
            " (holding \"", index.fqn, "\"): ", size.status().message()));
      }
      return Annotate(size.status(),
                      absl::StrCat("data file of \"", index.fqn, "\""));
    }
    file_size[info.relative_path] = *size;
  }
  FileRanges all;
  u128 all_bytes = 0;
  for (const auto& [fqn, entry] : md.state_dict_metadata) {
    const auto* tensor = std::get_if<TensorStorageMetadata>(&entry);
    if (tensor == nullptr) continue;
    const u128 bytes = TensorBytes(tensor->size, tensor->properties.dtype);
    all_bytes += bytes;
    if (bytes == 0) continue;
    FileRanges ranges;
    for (const ChunkStorageMetadata& chunk : tensor->chunks) {
      auto info = md.storage_data.find(MetadataIndex(fqn, chunk.offsets));
      if (info == md.storage_data.end()) continue;
      auto size = file_size.find(info->second.relative_path);
      if (info->second.offset < 0 || info->second.length < 0) continue;
      const uint64_t begin =
          std::min<uint64_t>(info->second.offset, size->second);
      const uint64_t end = std::min<uint64_t>(
          begin + static_cast<uint64_t>(info->second.length), size->second);
      ranges[size->first].emplace_back(begin, end);
      all[size->first].emplace_back(begin, end);
    }
    const uint64_t present = CoveredBytes(std::move(ranges));
    if (bytes > present) {
      return absl::DataLossError(absl::StrCat(
          dir, "/.metadata declares tensor \"", fqn, "\" of size [",
          absl::StrJoin(tensor->size, ", "), "] (",
          bytes >> 64 ? std::string("over 2^64")
                      : absl::StrCat(static_cast<uint64_t>(bytes)),
          " bytes) but the data files hold only ", present,
          " bytes of its records; not allocating it"));
    }
  }
  const uint64_t present = CoveredBytes(std::move(all));
  if (all_bytes > present) {
    return absl::DataLossError(absl::StrCat(
        dir, "/.metadata declares more bytes of tensors than the ", present,
        " bytes of their records in the data files (records shared between "
        "tensors?); not allocating them"));
  }
  return absl::OkStatus();
}

// UnflattenStateDict pads a list up to each index of a path, so a path
// ["optim", 2^40] would allocate terabytes of placeholders. In a real
// checkpoint each list element before an index holds a leaf, except empty
// dicts (which hold none); this much slack allows for those.
constexpr int64_t kMaxListSlack = int64_t{1} << 16;

absl::Status CheckListIndices(const std::string& dir, const Metadata& md) {
  const int64_t limit =
      static_cast<int64_t>(md.planner_data.size()) + kMaxListSlack;
  for (const auto& [fqn, path] : md.planner_data) {
    for (const PathElement& element : path) {
      const int64_t* index = std::get_if<int64_t>(&element);
      if (index != nullptr && (*index < 0 || *index >= limit)) {
        return absl::DataLossError(absl::StrCat(
            dir, "/.metadata: the path of \"", fqn, "\" has list index ",
            *index, " (at most ", limit - 1, " for ",
            md.planner_data.size(), " keys)"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<StateDict> LoadFullStateDict(const std::string& dir,
                                            const LoadFullOptions& options) {
  FileSystemReaderOptions reader_options;
  reader_options.thread_count = options.thread_count;
  reader_options.verify_checksums = options.verify_checksums;
  reader_options.allow_symlinks = options.allow_symlinks;
  DCP_ASSIGN_OR_RETURN(Metadata md,
                       ReadCheckpointMetadata(dir, reader_options));
  DCP_RETURN_IF_ERROR(CheckTensorsFitTheData(dir, md));
  DCP_RETURN_IF_ERROR(CheckListIndices(dir, md));
  // A flat destination keyed by FQN: each key flattens to itself.
  StateDict flat;
  for (const auto& [fqn, entry] : md.state_dict_metadata) {
    if (const auto* tensor = std::get_if<TensorStorageMetadata>(&entry)) {
      DCP_ASSIGN_OR_RETURN(
          at::Tensor t,
          TorchCall(absl::StrCat("allocating \"", fqn, "\""), [&] {
            return at::empty(tensor->size,
                             at::TensorOptions().dtype(tensor->properties.dtype));
          }));
      flat.Set(fqn, std::move(t));
    } else {
      flat.Set(fqn, None{});
    }
  }
  DCP_ASSIGN_OR_RETURN(std::unique_ptr<FileSystemReader> reader,
                       FileSystemReader::Create(dir, reader_options));
  LoadOptions load_options;
  load_options.no_dist = true;
  DCP_RETURN_IF_ERROR(Load(flat, *reader, load_options));

  // _EmptyStateDictLoadPlanner's nesting: each leaf at its planner_data path.
  FlatStateDict nested;
  for (auto& [fqn, value] : flat.mutable_entries()) {
    auto path = md.planner_data.find(fqn);
    nested.mappings[fqn] = path != md.planner_data.end() ? path->second
                                                         : ObjectPath{fqn};
    nested.items.emplace_back(fqn, std::move(value));
  }
  return UnflattenStateDict(nested);
}

absl::Status DcpToTorchSave(const ToTorchSaveOptions& options,
                            std::ostream& out) {
  if (options.dir.empty() || options.file.empty()) {
    return absl::InvalidArgumentError(
        "to-torch-save needs a checkpoint directory and a file name");
  }
  const absl::Time start = absl::Now();
  if (options.progress != nullptr) {
    *options.progress << "loading " << options.dir << "...\n" << std::flush;
  }
  DCP_ASSIGN_OR_RETURN(StateDict state_dict,
                       LoadFullStateDict(options.dir, options.load));
  if (options.progress != nullptr) {
    *options.progress << "writing " << options.file << "...\n" << std::flush;
  }
  TorchSaveWriteOptions write_options;
  write_options.sync = options.sync;
  DCP_RETURN_IF_ERROR(WriteTorchSave(state_dict, options.file, write_options));
  const absl::Duration elapsed = absl::Now() - start;

  DCP_ASSIGN_OR_RETURN(FlatStateDict flat, FlattenStateDict(state_dict));
  int64_t tensors = 0, values = 0, elements = 0;
  for (const auto& [fqn, value] : flat.items) {
    if (const auto* t = value.get_if<at::Tensor>()) {
      ++tensors;
      elements += t->numel();
    } else {
      ++values;
    }
  }
  PosixFileSystem fs;
  DCP_ASSIGN_OR_RETURN(uint64_t size, fs.FileSize(options.file));
  out << "wrote " << options.file << ": " << tensors << " tensors ("
      << WithThousands(elements) << " elements), " << values << " values, "
      << HumanBytes(size) << " in " << Seconds(elapsed) << " s\n";
  return absl::OkStatus();
}

}  // namespace dcp::tools
