// The data.pkl of a tensor record, as written here (protocol 2, no memo;
// torch 2.6 writes the same opcodes plus BINPUT memo entries):
//
//   PROTO 2
//   GLOBAL 'torch._utils _rebuild_tensor_v2'
//   MARK
//     MARK 'storage' GLOBAL 'torch FloatStorage' '0' 'cpu' <numel> TUPLE
//     BINPERSID
//     <storage_offset> <size tuple> <stride tuple> NEWFALSE
//     GLOBAL 'collections OrderedDict' EMPTY_TUPLE REDUCE
//   TUPLE REDUCE STOP
//
// Dtypes without a legacy storage class (complex32 in libtorch 1.13) use
// `_rebuild_tensor_v3`, `torch.storage UntypedStorage` with the storage size
// in bytes, and a trailing dtype global (`torch complex32`).

#include "storage/torch_record.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "core/metadata.h"
#include "core/state_dict.h"
#include "core/status.h"
#include "core/tensor_copy.h"
#include "core/torch_status.h"
#include "storage/crc32.h"
#include "storage/pickle.h"
#include "storage/torch_pickle.h"
#include "storage/value_pickle.h"
#include "storage/zip.h"

namespace dcp {
namespace {

using Kind = PickleValue::Kind;
using torch_pickle_internal::DtypeSpec;
using torch_pickle_internal::FindDtype;
using torch_pickle_internal::IsRebuildTensor;
using torch_pickle_internal::kMaxTensorDims;
using torch_pickle_internal::ParseRebuildTensor;
using torch_pickle_internal::PickledTensor;
using torch_pickle_internal::UnpickleTorchData;
using torch_pickle_internal::WriteRebuildTensor;

constexpr absl::string_view kPrefix = "archive/";
constexpr absl::string_view kByteOrder = "little";
constexpr absl::string_view kVersion = "3\n";
constexpr absl::string_view kStorageKey = "0";

// ---- Writing ----------------------------------------------------------------

std::string SerializationId(uint32_t pkl_crc, uint32_t data_crc,
                            uint64_t data_size) {
  const uint64_t combined = (uint64_t{pkl_crc} << 32) | data_crc;
  return absl::StrFormat("%020u%020u", combined, data_size);
}

// The record's bytes around the (optional) storage data: `prefix` ends where
// data/0's data starts and `suffix` follows it.
struct RecordPieces {
  std::string prefix;
  std::string suffix;
};

struct StorageData {
  uint64_t size = 0;
  uint32_t crc32 = 0;
};

absl::StatusOr<RecordPieces> LayOutRecord(
    absl::string_view pkl, const std::optional<StorageData>& storage) {
  const uint32_t pkl_crc = Crc32(pkl);
  const std::string id = SerializationId(pkl_crc, storage ? storage->crc32 : 0,
                                         storage ? storage->size : 0);
  std::vector<ZipEntrySpec> specs;
  specs.push_back({absl::StrCat(kPrefix, "data.pkl"), pkl.size(), pkl_crc});
  specs.push_back({absl::StrCat(kPrefix, "byteorder"), kByteOrder.size(),
                   Crc32(kByteOrder)});
  if (storage) {
    specs.push_back({absl::StrCat(kPrefix, "data/", kStorageKey), storage->size,
                     storage->crc32});
  }
  specs.push_back(
      {absl::StrCat(kPrefix, "version"), kVersion.size(), Crc32(kVersion)});
  specs.push_back(
      {absl::StrCat(kPrefix, ".data/serialization_id"), id.size(), Crc32(id)});
  DCP_ASSIGN_OR_RETURN(ZipLayout layout, ZipLayout::Create(std::move(specs)));

  RecordPieces pieces;
  size_t i = 0;
  absl::StrAppend(&pieces.prefix, layout.header(i++), pkl);
  absl::StrAppend(&pieces.prefix, layout.header(i++), kByteOrder);
  std::string* out = &pieces.prefix;
  if (storage) {
    absl::StrAppend(&pieces.prefix, layout.header(i++));
    out = &pieces.suffix;
  }
  absl::StrAppend(out, layout.header(i++), kVersion);
  absl::StrAppend(out, layout.header(i++), id, layout.trailer());
  return pieces;
}

absl::StatusOr<std::string> TensorPickle(const DtypeSpec& dtype,
                                         int64_t storage_numel,
                                         int64_t storage_offset,
                                         const std::vector<int64_t>& sizes,
                                         const std::vector<int64_t>& strides) {
  PickleWriter w;
  WriteRebuildTensor(w, kStorageKey, dtype, storage_numel, storage_offset,
                     sizes, strides);
  return std::move(w).Finish();
}

// ---- Reading: layout validation ---------------------------------------------

using u128 = unsigned __int128;

absl::Status RecordError(absl::string_view message) {
  return absl::DataLossError(absl::StrCat("tensor record: ", message));
}

// Checks sizes, strides and offset against a storage of `storage_bytes`.
absl::Status ValidateLayout(c10::ScalarType dtype, const Shape& sizes,
                            const Shape& strides, int64_t storage_offset,
                            uint64_t storage_bytes) {
  if (FindDtype(dtype) == nullptr) {
    return RecordError(
        absl::StrCat("unsupported dtype ", c10::toString(dtype)));
  }
  const uint64_t item = c10::elementSize(dtype);
  if (sizes.size() != strides.size() || sizes.size() > kMaxTensorDims) {
    return RecordError(
        absl::StrCat(sizes.size(), " sizes and ", strides.size(), " strides"));
  }
  if (storage_offset < 0) {
    return RecordError(
        absl::StrCat("negative storage offset ", storage_offset));
  }
  if (storage_bytes % item != 0) {
    return RecordError(absl::StrCat("storage of ", storage_bytes,
                                    " bytes is not a whole number of ", item,
                                    "-byte elements"));
  }
  const uint64_t storage_elements = storage_bytes / item;
  bool empty = false;
  u128 last = static_cast<uint64_t>(storage_offset);
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] < 0 || strides[d] < 0) {
      return RecordError(absl::StrCat("negative size or stride in dimension ",
                                      d, ": size [", absl::StrJoin(sizes, ", "),
                                      "], stride [",
                                      absl::StrJoin(strides, ", "), "]"));
    }
    if (sizes[d] == 0) empty = true;
    // Each term is below 2^126; their sum over <= 1024 dims fits in 128 bits.
    if (sizes[d] > 0) {
      last +=
          static_cast<u128>(sizes[d] - 1) * static_cast<uint64_t>(strides[d]);
    }
  }
  if (empty ? static_cast<u128>(storage_offset) > storage_elements
            : last >= storage_elements) {
    return RecordError(absl::StrCat(
        "size [", absl::StrJoin(sizes, ", "), "], stride [",
        absl::StrJoin(strides, ", "), "] and offset ", storage_offset,
        " reach beyond the storage of ", storage_elements, " elements"));
  }
  return absl::OkStatus();
}

