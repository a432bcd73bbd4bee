#include "checkpoint/staging.h"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "ATen/ATen.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "core/tensor_copy.h"
#include "core/torch_status.h"

namespace dcp {
namespace {

// Tensors above this size are split into row ranges of about this many
// bytes, so that one large tensor keeps every copying thread busy.
constexpr int64_t kPieceBytes = int64_t{16} << 20;

// One tensor copy still to do: `src` into the freshly allocated or reused
// `dest`; `key` names it in errors.
struct CopyJob {
  at::Tensor src;
  at::Tensor dest;
  std::string key;
};

int64_t TensorBytes(const at::Tensor& tensor) {
  return tensor.numel() * static_cast<int64_t>(tensor.element_size());
}

// True if `dest` can receive a staged copy of `src` as it is.
// `status` of staging the tensor at key path `key` ("layers.0.weight").
absl::Status InKey(const absl::Status& status, const std::string& key) {
  return Annotate(Annotate(status, "staging a tensor"),
                  absl::StrCat("key \"", key, "\""));
}

bool Reusable(const at::Tensor& src, const at::Tensor& dest) {
  return dest.defined() && dest.device().is_cpu() &&
         dest.layout() == c10::kStrided && !dest.is_quantized() &&
         dest.is_contiguous() && dest.scalar_type() == src.scalar_type() &&
         dest.sizes() == src.sizes() && !dest.requires_grad();
}

class Stager {
 public:
  explicit Stager(StagingStats* stats) : stats_(*stats) {}

  absl::StatusOr<StateDict> StageDict(const StateDict& dict,
                                      const StateDict* reuse,
                                      const std::string& prefix) {
    StateDict staged;
    for (const auto& [key, value] : dict.entries()) {
      const std::string path = prefix.empty() ? key : absl::StrCat(prefix, ".", key);
      const Value* old = reuse != nullptr ? reuse->Find(key) : nullptr;
      DCP_ASSIGN_OR_RETURN(Value copy, StageValue(value, old, path));
      staged.Set(key, std::move(copy));
    }
    return staged;
  }

  std::vector<CopyJob>& jobs() { return jobs_; }

 private:
  absl::StatusOr<Value> StageValue(const Value& value, const Value* reuse,
                                   const std::string& path) {
    if (const auto* tensor = value.get_if<at::Tensor>()) {
      const at::Tensor* old = reuse != nullptr ? reuse->get_if<at::Tensor>()
                                               : nullptr;
      DCP_ASSIGN_OR_RETURN(at::Tensor copy, StageTensor(*tensor, old, path));
      return Value(std::move(copy));
    }
    if (const auto* sharded = value.get_if<ShardedTensor>()) {
      const ShardedTensor* old =
          reuse != nullptr ? reuse->get_if<ShardedTensor>() : nullptr;
      ShardedTensor copy;
      copy.global_size = sharded->global_size;
      for (size_t i = 0; i < sharded->local_shards.size(); ++i) {
        const Shard& shard = sharded->local_shards[i];
        const at::Tensor* old_shard =
            old != nullptr && i < old->local_shards.size()
                ? &old->local_shards[i].tensor
                : nullptr;
        DCP_ASSIGN_OR_RETURN(at::Tensor data,
                             StageTensor(shard.tensor, old_shard, path));
        copy.local_shards.push_back(Shard{std::move(data), shard.offsets});
      }
      return Value(std::move(copy));
    }
    if (const auto* list = value.get_if<List>()) {
      const List* old = reuse != nullptr ? reuse->get_if<List>() : nullptr;
      List copy;
      copy.reserve(list->size());
      for (size_t i = 0; i < list->size(); ++i) {
        const Value* old_element =
            old != nullptr && i < old->size() ? &(*old)[i] : nullptr;
        DCP_ASSIGN_OR_RETURN(
            Value staged,
            StageValue((*list)[i], old_element, absl::StrCat(path, ".", i)));
        copy.push_back(std::move(staged));
      }
      return Value(std::move(copy));
    }
    if (const auto* dict = value.get_if<StateDict>()) {
      const StateDict* old =
          reuse != nullptr ? reuse->get_if<StateDict>() : nullptr;
      DCP_ASSIGN_OR_RETURN(StateDict copy, StageDict(*dict, old, path));
      return Value(std::move(copy));
    }
    return value;  // Non-tensor leaves are values already.
  }

  // The staged tensor for `src`: `*reuse` or a new uninitialised one, with
  // the copy queued; or, for tensors that are not strided CPU-copyable, a
  // copy made by libtorch at once.
  absl::StatusOr<at::Tensor> StageTensor(const at::Tensor& src,
                                         const at::Tensor* reuse,
                                         const std::string& path) {
    if (!src.defined()) return src;
    if (src.layout() != c10::kStrided || src.is_quantized()) {
      absl::StatusOr<at::Tensor> copy = CloneToCpu(src);
      if (!copy.ok()) return InKey(copy.status(), path);
      stats_.bytes += TensorBytes(*copy);
      return copy;
    }
    at::Tensor dest;
    if (reuse != nullptr && Reusable(src, *reuse)) {
      dest = *reuse;
      stats_.reused_bytes += TensorBytes(dest);
    } else {
      absl::StatusOr<at::Tensor> allocated =
          TorchCall("allocating a staging buffer", [&] {
            return at::empty(src.sizes(), at::TensorOptions()
                                              .dtype(src.scalar_type())
                                              .device(at::kCPU));
          });
      if (!allocated.ok()) return InKey(allocated.status(), path);
      dest = *std::move(allocated);
    }
    stats_.bytes += TensorBytes(dest);
    jobs_.push_back(CopyJob{src, dest, path});
    return dest;
  }

