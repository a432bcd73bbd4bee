// -----------------------------------------------------------------------------
// File: storage/storage.h
// -----------------------------------------------------------------------------
//
// `StorageWriter` and `StorageReader`: where checkpoint bytes go and come
// from, with PyTorch's call sequence (docs/design.md §2.3, §2.4). The
// storage layer owns the byte format of items: tensor data and non-tensor
// values (which planners hand over as `Value`s).
//
// Writer call sequence, per rank (starred steps on the coordinator only):
//   Reset(checkpoint_id)            optional; only when an id is given
//   StorageMetaForSave()
//   SetUp(is_coordinator)
//   PrepareLocalPlan(plan)
//   * PrepareGlobalPlan(all plans)
//   WriteData(plan, planner)        writes this rank's items
//   * Finish(metadata, all results) commits the checkpoint
//   * AbortSave()                   instead of a successful Finish: the
//                                   save failed after PrepareGlobalPlan
//
// Reader call sequence, per rank (starred steps on the coordinator only):
//   Reset(checkpoint_id)            optional
//   * ReadEncodedMetadata()         the coordinator reads the metadata
//                                   (ReadMetadata, encoded) and every rank
//                                   gets its copy, so all ranks load the
//                                   same checkpoint
//   SetUp(metadata, is_coordinator) on every rank, with that copy
//                                   (SetUpShared: a share of it)
//   PrepareLocalPlan(plan)
//   * PrepareGlobalPlan(all plans)
//   ReadData(plan, planner)
//
// Thread safety: one thread drives the sequence; implementations may use
// threads inside WriteData and ReadData (and may then call the planner's
// ResolveData, ResolveTensor, CommitTensor and LoadBytes concurrently).
//
// Ownership: the planner passed to WriteData and ReadData is borrowed for
// the call. Any error a method returns fails the save or load on every
// rank (checkpoint/save_load.h).
//
// Errors: NotFound for a missing checkpoint or item, DataLoss for corrupt
// or truncated data, AlreadyExists when overwriting is refused; messages
// name the checkpoint, the file and the key.
#ifndef DCP_STORAGE_STORAGE_H_
#define DCP_STORAGE_STORAGE_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/metadata.h"
#include "core/metadata_codec.h"
#include "planner/load_plan.h"
#include "planner/planner.h"
#include "planner/save_plan.h"
#include "planner/write_result.h"

namespace dcp {

class StorageWriter {
 public:
  virtual ~StorageWriter() = default;

  // Starts a new save, optionally at a new location. Regenerates save_id.
  // Without an id, the writer keeps its location.
  virtual absl::Status Reset(std::optional<std::string> checkpoint_id) = 0;

  // Identity of this save (checkpoint id, save id), recorded in Metadata.
  // Given to the save planner's SetUp; may be nullopt.
  virtual std::optional<StorageMeta> StorageMetaForSave() const = 0;

  // Prepares this rank's part of a save, on every rank.
  virtual absl::Status SetUp(bool is_coordinator) = 0;

  // This rank's plan from the planner's CreateLocalPlan; returns it, maybe
  // with `storage_data` set, for the coordinator. The place to refuse a
  // save early (e.g. AlreadyExists when overwriting is refused).
  virtual absl::StatusOr<SavePlan> PrepareLocalPlan(SavePlan plan) = 0;

  // Coordinator only; `plans` by rank, returned by rank. Typically gives
  // each rank's plan its file names in `storage_data`. From this call on,
  // the save ends with a successful Finish or with AbortSave (also when
  // this call fails).
  virtual absl::StatusOr<std::vector<SavePlan>> PrepareGlobalPlan(
      std::vector<SavePlan> plans) = 0;

  // Writes every item of `plan`, resolving data through `planner`, and
  // returns where each landed. Synchronous; may use threads inside.
  virtual absl::StatusOr<std::vector<WriteResult>> WriteData(
      const SavePlan& plan, SavePlanner& planner) = 0;

