#include "core/status.h"

#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace dcp {

absl::Status Annotate(const absl::Status& status, absl::string_view context) {
  if (status.ok() || context.empty()) return status;
  absl::Status annotated(status.code(),
                         absl::StrCat(context, ": ", status.message()));
  status.ForEachPayload(
      [&annotated](absl::string_view type_url, const absl::Cord& payload) {
        annotated.SetPayload(type_url, payload);
      });
  return annotated;
}

absl::Status FirstError(const std::vector<absl::Status>& statuses,
                        absl::string_view label) {
  for (size_t i = 0; i < statuses.size(); ++i) {
    if (statuses[i].ok()) continue;
    if (label.empty()) return statuses[i];
    return Annotate(statuses[i], absl::StrCat(label, " ", i));
  }
  return absl::OkStatus();
}

absl::string_view CommitOutcomeName(CommitOutcome outcome) {
  switch (outcome) {
    case CommitOutcome::kNotCommitted:
      return "not committed";
    case CommitOutcome::kCommitted:
      return "committed";
    case CommitOutcome::kUnknown:
      return "unknown";
  }
  return "unknown";
}

absl::Status WithCommitOutcome(absl::Status status, CommitOutcome outcome) {
  if (status.ok()) return status;
  status.SetPayload(kCommitOutcomePayload,
                    absl::Cord(CommitOutcomeName(outcome)));
  return status;
}

CommitOutcome GetCommitOutcome(const absl::Status& status) {
  if (status.ok()) return CommitOutcome::kCommitted;
  auto payload = status.GetPayload(kCommitOutcomePayload);
  if (!payload.has_value()) return CommitOutcome::kNotCommitted;
  for (CommitOutcome outcome :
       {CommitOutcome::kNotCommitted, CommitOutcome::kCommitted,
        CommitOutcome::kUnknown}) {
    if (*payload == CommitOutcomeName(outcome)) return outcome;
  }
  return CommitOutcome::kUnknown;
}

}  // namespace dcp