// Checks that the tensor has no more elements than its storage of
// `storage_bytes` (after ValidateLayout). DCP writers save a tensor whose
// storage holds exactly its elements and clone any other (expanded tensors
// included); older writers saved whole storages, which hold more. So in a
// DCP record more elements than storage can only come from zero or
// overlapping strides, and would make reading materialise more bytes than
// the record holds: a 4-byte storage could demand gigabytes.
absl::Status CheckNotExpanded(c10::ScalarType dtype, const Shape& sizes,
                              const Shape& strides, uint64_t storage_bytes) {
  const uint64_t storage_elements = storage_bytes / c10::elementSize(dtype);
  u128 numel = 1;
  for (int64_t size : sizes) {
    if (size == 0) return absl::OkStatus();
  }
  for (int64_t size : sizes) {
    numel *= static_cast<uint64_t>(size);
    if (numel > storage_elements) {
      return RecordError(absl::StrCat(
          "size [", absl::StrJoin(sizes, ", "), "] with stride [",
          absl::StrJoin(strides, ", "), "] has more elements than its storage "
          "of ", storage_elements, " (zero or overlapping strides: an expanded "
          "tensor, which DCP writers never save)"));
    }
  }
  return absl::OkStatus();
}

// ---- Reading: data.pkl ------------------------------------------------------

std::string Describe(const PickleValue& v) { return v.DebugString(120); }

absl::Status UnsupportedRebuild(const PickleValue& callable) {
  const std::string& name = callable.name();
  absl::string_view what = "";
  if (name == "_rebuild_qtensor") {
    what = " (quantized tensors are not supported)";
  } else if (absl::string_view(name).find("sparse") !=
             absl::string_view::npos) {
    what = " (sparse tensors are not supported)";
  } else if (name == "_rebuild_from_type_v2" ||
             name == "_rebuild_wrapper_subclass") {
    what = " (tensor subclasses are not supported)";
  } else if (absl::string_view(name).find("parameter") !=
             absl::string_view::npos) {
    what = " (DCP saves plain tensors, not nn.Parameter)";
  }
  return absl::UnimplementedError(
      absl::StrCat("tensor record: unsupported rebuild function ",
                   callable.module(), ".", name, what));
}

