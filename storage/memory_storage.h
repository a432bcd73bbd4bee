// -----------------------------------------------------------------------------
// File: storage/memory_storage.h
// -----------------------------------------------------------------------------
//
// An in-memory storage: `MemoryStore` holds checkpoints by id, and
// `MemoryStorageWriter` / `MemoryStorageReader` implement the storage
// interfaces (storage/storage.h) over it. Several simulated ranks (threads)
// share one store through a `std::shared_ptr`, each with its own writer or
// reader. Used by tests and for in-memory checkpoints.
//
//   auto store = std::make_shared<MemoryStore>();
//   MemoryStorageWriter writer(store, "ckpt-1");   // one per rank
//   ... drive the save (checkpoint/ does it for you) ...
//   MemoryStorageReader reader(store, "ckpt-1");   // one per rank
//
// Layout. Like PyTorch's FileSystemWriter, the coordinator's
// `PrepareGlobalPlan` gives rank i's plan the prefix "__<i>_" (carried in
// `SavePlan::storage_data`, together with a token naming this save), and
// rank i writes all its items into one object "__<i>_0", in plan order.
// Each item is stored as
//   * tensor items: a contiguous CPU clone of the tensor the planner
//     resolved, owned by the store, so later changes to the caller's
//     tensors do not change the checkpoint;
//   * bytes items: a deep copy of the non-tensor `Value` (no serialisation).
// The `WriteResult` of an item has `storage_data = StorageInfo{relative_path
// = object name, offset = position of the item in that object, length =
// size}`, where size (also `size_in_bytes`) is the tensor's byte size
// (numel * element size) for tensors, and for bytes items an estimate of
// the value's size: the byte length of strings and bytes (and of dict
// keys), 8 per int or float, 1 per bool or None, summed over containers.
// The estimate is informational only; reading uses the object and offset.
//
// Visibility and commit. Objects written by ranks are staged per save, out
// of sight of readers. Only the coordinator's `Finish` commits the save: it
// atomically replaces the checkpoint's metadata and objects. So a save that
// fails or is never finished leaves the previous checkpoint with that id
// (if any) readable and unchanged, and a reader never sees a mix of two
// saves: `ReadMetadata` takes a snapshot that later reads use, even if a
// newer save commits meanwhile. A save is abandoned (its staged objects
// freed) when the coordinator's writer is reset, starts another save, or is
// destroyed before `Finish`.
//
// Thread safety: `MemoryStore` is thread-safe. Each writer and reader is
// driven by one thread (storage/storage.h); different ranks' writers and
// readers may run concurrently on one store.
//
// Ownership: writers and readers share ownership of the store. Stored
// tensors are never handed out for writing: readers copy out of them.
//
// Errors (besides those in storage/storage.h):
//   NotFound          `no checkpoint "ckpt-1" in memory store` when reading
//                     an id with no committed checkpoint
//   AlreadyExists     `overwrite = false` and the id already holds a
//                     checkpoint (PrepareLocalPlan, and again at commit)
//   InvalidArgument   a bytes item holding a tensor, a tensor item that
//                     resolved to something else or to the wrong shape, a
//                     destination whose shape differs from the read box
//   DataLoss          a read item naming a chunk or value that was not
//                     saved, or a box outside the saved chunk
//   FailedPrecondition phases called out of order (WriteData without a
//                     plan from PrepareGlobalPlan, Finish before it, a save
//                     that was abandoned, a commit missing a rank's data)
//
// Fault points (core/fault_point.h): "memory_storage.write_data" at
// the start of WriteData, "memory_storage.finish" at the start of Finish,
// "memory_storage.read_data" at the start of ReadData.
#ifndef DCP_STORAGE_MEMORY_STORAGE_H_
#define DCP_STORAGE_MEMORY_STORAGE_H_

#include <functional>
#include <map>
#include <memory>
#include <mutex>  // NOLINT(build/c++11)
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/metadata.h"
#include "core/state_dict.h"
#include "planner/load_plan.h"
#include "planner/planner.h"
#include "planner/save_plan.h"
#include "planner/write_result.h"
#include "storage/storage.h"

