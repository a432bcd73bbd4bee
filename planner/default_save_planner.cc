#include "planner/default_save_planner.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "ATen/core/Tensor.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "core/byte_codec.h"
#include "core/metadata.h"
#include "core/state_dict.h"
#include "core/status.h"
#include "core/torch_status.h"
#include "planner/flatten.h"
#include "planner/plan_validation.h"
#include "planner/planner.h"
#include "planner/save_plan.h"

namespace dcp {
namespace {

std::string Quoted(absl::string_view fqn) {
  return absl::StrCat("\"", fqn, "\"");
}

// Python's TensorProperties.create_from_tensor: the memory format is always
// recorded as contiguous.
TensorProperties PropertiesOf(const at::Tensor& tensor) {
  TensorProperties properties;
  properties.dtype = tensor.scalar_type();
  properties.layout = tensor.layout();
  properties.requires_grad = tensor.requires_grad();
  properties.memory_format = MemoryFormat::kContiguous;
  // is_pinned() asks the accelerator hooks; treat any failure as "not
  // pinned" (it only matters to PyTorch's staging).
  properties.pin_memory = TorchCall("is_pinned", [&] {
                            return tensor.is_pinned();
                          }).value_or(false);
  return properties;
}

// `what` names the tensor ("value", or "local shard" with `shard` >= 0).
absl::Status CheckTensor(absl::string_view fqn, const at::Tensor& tensor,
                         absl::string_view what, int64_t shard = -1) {
  auto name = [&] {
    return shard < 0 ? std::string(what) : absl::StrCat(what, " ", shard);
  };
  if (!tensor.defined()) {
    return absl::InvalidArgumentError(
        absl::StrCat(Quoted(fqn), ": ", name(), " is an undefined tensor"));
  }
  absl::StatusOr<int64_t> element_size = ElementSize(tensor.scalar_type());
  if (!element_size.ok()) {
    return Annotate(
        element_size.status(),
        absl::StrCat(Quoted(fqn), ": ", name(), " cannot be saved"));
  }
  return absl::OkStatus();
}

absl::Status AppendShardedItems(const std::string& fqn,
                                const ShardedTensor& sharded,
                                std::vector<WriteItem>& items) {
  const Shape& global = sharded.global_size;
  for (int64_t dim : global) {
    if (dim < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(Quoted(fqn), ": global size ", FormatShape(global),
                       " has a negative dimension"));
    }
  }
  std::optional<TensorProperties> properties;
  for (size_t i = 0; i < sharded.local_shards.size(); ++i) {
    const Shard& shard = sharded.local_shards[i];
    // Named only when something is wrong (no string per shard otherwise).
    auto what = [i] { return absl::StrCat("local shard ", i); };
    DCP_RETURN_IF_ERROR(
        CheckTensor(fqn, shard.tensor, "local shard", static_cast<int64_t>(i)));
    Shape sizes = shard.tensor.sizes().vec();
    if (sizes.size() != global.size() ||
        shard.offsets.size() != global.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          Quoted(fqn), ": ", what(), " at offsets ", FormatShape(shard.offsets),
          " with sizes ", FormatShape(sizes), " does not have the rank ",
          global.size(), " of the global size ", FormatShape(global)));
    }
    for (size_t d = 0; d < global.size(); ++d) {
      int64_t end;
      if (shard.offsets[d] < 0 ||
          __builtin_add_overflow(shard.offsets[d], sizes[d], &end) ||
          end > global[d]) {
        return absl::InvalidArgumentError(absl::StrCat(
            Quoted(fqn), ": ", what(), " at offsets ",
            FormatShape(shard.offsets), " with sizes ", FormatShape(sizes),
            " lies outside the global size ", FormatShape(global)));
      }
    }
    if (!properties.has_value()) {
      properties = PropertiesOf(shard.tensor);
    } else if (properties->dtype != shard.tensor.scalar_type()) {
      return absl::InvalidArgumentError(absl::StrCat(
          Quoted(fqn), ": local shards have different dtypes: ",
          DtypeName(properties->dtype), " (shard 0) and ",
          DtypeName(shard.tensor.scalar_type()), " (shard ", i, ")"));
    }
    WriteItem item;
    item.index = MetadataIndex(fqn, shard.offsets);
    item.type = WriteItemType::kShard;
    item.tensor_data =
        TensorWriteData{ChunkStorageMetadata{shard.offsets, std::move(sizes)},
                        *properties, global};
    items.push_back(std::move(item));
  }
  return absl::OkStatus();
}

