// -----------------------------------------------------------------------------
// File: core/metadata.h
// -----------------------------------------------------------------------------
//
// The checkpoint's global description: what was saved and where. These are
// the C++ forms of `torch.distributed.checkpoint.metadata` (PyTorch 2.6),
// field for field, so that a `.metadata` file converts losslessly in both
// directions. See docs/format.md §1.3.
//
// Deliberate differences from Python, where "Any" has no C++ equivalent:
//   * `Metadata::planner_data` is the default planner's mapping
//     {flattened key -> object path}; custom planners cannot store other
//     shapes there.
//   * `Metadata::storage_data` is {MetadataIndex -> StorageInfo}, the shape
//     every built-in storage uses (FileSystem's `_StorageInfo`).
//   * `torch.Size` is `std::vector<int64_t>`; `torch.dtype` is
//     `c10::ScalarType`; `torch.layout` is `c10::Layout`.
//
// All types are plain values: copyable, comparable with ==, printable with
// <<, and containing no tensors. Nothing here includes ATen.
//
// Thread safety: values; no internal synchronisation.
#ifndef DCP_CORE_METADATA_H_
#define DCP_CORE_METADATA_H_

#include <cstdint>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <tuple>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "c10/core/Layout.h"
#include "c10/core/ScalarType.h"

namespace dcp {

// A tensor shape, offset or extent (Python's torch.Size).
using Shape = std::vector<int64_t>;

// Number of elements of a box of extent `sizes` (1 for a 0-d shape; 0 if
// any extent is 0). The product saturates at the int64 limits instead of
// overflowing, since sizes may come from corrupt input.
int64_t NumElements(const Shape& sizes);

// "[2, 3]": how error messages and `<<` print a shape, offsets or extent
// (a `Shape`, or a tensor's `sizes()`).
std::string FormatShape(absl::Span<const int64_t> shape);

// One saved box of a tensor: global `offsets` and extent `sizes`, one entry
// per dimension.
struct ChunkStorageMetadata {
  Shape offsets;
  Shape sizes;

  friend bool operator==(const ChunkStorageMetadata& a,
                         const ChunkStorageMetadata& b) {
    return a.offsets == b.offsets && a.sizes == b.sizes;
  }
  friend bool operator!=(const ChunkStorageMetadata& a,
                         const ChunkStorageMetadata& b) {
    return !(a == b);
  }
  friend std::ostream& operator<<(std::ostream& os,
                                  const ChunkStorageMetadata& chunk);
};

// Python's `_MEM_FORMAT_ENCODING`; the values are the pickled integers.
enum class MemoryFormat : int {
  kContiguous = 0,
  kChannelsLast = 1,
  kPreserve = 2,
};
std::ostream& operator<<(std::ostream& os, MemoryFormat format);

// Properties recorded for each saved tensor. Only `dtype` matters to
// loading; the others are kept because PyTorch writes and compares them.
struct TensorProperties {
  c10::ScalarType dtype = c10::ScalarType::Float;
  c10::Layout layout = c10::kStrided;
  bool requires_grad = false;
  MemoryFormat memory_format = MemoryFormat::kContiguous;
  bool pin_memory = false;

  friend bool operator==(const TensorProperties& a, const TensorProperties& b) {
    return a.dtype == b.dtype && a.layout == b.layout &&
           a.requires_grad == b.requires_grad &&
           a.memory_format == b.memory_format && a.pin_memory == b.pin_memory;
  }
  friend bool operator!=(const TensorProperties& a, const TensorProperties& b) {
    return !(a == b);
  }
  friend std::ostream& operator<<(std::ostream& os, const TensorProperties& p);
};

// A saved tensor: its global `size` and every saved chunk.
struct TensorStorageMetadata {
  TensorProperties properties;
  Shape size;
  std::vector<ChunkStorageMetadata> chunks;

  friend bool operator==(const TensorStorageMetadata& a,
                         const TensorStorageMetadata& b) {
    return a.properties == b.properties && a.size == b.size &&
           a.chunks == b.chunks;
  }
  friend bool operator!=(const TensorStorageMetadata& a,
                         const TensorStorageMetadata& b) {
    return !(a == b);
  }
  friend std::ostream& operator<<(std::ostream& os,
                                  const TensorStorageMetadata& md);
};

// A saved non-tensor value (serialised as bytes).
struct BytesStorageMetadata {
  friend bool operator==(const BytesStorageMetadata&,
                         const BytesStorageMetadata&) {
    return true;
  }
  friend bool operator!=(const BytesStorageMetadata&,
                         const BytesStorageMetadata&) {
    return false;
  }
  friend std::ostream& operator<<(std::ostream& os,
                                  const BytesStorageMetadata&) {
    return os << "BytesStorageMetadata()";
  }
};

using StorageMetadata =
    std::variant<TensorStorageMetadata, BytesStorageMetadata>;
std::ostream& operator<<(std::ostream& os, const StorageMetadata& md);

// Key of one saved item. Equality, ordering and hashing use (fqn, offset)
// only: `index` is a hint saying which position of `chunks` to probe first,
// exactly as in Python. Tensor items always have an `offset` (empty for a
// 0-d tensor); bytes items have none.
struct MetadataIndex {
  std::string fqn;
  std::optional<Shape> offset;
  std::optional<int64_t> index;