absl::StatusOr<PickledTensor> ParseTensorPickle(const PickleValue& root) {
  if (root.kind() != Kind::kObject ||
      root.construction() != PickleValue::Construction::kReduce ||
      root.callable().kind() != Kind::kGlobal) {
    return RecordError(
        absl::StrCat("data.pkl holds ", Describe(root), ", not a tensor"));
  }
  const PickleValue& callable = root.callable();
  if (!IsRebuildTensor(callable)) {
    if (absl::string_view(callable.name()).substr(0, 9) == "_rebuild_" &&
        absl::string_view(callable.module()).substr(0, 5) == "torch") {
      return UnsupportedRebuild(callable);
    }
    return RecordError(
        absl::StrCat("data.pkl holds ", Describe(root), ", not a tensor"));
  }
  absl::StatusOr<PickledTensor> tensor = ParseRebuildTensor(root);
  if (!tensor.ok()) return Annotate(tensor.status(), "tensor record: data.pkl");
  return tensor;
}

absl::Status CheckVersionAndByteOrder(ZipByteSource& source,
                                      const ZipDirectory& dir) {
  const ZipEntry* version = dir.Find("version");
  if (version == nullptr) {
    return absl::DataLossError(
        absl::StrCat("torch.save record has no ", dir.prefix,
                     "version entry (torch.load requires it)"));
  }
  if (version->size == 0 || version->size > 32) {
    return absl::DataLossError(
        absl::StrCat("torch.save record: version entry "
                     "of ",
                     version->size, " bytes"));
  }
  DCP_ASSIGN_OR_RETURN(absl::string_view text,
                       source.Read(version->data_offset, version->size));
  absl::string_view digits = text;
  if (!digits.empty() && digits.back() == '\n') digits.remove_suffix(1);
  if (digits.empty() || !std::all_of(digits.begin(), digits.end(), [](char c) {
        return c >= '0' && c <= '9';
      })) {
    return absl::DataLossError(absl::StrCat("torch.save record: version \"",
                                            absl::CEscape(text),
                                            "\" is not a number"));
  }
  if (const ZipEntry* order = dir.Find("byteorder")) {
    if (order->size > 16) {
      return absl::DataLossError("torch.save record: byteorder entry too long");
    }
    DCP_ASSIGN_OR_RETURN(absl::string_view value,
                         source.Read(order->data_offset, order->size));
    if (value == "big") {
      return absl::UnimplementedError(
          "torch.save record: big-endian records are not supported");
    }
    if (value != kByteOrder) {
      return absl::DataLossError(absl::StrCat("torch.save record: byteorder \"",
                                              absl::CEscape(value), "\""));
    }
  }
  return absl::OkStatus();
}

// The bytes of the record's data.pkl, valid as long as `source`.
absl::StatusOr<absl::string_view> ReadRecordPickleBytes(
    ZipByteSource& source, const ZipDirectory& dir) {
  const ZipEntry* pkl = dir.Find("data.pkl");
  if (pkl == nullptr) {
    return absl::DataLossError(
        absl::StrCat("torch.save record has no ", dir.prefix, "data.pkl"));
  }
  return source.Read(pkl->data_offset, pkl->size);
}

// Unpickles a record's data.pkl `bytes`.
absl::StatusOr<PickleValue> UnpickleRecord(absl::string_view bytes,
                                           const DecodeLimits& limits = {}) {
  return UnpickleTorchData(bytes, limits, "torch.save record");
}

absl::StatusOr<PickleValue> ReadRecordPickle(ZipByteSource& source,
                                             const ZipDirectory& dir,
                                             const DecodeLimits& limits = {}) {
  DCP_ASSIGN_OR_RETURN(absl::string_view bytes,
                       ReadRecordPickleBytes(source, dir));
  return UnpickleRecord(bytes, limits);
}

// ---- Reading: boxes ---------------------------------------------------------

Shape ContiguousStrides(const Shape& sizes) {
  Shape strides(sizes.size());
  int64_t s = 1;
  for (size_t d = sizes.size(); d-- > 0;) {
    strides[d] = s;
    s *= std::max<int64_t>(sizes[d], 1);
  }
  return strides;
}

}  // namespace

// ---- Tensor records: writing ------------------------------------------------

