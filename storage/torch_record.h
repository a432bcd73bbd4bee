// -----------------------------------------------------------------------------
// File: storage/torch_record.h
// -----------------------------------------------------------------------------
//
// torch.save-compatible records: the complete zip archive PyTorch DCP's
// FileSystemWriter writes for each item of a `.distcp` file
// (docs/format.md §3.3, §3.4). A record written here is what
// `torch.load` reads back in PyTorch 2.6, and records PyTorch writes are
// read here.
//
// Tensor records, writing. `PlanTensorRecord` lays a tensor's record out as
// three pieces so that the tensor bytes go from the tensor's memory to the
// file without a copy:
//
//   DCP_ASSIGN_OR_RETURN(TensorRecordPlan plan, PlanTensorRecord(tensor));
//   DCP_RETURN_IF_ERROR(WriteTensorRecord(plan, [&](absl::string_view piece) {
//     return file.Append(piece);
//   }));                      // prefix, data (tensor memory), suffix
//   // plan.size() bytes were written: the record's length for .metadata.
//
// What is saved is what torch 2.6 saves: a CPU tensor whose storage holds
// exactly its elements (contiguous, or for example transposed) is saved
// as it is, with its strides; any other tensor (a view of a larger storage,
// an expanded tensor, a conjugate view) is first copied into a fresh
// contiguous tensor. `PlanTensorRecord` computes the CRC-32 of the data
// (one pass over it; the ZIP local headers need it before the data), so
// writing the plan reads the data a second time. `WriteTensorRecordOnePass`
// writes the same bytes reading the data once: it checksums each block just
// before writing it and patches the CRC into the header afterwards, which
// needs a sink that can overwrite (`WritableFile::WriteAt`); the filesystem
// storage saves that way.
//
// Tensor records, reading. Resharding reads only the bytes a box needs:
//
//   ZipByteSource source(record_length, [&](uint64_t off, uint64_t len) {
//     return file.ReadRange(record_offset + off, len);
//   });
//   DCP_ASSIGN_OR_RETURN(TensorRecordInfo info,
//                        ParseTensorRecordHeader(source));  // ~2 small reads
//   DCP_ASSIGN_OR_RETURN(BoxReadPlan box,
//                        PlanBoxRead(info, box_offsets, box_lengths));
//   std::string packed;       // the bytes of box.ranges, concatenated
//   for (const ByteRange& r : box.ranges) packed += ReadRange(r);
//   DCP_RETURN_IF_ERROR(CopyBoxInto(box, packed, dest_view));  // casts dtype
//
// A row range of a row-major chunk is one range; a column box is one range
// per row unless `BoxReadOptions` allows reading the gaps.
//
// Value records. `SerializeValueRecord` pickles None, bool, int, float, str,
// bytes, lists, tuples and (nested) string-keyed dicts into a record that
// `torch.load` returns as the equivalent Python value; `ParseValueRecord`
// reads such records written by Python (storage/value_pickle.h converts,
// as for torch.save files). Conversions on reading:
//   * tuples become `Tuple`s and lists `List`s;
//   * dicts and collections.OrderedDicts (their attributes dropped) become
//     `StateDict`s; int keys become their decimal strings ({1: x} reads as
//     {"1": x}); other key types are rejected, and so is an int key whose
//     decimal string equals a str key of the same dict;
//   * ints outside int64, sets, tensors and any other object are rejected.
//
// Record details (see the .cc for the exact data.pkl opcodes): entries
// `archive/data.pkl`, `archive/byteorder` ("little"), `archive/data/0`
// (tensor records only), `archive/version` ("3\n"),
// `archive/.data/serialization_id`. The serialization id is deterministic:
// 20 decimal digits from the CRC-32s of data.pkl and data/0 followed by
// 20 digits of the data size (torch's id has the same shape, built from its
// own CRC combination and the record size, and is only informational).
//
// Errors:
//   InvalidArgument  writing: sparse, quantized or otherwise unsupported
//                    tensors, a tensor passed as a value, invalid UTF-8;
//                    reading: a box or destination that does not fit the
//                    record's tensor, packed bytes of the wrong length.
//   ResourceExhausted reading: data.pkl nests too deep or decodes to more
//                    than its budget (`DecodeLimits`, storage/pickle.h)
//   DataLoss         reading: malformed records (zip structure, data.pkl
//                    structure, sizes/strides/offsets outside the storage,
//                    more elements than the storage holds (zero or
//                    overlapping strides, which DCP writers never save),
//                    storage size different from its zip entry, missing
//                    `version`, CRC mismatch when verification is asked for).
//   Unimplemented    reading: well-formed PyTorch records this library does
//                    not support (quantized or sparse tensors, tensor
//                    subclasses, dtypes libtorch 1.13 lacks, big-endian
//                    records, pickled types outside the list above).
//
// Thread safety: all functions are thread-compatible; plans and infos are
// values.
#ifndef DCP_STORAGE_TORCH_RECORD_H_
#define DCP_STORAGE_TORCH_RECORD_H_

