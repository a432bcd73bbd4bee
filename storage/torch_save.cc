// torch.save files of nested state dicts. The tensor parts of data.pkl are
// the ones storage/torch_record.cc writes for single-tensor records, with
// one storage key per distinct storage; reading validates layouts and copies
// data through the record library's PlanBoxRead / MaterializeBox.

#include "storage/torch_save.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/metadata.h"
#include "core/state_dict.h"
#include "core/status.h"
#include "core/torch_status.h"
#include "storage/crc32.h"
#include "storage/file_system.h"
#include "storage/pickle.h"
#include "storage/posix_file_system.h"
#include "storage/torch_pickle.h"
#include "storage/torch_record.h"
#include "storage/zip.h"

namespace dcp {
namespace {

using Kind = PickleValue::Kind;
using u128 = unsigned __int128;
using torch_pickle_internal::DtypeSpec;
using torch_pickle_internal::FindDtype;
using torch_pickle_internal::FindDtypeByName;
using torch_pickle_internal::FindDtypeByStorageClass;
using torch_pickle_internal::WriteRebuildTensor;

constexpr absl::string_view kPrefix = "archive/";
constexpr absl::string_view kByteOrder = "little";
constexpr absl::string_view kVersion = "3\n";
// Reads of tensor data and CRC passes go in pieces of at most this size.
constexpr uint64_t kReadChunk = uint64_t{64} << 20;

// ---- dtypes -----------------------------------------------------------------

using torch_pickle_internal::ChildValuePath;
using torch_pickle_internal::KeyValuePath;

std::string IndexPath(const std::string& path, size_t i) {
  return ChildValuePath(path, absl::StrCat("[", i, "]"));
}

// ---- Writing ----------------------------------------------------------------

struct SavedStorage {
  at::Tensor owner;  // Keeps the memory alive.
  absl::string_view data;
  uint32_t crc32 = 0;
  std::string key;
};

struct SavedTensor {
  at::Tensor tensor;  // What is pickled: the input or a contiguous copy.
  const DtypeSpec* dtype = nullptr;
  size_t storage = 0;  // Index into the storages.
};

class SaveBuilder {
 public:
  // First pass: validates every value and prepares every tensor.
  absl::Status Prepare(const Value& value, const std::string& path);
  // Second pass: the pickle, consuming the prepared tensors in order.
  absl::StatusOr<std::string> Pickle(const StateDict& root);

  const std::vector<SavedStorage>& storages() const { return storages_; }

 private:
  absl::Status PrepareTensor(const at::Tensor& tensor, const std::string& path);
  void Emit(PickleWriter& w, const Value& value);
  void EmitTensor(PickleWriter& w);

  std::vector<SavedStorage> storages_;
  // Storages already saved, by identity and dtype (a storage viewed as two
  // dtypes is saved twice, as torch would refuse to share it).
  std::map<std::pair<const c10::StorageImpl*, c10::ScalarType>, size_t>
      storage_by_impl_;
  std::vector<SavedTensor> tensors_;
  size_t next_tensor_ = 0;
};

absl::Status SaveBuilder::Prepare(const Value& value,
                                  const std::string& path) {
  if (const auto* tensor = value.get_if<at::Tensor>()) {
    return PrepareTensor(*tensor, path);
  }
  if (value.is<ShardedTensor>()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot torch.save ", path,
        ": it is a sharded tensor (unshard it into one tensor first)"));
  }
  const List* items = value.get_if<List>();
  if (const auto* tuple = value.get_if<Tuple>()) items = &tuple->items;
  if (items != nullptr) {
    for (size_t i = 0; i < items->size(); ++i) {
      DCP_RETURN_IF_ERROR(Prepare((*items)[i], IndexPath(path, i)));
    }
  } else if (const auto* dict = value.get_if<StateDict>()) {
    for (const auto& [key, item] : dict->entries()) {
      DCP_RETURN_IF_ERROR(Prepare(item, KeyValuePath(path, key)));
    }
  }
  return absl::OkStatus();
}

