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
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
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
#include "storage/value_pickle.h"
#include "storage/zip.h"

namespace dcp {
namespace {

using torch_pickle_internal::DtypeSpec;
using torch_pickle_internal::FindDtype;
using torch_pickle_internal::UnpickleTorchData;
using torch_pickle_internal::WriteRebuildTensor;

constexpr absl::string_view kPrefix = "archive/";
constexpr absl::string_view kByteOrder = "little";
constexpr absl::string_view kVersion = "3\n";
// Reads of tensor data and CRC passes go in pieces of at most this size.
constexpr uint64_t kReadChunk = uint64_t{64} << 20;

// ---- Writing ----------------------------------------------------------------

struct SavedStorage {
  at::Tensor owner;  // Keeps the memory alive.
  absl::string_view data;
  uint32_t crc32 = 0;
  std::string key;
};

// Pickles a state dict, saving each distinct tensor storage once.
class SaveBuilder {
 public:
  absl::StatusOr<std::string> Pickle(const StateDict& root);

  const std::vector<SavedStorage>& storages() const { return storages_; }

 private:
  // The tensor callback of WriteStateDictPickle.
  absl::Status WriteTensor(PickleWriter& w, const at::Tensor& tensor,
                           const std::string& path);

  std::vector<SavedStorage> storages_;
  // Storages already saved, by identity and dtype (a storage viewed as two
  // dtypes is saved twice, as torch would refuse to share it).
  std::map<std::pair<const c10::StorageImpl*, c10::ScalarType>, size_t>
      storage_by_impl_;
};

absl::Status SaveBuilder::WriteTensor(PickleWriter& w, const at::Tensor& tensor,
                                      const std::string& path) {
  if (!tensor.defined()) {
    return absl::InvalidArgumentError("undefined tensor");
  }
  if (tensor.layout() != c10::kStrided) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layout ", c10::str(tensor.layout()), " (only strided tensors)"));
  }
  const DtypeSpec* dtype = FindDtype(tensor.scalar_type());
  if (dtype == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("dtype ", c10::toString(tensor.scalar_type())));
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
  const SavedStorage& storage = storages_[it->second];
  const int64_t numel_field =
      dtype->storage_class == nullptr
          ? static_cast<int64_t>(storage.data.size())
          : static_cast<int64_t>(storage.data.size()) / saved.element_size();
  WriteRebuildTensor(w, storage.key, *dtype, numel_field,
                     saved.storage_offset(), saved.sizes(), saved.strides());
  return absl::OkStatus();
}

absl::StatusOr<std::string> SaveBuilder::Pickle(const StateDict& root) {
  PickleWriter w;
  absl::Status status = WriteStateDictPickle(
      w, root, "obj",
      [this](PickleWriter& w, const at::Tensor& tensor,
             const std::string& path) { return WriteTensor(w, tensor, path); });
  absl::StatusOr<std::string> pkl =
      status.ok() ? std::move(w).Finish() : status;
  if (!pkl.ok()) return Annotate(pkl.status(), "torch.save data.pkl");
  return pkl;
}

// Streams the whole archive of `state_dict` to `sink`.
absl::Status EmitTorchSave(
    const StateDict& state_dict,
    absl::FunctionRef<absl::Status(absl::string_view)> sink) {
  SaveBuilder builder;
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

// Reads the tensors of data.pkl from their storage entries (the tensor
// callback of ValueFromPickle), charging what it allocates to the budget.
class TensorLoader {
 public:
  TensorLoader(ByteReader& reader, const ZipDirectory& dir,
               const TorchSaveReadOptions& options, DecodeBudget& budget)
      : reader_(reader), dir_(dir), options_(options), budget_(budget) {}

  absl::StatusOr<at::Tensor> Load(const PickleValue& rebuild);

 private:
  absl::Status VerifyStorage(const ZipEntry& entry);

  ByteReader& reader_;
  const ZipDirectory& dir_;
  const TorchSaveReadOptions& options_;
  DecodeBudget& budget_;
  std::set<std::string> verified_;  // Storage entries checked.
};

absl::Status TensorLoader::VerifyStorage(const ZipEntry& entry) {
  if (!options_.verify_crc || verified_.count(entry.name) > 0) {
    return absl::OkStatus();
  }
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
    return absl::DataLossError(
        absl::StrFormat("CRC-32 mismatch in %s (0x%08x, directory says 0x%08x)",
                        entry.name, crc, entry.crc32));
  }
  verified_.insert(entry.name);
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> TensorLoader::Load(const PickleValue& rebuild) {
  DCP_ASSIGN_OR_RETURN(TensorRecordInfo info,
                       TensorInfoInArchive(rebuild, dir_));
  // The whole tensor as one range, gaps included.
  BoxReadOptions whole;
  whole.max_gap_bytes = std::numeric_limits<uint64_t>::max();
  whole.max_ranges = 1;
  DCP_ASSIGN_OR_RETURN(
      BoxReadPlan plan,
      PlanBoxRead(info, Shape(info.sizes.size(), 0), info.sizes, whole));
  // Each reference to a (memoized) tensor becomes its own tensor, and an
  // expanded view (stride 0) becomes a full one: count what is allocated,
  // the packed bytes read and the contiguous result.
  DCP_RETURN_IF_ERROR(budget_.Charge(plan.packed_size));
  DCP_RETURN_IF_ERROR(
      budget_.Charge(SaturatingNumelBytes(info.sizes, info.dtype)));
  DCP_RETURN_IF_ERROR(VerifyStorage(info.storage));
  std::string scratch;
  absl::string_view packed;
  if (!plan.ranges.empty()) {
    DCP_ASSIGN_OR_RETURN(packed, reader_.Read(plan.ranges[0].offset,
                                              plan.ranges[0].length, scratch));
  }
  return MaterializeBox(plan, packed);
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
  absl::StatusOr<PickleValue> root =
      UnpickleTorchData(pkl_bytes, options.decode_limits, "torch.save file");
  if (!root.ok()) return root.status();
  DecodeBudget budget(reader.size(), options.decode_limits, "torch.save file");
  TensorLoader loader(reader, *dir, options, budget);
  return ValueFromPickle(
      *root, "torch.save file", "obj", budget,
      [&loader](const PickleValue& rebuild, const std::string&) {
        return loader.Load(rebuild);
      });
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
