#include "distributed/single_process_group.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "core/status.h"
#include "distributed/process_group.h"

namespace dcp {
namespace {

absl::Status CheckRoot(absl::string_view op, absl::string_view tag, int root) {
  if (root == 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrFormat(
      "%s(tag=\"%s\"): root %d is out of range for a world of size 1", op,
      absl::CEscape(tag), root));
}

}  // namespace

absl::Status SingleProcessGroup::Barrier(absl::string_view tag,
                                         absl::Time deadline) {
  return absl::OkStatus();
}

absl::StatusOr<std::string> SingleProcessGroup::Broadcast(
    absl::string_view tag, int root, std::string payload,
    absl::Time deadline) {
  DCP_RETURN_IF_ERROR(CheckRoot("Broadcast", tag, root));
  return payload;
}

absl::StatusOr<std::vector<std::string>> SingleProcessGroup::Gather(
    absl::string_view tag, int root, std::string payload,
    absl::Time deadline) {
  DCP_RETURN_IF_ERROR(CheckRoot("Gather", tag, root));
  std::vector<std::string> gathered;
  gathered.push_back(std::move(payload));
  return gathered;
}

absl::StatusOr<std::string> SingleProcessGroup::Scatter(
    absl::string_view tag, int root, std::vector<std::string> payloads,
    absl::Time deadline) {
  DCP_RETURN_IF_ERROR(CheckRoot("Scatter", tag, root));
  if (payloads.size() != 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Scatter(tag=\"%s\"): root 0 passed %d payloads for a world of size 1",
        absl::CEscape(tag), payloads.size()));
  }
  return std::move(payloads[0]);
}

absl::StatusOr<std::vector<std::string>> SingleProcessGroup::AllGather(
    absl::string_view tag, std::string payload, absl::Time deadline) {
  std::vector<std::string> gathered;
  gathered.push_back(std::move(payload));
  return gathered;
}

absl::StatusOr<std::shared_ptr<ProcessGroup>> SingleProcessGroup::Fork(
    absl::string_view tag, absl::Time deadline) {
  return std::shared_ptr<ProcessGroup>(std::make_shared<SingleProcessGroup>());
}

}  // namespace dcp
