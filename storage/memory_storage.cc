#include "storage/memory_storage.h"

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>  // NOLINT(build/c++11)
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ATen/ATen.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "core/fault_point.h"
#include "core/metadata.h"
#include "core/state_dict.h"
#include "core/status.h"
#include "core/tensor_copy.h"
#include "core/torch_status.h"
#include "glog/logging.h"
#include "storage/plan_storage_data.h"

namespace dcp {

using storage_internal::DescribeIndex;
namespace memory_storage_internal {
namespace {

// "Tag:token:prefix", the encoding of SavePlan::storage_data.
constexpr absl::string_view kPlanTag = "dcp-memory-save";

// The size estimate documented in the header. Precondition: no tensors.
int64_t EstimatedSize(const Value& value) {
  if (const std::string* s = value.get_if<std::string>()) {
    return static_cast<int64_t>(s->size());
  }
  if (const Bytes* b = value.get_if<Bytes>()) {
    return static_cast<int64_t>(b->data.size());
  }
  if (value.is<int64_t>() || value.is<double>()) return 8;
  const List* items = value.get_if<List>();
  if (const Tuple* tuple = value.get_if<Tuple>()) items = &tuple->items;
  if (items != nullptr) {
    int64_t total = 0;
    for (const Value& item : *items) total += EstimatedSize(item);
    return total;
  }
  if (const StateDict* dict = value.get_if<StateDict>()) {
    int64_t total = 0;
    for (const StateDict::Entry& entry : dict->entries()) {
      total += static_cast<int64_t>(entry.first.size()) +
               EstimatedSize(entry.second);
    }
    return total;
  }
  return 1;  // None, bool.
}

// Resolves and copies one write item; sets `*length`.
absl::StatusOr<Value> CopyItem(const WriteItem& item, SavePlanner& planner,
                               int64_t* length) {
  DCP_ASSIGN_OR_RETURN(Value data, planner.ResolveData(item));
  if (item.type == WriteItemType::kByteIo) {
    if (ContainsTensor(data)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "bytes item %s holds a tensor; tensors must be saved as tensor "
          "items",
          DescribeIndex(item.index)));
    }
    // `data` is already a deep copy: Value copies containers and strings.
    *length = EstimatedSize(data);
    return data;
  }
  const at::Tensor* tensor = data.get_if<at::Tensor>();
  if (tensor == nullptr) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "tensor item %s resolved to a %s, not a tensor",
        DescribeIndex(item.index), data.TypeName()));
  }
  if (!tensor->defined()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "tensor item %s resolved to an undefined tensor",
        DescribeIndex(item.index)));
  }
  if (item.tensor_data.has_value() &&
      tensor->sizes() != c10::IntArrayRef(item.tensor_data->chunk.sizes)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "tensor item %s resolved to a tensor of shape %s; the plan says %s",
        DescribeIndex(item.index), FormatShape(tensor->sizes()),
        FormatShape(item.tensor_data->chunk.sizes)));
  }
  // A copy ThreadSanitizer sees (core/tensor_copy.h).
  absl::StatusOr<at::Tensor> copied = CloneToCpu(*tensor);
  if (!copied.ok()) {
    return Annotate(copied.status(), absl::StrCat("copying tensor item ",
                                                  DescribeIndex(item.index)));
  }
  at::Tensor copy = *std::move(copied);
  *length = static_cast<int64_t>(copy.nbytes());
  return Value(std::move(copy));
}

}  // namespace
}  // namespace memory_storage_internal

using memory_storage_internal::Checkpoint;
using memory_storage_internal::PendingSave;
using memory_storage_internal::StoredItem;
using memory_storage_internal::StoredObject;

// ---- MemoryStore ------------------------------------------------------------

std::vector<std::string> MemoryStore::ListCheckpoints() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> ids;
  ids.reserve(committed_.size());
  for (const auto& entry : committed_) ids.push_back(entry.first);
  return ids;
}

bool MemoryStore::Contains(absl::string_view checkpoint_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  return committed_.find(checkpoint_id) != committed_.end();
}

