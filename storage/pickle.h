// -----------------------------------------------------------------------------
// File: storage/pickle.h
// -----------------------------------------------------------------------------
//
// A Python pickle codec that never runs code: `ReadPickle` evaluates a pickle
// into a `PickleValue` tree, and `PickleWriter` emits protocol-2 pickles.
// PyTorch DCP stores `.metadata` (storage/metadata_pickle.h) and torch.save
// records as pickles; see docs/format.md §3.3, §3.4 and §4.
//
// Reading. The VM supports the opcodes of protocols 0 to 5 that Python
// writes for plain data and for objects built by `__reduce__`:
//   framing      PROTO FRAME STOP
//   memo         PUT GET BINPUT BINGET LONG_BINPUT LONG_BINGET MEMOIZE
//   stack        MARK POP POP_MARK DUP
//   scalars      NONE NEWTRUE NEWFALSE INT BININT BININT1 BININT2 LONG LONG1
//                LONG4 FLOAT BINFLOAT
//   text         SHORT_BINUNICODE BINUNICODE BINUNICODE8, and the Python 2
//                SHORT_BINSTRING BINSTRING (ASCII only, read as str, as
//                Python 3 does by default)
//   bytes        SHORT_BINBYTES BINBYTES BINBYTES8
//   containers   EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3 EMPTY_LIST LIST APPEND
//                APPENDS EMPTY_DICT DICT SETITEM SETITEMS EMPTY_SET ADDITEMS
//                FROZENSET
//   objects      GLOBAL STACK_GLOBAL REDUCE NEWOBJ NEWOBJ_EX BUILD PERSID
//                BINPERSID
// Other opcodes (INST, OBJ, EXT1/2/4, STRING, UNICODE and the protocol-5
// buffer opcodes) are rejected as unsupported.
//
// Globals are never imported or called. A GLOBAL or STACK_GLOBAL opcode
// becomes a `kGlobal` value holding (module, name), and REDUCE / NEWOBJ /
// BUILD record what was applied to it in a `kObject` value; the consumer
// interprets them. `PickleReadOptions::allow_global` decides which globals a
// pickle may mention at all. One reduction is evaluated by default because
// it is how protocol 2 spells a `bytes` value: `_codecs.encode(s, "latin1")`
// and `__builtin__.bytes()` (or `builtins.bytes()`) become `kBytes`.
//
// Sharing and cycles. A memoized object referenced twice (BINGET) is the
// same `PickleValue` node in both places, so results are directed acyclic
// graphs. Cycles are rejected: Python only writes a container after it is
// complete, unless the data refers to itself, so the reader refuses to add
// anything to a container (APPEND, SETITEM, ADDITEMS, BUILD, ...) that is
// already nested in another value, and refuses to add a container to
// itself. Self-referencing data therefore fails with DataLoss.
//
// Resource bounds for hostile input. Every length is checked against the
// remaining input before anything is allocated. Each opcode creates at most
// one node, and the memo and the stack hold at most one entry per opcode,
// so the VM's own memory is proportional to the input (about 100 bytes per
// pickled object). Nesting depth (values and MARKs) is limited by
// `max_depth`. What is not proportional to the input is what sharing makes
// of it: one memoized 1 MiB string referenced 20,000 times is 20 GiB once a
// consumer copies it at every reference. So sizes are "decoded sizes":
// one unit per node plus one per byte of str, bytes and big-int payload,
// with a shared value counted again at every reference (`tree_size()`).
// `max_tree_size` (by default 64 units per input byte plus 65536, see
// `DecodeLimits`) bounds the decoded size of every value, and also the
// payload the VM itself allocates (a bytes value built by REDUCE copies its
// argument). Consumers that copy strings out of a result count each copy
// against a `DecodeBudget` with the same kind of limit, so decoding
// hostile input fails with ResourceExhausted, in bounded memory, instead of
// exhausting memory. The VM itself is iterative.
//
// Writing. `PickleWriter` emits protocol 2 with GLOBAL opcodes, which every
// Python 3 (and PyTorch's unpicklers) accepts (§4.6); with
// `PickleWriterOptions::memoize` each distinct str and global is written
// once and referenced through the memo after that. Output is deterministic:
// equal calls give identical bytes.
//
//   PickleWriter w;
//   w.WriteGlobal("torch", "Size");
//   w.WriteTuple(1, [&](size_t) {
//     w.WriteTuple(2, [&](size_t i) { w.WriteInt(i == 0 ? 2 : 3); });
//   });
//   w.EmitReduce();                       // torch.Size((2, 3))
//   absl::StatusOr<std::string> bytes = std::move(w).Finish();
//
//   PickleReadOptions options;
//   options.allow_global = AllowGlobals({{"torch", "Size"}});
//   absl::StatusOr<PickleValue> value = ReadPickle(*bytes, options);
//
// Errors:
//   DataLoss           malformed or truncated input, unknown opcodes, stack
//                      underflow, wrong operand types, cycles; messages give
//                      the opcode and its byte offset
//   InvalidArgument    well-formed but not accepted: a global the options do
//                      not allow, a persistent id when not allowed, an
//                      opcode this reader does not implement, an integer too
//                      large for the text INT/LONG forms
//   ResourceExhausted  `max_depth`, `max_memo_entries` or `max_tree_size`
//                      exceeded ("pickle value expands to more than N
//                      units ..."); see "Resource bounds" above
//
// Thread safety: `PickleValue` is immutable once built and may be read from
// several threads; `PickleWriter` is not thread-safe.
#ifndef DCP_STORAGE_PICKLE_H_
#define DCP_STORAGE_PICKLE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dcp {
namespace pickle_internal {
class Unpickler;
}  // namespace pickle_internal

