#include "planner/default_load_planner.h"

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "ATen/ATen.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/metadata.h"
#include "core/state_dict.h"
#include "core/status.h"
#include "core/torch_status.h"
#include "glog/logging.h"
#include "planner/flatten.h"
#include "planner/load_plan.h"
#include "planner/resharding.h"

namespace dcp {
namespace {

std::string Quoted(absl::string_view fqn) {
  return absl::StrCat("\"", fqn, "\"");
}

std::string QuotedList(const std::vector<std::string>& keys) {
  return absl::StrJoin(keys, ", ", [](std::string* out, const std::string& k) {
    absl::StrAppend(out, Quoted(k));
  });
}

// PyTorch <= 2.3's traversal (`_traverse_state_dict_v_2_3`): a dict or list
// is a leaf unless it holds a tensor or a non-leaf container.
bool IsLegacyTerminal(const Value& value) {
  auto entry_blocks = [](const Value& entry) {
    if ((entry.is<StateDict>() || entry.is<List>()) &&
        !IsLegacyTerminal(entry)) {
      return true;
    }
    return entry.is_tensor_like();
  };
  if (const StateDict* dict = value.get_if<StateDict>()) {
    for (const StateDict::Entry& entry : dict->entries()) {
      if (entry_blocks(entry.second)) return false;
    }
    return true;
  }
  if (const List* list = value.get_if<List>()) {
    for (const Value& entry : *list) {
      if (entry_blocks(entry)) return false;
    }
  }
  return true;
}

class LegacyFlattener {
 public:
  absl::Status Visit(ObjectPath& path, const Value& value) {
    if (IsLegacyTerminal(value)) {
      std::string fqn = FqnOf(path);
      if (!flat_.mappings.emplace(fqn, path).second) {
        return absl::InvalidArgumentError(
            absl::StrCat("duplicated flatten key ", Quoted(fqn)));
      }
      flat_.items.emplace_back(std::move(fqn), value);
      return absl::OkStatus();
    }
    if (const StateDict* dict = value.get_if<StateDict>()) {
      for (const StateDict::Entry& entry : dict->entries()) {
        path.emplace_back(entry.first);
        absl::Status status = Visit(path, entry.second);
        path.pop_back();
        DCP_RETURN_IF_ERROR(status);
      }
      return absl::OkStatus();
    }
    const List& list = value.get<List>();
    for (size_t i = 0; i < list.size(); ++i) {
      path.emplace_back(static_cast<int64_t>(i));
      absl::Status status = Visit(path, list[i]);
      path.pop_back();
      DCP_RETURN_IF_ERROR(status);
    }
    return absl::OkStatus();
  }

  FlatStateDict Release() && { return std::move(flat_); }

 private:
  FlatStateDict flat_;
};

absl::StatusOr<FlatStateDict> LegacyFlattenStateDict(
    const StateDict& state_dict) {
  LegacyFlattener flattener;
  ObjectPath path;
  for (const StateDict::Entry& entry : state_dict.entries()) {
    path.assign(1, entry.first);
    DCP_RETURN_IF_ERROR(flattener.Visit(path, entry.second));
  }
  return std::move(flattener).Release();
}

absl::Status CheckDestinationTensor(const std::string& fqn,
                                    const at::Tensor& tensor,
                                    absl::string_view what,
                                    const TensorStorageMetadata& saved,
                                    bool check_dtype) {
  if (!tensor.defined()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "destination ", Quoted(fqn), ": ", what, " is an undefined tensor"));
  }
  if (check_dtype && tensor.scalar_type() != saved.properties.dtype) {
    return absl::InvalidArgumentError(
        absl::StrCat("dtype mismatch for ", Quoted(fqn), ": saved ",
                     DtypeName(saved.properties.dtype), ", destination ",
                     DtypeName(tensor.scalar_type()), " (", what, ")"));
  }
  return absl::OkStatus();
}

