#include "core/tensor_copy.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "ATen/ATen.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "c10/core/GradMode.h"
#include "core/metadata.h"
#include "core/status.h"
#include "core/torch_status.h"

#if defined(__SANITIZE_THREAD__)
// Part of libtsan's interface (compiler-rt tsan_interface.h); not declared in
// any public header that gcc installs.
extern "C" void __tsan_read_range(void* addr, unsigned long size);
extern "C" void __tsan_write_range(void* addr, unsigned long size);
#endif

namespace dcp {
namespace {

// Whether std::memcpy of the element bytes is exactly `dest.copy_(src)`.
bool CanMemcpy(const at::Tensor& src, const at::Tensor& dest) {
  const auto plain = [](const at::Tensor& t) {
    return t.device().is_cpu() && t.layout() == c10::kStrided &&
           !t.is_quantized() && !t.is_conj() && !t.is_neg() &&
           !t._is_zerotensor() && t.is_contiguous();
  };
  if (src.scalar_type() != dest.scalar_type() || !plain(src) ||
      !plain(dest)) {
    return false;
  }
  // Overlapping memory is for libtorch to handle (or reject).
  const size_t bytes = static_cast<size_t>(dest.numel()) * dest.element_size();
  const auto s = reinterpret_cast<uintptr_t>(src.data_ptr());
  const auto d = reinterpret_cast<uintptr_t>(dest.data_ptr());
  return s + bytes <= d || d + bytes <= s;
}

// Calls `fn(address, bytes)` for each maximal run of contiguous element
// bytes of a strided CPU tensor, in memory order of its dimensions. Every
// element byte is covered; dimensions of stride 0 (expanded) are visited
// once, since they repeat the same bytes.
template <typename Fn>
void ForEachRun(const at::Tensor& tensor, Fn fn) {
  if (!tensor.defined() || !tensor.device().is_cpu() ||
      tensor.layout() != c10::kStrided || tensor.numel() == 0) {
    return;
  }
  const int64_t item = static_cast<int64_t>(tensor.element_size());
  char* const base = static_cast<char*>(tensor.data_ptr());
  // (size, stride in elements), outermost first, without dimensions that
  // do not move through memory.
  std::vector<std::pair<int64_t, int64_t>> dims;
  for (int64_t d = 0; d < tensor.dim(); ++d) {
    if (tensor.size(d) != 1 && tensor.stride(d) != 0) {
      dims.emplace_back(tensor.size(d), tensor.stride(d));
    }
  }
  // Merge a dimension into the next inner one when they are contiguous.
  std::vector<std::pair<int64_t, int64_t>> merged;
  for (const auto& dim : dims) {
    merged.push_back(dim);
    while (merged.size() >= 2) {
      auto& inner = merged[merged.size() - 1];
      auto& outer = merged[merged.size() - 2];
      if (outer.second != inner.first * inner.second) break;
      outer = {outer.first * inner.first, inner.second};
      merged.pop_back();
    }
  }
  int64_t run = item;
  if (!merged.empty() && merged.back().second == 1) {
    run = merged.back().first * item;
    merged.pop_back();
  }
  std::vector<int64_t> index(merged.size(), 0);
  int64_t offset = 0;  // In elements.
  while (true) {
    fn(base + offset * item, static_cast<size_t>(run));
    size_t d = merged.size();
    for (; d-- > 0;) {  // Odometer, innermost fastest.
      offset += merged[d].second;
      if (++index[d] < merged[d].first) break;
      offset -= merged[d].first * merged[d].second;
      index[d] = 0;
    }
    if (d == static_cast<size_t>(-1)) return;
  }
}

}  // namespace

namespace tensor_copy_internal {

std::vector<std::pair<int64_t, int64_t>> ContiguousRuns(
    const at::Tensor& tensor) {
  std::vector<std::pair<int64_t, int64_t>> runs;
  if (!tensor.defined() || !tensor.device().is_cpu() ||
      tensor.layout() != c10::kStrided || tensor.numel() == 0) {
    return runs;
  }
  const char* base = static_cast<const char*>(tensor.data_ptr());
  ForEachRun(tensor, [&](char* p, size_t n) {
    runs.emplace_back(p - base, static_cast<int64_t>(n));
  });
  return runs;
}

}  // namespace tensor_copy_internal

void AnnotateTensorRead(const at::Tensor& tensor) {
#if defined(__SANITIZE_THREAD__)
  ForEachRun(tensor, [](char* p, size_t n) { __tsan_read_range(p, n); });
#else
  (void)tensor;
#endif
}

void AnnotateTensorWrite(const at::Tensor& tensor) {
#if defined(__SANITIZE_THREAD__)
  ForEachRun(tensor, [](char* p, size_t n) { __tsan_write_range(p, n); });
#else
  (void)tensor;
#endif
}

absl::Status CopyTensorInto(const at::Tensor& src, const at::Tensor& dest) {
  if (!src.defined() || !dest.defined()) {
    return absl::InvalidArgumentError(
        absl::StrCat("copying ", src.defined() ? "a" : "an undefined",
                     " tensor into ", dest.defined() ? "a" : "an undefined",
                     " tensor"));
  }
  if (src.sizes() != dest.sizes()) {
    return absl::InvalidArgumentError(
        absl::StrCat("copying a tensor of shape ", FormatShape(src.sizes()),
                     " into one of shape ", FormatShape(dest.sizes())));
  }
  if (dest.numel() == 0) return absl::OkStatus();
  if (CanMemcpy(src, dest)) {
    // As copy_ does; fails (before writing) for an inference tensor outside
    // inference mode.
    DCP_RETURN_IF_ERROR(TorchCall("copying a tensor", [&] {
      dest.unsafeGetTensorImpl()->bump_version();
    }));
    std::memcpy(dest.data_ptr(), src.data_ptr(),
                static_cast<size_t>(dest.numel()) * dest.element_size());
    return absl::OkStatus();
  }
  DCP_RETURN_IF_ERROR(TorchCall("copying a tensor", [&] {
    c10::AutoGradMode no_grad(false);
    dest.copy_(src);
  }));
  AnnotateTensorRead(src);
  AnnotateTensorWrite(dest);
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> CloneToCpu(const at::Tensor& src) {
  if (!src.defined()) return src;
  if (!src.device().is_cpu() || src.layout() != c10::kStrided ||
      src.is_quantized()) {
    DCP_ASSIGN_OR_RETURN(at::Tensor copy, TorchCall("copying a tensor", [&] {
                           return src.detach().to(at::kCPU).clone(
                               at::MemoryFormat::Contiguous);
                         }));
    AnnotateTensorRead(src);
    return copy;
  }
  DCP_ASSIGN_OR_RETURN(at::Tensor copy, TorchCall("allocating a copy", [&] {
                         return at::empty(src.sizes(),
                                          at::TensorOptions()
                                              .dtype(src.scalar_type())
                                              .device(at::kCPU));
                       }));
  DCP_RETURN_IF_ERROR(CopyTensorInto(src, copy));
  return copy;
}

}  // namespace dcp
