// -----------------------------------------------------------------------------
// File: checkpoint/staging.h
// -----------------------------------------------------------------------------
//
// Staging: the CPU copy of a state dict that an async save writes while the
// caller goes on training (PyTorch 2.6's `BlockingAsyncStager`).
//
// Two things make staging cost about one memcpy of the state:
//   * Reuse. A `StagingPool` keeps the buffers of a staged copy once the save
//     that used it is done, and the next `Stage` of a state dict with the same
//     layout copies into them instead of allocating (PyTorch's
//     `cache_staged_state_dict=True`). Fresh buffers cost a page fault per
//     4 KiB page on first touch, which is slower than the copy itself.
//   * Parallel copies. A state of at least `parallel_copy_min_bytes` is copied
//     by `copy_threads` threads, large tensors split into row ranges.
//
//   StagingPool pool(StagingOptions{}, /*max_cached=*/1);
//   DCP_ASSIGN_OR_RETURN(std::shared_ptr<const StateDict> staged,
//                        pool.Stage(state_dict));
//   ... write *staged in the background; dropping the last reference gives
//   ... its buffers back to the pool for the next Stage.
//
// Memory: a pool holds at most `max_cached` idle copies, on top of the copies
// its callers still hold; `Clear` frees the idle ones.
#ifndef DCP_CHECKPOINT_STAGING_H_
#define DCP_CHECKPOINT_STAGING_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/statusor.h"
#include "core/state_dict.h"

namespace dcp {

struct StagingOptions {
  // Threads copying tensor data, the calling thread included. 0 means
  // min(4, std::thread::hardware_concurrency()).
  int copy_threads = 0;
  // A state with fewer tensor bytes than this is copied by the calling
  // thread alone (threads cost more than they save on small states).
  int64_t parallel_copy_min_bytes = int64_t{64} << 20;
};

// What one staging did, for logs and benchmarks.
struct StagingStats {
  // Tensor bytes copied in all.
  int64_t bytes = 0;
  // Of those, bytes copied into reused buffers.
  int64_t reused_bytes = 0;
  // Threads that copied (1 when the calling thread copied alone).
  int threads = 1;
};

// A deep copy of `state_dict` whose tensors are contiguous CPU tensors with
// the source's dtype and shape, detached from autograd (sharded tensors keep
// their global size and shard offsets); non-tensor values are copied by
// value. The caller may change or free its own tensors as soon as it
// returns.
//
// With `reuse`, a tensor of the copy is written into the tensor at the same
// place of `*reuse` (same key path, same shard position) when that one is a
// contiguous CPU tensor of the same dtype and shape, and allocated afresh
// otherwise; the copy then aliases those tensors of `*reuse`, which must not
// be in use elsewhere. `stats`, if not null, receives what was done (on
// success only).
//
// Errors: what a tensor copy reports (e.g. ResourceExhausted when out of
// memory), annotated with the key; the copy is then discarded.
//
// Thread safety: `state_dict` must not be changed during the call; the
// copying threads only read it.
absl::StatusOr<StateDict> StageStateDict(const StateDict& state_dict,
                                         const StagingOptions& options = {},
                                         const StateDict* reuse = nullptr,
                                         StagingStats* stats = nullptr);

// Staged copies whose buffers are reused once released.
//
// Thread safety: thread-safe. A staged copy may be released (its last
// reference dropped) on any thread, also after the pool is destroyed (its
// buffers are then freed).
class StagingPool {
 public:
  // Keeps at most `max_cached` released copies for reuse; 0 never reuses
  // (every Stage allocates, and released copies are freed).
  StagingPool(StagingOptions options, size_t max_cached);
  ~StagingPool();
  StagingPool(const StagingPool&) = delete;
  StagingPool& operator=(const StagingPool&) = delete;

  // Stages `state_dict` (StageStateDict), copying into the buffers of the
  // most recently released copy, if any. Errors as StageStateDict; the
  // released copy then stays available. When the last reference to the
  // result is dropped, the copy is kept for reuse if fewer than
  // `max_cached` are kept (and the pool still exists), else freed.
  absl::StatusOr<std::shared_ptr<const StateDict>> Stage(
      const StateDict& state_dict, StagingStats* stats = nullptr);

  // Frees the released copies kept for reuse.
  void Clear();

  // Released copies kept for reuse.
  size_t cached() const;

 private:
  struct Cache {
    mutable std::mutex mu;
    size_t max_cached = 0;
    std::vector<std::unique_ptr<StateDict>> released;  // Guarded by mu.
  };

  const StagingOptions options_;
  const std::shared_ptr<Cache> cache_;
};

}  // namespace dcp

#endif  // DCP_CHECKPOINT_STAGING_H_
