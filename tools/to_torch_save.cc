#include "tools/to_torch_save.h"

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <variant>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "checkpoint/metadata.h"
#include "checkpoint/save_load.h"
#include "checkpoint/state_dict.h"
#include "checkpoint/status.h"
#include "checkpoint/torch_status.h"
#include "planner/flatten.h"
#include "storage/fs_storage.h"
#include "storage/posix_file_system.h"
#include "storage/torch_save.h"
#include "tools/tool_util.h"

namespace dcp::tools {

absl::StatusOr<StateDict> LoadFullStateDict(const std::string& dir,
                                            const LoadFullOptions& options) {
  FileSystemReaderOptions reader_options;
  reader_options.thread_count = options.thread_count;
  reader_options.verify_checksums = options.verify_checksums;
  reader_options.allow_symlinks = options.allow_symlinks;
  DCP_ASSIGN_OR_RETURN(Metadata md,
                       ReadCheckpointMetadata(dir, reader_options));
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