// "tensor of size [4] (float32)", "shard [0]+[4] of size [8] (float32)".
std::string DescribeItem(const WriteItem& item) {
  if (item.type == WriteItemType::kByteIo) return "non-tensor value";
  if (!item.tensor_data.has_value()) {
    return absl::StrCat(item.type == WriteItemType::kShard ? "shard" : "tensor",
                        " without tensor data");
  }
  const TensorWriteData& data = *item.tensor_data;
  const std::string dtype =
      absl::StrCat(" (", DtypeName(data.properties.dtype), ")");
  if (item.type == WriteItemType::kShard) {
    return absl::StrCat("shard ", FormatShape(data.chunk.offsets), "+",
                        FormatShape(data.chunk.sizes), " of size ",
                        FormatShape(data.size), dtype);
  }
  return absl::StrCat("tensor of size ", FormatShape(data.size), dtype);
}

// Replicas (equal index on several ranks) must describe the same data.
bool SameReplica(const WriteItem& a, const WriteItem& b) {
  if (a.type != b.type) return false;
  if (a.tensor_data.has_value() != b.tensor_data.has_value()) return false;
  if (!a.tensor_data.has_value()) return true;
  return a.tensor_data->chunk == b.tensor_data->chunk &&
         a.tensor_data->size == b.tensor_data->size &&
         a.tensor_data->properties.dtype == b.tensor_data->properties.dtype;
}

int64_t PlannedBytes(const WriteItem& item) {
  if (item.type == WriteItemType::kByteIo) return 1;
  return std::max<int64_t>(item.TensorStorageSize().value_or(1), 0);
}

int64_t SaturatingAdd(int64_t a, int64_t b) {
  int64_t sum;
  if (__builtin_add_overflow(a, b, &sum)) {
    return std::numeric_limits<int64_t>::max();
  }
  return sum;
}

constexpr size_t kMinPlannerDataEntryBytes = 2;  // fqn length + path count
constexpr size_t kMinPathElementBytes = 2;       // tag + one byte
constexpr uint8_t kPathKey = 0;
constexpr uint8_t kPathIndex = 1;

}  // namespace

namespace {

// CreateDefaultLocalSavePlan over `count` items, the i-th given by
// `item(i)` as (const std::string& fqn, const Value& value).
template <typename ItemFn>
absl::StatusOr<SavePlan> CreateLocalSavePlanOf(size_t count, ItemFn item_at) {
  SavePlan plan;
  plan.items.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    const auto [fqn_ptr, value_ptr] = item_at(i);
    const std::string& fqn = *fqn_ptr;
    const Value& value = *value_ptr;
    if (const at::Tensor* tensor = value.get_if<at::Tensor>()) {
      DCP_RETURN_IF_ERROR(CheckTensor(fqn, *tensor, "value"));
      const Shape sizes = tensor->sizes().vec();
      const Shape zeros(sizes.size(), 0);
      WriteItem item;
      item.index = MetadataIndex(fqn, zeros);
      item.type = WriteItemType::kTensor;
      item.tensor_data = TensorWriteData{ChunkStorageMetadata{zeros, sizes},
                                         PropertiesOf(*tensor), sizes};
      plan.items.push_back(std::move(item));
    } else if (const ShardedTensor* sharded = value.get_if<ShardedTensor>()) {
      DCP_RETURN_IF_ERROR(AppendShardedItems(fqn, *sharded, plan.items));
    } else {
      if (ContainsTensor(value)) {
        return absl::InvalidArgumentError(absl::StrCat(
            Quoted(fqn), ": a ", value.TypeName(),
            " holding tensors cannot be saved as one non-tensor value; "
            "flatten the state dict"));
      }
      WriteItem item;
      item.index = MetadataIndex(fqn);
      item.type = WriteItemType::kByteIo;
      plan.items.push_back(std::move(item));
    }
  }
  return plan;
}

}  // namespace