absl::Status MemoryStore::Remove(absl::string_view checkpoint_id) {
  std::shared_ptr<const Checkpoint> removed;  // Freed outside the lock.
  std::lock_guard<std::mutex> lock(mu_);
  auto it = committed_.find(checkpoint_id);
  if (it == committed_.end()) {
    return absl::NotFoundError(absl::StrFormat(
        "no checkpoint \"%s\" in memory store", checkpoint_id));
  }
  removed = std::move(it->second);
  committed_.erase(it);
  return absl::OkStatus();
}

int MemoryStore::num_pending_saves() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(pending_.size());
}

std::string MemoryStore::BeginSave(const std::string& checkpoint_id) {
  std::string token = storage_internal::RandomUuid();
  std::lock_guard<std::mutex> lock(mu_);
  pending_[token] = PendingSave{checkpoint_id, {}};
  return token;
}

absl::Status MemoryStore::StageObject(
    absl::string_view token, absl::string_view checkpoint_id,
    const std::string& name, std::shared_ptr<const StoredObject> object) {
  std::shared_ptr<const StoredObject> replaced;  // Freed outside the lock.
  std::lock_guard<std::mutex> lock(mu_);
  auto it = pending_.find(token);
  if (it == pending_.end()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "writing object \"%s\" of checkpoint \"%s\": the save was abandoned "
        "or already finished by the coordinator",
        name, checkpoint_id));
  }
  if (it->second.checkpoint_id != checkpoint_id) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "writing object \"%s\": this rank saves checkpoint \"%s\" but the "
        "coordinator's save is for \"%s\"",
        name, checkpoint_id, it->second.checkpoint_id));
  }
  // A second WriteData of the same rank (a retry) replaces its object.
  replaced = std::exchange(it->second.objects[name], std::move(object));
  return absl::OkStatus();
}

absl::Status MemoryStore::Commit(absl::string_view token, Metadata metadata,
                                 bool overwrite) {
  // Declared before the lock so that they are freed outside it.
  std::shared_ptr<const Checkpoint> replaced;
  PendingSave save;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = pending_.find(token);
  if (it == pending_.end()) {
    return absl::FailedPreconditionError(
        "commit of a save that was abandoned or already finished");
  }
  save = std::move(it->second);
  pending_.erase(it);

  for (const auto& [index, info] : metadata.storage_data) {
    auto object = save.objects.find(info.relative_path);
    if (object == save.objects.end()) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "cannot commit checkpoint \"%s\": item %s is in object \"%s\", "
          "which no rank wrote in this save",
          save.checkpoint_id, DescribeIndex(index), info.relative_path));
    }
    const StoredObject& items = *object->second;
    if (info.offset < 0 || info.offset >= static_cast<int64_t>(items.size()) ||
        items[info.offset].index != index) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "cannot commit checkpoint \"%s\": item %s is not at position %d "
          "of object \"%s\"",
          save.checkpoint_id, DescribeIndex(index), info.offset,
          info.relative_path));
    }
  }

  auto existing = committed_.find(save.checkpoint_id);
  if (existing != committed_.end() && !overwrite) {
    return absl::AlreadyExistsError(absl::StrFormat(
        "checkpoint \"%s\" already exists in memory store and overwrite is "
        "off",
        save.checkpoint_id));
  }
  auto checkpoint = std::make_shared<Checkpoint>();
  checkpoint->metadata = std::move(metadata);
  checkpoint->objects = std::move(save.objects);
  if (existing != committed_.end()) {
    replaced = std::move(existing->second);
    existing->second = std::move(checkpoint);
  } else {
    committed_.emplace(save.checkpoint_id, std::move(checkpoint));
  }
  return absl::OkStatus();
}

void MemoryStore::AbandonSave(absl::string_view token) {
  std::optional<PendingSave> abandoned;  // Freed outside the lock.
  std::lock_guard<std::mutex> lock(mu_);
  auto it = pending_.find(token);
  if (it == pending_.end()) return;
  abandoned = std::move(it->second);
  pending_.erase(it);
}

