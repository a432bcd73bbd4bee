#include "storage/pickle.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "core/status.h"
#include "glog/logging.h"

namespace dcp {
namespace {

// Opcodes (CPython's Lib/pickle.py names).
enum Opcode : uint8_t {
  kMark = '(',
  kStop = '.',
  kPop = '0',
  kPopMark = '1',
  kDup = '2',
  kFloat = 'F',
  kInt = 'I',
  kBinInt = 'J',
  kBinInt1 = 'K',
  kLong = 'L',
  kBinInt2 = 'M',
  kNone = 'N',
  kPersId = 'P',
  kBinPersId = 'Q',
  kReduce = 'R',
  kString = 'S',
  kBinString = 'T',
  kShortBinString = 'U',
  kUnicode = 'V',
  kBinUnicode = 'X',
  kAppend = 'a',
  kBuild = 'b',
  kGlobal = 'c',
  kDict = 'd',
  kEmptyDict = '}',
  kAppends = 'e',
  kGet = 'g',
  kBinGet = 'h',
  kInst = 'i',
  kLongBinGet = 'j',
  kList = 'l',
  kEmptyList = ']',
  kObj = 'o',
  kPut = 'p',
  kBinPut = 'q',
  kLongBinPut = 'r',
  kSetItem = 's',
  kTuple = 't',
  kEmptyTuple = ')',
  kSetItems = 'u',
  kBinFloat = 'G',
  // Protocol 2.
  kProto = 0x80,
  kNewObj = 0x81,
  kExt1 = 0x82,
  kExt2 = 0x83,
  kExt4 = 0x84,
  kTuple1 = 0x85,
  kTuple2 = 0x86,
  kTuple3 = 0x87,
  kNewTrue = 0x88,
  kNewFalse = 0x89,
  kLong1 = 0x8a,
  kLong4 = 0x8b,
  // Protocol 3.
  kBinBytes = 'B',
  kShortBinBytes = 'C',
  // Protocol 4.
  kShortBinUnicode = 0x8c,
  kBinUnicode8 = 0x8d,
  kBinBytes8 = 0x8e,
  kEmptySet = 0x8f,
  kAddItems = 0x90,
  kFrozenSet = 0x91,
  kNewObjEx = 0x92,
  kStackGlobal = 0x93,
  kMemoize = 0x94,
  kFrame = 0x95,
  // Protocol 5.
  kByteArray8 = 0x96,
  kNextBuffer = 0x97,
  kReadonlyBuffer = 0x98,
};

constexpr int kHighestProtocol = 5;
constexpr size_t kBatchSize = 1000;  // Python's pickler batch size.

const char* OpcodeName(uint8_t op) {
  switch (op) {
    case kMark: return "MARK";
    case kStop: return "STOP";
    case kPop: return "POP";
    case kPopMark: return "POP_MARK";
    case kDup: return "DUP";
    case kFloat: return "FLOAT";
    case kInt: return "INT";
    case kBinInt: return "BININT";
    case kBinInt1: return "BININT1";
    case kLong: return "LONG";
    case kBinInt2: return "BININT2";
    case kNone: return "NONE";
    case kPersId: return "PERSID";
    case kBinPersId: return "BINPERSID";
    case kReduce: return "REDUCE";
    case kString: return "STRING";
    case kBinString: return "BINSTRING";
    case kShortBinString: return "SHORT_BINSTRING";
    case kUnicode: return "UNICODE";
    case kBinUnicode: return "BINUNICODE";
    case kAppend: return "APPEND";
    case kBuild: return "BUILD";
    case kGlobal: return "GLOBAL";
    case kDict: return "DICT";
    case kEmptyDict: return "EMPTY_DICT";
    case kAppends: return "APPENDS";
    case kGet: return "GET";
    case kBinGet: return "BINGET";
    case kInst: return "INST";
    case kLongBinGet: return "LONG_BINGET";
    case kList: return "LIST";
    case kEmptyList: return "EMPTY_LIST";
    case kObj: return "OBJ";
    case kPut: return "PUT";
    case kBinPut: return "BINPUT";
    case kLongBinPut: return "LONG_BINPUT";
    case kSetItem: return "SETITEM";
    case kTuple: return "TUPLE";
    case kEmptyTuple: return "EMPTY_TUPLE";
    case kSetItems: return "SETITEMS";
    case kBinFloat: return "BINFLOAT";
    case kProto: return "PROTO";
    case kNewObj: return "NEWOBJ";
    case kExt1: return "EXT1";
    case kExt2: return "EXT2";
    case kExt4: return "EXT4";
    case kTuple1: return "TUPLE1";
    case kTuple2: return "TUPLE2";
    case kTuple3: return "TUPLE3";
    case kNewTrue: return "NEWTRUE";
    case kNewFalse: return "NEWFALSE";
    case kLong1: return "LONG1";
    case kLong4: return "LONG4";
    case kBinBytes: return "BINBYTES";
    case kShortBinBytes: return "SHORT_BINBYTES";
    case kShortBinUnicode: return "SHORT_BINUNICODE";
    case kBinUnicode8: return "BINUNICODE8";
    case kBinBytes8: return "BINBYTES8";
    case kEmptySet: return "EMPTY_SET";
    case kAddItems: return "ADDITEMS";
    case kFrozenSet: return "FROZENSET";
    case kNewObjEx: return "NEWOBJ_EX";
    case kStackGlobal: return "STACK_GLOBAL";
    case kMemoize: return "MEMOIZE";
    case kFrame: return "FRAME";
    case kByteArray8: return "BYTEARRAY8";
    case kNextBuffer: return "NEXT_BUFFER";
    case kReadonlyBuffer: return "READONLY_BUFFER";
    default: return nullptr;
  }
}

const char* KindName(PickleValue::Kind kind) {
  switch (kind) {
    case PickleValue::Kind::kNone: return "None";
    case PickleValue::Kind::kBool: return "bool";
    case PickleValue::Kind::kInt: return "int";
    case PickleValue::Kind::kBigInt: return "int";
    case PickleValue::Kind::kFloat: return "float";
    case PickleValue::Kind::kString: return "str";
    case PickleValue::Kind::kBytes: return "bytes";
    case PickleValue::Kind::kTuple: return "tuple";
    case PickleValue::Kind::kList: return "list";
    case PickleValue::Kind::kDict: return "dict";
    case PickleValue::Kind::kSet: return "set";
    case PickleValue::Kind::kFrozenSet: return "frozenset";
    case PickleValue::Kind::kGlobal: return "global";
    case PickleValue::Kind::kObject: return "object";
    case PickleValue::Kind::kPersistentId: return "persistent id";
  }
  return "?";
}

// Whether `s` is UTF-8 as Python's "surrogatepass" codec accepts it
// (surrogate code points allowed; overlong forms and values above U+10FFFF
// rejected).
bool IsValidUtf8(absl::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const uint8_t c = static_cast<uint8_t>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    uint32_t min;
    if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07, min = 0x10000;
    } else {
      return false;
    }
    if (n - i < len) return false;
    for (size_t k = 1; k < len; ++k) {
      const uint8_t d = static_cast<uint8_t>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF) return false;
    i += len;
  }
  return true;
}

// Decodes UTF-8 text whose code points are all below 256 into the bytes
// they number (Python's `s.encode("latin1")`); false otherwise.
bool Latin1FromUtf8(absl::string_view s, std::string& out) {
  out.clear();
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const uint8_t c = static_cast<uint8_t>(s[i]);
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
      ++i;
    } else if ((c & 0xE0) == 0xC0 && i + 1 < s.size()) {
      const uint32_t cp = ((c & 0x1Fu) << 6) | (s[i + 1] & 0x3F);
      if (cp > 0xFF) return false;
      out.push_back(static_cast<char>(cp));
      i += 2;
    } else {
      return false;
    }
  }
  return true;
}

// Python's `str(b, "latin1")` as UTF-8.
std::string Utf8FromLatin1(absl::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char ch : bytes) {
    const uint8_t c = static_cast<uint8_t>(ch);
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back(static_cast<char>(0xC0 | (c >> 6)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
  }
  return out;
}

// Strips redundant sign-extension bytes from a little-endian two's-complement
// integer; the empty string (zero) stays empty.
std::string NormalizeLe(absl::string_view le) {
  std::string out(le);
  while (out.size() >= 2) {
    const uint8_t last = static_cast<uint8_t>(out[out.size() - 1]);
    const uint8_t prev_sign = static_cast<uint8_t>(out[out.size() - 2]) & 0x80;
    if ((last == 0x00 && prev_sign == 0) || (last == 0xFF && prev_sign != 0)) {
      out.pop_back();
    } else {
      break;
    }
  }
  if (out.size() == 1 && out[0] == 0) out.clear();
  return out;
}

// Sign-extends a little-endian two's-complement integer of at most 8 bytes.
int64_t Int64FromLe(absl::string_view le) {
  if (le.empty()) return 0;
  uint64_t u = (static_cast<uint8_t>(le.back()) & 0x80) ? ~uint64_t{0} : 0;
  for (size_t i = 0; i < le.size(); ++i) {
    u &= ~(uint64_t{0xFF} << (8 * i));
    u |= uint64_t{static_cast<uint8_t>(le[i])} << (8 * i);
  }
  int64_t v;
  std::memcpy(&v, &u, sizeof(v));
  return v;
}

// Minimal little-endian two's-complement bytes of `v` (Python's
// `pickle.encode_long`).
std::string LeFromInt64(int64_t v) {
  uint64_t u;
  std::memcpy(&u, &v, sizeof(u));
  std::string le(8, '\0');
  for (size_t i = 0; i < 8; ++i) le[i] = static_cast<char>(u >> (8 * i));
  return NormalizeLe(le);
}

// The decoded size of a str, bytes or big-int node: the node and its bytes.
uint64_t PayloadSize(absl::string_view text) {
  return uint64_t{1} + text.size();
}

uint64_t SaturatingAdd(uint64_t a, uint64_t b) {
  return a > std::numeric_limits<uint64_t>::max() - b
             ? std::numeric_limits<uint64_t>::max()
             : a + b;
}

void AppendPythonString(std::string& out, absl::string_view s, bool bytes) {
  if (bytes) out.push_back('b');
  out.push_back('\'');
  for (char ch : s) {
    const uint8_t c = static_cast<uint8_t>(ch);
    if (ch == '\'' || ch == '\\') {
      out.push_back('\\');
      out.push_back(ch);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20 || c == 0x7F || (bytes && c >= 0x80)) {
      absl::StrAppendFormat(&out, "\\x%02x", c);
    } else {
      out.push_back(ch);  // UTF-8 text passes through.
    }
  }
  out.push_back('\'');
}

bool IsTextGlobalPart(absl::string_view s) {
  return s.find('\n') == absl::string_view::npos && IsValidUtf8(s);
}

}  // namespace