absl::StatusOr<SavePlan> CreateDefaultLocalSavePlan(
    const std::vector<std::pair<std::string, Value>>& items) {
  return CreateLocalSavePlanOf(items.size(), [&items](size_t i) {
    return std::make_pair(&items[i].first, &items[i].second);
  });
}

absl::StatusOr<std::vector<SavePlan>> DedupSavePlans(
    std::vector<SavePlan> plans, bool save_to_lowest_rank) {
  // Holders of an entry form a list through `holders` (ascending ranks,
  // since plans are visited in rank order), so that the common case of one
  // holder per index costs no allocation.
  struct Holder {
    size_t rank;
    size_t next;  // kNone at the end of the list
  };
  constexpr size_t kNone = static_cast<size_t>(-1);
  struct Entry {
    const WriteItem* first;  // the first item seen with this index
    size_t head;             // first and last holder in `holders`
    size_t tail;
  };
  // Entries in first-seen order; the hash map (keyed by the items' own
  // indexes, which stay in place during this pass) is only for lookups.
  struct IndexHash {
    size_t operator()(const MetadataIndex* index) const {
      return absl::Hash<MetadataIndex>()(*index);
    }
  };
  struct IndexEq {
    bool operator()(const MetadataIndex* a, const MetadataIndex* b) const {
      return *a == *b;
    }
  };
  size_t total_items = 0;
  for (const SavePlan& plan : plans) total_items += plan.items.size();
  std::vector<Entry> entries;
  std::vector<Holder> holders;
  entries.reserve(total_items);
  holders.reserve(total_items);
  absl::flat_hash_map<const MetadataIndex*, size_t, IndexHash, IndexEq> lookup;
  lookup.reserve(total_items);
  // entry_of[r][i]: the entry of plans[r].items[i].
  std::vector<std::vector<size_t>> entry_of(plans.size());
  for (size_t rank = 0; rank < plans.size(); ++rank) {
    entry_of[rank].reserve(plans[rank].items.size());
    for (const WriteItem& item : plans[rank].items) {
      auto [it, inserted] = lookup.try_emplace(&item.index, entries.size());
      if (inserted) {
        holders.push_back(Holder{rank, kNone});
        entries.push_back(Entry{&item, holders.size() - 1, holders.size() - 1});
      } else {
        Entry& entry = entries[it->second];
        if (!SameReplica(*entry.first, item)) {
          return absl::InvalidArgumentError(absl::StrCat(
              Quoted(item.index.fqn), " is saved differently by ranks ",
              holders[entry.head].rank, " and ", rank, ": ",
              DescribeItem(*entry.first), " vs ", DescribeItem(item),
              "; replicated values must match on every rank"));
        }
        if (holders[entry.tail].rank != rank) {
          holders.push_back(Holder{rank, kNone});
          holders[entry.tail].next = holders.size() - 1;
          entry.tail = holders.size() - 1;
        }
      }
      entry_of[rank].push_back(it->second);
    }
  }

  std::vector<int64_t> planned_bytes(plans.size(), 0);
  std::vector<size_t> owner(entries.size());
  for (size_t e = 0; e < entries.size(); ++e) {
    size_t chosen = holders[entries[e].head].rank;
    if (!save_to_lowest_rank) {
      for (size_t h = holders[entries[e].head].next; h != kNone;
           h = holders[h].next) {
        const size_t rank = holders[h].rank;
        // Strictly smaller, so ties go to the lowest rank.
        if (planned_bytes[rank] < planned_bytes[chosen]) chosen = rank;
      }
    }
    owner[e] = chosen;
    planned_bytes[chosen] =
        SaturatingAdd(planned_bytes[chosen], PlannedBytes(*entries[e].first));
  }

  // Drop the items other ranks keep, in place and in order.
  for (size_t rank = 0; rank < plans.size(); ++rank) {
    std::vector<WriteItem>& items = plans[rank].items;
    size_t kept = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      if (owner[entry_of[rank][i]] != rank) continue;
      if (kept != i) items[kept] = std::move(items[i]);
      ++kept;
    }
    items.erase(items.begin() + kept, items.end());
  }
  return plans;
}