absl::Status SaveBuilder::PrepareTensor(const at::Tensor& tensor,
                                        const std::string& path) {
  if (!tensor.defined()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot torch.save ", path, ": undefined tensor"));
  }
  if (tensor.layout() != c10::kStrided) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot torch.save ", path, ": layout ",
                     c10::str(tensor.layout()), " (only strided tensors)"));
  }
  const DtypeSpec* dtype = FindDtype(tensor.scalar_type());
  if (dtype == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot torch.save ", path, ": dtype ",
                     c10::toString(tensor.scalar_type())));
  }
  DCP_ASSIGN_OR_RETURN(
      at::Tensor saved,
      TorchCall(absl::StrCat("preparing ", path, " for torch.save"), [&] {
        c10::AutoGradMode no_grad(false);
        at::Tensor t = tensor.detach();
        if (t.is_conj()) t = t.resolve_conj();
        if (t.is_neg()) t = t.resolve_neg();
        if (!t.device().is_cpu()) t = t.to(at::kCPU);
        if (t.numel() == 0) return at::empty(t.sizes(), t.options());
        const uint64_t nbytes =
            static_cast<uint64_t>(t.numel()) * t.element_size();
        // Like torch 2.6's DCP writer: a storage holding exactly the
        // tensor's elements is saved as is; anything else is compacted.
        if (t.storage().nbytes() != nbytes ||
            !t.is_non_overlapping_and_dense()) {
          t = t.clone(at::MemoryFormat::Contiguous);
        }
        return t;
      }));
  const c10::StorageImpl* impl = saved.storage().unsafeGetStorageImpl();
  auto [it, inserted] = storage_by_impl_.emplace(
      std::make_pair(impl, saved.scalar_type()), storages_.size());
  if (inserted) {
    SavedStorage storage;
    storage.data = absl::string_view(
        static_cast<const char*>(saved.storage().data()),
        saved.storage().nbytes());
    storage.crc32 = Crc32(storage.data);
    storage.key = absl::StrCat(storages_.size());
    storage.owner = saved;
    storages_.push_back(std::move(storage));
  }
  tensors_.push_back({std::move(saved), dtype, it->second});
  return absl::OkStatus();
}

void SaveBuilder::EmitTensor(PickleWriter& w) {
  const SavedTensor& t = tensors_[next_tensor_++];
  const SavedStorage& storage = storages_[t.storage];
  const bool v3 = t.dtype->storage_class == nullptr;
  const int64_t item = t.tensor.element_size();
  const int64_t numel_field =
      v3 ? static_cast<int64_t>(storage.data.size())
         : static_cast<int64_t>(storage.data.size()) / item;
  WriteRebuildTensor(w, storage.key, *t.dtype, numel_field,
                     t.tensor.storage_offset(), t.tensor.sizes(),
                     t.tensor.strides());
}

void SaveBuilder::Emit(PickleWriter& w, const Value& value) {
  struct Visitor {
    SaveBuilder& self;
    PickleWriter& w;
    void operator()(None) const { w.WriteNone(); }
    void operator()(bool b) const { w.WriteBool(b); }
    void operator()(int64_t i) const { w.WriteInt(i); }
    void operator()(double d) const { w.WriteFloat(d); }
    void operator()(const std::string& s) const { w.WriteString(s); }
    void operator()(const Bytes& b) const {
      if (!b.data.empty()) {
        w.WriteBytes(b.data);
        return;
      }
      // `__builtin__.bytes()` (what WriteBytes emits for b"") is refused by
      // torch.load's weights-only unpickler; this is the same value.
      w.WriteGlobal("_codecs", "encode");
      w.WriteTuple(2, [&](size_t i) { w.WriteString(i == 0 ? "" : "latin1"); });
      w.EmitReduce();
    }
    void operator()(const at::Tensor&) const { self.EmitTensor(w); }
    // Rejected by Prepare.
    void operator()(const ShardedTensor&) const { w.WriteNone(); }
    void operator()(const List& list) const {
      w.WriteList(list.size(), [&](size_t i) { self.Emit(w, list[i]); });
    }
    void operator()(const Tuple& tuple) const {
      w.WriteTuple(tuple.items.size(),
                   [&](size_t i) { self.Emit(w, tuple.items[i]); });
    }
    void operator()(const StateDict& dict) const {
      const auto& entries = dict.entries();
      w.WriteDict(entries.size(), [&](size_t i) {
        w.WriteString(entries[i].first);
        self.Emit(w, entries[i].second);
      });
    }
  };
  std::visit(Visitor{*this, w}, value.variant());
}

absl::StatusOr<std::string> SaveBuilder::Pickle(const StateDict& root) {
  next_tensor_ = 0;
  PickleWriter w;
  const auto& entries = root.entries();
  w.WriteDict(entries.size(), [&](size_t i) {
    w.WriteString(entries[i].first);
    Emit(w, entries[i].second);
  });
  absl::StatusOr<std::string> pkl = std::move(w).Finish();
  if (!pkl.ok()) return Annotate(pkl.status(), "torch.save data.pkl");
  return pkl;
}