namespace {

// What a tensor's record holds apart from the zip structure: the tensor
// whose storage is saved (the input or a contiguous copy), its storage
// bytes (in that tensor's memory) and data.pkl.
struct PreparedTensor {
  at::Tensor saved;
  absl::string_view data;
  std::string pkl;
};

absl::StatusOr<PreparedTensor> PrepareTensor(const at::Tensor& tensor) {
  if (!tensor.defined()) {
    return absl::InvalidArgumentError("cannot save an undefined tensor");
  }
  if (tensor.layout() != c10::kStrided) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot save a tensor with layout ",
                     c10::str(tensor.layout()), " (only strided tensors)"));
  }
  const DtypeSpec* dtype = FindDtype(tensor.scalar_type());
  if (dtype == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot save a tensor of dtype ", c10::toString(tensor.scalar_type())));
  }
  DCP_ASSIGN_OR_RETURN(
      at::Tensor saved, TorchCall("preparing a tensor for saving", [&] {
        c10::AutoGradMode no_grad(false);
        at::Tensor t = tensor;
        if (t.is_conj()) t = t.resolve_conj();
        if (t.is_neg()) t = t.resolve_neg();
        if (!t.device().is_cpu()) t = t.to(at::kCPU);
        const uint64_t nbytes =
            static_cast<uint64_t>(t.numel()) * t.element_size();
        // torch 2.6 (FileSystemWriter) saves a tensor whose storage holds
        // exactly its elements as is, strides included; others are cloned.
        if (t.storage().nbytes() != nbytes ||
            !t.is_non_overlapping_and_dense()) {
          t = t.clone(at::MemoryFormat::Contiguous);
        }
        return t;
      }));
  const c10::Storage& storage = saved.storage();
  const uint64_t nbytes = storage.nbytes();
  const int64_t item = saved.element_size();
  PreparedTensor prepared;
  prepared.data =
      absl::string_view(static_cast<const char*>(storage.data()), nbytes);
  const int64_t numel_field = dtype->storage_class == nullptr
                                  ? static_cast<int64_t>(nbytes)
                                  : static_cast<int64_t>(nbytes / item);
  DCP_ASSIGN_OR_RETURN(
      prepared.pkl,
      TensorPickle(*dtype, numel_field, saved.storage_offset(),
                   saved.sizes().vec(), saved.strides().vec()));
  prepared.saved = std::move(saved);
  return prepared;
}

}  // namespace

absl::StatusOr<TensorRecordPlan> PlanTensorRecord(const at::Tensor& tensor) {
  DCP_ASSIGN_OR_RETURN(PreparedTensor prepared, PrepareTensor(tensor));
  DCP_ASSIGN_OR_RETURN(
      RecordPieces pieces,
      LayOutRecord(prepared.pkl,
                   StorageData{prepared.data.size(), Crc32(prepared.data)}));
  TensorRecordPlan plan;
  plan.prefix = std::move(pieces.prefix);
  plan.data = prepared.data;
  plan.suffix = std::move(pieces.suffix);
  plan.tensor = std::move(prepared.saved);
  return plan;
}

absl::StatusOr<uint64_t> WriteTensorRecordOnePass(
    const at::Tensor& tensor,
    absl::FunctionRef<absl::Status(absl::string_view)> append,
    absl::FunctionRef<absl::Status(uint64_t, absl::string_view)> overwrite,
    size_t block_size, TensorDataChecksums* checksums) {
  if (block_size == 0) {
    return absl::InvalidArgumentError("one-pass record block size is 0");
  }
  if (checksums != nullptr &&
      (checksums->block_bytes == 0 || block_size % checksums->block_bytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat("one-pass record block size ", block_size,
                     " is not a multiple of the checksum block size ",
                     checksums->block_bytes));
  }
  DCP_ASSIGN_OR_RETURN(PreparedTensor prepared, PrepareTensor(tensor));
  const absl::string_view data = prepared.data;
  // The CRC-32 of one block of `data`, and of each checksum block in it.
  std::optional<Crc32Shift> checksum_block;
  if (checksums != nullptr) {
    checksum_block.emplace(checksums->block_bytes);
    checksums->data_size = data.size();
    checksums->block_crc32.clear();
  }
  auto checksum = [&](absl::string_view block) {
    if (checksums == nullptr) return Crc32(block);
    uint32_t crc = 0;
    for (size_t pos = 0; pos < block.size(); pos += checksums->block_bytes) {
      const absl::string_view piece = block.substr(pos, checksums->block_bytes);
      checksums->block_crc32.push_back(Crc32(piece));
      crc =
          piece.size() == checksums->block_bytes
              ? Crc32Combine(crc, checksums->block_crc32.back(),
                             *checksum_block)
              : Crc32Combine(crc, checksums->block_crc32.back(), piece.size());
    }
    return crc;
  };
  if (data.size() <= block_size) {
    // One block: checksum it, then write it while it is still in cache.
    const uint32_t crc = checksum(data);
    DCP_ASSIGN_OR_RETURN(
        RecordPieces pieces,
        LayOutRecord(prepared.pkl, StorageData{data.size(), crc}));
    if (checksums != nullptr) {
      checksums->data_offset = pieces.prefix.size();
      checksums->data_crc32 = crc;
    }
    DCP_RETURN_IF_ERROR(append(pieces.prefix));
    if (!data.empty()) DCP_RETURN_IF_ERROR(append(data));
    DCP_RETURN_IF_ERROR(append(pieces.suffix));
    return pieces.prefix.size() + data.size() + pieces.suffix.size();
  }
  // The CRC is unknown until the data is written: lay the record out with
  // CRC 0 for data/0, append the prefix, checksum and append the data block
  // by block, then lay it out again with the real CRC, patch what changed in
  // the prefix (data/0's local header) and append the suffix.
  DCP_ASSIGN_OR_RETURN(RecordPieces placeholder,
                       LayOutRecord(prepared.pkl, StorageData{data.size(), 0}));
  DCP_RETURN_IF_ERROR(append(placeholder.prefix));
  uint32_t crc = 0;
  for (size_t pos = 0; pos < data.size(); pos += block_size) {
    const absl::string_view block = data.substr(pos, block_size);
    crc = checksums == nullptr
              ? Crc32(block, crc)
              : Crc32Combine(crc, checksum(block), block.size());
    DCP_RETURN_IF_ERROR(append(block));
  }
  DCP_ASSIGN_OR_RETURN(
      RecordPieces pieces,
      LayOutRecord(prepared.pkl, StorageData{data.size(), crc}));
  if (checksums != nullptr) {
    checksums->data_offset = pieces.prefix.size();
    checksums->data_crc32 = crc;
  }
  const std::string& before = placeholder.prefix;
  const std::string& after = pieces.prefix;
  if (after.size() != before.size()) {
    return absl::InternalError(absl::StrCat(
        "a tensor record's prefix changed size from ", before.size(), " to ",
        after.size(), " bytes when its CRC-32 was filled in"));
  }
  size_t first = 0;
  while (first < after.size() && after[first] == before[first]) ++first;
  if (first < after.size()) {
    size_t last = after.size();
    while (after[last - 1] == before[last - 1]) --last;
    DCP_RETURN_IF_ERROR(overwrite(
        first, absl::string_view(after).substr(first, last - first)));
  }
  DCP_RETURN_IF_ERROR(append(pieces.suffix));
  return after.size() + data.size() + pieces.suffix.size();
}