// ---- PickleValue -------------------------------------------------------------

PickleValue::PickleValue() = default;

PickleValue::PickleValue(const PickleValue&) = default;
PickleValue::PickleValue(PickleValue&&) noexcept = default;

// Assignments swap, so the old contents go through the iterative destructor.
PickleValue& PickleValue::operator=(const PickleValue& other) {
  PickleValue copy(other);
  Swap(copy);
  return *this;
}

PickleValue& PickleValue::operator=(PickleValue&& other) noexcept {
  PickleValue moved(std::move(other));
  Swap(moved);
  return *this;
}

void PickleValue::Swap(PickleValue& other) noexcept {
  using std::swap;
  swap(kind_, other.kind_);
  swap(construction_, other.construction_);
  swap(nested_, other.nested_);
  swap(bytes_reducer_, other.bytes_reducer_);
  swap(depth_, other.depth_);
  swap(offset_, other.offset_);
  swap(tree_size_, other.tree_size_);
  swap(scalar_, other.scalar_);
  swap(text_, other.text_);
  swap(name_, other.name_);
  swap(children_, other.children_);
}

PickleValue::~PickleValue() {
  // Destroys the tree iteratively: a node whose last reference is released
  // here first hands its children to the work list, so deep values cannot
  // overflow the stack. (Under concurrent releases use_count() may be stale;
  // that only makes the destruction recursive again, never incorrect.)
  if (children_.empty()) return;
  std::vector<Node> pending = std::move(children_);
  children_.clear();
  while (!pending.empty()) {
    Node node = std::move(pending.back());
    pending.pop_back();
    if (node != nullptr && node.use_count() == 1) {
      for (Node& child : node->children_) pending.push_back(std::move(child));
      node->children_.clear();
    }
  }
}

PickleValue::Node PickleValue::ToNode(PickleValue value) {
  return std::make_shared<PickleValue>(std::move(value));
}

void PickleValue::Account(const PickleValue& child) {
  depth_ = std::max(depth_, child.depth_ + 1);
  tree_size_ = SaturatingAdd(tree_size_, child.tree_size_);
}

void PickleValue::AddChild(Node child) {
  child->nested_ = true;
  Account(*child);
  children_.push_back(std::move(child));
}

void PickleValue::SetSlot(ObjectSlot slot, Node child) {
  if (children_.size() < kNumSlots) children_.resize(kNumSlots);
  child->nested_ = true;
  Account(*child);
  children_[slot] = std::move(child);
}

PickleValue PickleValue::Bool(bool value) {
  PickleValue v(Kind::kBool);
  v.scalar_.bool_ = value;
  return v;
}

PickleValue PickleValue::Int(int64_t value) {
  PickleValue v(Kind::kInt);
  v.scalar_.int_ = value;
  return v;
}

PickleValue PickleValue::BigInt(absl::string_view le_bytes) {
  std::string normal = NormalizeLe(le_bytes);
  if (normal.size() <= 8) return Int(Int64FromLe(normal));
  PickleValue v(Kind::kBigInt);
  v.text_ = std::move(normal);
  v.tree_size_ = PayloadSize(v.text_);
  return v;
}

PickleValue PickleValue::Float(double value) {
  PickleValue v(Kind::kFloat);
  v.scalar_.float_ = value;
  return v;
}

PickleValue PickleValue::String(std::string utf8) {
  PickleValue v(Kind::kString);
  v.text_ = std::move(utf8);
  v.tree_size_ = PayloadSize(v.text_);
  return v;
}

PickleValue PickleValue::Bytes(std::string bytes) {
  PickleValue v(Kind::kBytes);
  v.text_ = std::move(bytes);
  v.tree_size_ = PayloadSize(v.text_);
  return v;
}

PickleValue PickleValue::Tuple(std::vector<PickleValue> items) {
  PickleValue v(Kind::kTuple);
  for (PickleValue& item : items) v.AddChild(ToNode(std::move(item)));
  return v;
}

PickleValue PickleValue::List(std::vector<PickleValue> items) {
  PickleValue v(Kind::kList);
  for (PickleValue& item : items) v.AddChild(ToNode(std::move(item)));
  return v;
}

PickleValue PickleValue::Set(std::vector<PickleValue> items) {
  PickleValue v(Kind::kSet);
  for (PickleValue& item : items) v.AddChild(ToNode(std::move(item)));
  return v;
}

PickleValue PickleValue::FrozenSet(std::vector<PickleValue> items) {
  PickleValue v(Kind::kFrozenSet);
  for (PickleValue& item : items) v.AddChild(ToNode(std::move(item)));
  return v;
}

PickleValue PickleValue::Dict(
    std::vector<std::pair<PickleValue, PickleValue>> entries) {
  PickleValue v(Kind::kDict);
  for (auto& [key, value] : entries) {
    v.AddChild(ToNode(std::move(key)));
    v.AddChild(ToNode(std::move(value)));
  }
  return v;
}

PickleValue PickleValue::Global(std::string module, std::string name) {
  PickleValue v(Kind::kGlobal);
  v.text_ = std::move(module);
  v.name_ = std::move(name);
  return v;
}

PickleValue PickleValue::Reduce(PickleValue callable, PickleValue args,
                                std::optional<PickleValue> state) {
  PickleValue v(Kind::kObject);
  v.construction_ = Construction::kReduce;
  v.SetSlot(kSlotCallable, ToNode(std::move(callable)));
  v.SetSlot(kSlotArgs, ToNode(std::move(args)));
  if (state.has_value()) v.SetSlot(kSlotState, ToNode(*std::move(state)));
  return v;
}

PickleValue PickleValue::NewObj(PickleValue cls, PickleValue args,
                                std::optional<PickleValue> state) {
  PickleValue v = Reduce(std::move(cls), std::move(args), std::move(state));
  v.construction_ = Construction::kNewObj;
  return v;
}

PickleValue PickleValue::PersistentId(PickleValue pid) {
  PickleValue v(Kind::kPersistentId);
  v.AddChild(ToNode(std::move(pid)));
  return v;
}

bool PickleValue::bool_value() const {
  DCHECK(kind_ == Kind::kBool);
  return scalar_.bool_;
}

int64_t PickleValue::int_value() const {
  DCHECK(kind_ == Kind::kInt);
  return scalar_.int_;
}

double PickleValue::float_value() const {
  DCHECK(kind_ == Kind::kFloat);
  return scalar_.float_;
}

const std::string& PickleValue::string_value() const {
  DCHECK(kind_ == Kind::kString || kind_ == Kind::kBytes);
  return text_;
}

const std::string& PickleValue::big_int_bytes() const {
  DCHECK(kind_ == Kind::kBigInt);
  return text_;
}

size_t PickleValue::num_items() const {
  DCHECK(kind_ == Kind::kTuple || kind_ == Kind::kList ||
         kind_ == Kind::kSet || kind_ == Kind::kFrozenSet);
  return children_.size();
}

const PickleValue& PickleValue::item(size_t i) const {
  DCHECK_LT(i, children_.size());
  return *children_[i];
}

size_t PickleValue::num_entries() const {
  DCHECK(kind_ == Kind::kDict);
  return children_.size() / 2;
}

const PickleValue& PickleValue::key(size_t i) const {
  DCHECK_LT(2 * i, children_.size());
  return *children_[2 * i];
}

const PickleValue& PickleValue::value(size_t i) const {
  DCHECK_LT(2 * i + 1, children_.size());
  return *children_[2 * i + 1];
}

const PickleValue* PickleValue::FindString(absl::string_view key) const {
  if (kind_ != Kind::kDict) return nullptr;
  for (size_t i = children_.size() / 2; i-- > 0;) {
    const PickleValue& k = *children_[2 * i];
    if (k.kind_ == Kind::kString && k.text_ == key) {
      return children_[2 * i + 1].get();
    }
  }
  return nullptr;
}

const std::string& PickleValue::module() const {
  DCHECK(kind_ == Kind::kGlobal);
  return text_;
}

const std::string& PickleValue::name() const {
  DCHECK(kind_ == Kind::kGlobal);
  return name_;
}

bool PickleValue::IsGlobal(absl::string_view module,
                           absl::string_view name) const {
  return kind_ == Kind::kGlobal && text_ == module && name_ == name;
}

PickleValue::Construction PickleValue::construction() const {
  DCHECK(kind_ == Kind::kObject);
  return construction_;
}