absl::StatusOr<std::shared_ptr<const Checkpoint>> MemoryStore::Get(
    absl::string_view checkpoint_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = committed_.find(checkpoint_id);
  if (it == committed_.end()) {
    return absl::NotFoundError(absl::StrFormat(
        "no checkpoint \"%s\" in memory store", checkpoint_id));
  }
  return it->second;
}

// ---- MemoryStorageWriter ----------------------------------------------------

MemoryStorageWriter::MemoryStorageWriter(std::shared_ptr<MemoryStore> store,
                                         std::string checkpoint_id,
                                         MemoryStorageOptions options)
    : store_(std::move(store)),
      checkpoint_id_(std::move(checkpoint_id)),
      options_(options),
      save_id_(storage_internal::RandomUuid()) {
  CHECK(store_ != nullptr) << "MemoryStorageWriter needs a MemoryStore";
}

MemoryStorageWriter::~MemoryStorageWriter() { AbandonPendingSave(); }

void MemoryStorageWriter::AbandonPendingSave() {
  if (pending_token_.empty()) return;
  store_->AbandonSave(pending_token_);
  pending_token_.clear();
}

absl::Status MemoryStorageWriter::Reset(
    std::optional<std::string> checkpoint_id) {
  AbandonPendingSave();
  if (checkpoint_id.has_value() && !checkpoint_id->empty()) {
    checkpoint_id_ = *std::move(checkpoint_id);
  }
  save_id_ = storage_internal::RandomUuid();
  return absl::OkStatus();
}

std::optional<StorageMeta> MemoryStorageWriter::StorageMetaForSave() const {
  StorageMeta meta;
  meta.checkpoint_id = checkpoint_id_;
  meta.save_id = save_id_;
  return meta;
}

absl::Status MemoryStorageWriter::SetUp(bool is_coordinator) {
  is_coordinator_ = is_coordinator;
  return absl::OkStatus();
}

absl::StatusOr<SavePlan> MemoryStorageWriter::PrepareLocalPlan(SavePlan plan) {
  if (!options_.overwrite && store_->Contains(checkpoint_id_)) {
    return absl::AlreadyExistsError(absl::StrFormat(
        "checkpoint \"%s\" already exists in memory store and overwrite is "
        "off",
        checkpoint_id_));
  }
  return plan;
}

absl::StatusOr<std::vector<SavePlan>> MemoryStorageWriter::PrepareGlobalPlan(
    std::vector<SavePlan> plans) {
  AbandonPendingSave();  // A save begun earlier and never finished.
  pending_token_ = store_->BeginSave(checkpoint_id_);
  for (size_t rank = 0; rank < plans.size(); ++rank) {
    plans[rank].storage_data = storage_internal::EncodePlanStorageData(
        memory_storage_internal::kPlanTag, pending_token_,
        static_cast<int>(rank));
  }
  return plans;
}

absl::StatusOr<std::vector<WriteResult>> MemoryStorageWriter::WriteData(
    const SavePlan& plan, SavePlanner& planner) {
  DCP_RETURN_IF_ERROR(FaultPoint("memory_storage.write_data"));
  DCP_ASSIGN_OR_RETURN(storage_internal::PlanStorageData storage_data,
                       storage_internal::DecodePlanStorageData(
                           memory_storage_internal::kPlanTag, plan.storage_data,
                           "MemoryStorageWriter"));
  const std::string object_name = absl::StrCat(storage_data.prefix, "0");

  auto object = std::make_shared<StoredObject>();
  object->reserve(plan.items.size());
  std::vector<WriteResult> results;
  results.reserve(plan.items.size());
  for (const WriteItem& item : plan.items) {
    int64_t length = 0;
    DCP_ASSIGN_OR_RETURN(
        Value data, memory_storage_internal::CopyItem(item, planner, &length));
    const int64_t offset = static_cast<int64_t>(object->size());
    object->push_back(StoredItem{item.index, std::move(data)});
    WriteResult result;
    result.index = item.index;
    result.size_in_bytes = length;
    result.storage_data = StorageInfo{object_name, offset, length};
    results.push_back(std::move(result));
  }
  DCP_RETURN_IF_ERROR(store_->StageObject(storage_data.token, checkpoint_id_,
                                          object_name, std::move(object)));
  return results;
}