// The destination's boxes of `fqn` (Python's `_create_chunk_list`), after
// checking sizes, shard geometry and (optionally) dtypes.
absl::StatusOr<std::vector<ChunkStorageMetadata>> DestinationChunks(
    const std::string& fqn, const Value& value,
    const TensorStorageMetadata& saved, bool check_dtype) {
  if (const at::Tensor* tensor = value.get_if<at::Tensor>()) {
    DCP_RETURN_IF_ERROR(
        CheckDestinationTensor(fqn, *tensor, "value", saved, check_dtype));
    Shape sizes = tensor->sizes().vec();
    if (sizes != saved.size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "size mismatch for ", Quoted(fqn), ": saved ",
          FormatShape(saved.size), ", destination ", FormatShape(sizes)));
    }
    std::vector<ChunkStorageMetadata> chunks(1);
    chunks[0].offsets.assign(sizes.size(), 0);
    chunks[0].sizes = std::move(sizes);
    return chunks;
  }
  if (const ShardedTensor* sharded = value.get_if<ShardedTensor>()) {
    const Shape& global = sharded->global_size;
    if (global != saved.size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "size mismatch for ", Quoted(fqn), ": saved ",
          FormatShape(saved.size), ", destination ", FormatShape(global)));
    }
    std::vector<ChunkStorageMetadata> chunks;
    chunks.reserve(sharded->local_shards.size());
    for (size_t i = 0; i < sharded->local_shards.size(); ++i) {
      const Shard& shard = sharded->local_shards[i];
      const std::string what = absl::StrCat("local shard ", i);
      DCP_RETURN_IF_ERROR(
          CheckDestinationTensor(fqn, shard.tensor, what, saved, check_dtype));
      Shape sizes = shard.tensor.sizes().vec();
      bool fits = sizes.size() == global.size() &&
                  shard.offsets.size() == global.size();
      for (size_t d = 0; fits && d < global.size(); ++d) {
        int64_t end;
        fits = shard.offsets[d] >= 0 &&
               !__builtin_add_overflow(shard.offsets[d], sizes[d], &end) &&
               end <= global[d];
      }
      if (!fits) {
        return absl::InvalidArgumentError(absl::StrCat(
            "destination ", Quoted(fqn), ": ", what, " at offsets ",
            FormatShape(shard.offsets), " with sizes ", FormatShape(sizes),
            " does not fit the global size ", FormatShape(global)));
      }
      chunks.push_back(ChunkStorageMetadata{shard.offsets, std::move(sizes)});
    }
    return chunks;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("invalid checkpoint metadata for ", Quoted(fqn),
                   ": saved as a tensor of size ", FormatShape(saved.size),
                   " but the destination is a ", value.TypeName(),
                   " (expected BytesStorageMetadata)"));
}

// "[0, 0]+[2, 4], [2, 0]+[2, 4]", at most kMaxChunksNamed of them.
std::string DescribeChunks(const std::vector<ChunkStorageMetadata>& chunks) {
  constexpr size_t kMaxChunksNamed = 8;
  if (chunks.empty()) return "none";
  std::vector<std::string> named;
  for (size_t i = 0; i < chunks.size() && i < kMaxChunksNamed; ++i) {
    named.push_back(absl::StrCat(FormatShape(chunks[i].offsets), "+",
                                 FormatShape(chunks[i].sizes)));
  }
  if (chunks.size() > kMaxChunksNamed) {
    named.push_back(
        absl::StrCat("and ", chunks.size() - kMaxChunksNamed, " more"));
  }
  return absl::StrJoin(named, ", ");
}

ReadItem BytesReadItem(const std::string& fqn) {
  ReadItem item;
  item.type = LoadItemType::kByteIo;
  item.dest_index = MetadataIndex(fqn);
  item.dest_offsets = {0};
  item.storage_index = MetadataIndex(fqn);
  item.storage_offsets = {0};
  item.lengths = {0};
  return item;
}

}  // namespace

