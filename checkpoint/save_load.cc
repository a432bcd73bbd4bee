#include "checkpoint/save_load.h"

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "checkpoint/dist_wrapper.h"
#include "core/byte_codec.h"
#include "core/fault_point.h"
#include "core/metadata_codec.h"
#include "core/status.h"
#include "distributed/single_process_group.h"
#include "glog/logging.h"
#include "planner/default_load_planner.h"
#include "planner/default_save_planner.h"
#include "planner/plan_codec.h"
#include "planner/plan_validation.h"

namespace dcp {
namespace {

// The group to run on: the caller's, or a world of one for no_dist.
ProcessGroup& GroupFor(ProcessGroup* requested, bool no_dist,
                       std::unique_ptr<ProcessGroup>& single) {
  if (requested != nullptr && !no_dist) return *requested;
  single = std::make_unique<SingleProcessGroup>();
  return *single;
}

template <typename Plan, typename Decode>
absl::StatusOr<std::vector<Plan>> DecodeAll(std::vector<std::string> encoded,
                                            Decode decode,
                                            absl::string_view what) {
  std::vector<Plan> plans;
  plans.reserve(encoded.size());
  for (size_t r = 0; r < encoded.size(); ++r) {
    absl::StatusOr<Plan> plan = decode(encoded[r]);
    if (!plan.ok()) {
      return Annotate(plan.status(), absl::StrCat(what, " of rank ", r));
    }
    plans.push_back(*std::move(plan));
  }
  return plans;
}

}  // namespace

namespace {

// Releases what the coordinator's writer holds for a save (StorageWriter::
// AbortSave) unless the save was committed.
class AbortSaveUnlessFinished {
 public:
  explicit AbortSaveUnlessFinished(StorageWriter& writer) : writer_(writer) {}
  ~AbortSaveUnlessFinished() {
    if (armed_) writer_.AbortSave();
  }
  AbortSaveUnlessFinished(const AbortSaveUnlessFinished&) = delete;
  AbortSaveUnlessFinished& operator=(const AbortSaveUnlessFinished&) = delete;

  void Arm() { armed_ = true; }
  void Disarm() { armed_ = false; }