const PickleValue& PickleValue::callable() const {
  DCHECK(kind_ == Kind::kObject);
  return *children_[kSlotCallable];
}

const PickleValue& PickleValue::args() const {
  DCHECK(kind_ == Kind::kObject);
  return *children_[kSlotArgs];
}

bool PickleValue::has_kwargs() const {
  return kind_ == Kind::kObject && children_[kSlotKwargs] != nullptr;
}

const PickleValue& PickleValue::kwargs() const {
  DCHECK(has_kwargs());
  return *children_[kSlotKwargs];
}

bool PickleValue::has_state() const {
  return kind_ == Kind::kObject && children_[kSlotState] != nullptr;
}

const PickleValue& PickleValue::state() const {
  DCHECK(has_state());
  return *children_[kSlotState];
}

const PickleValue& PickleValue::EmptyList() {
  static const PickleValue* const kEmpty = new PickleValue(Kind::kList);
  return *kEmpty;
}

const PickleValue& PickleValue::EmptyDict() {
  static const PickleValue* const kEmpty = new PickleValue(Kind::kDict);
  return *kEmpty;
}

const PickleValue& PickleValue::appended() const {
  DCHECK(kind_ == Kind::kObject);
  const Node& node = children_[kSlotAppended];
  return node != nullptr ? *node : EmptyList();
}

const PickleValue& PickleValue::set_items() const {
  DCHECK(kind_ == Kind::kObject);
  const Node& node = children_[kSlotSetItems];
  return node != nullptr ? *node : EmptyDict();
}

const PickleValue& PickleValue::persistent_id() const {
  DCHECK(kind_ == Kind::kPersistentId);
  return *children_[0];
}

bool operator==(const PickleValue& a, const PickleValue& b) {
  using Kind = PickleValue::Kind;
  if (&a == &b) return true;
  if (a.kind_ != b.kind_) return false;
  switch (a.kind_) {
    case Kind::kNone:
      return true;
    case Kind::kBool:
      return a.scalar_.bool_ == b.scalar_.bool_;
    case Kind::kInt:
      return a.scalar_.int_ == b.scalar_.int_;
    case Kind::kFloat:
      return std::memcmp(&a.scalar_.float_, &b.scalar_.float_,
                         sizeof(double)) == 0;
    case Kind::kBigInt:
    case Kind::kString:
    case Kind::kBytes:
      return a.text_ == b.text_;
    case Kind::kGlobal:
      return a.text_ == b.text_ && a.name_ == b.name_;
    case Kind::kObject:
      if (a.construction_ != b.construction_) break;
      [[fallthrough]];
    case Kind::kTuple:
    case Kind::kList:
    case Kind::kDict:
    case Kind::kSet:
    case Kind::kFrozenSet:
    case Kind::kPersistentId: {
      if (a.children_.size() != b.children_.size()) return false;
      for (size_t i = 0; i < a.children_.size(); ++i) {
        const PickleValue* x = a.children_[i].get();
        const PickleValue* y = b.children_[i].get();
        if (x == y) continue;
        if (x == nullptr || y == nullptr || !(*x == *y)) return false;
      }
      return true;
    }
  }
  return false;
}

void PickleValue::AppendItems(std::string& out, size_t max_chars,
                              const char* open, const char* close,
                              bool pairs) const {
  out += open;
  for (size_t i = 0; i < children_.size(); i += pairs ? 2 : 1) {
    if (out.size() >= max_chars) return;
    if (i != 0) out += ", ";
    children_[i]->AppendDebugString(out, max_chars);
    if (pairs) {
      out += ": ";
      children_[i + 1]->AppendDebugString(out, max_chars);
    }
  }
  out += close;
}

void PickleValue::AppendDebugString(std::string& out, size_t max_chars) const {
  if (out.size() >= max_chars) return;
  switch (kind_) {
    case Kind::kNone:
      out += "None";
      return;
    case Kind::kBool:
      out += scalar_.bool_ ? "True" : "False";
      return;
    case Kind::kInt:
      absl::StrAppend(&out, scalar_.int_);
      return;
    case Kind::kBigInt:
      // Only what fits is converted: a payload may be megabytes.
      absl::StrAppend(&out, "int(le=0x",
                      absl::BytesToHexString(absl::string_view(text_).substr(
                          0, max_chars - out.size() + 1)),
                      ")");
      return;
    case Kind::kFloat:
      absl::StrAppendFormat(&out, "%.17g", scalar_.float_);
      return;
    case Kind::kString:
    case Kind::kBytes:
      AppendPythonString(
          out, absl::string_view(text_).substr(0, max_chars - out.size() + 1),
          kind_ == Kind::kBytes);
      return;
    case Kind::kTuple:
      AppendItems(out, max_chars, "(", children_.size() == 1 ? ",)" : ")",
                  /*pairs=*/false);
      return;
    case Kind::kList:
      AppendItems(out, max_chars, "[", "]", /*pairs=*/false);
      return;
    case Kind::kDict:
      AppendItems(out, max_chars, "{", "}", /*pairs=*/true);
      return;
    case Kind::kSet:
      if (children_.empty()) {
        out += "set()";
      } else {
        AppendItems(out, max_chars, "{", "}", /*pairs=*/false);
      }
      return;
    case Kind::kFrozenSet:
      AppendItems(out, max_chars, "frozenset({", "})", /*pairs=*/false);
      return;
    case Kind::kGlobal:
      absl::StrAppend(&out, text_, ".", name_);
      return;
    case Kind::kPersistentId:
      out += "persistent_id(";
      children_[0]->AppendDebugString(out, max_chars);
      out += ")";
      return;
    case Kind::kObject: {
      callable().AppendDebugString(out, max_chars);
      if (construction_ == Construction::kNewObj) out += ".__new__";
      // args() is a tuple; its elements are the call's arguments.
      const PickleValue& a = args();
      if (a.kind_ == Kind::kTuple) {
        a.AppendItems(out, max_chars, "(", ")", /*pairs=*/false);
      } else {
        out += "(*";
        a.AppendDebugString(out, max_chars);
        out += ")";
      }
      if (has_kwargs()) {
        out += ".__kwargs__(";
        kwargs().AppendDebugString(out, max_chars);
        out += ")";
      }
      if (children_[kSlotAppended] != nullptr) {
        out += ".extend(";
        appended().AppendDebugString(out, max_chars);
        out += ")";
      }
      if (children_[kSlotSetItems] != nullptr) {
        out += ".update(";
        set_items().AppendDebugString(out, max_chars);
        out += ")";
      }
      if (has_state()) {
        out += ".__setstate__(";
        state().AppendDebugString(out, max_chars);
        out += ")";
      }
      return;
    }
  }
}

std::string PickleValue::DebugString(size_t max_chars) const {
  std::string out;
  AppendDebugString(out, max_chars);
  if (out.size() > max_chars) {
    out.resize(max_chars);
    out += "...";
  }
  return out;
}

PickleGlobalFilter AllowGlobals(
    std::vector<std::pair<std::string, std::string>> globals) {
  auto allowed = std::make_shared<
      absl::flat_hash_set<std::pair<std::string, std::string>>>(
      globals.begin(), globals.end());
  return [allowed](absl::string_view module, absl::string_view name) {
    return allowed->contains(
        std::make_pair(std::string(module), std::string(name)));
  };
}

// ---- Reading -----------------------------------------------------------------

namespace pickle_internal {

class Unpickler {
 public:
  Unpickler(absl::string_view data, const PickleReadOptions& options)
      : data_(data),
        options_(options),
        max_tree_size_(options.max_tree_size != 0
                           ? options.max_tree_size
                           : DecodeLimits().BudgetFor(data.size())) {}

  absl::StatusOr<PickleValue> Run();

 private:
  using Node = PickleValue::Node;
  using Kind = PickleValue::Kind;

  absl::Status Step(bool& stopped, Node& result);

  // Errors about the current opcode.
  absl::Status Corrupt(absl::string_view message) const {
    return absl::DataLossError(absl::StrCat("pickle opcode ", OpName(), " at byte ",
                                            op_pos_, ": ", message));
  }
  std::string OpName() const {
    const char* name = OpcodeName(op_);
    return name != nullptr ? name : absl::StrFormat("0x%02x", op_);
  }

  // Input.
  size_t Remaining() const { return data_.size() - pos_; }
  absl::Status Need(uint64_t n, absl::string_view what) const;
  absl::StatusOr<absl::string_view> ReadBytes(uint64_t n,
                                              absl::string_view what);
  absl::StatusOr<uint64_t> ReadUint(int width, absl::string_view what);
  absl::StatusOr<absl::string_view> ReadLine(absl::string_view what);
  absl::StatusOr<int64_t> ReadDecimalLine(absl::string_view what);

  // Stack.
  size_t Fence() const { return marks_.empty() ? 0 : marks_.back(); }
  absl::StatusOr<Node> PopValue();
  absl::StatusOr<Node> Top();
  absl::StatusOr<std::vector<Node>> PopToMark();
  void Push(Node node) { stack_.push_back(std::move(node)); }
  Node NewNode(Kind kind) {
    auto node = std::make_shared<PickleValue>(PickleValue(kind));
    node->offset_ = static_cast<int64_t>(op_pos_);
    return node;
  }