  // Coordinator only: records `results` (by rank) in
  // `metadata.storage_data`, sets `metadata.storage_meta`, and commits.
  // After it returns OK the checkpoint is complete and visible.
  // A Finish error says whether the checkpoint was committed anyway
  // (`WithCommitOutcome`, core/status.h); without a mark the
  // previous checkpoint is untouched.
  virtual absl::Status Finish(
      Metadata& metadata,
      const std::vector<std::vector<WriteResult>>& results) = 0;

  // Coordinator only: the save begun by PrepareGlobalPlan failed (on any
  // rank, or in Finish). Releases what the save holds, such as a lock on
  // the checkpoint location. Called at most once per save; a no-op when no
  // save is in progress.
  virtual void AbortSave() {}
};

class StorageReader {
 public:
  virtual ~StorageReader() = default;

  // Starts a new load, optionally from a new location. Regenerates load_id.
  // Without an id, the reader keeps its location.
  virtual absl::Status Reset(std::optional<std::string> checkpoint_id) = 0;

  // The checkpoint's Metadata, with `storage_meta.load_id` set to this
  // reader's load id. NotFound if there is no (complete) checkpoint;
  // otherwise as the implementation documents (e.g. DataLoss when corrupt).
  virtual absl::StatusOr<Metadata> ReadMetadata() = 0;

  // What ReadEncodedMetadata returns.
  struct EncodedMetadata {
    // EncodeMetadata (core/metadata_codec.h) of the metadata.
    std::string encoded;
    // If set, what ReadMetadata puts in `storage_meta.load_id`, which
    // `encoded` need not hold.
    std::optional<std::string> load_id;
  };

  // Coordinator only, instead of ReadMetadata when the metadata goes to the
  // other ranks (Load calls this one): its binary encoding, which every rank
  // decodes. The default encodes ReadMetadata(); a reader that has the
  // metadata encoded already (FileSystemReader's .dcp.metadata) returns it
  // without decoding it. Errors: as ReadMetadata.
  virtual absl::StatusOr<EncodedMetadata> ReadEncodedMetadata() {
    absl::StatusOr<Metadata> metadata = ReadMetadata();
    if (!metadata.ok()) return metadata.status();
    return EncodedMetadata{EncodeMetadata(*metadata), std::nullopt};
  }

  // Prepares this rank's part of a load of the checkpoint `metadata`
  // describes (the coordinator's copy), on every rank. `metadata` need only
  // live through the call. May refuse a checkpoint that changed since the
  // metadata was read (FailedPrecondition).
  virtual absl::Status SetUp(const Metadata& metadata,
                             bool is_coordinator) = 0;

  // As SetUp, with a Metadata the reader may keep a share of instead of
  // copying what it needs (Load calls this one). The default calls
  // SetUp(*metadata, is_coordinator). InvalidArgument if `metadata` is
  // null.
  virtual absl::Status SetUpShared(std::shared_ptr<const Metadata> metadata,
                                   bool is_coordinator) {
    if (metadata == nullptr) {
      return absl::InvalidArgumentError("StorageReader::SetUpShared: null");
    }
    return SetUp(*metadata, is_coordinator);
  }

  // This rank's plan from the planner's CreateLocalPlan; returns it, maybe
  // with `storage_data` set, for the coordinator.
  virtual absl::StatusOr<LoadPlan> PrepareLocalPlan(LoadPlan plan) = 0;

  // Coordinator only; `plans` by rank, returned by rank.
  virtual absl::StatusOr<std::vector<LoadPlan>> PrepareGlobalPlan(
      std::vector<LoadPlan> plans) = 0;

  // Reads every item of `plan` into the destinations `planner` resolves
  // (LoadBytes for bytes items; ResolveTensor, copy, CommitTensor for
  // tensor items). Synchronous; may use threads inside. DataLoss for an
  // item the checkpoint lacks or that is corrupt; the planner's errors.
  virtual absl::Status ReadData(const LoadPlan& plan, LoadPlanner& planner) = 0;
};

}  // namespace dcp

#endif  // DCP_STORAGE_STORAGE_H_
