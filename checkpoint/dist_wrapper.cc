#include "checkpoint/dist_wrapper.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/cord.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/byte_codec.h"
#include "core/status.h"
#include "core/torch_status.h"

namespace dcp {
namespace {

// A rank's contribution to a step: the round it is in, and a status with a
// payload when OK.
//   string round + u8 ok (1) + string payload
//   string round + u8 ok (0) + varint code + string message
//                + count + (string type URL, string value) per status payload
// Status payloads (failed ranks, commit outcome) travel with the error.
std::string EncodeEnvelope(absl::string_view round,
                           const absl::StatusOr<std::string>& result) {
  ByteWriter writer;
  writer.WriteString(round);
  if (result.ok()) {
    writer.WriteBool(true);
    writer.WriteString(*result);
  } else {
    writer.WriteBool(false);
    writer.WriteVarint(static_cast<uint64_t>(result.status().code()));
    writer.WriteString(result.status().message());
    std::vector<std::pair<std::string, std::string>> payloads;
    result.status().ForEachPayload(
        [&payloads](absl::string_view url, const absl::Cord& value) {
          payloads.emplace_back(std::string(url), std::string(value));
        });
    writer.WriteCount(payloads.size());
    for (const auto& [url, value] : payloads) {
      writer.WriteString(url);
      writer.WriteString(value);
    }
  }
  return std::move(writer).Finish();
}

struct Envelope {
  std::string round;
  absl::StatusOr<std::string> result;
};

absl::StatusOr<Envelope> DecodeEnvelope(absl::string_view bytes) {
  ByteReader reader(bytes);
  DCP_ASSIGN_OR_RETURN(absl::string_view round,
                       reader.ReadString("step round"));
  DCP_ASSIGN_OR_RETURN(bool ok, reader.ReadBool("step result flag"));
  if (ok) {
    DCP_ASSIGN_OR_RETURN(absl::string_view payload,
                         reader.ReadString("step result payload"));
    DCP_RETURN_IF_ERROR(reader.ExpectEnd());
    return Envelope{std::string(round), std::string(payload)};
  }
  DCP_ASSIGN_OR_RETURN(uint64_t code, reader.ReadVarint("status code"));
  DCP_ASSIGN_OR_RETURN(absl::string_view message,
                       reader.ReadString("status message"));
  if (code == 0 || code > static_cast<uint64_t>(absl::StatusCode::kUnauthenticated)) {
    return reader.Malformed("status code", absl::StrCat("invalid code ", code));
  }
  absl::Status status(static_cast<absl::StatusCode>(code), message);
  // Each payload takes at least its two length bytes.
  DCP_ASSIGN_OR_RETURN(size_t payloads,
                       reader.ReadCount("status payloads", 2));
  for (size_t i = 0; i < payloads; ++i) {
    DCP_ASSIGN_OR_RETURN(absl::string_view url,
                         reader.ReadString("status payload type"));
    DCP_ASSIGN_OR_RETURN(absl::string_view value,
                         reader.ReadString("status payload"));
    status.SetPayload(url, absl::Cord(value));
  }
  DCP_RETURN_IF_ERROR(reader.ExpectEnd());
  return Envelope{std::string(round), std::move(status)};
}

// Decodes an envelope that this process group delivered; a malformed one
// is this rank's error (a bug or memory corruption, never a peer's data).
Envelope DecodeOrFail(absl::string_view bytes) {
  absl::StatusOr<Envelope> envelope = DecodeEnvelope(bytes);
  if (!envelope.ok()) {
    return Envelope{std::string(),
                    Annotate(envelope.status(), "decoding a step result")};
  }
  return *std::move(envelope);
}

// Runs a rank's local function; no exception may cross a rank boundary.
template <typename Fn>
auto RunLocal(absl::string_view step, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (...) {
    return StatusFromCurrentException(
        absl::StrCat("exception in checkpoint step \"", step, "\""));
  }
}

std::string Tag(absl::string_view step) {
  return absl::StrCat("dcp.", step);
}

// Marks an error of the process group itself (as opposed to an error a rank
// reported through the step).
absl::Status CollectiveFailure(absl::Status status) {
  status.SetPayload(kCollectiveFailurePayload, absl::Cord("1"));
  return status;
}

// Decodes every rank's envelope; collects failures (sorted by rank).
std::vector<std::pair<int, absl::Status>> Unpack(
    const std::vector<Envelope>& envelopes,
    std::vector<std::string>& payloads) {
  std::vector<std::pair<int, absl::Status>> failures;
  payloads.assign(envelopes.size(), std::string());
  for (size_t r = 0; r < envelopes.size(); ++r) {
    if (envelopes[r].result.ok()) {
      payloads[r] = *envelopes[r].result;
    } else {
      failures.emplace_back(static_cast<int>(r), envelopes[r].result.status());
    }
  }
  return failures;
}

std::vector<Envelope> DecodeAllOrFail(const std::vector<std::string>& bytes) {
  std::vector<Envelope> envelopes;
  envelopes.reserve(bytes.size());
  for (const std::string& b : bytes) envelopes.push_back(DecodeOrFail(b));
  return envelopes;
}

// FailedPrecondition if the ranks are in different rounds, naming each
// rank's round; OK otherwise.
absl::Status CheckRounds(absl::string_view step,
                         const std::vector<Envelope>& envelopes) {
  std::map<std::string, std::vector<int>> ranks_by_round;
  for (size_t r = 0; r < envelopes.size(); ++r) {
    ranks_by_round[envelopes[r].round].push_back(static_cast<int>(r));
  }
  if (ranks_by_round.size() <= 1) return absl::OkStatus();
  std::vector<std::pair<int, std::string>> groups;  // By first rank.
  for (const auto& [round, ranks] : ranks_by_round) {
    groups.emplace_back(
        ranks.front(),
        absl::StrCat(ranks.size() == 1 ? "rank " : "ranks ",
                     absl::StrJoin(ranks, ", "),
                     ranks.size() == 1 ? " is in " : " are in ", "\"",
                     absl::CHexEscape(round), "\""));
  }
  std::sort(groups.begin(), groups.end());
  std::vector<std::string> parts;
  for (auto& group : groups) parts.push_back(std::move(group.second));
  return absl::FailedPreconditionError(absl::StrCat(
      "checkpoint step \"", step,
      "\": the ranks are in different checkpoint rounds: ",
      absl::StrJoin(parts, "; "),
      " (every rank must call Save, AsyncSave and Load in the same order)"));
}

}  // namespace

absl::Status CheckpointError(
    absl::string_view step,
    const std::vector<std::pair<int, absl::Status>>& failures,
    int world_size) {
  if (failures.empty()) return absl::OkStatus();
  std::vector<std::string> parts;
  std::vector<std::string> ranks;
  for (const auto& [rank, status] : failures) {
    parts.push_back(absl::StrCat("rank ", rank, ": ", status.ToString()));
    ranks.push_back(absl::StrCat(rank));
  }
  absl::Status error(
      failures.front().second.code(),
      absl::StrCat("checkpoint step \"", step, "\" failed on ",
                   failures.size(), " of ", world_size,
                   world_size == 1 ? " rank: " : " ranks: ",
                   absl::StrJoin(parts, "; ")));
  error.SetPayload(kFailedRanksPayload, absl::Cord(absl::StrJoin(ranks, ",")));
  // The checkpoint is committed if any rank says so (only the coordinator
  // commits); otherwise unknown if any rank cannot tell.
  bool committed = false;
  bool unknown = false;
  for (const auto& [rank, status] : failures) {
    if (!status.GetPayload(kCommitOutcomePayload).has_value()) continue;
    const CommitOutcome outcome = GetCommitOutcome(status);
    committed |= outcome == CommitOutcome::kCommitted;
    unknown |= outcome == CommitOutcome::kUnknown;
  }
  if (committed) return WithCommitOutcome(error, CommitOutcome::kCommitted);
  if (unknown) return WithCommitOutcome(error, CommitOutcome::kUnknown);
  return error;
}

bool IsCollectiveFailure(const absl::Status& status) {
  return status.GetPayload(kCollectiveFailurePayload).has_value();
}

std::vector<int> FailedRanks(const absl::Status& status) {
  std::vector<int> ranks;
  auto payload = status.GetPayload(kFailedRanksPayload);
  if (!payload.has_value()) return ranks;
  for (absl::string_view piece :
       absl::StrSplit(std::string(*payload), ',', absl::SkipEmpty())) {
    int rank;
    if (absl::SimpleAtoi(piece, &rank)) ranks.push_back(rank);
  }
  return ranks;
}

absl::StatusOr<DistWrapper> DistWrapper::Create(
    ProcessGroup& pg, int coordinator_rank, absl::Duration collective_timeout,
    std::string round) {
  if (coordinator_rank < 0 || coordinator_rank >= pg.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("coordinator rank ", coordinator_rank,
                     " is not a rank of the process group (size ", pg.size(),
                     ")"));
  }
  return DistWrapper(pg, coordinator_rank, collective_timeout,
                     std::move(round));
}

