#include "storage/fs_storage_common.h"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <system_error>  // NOLINT(build/c++11)
#include <thread>        // NOLINT(build/c++11)
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/fault_point.h"
#include "core/metadata.h"
#include "core/metadata_codec.h"
#include "core/status.h"
#include "glog/logging.h"
#include "storage/file_system.h"
#include "storage/fs_storage.h"
#include "storage/metadata_pickle.h"
#include "storage/metadata_sidecar.h"
#include "storage/pickle.h"

namespace dcp {
namespace fs_storage_internal {
namespace {

absl::Status NotACheckpoint(absl::string_view dir) {
  return absl::NotFoundError(
      absl::StrCat("not a checkpoint: no .metadata in ", dir));
}

// The payload of `dir`'s sidecar (the metadata's binary encoding) if it
// describes `pickle` (the bytes of its `.metadata`); nullopt if there is
// none or it cannot be used, which is logged unless the sidecar is simply
// absent or stale.
std::optional<std::string> ReadMetadataSidecarPayload(FileSystem& fs,
                                                      const std::string& dir,
                                                      absl::string_view pickle,
                                                      uint64_t max_bytes) {
  const std::string path = JoinPath(dir, kMetadataSidecarName);
  absl::StatusOr<std::unique_ptr<RandomAccessFile>> file =
      fs.NewRandomAccessFile(path);
  absl::Status status = file.status();
  if (file.ok()) {
    const uint64_t size = (*file)->size();
    if (size > max_bytes) {
      status = absl::ResourceExhaustedError(
          absl::StrCat(size, " bytes, more than max_metadata_bytes"));
    } else {
      std::string bytes(static_cast<size_t>(size), '\0');
      status = (*file)->ReadInto(0, absl::MakeSpan(bytes));
      if (status.ok()) {
        absl::StatusOr<absl::string_view> payload =
            MetadataSidecarPayload(bytes, pickle);
        if (payload.ok()) return std::string(*payload);
        status = payload.status();
      }
    }
  }
  if (!absl::IsNotFound(status) && !absl::IsFailedPrecondition(status)) {
    LOG(WARNING) << "fs_storage: not using " << path
                 << ", decoding .metadata instead: " << status;
  } else {
    VLOG(1) << "fs_storage: decoding .metadata, no usable " << path << ": "
            << status;
  }
  return std::nullopt;
}

}  // namespace

absl::Status CheckCreateArgs(
    absl::string_view type, absl::string_view path,
    std::initializer_list<std::pair<absl::string_view, int>> counts) {
  if (path.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(type, " needs a checkpoint directory"));
  }
  for (const auto& [name, value] : counts) {
    if (value < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(type, " ", name, " must be at least 1, got ", value));
    }
  }
  return absl::OkStatus();
}

std::vector<absl::Status> RunParallel(
    size_t n, int threads, const std::function<absl::Status(size_t)>& fn) {
  std::vector<absl::Status> statuses(n);
  if (n == 0) return statuses;
  std::atomic<size_t> next{0};
  FaultPointHandler* handler = CurrentFaultPointHandler();
  auto work = [&] {
    ScopedFaultPointHandler scoped(handler);
    for (size_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) {
      try {
        statuses[i] = fn(i);
      } catch (const std::exception& e) {
        statuses[i] = absl::InternalError(
            absl::StrCat("unexpected exception: ", e.what()));
      } catch (...) {
        statuses[i] = absl::InternalError("unexpected unknown exception");
      }
    }
  };
  const size_t helpers =
      std::min(n, static_cast<size_t>(std::max(threads, 1))) - 1;
  std::vector<std::thread> pool;
  pool.reserve(helpers);
  for (size_t t = 0; t < helpers; ++t) {
    try {
      pool.emplace_back(work);
    } catch (const std::system_error& e) {
      // Fewer threads only make the work slower.
      LOG(WARNING) << "fs_storage: could not start a thread (" << e.what()
                   << "); continuing with " << pool.size() + 1;
      break;
    }
  }
  work();
  for (std::thread& thread : pool) thread.join();
  return statuses;
}

absl::StatusOr<Metadata> ReadMetadataFile(
    FileSystem& fs, const std::string& dir, uint64_t max_bytes,
    const DecodeLimits& limits, bool use_sidecar, std::string* encoded) {
  const std::string path = JoinPath(dir, kCheckpointMetadataFileName);
  absl::StatusOr<std::unique_ptr<RandomAccessFile>> file =
      fs.NewRandomAccessFile(path);
  if (!file.ok()) {
    if (absl::IsNotFound(file.status())) return NotACheckpoint(dir);
    return Annotate(file.status(), absl::StrCat("reading ", path));
  }
  // The size decides before anything is allocated or read.
  const uint64_t size = (*file)->size();
  if (size > max_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        path, " is ", size, " bytes, more than the ", max_bytes,
        " bytes a .metadata may have (max_metadata_bytes); not reading it"));
  }
  std::string bytes(static_cast<size_t>(size), '\0');
  absl::Status read = (*file)->ReadInto(0, absl::MakeSpan(bytes));
  if (!read.ok()) return Annotate(read, absl::StrCat("reading ", path));
  if (use_sidecar) {
    std::optional<std::string> payload =
        ReadMetadataSidecarPayload(fs, dir, bytes, max_bytes);
    if (payload.has_value() && encoded != nullptr) {
      *encoded = *std::move(payload);
      return Metadata();
    }
    if (payload.has_value()) {
      absl::StatusOr<Metadata> metadata = DecodeMetadata(*payload);
      if (metadata.ok()) return metadata;
      LOG(WARNING) << "fs_storage: not using "
                   << JoinPath(dir, kMetadataSidecarName)
                   << ", decoding .metadata instead: " << metadata.status();
    }
  }
  absl::StatusOr<Metadata> metadata = DecodeMetadataPickle(bytes, limits);
  if (!metadata.ok()) {
    return Annotate(metadata.status(), absl::StrCat("decoding ", path));
  }
  if (encoded != nullptr) {
    *encoded = EncodeMetadata(*metadata);
    return Metadata();
  }
  return metadata;
}

bool IsSafeRelativePath(absl::string_view relative) {
  if (relative.empty() || relative.front() == '/') return false;
  for (absl::string_view part : absl::StrSplit(relative, '/')) {
    if (part == "..") return false;
  }
  return !absl::StrContains(relative, absl::string_view("\0", 1));
}

}  // namespace fs_storage_internal
}  // namespace dcp