  // Structure.
  absl::Status CheckLimits(const PickleValue& value) const;
  // Counts `text`, about to be copied into a new node, against
  // `max_tree_size_`: copies of input bytes never reach it, but copies of
  // shared values (a bytes value built from a memoized str) could.
  absl::Status AllocatePayload(absl::string_view text);
  absl::Status CheckChild(const Node& child) const;
  absl::Status AddChild(PickleValue& parent, Node child);
  absl::Status SetSlot(PickleValue& object, PickleValue::ObjectSlot slot,
                       Node child);
  absl::Status CheckMutable(const PickleValue& target,
                            const std::vector<Node>& added) const;
  absl::Status AppendTo(const Node& target, std::vector<Node> items);
  absl::Status SetItemsOf(const Node& target, std::vector<Node> items);
  absl::StatusOr<Node> MakeContainer(Kind kind, std::vector<Node> items);

  // Opcode groups.
  absl::Status PushString(absl::string_view bytes, bool unicode);
  absl::Status PushAsciiString(absl::string_view bytes);
  absl::Status PushLong(absl::string_view le);
  absl::Status PushGlobal(absl::string_view module, absl::string_view name);
  absl::Status Reduce();
  absl::Status ReduceBytes(const PickleValue& callable,
                           const PickleValue& args);
  absl::Status NewObj(bool ex);
  absl::Status Build();
  absl::Status PersistentId(Node pid);
  absl::Status Memo(uint64_t index);

  const absl::string_view data_;
  const PickleReadOptions& options_;
  const uint64_t max_tree_size_;
  uint64_t allocated_payload_ = 0;
  size_t pos_ = 0;
  size_t op_pos_ = 0;
  uint8_t op_ = 0;
  std::vector<Node> stack_;
  std::vector<size_t> marks_;
  absl::flat_hash_map<uint64_t, Node> memo_;
};

absl::Status Unpickler::Need(uint64_t n, absl::string_view what) const {
  if (n > Remaining()) {
    return absl::DataLossError(absl::StrCat(
        "pickle truncated: opcode ", OpName(), " at byte ", op_pos_,
        " needs ", n, " bytes for its ", what, " but only ", Remaining(),
        " remain"));
  }
  return absl::OkStatus();
}

absl::StatusOr<absl::string_view> Unpickler::ReadBytes(uint64_t n,
                                                       absl::string_view what) {
  DCP_RETURN_IF_ERROR(Need(n, what));
  absl::string_view out = data_.substr(pos_, static_cast<size_t>(n));
  pos_ += static_cast<size_t>(n);
  return out;
}

absl::StatusOr<uint64_t> Unpickler::ReadUint(int width,
                                             absl::string_view what) {
  DCP_ASSIGN_OR_RETURN(absl::string_view bytes, ReadBytes(width, what));
  uint64_t v = 0;
  for (int i = 0; i < width; ++i) {
    v |= uint64_t{static_cast<uint8_t>(bytes[i])} << (8 * i);
  }
  return v;
}

absl::StatusOr<absl::string_view> Unpickler::ReadLine(absl::string_view what) {
  const size_t end = data_.find('\n', pos_);
  if (end == absl::string_view::npos) {
    return absl::DataLossError(absl::StrCat(
        "pickle truncated: opcode ", OpName(), " at byte ", op_pos_,
        ": no newline ending its ", what));
  }
  absl::string_view line = data_.substr(pos_, end - pos_);
  pos_ = end + 1;
  return line;
}

absl::StatusOr<int64_t> Unpickler::ReadDecimalLine(absl::string_view what) {
  DCP_ASSIGN_OR_RETURN(absl::string_view line, ReadLine(what));
  int64_t v;
  if (!absl::SimpleAtoi(line, &v)) {
    return Corrupt(absl::StrCat("invalid ", what, " \"",
                                absl::CEscape(line.substr(0, 40)), "\""));
  }
  return v;
}

absl::StatusOr<PickleValue::Node> Unpickler::PopValue() {
  if (stack_.size() <= Fence()) {
    return Corrupt(marks_.empty() ? "stack underflow"
                                  : "stack underflow (only a MARK is left)");
  }
  Node node = std::move(stack_.back());
  stack_.pop_back();
  return node;
}

absl::StatusOr<PickleValue::Node> Unpickler::Top() {
  if (stack_.size() <= Fence()) return Corrupt("stack underflow");
  return stack_.back();
}

absl::StatusOr<std::vector<PickleValue::Node>> Unpickler::PopToMark() {
  if (marks_.empty()) return Corrupt("no MARK on the stack");
  const size_t mark = marks_.back();
  marks_.pop_back();
  std::vector<Node> items(std::make_move_iterator(stack_.begin() + mark),
                          std::make_move_iterator(stack_.end()));
  stack_.resize(mark);
  return items;
}

absl::Status Unpickler::CheckLimits(const PickleValue& value) const {
  if (value.depth_ > options_.max_depth) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "pickle nests values deeper than ", options_.max_depth,
        " levels (opcode ", OpName(), " at byte ", op_pos_, ")"));
  }
  if (value.tree_size_ > max_tree_size_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "pickle value expands to more than ", max_tree_size_,
        " units of decoded size (nodes plus string bytes, shared values "
        "counted at every reference; the limit is proportional to the ",
        data_.size(), "-byte input) at opcode ", OpName(), " at byte ",
        op_pos_));
  }
  return absl::OkStatus();
}

absl::Status Unpickler::AllocatePayload(absl::string_view text) {
  allocated_payload_ = SaturatingAdd(allocated_payload_, PayloadSize(text));
  if (allocated_payload_ > max_tree_size_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "pickle builds more than ", max_tree_size_,
        " bytes of strings (the limit is proportional to the ", data_.size(),
        "-byte input) at opcode ", OpName(), " at byte ", op_pos_));
  }
  return absl::OkStatus();
}

absl::Status Unpickler::CheckChild(const Node& child) const {
  if (child->bytes_reducer_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pickle uses the global \"", child->text_, ".", child->name_,
        "\" (from byte ", child->offset_,
        ") other than to build bytes (opcode ", OpName(), " at byte ",
        op_pos_, ")"));
  }
  return absl::OkStatus();
}

absl::Status Unpickler::AddChild(PickleValue& parent, Node child) {
  DCP_RETURN_IF_ERROR(CheckChild(child));
  parent.AddChild(std::move(child));
  return CheckLimits(parent);
}

absl::Status Unpickler::SetSlot(PickleValue& object,
                                PickleValue::ObjectSlot slot, Node child) {
  DCP_RETURN_IF_ERROR(CheckChild(child));
  object.SetSlot(slot, std::move(child));
  return CheckLimits(object);
}

absl::Status Unpickler::CheckMutable(const PickleValue& target,
                                     const std::vector<Node>& added) const {
  // A value nested elsewhere is complete in any pickle of acyclic data;
  // modifying it (or adding it to itself) could only build a cycle.
  if (target.nested_) {
    return Corrupt(absl::StrCat(
        "modifies the ", KindName(target.kind_), " from byte ", target.offset_,
        " after it was nested in another value; self-referencing data is "
        "not supported"));
  }
  for (const Node& node : added) {
    if (node.get() == &target) {
      return Corrupt(absl::StrCat("adds the ", KindName(target.kind_),
                                  " from byte ", target.offset_,
                                  " to itself; self-referencing data is not "
                                  "supported"));
    }
  }
  return absl::OkStatus();
}

absl::Status Unpickler::AppendTo(const Node& target, std::vector<Node> items) {
  DCP_RETURN_IF_ERROR(CheckMutable(*target, items));
  PickleValue* list = target.get();
  if (target->kind_ == Kind::kObject) {
    // list.extend on a list subclass: kept beside the object.
    Node& slot = target->children_[PickleValue::kSlotAppended];
    if (slot == nullptr) {
      DCP_RETURN_IF_ERROR(
          SetSlot(*target, PickleValue::kSlotAppended, NewNode(Kind::kList)));
    }
    list = slot.get();
  } else if (target->kind_ != Kind::kList) {
    return Corrupt(absl::StrCat("cannot append to a ",
                                KindName(target->kind_), " (from byte ",
                                target->offset_, ")"));
  }
  for (Node& item : items) {
    const PickleValue& child = *item;
    DCP_RETURN_IF_ERROR(AddChild(*list, std::move(item)));
    if (list != target.get()) {
      // Keep the object's depth and size in step with its item list.
      target->depth_ = std::max(target->depth_, list->depth_ + 1);
      target->tree_size_ =
          SaturatingAdd(target->tree_size_, child.tree_size_);
      DCP_RETURN_IF_ERROR(CheckLimits(*target));
    }
  }
  return absl::OkStatus();
}