#include <cstddef>
#include <cstdint>
#include <limits>
#include <ostream>
#include <string>
#include <vector>

#include "ATen/core/Tensor.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "c10/core/ScalarType.h"
#include "core/metadata.h"
#include "core/state_dict.h"
#include "storage/pickle.h"
#include "storage/zip.h"

namespace dcp {

// A byte range of a record, from the record's first byte.
struct ByteRange {
  uint64_t offset = 0;
  uint64_t length = 0;

  friend bool operator==(const ByteRange& a, const ByteRange& b) {
    return a.offset == b.offset && a.length == b.length;
  }
  friend bool operator!=(const ByteRange& a, const ByteRange& b) {
    return !(a == b);
  }
  friend std::ostream& operator<<(std::ostream& os, const ByteRange& r) {
    return os << "[" << r.offset << ", +" << r.length << ")";
  }
};

// ---- Tensor records: writing ------------------------------------------------

// A tensor record as three pieces: `prefix`, then `data`, then `suffix`.
//
// Ownership: `data` points into the storage of `tensor`, which the plan
// holds; it stays valid as long as any copy of the plan (or the tensor)
// lives and nobody resizes that storage. Writing to the tensor's elements
// after planning makes the record's CRC wrong.
struct TensorRecordPlan {
  // The tensor whose storage is saved: the input tensor itself, or a
  // contiguous copy of it.
  at::Tensor tensor;
  // Local headers and contents of data.pkl and byteorder, and data/0's
  // local header.
  std::string prefix;
  // data/0: the storage bytes, in `tensor`'s memory.
  absl::string_view data;
  // version and serialization_id entries, central directory, end records.
  std::string suffix;

  uint64_t size() const { return prefix.size() + data.size() + suffix.size(); }
};

// Plans the record of `tensor` (any dtype of libtorch 1.13 except the
// quantized ones, strided layout, any device: non-CPU tensors are copied to
// the CPU). InvalidArgument for unsupported tensors; errors from libtorch
// (e.g. out of memory while copying) are mapped by TorchCall.
absl::StatusOr<TensorRecordPlan> PlanTensorRecord(const at::Tensor& tensor);

// Calls `sink` with the prefix, the data (if not empty) and the suffix, in
// that order, and stops at the first error it returns.
absl::Status WriteTensorRecord(
    const TensorRecordPlan& plan,
    absl::FunctionRef<absl::Status(absl::string_view)> sink);

// The data block size of `WriteTensorRecordOnePass`: small enough that a
// block checksummed just before it is written is still in the CPU caches.
inline constexpr size_t kOnePassBlockSize = size_t{4} << 20;

// Writes the record of `tensor`, byte for byte what `PlanTensorRecord` plus
// `WriteTensorRecord` (and `SerializeTensorRecord`) produce, reading the
// tensor's bytes from memory once instead of twice (a CRC pass, then the
// write). `append` adds bytes at the end of the record; `overwrite` replaces
// bytes `append` already wrote, at `offset` from the record's first byte
// (e.g. `WritableFile::WriteAt(record_start + offset, bytes)`).
//
// Data of at most `block_size` bytes is checksummed, then appended with the
// record's prefix and suffix, as `WriteTensorRecord` does. Larger data is
// appended in blocks of `block_size` bytes, each checksummed just before it
// is appended; the prefix is appended first with 0 in the CRC field of
// data/0's local header, and once the data is written `overwrite` is
// called once with the bytes that differ (those 4 bytes, or fewer), before
// the suffix (central directory, serialization id) is appended.
//
// With `checksums`, also reports where the data lies in the record and the
// CRC-32 of each `checksums->block_bytes` block of it (storage/
// block_checksums.h), computed in the same pass; `block_size` must then be
// a multiple of `checksums->block_bytes`.
//
// Returns the record's size (what was appended). Errors: InvalidArgument
// for a `block_size` of 0 (or not a multiple of the checksum block size)
// and for the tensors `PlanTensorRecord` refuses (nothing written then);
// errors of `append` and `overwrite` as they are, at the first one (a
// partial record may have been written).
struct TensorDataChecksums {
  uint64_t block_bytes = 0;  // Set by the caller.
  // Set by the call.
  uint64_t data_offset = 0;  // Of data/0's first byte, within the record.
  uint64_t data_size = 0;
  uint32_t data_crc32 = 0;
  std::vector<uint32_t> block_crc32;
};
absl::StatusOr<uint64_t> WriteTensorRecordOnePass(
    const at::Tensor& tensor,
    absl::FunctionRef<absl::Status(absl::string_view)> append,
    absl::FunctionRef<absl::Status(uint64_t offset, absl::string_view bytes)>
        overwrite,
    size_t block_size = kOnePassBlockSize,
    TensorDataChecksums* checksums = nullptr);

// The whole record of `tensor` in one string (a copy; for tests and small
// tensors).
absl::StatusOr<std::string> SerializeTensorRecord(const at::Tensor& tensor);

// ---- Tensor records: reading ------------------------------------------------

// What a tensor record's data.pkl and zip directory say. All fields are
// validated: sizes and strides are non-negative and every element lies
// inside the storage. From `ParseTensorRecordHeader`, the tensor also has
// no more elements than its storage, so materialising it (or any box of
// it) allocates at most the storage's bytes.
struct TensorRecordInfo {
  c10::ScalarType dtype = c10::ScalarType::Undefined;
  Shape sizes;
  Shape strides;               // In elements.
  int64_t storage_offset = 0;  // In elements.
  std::string storage_key;     // The persistent id's key: data/<key>.
  std::string location;        // The persistent id's location, e.g. "cpu".
  // The storage's zip entry: its data_offset is the byte offset of element 0
  // of the storage within the record; size is the storage's byte size.
  ZipEntry storage;