  StagingStats& stats_;
  std::vector<CopyJob> jobs_;
};

// Splits the jobs' large tensors into row ranges of about kPieceBytes, so
// that threads share the work evenly.
std::vector<CopyJob> SplitIntoPieces(std::vector<CopyJob> jobs) {
  std::vector<CopyJob> pieces;
  pieces.reserve(jobs.size());
  for (CopyJob& job : jobs) {
    const int64_t bytes = TensorBytes(job.dest);
    if (job.src.dim() == 0 || bytes <= kPieceBytes || job.src.size(0) < 2) {
      pieces.push_back(std::move(job));
      continue;
    }
    const int64_t rows = job.src.size(0);
    const int64_t row_bytes = std::max<int64_t>(1, bytes / rows);
    const int64_t step = std::max<int64_t>(1, kPieceBytes / row_bytes);
    for (int64_t start = 0; start < rows; start += step) {
      const int64_t length = std::min(step, rows - start);
      pieces.push_back(CopyJob{job.src.narrow(0, start, length),
                               job.dest.narrow(0, start, length), job.key});
    }
  }
  return pieces;
}

absl::Status RunCopy(const CopyJob& job) {
  absl::Status status = CopyTensorInto(job.src, job.dest);
  if (status.ok()) return status;
  return InKey(status, job.key);
}

// Runs `jobs` on `threads` threads (the caller's included); the first error
// in job order wins, so the result does not depend on scheduling.
absl::Status RunCopies(const std::vector<CopyJob>& jobs, int threads) {
  if (threads <= 1 || jobs.size() <= 1) {
    for (const CopyJob& job : jobs) DCP_RETURN_IF_ERROR(RunCopy(job));
    return absl::OkStatus();
  }
  std::vector<absl::Status> results(jobs.size());
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next.fetch_add(1); i < jobs.size();
         i = next.fetch_add(1)) {
      results[i] = RunCopy(jobs[i]);
    }
  };
  std::vector<std::thread> helpers;
  helpers.reserve(static_cast<size_t>(threads - 1));
  for (int t = 1; t < threads; ++t) helpers.emplace_back(work);
  work();
  for (std::thread& helper : helpers) helper.join();
  for (const absl::Status& status : results) DCP_RETURN_IF_ERROR(status);
  return absl::OkStatus();
}

int CopyThreads(const StagingOptions& options) {
  if (options.copy_threads > 0) return options.copy_threads;
  const unsigned hardware = std::thread::hardware_concurrency();
  return static_cast<int>(std::clamp<unsigned>(hardware, 1, 4));
}

}  // namespace

absl::StatusOr<StateDict> StageStateDict(const StateDict& state_dict,
                                         const StagingOptions& options,
                                         const StateDict* reuse,
                                         StagingStats* stats) {
  StagingStats local;
  Stager stager(&local);
  DCP_ASSIGN_OR_RETURN(StateDict staged,
                       stager.StageDict(state_dict, reuse, ""));
  int threads = 1;
  if (local.bytes >= options.parallel_copy_min_bytes) {
    threads = CopyThreads(options);
  }
  std::vector<CopyJob> jobs = std::move(stager.jobs());
  if (threads > 1) jobs = SplitIntoPieces(std::move(jobs));
  threads = static_cast<int>(
      std::min<size_t>(static_cast<size_t>(threads), jobs.size()));
  DCP_RETURN_IF_ERROR(RunCopies(jobs, threads));
  local.threads = std::max(threads, 1);
  if (stats != nullptr) *stats = local;
  return staged;
}

StagingPool::StagingPool(StagingOptions options, size_t max_cached)
    : options_(options), cache_(std::make_shared<Cache>()) {
  cache_->max_cached = max_cached;
}

StagingPool::~StagingPool() = default;

absl::StatusOr<std::shared_ptr<const StateDict>> StagingPool::Stage(
    const StateDict& state_dict, StagingStats* stats) {
  std::unique_ptr<StateDict> reuse;
  {
    std::lock_guard<std::mutex> lock(cache_->mu);
    if (!cache_->released.empty()) {
      reuse = std::move(cache_->released.back());
      cache_->released.pop_back();
    }
  }
  absl::StatusOr<StateDict> staged =
      StageStateDict(state_dict, options_, reuse.get(), stats);
  if (!staged.ok()) {
    // Its buffers may be half overwritten, which does not matter: whatever
    // reuses them overwrites them entirely.
    if (reuse != nullptr) {
      std::lock_guard<std::mutex> lock(cache_->mu);
      cache_->released.push_back(std::move(reuse));
    }
    return staged.status();
  }
  // `reuse` is dropped here: its reusable tensors now live in `staged`, the
  // rest is freed.
  reuse.reset();
  std::weak_ptr<Cache> weak = cache_;
  return std::shared_ptr<const StateDict>(
      new StateDict(*std::move(staged)), [weak](const StateDict* released) {
        std::unique_ptr<StateDict> owned(const_cast<StateDict*>(released));
        std::shared_ptr<Cache> cache = weak.lock();
        if (cache == nullptr) return;
        std::lock_guard<std::mutex> lock(cache->mu);
        if (cache->released.size() < cache->max_cached) {
          cache->released.push_back(std::move(owned));
        }
      });
}

void StagingPool::Clear() {
  std::vector<std::unique_ptr<StateDict>> released;
  {
    std::lock_guard<std::mutex> lock(cache_->mu);
    released.swap(cache_->released);
  }
}

size_t StagingPool::cached() const {
  std::lock_guard<std::mutex> lock(cache_->mu);
  return cache_->released.size();
}

}  // namespace dcp