// Streams the whole archive of `state_dict` to `sink`.
absl::Status EmitTorchSave(
    const StateDict& state_dict,
    absl::FunctionRef<absl::Status(absl::string_view)> sink) {
  SaveBuilder builder;
  for (const auto& [key, value] : state_dict.entries()) {
    DCP_RETURN_IF_ERROR(builder.Prepare(value, KeyValuePath("obj", key)));
  }
  DCP_ASSIGN_OR_RETURN(std::string pkl, builder.Pickle(state_dict));

  // Storage entries in torch's order: keys sorted as strings.
  std::vector<const SavedStorage*> storages;
  uint64_t data_bytes = 0;
  uint32_t data_crc = 0;
  for (const SavedStorage& s : builder.storages()) {
    storages.push_back(&s);
    data_bytes += s.data.size();
    data_crc ^= s.crc32;
  }
  std::sort(storages.begin(), storages.end(),
            [](const SavedStorage* a, const SavedStorage* b) {
              return a->key < b->key;
            });
  const uint32_t pkl_crc = Crc32(pkl);
  const std::string id = absl::StrFormat(
      "%020u%020u", (uint64_t{pkl_crc} << 32) | data_crc, data_bytes);

  std::vector<ZipEntrySpec> specs;
  specs.push_back({absl::StrCat(kPrefix, "data.pkl"), pkl.size(), pkl_crc});
  specs.push_back({absl::StrCat(kPrefix, "byteorder"), kByteOrder.size(),
                   Crc32(kByteOrder)});
  for (const SavedStorage* s : storages) {
    specs.push_back(
        {absl::StrCat(kPrefix, "data/", s->key), s->data.size(), s->crc32});
  }
  specs.push_back(
      {absl::StrCat(kPrefix, "version"), kVersion.size(), Crc32(kVersion)});
  specs.push_back(
      {absl::StrCat(kPrefix, ".data/serialization_id"), id.size(), Crc32(id)});
  DCP_ASSIGN_OR_RETURN(ZipLayout layout, ZipLayout::Create(std::move(specs)));

  std::vector<absl::string_view> contents;
  contents.push_back(pkl);
  contents.push_back(kByteOrder);
  for (const SavedStorage* s : storages) contents.push_back(s->data);
  contents.push_back(kVersion);
  contents.push_back(id);
  for (size_t i = 0; i < layout.num_entries(); ++i) {
    DCP_RETURN_IF_ERROR(sink(layout.header(i)));
    if (!contents[i].empty()) DCP_RETURN_IF_ERROR(sink(contents[i]));
  }
  return sink(layout.trailer());
}

// ---- Reading ----------------------------------------------------------------

// Random access to the file's bytes.
class ByteReader {
 public:
  virtual ~ByteReader() = default;
  virtual uint64_t size() const = 0;
  // Exactly `length` bytes at `offset`, in `scratch` or in memory that
  // lives as long as the reader.
  virtual absl::StatusOr<absl::string_view> Read(uint64_t offset,
                                                 uint64_t length,
                                                 std::string& scratch) = 0;
};

class MemoryReader : public ByteReader {
 public:
  explicit MemoryReader(absl::string_view bytes) : bytes_(bytes) {}
  uint64_t size() const override { return bytes_.size(); }
  absl::StatusOr<absl::string_view> Read(uint64_t offset, uint64_t length,
                                         std::string&) override {
    if (offset > bytes_.size() || length > bytes_.size() - offset) {
      return absl::DataLossError(
          absl::StrCat("torch.save file: range [", offset, ", +", length,
                       ") is beyond its ", bytes_.size(), " bytes"));
    }
    return bytes_.substr(offset, length);
  }

 private:
  absl::string_view bytes_;
};

class FileReader : public ByteReader {
 public:
  explicit FileReader(std::unique_ptr<RandomAccessFile> file)
      : file_(std::move(file)) {}
  uint64_t size() const override { return file_->size(); }
  absl::StatusOr<absl::string_view> Read(uint64_t offset, uint64_t length,
                                         std::string& scratch) override {
    if (length > std::numeric_limits<size_t>::max()) {
      return absl::ResourceExhaustedError("read too large");
    }
    scratch.resize(length);
    DCP_RETURN_IF_ERROR(
        file_->ReadInto(offset, absl::Span<char>(scratch.data(), length)));
    return absl::string_view(scratch);
  }

 private:
  std::unique_ptr<RandomAccessFile> file_;
};

std::string Describe(const PickleValue& v) { return v.DebugString(120); }

absl::Status Unsupported(absl::string_view what, const std::string& path) {
  return absl::UnimplementedError(
      absl::StrCat("torch.save file: unsupported ", what, " at ", path));
}