  friend std::ostream& operator<<(std::ostream& os,
                                  const TensorRecordInfo& info);
};

// Parses a tensor record: the zip directory, the `version` entry (which
// torch.load requires), `byteorder` if present, and data.pkl (a
// `torch._utils._rebuild_tensor_v2` or `_v3` call). Reads the directory and
// the small entries only, never the storage data. See the file comment for
// the error codes.
absl::StatusOr<TensorRecordInfo> ParseTensorRecordHeader(ZipByteSource& source);
absl::StatusOr<TensorRecordInfo> ParseTensorRecordHeader(
    absl::string_view record);

// Remembers the last few tensor data.pkl entries parsed, by their exact
// bytes, so that records whose data.pkl is byte-identical (the same dtype,
// shape, strides and storage key, as a model's many same-shaped tensors
// have) are unpickled once. A remembered parse is used only for identical
// bytes, and everything that depends on the rest of the record is still
// checked per record, so parsing gives the same results and errors with or
// without a cache. Failed parses are not remembered. Holds at most
// `kMaxEntries` entries of at most `kMaxPickleBytes` bytes each.
//
// Not thread-safe: one per thread (for example per file being read).
class TensorPickleCache {
 public:
  static constexpr size_t kMaxEntries = 8;
  static constexpr size_t kMaxPickleBytes = 4096;

  TensorPickleCache();
  ~TensorPickleCache();
  TensorPickleCache(const TensorPickleCache&) = delete;
  TensorPickleCache& operator=(const TensorPickleCache&) = delete;

  // How many parses were answered from the cache.
  uint64_t hits() const { return hits_; }

 private:
  friend absl::StatusOr<TensorRecordInfo> ParseTensorRecordHeader(
      ZipByteSource& source, const ZipDirectory& dir, TensorPickleCache* cache);
  struct Entry;

  // The entry for exactly `pickle`, or null.
  const Entry* Find(absl::string_view pickle);
  void Insert(Entry entry);