  MetadataIndex() = default;
  explicit MetadataIndex(std::string fqn,
                         std::optional<Shape> offset = std::nullopt,
                         std::optional<int64_t> index = std::nullopt)
      : fqn(std::move(fqn)), offset(std::move(offset)), index(index) {}

  friend bool operator==(const MetadataIndex& a, const MetadataIndex& b) {
    return a.fqn == b.fqn && a.offset == b.offset;
  }
  friend bool operator!=(const MetadataIndex& a, const MetadataIndex& b) {
    return !(a == b);
  }
  friend bool operator<(const MetadataIndex& a, const MetadataIndex& b) {
    return std::tie(a.fqn, a.offset) < std::tie(b.fqn, b.offset);
  }
  // Debian's Abseil (ABSL_OPTION_USE_STD_OPTIONAL 0) cannot hash a
  // std::optional, so presence and value are combined separately.
  template <typename H>
  friend H AbslHashValue(H h, const MetadataIndex& i) {
    h = H::combine(std::move(h), i.fqn, i.offset.has_value());
    if (i.offset.has_value()) h = H::combine(std::move(h), *i.offset);
    return h;
  }
  friend std::ostream& operator<<(std::ostream& os, const MetadataIndex& i);
};

// Identity of one save or load (Python's StorageMeta). `modules` exists only
// in PyTorch newer than 2.6 and is written only when non-empty.
struct StorageMeta {
  // The storage's name for the checkpoint (e.g. its directory).
  std::optional<std::string> checkpoint_id;
  // The storage writer's random UUID (regenerated by StorageWriter::Reset).
  std::optional<std::string> save_id;
  // The storage reader's random UUID (regenerated by StorageReader::Reset),
  // which it sets in the metadata it reads; None in a saved `.metadata`.
  std::optional<std::string> load_id;
  std::vector<std::string> modules;

  friend bool operator==(const StorageMeta& a, const StorageMeta& b) {
    return a.checkpoint_id == b.checkpoint_id && a.save_id == b.save_id &&
           a.load_id == b.load_id && a.modules == b.modules;
  }
  friend bool operator!=(const StorageMeta& a, const StorageMeta& b) {
    return !(a == b);
  }
  friend std::ostream& operator<<(std::ostream& os, const StorageMeta& m);
};

// Where one item's bytes live (Python's filesystem `_StorageInfo`):
// `length` bytes at `offset` of the file `relative_path`, relative to the
// checkpoint directory (or an object name, for non-file storages).
struct StorageInfo {
  std::string relative_path;
  int64_t offset = 0;
  int64_t length = 0;

  friend bool operator==(const StorageInfo& a, const StorageInfo& b) {
    return a.relative_path == b.relative_path && a.offset == b.offset &&
           a.length == b.length;
  }
  friend bool operator!=(const StorageInfo& a, const StorageInfo& b) {
    return !(a == b);
  }
  friend std::ostream& operator<<(std::ostream& os, const StorageInfo& info);
};

// One step of an object path: a mapping key or a list position.
using PathElement = std::variant<std::string, int64_t>;
// Where a flattened key lives in the original nested state dict, e.g.
// ("optim", "state", 0, "exp_avg") for "optim.state.0.exp_avg".
using ObjectPath = std::vector<PathElement>;
std::ostream& operator<<(std::ostream& os, const ObjectPath& path);

// The global description of a checkpoint, written once by the coordinator.
struct Metadata {
  // Keyed by flattened fully qualified name.
  std::map<std::string, StorageMetadata> state_dict_metadata;
  // The default planner's {fqn -> object path}; empty for other planners.
  std::map<std::string, ObjectPath> planner_data;
  // Where every saved item (tensor chunk or bytes value) is stored.
  std::map<MetadataIndex, StorageInfo> storage_data;
  // The save's identity, set by the storage writer at Finish.
  std::optional<StorageMeta> storage_meta;
  // Format version; PyTorch newer than 2.6 writes "1.0.0", 2.6 nothing.
  std::optional<std::string> version;

  friend bool operator==(const Metadata& a, const Metadata& b) {
    return a.state_dict_metadata == b.state_dict_metadata &&
           a.planner_data == b.planner_data &&
           a.storage_data == b.storage_data &&
           a.storage_meta == b.storage_meta && a.version == b.version;
  }
  friend bool operator!=(const Metadata& a, const Metadata& b) {
    return !(a == b);
  }
  friend std::ostream& operator<<(std::ostream& os, const Metadata& md);
};

// Size in bytes of one element of `dtype`; InvalidArgument for dtypes dcp
// cannot store (Undefined, NumOptions, out-of-range values).
absl::StatusOr<int64_t> ElementSize(c10::ScalarType dtype);

// Python's name for a dtype, e.g. "float32", "bfloat16", "uint8", "bool",
// "complex64", "qint8". Returns "unknown" for values with no name.
absl::string_view DtypeName(c10::ScalarType dtype);

// Inverse of DtypeName; also accepts the aliases torch defines ("float" for
// float32, "half", "double", "long", "int", "short", "cfloat", "cdouble",
// "chalf"), without a "torch." prefix. InvalidArgument naming `name` if
// unknown.
absl::StatusOr<c10::ScalarType> DtypeFromName(absl::string_view name);

}  // namespace dcp

#endif  // DCP_CORE_METADATA_H_