absl::Status Malformed(const std::string& path, absl::string_view message) {
  return absl::DataLossError(
      absl::StrCat("torch.save file: ", path, ": ", message));
}

absl::StatusOr<int64_t> IntOf(const PickleValue& v, const std::string& path,
                              absl::string_view what) {
  if (v.kind() != Kind::kInt) {
    return Malformed(path, absl::StrCat(what, " is ", Describe(v),
                                        ", not an int"));
  }
  return v.int_value();
}

// A tuple of ints, or torch.Size((...)).
absl::StatusOr<Shape> ShapeOf(const PickleValue& v, const std::string& path,
                              absl::string_view what) {
  const PickleValue* tuple = &v;
  if (v.kind() == Kind::kObject && v.callable().IsGlobal("torch", "Size") &&
      v.args().kind() == Kind::kTuple && v.args().num_items() == 1) {
    tuple = &v.args().item(0);
  }
  if (tuple->kind() != Kind::kTuple) {
    return Malformed(path, absl::StrCat(what, " is ", Describe(v),
                                        ", not a tuple"));
  }
  Shape out;
  for (size_t i = 0; i < tuple->num_items(); ++i) {
    DCP_ASSIGN_OR_RETURN(int64_t x, IntOf(tuple->item(i), path, what));
    out.push_back(x);
  }
  return out;
}

// The bytes of a contiguous tensor of `sizes` (non-negative, as validated)
// and `dtype`, or the maximum if that does not fit in 64 bits.
uint64_t SaturatingNumelBytes(const Shape& sizes, c10::ScalarType dtype) {
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  uint64_t bytes = c10::elementSize(dtype);
  for (int64_t size : sizes) {
    if (size == 0) return 0;
  }
  for (int64_t size : sizes) {
    const uint64_t n = static_cast<uint64_t>(size);
    if (bytes > kMax / n) return kMax;
    bytes *= n;
  }
  return bytes;
}

class LoadBuilder {
 public:
  LoadBuilder(ByteReader& reader, const ZipDirectory& dir,
              const TorchSaveReadOptions& options)
      : reader_(reader),
        dir_(dir),
        options_(options),
        budget_(reader.size(), options.decode_limits, "torch.save file") {}

  absl::StatusOr<Value> Convert(const PickleValue& v, const std::string& path);

 private:
  absl::StatusOr<Value> ConvertDict(const PickleValue& dict,
                                    const std::string& path);
  absl::StatusOr<at::Tensor> ConvertTensor(const PickleValue& v,
                                           const std::string& path);
  absl::Status VerifyStorage(const ZipEntry& entry, const std::string& path);
  // Charges what a conversion creates: a memoized value (a string, a
  // tensor) referenced many times is copied at each reference.
  absl::Status Charge(uint64_t bytes, const std::string& path) {
    absl::Status status = budget_.Charge(bytes);
    if (status.ok()) return status;
    return Annotate(status, absl::StrCat("torch.save file: ", path));
  }

  ByteReader& reader_;
  const ZipDirectory& dir_;
  const TorchSaveReadOptions& options_;
  DecodeBudget budget_;
  std::map<std::string, bool> verified_;  // Storage entries checked.
};

absl::StatusOr<Value> LoadBuilder::ConvertDict(const PickleValue& dict,
                                               const std::string& path) {
  StateDict out;
  std::map<std::string, bool> key_is_int;
  for (size_t i = 0; i < dict.num_entries(); ++i) {
    const PickleValue& k = dict.key(i);
    std::string key;
    bool is_int = false;
    if (k.kind() == Kind::kString) {
      // The key is copied into the dict and into `key_is_int`.
      DCP_RETURN_IF_ERROR(Charge(
          2 * (sizeof(StateDict::Entry) + k.string_value().size()), path));
      key = k.string_value();
    } else if (k.kind() == Kind::kInt) {
      DCP_RETURN_IF_ERROR(Charge(2 * sizeof(StateDict::Entry), path));
      key = absl::StrCat(k.int_value());
      is_int = true;
    } else {
      return Unsupported(absl::StrCat("dict key ", Describe(k)), path);
    }
    auto [it, inserted] = key_is_int.emplace(key, is_int);
    if (!inserted && it->second != is_int) {
      // `key` is the decimal string of an int here, so it is short.
      return absl::UnimplementedError(
          absl::StrCat("torch.save file: dict at ", path, " has both the int "
                       "key ", key, " and the str key \"", key, "\""));
    }
    const std::string item_path = KeyValuePath(path, key, is_int);
    DCP_ASSIGN_OR_RETURN(Value item, Convert(dict.value(i), item_path));
    out.Set(std::move(key), std::move(item));  // Python: last value wins.
  }
  return Value(std::move(out));
}