absl::StatusOr<GlobalSavePlan> CreateDefaultGlobalSavePlan(
    std::vector<SavePlan> plans) {
  struct Origin {
    size_t rank;
    const WriteItem* item;  // the first item seen for the key
    // The key's entry in the Metadata; null for bytes.
    TensorStorageMetadata* tensor;
  };
  GlobalSavePlan global;
  std::map<std::string, StorageMetadata>& md =
      global.metadata.state_dict_metadata;
  absl::flat_hash_map<std::string, Origin> origins;
  for (size_t rank = 0; rank < plans.size(); ++rank) {
    for (WriteItem& item : plans[rank].items) {
      const std::string& fqn = item.index.fqn;
      auto found = origins.find(fqn);
      if (found != origins.end() &&
          (item.type != WriteItemType::kShard ||
           found->second.item->type != WriteItemType::kShard)) {
        return absl::InvalidArgumentError(absl::StrCat(
            Quoted(fqn), " is saved as a ", DescribeItem(*found->second.item),
            " by rank ", found->second.rank, " and as a ", DescribeItem(item),
            " by rank ", rank,
            "; a non-sharded key must be saved once, identically"));
      }
      if (item.type != WriteItemType::kByteIo &&
          !item.tensor_data.has_value()) {
        return absl::InvalidArgumentError(absl::StrCat(
            Quoted(fqn), ": rank ", rank, "'s ",
            item.type == WriteItemType::kShard ? "shard" : "tensor",
            " write item has no tensor data"));
      }
      TensorStorageMetadata* tensor;
      if (found != origins.end()) {
        const TensorWriteData& first = *found->second.item->tensor_data;
        if (first.size != item.tensor_data->size ||
            first.properties.dtype != item.tensor_data->properties.dtype) {
          return absl::InvalidArgumentError(absl::StrCat(
              Quoted(fqn), ": shards disagree on the tensor: rank ",
              found->second.rank, " saves global size ",
              FormatShape(first.size), " (", DtypeName(first.properties.dtype),
              "), rank ", rank, " saves ", FormatShape(item.tensor_data->size),
              " (", DtypeName(item.tensor_data->properties.dtype), ")"));
        }
        tensor = found->second.tensor;
      } else if (item.type == WriteItemType::kByteIo) {
        md[fqn] = BytesStorageMetadata{};
        origins.emplace(fqn, Origin{rank, &item, nullptr});
        continue;
      } else {
        const TensorWriteData& data = *item.tensor_data;
        // A key seen for the first time: md has no entry for it yet.
        auto it =
            md.emplace(fqn,
                       TensorStorageMetadata{data.properties, data.size, {}})
                .first;
        tensor = &std::get<TensorStorageMetadata>(it->second);
        origins.emplace(fqn, Origin{rank, &item, tensor});
      }
      item.index.index = static_cast<int64_t>(tensor->chunks.size());
      tensor->chunks.push_back(item.tensor_data->chunk);
    }
  }
  global.plans = std::move(plans);
  return global;
}

namespace {

// EncodePlannerData of `count` entries, the i-th given by `entry(i)` as
// (fqn, path) in increasing FQN order.
template <typename EntryFn>
std::string EncodeSortedPlannerData(size_t count, EntryFn entry) {
  ByteWriter writer;
  writer.WriteCount(count);
  for (size_t i = 0; i < count; ++i) {
    const auto [fqn, path] = entry(i);
    writer.WriteString(*fqn);
    writer.WriteCount(path->size());
    for (const PathElement& element : *path) {
      if (const auto* key = std::get_if<std::string>(&element)) {
        writer.WriteU8(kPathKey);
        writer.WriteString(*key);
      } else {
        writer.WriteU8(kPathIndex);
        writer.WriteSignedVarint(std::get<int64_t>(element));
      }
    }
  }
  return std::move(writer).Finish();
}

}  // namespace