absl::Status WriteTensorRecord(
    const TensorRecordPlan& plan,
    absl::FunctionRef<absl::Status(absl::string_view)> sink) {
  DCP_RETURN_IF_ERROR(sink(plan.prefix));
  if (!plan.data.empty()) DCP_RETURN_IF_ERROR(sink(plan.data));
  return sink(plan.suffix);
}

absl::StatusOr<std::string> SerializeTensorRecord(const at::Tensor& tensor) {
  DCP_ASSIGN_OR_RETURN(TensorRecordPlan plan, PlanTensorRecord(tensor));
  std::string out;
  out.reserve(plan.size());
  DCP_RETURN_IF_ERROR(WriteTensorRecord(plan, [&](absl::string_view piece) {
    out.append(piece.data(), piece.size());
    return absl::OkStatus();
  }));
  return out;
}

// ---- Tensor records: reading ------------------------------------------------

std::ostream& operator<<(std::ostream& os, const TensorRecordInfo& info) {
  return os << "{dtype " << c10::toString(info.dtype) << " size ["
            << absl::StrJoin(info.sizes, ", ") << "] stride ["
            << absl::StrJoin(info.strides, ", ") << "] offset "
            << info.storage_offset << " storage \"" << info.storage_key << "\"@"
            << info.location << " " << info.storage << "}";
}

namespace {

// `t` with its storage, `dir`'s entry data/<key>, whose size must be the
// storage's. Messages say what is wrong, not where.
absl::StatusOr<TensorRecordInfo> MatchStorageEntry(PickledTensor t,
                                                   const ZipDirectory& dir) {
  const ZipEntry* entry = dir.Find(absl::StrCat("data/", t.key));
  if (entry == nullptr) {
    return absl::DataLossError(absl::StrCat("storage \"", absl::CEscape(t.key),
                                            "\" has no ", dir.prefix, "data/",
                                            absl::CEscape(t.key), " entry"));
  }
  const uint64_t item = c10::elementSize(t.dtype);
  const u128 claimed = t.untyped_storage
                           ? static_cast<u128>(t.storage_numel)
                           : static_cast<u128>(t.storage_numel) * item;
  if (claimed != entry->size) {
    return absl::DataLossError(absl::StrCat(
        "storage \"", absl::CEscape(t.key), "\" claims ", t.storage_numel,
        t.untyped_storage ? " bytes"
                          : absl::StrCat(" ", item, "-byte elements"),
        " but its entry ", entry->name, " holds ", entry->size, " bytes"));
  }
  TensorRecordInfo info;
  info.dtype = t.dtype;
  info.sizes = std::move(t.sizes);
  info.strides = std::move(t.strides);
  info.storage_offset = t.storage_offset;
  info.storage_key = std::move(t.key);
  info.location = std::move(t.location);
  info.storage = *entry;
  return info;
}

}  // namespace

struct TensorPickleCache::Entry {
  std::string pickle;
  PickledTensor parsed;
};

TensorPickleCache::TensorPickleCache() = default;
TensorPickleCache::~TensorPickleCache() = default;

const TensorPickleCache::Entry* TensorPickleCache::Find(
    absl::string_view pickle) {
  for (const Entry& entry : entries_) {
    if (entry.pickle == pickle) {
      ++hits_;
      return &entry;
    }
  }
  return nullptr;
}