absl::Status Unpickler::SetItemsOf(const Node& target,
                                   std::vector<Node> items) {
  if (items.size() % 2 != 0) {
    return Corrupt(absl::StrCat("odd number of stack items (", items.size(),
                                ") for key/value pairs"));
  }
  DCP_RETURN_IF_ERROR(CheckMutable(*target, items));
  PickleValue* dict = target.get();
  if (target->kind_ == Kind::kObject) {
    // obj[key] = value on a dict subclass (e.g. collections.OrderedDict).
    Node& slot = target->children_[PickleValue::kSlotSetItems];
    if (slot == nullptr) {
      DCP_RETURN_IF_ERROR(
          SetSlot(*target, PickleValue::kSlotSetItems, NewNode(Kind::kDict)));
    }
    dict = slot.get();
  } else if (target->kind_ != Kind::kDict) {
    return Corrupt(absl::StrCat("cannot set items of a ",
                                KindName(target->kind_), " (from byte ",
                                target->offset_, ")"));
  }
  for (Node& item : items) {
    const PickleValue& child = *item;
    DCP_RETURN_IF_ERROR(AddChild(*dict, std::move(item)));
    if (dict != target.get()) {
      target->depth_ = std::max(target->depth_, dict->depth_ + 1);
      target->tree_size_ =
          SaturatingAdd(target->tree_size_, child.tree_size_);
      DCP_RETURN_IF_ERROR(CheckLimits(*target));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<PickleValue::Node> Unpickler::MakeContainer(
    Kind kind, std::vector<Node> items) {
  if (kind == Kind::kDict && items.size() % 2 != 0) {
    return Corrupt(absl::StrCat("odd number of stack items (", items.size(),
                                ") for key/value pairs"));
  }
  Node node = NewNode(kind);
  node->children_.reserve(items.size());
  for (Node& item : items) {
    DCP_RETURN_IF_ERROR(AddChild(*node, std::move(item)));
  }
  return node;
}

absl::Status Unpickler::PushString(absl::string_view bytes, bool unicode) {
  Node node = NewNode(unicode ? Kind::kString : Kind::kBytes);
  if (unicode && !IsValidUtf8(bytes)) {
    return Corrupt(absl::StrCat("string of ", bytes.size(),
                                " bytes is not valid UTF-8"));
  }
  DCP_RETURN_IF_ERROR(AllocatePayload(bytes));
  node->text_ = std::string(bytes);
  node->tree_size_ = PayloadSize(node->text_);
  Push(std::move(node));
  return absl::OkStatus();
}

absl::Status Unpickler::PushAsciiString(absl::string_view bytes) {
  for (char c : bytes) {
    if (static_cast<uint8_t>(c) >= 0x80) {
      return absl::InvalidArgumentError(absl::StrCat(
          "pickle opcode ", OpName(), " at byte ", op_pos_,
          ": a Python 2 str with non-ASCII bytes is not supported"));
    }
  }
  return PushString(bytes, /*unicode=*/true);
}

absl::Status Unpickler::PushLong(absl::string_view le) {
  DCP_RETURN_IF_ERROR(AllocatePayload(le));
  PickleValue value = PickleValue::BigInt(le);
  Node node = std::make_shared<PickleValue>(std::move(value));
  node->offset_ = static_cast<int64_t>(op_pos_);
  Push(std::move(node));
  return absl::OkStatus();
}

absl::Status Unpickler::PushGlobal(absl::string_view module,
                                   absl::string_view name) {
  if (!IsValidUtf8(module) || !IsValidUtf8(name)) {
    return Corrupt("module or name is not valid UTF-8");
  }
  const bool bytes_reducer =
      options_.decode_bytes_reductions &&
      ((module == "_codecs" && name == "encode") ||
       ((module == "__builtin__" || module == "builtins") && name == "bytes"));
  if (!bytes_reducer &&
      (!options_.allow_global || !options_.allow_global(module, name))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pickle references unsupported global \"", absl::CEscape(module), ".",
        absl::CEscape(name), "\" at byte ", op_pos_));
  }
  DCP_RETURN_IF_ERROR(AllocatePayload(module));
  DCP_RETURN_IF_ERROR(AllocatePayload(name));
  Node node = NewNode(Kind::kGlobal);
  node->text_ = std::string(module);
  node->name_ = std::string(name);
  node->bytes_reducer_ = bytes_reducer;
  Push(std::move(node));
  return absl::OkStatus();
}

absl::Status Unpickler::ReduceBytes(const PickleValue& callable,
                                    const PickleValue& args) {
  Node node = NewNode(Kind::kBytes);
  if (callable.text_ == "_codecs") {
    // The str may be memoized and shared: each bytes value is a new copy.
    if (args.children_.size() == 2 &&
        args.children_[0]->kind_ == Kind::kString) {
      DCP_RETURN_IF_ERROR(AllocatePayload(args.children_[0]->text_));
    }
    static constexpr absl::string_view kLatin1[] = {"latin1", "latin-1",
                                                    "latin_1"};
    const bool ok =
        args.children_.size() == 2 &&
        args.children_[0]->kind_ == Kind::kString &&
        args.children_[1]->kind_ == Kind::kString &&
        std::find(std::begin(kLatin1), std::end(kLatin1),
                  args.children_[1]->text_) != std::end(kLatin1) &&
        Latin1FromUtf8(args.children_[0]->text_, node->text_);
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          "pickle opcode REDUCE at byte ", op_pos_,
          ": only _codecs.encode(str, 'latin1') with code points below 256 "
          "is supported, got _codecs.encode",
          args.DebugString(80)));
    }
  } else if (args.kind_ != Kind::kTuple || !args.children_.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pickle opcode REDUCE at byte ", op_pos_,
        ": only bytes() without arguments is supported, got bytes",
        args.DebugString(80)));
  }
  node->tree_size_ = PayloadSize(node->text_);
  Push(std::move(node));
  return absl::OkStatus();
}

absl::Status Unpickler::Reduce() {
  DCP_ASSIGN_OR_RETURN(Node args, PopValue());
  DCP_ASSIGN_OR_RETURN(Node callable, PopValue());
  if (args->kind_ != Kind::kTuple) {
    return Corrupt(absl::StrCat("arguments are a ", KindName(args->kind_),
                                ", not a tuple"));
  }
  if (callable->bytes_reducer_) return ReduceBytes(*callable, *args);
  Node node = NewNode(Kind::kObject);
  node->construction_ = PickleValue::Construction::kReduce;
  DCP_RETURN_IF_ERROR(SetSlot(*node, PickleValue::kSlotCallable, std::move(callable)));
  DCP_RETURN_IF_ERROR(SetSlot(*node, PickleValue::kSlotArgs, std::move(args)));
  Push(std::move(node));
  return absl::OkStatus();
}

absl::Status Unpickler::NewObj(bool ex) {
  Node kwargs;
  if (ex) {
    DCP_ASSIGN_OR_RETURN(kwargs, PopValue());
    if (kwargs->kind_ != Kind::kDict) {
      return Corrupt(absl::StrCat("keyword arguments are a ",
                                  KindName(kwargs->kind_), ", not a dict"));
    }
  }
  DCP_ASSIGN_OR_RETURN(Node args, PopValue());
  DCP_ASSIGN_OR_RETURN(Node cls, PopValue());
  if (args->kind_ != Kind::kTuple) {
    return Corrupt(absl::StrCat("arguments are a ", KindName(args->kind_),
                                ", not a tuple"));
  }
  Node node = NewNode(Kind::kObject);
  node->construction_ = PickleValue::Construction::kNewObj;
  DCP_RETURN_IF_ERROR(SetSlot(*node, PickleValue::kSlotCallable, std::move(cls)));
  DCP_RETURN_IF_ERROR(SetSlot(*node, PickleValue::kSlotArgs, std::move(args)));
  if (kwargs != nullptr) {
    DCP_RETURN_IF_ERROR(SetSlot(*node, PickleValue::kSlotKwargs, std::move(kwargs)));
  }
  Push(std::move(node));
  return absl::OkStatus();
}

absl::Status Unpickler::Build() {
  DCP_ASSIGN_OR_RETURN(Node state, PopValue());
  DCP_ASSIGN_OR_RETURN(Node target, Top());
  if (target->kind_ != Kind::kObject) {
    return Corrupt(absl::StrCat("cannot set the state of a ",
                                KindName(target->kind_), " (from byte ",
                                target->offset_, ")"));
  }
  DCP_RETURN_IF_ERROR(CheckMutable(*target, {state}));
  if (target->children_[PickleValue::kSlotState] != nullptr) {
    return Corrupt(absl::StrCat("object from byte ", target->offset_,
                                " already has a state"));
  }
  return SetSlot(*target, PickleValue::kSlotState, std::move(state));
}

absl::Status Unpickler::PersistentId(Node pid) {
  if (!options_.allow_persistent_ids) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pickle contains a persistent id (opcode ", OpName(), " at byte ",
        op_pos_, "), which is not allowed here"));
  }
  Node node = NewNode(Kind::kPersistentId);
  DCP_RETURN_IF_ERROR(AddChild(*node, std::move(pid)));
  Push(std::move(node));
  return absl::OkStatus();
}

absl::Status Unpickler::Memo(uint64_t index) {
  DCP_ASSIGN_OR_RETURN(Node top, Top());
  auto it = memo_.find(index);
  if (it != memo_.end()) {
    it->second = std::move(top);
    return absl::OkStatus();
  }
  if (static_cast<int64_t>(memo_.size()) >= options_.max_memo_entries) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "pickle memo exceeds ", options_.max_memo_entries,
        " entries (opcode ", OpName(), " at byte ", op_pos_, ")"));
  }
  memo_.emplace(index, std::move(top));
  return absl::OkStatus();
}