// One value of an evaluated pickle. Copying is cheap and shallow: copies
// share their (immutable) sub-values.
class PickleValue {
 public:
  enum class Kind {
    kNone,
    kBool,
    kInt,     // fits in int64_t
    kBigInt,  // an int outside int64_t; see big_int_bytes()
    kFloat,
    kString,  // Python str, held as UTF-8
    kBytes,
    kTuple,
    kList,
    kDict,  // ordered (key, value) entries, as written; duplicates kept
    kSet,   // elements as written; duplicates are not removed
    kFrozenSet,
    kGlobal,  // a reference to `module.name`, never resolved
    kObject,  // the result of REDUCE / NEWOBJ, plus what was applied to it
    kPersistentId,  // BINPERSID / PERSID; see persistent_id()
  };

  // How a kObject was made.
  enum class Construction {
    kReduce,  // callable(*args)
    kNewObj,  // cls.__new__(cls, *args, **kwargs)
  };

  // None.
  PickleValue();
  ~PickleValue();
  PickleValue(const PickleValue&);
  PickleValue& operator=(const PickleValue&);
  PickleValue(PickleValue&&) noexcept;
  PickleValue& operator=(PickleValue&&) noexcept;

  // Factories, mainly for tests and writers.
  static PickleValue None() { return PickleValue(); }
  static PickleValue Bool(bool value);
  static PickleValue Int(int64_t value);
  // `le_bytes` is a little-endian two's-complement integer (Python's LONG1
  // payload); normalised, and returned as kInt if it fits in int64_t.
  static PickleValue BigInt(absl::string_view le_bytes);
  static PickleValue Float(double value);
  static PickleValue String(std::string utf8);
  static PickleValue Bytes(std::string bytes);
  static PickleValue Tuple(std::vector<PickleValue> items);
  static PickleValue List(std::vector<PickleValue> items);
  static PickleValue Dict(
      std::vector<std::pair<PickleValue, PickleValue>> entries);
  static PickleValue Set(std::vector<PickleValue> items);
  static PickleValue FrozenSet(std::vector<PickleValue> items);
  static PickleValue Global(std::string module, std::string name);
  // `args` should be a tuple and `kwargs` a dict or None; `state` is the
  // BUILD argument, absent when None.
  static PickleValue Reduce(PickleValue callable, PickleValue args,
                            std::optional<PickleValue> state = std::nullopt);
  static PickleValue NewObj(PickleValue cls, PickleValue args,
                            std::optional<PickleValue> state = std::nullopt);
  static PickleValue PersistentId(PickleValue pid);

  Kind kind() const { return kind_; }
  bool is_none() const { return kind_ == Kind::kNone; }
  // Byte offset of the opcode that created this value in the pickle it was
  // read from, or -1 for values built in C++.
  int64_t offset() const { return offset_; }
  // Nesting depth: 1 for scalars and empty containers.
  int depth() const { return depth_; }
  // Decoded size: the node count plus the bytes of every str, bytes and
  // big-int payload, with shared nodes counted once per reference
  // (saturating). A scalar or global is 1; a str of n bytes is 1 + n.
  uint64_t tree_size() const { return tree_size_; }

