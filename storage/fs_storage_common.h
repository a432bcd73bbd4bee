// Internal to //storage:fs_storage: what storage/fs_storage_writer.cc and
// storage/fs_storage_reader.cc share. Not a public API (listed in the
// target's srcs, so no other target can include it).
//
// Thread safety: thread-compatible functions; `RunParallel` runs its
// function on several threads.
#ifndef DCP_STORAGE_FS_STORAGE_COMMON_H_
#define DCP_STORAGE_FS_STORAGE_COMMON_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/metadata.h"
#include "storage/file_system.h"
#include "storage/pickle.h"

namespace dcp {
namespace fs_storage_internal {

// The checks of `FileSystemWriter::Create` and `FileSystemReader::Create`:
// InvalidArgument unless `path` names a directory and each of `counts`
// (option name, value) is at least 1. `type` names the class in messages
// ("FileSystemReader max_open_files must be at least 1, got 0").
absl::Status CheckCreateArgs(
    absl::string_view type, absl::string_view path,
    std::initializer_list<std::pair<absl::string_view, int>> counts);

// Runs `fn(i)` for every i in [0, n) on up to `threads` threads, the calling
// thread included, and returns each call's status by i. The calling
// thread's fault-point handler is installed on the helper threads. An
// exception escaping `fn` becomes an Internal status. Every helper thread
// is joined before returning.
std::vector<absl::Status> RunParallel(
    size_t n, int threads, const std::function<absl::Status(size_t)>& fn);

// `dir`'s metadata, read from `.metadata` (or its sidecar, with
// `use_sidecar`): decoded, or, with `encoded`, as EncodeMetadata makes it
// (then `*encoded` is set and the returned Metadata is empty). NotFound
// "not a checkpoint: no .metadata in <dir>" without one; ResourceExhausted
// for a `.metadata` over `max_bytes` (before reading it) or beyond
// `limits`; read and decode errors naming the file.
absl::StatusOr<Metadata> ReadMetadataFile(FileSystem& fs,
                                          const std::string& dir,
                                          uint64_t max_bytes,
                                          const DecodeLimits& limits,
                                          bool use_sidecar,
                                          std::string* encoded = nullptr);

// Whether `relative` names a file inside the checkpoint directory.
bool IsSafeRelativePath(absl::string_view relative);

}  // namespace fs_storage_internal
}  // namespace dcp

#endif  // DCP_STORAGE_FS_STORAGE_COMMON_H_
