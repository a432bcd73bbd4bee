#include "core/future.h"

#include <cstdlib>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "glog/logging.h"

namespace dcp {
namespace future_internal {

void DieInvalid(const char* what) {
  LOG(FATAL) << "use of an invalid (default-constructed or moved-from) dcp::"
             << what;
  abort();  // Unreachable; LOG(FATAL) does not return.
}

}  // namespace future_internal

absl::Status WaitAll(absl::Span<const Future<void>> futures) {
  absl::Status first_error;
  for (const Future<void>& future : futures) {
    const absl::Status& status = future.result();
    if (first_error.ok() && !status.ok()) first_error = status;
  }
  return first_error;
}

}  // namespace dcp