absl::Status DistWrapper::CheckGathered(
    absl::string_view step, const std::vector<std::string>& gathered,
    std::vector<std::string>& payloads) const {
  const std::vector<Envelope> envelopes = DecodeAllOrFail(gathered);
  // A round mismatch is everyone's problem, and it explains any other
  // failure, so it is reported alone.
  DCP_RETURN_IF_ERROR(CheckRounds(step, envelopes));
  return CheckpointError(step, Unpack(envelopes, payloads), world_size());
}

absl::StatusOr<std::string> DistWrapper::ReduceScatter(absl::string_view step,
                                                       LocalFn local,
                                                       ScatterReduceFn reduce) {
  absl::StatusOr<std::string> mine = RunLocal(step, local);
  absl::StatusOr<std::vector<std::string>> gathered =
      pg_->Gather(Tag(step), coordinator_rank_, EncodeEnvelope(round_, mine),
                  Deadline());
  if (!gathered.ok()) return CollectiveFailure(gathered.status());
  std::vector<std::string> envelopes;
  if (is_coordinator()) {
    std::vector<std::string> payloads;
    const absl::Status failed = CheckGathered(step, *gathered, payloads);
    absl::StatusOr<std::vector<std::string>> results =
        failed.ok()
            ? RunLocal(step, [&] { return reduce(std::move(payloads)); })
            : absl::StatusOr<std::vector<std::string>>(failed);
    if (results.ok() && results->size() != static_cast<size_t>(world_size())) {
      results = absl::InternalError(
          absl::StrCat("checkpoint step \"", step, "\" produced ",
                       results->size(), " results for ", world_size(),
                       " ranks"));
    }
    if (!results.ok() && failed.ok()) {
      // The coordinator's own reduce failed: it is the failing rank.
      results = CheckpointError(step, {{rank(), results.status()}},
                                world_size());
    }
    envelopes.reserve(world_size());
    for (int r = 0; r < world_size(); ++r) {
      envelopes.push_back(results.ok()
                              ? EncodeEnvelope(round_, (*results)[r])
                              : EncodeEnvelope(round_, results.status()));
    }
  }
  absl::StatusOr<std::string> envelope = pg_->Scatter(
      Tag(step), coordinator_rank_, std::move(envelopes), Deadline());
  if (!envelope.ok()) return CollectiveFailure(envelope.status());
  return DecodeOrFail(*envelope).result;
}

