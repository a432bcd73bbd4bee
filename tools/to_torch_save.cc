#include "tools/to_torch_save.h"

#include <cstdint>
#include <ostream>
#include <string>
#include <variant>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "checkpoint/format_utils.h"
#include "core/metadata.h"
#include "core/status.h"
#include "storage/fs_storage.h"
#include "storage/posix_file_system.h"
#include "tools/tool_util.h"

namespace dcp::tools {

absl::Status DcpToTorchSave(const ToTorchSaveOptions& options,
                            std::ostream& out) {
  if (options.dir.empty() || options.file.empty()) {
    return absl::InvalidArgumentError(
        "to-torch-save needs a checkpoint directory and a file name");
  }
  const absl::Time start = absl::Now();
  if (options.progress != nullptr) {
    *options.progress << "converting " << options.dir << " into "
                      << options.file << "...\n"
                      << std::flush;
  }
  ::dcp::DcpToTorchSaveOptions convert;
  convert.load.reader.thread_count = options.load.thread_count;
  convert.load.reader.verify_checksums = options.load.verify_checksums;
  convert.load.reader.allow_symlinks = options.load.allow_symlinks;
  convert.sync = options.sync;
  DCP_RETURN_IF_ERROR(
      ::dcp::DcpToTorchSave(options.dir, options.file, convert));
  const absl::Duration elapsed = absl::Now() - start;

  DCP_ASSIGN_OR_RETURN(
      Metadata md, ReadCheckpointMetadata(options.dir, convert.load.reader));
  int64_t tensors = 0, values = 0, elements = 0;
  for (const auto& [fqn, entry] : md.state_dict_metadata) {
    if (const auto* t = std::get_if<TensorStorageMetadata>(&entry)) {
      ++tensors;
      int64_t numel = 1;
      for (int64_t d : t->size) numel *= d;
      elements += numel;
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