namespace dcp {
namespace memory_storage_internal {

// One saved item: a contiguous CPU tensor owned by the store, or a value
// containing no tensor.
struct StoredItem {
  MetadataIndex index;
  Value data;
};
using StoredObject = std::vector<StoredItem>;
// Object name -> object. Objects are immutable once stored.
using ObjectMap = std::map<std::string, std::shared_ptr<const StoredObject>>;

// A committed checkpoint; immutable, shared with the readers reading it.
struct Checkpoint {
  Metadata metadata;
  ObjectMap objects;
};

// A save between the coordinator's PrepareGlobalPlan and its Finish.
struct PendingSave {
  std::string checkpoint_id;
  ObjectMap objects;
};

}  // namespace memory_storage_internal

struct MemoryStorageOptions {
  // When false, saving to an id that already holds a committed checkpoint
  // fails with AlreadyExists.
  bool overwrite = true;
};

// Checkpoints kept in memory, by id. Share it between ranks with a
// `std::shared_ptr`. Thread-safe.
class MemoryStore {
 public:
  MemoryStore() = default;
  MemoryStore(const MemoryStore&) = delete;
  MemoryStore& operator=(const MemoryStore&) = delete;

  // Ids of the committed checkpoints, sorted.
  std::vector<std::string> ListCheckpoints() const;

  // Whether `checkpoint_id` holds a committed checkpoint.
  bool Contains(absl::string_view checkpoint_id) const;

  // Forgets a committed checkpoint. Readers that already read its metadata
  // keep reading it. NotFound if there is none.
  absl::Status Remove(absl::string_view checkpoint_id);

  // Saves begun by a coordinator but neither committed nor abandoned yet.
  int num_pending_saves() const;

 private:
  friend class MemoryStorageWriter;
  friend class MemoryStorageReader;

  // Starts staging a save to `checkpoint_id`; returns its token.
  std::string BeginSave(const std::string& checkpoint_id);

  // Stores `object` as `name` in the pending save `token`, replacing an
  // object of that name. FailedPrecondition if the save is not pending or
  // is for another checkpoint id.
  absl::Status StageObject(
      absl::string_view token, absl::string_view checkpoint_id,
      const std::string& name,
      std::shared_ptr<const memory_storage_internal::StoredObject> object);

  // Atomically replaces the checkpoint of the pending save `token` by
  // `metadata` and the staged objects, after checking that every entry of
  // `metadata.storage_data` points at a staged item. The save is no longer
  // pending afterwards, whatever the outcome.
  absl::Status Commit(absl::string_view token, Metadata metadata,
                      bool overwrite);

  // Drops a pending save; no-op if it is not pending.
  void AbandonSave(absl::string_view token);

  // The committed checkpoint `checkpoint_id`, or NotFound.
  absl::StatusOr<std::shared_ptr<const memory_storage_internal::Checkpoint>>
  Get(absl::string_view checkpoint_id) const;

  // std::mutex rather than absl::Mutex: TSan cannot see the happens-before
  // edges of Debian's uninstrumented absl::Mutex.
  mutable std::mutex mu_;
  std::map<std::string,
           std::shared_ptr<const memory_storage_internal::Checkpoint>,
           std::less<>>
      committed_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, memory_storage_internal::PendingSave, std::less<>>
      pending_ ABSL_GUARDED_BY(mu_);
};

// Writes one rank's part of a save into a `MemoryStore`. See the file
// comment for the layout and commit semantics. Methods not commented here
// follow StorageWriter's contract. AbortSave is the default no-op: a failed
// save's staged objects are freed when this (coordinator) writer is reset,
// begins another save, or is destroyed.
class MemoryStorageWriter : public StorageWriter {
 public:
  // `store` must not be null (CHECK-fails).
  MemoryStorageWriter(std::shared_ptr<MemoryStore> store,
                      std::string checkpoint_id,
                      MemoryStorageOptions options = {});
  // Abandons a save this (coordinator) writer began but did not finish.
  ~MemoryStorageWriter() override;
  MemoryStorageWriter(const MemoryStorageWriter&) = delete;
  MemoryStorageWriter& operator=(const MemoryStorageWriter&) = delete;

  const std::string& checkpoint_id() const { return checkpoint_id_; }
  const std::string& save_id() const { return save_id_; }