absl::Status MemoryStorageWriter::Finish(
    Metadata& metadata,
    const std::vector<std::vector<WriteResult>>& results) {
  DCP_RETURN_IF_ERROR(FaultPoint("memory_storage.finish"));
  if (pending_token_.empty()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "Finish of checkpoint \"%s\" without a save begun by "
        "PrepareGlobalPlan on this writer",
        checkpoint_id_));
  }
  std::map<MetadataIndex, StorageInfo> storage_data;
  for (const std::vector<WriteResult>& rank_results : results) {
    for (const WriteResult& result : rank_results) {
      storage_data.insert_or_assign(result.index, result.storage_data);
    }
  }
  metadata.storage_data = std::move(storage_data);
  metadata.storage_meta = StorageMetaForSave();
  std::string token = std::move(pending_token_);
  pending_token_.clear();
  return store_->Commit(token, metadata, options_.overwrite);
}

// ---- MemoryStorageReader ----------------------------------------------------

MemoryStorageReader::MemoryStorageReader(std::shared_ptr<MemoryStore> store,
                                         std::string checkpoint_id)
    : store_(std::move(store)),
      checkpoint_id_(std::move(checkpoint_id)),
      load_id_(storage_internal::RandomUuid()) {
  CHECK(store_ != nullptr) << "MemoryStorageReader needs a MemoryStore";
}

absl::Status MemoryStorageReader::Reset(
    std::optional<std::string> checkpoint_id) {
  if (checkpoint_id.has_value() && !checkpoint_id->empty()) {
    checkpoint_id_ = *std::move(checkpoint_id);
  }
  load_id_ = storage_internal::RandomUuid();
  snapshot_.reset();
  snapshot_is_current_ = false;
  storage_data_.reset();
  return absl::OkStatus();
}

absl::StatusOr<Metadata> MemoryStorageReader::ReadMetadata() {
  DCP_ASSIGN_OR_RETURN(snapshot_, store_->Get(checkpoint_id_));
  snapshot_is_current_ = true;
  Metadata metadata = snapshot_->metadata;
  if (!metadata.storage_meta.has_value()) metadata.storage_meta.emplace();
  metadata.storage_meta->load_id = load_id_;
  return metadata;
}

absl::Status MemoryStorageReader::SetUp(const Metadata& metadata,
                                        bool is_coordinator) {
  if (snapshot_ == nullptr || !snapshot_is_current_) {
    snapshot_.reset();
    DCP_ASSIGN_OR_RETURN(snapshot_, store_->Get(checkpoint_id_));
  }
  snapshot_is_current_ = false;
  const std::optional<StorageMeta>& given = metadata.storage_meta;
  const std::optional<StorageMeta>& stored = snapshot_->metadata.storage_meta;
  if (given.has_value() && given->save_id.has_value() && stored.has_value() &&
      stored->save_id.has_value() && *given->save_id != *stored->save_id) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "checkpoint \"%s\" in memory store is from save %s, but the metadata "
        "being loaded is from save %s (was it replaced meanwhile?)",
        checkpoint_id_, *stored->save_id, *given->save_id));
  }
  storage_data_ = metadata.storage_data;
  return absl::OkStatus();
}

absl::StatusOr<LoadPlan> MemoryStorageReader::PrepareLocalPlan(LoadPlan plan) {
  return plan;
}

absl::StatusOr<std::vector<LoadPlan>> MemoryStorageReader::PrepareGlobalPlan(
    std::vector<LoadPlan> plans) {
  return plans;
}

absl::Status MemoryStorageReader::ReadData(const LoadPlan& plan,
                                           LoadPlanner& planner) {
  DCP_RETURN_IF_ERROR(FaultPoint("memory_storage.read_data"));
  if (snapshot_ == nullptr || !storage_data_.has_value()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "ReadData of checkpoint \"%s\" before SetUp", checkpoint_id_));
  }
  for (const ReadItem& item : plan.items) {
    DCP_RETURN_IF_ERROR(ReadOne(item, planner));
  }
  return absl::OkStatus();
}