DefaultLoadPlanner::DefaultLoadPlanner(DefaultLoadPlannerOptions options)
    : options_(options) {}

absl::Status DefaultLoadPlanner::UseItems(
    std::vector<std::pair<std::string, Value>> items,
    std::map<std::string, ObjectPath> mappings) {
  positions_.clear();  // its keys view the strings of items_
  items_ = std::move(items);
  mappings_ = std::move(mappings);
  positions_.reserve(items_.size());
  for (size_t i = 0; i < items_.size(); ++i) {
    if (!positions_.emplace(items_[i].first, i).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("duplicated key ", Quoted(items_[i].first)));
    }
  }
  return absl::OkStatus();
}

absl::Status DefaultLoadPlanner::SetUp(StateDict* state_dict,
                                       const Metadata& metadata,
                                       bool is_coordinator) {
  // Planning reads only state_dict_metadata: copy nothing else.
  Metadata needed;
  needed.state_dict_metadata = metadata.state_dict_metadata;
  return SetUpShared(state_dict,
                     std::make_shared<const IndexedMetadata>(std::move(needed)),
                     is_coordinator);
}

absl::Status DefaultLoadPlanner::SetUpShared(
    StateDict* state_dict, std::shared_ptr<const Metadata> metadata,
    bool is_coordinator) {
  if (metadata == nullptr) {
    return absl::InvalidArgumentError(
        "DefaultLoadPlanner::SetUpShared: metadata is null");
  }
  return SetUpShared(
      state_dict, std::make_shared<const IndexedMetadata>(std::move(metadata)),
      is_coordinator);
}

absl::Status DefaultLoadPlanner::SetUpShared(
    StateDict* state_dict, std::shared_ptr<const IndexedMetadata> metadata,
    bool is_coordinator) {
  std::lock_guard<std::mutex> lock(mu_);
  set_up_ = false;
  original_ = nullptr;
  saved_ = nullptr;
  if (state_dict == nullptr) {
    return absl::InvalidArgumentError(
        "DefaultLoadPlanner::SetUp: state_dict is null");
  }
  if (metadata == nullptr) {
    return absl::InvalidArgumentError(
        "DefaultLoadPlanner::SetUpShared: metadata is null");
  }
  if (options_.flatten_state_dict) {
    DCP_ASSIGN_OR_RETURN(FlatStateDict flat, FlattenStateDict(*state_dict));
    DCP_RETURN_IF_ERROR(
        UseItems(std::move(flat.items), std::move(flat.mappings)));
  } else {
    DCP_RETURN_IF_ERROR(UseItems(state_dict->entries(), {}));
  }
  original_ = state_dict;
  saved_ = std::move(metadata);
  set_up_ = true;
  return absl::OkStatus();
}