void TensorPickleCache::Insert(Entry entry) {
  if (entry.pickle.size() > kMaxPickleBytes) return;
  if (entries_.size() < kMaxEntries) {
    entries_.push_back(std::move(entry));
    return;
  }
  // Round robin: cheap, and a run of same-shaped records needs one slot.
  entries_[next_] = std::move(entry);
  next_ = (next_ + 1) % kMaxEntries;
}

absl::StatusOr<TensorRecordInfo> ParseTensorRecordHeader(
    ZipByteSource& source) {
  DCP_ASSIGN_OR_RETURN(ZipDirectory dir, ReadZipDirectory(source));
  return ParseTensorRecordHeader(source, dir, nullptr);
}

absl::StatusOr<TensorRecordInfo> ParseTensorRecordHeader(
    ZipByteSource& source, const ZipDirectory& dir, TensorPickleCache* cache) {
  DCP_RETURN_IF_ERROR(CheckVersionAndByteOrder(source, dir));
  DCP_ASSIGN_OR_RETURN(absl::string_view pickle,
                       ReadRecordPickleBytes(source, dir));
  const TensorPickleCache::Entry* remembered =
      cache != nullptr ? cache->Find(pickle) : nullptr;
  PickledTensor t;
  if (remembered != nullptr) {
    t = remembered->parsed;
  } else {
    DCP_ASSIGN_OR_RETURN(PickleValue root, UnpickleRecord(pickle));
    DCP_ASSIGN_OR_RETURN(t, ParseTensorPickle(root));
    if (cache != nullptr) cache->Insert({std::string(pickle), t});
  }

  absl::StatusOr<TensorRecordInfo> info = MatchStorageEntry(std::move(t), dir);
  if (!info.ok()) return Annotate(info.status(), "tensor record: data.pkl");
  DCP_RETURN_IF_ERROR(ValidateLayout(info->dtype, info->sizes, info->strides,
                                     info->storage_offset, info->storage.size));
  DCP_RETURN_IF_ERROR(CheckNotExpanded(info->dtype, info->sizes, info->strides,
                                       info->storage.size));
  return info;
}

absl::StatusOr<TensorRecordInfo> TensorInfoInArchive(const PickleValue& rebuild,
                                                     const ZipDirectory& dir) {
  DCP_ASSIGN_OR_RETURN(PickledTensor t, ParseRebuildTensor(rebuild));
  DCP_ASSIGN_OR_RETURN(TensorRecordInfo info,
                       MatchStorageEntry(std::move(t), dir));
  DCP_RETURN_IF_ERROR(ValidateLayout(info.dtype, info.sizes, info.strides,
                                     info.storage_offset, info.storage.size));
  return info;
}

absl::StatusOr<TensorRecordInfo> ParseTensorRecordHeader(
    absl::string_view record) {
  ZipByteSource source(record);
  return ParseTensorRecordHeader(source);
}

