// -----------------------------------------------------------------------------
// File: core/status.h
// -----------------------------------------------------------------------------
//
// Status plumbing shared by every dcp library: early-return macros and
// `Annotate`, which adds context to an error without losing its code.
//
// dcp's public API never throws; every fallible call returns `absl::Status`
// or `absl::StatusOr<T>`. Codes are used consistently:
//   InvalidArgument    bad user input, plan or state dict
//   NotFound           missing checkpoint, metadata or key
//   AlreadyExists      checkpoint exists and overwriting is refused
//   DataLoss           corrupt, truncated or checksum-mismatched data
//   FailedPrecondition wrong call order, or ranks disagreeing on a collective
//   DeadlineExceeded   a collective or wait timed out
//   Aborted            another rank failed, or the world was aborted
//   Internal           a bug
#ifndef DCP_CORE_STATUS_H_
#define DCP_CORE_STATUS_H_

#include <utility>
#include <vector>

#include "absl/base/optimization.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

// Returns from the enclosing function if `expr` (an absl::Status) is an error.
#define DCP_RETURN_IF_ERROR(expr)                      \
  do {                                                 \
    ::absl::Status dcp_status_macro_ = (expr);         \
    if (ABSL_PREDICT_FALSE(!dcp_status_macro_.ok())) { \
      return dcp_status_macro_;                        \
    }                                                  \
  } while (false)

// `DCP_ASSIGN_OR_RETURN(auto x, MakeX());` evaluates the StatusOr once,
// returns its status on error, and otherwise moves the value into `lhs`.
#define DCP_ASSIGN_OR_RETURN(lhs, rexpr)                                       \
  DCP_ASSIGN_OR_RETURN_IMPL_(DCP_STATUS_CONCAT_(dcp_statusor_, __LINE__), lhs, \
                             rexpr)

#define DCP_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                               \
  if (ABSL_PREDICT_FALSE(!statusor.ok())) {              \
    return std::move(statusor).status();                 \
  }                                                      \
  lhs = *std::move(statusor)

#define DCP_STATUS_CONCAT_(a, b) DCP_STATUS_CONCAT_IMPL_(a, b)
#define DCP_STATUS_CONCAT_IMPL_(a, b) a##b

namespace dcp {

// Returns `status` with "`context`: " prefixed to its message. The code and
// payloads are kept; an OK status stays OK, and an empty `context` changes
// nothing.
absl::Status Annotate(const absl::Status& status, absl::string_view context);

// The first error of `statuses`, in order, or OK (e.g. of threads or ranks
// that all ran). With a `label`, it is annotated "<label> <index>":
// FirstError(per_rank, "rank") gives "rank 2: DATA_LOSS: ...".
absl::Status FirstError(const std::vector<absl::Status>& statuses,
                        absl::string_view label = "");

// What a save's error says about the checkpoint it was writing.
//   kNotCommitted  the save did not replace the previous checkpoint
//   kCommitted     the new checkpoint is in place (e.g. its metadata was
//                  renamed into place but syncing the directory failed)
//   kUnknown       this rank cannot tell (e.g. it timed out waiting for the
//                  coordinator's commit)
// An OK save is committed.
enum class CommitOutcome { kNotCommitted, kCommitted, kUnknown };

// "not committed", "committed", "unknown".
absl::string_view CommitOutcomeName(CommitOutcome outcome);

// Payload type URL that records a save error's CommitOutcome by name.
inline constexpr absl::string_view kCommitOutcomePayload =
    "type.dcp/checkpoint_error.commit_outcome";

// Returns the error `status` marked with `outcome`; the message should
// already say it. OK stays OK.
absl::Status WithCommitOutcome(absl::Status status, CommitOutcome outcome);

// The outcome recorded in a save's status: kCommitted for OK, the payload
// if there is one (kUnknown for a payload it does not recognise), and
// kNotCommitted for an error without it.
CommitOutcome GetCommitOutcome(const absl::Status& status);

}  // namespace dcp

#endif  // DCP_CORE_STATUS_H_