absl::StatusOr<LoadPlan> DefaultLoadPlanner::CreateLocalPlan() {
  if (!set_up_) {
    return absl::FailedPreconditionError(
        "DefaultLoadPlanner::CreateLocalPlan called before SetUp");
  }
  const std::map<std::string, StorageMetadata>& saved_keys =
      saved_->metadata().state_dict_metadata;
  // Each destination key's checkpoint entry, and how many saved keys the
  // destination asks for: fewer than all means some are not asked for,
  // found without visiting every saved key.
  std::vector<IndexedMetadata::Entry> entries;
  size_t requested = 0;
  auto look_up = [&] {
    entries.clear();
    entries.reserve(items_.size());
    requested = 0;
    for (const auto& item : items_) {
      entries.push_back(saved_->Find(item.first));
      if (entries.back().storage != nullptr) ++requested;
    }
  };
  look_up();
  if (options_.flatten_state_dict && requested < saved_keys.size()) {
    // Python 2.6's detection of checkpoints from PyTorch <= 2.3: if some
    // saved keys are not requested but appear when the destination is
    // flattened the old way, use the old flattening.
    StateDict* original;
    {
      std::lock_guard<std::mutex> lock(mu_);
      original = original_;
    }
    DCP_ASSIGN_OR_RETURN(FlatStateDict legacy,
                         LegacyFlattenStateDict(*original));
    bool use_legacy = false;
    for (const auto& item : legacy.items) {
      if (!positions_.contains(item.first) &&
          saved_->Find(item.first).storage != nullptr) {
        use_legacy = true;
        break;
      }
    }
    if (use_legacy) {
      VLOG(1) << "loading a checkpoint flattened by PyTorch <= 2.3";
      DCP_RETURN_IF_ERROR(
          UseItems(std::move(legacy.items), std::move(legacy.mappings)));
      look_up();
    }
  }

  LoadPlan plan;
  plan.items.reserve(items_.size());
  std::vector<std::string> missing;
  for (size_t i = 0; i < items_.size(); ++i) {
    const auto& [fqn, value] = items_[i];
    const IndexedMetadata::Entry& found = entries[i];
    if (found.storage == nullptr) {
      if (!options_.allow_partial_load) missing.push_back(fqn);
      continue;
    }
    const auto* saved = std::get_if<TensorStorageMetadata>(found.storage);
    if (saved == nullptr) {
      plan.items.push_back(BytesReadItem(fqn));
      continue;
    }
    DCP_ASSIGN_OR_RETURN(
        std::vector<ChunkStorageMetadata> chunks,
        DestinationChunks(fqn, value, *saved, options_.check_dtype));
    const size_t first_item = plan.items.size();
    AppendReadItemsForChunkList(fqn, *saved, *found.chunk_index, chunks,
                                &plan.items);
    const absl::Status covered = CheckReadItemsCoverChunks(
        fqn, chunks, absl::MakeConstSpan(plan.items).subspan(first_item));
    if (!covered.ok()) {
      // What the checkpoint does hold tells a partial save from a corrupt
      // `.metadata`.
      return absl::Status(
          covered.code(),
          absl::StrCat(covered.message(), "; the checkpoint's chunks of ",
                       Quoted(fqn), ": ", DescribeChunks(saved->chunks)));
    }
  }

  std::vector<std::string> unexpected;
  if (options_.strict && requested < saved_keys.size()) {
    for (const auto& entry : saved_keys) {
      if (!positions_.contains(entry.first)) unexpected.push_back(entry.first);
    }
  }
  if (!missing.empty() || !unexpected.empty()) {
    std::vector<std::string> parts;
    if (!missing.empty()) {
      parts.push_back(
          absl::StrCat("keys missing from checkpoint: ", QuotedList(missing)));
    }
    if (!unexpected.empty()) {
      parts.push_back(absl::StrCat("unexpected keys in checkpoint: ",
                                   QuotedList(unexpected)));
    }
    const std::string message = absl::StrJoin(parts, "; ");
    return missing.empty() ? absl::InvalidArgumentError(message)
                           : absl::NotFoundError(message);
  }
  return plan;
}

absl::StatusOr<std::vector<LoadPlan>> DefaultLoadPlanner::CreateGlobalPlan(
    std::vector<LoadPlan> plans) {
  return plans;
}

absl::StatusOr<LoadPlan> DefaultLoadPlanner::FinishPlan(LoadPlan central_plan) {
  return central_plan;
}

absl::Status DefaultLoadPlanner::LoadBytes(const ReadItem& item, Value value) {
  if (!set_up_) {
    return absl::FailedPreconditionError(
        "DefaultLoadPlanner::LoadBytes called before SetUp");
  }
  const std::string& fqn = item.dest_index.fqn;
  std::lock_guard<std::mutex> lock(mu_);
  if (!options_.flatten_state_dict) {
    original_->Set(fqn, std::move(value));
    return absl::OkStatus();
  }
  auto found = mappings_.find(fqn);
  if (found == mappings_.end()) {
    return absl::NotFoundError(absl::StrCat("could not find ", Quoted(fqn),
                                            " in the state dict being loaded"));
  }
  return Annotate(SetElement(*original_, found->second, std::move(value)),
                  absl::StrCat("loading ", Quoted(fqn)));
}