absl::StatusOr<BoxReadPlan> PlanBoxRead(const TensorRecordInfo& info,
                                        const Shape& box_offsets,
                                        const Shape& box_lengths,
                                        const BoxReadOptions& options) {
  DCP_RETURN_IF_ERROR(ValidateLayout(info.dtype, info.sizes, info.strides,
                                     info.storage_offset, info.storage.size));
  const size_t ndim = info.sizes.size();
  if (box_offsets.size() != ndim || box_lengths.size() != ndim) {
    return absl::InvalidArgumentError(
        absl::StrCat("box offsets [", absl::StrJoin(box_offsets, ", "),
                     "] and lengths [", absl::StrJoin(box_lengths, ", "),
                     "] do not match the record's ", ndim, "-d tensor"));
  }
  for (size_t d = 0; d < ndim; ++d) {
    if (box_offsets[d] < 0 || box_lengths[d] < 0 ||
        box_offsets[d] > info.sizes[d] ||
        box_lengths[d] > info.sizes[d] - box_offsets[d]) {
      return absl::InvalidArgumentError(
          absl::StrCat("box offsets [", absl::StrJoin(box_offsets, ", "),
                       "] lengths [", absl::StrJoin(box_lengths, ", "),
                       "] exceed the record's tensor of "
                       "size [",
                       absl::StrJoin(info.sizes, ", "), "]"));
    }
  }
  BoxReadPlan plan;
  plan.dtype = info.dtype;
  plan.sizes = box_lengths;
  if (NumElements(box_lengths) == 0) {
    plan.strides = ContiguousStrides(box_lengths);
    return plan;
  }
  const uint64_t item = c10::elementSize(info.dtype);
  // Element index (within the storage) of the box's first element. All
  // arithmetic below stays below the storage size (validated above).
  uint64_t base = static_cast<uint64_t>(info.storage_offset);
  for (size_t d = 0; d < ndim; ++d) {
    base += static_cast<uint64_t>(box_offsets[d]) *
            static_cast<uint64_t>(info.strides[d]);
  }
  // Dimensions that matter, innermost (smallest stride) first.
  std::vector<size_t> dims;
  for (size_t d = 0; d < ndim; ++d) {
    if (box_lengths[d] > 1) dims.push_back(d);
  }
  std::stable_sort(dims.begin(), dims.end(), [&](size_t a, size_t b) {
    return info.strides[a] < info.strides[b] ||
           (info.strides[a] == info.strides[b] && a > b);
  });
  auto stride_bytes = [&](size_t d) {
    return static_cast<uint64_t>(info.strides[d]) * item;
  };
  auto len = [&](size_t d) { return static_cast<uint64_t>(box_lengths[d]); };

  // Each dimension's stride must step over everything inside it, so that
  // row-major order over the sorted dimensions is increasing addresses and
  // blocks do not overlap. Otherwise (stride 0, overlapping strides) the
  // box is read as one covering range.
  uint64_t span = item;
  bool nested = true;
  for (size_t d : dims) {
    if (stride_bytes(d) < span) {
      nested = false;
      break;
    }
    span += (len(d) - 1) * stride_bytes(d);
  }
  plan.strides.assign(ndim, 0);
  const uint64_t data_start = info.storage.data_offset + base * item;
  if (!nested) {
    uint64_t cover = item;
    for (size_t d : dims) {
      cover += (len(d) - 1) * stride_bytes(d);
      plan.strides[d] = info.strides[d];
    }
    plan.ranges.push_back({data_start, cover});
    plan.packed_size = cover;
    return plan;
  }

  // Absorb inner dimensions into one block: first the contiguous ones, then
  // those whose gaps may be read, then more until few enough ranges remain.
  size_t k = 0;
  uint64_t block = item;
  auto absorb = [&] {
    block += (len(dims[k]) - 1) * stride_bytes(dims[k]);
    plan.strides[dims[k]] = info.strides[dims[k]];
    ++k;
  };
  while (k < dims.size() && stride_bytes(dims[k]) == block) absorb();
  while (k < dims.size() &&
         stride_bytes(dims[k]) - block <= options.max_gap_bytes) {
    absorb();
  }
  const uint64_t max_ranges = std::max<uint64_t>(options.max_ranges, 1);
  auto count_ranges = [&] {
    uint64_t count = 1;
    for (size_t j = k; j < dims.size(); ++j) {
      if (count > max_ranges) break;  // Saturate; lengths are < 2^63.
      count *= len(dims[j]);
    }
    return count;
  };
  while (k < dims.size() && count_ranges() > max_ranges) absorb();

  // The remaining (outer) dimensions enumerate blocks; in the packed bytes
  // the blocks follow each other.
  const uint64_t block_elems = block / item;
  uint64_t packed_stride = block_elems;
  for (size_t j = k; j < dims.size(); ++j) {
    plan.strides[dims[j]] = static_cast<int64_t>(packed_stride);
    packed_stride *= len(dims[j]);
  }
  const size_t outer = dims.size() - k;
  std::vector<uint64_t> index(outer, 0);
  uint64_t start = data_start;
  while (true) {
    if (!plan.ranges.empty() &&
        plan.ranges.back().offset + plan.ranges.back().length == start) {
      plan.ranges.back().length += block;
    } else {
      plan.ranges.push_back({start, block});
    }
    plan.packed_size += block;
    // Odometer over the outer dimensions, innermost fastest.
    size_t j = 0;
    for (; j < outer; ++j) {
      const size_t d = dims[k + j];
      if (++index[j] < len(d)) {
        start += stride_bytes(d);
        break;
      }
      start -= (len(d) - 1) * stride_bytes(d);
      index[j] = 0;
    }
    if (j == outer) break;
  }
  return plan;
}