std::string EncodePlannerData(
    const std::map<std::string, ObjectPath>& mappings) {
  auto it = mappings.begin();
  return EncodeSortedPlannerData(mappings.size(), [&it](size_t) {
    const auto entry = std::make_pair(&it->first, &it->second);
    ++it;
    return entry;
  });
}

absl::StatusOr<std::map<std::string, ObjectPath>> DecodePlannerData(
    absl::string_view bytes) {
  ByteReader reader(bytes);
  std::map<std::string, ObjectPath> mappings;
  DCP_ASSIGN_OR_RETURN(
      const size_t count,
      reader.ReadCount("planner_data entry count", kMinPlannerDataEntryBytes));
  for (size_t i = 0; i < count; ++i) {
    const std::string context = absl::StrCat("decoding planner_data entry ", i);
    absl::StatusOr<absl::string_view> fqn = reader.ReadString("fqn");
    if (!fqn.ok()) return Annotate(fqn.status(), context);
    if (!mappings.empty() && !(mappings.rbegin()->first < *fqn)) {
      return Annotate(
          reader.Malformed("fqn", "keys are not strictly increasing"), context);
    }
    absl::StatusOr<size_t> length =
        reader.ReadCount("object path length", kMinPathElementBytes);
    if (!length.ok()) return Annotate(length.status(), context);
    ObjectPath path;
    path.reserve(*length);
    for (size_t j = 0; j < *length; ++j) {
      absl::StatusOr<uint8_t> tag = reader.ReadU8("object path element tag");
      if (!tag.ok()) return Annotate(tag.status(), context);
      if (*tag == kPathKey) {
        absl::StatusOr<absl::string_view> key =
            reader.ReadString("object path key");
        if (!key.ok()) return Annotate(key.status(), context);
        path.emplace_back(std::string(*key));
      } else if (*tag == kPathIndex) {
        absl::StatusOr<int64_t> index =
            reader.ReadSignedVarint("object path index");
        if (!index.ok()) return Annotate(index.status(), context);
        path.emplace_back(*index);
      } else {
        return Annotate(reader.Malformed("object path element tag",
                                         absl::StrCat("unknown tag ", *tag)),
                        context);
      }
    }
    mappings.emplace(std::string(*fqn), std::move(path));
  }
  DCP_RETURN_IF_ERROR(Annotate(reader.ExpectEnd(), "decoding planner_data"));
  return mappings;
}

DefaultSavePlanner::DefaultSavePlanner(DefaultSavePlannerOptions options)
    : options_(options) {}

absl::Status DefaultSavePlanner::SetUp(const StateDict& state_dict,
                                       const StorageMeta* storage_meta,
                                       bool is_coordinator) {
  set_up_ = false;
  items_.clear();
  positions_.clear();
  planner_data_.clear();
  if (options_.flatten_state_dict) {
    DCP_ASSIGN_OR_RETURN(FlatLeaves flat, FlattenStateDictLeaves(state_dict));
    items_ = std::move(flat.items);  // Pointers into `state_dict`.
    planner_data_ = EncodeSortedPlannerData(
        flat.by_fqn.size(), [&](size_t i) {
          const size_t leaf = flat.by_fqn[i];
          return std::make_pair(&items_[leaf].first, &flat.paths[leaf]);
        });
  } else {
    items_.reserve(state_dict.entries().size());
    for (const auto& [key, value] : state_dict.entries()) {
      items_.emplace_back(key, &value);
    }
  }
  positions_.reserve(items_.size());
  for (size_t i = 0; i < items_.size(); ++i) {
    positions_.emplace(items_[i].first, i);
  }
  set_up_ = true;
  return absl::OkStatus();
}

absl::StatusOr<SavePlan> DefaultSavePlanner::CreateLocalPlan() {
  if (!set_up_) {
    return absl::FailedPreconditionError(
        "DefaultSavePlanner::CreateLocalPlan called before SetUp");
  }
  DCP_ASSIGN_OR_RETURN(SavePlan plan,
                       CreateLocalSavePlanOf(items_.size(), [this](size_t i) {
                         return std::make_pair(&items_[i].first,
                                               items_[i].second);
                       }));
  if (options_.flatten_state_dict) {
    plan.planner_data = planner_data_;
  }
  return plan;
}