absl::Status Unpickler::Step(bool& stopped, Node& result) {
  op_pos_ = pos_;
  op_ = static_cast<uint8_t>(data_[pos_++]);
  switch (op_) {
    // Framing.
    case kProto: {
      DCP_ASSIGN_OR_RETURN(uint64_t version, ReadUint(1, "protocol"));
      if (version > kHighestProtocol) {
        return Corrupt(absl::StrCat("unsupported pickle protocol ", version));
      }
      return absl::OkStatus();
    }
    case kFrame: {
      DCP_ASSIGN_OR_RETURN(uint64_t length, ReadUint(8, "frame length"));
      if (length > Remaining()) {
        return absl::DataLossError(absl::StrCat(
            "pickle truncated: FRAME at byte ", op_pos_, " announces ", length,
            " bytes but only ", Remaining(), " remain"));
      }
      return absl::OkStatus();
    }
    case kStop: {
      DCP_ASSIGN_OR_RETURN(result, PopValue());
      DCP_RETURN_IF_ERROR(CheckChild(result));
      stopped = true;
      return absl::OkStatus();
    }

    // Stack.
    case kMark:
      if (marks_.size() >= static_cast<size_t>(options_.max_depth)) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "pickle nests MARKs deeper than ", options_.max_depth,
            " levels (byte ", op_pos_, ")"));
      }
      marks_.push_back(stack_.size());
      return absl::OkStatus();
    case kPop:
      if (!marks_.empty() && marks_.back() == stack_.size()) {
        marks_.pop_back();  // As CPython: POP of a MARK drops the MARK.
        return absl::OkStatus();
      }
      return PopValue().status();
    case kPopMark:
      return PopToMark().status();
    case kDup: {
      DCP_ASSIGN_OR_RETURN(Node top, Top());
      Push(std::move(top));
      return absl::OkStatus();
    }

    // Memo.
    case kPut: {
      DCP_ASSIGN_OR_RETURN(int64_t index, ReadDecimalLine("memo index"));
      if (index < 0) return Corrupt("negative memo index");
      return Memo(static_cast<uint64_t>(index));
    }
    case kBinPut: {
      DCP_ASSIGN_OR_RETURN(uint64_t index, ReadUint(1, "memo index"));
      return Memo(index);
    }
    case kLongBinPut: {
      DCP_ASSIGN_OR_RETURN(uint64_t index, ReadUint(4, "memo index"));
      return Memo(index);
    }
    case kMemoize:
      return Memo(memo_.size());
    case kGet:
    case kBinGet:
    case kLongBinGet: {
      uint64_t index;
      if (op_ == kGet) {
        DCP_ASSIGN_OR_RETURN(int64_t i, ReadDecimalLine("memo index"));
        if (i < 0) return Corrupt("negative memo index");
        index = static_cast<uint64_t>(i);
      } else {
        DCP_ASSIGN_OR_RETURN(index,
                             ReadUint(op_ == kBinGet ? 1 : 4, "memo index"));
      }
      auto it = memo_.find(index);
      if (it == memo_.end()) {
        return Corrupt(absl::StrCat("memo index ", index, " was never set"));
      }
      Push(it->second);
      return absl::OkStatus();
    }

    // Scalars.
    case kNone:
      Push(NewNode(Kind::kNone));
      return absl::OkStatus();
    case kNewTrue:
    case kNewFalse: {
      Node node = NewNode(Kind::kBool);
      node->scalar_.bool_ = op_ == kNewTrue;
      Push(std::move(node));
      return absl::OkStatus();
    }
    case kBinInt1:
    case kBinInt2:
    case kBinInt: {
      const int width = op_ == kBinInt1 ? 1 : op_ == kBinInt2 ? 2 : 4;
      DCP_ASSIGN_OR_RETURN(uint64_t u, ReadUint(width, "integer"));
      Node node = NewNode(Kind::kInt);
      node->scalar_.int_ = width == 4 ? static_cast<int32_t>(static_cast<uint32_t>(u))
                                      : static_cast<int64_t>(u);
      Push(std::move(node));
      return absl::OkStatus();
    }
    case kLong1:
    case kLong4: {
      uint64_t n;
      if (op_ == kLong1) {
        DCP_ASSIGN_OR_RETURN(n, ReadUint(1, "length"));
      } else {
        DCP_ASSIGN_OR_RETURN(uint64_t u, ReadUint(4, "length"));
        if (static_cast<int32_t>(static_cast<uint32_t>(u)) < 0) {
          return Corrupt("negative length");
        }
        n = u;
      }
      DCP_ASSIGN_OR_RETURN(absl::string_view le, ReadBytes(n, "integer"));
      return PushLong(le);
    }
    case kInt:
    case kLong: {
      DCP_ASSIGN_OR_RETURN(absl::string_view line, ReadLine("integer"));
      if (op_ == kInt && (line == "00" || line == "01")) {
        Node node = NewNode(Kind::kBool);
        node->scalar_.bool_ = line == "01";
        Push(std::move(node));
        return absl::OkStatus();
      }
      if (op_ == kLong && !line.empty() && line.back() == 'L') {
        line.remove_suffix(1);
      }
      int64_t v;
      if (!absl::SimpleAtoi(line, &v)) {
        absl::string_view digits = absl::StripAsciiWhitespace(line);
        if (!digits.empty() && (digits[0] == '-' || digits[0] == '+')) {
          digits.remove_prefix(1);
        }
        const bool all_digits =
            !digits.empty() &&
            std::all_of(digits.begin(), digits.end(), absl::ascii_isdigit);
        const std::string text = absl::CEscape(line.substr(0, 40));
        if (all_digits) {
          return absl::InvalidArgumentError(absl::StrCat(
              "pickle opcode ", OpName(), " at byte ", op_pos_,
              ": integer \"", text, "\" does not fit in 64 bits"));
        }
        return Corrupt(absl::StrCat("invalid integer \"", text, "\""));
      }
      Node node = NewNode(Kind::kInt);
      node->scalar_.int_ = v;
      Push(std::move(node));
      return absl::OkStatus();
    }
    case kFloat: {
      DCP_ASSIGN_OR_RETURN(absl::string_view line, ReadLine("float"));
      double v;
      if (!absl::SimpleAtod(line, &v)) {
        return Corrupt(absl::StrCat("invalid float \"",
                                    absl::CEscape(line.substr(0, 40)), "\""));
      }
      Node node = NewNode(Kind::kFloat);
      node->scalar_.float_ = v;
      Push(std::move(node));
      return absl::OkStatus();
    }
    case kBinFloat: {
      DCP_ASSIGN_OR_RETURN(absl::string_view be, ReadBytes(8, "float"));
      uint64_t u = 0;
      for (char c : be) u = (u << 8) | static_cast<uint8_t>(c);
      Node node = NewNode(Kind::kFloat);
      std::memcpy(&node->scalar_.float_, &u, sizeof(u));
      Push(std::move(node));
      return absl::OkStatus();
    }

    // Text and bytes.
    case kShortBinUnicode:
    case kBinUnicode:
    case kBinUnicode8:
    case kShortBinBytes:
    case kBinBytes:
    case kBinBytes8: {
      const bool unicode = op_ == kShortBinUnicode || op_ == kBinUnicode ||
                           op_ == kBinUnicode8;
      const int width = (op_ == kShortBinUnicode || op_ == kShortBinBytes) ? 1
                        : (op_ == kBinUnicode || op_ == kBinBytes)       ? 4
                                                                          : 8;
      DCP_ASSIGN_OR_RETURN(uint64_t n, ReadUint(width, "length"));
      DCP_ASSIGN_OR_RETURN(absl::string_view bytes,
                           ReadBytes(n, unicode ? "string" : "bytes"));
      return PushString(bytes, unicode);
    }
    case kShortBinString:
    case kBinString: {
      uint64_t n;
      if (op_ == kShortBinString) {
        DCP_ASSIGN_OR_RETURN(n, ReadUint(1, "length"));
      } else {
        DCP_ASSIGN_OR_RETURN(uint64_t u, ReadUint(4, "length"));
        if (static_cast<int32_t>(static_cast<uint32_t>(u)) < 0) {
          return Corrupt("negative length");
        }
        n = u;
      }
      DCP_ASSIGN_OR_RETURN(absl::string_view bytes, ReadBytes(n, "string"));
      return PushAsciiString(bytes);
    }

    // Containers.
    case kEmptyTuple:
      Push(NewNode(Kind::kTuple));
      return absl::OkStatus();
    case kEmptyList:
      Push(NewNode(Kind::kList));
      return absl::OkStatus();
    case kEmptyDict:
      Push(NewNode(Kind::kDict));
      return absl::OkStatus();
    case kEmptySet:
      Push(NewNode(Kind::kSet));
      return absl::OkStatus();
    case kTuple1:
    case kTuple2:
    case kTuple3: {
      const size_t n = op_ - kTuple1 + 1;
      std::vector<Node> items(n);
      for (size_t i = n; i-- > 0;) {
        DCP_ASSIGN_OR_RETURN(items[i], PopValue());
      }
      DCP_ASSIGN_OR_RETURN(Node node,
                           MakeContainer(Kind::kTuple, std::move(items)));
      Push(std::move(node));
      return absl::OkStatus();
    }
    case kTuple:
    case kList:
    case kDict:
    case kFrozenSet: {
      DCP_ASSIGN_OR_RETURN(std::vector<Node> items, PopToMark());
      const Kind kind = op_ == kTuple  ? Kind::kTuple
                        : op_ == kList ? Kind::kList
                        : op_ == kDict ? Kind::kDict
                                       : Kind::kFrozenSet;
      DCP_ASSIGN_OR_RETURN(Node node, MakeContainer(kind, std::move(items)));
      Push(std::move(node));
      return absl::OkStatus();
    }
    case kAppend: {
      DCP_ASSIGN_OR_RETURN(Node item, PopValue());
      DCP_ASSIGN_OR_RETURN(Node target, Top());
      std::vector<Node> items;
      items.push_back(std::move(item));
      return AppendTo(target, std::move(items));
    }
    case kAppends: {
      DCP_ASSIGN_OR_RETURN(std::vector<Node> items, PopToMark());
      DCP_ASSIGN_OR_RETURN(Node target, Top());
      return AppendTo(target, std::move(items));
    }
    case kSetItem: {
      std::vector<Node> items(2);
      DCP_ASSIGN_OR_RETURN(items[1], PopValue());
      DCP_ASSIGN_OR_RETURN(items[0], PopValue());
      DCP_ASSIGN_OR_RETURN(Node target, Top());
      return SetItemsOf(target, std::move(items));
    }
    case kSetItems: {
      DCP_ASSIGN_OR_RETURN(std::vector<Node> items, PopToMark());
      DCP_ASSIGN_OR_RETURN(Node target, Top());
      return SetItemsOf(target, std::move(items));
    }
    case kAddItems: {
      DCP_ASSIGN_OR_RETURN(std::vector<Node> items, PopToMark());
      DCP_ASSIGN_OR_RETURN(Node target, Top());
      if (target->kind_ != Kind::kSet) {
        return Corrupt(absl::StrCat("cannot add items to a ",
                                    KindName(target->kind_), " (from byte ",
                                    target->offset_, ")"));
      }
      DCP_RETURN_IF_ERROR(CheckMutable(*target, items));
      for (Node& item : items) {
        DCP_RETURN_IF_ERROR(AddChild(*target, std::move(item)));
      }
      return absl::OkStatus();
    }

    // Objects.
    case kGlobal: {
      DCP_ASSIGN_OR_RETURN(absl::string_view module, ReadLine("module name"));
      DCP_ASSIGN_OR_RETURN(absl::string_view name, ReadLine("global name"));
      return PushGlobal(module, name);
    }
    case kStackGlobal: {
      DCP_ASSIGN_OR_RETURN(Node name, PopValue());
      DCP_ASSIGN_OR_RETURN(Node module, PopValue());
      if (module->kind_ != Kind::kString || name->kind_ != Kind::kString) {
        return Corrupt(absl::StrCat("module and name must be str, got ",
                                    KindName(module->kind_), " and ",
                                    KindName(name->kind_)));
      }
      return PushGlobal(module->text_, name->text_);
    }
    case kReduce:
      return Reduce();
    case kNewObj:
      return NewObj(/*ex=*/false);
    case kNewObjEx:
      return NewObj(/*ex=*/true);
    case kBuild:
      return Build();
    case kBinPersId: {
      DCP_ASSIGN_OR_RETURN(Node pid, PopValue());
      return PersistentId(std::move(pid));
    }
    case kPersId: {
      DCP_ASSIGN_OR_RETURN(absl::string_view line,
                           ReadLine("persistent id"));
      for (char c : line) {
        if (static_cast<uint8_t>(c) >= 0x80) {
          return Corrupt("persistent id is not ASCII");
        }
      }
      Node pid = NewNode(Kind::kString);
      DCP_RETURN_IF_ERROR(AllocatePayload(line));
      pid->text_ = std::string(line);
      pid->tree_size_ = PayloadSize(pid->text_);
      return PersistentId(std::move(pid));
    }

    // Known, but outside what dcp needs.
    case kInst:
    case kObj:
    case kExt1:
    case kExt2:
    case kExt4:
    case kString:
    case kUnicode:
    case kByteArray8:
    case kNextBuffer:
    case kReadonlyBuffer:
      return absl::InvalidArgumentError(
          absl::StrFormat("unsupported pickle opcode %s (0x%02x) at byte %d",
                          OpcodeName(op_), op_, op_pos_));
    default:
      return absl::DataLossError(absl::StrFormat(
          "invalid pickle opcode 0x%02x at byte %d", op_, op_pos_));
  }
}