  // Scalars. Each requires the matching kind (DCHECKed).
  bool bool_value() const;
  int64_t int_value() const;
  double float_value() const;
  // The text of kString (UTF-8) or the contents of kBytes.
  const std::string& string_value() const;
  // Minimal little-endian two's-complement bytes of a kBigInt.
  const std::string& big_int_bytes() const;

  // kTuple, kList, kSet, kFrozenSet: the elements.
  size_t num_items() const;
  const PickleValue& item(size_t i) const;

  // kDict: the entries in pickle order.
  size_t num_entries() const;
  const PickleValue& key(size_t i) const;
  const PickleValue& value(size_t i) const;
  // kDict: the value of the last entry whose key is the string `key`, or
  // null (Python's dict keeps the last value written for a key).
  const PickleValue* FindString(absl::string_view key) const;

  // kGlobal.
  const std::string& module() const;
  const std::string& name() const;
  // kGlobal: whether this is `module.name`.
  bool IsGlobal(absl::string_view module, absl::string_view name) const;

  // kObject.
  Construction construction() const;
  const PickleValue& callable() const;  // a kGlobal in pickles Python writes
  const PickleValue& args() const;      // a kTuple
  bool has_kwargs() const;              // NEWOBJ_EX only
  const PickleValue& kwargs() const;    // a kDict
  bool has_state() const;               // BUILD was applied
  const PickleValue& state() const;
  // Items added with APPEND/APPENDS (a kList; empty if none) and entries
  // added with SETITEM/SETITEMS (a kDict; empty if none), as Python does for
  // list and dict subclasses such as collections.OrderedDict.
  const PickleValue& appended() const;
  const PickleValue& set_items() const;

  // kPersistentId: the persistent id value.
  const PickleValue& persistent_id() const;

  // A Python-like rendering, e.g. `{'a': (1, 2.5, None)}`,
  // `torch.Size((2, 3))`, `pkg.Cls.__new__()` with `.__setstate__(...)`;
  // cut to about `max_chars` characters with "...".
  std::string DebugString(size_t max_chars = 2000) const;

  // Structural equality: same kinds, scalars (floats by bit pattern),
  // elements, and object parts. Recursive; intended for tests.
  friend bool operator==(const PickleValue& a, const PickleValue& b);
  friend bool operator!=(const PickleValue& a, const PickleValue& b) {
    return !(a == b);
  }
  friend std::ostream& operator<<(std::ostream& os, const PickleValue& v) {
    return os << v.DebugString();
  }

 private:
  friend class pickle_internal::Unpickler;
  using Node = std::shared_ptr<PickleValue>;

  // Slots of `children_` for kObject.
  enum ObjectSlot {
    kSlotCallable = 0,
    kSlotArgs = 1,
    kSlotKwargs = 2,
    kSlotState = 3,
    kSlotAppended = 4,
    kSlotSetItems = 5,
    kNumSlots = 6,
  };

  explicit PickleValue(Kind kind) : kind_(kind) {}
  static Node ToNode(PickleValue value);
  // Makes `child` an element of this value, updating depth and tree size.
  void AddChild(Node child);
  void SetSlot(ObjectSlot slot, Node child);
  void Account(const PickleValue& child);
  static const PickleValue& EmptyList();
  static const PickleValue& EmptyDict();
  void Swap(PickleValue& other) noexcept;
  void AppendDebugString(std::string& out, size_t max_chars) const;
  void AppendItems(std::string& out, size_t max_chars, const char* open,
                   const char* close, bool pairs) const;

  Kind kind_ = Kind::kNone;
  Construction construction_ = Construction::kReduce;
  // Set once the value is an element of another value.
  bool nested_ = false;
  // A `_codecs.encode` / `bytes` global accepted only to build bytes.
  bool bytes_reducer_ = false;
  int depth_ = 1;
  int64_t offset_ = -1;
  uint64_t tree_size_ = 1;
  union {
    bool bool_;
    int64_t int_;
    double float_;
  } scalar_{};
  // kString, kBytes, kBigInt payload; kGlobal module.
  std::string text_;
  // kGlobal name.
  std::string name_;
  // Elements (tuple, list, sets), interleaved key/value (dict), the
  // ObjectSlots (object; null when absent), or the pid (persistent id).
  std::vector<Node> children_;
};

// Decides whether a pickle may mention the global `module.name`.
using PickleGlobalFilter =
    std::function<bool(absl::string_view module, absl::string_view name)>;

// A filter accepting exactly the listed (module, name) pairs.
PickleGlobalFilter AllowGlobals(
    std::vector<std::pair<std::string, std::string>> globals);