absl::StatusOr<at::Tensor> DefaultLoadPlanner::FindDestination(
    const ReadItem& item) const {
  const std::string& fqn = item.dest_index.fqn;
  auto found = positions_.find(fqn);
  if (found == positions_.end()) {
    return absl::NotFoundError(absl::StrCat("could not find ", Quoted(fqn),
                                            " in the state dict being loaded"));
  }
  const Value& value = items_[found->second].second;
  const std::optional<Shape>& offset = item.dest_index.offset;
  if (const at::Tensor* tensor = value.get_if<at::Tensor>()) {
    if (offset.has_value() &&
        *offset != Shape(static_cast<size_t>(tensor->dim()), 0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          Quoted(fqn), " is not a sharded tensor; cannot find it by offset ",
          FormatShape(*offset)));
    }
    return *tensor;
  }
  if (const ShardedTensor* sharded = value.get_if<ShardedTensor>()) {
    if (!offset.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat(
          Quoted(fqn), " is a sharded tensor; the read item has no offset"));
    }
    const std::vector<Shard>& shards = sharded->local_shards;
    const std::optional<int64_t>& hint = item.dest_index.index;
    if (hint.has_value() && *hint >= 0 &&
        static_cast<size_t>(*hint) < shards.size() &&
        shards[*hint].offsets == *offset) {
      return shards[*hint].tensor;
    }
    for (const Shard& shard : shards) {
      if (shard.offsets == *offset) return shard.tensor;
    }
    return absl::NotFoundError(absl::StrCat("could not find a local shard of ",
                                            Quoted(fqn), " at offset ",
                                            FormatShape(*offset)));
  }
  return absl::InvalidArgumentError(
      absl::StrCat(Quoted(fqn), " is a ", value.TypeName(), ", not a tensor"));
}

absl::StatusOr<at::Tensor> DefaultLoadPlanner::ResolveTensor(
    const ReadItem& item) {
  if (!set_up_) {
    return absl::FailedPreconditionError(
        "DefaultLoadPlanner::ResolveTensor called before SetUp");
  }
  DCP_ASSIGN_OR_RETURN(at::Tensor tensor, FindDestination(item));
  const size_t ndim = static_cast<size_t>(tensor.dim());
  bool fits = item.dest_offsets.size() == ndim && item.lengths.size() == ndim;
  for (size_t d = 0; fits && d < ndim; ++d) {
    int64_t end;
    fits =
        item.dest_offsets[d] >= 0 && item.lengths[d] >= 0 &&
        !__builtin_add_overflow(item.dest_offsets[d], item.lengths[d], &end) &&
        end <= tensor.size(static_cast<int64_t>(d));
  }
  if (!fits) {
    return absl::InvalidArgumentError(absl::StrCat(
        "read item for ", Quoted(item.dest_index.fqn), ": box ",
        FormatShape(item.dest_offsets), "+", FormatShape(item.lengths),
        " does not fit the destination of size ",
        FormatShape(tensor.sizes().vec())));
  }
  return TorchCall(
      absl::StrCat("narrowing ", Quoted(item.dest_index.fqn)), [&] {
        at::Tensor view = tensor;
        for (size_t d = 0; d < ndim; ++d) {
          view = view.narrow(static_cast<int64_t>(d), item.dest_offsets[d],
                             item.lengths[d]);
        }
        return view;
      });
}

absl::Status DefaultLoadPlanner::CommitTensor(const ReadItem& item,
                                              const at::Tensor& tensor) {
  return absl::OkStatus();
}

}  // namespace dcp
