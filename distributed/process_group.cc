#include "distributed/process_group.h"

#include "absl/strings/string_view.h"

namespace dcp {

absl::string_view CollectiveKindName(CollectiveKind kind) {
  switch (kind) {
    case CollectiveKind::kBarrier:
      return "Barrier";
    case CollectiveKind::kBroadcast:
      return "Broadcast";
    case CollectiveKind::kGather:
      return "Gather";
    case CollectiveKind::kScatter:
      return "Scatter";
    case CollectiveKind::kAllGather:
      return "AllGather";
    case CollectiveKind::kFork:
      return "Fork";
  }
  return "?";
}

bool CollectiveHasRoot(CollectiveKind kind) {
  return kind == CollectiveKind::kBroadcast ||
         kind == CollectiveKind::kGather || kind == CollectiveKind::kScatter;
}

}  // namespace dcp