struct PickleReadOptions {
  // Globals the pickle may mention. Null rejects every global (except the
  // bytes reductions below).
  PickleGlobalFilter allow_global;
  // Evaluate `_codecs.encode(str, "latin1")` and `__builtin__.bytes()` /
  // `builtins.bytes()` into kBytes, as Python 3 does for protocol-2 bytes.
  // Those globals are then accepted only in that role.
  bool decode_bytes_reductions = true;
  // Accept PERSID / BINPERSID (torch.save tensor records use them).
  bool allow_persistent_ids = false;
  // Accept bytes after STOP (Python ignores them; by default they are an
  // error, since dcp reads pickles of known length).
  bool allow_trailing_data = false;
  // Maximum nesting of values and of MARKs.
  int max_depth = 1000;
  // Maximum number of memo entries.
  int64_t max_memo_entries = int64_t{1} << 26;
  // Maximum `tree_size()` (decoded size) of any value, and of the payload
  // the VM allocates; 0 means `DecodeLimits().BudgetFor(input size)`, i.e.
  // 64 * input size + 65536.
  uint64_t max_tree_size = 0;
};

// Limits for decoding untrusted pickles and the files that hold them
// (`.metadata`, torch.save records and files). The defaults accept any
// checkpoint PyTorch or dcp writes: those pickles reference each string a
// few times at most, which costs far less than 64 bytes per input byte.
struct DecodeLimits {
  // Maximum nesting of pickled values (and of MARKs).
  int max_depth = 1000;
  // The decoded-size budget is `budget_per_input_byte * input bytes +
  // budget_base_bytes`: it bounds the pickle's `tree_size()` and the bytes
  // a conversion materialises (see `DecodeBudget`).
  uint64_t budget_per_input_byte = 64;
  uint64_t budget_base_bytes = 64 << 10;

  // The budget for `input_bytes` of input (saturating).
  uint64_t BudgetFor(uint64_t input_bytes) const;
  // Options for ReadPickle of `input_bytes` with these limits.
  PickleReadOptions PickleOptions(uint64_t input_bytes) const;
};

// Counts what converting a decoded pickle into C++ values materialises:
// the bytes of each string copied out (once per reference that is copied),
// plus an estimate of each element's own size, against a limit from
// `DecodeLimits::BudgetFor`. Charge before allocating.
//
// Thread safety: not thread-safe; one per decoding.
class DecodeBudget {
 public:
  // `what` names the input in the error, e.g. ".metadata".
  DecodeBudget(uint64_t input_bytes, const DecodeLimits& limits,
               std::string what);
  DecodeBudget(const DecodeBudget&) = delete;
  DecodeBudget& operator=(const DecodeBudget&) = delete;

  // Adds `bytes`; ResourceExhausted once the total exceeds the limit (and
  // at every later call), with a message naming `what`, the limit and how
  // it was computed.
  absl::Status Charge(uint64_t bytes);
  // Charges a string's bytes plus the size of a std::string.
  absl::Status ChargeString(absl::string_view s) {
    return Charge(s.size() + sizeof(std::string));
  }

  uint64_t used() const { return used_; }
  uint64_t limit() const { return limit_; }

 private:
  const uint64_t input_bytes_;
  const DecodeLimits limits_;
  const uint64_t limit_;
  const std::string what_;
  uint64_t used_ = 0;
};

// Evaluates the pickle `bytes` (which must end at its STOP opcode unless
// `allow_trailing_data`) and returns the value STOP pops.
absl::StatusOr<PickleValue> ReadPickle(absl::string_view bytes,
                                       const PickleReadOptions& options);

struct PickleWriterOptions {
  // Writes each distinct str and global once and refers back to it with
  // BINGET / LONG_BINGET (memo opcodes of protocol 1, read by every Python
  // 3 unpickler and by PyTorch's weights-only one). Equal strings become the
  // same object, which Python cannot tell apart from equal copies since str
  // is immutable. A `.metadata` of many small tensors, which names the same
  // few classes and keys in every entry, shrinks about threefold and
  // decodes into far fewer values.
  bool memoize = false;
};

// Emits a protocol-2 pickle, opcode by opcode or value by value, and keeps a
// model of the unpickler's stack to catch misuse: an Emit* call without the
// operands it needs, or a `write_item` callback that does not push exactly
// one value, CHECK-fails (programmer error). Invalid *data* (a string that
// is not UTF-8, a value protocol 2 cannot express) does not fail the call;
// it makes `Finish()` return InvalidArgument naming the first problem.
class PickleWriter {
 public:
  // Starts the pickle with PROTO 2.
  PickleWriter() : PickleWriter(PickleWriterOptions()) {}
  explicit PickleWriter(const PickleWriterOptions& options);
  PickleWriter(const PickleWriter&) = delete;
  PickleWriter& operator=(const PickleWriter&) = delete;

