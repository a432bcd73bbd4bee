// -----------------------------------------------------------------------------
// File: core/torch_status.h
// -----------------------------------------------------------------------------
//
// The one place where libtorch exceptions become `absl::Status`.
//
// libtorch reports errors by throwing `c10::Error` and its subclasses; dcp's
// API never throws. Wrap each libtorch call whose outcome depends on data
// (copy_, narrow, view, from_blob, deserialisation, ...) in `TorchCall`.
// Check preconditions (shapes, dtypes, byte lengths) yourself first and
// return a precise error; an exception that still gets through then maps to:
//
//   c10::IndexError                        -> OutOfRange
//   c10::ValueError, c10::TypeError        -> InvalidArgument
//   c10::NotImplementedError               -> Unimplemented
//   c10::OutOfMemoryError, std::bad_alloc  -> ResourceExhausted
//   any other c10::Error or std::exception -> Internal
//   anything else thrown                   -> Internal "unknown exception"
//
// Messages use `what_without_backtrace()` and are prefixed with `context`
// and ": " (no prefix when `context` is empty).
#ifndef DCP_CORE_TORCH_STATUS_H_
#define DCP_CORE_TORCH_STATUS_H_

#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dcp {

// Converts the exception being handled into a status. Must be called from
// inside a `catch` block.
absl::Status StatusFromCurrentException(absl::string_view context);

// Runs `fn` once, on the calling thread, and converts any exception it
// throws into a status. Returns `absl::Status` when `fn` returns void, else
// `absl::StatusOr<R>` holding `fn`'s result.
template <typename Fn>
auto TorchCall(absl::string_view context, Fn&& fn)
    -> std::conditional_t<std::is_void_v<std::invoke_result_t<Fn>>,
                          absl::Status,
                          absl::StatusOr<std::invoke_result_t<Fn>>> {
  try {
    if constexpr (std::is_void_v<std::invoke_result_t<Fn>>) {
      std::forward<Fn>(fn)();
      return absl::OkStatus();
    } else {
      return std::forward<Fn>(fn)();
    }
  } catch (...) {
    return StatusFromCurrentException(context);
  }
}

}  // namespace dcp

#endif  // DCP_CORE_TORCH_STATUS_H_
