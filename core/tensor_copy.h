// -----------------------------------------------------------------------------
// File: core/tensor_copy.h
// -----------------------------------------------------------------------------
//
// Tensor copies that ThreadSanitizer can see.
//
// libtorch is not built with -fsanitize=thread, so TSan does not see the
// memory that `copy_` or `clone` reads and writes. A caller that changes a
// tensor while an async save stages it, or two parallel loads that write the
// same destination bytes, would then race without a report. dcp copies tensor
// data on those paths through these helpers instead:
//
//   * a CPU copy between contiguous tensors of one dtype is a std::memcpy in
//     this (instrumented) translation unit, which TSan intercepts;
//   * any other copy is left to libtorch, and under TSan (only when
//     `__SANITIZE_THREAD__` is defined) the element bytes read and written
//     are then announced with `__tsan_read_range` / `__tsan_write_range`,
//     one call per contiguous run, so that disjoint views of one tensor
//     (say, two column shards written by two threads) do not look like a
//     race.
//
// Example (the staging copy of an async save):
//
//   DCP_ASSIGN_OR_RETURN(at::Tensor staged, CloneToCpu(tensor));
//
// Thread safety: free functions without shared state. Concurrent calls are
// safe when they touch disjoint bytes, as for any memory.
#ifndef DCP_CORE_TENSOR_COPY_H_
#define DCP_CORE_TENSOR_COPY_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "ATen/core/Tensor.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dcp {

// Copies `src`'s elements into `dest`, which must have the same shape, the
// way `dest.copy_(src)` does (the dtype is converted; conjugate and negative
// bits are resolved), with autograd off. `dest` may be a view: only its
// elements are written. Bumps `dest`'s version counter as an in-place op
// does.
//
// Errors: InvalidArgument if either tensor is undefined or the shapes
// differ; otherwise what libtorch's copy reports, converted by TorchCall
// (e.g. InvalidArgument for an overlapping or expanded `dest`).
absl::Status CopyTensorInto(const at::Tensor& src, const at::Tensor& dest);

// A new contiguous CPU tensor holding `src`'s values, with its dtype and
// shape, detached from autograd: the staging copy of an async save. An
// undefined `src` gives an undefined tensor. Tensors that are not strided
// CPU tensors (sparse, quantized, other devices) are copied by libtorch.
//
// Errors: as TorchCall (e.g. ResourceExhausted when out of memory).
absl::StatusOr<at::Tensor> CloneToCpu(const at::Tensor& src);

// Under TSan, records that the calling thread read (or wrote) every element
// byte of `tensor`; a no-op otherwise, and for tensors that are undefined,
// empty, not strided or not on the CPU. For copies made by uninstrumented
// code on this thread's behalf.
void AnnotateTensorRead(const at::Tensor& tensor);
void AnnotateTensorWrite(const at::Tensor& tensor);

namespace tensor_copy_internal {

// The element bytes of a strided CPU tensor as maximal contiguous runs
// (byte offset from `data_ptr()`, length), in memory order of its
// dimensions; what the annotations cover. Empty for tensors they skip.
std::vector<std::pair<int64_t, int64_t>> ContiguousRuns(
    const at::Tensor& tensor);

}  // namespace tensor_copy_internal
}  // namespace dcp

#endif  // DCP_CORE_TENSOR_COPY_H_