absl::Status CopyBoxInto(const BoxReadPlan& plan, absl::string_view packed,
                         const at::Tensor& dest) {
  if (!dest.defined() || dest.sizes() != c10::IntArrayRef(plan.sizes)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "destination of size [",
        dest.defined() ? absl::StrJoin(dest.sizes(), ", ") : "undefined",
        "] for a box of size [", absl::StrJoin(plan.sizes, ", "), "]"));
  }
  if (packed.size() != plan.packed_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("got ", packed.size(), " packed bytes for a box read of ",
                     plan.packed_size));
  }
  if (plan.sizes.size() != plan.strides.size() ||
      FindDtype(plan.dtype) == nullptr) {
    return absl::InvalidArgumentError("inconsistent box read plan");
  }
  if (NumElements(plan.sizes) == 0) return absl::OkStatus();
  const uint64_t item = c10::elementSize(plan.dtype);
  u128 last = 0;
  for (size_t d = 0; d < plan.sizes.size(); ++d) {
    if (plan.sizes[d] < 0 || plan.strides[d] < 0) {
      return absl::InvalidArgumentError("inconsistent box read plan");
    }
    last += static_cast<u128>(plan.sizes[d] - 1) *
            static_cast<uint64_t>(plan.strides[d]);
  }
  if ((last + 1) * item > packed.size()) {
    return absl::InvalidArgumentError(
        "box read plan reaches beyond its packed bytes");
  }
  if (plan.dtype == c10::ScalarType::Bool) {
    // Any other byte is not a valid bool; converting it would be undefined.
    const size_t bad = packed.find_first_not_of(absl::string_view("\0\1", 2));
    if (bad != absl::string_view::npos) {
      return absl::DataLossError(absl::StrFormat(
          "bool tensor data holds byte 0x%02x at packed offset %u",
          static_cast<unsigned char>(packed[bad]), bad));
    }
  }
  DCP_ASSIGN_OR_RETURN(
      at::Tensor view, TorchCall("copying a box out of a tensor record", [&] {
        return at::from_blob(
            const_cast<char*>(packed.data()), plan.sizes, plan.strides,
            at::TensorOptions().dtype(plan.dtype).device(at::kCPU));
      }));
  // A copy ThreadSanitizer sees (core/tensor_copy.h): parallel loads
  // write their destinations from several threads.
  return Annotate(CopyTensorInto(view, dest),
                  "copying a box out of a tensor record");
}

absl::StatusOr<at::Tensor> MaterializeBox(const BoxReadPlan& plan,
                                          absl::string_view packed) {
  if (FindDtype(plan.dtype) == nullptr) {
    return absl::InvalidArgumentError("inconsistent box read plan");
  }
  DCP_ASSIGN_OR_RETURN(at::Tensor out, TorchCall("allocating a box", [&] {
                         return at::empty(
                             plan.sizes, at::TensorOptions().dtype(plan.dtype));
                       }));
  DCP_RETURN_IF_ERROR(CopyBoxInto(plan, packed, out));
  return out;
}

absl::StatusOr<at::Tensor> ReadTensorRecord(
    absl::string_view record, const TensorRecordReadOptions& options) {
  DCP_ASSIGN_OR_RETURN(TensorRecordInfo info, ParseTensorRecordHeader(record));
  if (options.verify_crc) {
    DCP_ASSIGN_OR_RETURN(absl::string_view data,
                         ZipEntryData(record, info.storage));
    DCP_RETURN_IF_ERROR(VerifyZipEntryCrc(info.storage, data));
  }
  BoxReadOptions whole;
  whole.max_gap_bytes = std::numeric_limits<uint64_t>::max();
  whole.max_ranges = 1;
  DCP_ASSIGN_OR_RETURN(
      BoxReadPlan plan,
      PlanBoxRead(info, Shape(info.sizes.size(), 0), info.sizes, whole));
  absl::string_view packed;
  if (!plan.ranges.empty()) {
    packed = record.substr(plan.ranges[0].offset, plan.ranges[0].length);
  }
  return MaterializeBox(plan, packed);
}

// ---- Value records ----------------------------------------------------------

absl::StatusOr<std::string> SerializeValueRecord(const Value& value) {
  PickleWriter w;
  DCP_RETURN_IF_ERROR(WriteValuePickle(
      w, value, "value",
      [](PickleWriter&, const at::Tensor&, const std::string&) {
        return absl::InvalidArgumentError(
            "a tensor is not a value; tensors are saved as tensor records");
      }));
  absl::StatusOr<std::string> pkl = std::move(w).Finish();
  if (!pkl.ok()) return Annotate(pkl.status(), "pickling a value record");
  DCP_ASSIGN_OR_RETURN(RecordPieces pieces, LayOutRecord(*pkl, std::nullopt));
  return absl::StrCat(pieces.prefix, pieces.suffix);
}

absl::StatusOr<Value> ParseValueRecord(absl::string_view record,
                                       const DecodeLimits& limits) {
  ZipByteSource source(record);
  DCP_ASSIGN_OR_RETURN(ZipDirectory dir, ReadZipDirectory(source));
  DCP_RETURN_IF_ERROR(CheckVersionAndByteOrder(source, dir));
  DCP_ASSIGN_OR_RETURN(PickleValue root, ReadRecordPickle(source, dir, limits));
  DecodeBudget budget(record.size(), limits, "value record");
  return ValueFromPickle(
      root, "value record", "value", budget,
      [](const PickleValue&, const std::string&) -> absl::StatusOr<at::Tensor> {
        return absl::UnimplementedError(
            "unsupported pickled type torch.Tensor: value records hold no "
            "tensors (DCP saves tensors as tensor records)");
      });
}

}  // namespace dcp
