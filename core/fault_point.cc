#include "core/fault_point.h"

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace dcp {
namespace {

// The handler of the calling thread. A plain pointer: production code pays
// one thread-local load per fault point.
thread_local FaultPointHandler* current_handler = nullptr;

}  // namespace

absl::Status FaultPoint(absl::string_view name) {
  FaultPointHandler* handler = current_handler;
  if (handler == nullptr) return absl::OkStatus();
  return handler->OnFaultPoint(name);
}

FaultPointHandler* CurrentFaultPointHandler() { return current_handler; }

ScopedFaultPointHandler::ScopedFaultPointHandler(FaultPointHandler* handler)
    : previous_(current_handler) {
  current_handler = handler;
}

ScopedFaultPointHandler::~ScopedFaultPointHandler() {
  current_handler = previous_;
}

}  // namespace dcp