  // Switches to `checkpoint_id` if given and non-empty; always regenerates
  // the save id and abandons an unfinished save begun by this writer.
  absl::Status Reset(std::optional<std::string> checkpoint_id) override;
  // {checkpoint_id, save_id}.
  std::optional<StorageMeta> StorageMetaForSave() const override;
  // Records `is_coordinator`; never fails.
  absl::Status SetUp(bool is_coordinator) override;
  // AlreadyExists if `overwrite` is off and the checkpoint exists.
  absl::StatusOr<SavePlan> PrepareLocalPlan(SavePlan plan) override;
  // Begins the save in the store and assigns plan i the prefix "__<i>_".
  absl::StatusOr<std::vector<SavePlan>> PrepareGlobalPlan(
      std::vector<SavePlan> plans) override;
  // Stages this rank's object; returns results in plan order. Stages
  // nothing if any item fails. FailedPrecondition if `plan` does not come
  // from a pending save of the coordinator's PrepareGlobalPlan (or is for
  // another checkpoint id); InvalidArgument as in the file comment; the
  // planner's ResolveData errors.
  absl::StatusOr<std::vector<WriteResult>> WriteData(
      const SavePlan& plan, SavePlanner& planner) override;
  // Sets `metadata.storage_data` from `results` (rank by rank, in order; a
  // later duplicate index wins) and `metadata.storage_meta`, then commits.
  // FailedPrecondition without a pending save or when a result points at
  // an item no rank staged; AlreadyExists as in the file comment. The save
  // is over afterwards, whatever the outcome.
  absl::Status Finish(
      Metadata& metadata,
      const std::vector<std::vector<WriteResult>>& results) override;

 private:
  void AbandonPendingSave();

  std::shared_ptr<MemoryStore> store_;
  std::string checkpoint_id_;
  MemoryStorageOptions options_;
  std::string save_id_;
  bool is_coordinator_ = false;
  // The save begun by PrepareGlobalPlan (coordinator only), until Finish.
  std::string pending_token_;
};

// Reads one rank's part of a load from a `MemoryStore`. Methods not
// commented here follow StorageReader's contract.
class MemoryStorageReader : public StorageReader {
 public:
  // `store` must not be null (CHECK-fails).
  MemoryStorageReader(std::shared_ptr<MemoryStore> store,
                      std::string checkpoint_id);
  MemoryStorageReader(const MemoryStorageReader&) = delete;
  MemoryStorageReader& operator=(const MemoryStorageReader&) = delete;

  const std::string& checkpoint_id() const { return checkpoint_id_; }
  const std::string& load_id() const { return load_id_; }

  // Switches to `checkpoint_id` if given and non-empty; always regenerates
  // the load id and forgets the snapshot of the previous load.
  absl::Status Reset(std::optional<std::string> checkpoint_id) override;
  // The committed metadata, with `storage_meta.load_id` set; snapshots the
  // checkpoint for the reads that follow. NotFound if none is committed.
  absl::StatusOr<Metadata> ReadMetadata() override;
  // Snapshots the checkpoint if ReadMetadata was not called (NotFound if
  // none is committed). Fails with FailedPrecondition if `metadata` belongs
  // to another save than the snapshot (the checkpoint was replaced in
  // between).
  absl::Status SetUp(const Metadata& metadata, bool is_coordinator) override;
  // Return their input unchanged.
  absl::StatusOr<LoadPlan> PrepareLocalPlan(LoadPlan plan) override;
  absl::StatusOr<std::vector<LoadPlan>> PrepareGlobalPlan(
      std::vector<LoadPlan> plans) override;
  // Reads items in plan order; stops at the first error (earlier items
  // stay loaded). FailedPrecondition before SetUp; DataLoss and
  // InvalidArgument as in the file comment; the planner's errors.
  absl::Status ReadData(const LoadPlan& plan, LoadPlanner& planner) override;

 private:
  absl::Status ReadOne(const ReadItem& item, LoadPlanner& planner) const;

  std::shared_ptr<MemoryStore> store_;
  std::string checkpoint_id_;
  std::string load_id_;
  std::shared_ptr<const memory_storage_internal::Checkpoint> snapshot_;
  // ReadMetadata took `snapshot_` for the load in progress; otherwise SetUp
  // takes a fresh one (a rank that is not the coordinator never reads the
  // metadata, and must not load from a previous load's snapshot).
  bool snapshot_is_current_ = false;
  // From SetUp's metadata, as PyTorch's readers do.
  std::optional<std::map<MetadataIndex, StorageInfo>> storage_data_;
};

}  // namespace dcp

#endif  // DCP_STORAGE_MEMORY_STORAGE_H_