absl::Status MemoryStorageReader::ReadOne(const ReadItem& item,
                                          LoadPlanner& planner) const {
  const std::string where = absl::StrFormat(
      "checkpoint \"%s\" item %s", checkpoint_id_,
      DescribeIndex(item.storage_index));
  auto info = storage_data_->find(item.storage_index);
  if (info == storage_data_->end()) {
    return absl::DataLossError(
        absl::StrCat(where, ": no such item was saved"));
  }
  const std::string& object_name = info->second.relative_path;
  const int64_t position = info->second.offset;
  auto object = snapshot_->objects.find(object_name);
  if (object == snapshot_->objects.end()) {
    return absl::DataLossError(absl::StrFormat(
        "%s: object \"%s\" is missing", where, object_name));
  }
  const StoredObject& items = *object->second;
  if (position < 0 || position >= static_cast<int64_t>(items.size()) ||
      items[position].index != item.storage_index) {
    return absl::DataLossError(absl::StrFormat(
        "%s: not found at position %d of object \"%s\"", where, position,
        object_name));
  }
  const Value& stored = items[position].data;

  if (item.type == LoadItemType::kByteIo) {
    if (stored.is<at::Tensor>()) {
      return absl::DataLossError(
          absl::StrCat(where, ": stored as a tensor, read as bytes"));
    }
    Value copy = stored;  // Deep: the planner may keep or change it.
    return planner.LoadBytes(item, std::move(copy));
  }

  const at::Tensor* chunk = stored.get_if<at::Tensor>();
  if (chunk == nullptr) {
    return absl::DataLossError(absl::StrFormat(
        "%s: stored as a %s, read as a tensor", where, stored.TypeName()));
  }
  const int64_t dims = chunk->dim();
  if (static_cast<int64_t>(item.storage_offsets.size()) != dims ||
      static_cast<int64_t>(item.lengths.size()) != dims) {
    return absl::DataLossError(absl::StrFormat(
        "%s: read box at %s of extent %s does not match the %d-d saved "
        "chunk of shape %s",
        where, FormatShape(item.storage_offsets), FormatShape(item.lengths),
        dims, FormatShape(chunk->sizes())));
  }
  for (int64_t d = 0; d < dims; ++d) {
    const int64_t offset = item.storage_offsets[d];
    const int64_t length = item.lengths[d];
    if (offset < 0 || length < 0 || offset > chunk->size(d) - length) {
      return absl::DataLossError(absl::StrFormat(
          "%s: read box at %s of extent %s is outside the saved chunk of "
          "shape %s",
          where, FormatShape(item.storage_offsets), FormatShape(item.lengths),
          FormatShape(chunk->sizes())));
    }
  }
  DCP_ASSIGN_OR_RETURN(at::Tensor source,
                       TorchCall(absl::StrCat("narrowing ", where), [&] {
                         at::Tensor box = *chunk;
                         for (int64_t d = 0; d < dims; ++d) {
                           box = box.narrow(d, item.storage_offsets[d],
                                            item.lengths[d]);
                         }
                         return box;
                       }));
  DCP_ASSIGN_OR_RETURN(at::Tensor destination, planner.ResolveTensor(item));
  if (!destination.defined()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: the planner resolved destination %s to an undefined tensor",
        where, DescribeIndex(item.dest_index)));
  }
  if (destination.sizes() != source.sizes()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: destination %s has shape %s but the read box has shape %s",
        where, DescribeIndex(item.dest_index),
        FormatShape(destination.sizes()), FormatShape(source.sizes())));
  }
  const at::Tensor target = destination.detach();
  DCP_RETURN_IF_ERROR(Annotate(CopyTensorInto(source, target),
                               absl::StrCat("copying ", where)));
  return planner.CommitTensor(item, target);
}

}  // namespace dcp