 private:
  StorageWriter& writer_;
  bool armed_ = false;
};

// The round name of a save or load without one: its kind, so that a rank
// that saves while another loads is told so.
std::string RoundOr(const std::string& round, absl::string_view kind) {
  return round.empty() ? std::string(kind) : round;
}

// Save, where this rank may already have failed (`prior`, e.g. staging):
// it still takes part in every step of the round and reports `prior` in
// the first, so that every rank fails the round alike.
absl::StatusOr<Metadata> SaveWithPrior(const StateDict& state_dict,
                                       StorageWriter& writer,
                                       const SaveOptions& options,
                                       absl::Status prior) {
  std::unique_ptr<ProcessGroup> single;
  ProcessGroup& pg = GroupFor(options.process_group, options.no_dist, single);
  DCP_ASSIGN_OR_RETURN(
      DistWrapper dist,
      DistWrapper::Create(pg, options.coordinator_rank,
                          options.collective_timeout,
                          RoundOr(options.round, "save")));
  if (prior.ok() && options.checkpoint_id.has_value()) {
    prior = writer.Reset(options.checkpoint_id);
  }
  DefaultSavePlanner default_planner;
  SavePlanner& planner =
      options.planner != nullptr ? *options.planner : default_planner;
  // On the coordinator, from PrepareGlobalPlan until a successful Finish.
  AbortSaveUnlessFinished abort_save(writer);

  // Kept on the coordinator between the plan and write steps.
  Metadata global_metadata;

  DCP_ASSIGN_OR_RETURN(
      std::string central_plan,
      dist.ReduceScatter(
          "save.plan",
          [&]() -> absl::StatusOr<std::string> {
            DCP_RETURN_IF_ERROR(prior);
            DCP_RETURN_IF_ERROR(FaultPoint("save.plan"));
            std::optional<StorageMeta> storage_meta =
                writer.StorageMetaForSave();
            DCP_RETURN_IF_ERROR(planner.SetUp(
                state_dict, storage_meta ? &*storage_meta : nullptr,
                dist.is_coordinator()));
            DCP_RETURN_IF_ERROR(writer.SetUp(dist.is_coordinator()));
            DCP_ASSIGN_OR_RETURN(SavePlan plan, planner.CreateLocalPlan());
            DCP_ASSIGN_OR_RETURN(plan, writer.PrepareLocalPlan(std::move(plan)));
            return EncodeSavePlan(plan);
          },
          [&](std::vector<std::string> encoded)
              -> absl::StatusOr<std::vector<std::string>> {
            DCP_RETURN_IF_ERROR(FaultPoint("save.global_plan"));
            DCP_ASSIGN_OR_RETURN(
                std::vector<SavePlan> plans,
                DecodeAll<SavePlan>(std::move(encoded), DecodeSavePlan,
                                    "local save plan"));
            DCP_ASSIGN_OR_RETURN(GlobalSavePlan global,
                                 planner.CreateGlobalPlan(std::move(plans)));
            abort_save.Arm();
            DCP_ASSIGN_OR_RETURN(
                plans, writer.PrepareGlobalPlan(std::move(global.plans)));
            global_metadata = std::move(global.metadata);
            std::vector<std::string> out;
            out.reserve(plans.size());
            for (const SavePlan& plan : plans) out.push_back(EncodeSavePlan(plan));
            return out;
          }));

  // Set on the coordinator once Finish has committed the checkpoint.
  bool committed = false;
  absl::StatusOr<std::string> encoded_metadata = dist.AllReduce(
      "save.write",
      [&]() -> absl::StatusOr<std::string> {
        DCP_RETURN_IF_ERROR(FaultPoint("save.write"));
        DCP_ASSIGN_OR_RETURN(SavePlan plan, DecodeSavePlan(central_plan));
        DCP_ASSIGN_OR_RETURN(plan, planner.FinishPlan(std::move(plan)));
        DCP_ASSIGN_OR_RETURN(std::vector<WriteResult> results,
                             writer.WriteData(plan, planner));
        return EncodeWriteResults(results);
      },
      [&](std::vector<std::string> encoded) -> absl::StatusOr<std::string> {
        DCP_RETURN_IF_ERROR(FaultPoint("save.finish"));
        DCP_ASSIGN_OR_RETURN(
            std::vector<std::vector<WriteResult>> results,
            DecodeAll<std::vector<WriteResult>>(
                std::move(encoded), DecodeWriteResults, "write results"));
        DCP_RETURN_IF_ERROR(writer.Finish(global_metadata, results));
        committed = true;
        abort_save.Disarm();
        LOG(INFO) << "dcp save committed: ranks=" << dist.world_size()
                  << " keys=" << global_metadata.state_dict_metadata.size()
                  << " items=" << global_metadata.storage_data.size();
        return EncodeMetadata(global_metadata);
      });
  if (!encoded_metadata.ok()) {
    const absl::Status& status = encoded_metadata.status();
    if (committed) {
      // Only the announcement failed: the checkpoint is in place.
      return WithCommitOutcome(
          Annotate(status,
                   "the new checkpoint is committed, but telling the other "
                   "ranks failed"),
          CommitOutcome::kCommitted);
    }
    if (!dist.is_coordinator() && IsCollectiveFailure(status)) {
      // The coordinator may have committed before the exchange failed.
      return WithCommitOutcome(
          Annotate(status,
                   absl::StrCat("the outcome of the commit is unknown (the "
                                "coordinator, rank ",
                                dist.coordinator_rank(),
                                ", may have committed the new checkpoint)")),
          CommitOutcome::kUnknown);
    }
    return status;
  }
  absl::StatusOr<Metadata> metadata = DecodeMetadata(*encoded_metadata);
  if (!metadata.ok()) {
    return WithCommitOutcome(
        Annotate(metadata.status(),
                 "the new checkpoint is committed, but its metadata could not "
                 "be decoded here"),
        CommitOutcome::kCommitted);
  }
  return metadata;
}

}  // namespace

absl::StatusOr<Metadata> Save(const StateDict& state_dict,
                              StorageWriter& writer,
                              const SaveOptions& options) {
  return SaveWithPrior(state_dict, writer, options, absl::OkStatus());
}

namespace {

// The message the coordinator broadcasts for a load: the reader's load id,
// then the encoded metadata.
std::string EncodeMetadataMessage(
    const StorageReader::EncodedMetadata& metadata) {
  ByteWriter writer;
  writer.WriteBool(metadata.load_id.has_value());
  if (metadata.load_id.has_value()) writer.WriteString(*metadata.load_id);
  std::string message = std::move(writer).Finish();
  message.append(metadata.encoded);
  return message;
}

// The metadata of an EncodeMetadataMessage, as the reader's ReadMetadata
// would give it, and checked (ValidateCheckpointMetadata).
absl::StatusOr<Metadata> DecodeMetadataMessage(absl::string_view message) {
  ByteReader reader(message);
  DCP_ASSIGN_OR_RETURN(bool has_load_id, reader.ReadBool("load_id presence"));
  std::optional<std::string> load_id;
  if (has_load_id) {
    DCP_ASSIGN_OR_RETURN(absl::string_view id, reader.ReadString("load_id"));
    load_id = std::string(id);
  }
  DCP_ASSIGN_OR_RETURN(Metadata metadata,
                       DecodeMetadata(message.substr(reader.position())));
  if (load_id.has_value()) {
    if (!metadata.storage_meta.has_value()) metadata.storage_meta.emplace();
    metadata.storage_meta->load_id = *std::move(load_id);
  }
  DCP_RETURN_IF_ERROR(ValidateCheckpointMetadata(metadata));
  return metadata;
}

}  // namespace

absl::Status Load(StateDict& state_dict, StorageReader& reader,
                  const LoadOptions& options) {
  std::unique_ptr<ProcessGroup> single;
  ProcessGroup& pg = GroupFor(options.process_group, options.no_dist, single);
  DCP_ASSIGN_OR_RETURN(
      DistWrapper dist,
      DistWrapper::Create(pg, options.coordinator_rank,
                          options.collective_timeout,
                          RoundOr(options.round, "load")));
  absl::Status prior;
  if (options.checkpoint_id.has_value()) {
    prior = reader.Reset(options.checkpoint_id);
  }
  DefaultLoadPlanner default_planner;
  LoadPlanner& planner =
      options.planner != nullptr ? *options.planner : default_planner;

  // One checkpoint per load: the coordinator alone reads the metadata and
  // every rank plans from its copy, so a save that commits meanwhile
  // cannot give the ranks different checkpoints.
  DCP_ASSIGN_OR_RETURN(
      std::string encoded_metadata,
      dist.AllReduce(
          "load.metadata",
          [&]() -> absl::StatusOr<std::string> {
            DCP_RETURN_IF_ERROR(prior);
            return std::string();
          },
          [&](std::vector<std::string>) -> absl::StatusOr<std::string> {
            DCP_RETURN_IF_ERROR(FaultPoint("load.metadata"));
            DCP_ASSIGN_OR_RETURN(StorageReader::EncodedMetadata metadata,
                                 reader.ReadEncodedMetadata());
            return EncodeMetadataMessage(metadata);
          }));
  // Decoding and validating the same bytes gives every rank the same
  // result, before any rank plans or writes a destination; an error is
  // still reported through the next step, to keep the ranks in step.
  absl::StatusOr<Metadata> decoded = DecodeMetadataMessage(encoded_metadata);
  // Shared by the planner and the reader, which then need not copy it.
  std::shared_ptr<const Metadata> metadata;
  if (decoded.ok()) {
    metadata = std::make_shared<const Metadata>(*std::move(decoded));
  }

  DCP_ASSIGN_OR_RETURN(
      std::string central_plan,
      dist.ReduceScatter(
          "load.plan",
          [&]() -> absl::StatusOr<std::string> {
            DCP_RETURN_IF_ERROR(FaultPoint("load.plan"));
            DCP_RETURN_IF_ERROR(decoded.status());
            DCP_RETURN_IF_ERROR(planner.SetUpShared(&state_dict, metadata,
                                                    dist.is_coordinator()));
            DCP_RETURN_IF_ERROR(
                reader.SetUpShared(metadata, dist.is_coordinator()));
            DCP_ASSIGN_OR_RETURN(LoadPlan plan, planner.CreateLocalPlan());
            DCP_ASSIGN_OR_RETURN(plan, reader.PrepareLocalPlan(std::move(plan)));
            return EncodeLoadPlan(plan);
          },
          [&](std::vector<std::string> encoded)
              -> absl::StatusOr<std::vector<std::string>> {
            DCP_RETURN_IF_ERROR(FaultPoint("load.global_plan"));
            DCP_ASSIGN_OR_RETURN(
                std::vector<LoadPlan> plans,
                DecodeAll<LoadPlan>(std::move(encoded), DecodeLoadPlan,
                                    "local load plan"));
            DCP_ASSIGN_OR_RETURN(plans,
                                 planner.CreateGlobalPlan(std::move(plans)));
            DCP_ASSIGN_OR_RETURN(plans,
                                 reader.PrepareGlobalPlan(std::move(plans)));
            std::vector<std::string> out;
            out.reserve(plans.size());
            for (const LoadPlan& plan : plans) out.push_back(EncodeLoadPlan(plan));
            return out;
          }));

  return dist.AllGather("load.read", [&]() -> absl::Status {
    DCP_RETURN_IF_ERROR(FaultPoint("load.read"));
    DCP_ASSIGN_OR_RETURN(LoadPlan plan, DecodeLoadPlan(central_plan));
    DCP_ASSIGN_OR_RETURN(plan, planner.FinishPlan(std::move(plan)));
    return reader.ReadData(plan, planner);
  });
}

Future<Metadata> AsyncSave(const StateDict& state_dict,
                           std::shared_ptr<StorageWriter> writer,
                           AsyncSaveOptions options) {
  if (!options.executor) {
    return absl::InvalidArgumentError("AsyncSave needs an executor");
  }
  if (writer == nullptr) {
    return absl::InvalidArgumentError("AsyncSave needs a storage writer");
  }
  // A staging failure does not end the round here: the background save
  // still takes part and reports it, so that every rank fails alike.
  absl::StatusOr<StateDict> staged = StageStateDict(state_dict, options.staging);
  absl::Status prior;
  if (!staged.ok()) {
    prior = Annotate(staged.status(), "staging for async save");
    staged = StateDict();
  }

  PromiseFuturePair<Metadata> pair = PromiseFuturePair<Metadata>::Make();
  // Fault points fire on the rank that scheduled the save, in the background.
  FaultPointHandler* fault_handler = CurrentFaultPointHandler();
  Executor executor = std::move(options.executor);
  executor([promise = std::move(pair.promise),
            staged = std::make_shared<StateDict>(*std::move(staged)),
            prior = std::move(prior), writer = std::move(writer),
            options = std::move(options), fault_handler]() mutable {
    ScopedFaultPointHandler faults(fault_handler);
    SaveOptions save_options;
    save_options.process_group = options.process_group.get();
    save_options.no_dist = options.no_dist;
    save_options.coordinator_rank = options.coordinator_rank;
    save_options.planner = options.planner.get();
    save_options.checkpoint_id = options.checkpoint_id;
    save_options.collective_timeout = options.collective_timeout;
    save_options.round = options.round;
    promise.Set(SaveWithPrior(*staged, *writer, save_options, prior));
  });
  return std::move(pair.future);
}

}  // namespace dcp