absl::StatusOr<PickleValue> Unpickler::Run() {
  Node result;
  bool stopped = false;
  while (!stopped) {
    if (pos_ >= data_.size()) {
      return absl::DataLossError(absl::StrCat(
          "pickle truncated: input ends at byte ", data_.size(),
          " without a STOP opcode"));
    }
    DCP_RETURN_IF_ERROR(Step(stopped, result));
  }
  if (pos_ != data_.size() && !options_.allow_trailing_data) {
    return absl::DataLossError(absl::StrCat(
        "pickle has ", data_.size() - pos_, " trailing bytes after STOP at byte ",
        op_pos_));
  }
  // Release the VM's references first so the result is the sole owner of
  // as much of the tree as possible.
  stack_.clear();
  memo_.clear();
  return *result;
}

}  // namespace pickle_internal

absl::StatusOr<PickleValue> ReadPickle(absl::string_view bytes,
                                       const PickleReadOptions& options) {
  pickle_internal::Unpickler unpickler(bytes, options);
  return unpickler.Run();
}

// ---- Decode limits -----------------------------------------------------------

uint64_t DecodeLimits::BudgetFor(uint64_t input_bytes) const {
  uint64_t scaled = std::numeric_limits<uint64_t>::max();
  if (budget_per_input_byte == 0 ||
      input_bytes <= scaled / budget_per_input_byte) {
    scaled = input_bytes * budget_per_input_byte;
  }
  return SaturatingAdd(scaled, budget_base_bytes);
}

PickleReadOptions DecodeLimits::PickleOptions(uint64_t input_bytes) const {
  PickleReadOptions options;
  options.max_depth = max_depth;
  // 0 would mean "the default"; a budget that small is 1 unit.
  options.max_tree_size = std::max<uint64_t>(BudgetFor(input_bytes), 1);
  return options;
}

DecodeBudget::DecodeBudget(uint64_t input_bytes, const DecodeLimits& limits,
                           std::string what)
    : input_bytes_(input_bytes),
      limits_(limits),
      limit_(limits.BudgetFor(input_bytes)),
      what_(std::move(what)) {}

absl::Status DecodeBudget::Charge(uint64_t bytes) {
  used_ = SaturatingAdd(used_, bytes);
  if (used_ <= limit_) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      what_, " decodes to more than its budget of ", limit_, " bytes (",
      limits_.budget_per_input_byte, " per input byte x ", input_bytes_,
      " bytes + ", limits_.budget_base_bytes,
      "): it references shared values too often (raise "
      "DecodeLimits::budget_per_input_byte to accept it)"));
}

// ---- Writing -----------------------------------------------------------------

PickleWriter::PickleWriter(const PickleWriterOptions& options)
    : memoize_(options.memoize) {
  out_.push_back(static_cast<char>(kProto));
  out_.push_back(2);
}

bool PickleWriter::EmitMemoized(const MemoIndex& memo, absl::string_view key) {
  const auto it = memo.find(key);
  if (it == memo.end()) return false;
  EmitMemoOp(kBinGet, kLongBinGet, it->second);
  Push();
  return true;
}

void PickleWriter::EmitMemoOp(char one_byte_op, char four_byte_op,
                              uint32_t index) {
  if (index < 256) {
    Op(one_byte_op);
    out_.push_back(static_cast<char>(index));
  } else {
    Op(four_byte_op);
    for (int i = 0; i < 4; ++i) {
      out_.push_back(static_cast<char>(index >> (8 * i)));
    }
  }
}

void PickleWriter::Memoize(MemoIndex& memo, absl::string_view key) {
  // A pickle too large for 32-bit memo indices simply stops memoizing.
  if (memo_size_ >= 0xFFFFFFFFu) return;
  const uint32_t index = static_cast<uint32_t>(memo_size_++);
  EmitMemoOp(kBinPut, kLongBinPut, index);
  memo.emplace(key, index);
}

void PickleWriter::Op(char opcode) { out_.push_back(opcode); }

void PickleWriter::Pop(size_t n, const char* what) {
  const size_t fence = marks_.empty() ? 0 : marks_.back();
  CHECK_GE(stack_size_, fence + n)
      << "PickleWriter: " << what << " needs " << n
      << " values above the last MARK";
  stack_size_ -= n;
}

void PickleWriter::PopToMark(const char* what) {
  CHECK(!marks_.empty()) << "PickleWriter: " << what << " without a MARK";
  stack_size_ = marks_.back();
  marks_.pop_back();
}

void PickleWriter::SetError(absl::Status status) {
  if (status_.ok()) status_ = std::move(status);
}

void PickleWriter::WriteNone() {
  Op(kNone);
  Push();
}

void PickleWriter::WriteBool(bool value) {
  out_.push_back(static_cast<char>(value ? kNewTrue : kNewFalse));
  Push();
}

void PickleWriter::WriteInt(int64_t value) {
  if (value >= 0 && value <= 0xFF) {
    Op(kBinInt1);
    out_.push_back(static_cast<char>(value));
  } else if (value >= 0 && value <= 0xFFFF) {
    Op(kBinInt2);
    out_.push_back(static_cast<char>(value & 0xFF));
    out_.push_back(static_cast<char>(value >> 8));
  } else if (value >= std::numeric_limits<int32_t>::min() &&
             value <= std::numeric_limits<int32_t>::max()) {
    Op(kBinInt);
    const uint32_t u = static_cast<uint32_t>(static_cast<int32_t>(value));
    for (int i = 0; i < 4; ++i) out_.push_back(static_cast<char>(u >> (8 * i)));
  } else {
    const std::string le = LeFromInt64(value);
    out_.push_back(static_cast<char>(kLong1));
    out_.push_back(static_cast<char>(le.size()));
    out_ += le;
  }
  Push();
}

void PickleWriter::WriteBigInt(absl::string_view le_bytes) {
  const std::string le = NormalizeLe(le_bytes);
  if (le.size() <= 0xFF) {
    out_.push_back(static_cast<char>(kLong1));
    out_.push_back(static_cast<char>(le.size()));
  } else if (le.size() <= 0x7FFFFFFF) {
    out_.push_back(static_cast<char>(kLong4));
    const uint32_t n = static_cast<uint32_t>(le.size());
    for (int i = 0; i < 4; ++i) out_.push_back(static_cast<char>(n >> (8 * i)));
  } else {
    SetError(absl::InvalidArgumentError("integer too large to pickle"));
    out_.push_back(static_cast<char>(kLong1));
    out_.push_back(0);
    Push();
    return;
  }
  out_ += le;
  Push();
}

