// -----------------------------------------------------------------------------
// File: core/fault_point.h
// -----------------------------------------------------------------------------
//
// Named fault points: places in library code where a test can make the
// calling rank fail, e.g. `DCP_RETURN_IF_ERROR(FaultPoint("save.write"));`.
//
// In production no handler is installed and `FaultPoint` is one
// thread-local load returning OK. The simulator (//testing:simulator)
// installs a handler on each rank's thread, so a test can say "rank 2
// fails at save.write" and observe how the other ranks react.
//
// Thread safety: handlers are per thread. Code that moves work to another
// thread on behalf of a rank (e.g. an async save) carries the handler with
// `CurrentFaultPointHandler()` and `ScopedFaultPointHandler`.
#ifndef DCP_CORE_FAULT_POINT_H_
#define DCP_CORE_FAULT_POINT_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace dcp {

class FaultPointHandler {
 public:
  virtual ~FaultPointHandler() = default;
  // Returns the error to inject at `name`, or OK to continue. Called from
  // the thread that reached the point; must be thread-safe.
  virtual absl::Status OnFaultPoint(absl::string_view name) = 0;
};

// Returns the injected error for `name` on this thread, or OK.
absl::Status FaultPoint(absl::string_view name);

// The handler installed on this thread, or nullptr.
FaultPointHandler* CurrentFaultPointHandler();

// Installs `handler` (may be nullptr) on this thread for the scope's
// lifetime, restoring the previous one afterwards. Ownership: `handler`
// must outlive the scope.
class ScopedFaultPointHandler {
 public:
  explicit ScopedFaultPointHandler(FaultPointHandler* handler);
  ~ScopedFaultPointHandler();
  ScopedFaultPointHandler(const ScopedFaultPointHandler&) = delete;
  ScopedFaultPointHandler& operator=(const ScopedFaultPointHandler&) = delete;

 private:
  FaultPointHandler* previous_;
};

}  // namespace dcp

#endif  // DCP_CORE_FAULT_POINT_H_