  // Each Write* pushes exactly one value.
  void WriteNone();
  void WriteBool(bool value);
  // BININT1 for [0, 255], BININT2 for [256, 65535], BININT for other int32
  // values, LONG1 otherwise (as Python's pickler chooses).
  void WriteInt(int64_t value);
  // LONG1 (or LONG4 beyond 255 bytes) of little-endian two's complement.
  void WriteBigInt(absl::string_view le_bytes);
  void WriteFloat(double value);  // BINFLOAT, big-endian
  // BINUNICODE; `utf8` must be valid UTF-8.
  void WriteString(absl::string_view utf8);
  // Protocol 2 has no bytes opcode; this writes what Python 3 writes:
  // `_codecs.encode(<latin-1 text>, "latin1")`, or `__builtin__.bytes()`
  // when empty.
  void WriteBytes(absl::string_view bytes);
  void WriteGlobal(absl::string_view module, absl::string_view name);

  // Containers whose elements are written by callbacks; each call of
  // `write_item(i)` / `write_entry(i)` must push one value (an entry: its key
  // then its value). Tuples use EMPTY_TUPLE, TUPLE1-3 or MARK..TUPLE; lists
  // and dicts are EMPTY_LIST / EMPTY_DICT followed by MARK..APPENDS /
  // MARK..SETITEMS batches of at most 1000, as Python writes them.
  void WriteTuple(size_t size, absl::FunctionRef<void(size_t)> write_item);
  void WriteList(size_t size, absl::FunctionRef<void(size_t)> write_item);
  void WriteDict(size_t size, absl::FunctionRef<void(size_t)> write_entry);

  // A whole value (recursively). Sets, frozensets and NEWOBJ_EX keyword
  // arguments have no protocol-2 form and make Finish() fail.
  void Write(const PickleValue& value);

  // Single opcodes; the comments give the stack effect.
  void EmitMark();        // MARK
  void EmitEmptyTuple();  // -> ()
  void EmitTuple();       // MARK items -> tuple
  void EmitEmptyList();   // -> []
  void EmitAppend();      // list item -> list
  void EmitAppends();     // list MARK items -> list
  void EmitEmptyDict();   // -> {}
  void EmitSetItem();     // dict key value -> dict
  void EmitSetItems();    // dict MARK k v ... -> dict
  void EmitReduce();      // callable args -> callable(*args)
  void EmitNewObj();      // cls args -> cls.__new__(cls, *args)
  void EmitBuild();       // obj state -> obj
  void EmitBinPersId();   // pid -> persistent_load(pid)

  // Bytes written so far.
  size_t size() const { return out_.size(); }

  // Appends STOP and returns the pickle, or the first data error.
  // CHECK-fails unless exactly one value is on the stack and no MARK is open.
  absl::StatusOr<std::string> Finish() &&;

 private:
  void Op(char opcode);
  void Pop(size_t n, const char* what);
  void PopToMark(const char* what);
  void Push() { ++stack_size_; }
  void SetError(absl::Status status);
  // Memo indices of the strs, or of the globals ("module\nname").
  using MemoIndex = absl::flat_hash_map<std::string, uint32_t>;
  // With `memoize`: emits BINGET of `key`'s entry in `memo` and returns
  // true if it has one; otherwise returns false, and the caller writes the
  // value and then calls Memoize(memo, key).
  bool EmitMemoized(const MemoIndex& memo, absl::string_view key);
  void Memoize(MemoIndex& memo, absl::string_view key);
  // BINPUT/BINGET (`one_byte_op`) for indices below 256, else the
  // LONG_ form (`four_byte_op`), with `index`.
  void EmitMemoOp(char one_byte_op, char four_byte_op, uint32_t index);

  const bool memoize_;
  MemoIndex string_memo_;
  MemoIndex global_memo_;
  uint64_t memo_size_ = 0;
  std::string global_key_;  // Scratch for global_memo_ keys.
  std::string out_;
  // Number of values on the modelled stack and the stack sizes at each MARK.
  size_t stack_size_ = 0;
  std::vector<size_t> marks_;
  absl::Status status_;
};

}  // namespace dcp

#endif  // DCP_STORAGE_PICKLE_H_