absl::StatusOr<std::string> DistWrapper::AllReduce(absl::string_view step,
                                                   LocalFn local,
                                                   AllReduceFn reduce) {
  absl::StatusOr<std::string> mine = RunLocal(step, local);
  absl::StatusOr<std::vector<std::string>> gathered =
      pg_->Gather(Tag(step), coordinator_rank_, EncodeEnvelope(round_, mine),
                  Deadline());
  if (!gathered.ok()) return CollectiveFailure(gathered.status());
  std::string envelope;
  if (is_coordinator()) {
    std::vector<std::string> payloads;
    const absl::Status failed = CheckGathered(step, *gathered, payloads);
    absl::StatusOr<std::string> result =
        failed.ok()
            ? RunLocal(step, [&] { return reduce(std::move(payloads)); })
            : absl::StatusOr<std::string>(failed);
    if (!result.ok() && failed.ok()) {
      result = CheckpointError(step, {{rank(), result.status()}}, world_size());
    }
    envelope = EncodeEnvelope(round_, result);
  }
  absl::StatusOr<std::string> received = pg_->Broadcast(
      Tag(step), coordinator_rank_, std::move(envelope), Deadline());
  if (!received.ok()) return CollectiveFailure(received.status());
  return DecodeOrFail(*received).result;
}

absl::StatusOr<std::vector<std::string>> DistWrapper::AllGatherResults(
    absl::string_view step, LocalFn local) {
  absl::StatusOr<std::string> mine = RunLocal(step, local);
  absl::StatusOr<std::vector<std::string>> gathered = pg_->AllGather(
      Tag(step), EncodeEnvelope(round_, mine), Deadline());
  if (!gathered.ok()) return CollectiveFailure(gathered.status());
  // Every rank sees every envelope, so every rank reaches the same verdict.
  std::vector<std::string> payloads;
  DCP_RETURN_IF_ERROR(CheckGathered(step, *gathered, payloads));
  return payloads;
}

absl::Status DistWrapper::AllGather(absl::string_view step,
                                    absl::FunctionRef<absl::Status()> local) {
  return AllGatherResults(step, [&]() -> absl::StatusOr<std::string> {
           DCP_RETURN_IF_ERROR(local());
           return std::string();
         })
      .status();
}

}  // namespace dcp