absl::Status LoadBuilder::VerifyStorage(const ZipEntry& entry,
                                        const std::string& path) {
  if (!options_.verify_crc || verified_[entry.name]) return absl::OkStatus();
  uint32_t crc = 0;
  std::string scratch;
  for (uint64_t done = 0; done < entry.size;) {
    const uint64_t n = std::min(kReadChunk, entry.size - done);
    DCP_ASSIGN_OR_RETURN(absl::string_view piece,
                         reader_.Read(entry.data_offset + done, n, scratch));
    crc = Crc32(piece, crc);
    done += n;
  }
  if (crc != entry.crc32) {
    return absl::DataLossError(absl::StrFormat(
        "torch.save file: %s: CRC-32 mismatch in %s (0x%08x, directory says "
        "0x%08x)",
        path, entry.name, crc, entry.crc32));
  }
  verified_[entry.name] = true;
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> LoadBuilder::ConvertTensor(
    const PickleValue& v, const std::string& path) {
  const PickleValue& callable = v.callable();
  const bool v3 = callable.name() == "_rebuild_tensor_v3";
  if (v.has_state() || v.has_kwargs()) {
    return Unsupported("tensor with Python state", path);
  }
  const PickleValue& args = v.args();
  const size_t base = v3 ? 7 : 6;
  if (args.kind() != Kind::kTuple ||
      (args.num_items() != base && args.num_items() != base + 1)) {
    return Malformed(path, absl::StrCat(callable.name(), " arguments ",
                                        Describe(args)));
  }
  if (args.num_items() == base + 1) {
    const PickleValue& metadata = args.item(base);
    if (!metadata.is_none() &&
        !(metadata.kind() == Kind::kDict && metadata.num_entries() == 0)) {
      return Unsupported(
          absl::StrCat("tensor metadata ", Describe(metadata)), path);
    }
  }
  const PickleValue& pid_value = args.item(0);
  if (pid_value.kind() != Kind::kPersistentId) {
    return Malformed(path, absl::StrCat("storage argument ",
                                        Describe(pid_value),
                                        " is not a persistent id"));
  }
  const PickleValue& pid = pid_value.persistent_id();
  if (pid.kind() != Kind::kTuple || pid.num_items() != 5 ||
      pid.item(0).kind() != Kind::kString ||
      pid.item(0).string_value() != "storage" ||
      pid.item(1).kind() != Kind::kGlobal ||
      pid.item(2).kind() != Kind::kString) {
    return Malformed(path, absl::StrCat("persistent id ", Describe(pid),
                                        " is not ('storage', type, key, "
                                        "location, numel)"));
  }
  const PickleValue& type = pid.item(1);
  const std::string& key = pid.item(2).string_value();
  DCP_ASSIGN_OR_RETURN(int64_t numel, IntOf(pid.item(4), path, "storage numel"));
  bool untyped = false;
  c10::ScalarType dtype = c10::ScalarType::Undefined;
  if ((type.module() == "torch.storage" || type.module() == "torch") &&
      type.name() == "UntypedStorage") {
    untyped = true;
  } else if (type.module() == "torch") {
    if (const DtypeSpec* d = FindDtypeByStorageClass(type.name())) {
      dtype = d->type;
    }
    if (dtype == c10::ScalarType::Undefined) {
      return Unsupported(absl::StrCat("storage type torch.", type.name()),
                         path);
    }
  } else {
    return Unsupported(
        absl::StrCat("storage type ", type.module(), ".", type.name()), path);
  }
  if (v3) {
    const PickleValue& d = args.item(6);
    if (d.kind() != Kind::kGlobal || d.module() != "torch") {
      return Malformed(path, absl::StrCat("dtype ", Describe(d)));
    }
    const DtypeSpec* named = FindDtypeByName(d.name());
    if (named == nullptr) {
      return Unsupported(absl::StrCat("dtype torch.", d.name()), path);
    }
    if (!untyped && dtype != named->type) {
      return Malformed(path, absl::StrCat("typed storage of ",
                                          c10::toString(dtype),
                                          " with dtype torch.", d.name()));
    }
    dtype = named->type;
  } else if (untyped) {
    return Malformed(path,
                     "_rebuild_tensor_v2 with an UntypedStorage has no dtype");
  }

  TensorRecordInfo info;
  info.dtype = dtype;
  DCP_ASSIGN_OR_RETURN(info.storage_offset,
                       IntOf(args.item(1), path, "storage offset"));
  DCP_ASSIGN_OR_RETURN(info.sizes, ShapeOf(args.item(2), path, "size"));
  DCP_ASSIGN_OR_RETURN(info.strides, ShapeOf(args.item(3), path, "stride"));
  info.storage_key = key;
  if (pid.item(3).kind() == Kind::kString) {
    info.location = pid.item(3).string_value();
  }
  const ZipEntry* entry = dir_.Find(absl::StrCat("data/", key));
  if (entry == nullptr) {
    return Malformed(path, absl::StrCat("storage \"", absl::CEscape(key),
                                        "\" has no ", dir_.prefix, "data/",
                                        absl::CEscape(key), " entry"));
  }
  const uint64_t item = c10::elementSize(dtype);
  const bool size_ok =
      numel >= 0 &&
      (untyped ? static_cast<uint64_t>(numel) == entry->size
               : entry->size % item == 0 &&
                     static_cast<uint64_t>(numel) == entry->size / item);
  if (!size_ok) {
    return Malformed(path, absl::StrCat("storage \"", absl::CEscape(key),
                                        "\" claims ", numel,
                                        untyped ? " bytes" : " elements",
                                        " but its entry holds ", entry->size,
                                        " bytes"));
  }
  info.storage = *entry;

  // The whole tensor as one range (gaps included); validates the layout.
  BoxReadOptions whole;
  whole.max_gap_bytes = std::numeric_limits<uint64_t>::max();
  whole.max_ranges = 1;
  absl::StatusOr<BoxReadPlan> plan =
      PlanBoxRead(info, Shape(info.sizes.size(), 0), info.sizes, whole);
  if (!plan.ok()) return Annotate(plan.status(), path);
  // Each reference to a (memoized) tensor becomes its own tensor, and an
  // expanded view (stride 0) becomes a full one: count what is allocated,
  // the packed bytes read and the contiguous result.
  const uint64_t result_bytes = SaturatingNumelBytes(info.sizes, dtype);
  DCP_RETURN_IF_ERROR(Charge(plan->packed_size, path));
  DCP_RETURN_IF_ERROR(Charge(result_bytes, path));
  DCP_RETURN_IF_ERROR(VerifyStorage(*entry, path));
  std::string scratch;
  absl::string_view packed;
  if (!plan->ranges.empty()) {
    DCP_ASSIGN_OR_RETURN(packed, reader_.Read(plan->ranges[0].offset,
                                              plan->ranges[0].length, scratch));
  }
  absl::StatusOr<at::Tensor> tensor = MaterializeBox(*plan, packed);
  if (!tensor.ok()) return Annotate(tensor.status(), path);
  return tensor;
}

absl::StatusOr<Value> LoadBuilder::Convert(const PickleValue& v,
                                           const std::string& path) {
  DCP_RETURN_IF_ERROR(Charge(sizeof(Value), path));
  switch (v.kind()) {
    case Kind::kNone:
      return Value(None{});
    case Kind::kBool:
      return Value(v.bool_value());
    case Kind::kInt:
      return Value(v.int_value());
    case Kind::kBigInt:
      return Unsupported("int (outside the int64 range)", path);
    case Kind::kFloat:
      return Value(v.float_value());
    case Kind::kString:
      DCP_RETURN_IF_ERROR(Charge(v.string_value().size(), path));
      return Value(v.string_value());
    case Kind::kBytes:
      DCP_RETURN_IF_ERROR(Charge(v.string_value().size(), path));
      return Value(Bytes{v.string_value()});
    case Kind::kTuple:
    case Kind::kList: {
      List list;
      list.reserve(v.num_items());
      for (size_t i = 0; i < v.num_items(); ++i) {
        DCP_ASSIGN_OR_RETURN(Value item,
                             Convert(v.item(i), IndexPath(path, i)));
        list.push_back(std::move(item));
      }
      if (v.kind() == Kind::kTuple) return Value(Tuple{std::move(list)});
      return Value(std::move(list));
    }
    case Kind::kDict:
      return ConvertDict(v, path);
    case Kind::kSet:
      return Unsupported("set", path);
    case Kind::kFrozenSet:
      return Unsupported("frozenset", path);
    case Kind::kGlobal:
      return Unsupported(
          absl::StrCat("reference to ", v.module(), ".", v.name()), path);
    case Kind::kPersistentId:
      return Unsupported("bare storage", path);
    case Kind::kObject:
      break;
  }
  const PickleValue& callable = v.callable();
  if (callable.kind() != Kind::kGlobal) {
    return Unsupported(absl::StrCat("object ", Describe(v)), path);
  }
  const bool reduce = v.construction() == PickleValue::Construction::kReduce;
  if (callable.IsGlobal("collections", "OrderedDict") && reduce &&
      v.args().kind() == Kind::kTuple && v.args().num_items() == 0 &&
      v.appended().num_items() == 0) {
    // torch.save of a module's state_dict() also sets `_metadata` on the
    // OrderedDict (BUILD with a state); it only matters to
    // load_state_dict and is dropped.
    return ConvertDict(v.set_items(), path);
  }
  if (reduce && (callable.IsGlobal("torch._utils", "_rebuild_tensor_v2") ||
                 callable.IsGlobal("torch._utils", "_rebuild_tensor_v3"))) {
    DCP_ASSIGN_OR_RETURN(at::Tensor t, ConvertTensor(v, path));
    return Value(std::move(t));
  }
  if (reduce && (callable.IsGlobal("torch._utils", "_rebuild_parameter") ||
                 callable.IsGlobal("torch._utils",
                                   "_rebuild_parameter_with_state"))) {
    // (data, requires_grad, backward_hooks[, state]): the tensor is `data`.
    if (v.args().kind() != Kind::kTuple || v.args().num_items() < 1) {
      return Malformed(path, absl::StrCat(callable.name(), " arguments ",
                                          Describe(v.args())));
    }
    DCP_ASSIGN_OR_RETURN(Value data, Convert(v.args().item(0), path));
    if (!data.is<at::Tensor>()) {
      return Malformed(path, "nn.Parameter whose data is not a tensor");
    }
    return data;
  }
  const std::string name = absl::StrCat(callable.module(), ".", callable.name());
  if (absl::string_view(callable.module()).substr(0, 5) == "torch" &&
      absl::string_view(callable.name()).substr(0, 8) == "_rebuild") {
    absl::string_view hint = "";
    if (callable.name() == "_rebuild_qtensor") {
      hint = " (quantized tensor)";
    } else if (absl::string_view(callable.name()).find("sparse") !=
               absl::string_view::npos) {
      hint = " (sparse tensor)";
    } else if (callable.name() == "_rebuild_from_type_v2" ||
               callable.name() == "_rebuild_wrapper_subclass") {
      hint = " (tensor subclass)";
    }
    return Unsupported(absl::StrCat("tensor kind ", name, hint), path);
  }
  return Unsupported(absl::StrCat("Python object ", name), path);
}

absl::StatusOr<Value> ParseFrom(ByteReader& reader,
                                const TorchSaveReadOptions& options) {
  std::string magic_scratch;
  if (reader.size() >= 2) {
    DCP_ASSIGN_OR_RETURN(absl::string_view magic,
                         reader.Read(0, 2, magic_scratch));
    if (magic != "PK") {
      if (magic[0] == '\x80') {
        return absl::UnimplementedError(
            "torch.save file: legacy (pre-1.6, non-zip) format is not "
            "supported; re-save it with a current torch.save");
      }
      return absl::DataLossError(
          "torch.save file: not a zip archive (no PK signature)");
    }
  }
  ZipByteSource source(reader.size(), [&reader](uint64_t off, uint64_t len)
                                          -> absl::StatusOr<std::string> {
    std::string scratch;
    DCP_ASSIGN_OR_RETURN(absl::string_view bytes,
                         reader.Read(off, len, scratch));
    return std::string(bytes);
  });
  absl::StatusOr<ZipDirectory> dir = ReadZipDirectory(source);
  if (!dir.ok()) return Annotate(dir.status(), "torch.save file");

  const ZipEntry* version = dir->Find("version");
  if (version == nullptr) {
    return absl::DataLossError(absl::StrCat(
        "torch.save file has no ", dir->prefix, "version entry"));
  }
  if (const ZipEntry* order = dir->Find("byteorder")) {
    if (order->size > 16) {
      return absl::DataLossError("torch.save file: byteorder entry too long");
    }
    DCP_ASSIGN_OR_RETURN(absl::string_view value,
                         source.Read(order->data_offset, order->size));
    if (value == "big") {
      return absl::UnimplementedError(
          "torch.save file: big-endian files are not supported");
    }
    if (value != kByteOrder) {
      return absl::DataLossError(absl::StrCat(
          "torch.save file: byteorder \"", absl::CEscape(value), "\""));
    }
  }
  const ZipEntry* pkl = dir->Find("data.pkl");
  if (pkl == nullptr) {
    return absl::DataLossError(
        absl::StrCat("torch.save file has no ", dir->prefix, "data.pkl"));
  }
  std::string pkl_scratch;
  DCP_ASSIGN_OR_RETURN(absl::string_view pkl_bytes,
                       reader.Read(pkl->data_offset, pkl->size, pkl_scratch));
  PickleReadOptions pickle_options =
      options.decode_limits.PickleOptions(pkl_bytes.size());
  // Nothing is ever called; Convert decides what is acceptable so that its
  // errors can name what was found.
  pickle_options.allow_global = [](absl::string_view, absl::string_view) {
    return true;
  };
  pickle_options.allow_persistent_ids = true;
  absl::StatusOr<PickleValue> root = ReadPickle(pkl_bytes, pickle_options);
  if (absl::IsResourceExhausted(root.status())) {
    return Annotate(root.status(), "torch.save file: data.pkl");
  }
  if (!root.ok()) {
    return absl::DataLossError(absl::StrCat("torch.save file: data.pkl: ",
                                            root.status().message()));
  }
  LoadBuilder builder(reader, *dir, options);
  return builder.Convert(*root, "obj");
}

absl::StatusOr<StateDict> RequireDict(absl::StatusOr<Value> value) {
  if (!value.ok()) return value.status();
  if (StateDict* dict = value->get_if<StateDict>()) return std::move(*dict);
  return absl::InvalidArgumentError(
      absl::StrCat("torch.save file holds a ", value->TypeName(),
                   " at the top level; a state dict must be a dict"));
}

}  // namespace

