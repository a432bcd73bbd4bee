#include "checkpoint/dist_wrapper.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "checkpoint/byte_codec.h"
#include "checkpoint/status.h"
#include "checkpoint/torch_status.h"

namespace dcp {
namespace {

// A rank's contribution to a step: a status, and a payload when OK.
//   u8 ok (1) + string payload   |   u8 ok (0) + varint code + string message
// Payloads of the combined error are not carried across ranks; the failing
// ranks are rebuilt by the receiver.
std::string EncodeEnvelope(const absl::StatusOr<std::string>& result) {
  ByteWriter writer;
  if (result.ok()) {
    writer.WriteBool(true);
    writer.WriteString(*result);
  } else {
    writer.WriteBool(false);
    writer.WriteVarint(static_cast<uint64_t>(result.status().code()));
    writer.WriteString(result.status().message());
    std::string ranks;
    if (auto payload = result.status().GetPayload(kFailedRanksPayload)) {
      ranks = std::string(*payload);
    }
    writer.WriteString(ranks);
  }
  return std::move(writer).Finish();
}

absl::StatusOr<std::string> DecodeEnvelope(absl::string_view bytes) {
  ByteReader reader(bytes);
  DCP_ASSIGN_OR_RETURN(bool ok, reader.ReadBool("step result flag"));
  if (ok) {
    DCP_ASSIGN_OR_RETURN(absl::string_view payload,
                         reader.ReadString("step result payload"));
    DCP_RETURN_IF_ERROR(reader.ExpectEnd());
    return std::string(payload);
  }
  DCP_ASSIGN_OR_RETURN(uint64_t code, reader.ReadVarint("status code"));
  DCP_ASSIGN_OR_RETURN(absl::string_view message,
                       reader.ReadString("status message"));
  DCP_ASSIGN_OR_RETURN(absl::string_view ranks,
                       reader.ReadString("failed ranks"));
  DCP_RETURN_IF_ERROR(reader.ExpectEnd());
  if (code == 0 || code > static_cast<uint64_t>(absl::StatusCode::kUnauthenticated)) {
    return reader.Malformed("status code", absl::StrCat("invalid code ", code));
  }
  absl::Status status(static_cast<absl::StatusCode>(code), message);
  if (!ranks.empty()) status.SetPayload(kFailedRanksPayload, absl::Cord(ranks));
  return status;
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

// Decodes every rank's envelope; collects failures (sorted by rank).
std::vector<std::pair<int, absl::Status>> Unpack(
    std::vector<std::string>& envelopes, std::vector<std::string>& payloads) {
  std::vector<std::pair<int, absl::Status>> failures;
  payloads.assign(envelopes.size(), std::string());
  for (size_t r = 0; r < envelopes.size(); ++r) {
    absl::StatusOr<std::string> result = DecodeEnvelope(envelopes[r]);
    if (result.ok()) {
      payloads[r] = *std::move(result);
    } else {
      failures.emplace_back(static_cast<int>(r), result.status());
    }
  }
  return failures;
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
  return error;
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
    ProcessGroup& pg, int coordinator_rank, absl::Duration collective_timeout) {
  if (coordinator_rank < 0 || coordinator_rank >= pg.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("coordinator rank ", coordinator_rank,
                     " is not a rank of the process group (size ", pg.size(),
                     ")"));
  }
  return DistWrapper(pg, coordinator_rank, collective_timeout);
}

absl::StatusOr<std::string> DistWrapper::ReduceScatter(absl::string_view step,
                                                       LocalFn local,
                                                       ScatterReduceFn reduce) {
  absl::StatusOr<std::string> mine = RunLocal(step, local);
  DCP_ASSIGN_OR_RETURN(
      std::vector<std::string> gathered,
      pg_->Gather(Tag(step), coordinator_rank_, EncodeEnvelope(mine),
                  Deadline()));
  std::vector<std::string> envelopes;
  if (is_coordinator()) {
    std::vector<std::string> payloads;
    auto failures = Unpack(gathered, payloads);
    absl::StatusOr<std::vector<std::string>> results =
        failures.empty()
            ? RunLocal(step, [&] { return reduce(std::move(payloads)); })
            : absl::StatusOr<std::vector<std::string>>(
                  CheckpointError(step, failures, world_size()));
    if (results.ok() && results->size() != static_cast<size_t>(world_size())) {
      results = absl::InternalError(
          absl::StrCat("checkpoint step \"", step, "\" produced ",
                       results->size(), " results for ", world_size(),
                       " ranks"));
    }
    if (!results.ok() && failures.empty()) {
      // The coordinator's own reduce failed: it is the failing rank.
      results = CheckpointError(step, {{rank(), results.status()}},
                                world_size());
    }
    envelopes.reserve(world_size());
    for (int r = 0; r < world_size(); ++r) {
      envelopes.push_back(results.ok() ? EncodeEnvelope((*results)[r])
                                       : EncodeEnvelope(results.status()));
    }
  }
  DCP_ASSIGN_OR_RETURN(std::string envelope,
                       pg_->Scatter(Tag(step), coordinator_rank_,
                                    std::move(envelopes), Deadline()));
  return DecodeEnvelope(envelope);
}

absl::StatusOr<std::string> DistWrapper::AllReduce(absl::string_view step,
                                                   LocalFn local,
                                                   AllReduceFn reduce) {
  absl::StatusOr<std::string> mine = RunLocal(step, local);
  DCP_ASSIGN_OR_RETURN(
      std::vector<std::string> gathered,
      pg_->Gather(Tag(step), coordinator_rank_, EncodeEnvelope(mine),
                  Deadline()));
  std::string envelope;
  if (is_coordinator()) {
    std::vector<std::string> payloads;
    auto failures = Unpack(gathered, payloads);
    absl::StatusOr<std::string> result =
        failures.empty()
            ? RunLocal(step, [&] { return reduce(std::move(payloads)); })
            : absl::StatusOr<std::string>(
                  CheckpointError(step, failures, world_size()));
    if (!result.ok() && failures.empty()) {
      result = CheckpointError(step, {{rank(), result.status()}}, world_size());
    }
    envelope = EncodeEnvelope(result);
  }
  DCP_ASSIGN_OR_RETURN(std::string received,
                       pg_->Broadcast(Tag(step), coordinator_rank_,
                                      std::move(envelope), Deadline()));
  return DecodeEnvelope(received);
}

absl::Status DistWrapper::AllGather(absl::string_view step,
                                    absl::FunctionRef<absl::Status()> local) {
  absl::Status mine = RunLocal(step, local);
  absl::StatusOr<std::string> as_result =
      mine.ok() ? absl::StatusOr<std::string>(std::string()) : mine;
  DCP_ASSIGN_OR_RETURN(
      std::vector<std::string> gathered,
      pg_->AllGather(Tag(step), EncodeEnvelope(as_result), Deadline()));
  std::vector<std::string> payloads;
  auto failures = Unpack(gathered, payloads);
  return CheckpointError(step, failures, world_size());
}

}  // namespace dcp