absl::StatusOr<GlobalSavePlan> DefaultSavePlanner::CreateGlobalPlan(
    std::vector<SavePlan> plans) {
  DCP_ASSIGN_OR_RETURN(
      std::vector<SavePlan> deduped,
      DedupSavePlans(std::move(plans), options_.dedup_save_to_lowest_rank));
  DCP_ASSIGN_OR_RETURN(GlobalSavePlan global,
                       CreateDefaultGlobalSavePlan(std::move(deduped)));
  if (options_.flatten_state_dict) {
    // Python's dict(ChainMap(*mappings)): the lowest rank's path wins.
    // Ranks with equal state dict layouts send equal bytes: each distinct
    // encoding is decoded and merged once.
    std::map<std::string, ObjectPath>& merged = global.metadata.planner_data;
    absl::flat_hash_set<absl::string_view> merged_encodings;
    for (size_t rank = 0; rank < global.plans.size(); ++rank) {
      const std::string& bytes = global.plans[rank].planner_data;
      if (bytes.empty()) continue;  // a plan from another planner
      if (!merged_encodings.insert(bytes).second) continue;
      absl::StatusOr<std::map<std::string, ObjectPath>> mappings =
          DecodePlannerData(bytes);
      if (!mappings.ok()) {
        return Annotate(mappings.status(),
                        absl::StrCat("rank ", rank, "'s save plan"));
      }
      for (auto& [fqn, path] : *mappings) {
        merged.emplace(fqn, std::move(path));
      }
    }
  }
  DCP_RETURN_IF_ERROR(ValidateGlobalMetadata(global.metadata));
  return global;
}

absl::StatusOr<SavePlan> DefaultSavePlanner::FinishPlan(SavePlan central_plan) {
  return central_plan;
}

absl::StatusOr<Value> DefaultSavePlanner::ResolveData(const WriteItem& item) {
  if (!set_up_) {
    return absl::FailedPreconditionError(
        "DefaultSavePlanner::ResolveData called before SetUp");
  }
  const std::string& fqn = item.index.fqn;
  auto found = positions_.find(fqn);
  if (found == positions_.end()) {
    return absl::NotFoundError(absl::StrCat("could not find ", Quoted(fqn),
                                            " in the state dict being saved"));
  }
  const Value& value = *items_[found->second].second;
  if (item.type == WriteItemType::kByteIo) {
    if (value.is_tensor_like()) {
      return absl::InvalidArgumentError(
          absl::StrCat(Quoted(fqn), " is a ", value.TypeName(),
                       " but the write item is for a non-tensor value"));
    }
    return value;
  }
  const std::optional<Shape>& offset = item.index.offset;
  if (const at::Tensor* tensor = value.get_if<at::Tensor>()) {
    if (offset.has_value() &&
        *offset != Shape(static_cast<size_t>(tensor->dim()), 0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          Quoted(fqn), " is not a sharded tensor; cannot find it by offset ",
          FormatShape(*offset)));
    }
    return value;
  }
  if (const ShardedTensor* sharded = value.get_if<ShardedTensor>()) {
    if (!offset.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat(
          Quoted(fqn), " is a sharded tensor; the write item has no offset"));
    }
    const std::vector<Shard>& shards = sharded->local_shards;
    if (item.index.index.has_value() && *item.index.index >= 0 &&
        static_cast<size_t>(*item.index.index) < shards.size() &&
        shards[*item.index.index].offsets == *offset) {
      return Value(shards[*item.index.index].tensor);
    }
    for (const Shard& shard : shards) {
      if (shard.offsets == *offset) return Value(shard.tensor);
    }
    return absl::NotFoundError(absl::StrCat("could not find a local shard of ",
                                            Quoted(fqn), " at offset ",
                                            FormatShape(*offset)));
  }
  return absl::InvalidArgumentError(
      absl::StrCat(Quoted(fqn), " is a ", value.TypeName(),
                   " but the write item is for a tensor"));
}

}  // namespace dcp