void PickleWriter::WriteFloat(double value) {
  Op(kBinFloat);
  uint64_t u;
  std::memcpy(&u, &value, sizeof(u));
  for (int i = 7; i >= 0; --i) out_.push_back(static_cast<char>(u >> (8 * i)));
  Push();
}

void PickleWriter::WriteString(absl::string_view utf8) {
  // A memoized string was checked when it was first written.
  if (memoize_ && EmitMemoized(string_memo_, utf8)) return;
  if (!IsValidUtf8(utf8)) {
    SetError(absl::InvalidArgumentError(absl::StrCat(
        "cannot pickle string \"", absl::CHexEscape(utf8.substr(0, 60)),
        "\": not valid UTF-8")));
  }
  if (utf8.size() > 0xFFFFFFFFu) {
    SetError(absl::InvalidArgumentError(absl::StrCat(
        "cannot pickle a string of ", utf8.size(),
        " bytes with protocol 2 (limit 4 GiB)")));
    utf8 = absl::string_view();
  }
  Op(kBinUnicode);
  const uint32_t n = static_cast<uint32_t>(utf8.size());
  for (int i = 0; i < 4; ++i) out_.push_back(static_cast<char>(n >> (8 * i)));
  out_.append(utf8.data(), utf8.size());
  Push();
  if (memoize_) Memoize(string_memo_, utf8);
}

void PickleWriter::WriteBytes(absl::string_view bytes) {
  if (bytes.empty()) {
    WriteGlobal("__builtin__", "bytes");
    EmitEmptyTuple();
  } else {
    WriteGlobal("_codecs", "encode");
    const std::string text = Utf8FromLatin1(bytes);
    WriteTuple(2, [&](size_t i) {
      WriteString(i == 0 ? absl::string_view(text) : "latin1");
    });
  }
  EmitReduce();
}

void PickleWriter::WriteGlobal(absl::string_view module,
                               absl::string_view name) {
  if (memoize_) {
    // Neither part holds a newline (checked below when first written).
    global_key_.assign(module.data(), module.size());
    global_key_.push_back('\n');
    global_key_.append(name.data(), name.size());
    if (EmitMemoized(global_memo_, global_key_)) return;
  }
  if (!IsTextGlobalPart(module) || !IsTextGlobalPart(name) || module.empty() ||
      name.empty()) {
    SetError(absl::InvalidArgumentError(
        absl::StrCat("cannot pickle global \"", absl::CHexEscape(module), ".",
                     absl::CHexEscape(name), "\"")));
  }
  Op(kGlobal);
  absl::StrAppend(&out_, module, "\n", name, "\n");
  Push();
  if (memoize_) Memoize(global_memo_, global_key_);
}

void PickleWriter::WriteTuple(size_t size,
                              absl::FunctionRef<void(size_t)> write_item) {
  if (size == 0) {
    EmitEmptyTuple();
    return;
  }
  if (size > 3) EmitMark();
  for (size_t i = 0; i < size; ++i) {
    const size_t before = stack_size_;
    write_item(i);
    CHECK_EQ(stack_size_, before + 1)
        << "PickleWriter::WriteTuple: item " << i << " must push one value";
  }
  if (size > 3) {
    EmitTuple();
  } else {
    out_.push_back(static_cast<char>(kTuple1 + size - 1));
    Pop(size, "TUPLE1-3");
    Push();
  }
}

void PickleWriter::WriteList(size_t size,
                             absl::FunctionRef<void(size_t)> write_item) {
  EmitEmptyList();
  for (size_t start = 0; start < size; start += kBatchSize) {
    const size_t end = std::min(size, start + kBatchSize);
    if (end - start > 1) EmitMark();
    for (size_t i = start; i < end; ++i) {
      const size_t before = stack_size_;
      write_item(i);
      CHECK_EQ(stack_size_, before + 1)
          << "PickleWriter::WriteList: item " << i << " must push one value";
    }
    if (end - start > 1) {
      EmitAppends();
    } else {
      EmitAppend();
    }
  }
}

void PickleWriter::WriteDict(size_t size,
                             absl::FunctionRef<void(size_t)> write_entry) {
  EmitEmptyDict();
  for (size_t start = 0; start < size; start += kBatchSize) {
    const size_t end = std::min(size, start + kBatchSize);
    if (end - start > 1) EmitMark();
    for (size_t i = start; i < end; ++i) {
      const size_t before = stack_size_;
      write_entry(i);
      CHECK_EQ(stack_size_, before + 2)
          << "PickleWriter::WriteDict: entry " << i
          << " must push a key and a value";
    }
    if (end - start > 1) {
      EmitSetItems();
    } else {
      EmitSetItem();
    }
  }
}

void PickleWriter::Write(const PickleValue& value) {
  using Kind = PickleValue::Kind;
  switch (value.kind()) {
    case Kind::kNone:
      WriteNone();
      return;
    case Kind::kBool:
      WriteBool(value.bool_value());
      return;
    case Kind::kInt:
      WriteInt(value.int_value());
      return;
    case Kind::kBigInt:
      WriteBigInt(value.big_int_bytes());
      return;
    case Kind::kFloat:
      WriteFloat(value.float_value());
      return;
    case Kind::kString:
      WriteString(value.string_value());
      return;
    case Kind::kBytes:
      WriteBytes(value.string_value());
      return;
    case Kind::kTuple:
      WriteTuple(value.num_items(),
                 [&](size_t i) { Write(value.item(i)); });
      return;
    case Kind::kList:
      WriteList(value.num_items(), [&](size_t i) { Write(value.item(i)); });
      return;
    case Kind::kDict:
      WriteDict(value.num_entries(), [&](size_t i) {
        Write(value.key(i));
        Write(value.value(i));
      });
      return;
    case Kind::kSet:
    case Kind::kFrozenSet:
      SetError(absl::InvalidArgumentError(
          absl::StrCat("cannot pickle a ", KindName(value.kind()),
                       " with protocol 2")));
      WriteNone();
      return;
    case Kind::kGlobal:
      WriteGlobal(value.module(), value.name());
      return;
    case Kind::kPersistentId:
      Write(value.persistent_id());
      EmitBinPersId();
      return;
    case Kind::kObject: {
      Write(value.callable());
      Write(value.args());
      if (value.has_kwargs()) {
        SetError(absl::InvalidArgumentError(
            "cannot pickle NEWOBJ_EX keyword arguments with protocol 2"));
      }
      if (value.construction() == PickleValue::Construction::kNewObj) {
        EmitNewObj();
      } else {
        EmitReduce();
      }
      const PickleValue& appended = value.appended();
      for (size_t start = 0; start < appended.num_items();
           start += kBatchSize) {
        const size_t end = std::min(appended.num_items(), start + kBatchSize);
        if (end - start > 1) EmitMark();
        for (size_t i = start; i < end; ++i) Write(appended.item(i));
        if (end - start > 1) {
          EmitAppends();
        } else {
          EmitAppend();
        }
      }
      const PickleValue& items = value.set_items();
      for (size_t start = 0; start < items.num_entries();
           start += kBatchSize) {
        const size_t end = std::min(items.num_entries(), start + kBatchSize);
        if (end - start > 1) EmitMark();
        for (size_t i = start; i < end; ++i) {
          Write(items.key(i));
          Write(items.value(i));
        }
        if (end - start > 1) {
          EmitSetItems();
        } else {
          EmitSetItem();
        }
      }
      if (value.has_state()) {
        Write(value.state());
        EmitBuild();
      }
      return;
    }
  }
}

void PickleWriter::EmitMark() {
  Op(kMark);
  marks_.push_back(stack_size_);
}

void PickleWriter::EmitEmptyTuple() {
  Op(kEmptyTuple);
  Push();
}

void PickleWriter::EmitTuple() {
  Op(kTuple);
  PopToMark("TUPLE");
  Push();
}

void PickleWriter::EmitEmptyList() {
  Op(kEmptyList);
  Push();
}

void PickleWriter::EmitAppend() {
  Op(kAppend);
  Pop(2, "APPEND");
  Push();
}

void PickleWriter::EmitAppends() {
  Op(kAppends);
  PopToMark("APPENDS");
  Pop(1, "APPENDS");
  Push();
}

void PickleWriter::EmitEmptyDict() {
  Op(kEmptyDict);
  Push();
}

void PickleWriter::EmitSetItem() {
  Op(kSetItem);
  Pop(3, "SETITEM");
  Push();
}

void PickleWriter::EmitSetItems() {
  Op(kSetItems);
  PopToMark("SETITEMS");
  Pop(1, "SETITEMS");
  Push();
}

void PickleWriter::EmitReduce() {
  Op(kReduce);
  Pop(2, "REDUCE");
  Push();
}

void PickleWriter::EmitNewObj() {
  out_.push_back(static_cast<char>(kNewObj));
  Pop(2, "NEWOBJ");
  Push();
}

void PickleWriter::EmitBuild() {
  Op(kBuild);
  Pop(2, "BUILD");
  Push();
}

void PickleWriter::EmitBinPersId() {
  Op(kBinPersId);
  Pop(1, "BINPERSID");
  Push();
}

absl::StatusOr<std::string> PickleWriter::Finish() && {
  CHECK(marks_.empty()) << "PickleWriter::Finish: a MARK is still open";
  CHECK_EQ(stack_size_, 1u)
      << "PickleWriter::Finish: the stack must hold exactly one value";
  Op(kStop);
  if (!status_.ok()) return status_;
  return std::move(out_);
}

}  // namespace dcp
