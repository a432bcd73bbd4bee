#include "checkpoint/format_utils.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "checkpoint/save_load.h"
#include "core/metadata.h"
#include "core/state_dict.h"
#include "core/status.h"
#include "core/torch_status.h"
#include "planner/flatten.h"
#include "storage/file_system.h"
#include "storage/fs_storage.h"
#include "storage/posix_file_system.h"
#include "storage/torch_save.h"

namespace dcp {
namespace {

using u128 = unsigned __int128;

// Byte ranges [begin, end) of the data files, by file name.
using FileRanges =
    std::map<std::string, std::vector<std::pair<uint64_t, uint64_t>>>;

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
absl::Status CheckTensorsFitTheData(FileSystem& fs, const std::string& dir,
                                    const Metadata& md) {
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
      return absl::DataLossError(
          absl::StrCat(dir, "/.metadata declares tensor \"", fqn,
                       "\" of size [", absl::StrJoin(tensor->size, ", "), "] (",
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
        return absl::DataLossError(
            absl::StrCat(dir, "/.metadata: the path of \"", fqn,
                         "\" has list index ", *index, " (at most ", limit - 1,
                         " for ", md.planner_data.size(), " keys)"));
      }
    }
  }
  return absl::OkStatus();
}

// Whether `fqn` (whose path is `path`) is selected by `keys`: the FQN
// itself or the FQN of a prefix of its path is listed. Marks what matched.
bool Selected(const std::string& fqn, const ObjectPath* path,
              const std::set<std::string>& keys, std::set<std::string>& used) {
  bool selected = false;
  if (keys.count(fqn) > 0) {
    used.insert(fqn);
    selected = true;
  }
  if (path != nullptr) {
    for (size_t n = 1; n <= path->size(); ++n) {
      const std::string prefix =
          FqnOf(ObjectPath(path->begin(), path->begin() + n));
      if (keys.count(prefix) > 0) {
        used.insert(prefix);
        selected = true;
      }
    }
  }
  return selected;
}

std::shared_ptr<FileSystem> OrPosix(std::shared_ptr<FileSystem> fs) {
  return fs != nullptr ? std::move(fs) : NewPosixFileSystem();
}

}  // namespace

absl::StatusOr<StateDict> LoadWholeCheckpoint(
    const std::string& dir, const WholeCheckpointOptions& options) {
  FileSystemReaderOptions reader_options = options.reader;
  reader_options.file_system = OrPosix(reader_options.file_system);
  DCP_ASSIGN_OR_RETURN(Metadata md,
                       ReadCheckpointMetadata(dir, reader_options));
  if (!options.keys.empty()) {
    const std::set<std::string> keys(options.keys.begin(), options.keys.end());
    std::set<std::string> used;
    for (auto it = md.state_dict_metadata.begin();
         it != md.state_dict_metadata.end();) {
      auto path = md.planner_data.find(it->first);
      const bool keep = Selected(
          it->first, path != md.planner_data.end() ? &path->second : nullptr,
          keys, used);
      it = keep ? std::next(it) : md.state_dict_metadata.erase(it);
    }
    std::vector<std::string> unknown;
    for (const std::string& key : keys) {
      if (used.count(key) == 0)
        unknown.push_back(absl::StrCat("\"", key, "\""));
    }
    if (!unknown.empty()) {
      return absl::NotFoundError(absl::StrCat(
          dir, " has no key ", absl::StrJoin(unknown, ", "),
          " (keys are flattened names such as \"model.fc1.weight\", or "
          "their prefixes such as \"model\")"));
    }
  }
  DCP_RETURN_IF_ERROR(
      CheckTensorsFitTheData(*reader_options.file_system, dir, md));
  DCP_RETURN_IF_ERROR(CheckListIndices(dir, md));
  // A flat destination keyed by FQN: each key flattens to itself.
  StateDict flat;
  for (const auto& [fqn, entry] : md.state_dict_metadata) {
    if (const auto* tensor = std::get_if<TensorStorageMetadata>(&entry)) {
      DCP_ASSIGN_OR_RETURN(
          at::Tensor t,
          TorchCall(absl::StrCat("allocating \"", fqn, "\""), [&] {
            return at::empty(tensor->size, at::TensorOptions().dtype(
                                               tensor->properties.dtype));
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
    nested.mappings[fqn] =
        path != md.planner_data.end() ? path->second : ObjectPath{fqn};
    nested.items.emplace_back(fqn, std::move(value));
  }
  return UnflattenStateDict(nested);
}

absl::Status DcpToTorchSave(const std::string& dir, const std::string& file,
                            const DcpToTorchSaveOptions& options) {
  if (dir.empty() || file.empty()) {
    return absl::InvalidArgumentError(
        "DcpToTorchSave needs a checkpoint directory and a file name");
  }
  DCP_ASSIGN_OR_RETURN(StateDict state_dict,
                       LoadWholeCheckpoint(dir, options.load));
  TorchSaveWriteOptions write_options;
  write_options.sync = options.sync;
  std::shared_ptr<FileSystem> fs = OrPosix(options.load.reader.file_system);
  return WriteTorchSave(state_dict, *fs, file, write_options);
}

absl::Status TorchSaveToDcp(const std::string& file, const std::string& dir,
                            const FileSystemWriterOptions& options) {
  if (file.empty() || dir.empty()) {
    return absl::InvalidArgumentError(
        "TorchSaveToDcp needs a file name and a checkpoint directory");
  }
  std::shared_ptr<FileSystem> fs = OrPosix(options.file_system);
  DCP_ASSIGN_OR_RETURN(StateDict state_dict, ReadTorchSave(*fs, file));
  FileSystemWriterOptions writer_options = options;
  writer_options.file_system = fs;
  DCP_ASSIGN_OR_RETURN(std::unique_ptr<FileSystemWriter> writer,
                       FileSystemWriter::Create(dir, writer_options));
  SaveOptions save_options;
  save_options.no_dist = true;
  return Save(state_dict, *writer, save_options).status();
}

}  // namespace dcp