  std::vector<Entry> entries_;
  size_t next_ = 0;  // The entry replaced next once full.
  uint64_t hits_ = 0;
};

// As above, for a record whose directory `dir` the caller already read from
// `source` with `ReadZipDirectory`, with an optional `cache` (may be null).
absl::StatusOr<TensorRecordInfo> ParseTensorRecordHeader(
    ZipByteSource& source, const ZipDirectory& dir, TensorPickleCache* cache);

// The tensor of a `_rebuild_tensor_v2` / `_v3` call `rebuild` (a REDUCE
// of data.pkl) in an archive of several tensors, such as a torch.save file,
// whose zip directory is `dir`: the call is parsed, its storage matched with
// `dir`'s entry data/<key> (which must hold the claimed storage size), and
// its layout validated against that entry, as ParseTensorRecordHeader does
// for a record's one tensor, except that the tensor may have more elements
// than its storage (torch.save keeps expanded tensors as they are), so
// materialising it may allocate far more than the storage's bytes: bound
// that (e.g. by `PlanBoxRead`'s packed size) before reading. Reads nothing
// but `rebuild` and `dir`. Errors as ParseTensorRecordHeader's, naming what
// is wrong but not where.
absl::StatusOr<TensorRecordInfo> TensorInfoInArchive(const PickleValue& rebuild,
                                                     const ZipDirectory& dir);

// How to read one box of a record's tensor.
struct BoxReadOptions {
  // Consecutive ranges separated by at most this many bytes are read as one
  // range, gap included (trading bytes for fewer reads).
  uint64_t max_gap_bytes = 0;
  // If the box would need more ranges than this, gaps are read as well
  // until it does not (at least 1).
  size_t max_ranges = size_t{1} << 16;
};

// The byte ranges that hold a box of a record's tensor, and how to view
// their concatenation ("packed" bytes) as the box.
struct BoxReadPlan {
  // Sorted, disjoint and not adjacent; relative to the record start. Empty
  // for an empty box.
  std::vector<ByteRange> ranges;
  // Sum of the range lengths.
  uint64_t packed_size = 0;
  c10::ScalarType dtype = c10::ScalarType::Undefined;
  // The box's extent, and the element strides of the box's elements within
  // the packed bytes (element 0 of the box is the first packed element).
  Shape sizes;
  Shape strides;
};

// Plans reading the box at `box_offsets` with extent `box_lengths` (one
// entry per dimension, relative to the record's tensor). InvalidArgument if
// the box does not fit the tensor; DataLoss if `info` is inconsistent.
// Output is deterministic.
absl::StatusOr<BoxReadPlan> PlanBoxRead(const TensorRecordInfo& info,
                                        const Shape& box_offsets,
                                        const Shape& box_lengths,
                                        const BoxReadOptions& options = {});

// Copies the box from `packed` (the bytes of `plan.ranges`, concatenated)
// into `dest`, which must have the box's shape; the dtype is converted as
// `Tensor::copy_` does and `dest` may be any view or device. `packed` is
// read through a temporary view, never copied whole. InvalidArgument for a
// wrong `packed` size or `dest` shape; DataLoss for bool elements that are
// not 0 or 1.
absl::Status CopyBoxInto(const BoxReadPlan& plan, absl::string_view packed,
                         const at::Tensor& dest);

// The box as a new contiguous CPU tensor of the record's dtype.
absl::StatusOr<at::Tensor> MaterializeBox(const BoxReadPlan& plan,
                                          absl::string_view packed);

struct TensorRecordReadOptions {
  // Check the CRC-32 of the storage entry (DataLoss on mismatch).
  bool verify_crc = false;
};

// Reads the whole tensor of an in-memory record, as a new contiguous CPU
// tensor (with the saved sizes; strides are not kept).
absl::StatusOr<at::Tensor> ReadTensorRecord(
    absl::string_view record, const TensorRecordReadOptions& options = {});

// ---- Value (bytes) records --------------------------------------------------

// The record of a non-tensor value (see the file comment for the types).
// InvalidArgument naming the type for tensors, sharded tensors, and strings
// that are not UTF-8.
absl::StatusOr<std::string> SerializeValueRecord(const Value& value);

// Reads a value record written by `SerializeValueRecord` or by Python's
// torch.save. DataLoss for malformed records; Unimplemented naming the type
// for pickled values outside the supported set ("unsupported pickled type
// torch.Tensor"). ResourceExhausted when the pickle nests deeper than
// `limits.max_depth`, or when the value decodes to more than
// `limits.BudgetFor(record.size())` (by default 64 bytes per record byte +
// 64 KiB): each string and bytes value counts its bytes at every reference
// that is copied into the result, and each value its size, so a pickle that
// references one memoized megabyte string thousands of times fails instead
// of exhausting memory ("value record at value[3]: value record decodes to
// more than its budget of ..."). Paths in messages are cut to about 1 KiB.
absl::StatusOr<Value> ParseValueRecord(absl::string_view record,
                                       const DecodeLimits& limits = {});

}  // namespace dcp

#endif  // DCP_STORAGE_TORCH_RECORD_H_