absl::Status WriteTorchSave(const StateDict& state_dict, FileSystem& fs,
                            absl::string_view path,
                            const TorchSaveWriteOptions& options) {
  const std::string tmp = absl::StrCat(path, ".tmp");
  DCP_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file,
                       fs.NewWritableFile(tmp));
  absl::Status status = EmitTorchSave(
      state_dict, [&](absl::string_view piece) { return file->Append(piece); });
  if (status.ok() && options.sync) status = file->Sync();
  absl::Status closed = file->Close();
  if (status.ok()) status = closed;
  if (status.ok()) status = fs.Rename(tmp, path);
  if (!status.ok()) {
    fs.RemoveFile(tmp).IgnoreError();  // Best effort; it may not exist.
    return Annotate(status, absl::StrCat("writing torch.save file ", path));
  }
  if (options.sync) {
    std::string dir = Dirname(path);
    if (dir.empty()) dir = ".";
    DCP_RETURN_IF_ERROR(fs.SyncDir(dir));
  }
  return absl::OkStatus();
}

absl::Status WriteTorchSave(const StateDict& state_dict,
                            absl::string_view path,
                            const TorchSaveWriteOptions& options) {
  PosixFileSystem fs;
  return WriteTorchSave(state_dict, fs, path, options);
}

absl::StatusOr<std::string> SerializeTorchSave(const StateDict& state_dict) {
  std::string out;
  DCP_RETURN_IF_ERROR(EmitTorchSave(state_dict, [&](absl::string_view piece) {
    out.append(piece.data(), piece.size());
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<Value> ReadTorchSaveValue(FileSystem& fs,
                                         absl::string_view path,
                                         const TorchSaveReadOptions& options) {
  DCP_ASSIGN_OR_RETURN(std::unique_ptr<RandomAccessFile> file,
                       fs.NewRandomAccessFile(path));
  FileReader reader(std::move(file));
  absl::StatusOr<Value> value = ParseFrom(reader, options);
  if (!value.ok()) return Annotate(value.status(), path);
  return value;
}

absl::StatusOr<Value> ParseTorchSaveValue(absl::string_view bytes,
                                          const TorchSaveReadOptions& options) {
  MemoryReader reader(bytes);
  return ParseFrom(reader, options);
}

absl::StatusOr<StateDict> ReadTorchSave(FileSystem& fs, absl::string_view path,
                                        const TorchSaveReadOptions& options) {
  absl::StatusOr<StateDict> dict =
      RequireDict(ReadTorchSaveValue(fs, path, options));
  if (!dict.ok() && absl::IsInvalidArgument(dict.status())) {
    return Annotate(dict.status(), path);
  }
  return dict;
}

absl::StatusOr<StateDict> ReadTorchSave(absl::string_view path,
                                        const TorchSaveReadOptions& options) {
  PosixFileSystem fs;
  return ReadTorchSave(fs, path, options);
}

absl::StatusOr<StateDict> ParseTorchSave(absl::string_view bytes,
                                         const TorchSaveReadOptions& options) {
  return RequireDict(ParseTorchSaveValue(bytes, options));
}

}  // namespace dcp
