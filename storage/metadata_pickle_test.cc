#include "storage/metadata_pickle.h"

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "c10/core/Layout.h"
#include "c10/core/ScalarType.h"
#include "core/metadata.h"
#include "glog/logging.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/pickle.h"
#include "storage/pickle_test_util.h"
#include "testing/runfiles.h"
#include "testing/status_matchers.h"
#include "testing/test_seed.h"

namespace dcp {
namespace {

using ::dcp::test::Asm;
using ::dcp::test::IsOk;
using ::dcp::test::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

using V = PickleValue;
using Kind = PickleValue::Kind;

constexpr absl::string_view kMd = "torch.distributed.checkpoint.metadata";
constexpr absl::string_view kFs = "torch.distributed.checkpoint.filesystem";
constexpr absl::string_view kUuid = "2f5b6b1e-8c47-4c41-9d8e-3e4f3b6f0a11";

// ---- The §4.5 example ---------------------------------------------------------

// Assembler shorthands in the notation of docs/format.md §4.5:
// S = BINUNICODE, G = GLOBAL.
struct Md45 {
  Asm a;
  // When set, each distinct str and global is written once followed by
  // BINPUT, and as BINGET after that (what EncodeMetadataPickle writes).
  bool memoize = false;
  std::map<std::string, int> memo;
  // Emits BINGET if `key` was memoized; otherwise returns false.
  bool Get(const std::string& key) {
    if (!memoize) return false;
    auto it = memo.find(key);
    if (it == memo.end()) return false;
    a.Op(0x68).U8(it->second);  // BINGET
    return true;
  }
  void Put(const std::string& key) {
    if (!memoize) return;
    const int index = static_cast<int>(memo.size());
    memo.emplace(key, index);
    a.Op(0x71).U8(index);  // BINPUT
  }
  Md45& S(absl::string_view s) {
    const std::string key = absl::StrCat("s", s);
    if (Get(key)) return *this;
    a.Unicode(s);
    Put(key);
    return *this;
  }
  Md45& G(absl::string_view module, absl::string_view name) {
    const std::string key = absl::StrCat("g", module, ".", name);
    if (Get(key)) return *this;
    a.Global(module, name);
    Put(key);
    return *this;
  }
  Md45& H(uint8_t op) {
    a.Op(op);
    return *this;
  }
  Md45& Int1(int v) {
    a.Op(0x4b).U8(v);
    return *this;
  }
  Md45& Int2(int v) {
    a.Op(0x4d).U16(v);
    return *this;
  }
  // G cls, EMPTY_TUPLE, NEWOBJ.
  Md45& New(absl::string_view module, absl::string_view name) {
    return G(module, name).H(0x29).H(0x81);
  }
  // G torch Size, dims, TUPLEn, TUPLE1, REDUCE (dims: two BININT1s).
  Md45& Size2(int d0, int d1) {
    return G("torch", "Size").Int1(d0).Int1(d1).H(0x86).H(0x85).H(0x52);
  }
};

// The example byte for byte as §4.5 draws it (hand-built, protocol 2, no
// memo), with `step` at offset 0 (864 bytes) and `w` after it (1180 bytes).
std::string Section45Pickle() {
  Md45 m;
  m.H(0x80).H(0x02);
  m.New(kMd, "Metadata");
  m.H(0x7d).H(0x28);
  m.S("state_dict_metadata");
  m.H(0x7d).H(0x28);
  m.S("w");
  m.New(kMd, "TensorStorageMetadata");
  m.H(0x7d).H(0x28);
  m.S("properties");
  m.New(kMd, "TensorProperties");
  m.H(0x28);
  m.G("torch", "float32");
  m.G("torch.serialization", "_get_layout").S("torch.strided").H(0x85).H(0x52);
  m.H(0x89);
  m.G(kMd, "_MEM_FORMAT_ENCODING").Int1(0).H(0x85).H(0x52);
  m.H(0x89);
  m.H(0x74).H(0x62);
  m.S("size").Size2(2, 3);
  m.S("chunks").H(0x5d).H(0x28);
  m.New(kMd, "ChunkStorageMetadata");
  m.H(0x7d).H(0x28).S("offsets").Size2(0, 0);
  m.S("sizes").Size2(2, 3).H(0x75).H(0x62);
  m.H(0x65);
  m.H(0x75).H(0x62);
  m.S("step").New(kMd, "BytesStorageMetadata");
  m.H(0x75);
  m.S("planner_data").H(0x7d).H(0x28).S("w").S("w").H(0x85);
  m.S("step").S("step").H(0x85).H(0x75);
  m.S("storage_data").H(0x7d).H(0x28);
  m.New(kMd, "MetadataIndex").H(0x7d).H(0x28);
  m.S("fqn").S("step").S("index").H(0x4e).H(0x75).H(0x62);
  m.New(kFs, "_StorageInfo").H(0x7d).H(0x28);
  m.S("relative_path").S("__0_0.distcp").S("offset").Int1(0);
  m.S("length").Int2(864).H(0x75).H(0x62);
  m.New(kMd, "MetadataIndex").H(0x7d).H(0x28);
  m.S("fqn").S("w").S("index").Int1(0).S("offset").Size2(0, 0);
  m.H(0x75).H(0x62);
  m.New(kFs, "_StorageInfo").H(0x7d).H(0x28);
  m.S("relative_path").S("__0_0.distcp").S("offset").Int2(864);
  m.S("length").Int2(1180).H(0x75).H(0x62);
  m.H(0x75);
  m.S("storage_meta").New(kMd, "StorageMeta");
  m.H(0x7d).H(0x28).S("checkpoint_id").S("/path/to/ckpt");
  m.S("save_id").S(kUuid).S("load_id").H(0x4e).H(0x75).H(0x62);
  m.H(0x75).H(0x62);
  m.H(0x2e);
  return m.a;
}

Metadata Section45Metadata() {
  Metadata md;
  TensorStorageMetadata w;
  w.properties.dtype = c10::ScalarType::Float;
  w.size = {2, 3};
  w.chunks.push_back(ChunkStorageMetadata{{0, 0}, {2, 3}});
  md.state_dict_metadata["w"] = w;
  md.state_dict_metadata["step"] = BytesStorageMetadata{};
  md.planner_data["w"] = ObjectPath{std::string("w")};
  md.planner_data["step"] = ObjectPath{std::string("step")};
  md.storage_data[MetadataIndex("step")] = StorageInfo{"__0_0.distcp", 0, 864};
  md.storage_data[MetadataIndex("w", Shape{0, 0}, 0)] =
      StorageInfo{"__0_0.distcp", 864, 1180};
  StorageMeta meta;
  meta.checkpoint_id = "/path/to/ckpt";
  meta.save_id = std::string(kUuid);
  md.storage_meta = meta;
  return md;
}

TEST(DecodeMetadataPickleTest, AnnotatedExampleOfSection45) {
  DCP_ASSERT_OK_AND_ASSIGN(Metadata md,
                           DecodeMetadataPickle(Section45Pickle()));
  EXPECT_EQ(md, Section45Metadata());
  // == ignores the index hints; check them too.
  ASSERT_EQ(md.storage_data.size(), 2u);
  EXPECT_EQ(md.storage_data.begin()->first.index, std::nullopt);
  EXPECT_EQ(md.storage_data.rbegin()->first.index, 0);
  EXPECT_EQ(md.version, std::nullopt);
}

// What EncodeMetadataPickle writes for the same content, assembled by hand:
// the §4.5 structure with std::map entry order, Python's batching (a
// single list item is APPEND) and each distinct str and global memoized.
std::string Section45Encoding() {
  Md45 m;
  m.memoize = true;
  auto index = [&](absl::string_view fqn, bool tensor) {
    m.New(kMd, "MetadataIndex").H(0x7d).H(0x28).S("fqn").S(fqn).S("index");
    if (tensor) {
      m.Int1(0).S("offset").Size2(0, 0);
    } else {
      m.H(0x4e);
    }
    m.H(0x75).H(0x62);
  };
  auto info = [&](int offset, int length) {
    m.New(kFs, "_StorageInfo").H(0x7d).H(0x28);
    m.S("relative_path").S("__0_0.distcp").S("offset");
    offset == 0 ? m.Int1(0) : m.Int2(offset);
    m.S("length").Int2(length).H(0x75).H(0x62);
  };
  m.H(0x80).H(0x02).New(kMd, "Metadata").H(0x7d).H(0x28);
  m.S("state_dict_metadata").H(0x7d).H(0x28);
  m.S("step").New(kMd, "BytesStorageMetadata");
  m.S("w").New(kMd, "TensorStorageMetadata").H(0x7d).H(0x28);
  m.S("properties").New(kMd, "TensorProperties").H(0x28);
  m.G("torch", "float32");
  m.G("torch.serialization", "_get_layout").S("torch.strided").H(0x85).H(0x52);
  m.H(0x89);
  m.G(kMd, "_MEM_FORMAT_ENCODING").Int1(0).H(0x85).H(0x52);
  m.H(0x89).H(0x74).H(0x62);
  m.S("size").Size2(2, 3);
  m.S("chunks").H(0x5d);
  m.New(kMd, "ChunkStorageMetadata").H(0x7d).H(0x28);
  m.S("offsets").Size2(0, 0).S("sizes").Size2(2, 3).H(0x75).H(0x62);
  m.H(0x61);                                       // APPEND
  m.H(0x75).H(0x62);                               // TensorStorageMetadata
  m.H(0x75);                                       // state_dict_metadata
  m.S("planner_data").H(0x7d).H(0x28);
  m.S("step").S("step").H(0x85).S("w").S("w").H(0x85).H(0x75);
  m.S("storage_data").H(0x7d).H(0x28);
  index("step", false);
  info(0, 864);
  index("w", true);
  info(864, 1180);
  m.H(0x75);
  m.S("storage_meta").New(kMd, "StorageMeta").H(0x7d).H(0x28);
  m.S("checkpoint_id").S("/path/to/ckpt");
  m.S("save_id").S(kUuid).S("load_id").H(0x4e).H(0x75).H(0x62);
  m.H(0x75).H(0x62).H(0x2e);
  return m.a;
}

TEST(EncodeMetadataPickleTest, Section45ContentEncodesAsDescribed) {
  DCP_ASSERT_OK_AND_ASSIGN(std::string bytes,
                           EncodeMetadataPickle(Section45Metadata()));
  EXPECT_EQ(bytes, Section45Encoding());
  EXPECT_THAT(DecodeMetadataPickle(bytes),
              test::IsOkAndHolds(Section45Metadata()));

  // The same structure seen through the generic reader: protocol 2 objects
  // with the §4.4 key order.
  PickleReadOptions options;
  options.allow_global = [](absl::string_view, absl::string_view) {
    return true;
  };
  DCP_ASSERT_OK_AND_ASSIGN(V root, ReadPickle(bytes, options));
  ASSERT_EQ(root.kind(), Kind::kObject);
  EXPECT_EQ(root.construction(), V::Construction::kNewObj);
  EXPECT_TRUE(root.callable().IsGlobal(kMd, "Metadata"));
  EXPECT_EQ(root.args(), V::Tuple({}));
  const V& state = root.state();
  ASSERT_EQ(state.num_entries(), 4u);
  std::vector<std::string> keys;
  for (size_t i = 0; i < state.num_entries(); ++i) {
    keys.push_back(state.key(i).string_value());
  }
  EXPECT_THAT(keys, ElementsAre("state_dict_metadata", "planner_data",
                                "storage_data", "storage_meta"));
  const V& storage = *state.FindString("storage_data");
  const V& tensor_key = storage.key(1).state();
  EXPECT_EQ(tensor_key.key(0).string_value(), "fqn");
  EXPECT_EQ(tensor_key.key(1).string_value(), "index");
  EXPECT_EQ(tensor_key.key(2).string_value(), "offset");
  EXPECT_EQ(storage.key(0).state().num_entries(), 2u);  // No offset for bytes.
  const V& bytes_item = state.FindString("state_dict_metadata")->value(0);
  EXPECT_FALSE(bytes_item.has_state());  // BytesStorageMetadata: no BUILD.
  const V& properties =
      *state.FindString("state_dict_metadata")->value(1).state().FindString(
          "properties");
  EXPECT_EQ(properties.state().DebugString(),
            "(torch.float32, torch.serialization._get_layout('torch.strided'), "
            "False, torch.distributed.checkpoint.metadata._MEM_FORMAT_ENCODING(0), "
            "False)");
}

// ---- Round trips ---------------------------------------------------------------

Metadata RichMetadata() {
  Metadata md;
  const c10::ScalarType dtypes[] = {
      c10::ScalarType::Float, c10::ScalarType::BFloat16, c10::ScalarType::Long,
      c10::ScalarType::Bool, c10::ScalarType::ComplexFloat,
      c10::ScalarType::Half, c10::ScalarType::Byte};
  int64_t file_offset = (int64_t{1} << 31) - 100;  // Crosses 2^31 (LONG1).
  for (int t = 0; t < 1100; ++t) {  // More than one SETITEMS batch.
    const std::string fqn = absl::StrCat("model.layers.", t, ".weight");
    TensorStorageMetadata tensor;
    tensor.properties.dtype = dtypes[t % 7];
    tensor.properties.requires_grad = t % 2 == 0;
    tensor.properties.pin_memory = t % 5 == 0;
    tensor.properties.memory_format = static_cast<MemoryFormat>(t % 3);
    tensor.size = {8, 70000};
    for (int64_t r = 0; r < 2; ++r) {
      ChunkStorageMetadata chunk{{r * 4, 0}, {4, 70000}};
      tensor.chunks.push_back(chunk);
      md.storage_data[MetadataIndex(fqn, chunk.offsets,
                                    t % 3 == 0 ? std::nullopt
                                               : std::optional<int64_t>(r))] =
          StorageInfo{absl::StrCat("__", r, "_0.distcp"), file_offset, 1180};
      file_offset += 1180;
    }
    md.state_dict_metadata[fqn] = tensor;
    md.planner_data[fqn] =
        ObjectPath{std::string("model"), std::string("layers"), int64_t{t},
                   std::string("weight")};
  }
  // A 0-d tensor and bytes values.
  TensorStorageMetadata scalar;
  scalar.chunks.push_back(ChunkStorageMetadata{{}, {}});
  md.state_dict_metadata["loss_scale"] = scalar;
  md.storage_data[MetadataIndex("loss_scale", Shape{}, 0)] =
      StorageInfo{"__0_0.distcp", 0, 1100};
  md.state_dict_metadata["step"] = BytesStorageMetadata{};
  md.storage_data[MetadataIndex("step")] =
      StorageInfo{"__0_0.distcp", int64_t{1} << 40, 864};
  md.planner_data["step"] = ObjectPath{std::string("step")};
  md.planner_data["caf\xc3\xa9"] = ObjectPath{};
  StorageMeta meta;
  meta.checkpoint_id = "/ckpt/run \xe2\x82\xac/7";
  meta.save_id = std::string(kUuid);
  meta.load_id = "load";
  meta.modules = {"model", "optim"};
  md.storage_meta = meta;
  md.version = "1.0.0";
  return md;
}

TEST(EncodeMetadataPickleTest, RichMetadataRoundTrips) {
  const Metadata md = RichMetadata();
  DCP_ASSERT_OK_AND_ASSIGN(std::string bytes, EncodeMetadataPickle(md));
  DCP_ASSERT_OK_AND_ASSIGN(Metadata decoded, DecodeMetadataPickle(bytes));
  EXPECT_EQ(decoded, md);
  // Index hints survive too (== ignores them).
  auto it = decoded.storage_data.begin();
  for (const auto& [key, info] : md.storage_data) {
    EXPECT_EQ(it->first.index, key.index) << key;
    ++it;
  }
  // Offsets >= 2^31 are LONG1: 0x80000000 + k as 5 bytes.
  EXPECT_NE(bytes.find(Asm().Op(0x8a).U8(5).U32(0x80000000u + 1080).U8(0)
                           .bytes()),
            std::string::npos);
  // Deterministic.
  EXPECT_THAT(EncodeMetadataPickle(md), test::IsOkAndHolds(bytes));
}

TEST(EncodeMetadataPickleTest, EmptyMetadataAndOptionalFields) {
  Metadata md;  // What an empty state dict saves: all dicts empty.
  DCP_ASSERT_OK_AND_ASSIGN(std::string bytes, EncodeMetadataPickle(md));
  EXPECT_THAT(DecodeMetadataPickle(bytes), test::IsOkAndHolds(md));
  PickleReadOptions options;
  options.allow_global = [](absl::string_view, absl::string_view) {
    return true;
  };
  DCP_ASSERT_OK_AND_ASSIGN(V root, ReadPickle(bytes, options));
  EXPECT_EQ(root.state().DebugString(),
            "{'state_dict_metadata': {}, 'planner_data': {}, "
            "'storage_data': {}, 'storage_meta': None}");

  md.storage_meta = StorageMeta{};
  md.version = "1.0.0";
  DCP_ASSERT_OK_AND_ASSIGN(bytes, EncodeMetadataPickle(md));
  DCP_ASSERT_OK_AND_ASSIGN(root, ReadPickle(bytes, options));
  EXPECT_EQ(root.state().DebugString(),
            "{'state_dict_metadata': {}, 'planner_data': {}, "
            "'storage_data': {}, 'storage_meta': "
            "torch.distributed.checkpoint.metadata.StorageMeta.__new__()."
            "__setstate__({'checkpoint_id': None, 'save_id': None, "
            "'load_id': None}), 'version': '1.0.0'}");
  EXPECT_THAT(DecodeMetadataPickle(bytes), test::IsOkAndHolds(md));
}

TEST(EncodeMetadataPickleTest, RejectsWhatPyTorchCannotRead) {
  Metadata md = Section45Metadata();
  std::get<TensorStorageMetadata>(md.state_dict_metadata["w"])
      .properties.dtype = c10::ScalarType::Undefined;
  EXPECT_THAT(EncodeMetadataPickle(md),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("tensor \"w\": dtype")));
  md = Section45Metadata();
  std::get<TensorStorageMetadata>(md.state_dict_metadata["w"])
      .properties.layout = c10::kSparse;
  EXPECT_THAT(EncodeMetadataPickle(md),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("only torch.strided")));
  md = Section45Metadata();
  std::get<TensorStorageMetadata>(md.state_dict_metadata["w"])
      .properties.memory_format = static_cast<MemoryFormat>(7);
  EXPECT_THAT(EncodeMetadataPickle(md),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("invalid memory format 7")));
  md = Section45Metadata();
  md.planner_data["\xff"] = ObjectPath{};
  EXPECT_THAT(EncodeMetadataPickle(md),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("not valid UTF-8")));
}

// ---- Python-written files -----------------------------------------------------

// A protocol-4 file shaped like Python 3.13's output for the §4.5 content:
// one FRAME, SHORT_BINUNICODE + STACK_GLOBAL, MEMOIZE after every object and
// BINGET for repeated strings and globals.
std::string Protocol4Section45() {
  Asm body;
  int memo = 0;
  std::vector<std::pair<std::string, int>> strings;  // Memoized strings.
  auto memoize = [&]() {
    body.Op(0x94);
    return memo++;
  };
  auto str = [&](absl::string_view s) {
    for (const auto& [text, index] : strings) {
      if (text == s) {
        body.Op('h').U8(index);
        return;
      }
    }
    body.ShortUnicode(s);
    strings.emplace_back(std::string(s), memoize());
  };
  std::vector<std::pair<std::string, int>> globals;
  auto global = [&](absl::string_view module, absl::string_view name) {
    const std::string key = absl::StrCat(module, ".", name);
    for (const auto& [text, index] : globals) {
      if (text == key) {
        body.Op('h').U8(index);
        return;
      }
    }
    str(module);
    str(name);
    body.Op(0x93);
    globals.emplace_back(key, memoize());
  };
  auto obj = [&](absl::string_view module, absl::string_view name) {
    global(module, name);
    body.Op(')').Op(0x81);
    memoize();
  };
  auto size = [&](int d0, int d1) {
    global("torch", "Size");
    body.BinInt1(d0).BinInt1(d1).Op(0x86);
    memoize();
    body.Op(0x85);
    memoize();
    body.Op('R');
    memoize();
  };
  auto dict = [&]() {
    body.Op('}');
    memoize();
    body.Op('(');
  };
  obj(kMd, "Metadata");
  dict();
  str("state_dict_metadata");
  dict();
  str("w");
  obj(kMd, "TensorStorageMetadata");
  dict();
  str("properties");
  obj(kMd, "TensorProperties");
  body.Op('(');
  global("torch", "float32");
  global("torch.serialization", "_get_layout");
  str("torch.strided");
  body.Op(0x85);
  memoize();
  body.Op('R');
  memoize();
  body.Op(0x89);
  global(kMd, "_MEM_FORMAT_ENCODING");
  body.BinInt1(0).Op(0x85);
  memoize();
  body.Op('R');
  memoize();
  body.Op(0x89).Op('t');
  memoize();
  body.Op('b');
  str("size");
  size(2, 3);
  str("chunks");
  body.Op(']');
  memoize();
  obj(kMd, "ChunkStorageMetadata");
  dict();
  str("offsets");
  size(0, 0);
  str("sizes");
  size(2, 3);
  body.Op('u').Op('b').Op('a').Op('u').Op('b');
  str("step");
  obj(kMd, "BytesStorageMetadata");
  body.Op('u');
  str("planner_data");
  dict();
  str("w");  // BINGET of the key memoized in state_dict_metadata.
  str("w");
  body.Op(0x85);
  memoize();
  str("step");
  str("step");
  body.Op(0x85);
  memoize();
  body.Op('u');
  str("storage_data");
  dict();
  obj(kMd, "MetadataIndex");
  dict();
  str("fqn");
  str("step");
  str("index");
  body.Op('N').Op('u').Op('b');
  obj(kFs, "_StorageInfo");
  dict();
  str("relative_path");
  str("__0_0.distcp");
  str("offset");
  body.BinInt1(0);
  str("length");
  body.Op('M').U16(864).Op('u').Op('b');
  obj(kMd, "MetadataIndex");
  dict();
  str("fqn");
  str("w");
  str("index");
  body.BinInt1(0);
  str("offset");
  size(0, 0);
  body.Op('u').Op('b');
  obj(kFs, "_StorageInfo");
  dict();
  str("relative_path");
  str("__0_0.distcp");
  str("offset");
  body.Op('M').U16(864);
  str("length");
  body.Op('M').U16(1180).Op('u').Op('b');
  body.Op('u');
  str("storage_meta");
  obj(kMd, "StorageMeta");
  dict();
  str("checkpoint_id");
  global("pathlib._local", "PosixPath");
  str("/path/to/ckpt");
  body.Op(0x85);
  memoize();
  body.Op('R');
  memoize();
  str("save_id");
  str(kUuid);
  str("load_id");
  body.Op('N').Op('u').Op('b');
  body.Op('u').Op('b').Stop();
  return Asm().Proto(4).Op(0x95).U64(body.size()).Raw(body);
}

TEST(DecodeMetadataPickleTest, Protocol4WithFrameMemoizeAndBinGet) {
  const std::string bytes = Protocol4Section45();
  DCP_ASSERT_OK_AND_ASSIGN(Metadata md, DecodeMetadataPickle(bytes));
  EXPECT_EQ(md, Section45Metadata());
}

std::string ReadTestData(absl::string_view name) {
  const std::string path =
      test::RunfilePath(absl::StrCat("storage/testdata/", name));
  std::ifstream in(path, std::ios::binary);
  CHECK(in.good()) << "cannot open " << path;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Written by CPython's pickler (protocol 4) with stand-ins for the torch 2.6
// classes; see testdata/make_fake_torch_metadata.py.
TEST(DecodeMetadataPickleTest, CPythonProtocol4Files) {
  DCP_ASSERT_OK_AND_ASSIGN(
      Metadata small,
      DecodeMetadataPickle(ReadTestData("fake_torch26_py313_small.metadata")));
  Metadata expected = Section45Metadata();
  expected.storage_meta->checkpoint_id = "/root/exp/ck1";
  EXPECT_EQ(small, expected);

  // Two FRAMEs, LONG_BINGET, LONG1 offsets, bfloat16, requires_grad.
  DCP_ASSERT_OK_AND_ASSIGN(
      Metadata large,
      DecodeMetadataPickle(ReadTestData("fake_torch26_py313_large.metadata")));
  EXPECT_EQ(large.state_dict_metadata.size(), 120u);
  EXPECT_EQ(large.storage_data.size(), 480u);
  EXPECT_EQ(large.storage_meta->checkpoint_id, "ck4");
  const auto& t7 = std::get<TensorStorageMetadata>(
      large.state_dict_metadata.at("model.layers.7.weight"));
  EXPECT_EQ(t7.properties.dtype, c10::ScalarType::BFloat16);
  EXPECT_TRUE(t7.properties.requires_grad);
  EXPECT_EQ(t7.size, (Shape{16, 16}));
  ASSERT_EQ(t7.chunks.size(), 4u);
  EXPECT_EQ(t7.chunks[3], (ChunkStorageMetadata{{12, 0}, {4, 16}}));
  const MetadataIndex key("model.layers.7.weight", Shape{12, 0});
  ASSERT_EQ(large.storage_data.count(key), 1u);
  EXPECT_EQ(large.storage_data.at(key),
            (StorageInfo{"__3_0.distcp", (int64_t{1} << 31) + 7 * 1180, 1180}));
  EXPECT_EQ(large.storage_data.find(key)->first.index, 3);
  EXPECT_EQ(large.planner_data.at("model.layers.7.weight"),
            (ObjectPath{std::string("model"), std::string("layers"),
                        int64_t{7}, std::string("weight")}));
  // Re-encoding gives a protocol-2 file with the same content.
  DCP_ASSERT_OK_AND_ASSIGN(std::string reencoded, EncodeMetadataPickle(large));
  EXPECT_THAT(DecodeMetadataPickle(reencoded), test::IsOkAndHolds(large));
}

// Real files: PyTorch 2.6.0 on Python 3.13.5 (Debian trixie), single
// process, from
//   dcp.save({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3),
//             "step": 7}, checkpoint_id="/tmp/pickle-agent/ck_w_step")
//   dcp.save({"model": {"layer": [torch.ones(2, 2, dtype=torch.bfloat16),
//                                 torch.nn.Parameter(torch.zeros(3))]},
//             "optim": {"state": {0: {"exp_avg": torch.zeros(4,
//                                               dtype=torch.float64)}},
//                       "lr": 0.5},
//             "scalar": torch.tensor(3, dtype=torch.int64)},
//            checkpoint_id="/tmp/pickle-agent/ck_nested")
// Their re-encodings by EncodeMetadataPickle were loaded back by that torch
// with dcp.load and dcp_to_torch_save.
TEST(DecodeMetadataPickleTest, Torch26WStep) {
  DCP_ASSERT_OK_AND_ASSIGN(
      Metadata md,
      DecodeMetadataPickle(ReadTestData("torch26_w_step.metadata")));
  Metadata expected = Section45Metadata();
  expected.storage_meta->checkpoint_id = "/tmp/pickle-agent/ck_w_step";
  expected.storage_meta->save_id = "9bfe60a9-415a-4689-a2b8-3a3ae61664c0";
  EXPECT_EQ(md, expected);
  DCP_ASSERT_OK_AND_ASSIGN(std::string reencoded, EncodeMetadataPickle(md));
  EXPECT_THAT(DecodeMetadataPickle(reencoded), test::IsOkAndHolds(md));
}

TEST(DecodeMetadataPickleTest, Torch26Nested) {
  DCP_ASSERT_OK_AND_ASSIGN(
      Metadata md,
      DecodeMetadataPickle(ReadTestData("torch26_nested.metadata")));
  auto tensor = [](c10::ScalarType dtype, Shape size, bool requires_grad) {
    TensorStorageMetadata t;
    t.properties.dtype = dtype;
    t.properties.requires_grad = requires_grad;
    t.chunks.push_back(ChunkStorageMetadata{Shape(size.size(), 0), size});
    t.size = std::move(size);
    return t;
  };
  Metadata expected;
  expected.state_dict_metadata["model.layer.0"] =
      tensor(c10::ScalarType::BFloat16, {2, 2}, false);
  expected.state_dict_metadata["model.layer.1"] =
      tensor(c10::ScalarType::Float, {3}, true);
  expected.state_dict_metadata["optim.state.0.exp_avg"] =
      tensor(c10::ScalarType::Double, {4}, false);
  expected.state_dict_metadata["optim.lr"] = BytesStorageMetadata{};
  expected.state_dict_metadata["scalar"] =
      tensor(c10::ScalarType::Long, {}, false);
  const std::string model = "model", layer = "layer", optim = "optim";
  expected.planner_data["model.layer.0"] = {model, layer, int64_t{0}};
  expected.planner_data["model.layer.1"] = {model, layer, int64_t{1}};
  expected.planner_data["optim.state.0.exp_avg"] = {
      optim, std::string("state"), std::string("0"), std::string("exp_avg")};
  expected.planner_data["optim.lr"] = {optim, std::string("lr")};
  expected.planner_data["scalar"] = {std::string("scalar")};
  const std::string file = "__0_0.distcp";
  expected.storage_data[MetadataIndex("optim.lr")] = {file, 0, 864};
  expected.storage_data[MetadataIndex("model.layer.0", Shape{0, 0}, 0)] = {
      file, 864, 1180};
  expected.storage_data[MetadataIndex("model.layer.1", Shape{0}, 0)] = {
      file, 2044, 1180};
  expected.storage_data[MetadataIndex("optim.state.0.exp_avg", Shape{0}, 0)] =
      {file, 3224, 1180};
  expected.storage_data[MetadataIndex("scalar", Shape{}, 0)] = {file, 4404,
                                                                1180};
  StorageMeta meta;
  meta.checkpoint_id = "/tmp/pickle-agent/ck_nested";
  meta.save_id = "36c2a626-233a-4d32-b176-aa835aa8c654";
  expected.storage_meta = meta;
  EXPECT_EQ(md, expected);
}

// ---- Tolerance: variants built as values and pickled -----------------------------

V G(absl::string_view module, absl::string_view name) {
  return V::Global(std::string(module), std::string(name));
}
V S(absl::string_view s) { return V::String(std::string(s)); }
V Obj(absl::string_view module, absl::string_view name,
      std::vector<std::pair<V, V>> fields) {
  return V::NewObj(G(module, name), V::Tuple({}), V::Dict(std::move(fields)));
}
V SizeV(std::vector<int64_t> dims) {
  std::vector<V> items;
  for (int64_t d : dims) items.push_back(V::Int(d));
  return V::Reduce(G("torch", "Size"), V::Tuple({V::Tuple(items)}));
}
V Layout(absl::string_view name) {
  return V::Reduce(G("torch.serialization", "_get_layout"),
                   V::Tuple({S(name)}));
}
V Properties(absl::string_view module, absl::string_view dtype,
             absl::string_view enum_module, absl::string_view enum_name,
             V layout = Layout("torch.strided")) {
  return V::NewObj(
      G(module, "TensorProperties"), V::Tuple({}),
      V::Tuple({G("torch", dtype), std::move(layout), V::Bool(true),
                V::Reduce(G(enum_module, enum_name), V::Tuple({V::Int(1)})),
                V::Bool(false)}));
}
V Tensor(V properties, std::vector<std::pair<V, V>> extra = {}) {
  std::vector<std::pair<V, V>> fields = {
      {S("properties"), std::move(properties)},
      {S("size"), SizeV({4})},
      {S("chunks"),
       V::List({Obj(kMd, "ChunkStorageMetadata",
                    {{S("offsets"), SizeV({0})}, {S("sizes"), SizeV({4})}})})}};
  for (auto& e : extra) fields.push_back(std::move(e));
  return Obj(kMd, "TensorStorageMetadata", std::move(fields));
}
V DefaultProperties() {
  return Properties(kMd, "float32", kMd, "_MEM_FORMAT_ENCODING");
}
V Info(std::vector<std::pair<V, V>> extra = {}) {
  std::vector<std::pair<V, V>> fields = {{S("relative_path"), S("__0_0.distcp")},
                                         {S("offset"), V::Int(0)},
                                         {S("length"), V::Int(10)}};
  for (auto& e : extra) fields.push_back(std::move(e));
  return Obj(kFs, "_StorageInfo", std::move(fields));
}
V Index(absl::string_view fqn) {
  return Obj(kMd, "MetadataIndex",
             {{S("fqn"), S(fqn)}, {S("index"), V::Int(0)},
              {S("offset"), SizeV({0})}});
}

// A Metadata value with one tensor "t"; `fields` replace or extend its state.
V MetadataValue(std::vector<std::pair<std::string, V>> fields) {
  std::vector<std::pair<std::string, V>> all = {
      {"state_dict_metadata", V::Dict({{S("t"), Tensor(DefaultProperties())}})},
      {"planner_data", V::Dict({{S("t"), V::Tuple({S("t")})}})},
      {"storage_data", V::Dict({{Index("t"), Info()}})},
      {"storage_meta", V::None()},
  };
  for (auto& [name, value] : fields) {
    bool replaced = false;
    for (auto& [existing, old] : all) {
      if (existing == name) {
        old = value;
        replaced = true;
      }
    }
    if (!replaced) all.emplace_back(name, std::move(value));
  }
  std::vector<std::pair<V, V>> entries;
  for (auto& [name, value] : all) {
    if (!value.is_none() || name == "storage_meta") {
      entries.emplace_back(S(name), std::move(value));
    }
  }
  return Obj(kMd, "Metadata", std::move(entries));
}

std::string Pickled(const V& value) {
  PickleWriter w;
  w.Write(value);
  absl::StatusOr<std::string> bytes = std::move(w).Finish();
  CHECK(bytes.ok()) << bytes.status();
  return *bytes;
}

absl::StatusOr<Metadata> DecodeValue(const V& value) {
  return DecodeMetadataPickle(Pickled(value));
}

TEST(DecodeMetadataPickleTest, BaselineValue) {
  DCP_ASSERT_OK_AND_ASSIGN(Metadata md, DecodeValue(MetadataValue({})));
  const auto& t = std::get<TensorStorageMetadata>(md.state_dict_metadata.at("t"));
  EXPECT_EQ(t.properties.memory_format, MemoryFormat::kChannelsLast);
  EXPECT_TRUE(t.properties.requires_grad);
  EXPECT_EQ(md.storage_meta, std::nullopt);
}

TEST(DecodeMetadataPickleTest, LegacyClassNames) {
  for (const auto& [module, enum_module, enum_name] :
       std::vector<std::tuple<absl::string_view, absl::string_view,
                              absl::string_view>>{
           {"torch.distributed._shard.sharded_tensor.metadata",
            "torch.distributed._shard.sharded_tensor.metadata",
            "MEM_FORMAT_ENCODING"},
           {kMd, kMd, "MEM_FORMAT_ENCODING"},
           {kMd, "torch.distributed._shard.sharded_tensor.metadata",
            "MEM_FORMAT_ENCODING"},
       }) {
    DCP_ASSERT_OK_AND_ASSIGN(
        Metadata md,
        DecodeValue(MetadataValue(
            {{"state_dict_metadata",
              V::Dict(
                  {{S("t"), Tensor(Properties(module, "float16", enum_module,
                                              enum_name))}})}})));
    const auto& t =
        std::get<TensorStorageMetadata>(md.state_dict_metadata.at("t"));
    EXPECT_EQ(t.properties.dtype, c10::ScalarType::Half) << module;
    EXPECT_EQ(t.properties.memory_format, MemoryFormat::kChannelsLast);
  }
}

TEST(DecodeMetadataPickleTest, MissingStorageMetaAndFieldDefaults) {
  // Pre-2.4: no storage_meta key at all; MetadataIndex without index.
  V md = Obj(kMd, "Metadata",
             {{S("state_dict_metadata"),
               V::Dict({{S("b"), V::NewObj(G(kMd, "BytesStorageMetadata"),
                                           V::Tuple({}))}})},
              {S("planner_data"), V::Dict({})},
              {S("storage_data"),
               V::Dict({{Obj(kMd, "MetadataIndex", {{S("fqn"), S("b")}}),
                         Info()}})}});
  DCP_ASSERT_OK_AND_ASSIGN(Metadata decoded, DecodeValue(md));
  EXPECT_EQ(decoded.storage_meta, std::nullopt);
  ASSERT_EQ(decoded.storage_data.size(), 1u);
  EXPECT_EQ(decoded.storage_data.begin()->first, MetadataIndex("b"));
  EXPECT_EQ(decoded.storage_data.begin()->first.index, std::nullopt);
  // TensorProperties without state: Python's defaults.
  DCP_ASSERT_OK_AND_ASSIGN(
      decoded,
      DecodeValue(MetadataValue(
          {{"state_dict_metadata",
            V::Dict({{S("t"), Tensor(V::NewObj(G(kMd, "TensorProperties"),
                                               V::Tuple({})))}})}})));
  EXPECT_EQ(std::get<TensorStorageMetadata>(decoded.state_dict_metadata.at("t"))
                .properties,
            TensorProperties{});
}

TEST(DecodeMetadataPickleTest, ExtraKeysAreIgnored) {
  DCP_ASSERT_OK_AND_ASSIGN(
      Metadata md,
      DecodeValue(MetadataValue({
          {"future_field", V::List({V::Int(1), S("x")})},
          {"version", S("1.0.0")},
          {"state_dict_metadata",
           V::Dict({{S("t"), Tensor(DefaultProperties(),
                                    {{S("new_thing"), V::None()}})}})},
          {"storage_data",
           V::Dict({{Index("t"), Info({{S("transform_descriptors"), V::None()},
                                       {S("extra"), V::Int(3)}})}})},
          {"storage_meta", Obj(kMd, "StorageMeta",
                               {{S("checkpoint_id"), S("/c")},
                                {S("save_id"), S("s")},
                                {S("load_id"), V::None()},
                                {S("modules"), V::List({S("m")})},
                                {S("more"), V::Float(1.0)}})},
      })));
  EXPECT_EQ(md.version, "1.0.0");
  ASSERT_TRUE(md.storage_meta.has_value());
  EXPECT_EQ(md.storage_meta->checkpoint_id, "/c");
  EXPECT_THAT(md.storage_meta->modules, ElementsAre("m"));
  // Empty transforms are as good as none.
  EXPECT_THAT(DecodeValue(MetadataValue(
                  {{"storage_data",
                    V::Dict({{Index("t"),
                              Info({{S("transform_descriptors"),
                                     V::List({})}})}})}})),
              IsOk());
}

V MetaWithCheckpointId(V id) {
  return MetadataValue({{"storage_meta",
                         Obj(kMd, "StorageMeta",
                             {{S("checkpoint_id"), std::move(id)},
                              {S("save_id"), S("s")},
                              {S("load_id"), V::None()}})}});
}

TEST(DecodeMetadataPickleTest, PathlibCheckpointIds) {
  struct Case {
    V id;
    std::string expected;
  };
  const std::vector<Case> cases = {
      // Python <= 3.12: the parts.
      {V::Reduce(G("pathlib", "PosixPath"),
                 V::Tuple({S("/"), S("root"), S("exp"), S("ck1")})),
       "/root/exp/ck1"},
      // Python 3.13: the raw string, unnormalised.
      {V::Reduce(G("pathlib._local", "PosixPath"), V::Tuple({S("/a//b/")})),
       "/a//b/"},
      {V::Reduce(G("pathlib._local", "PosixPath"), V::Tuple({S("ck4")})),
       "ck4"},
      {V::Reduce(G("pathlib._local", "PosixPath"),
                 V::Tuple({S("/x"), S("y"), S("/abs"), S("z")})),
       "/abs/z"},
      {V::Reduce(G("pathlib", "WindowsPath"),
                 V::Tuple({S("C:\\"), S("runs"), S("ck")})),
       "C:\\runs\\ck"},
      {V::Reduce(G("pathlib", "PurePosixPath"), V::Tuple({})), ""},
      {S("plain"), "plain"},
  };
  for (const Case& c : cases) {
    DCP_ASSERT_OK_AND_ASSIGN(Metadata md,
                             DecodeValue(MetaWithCheckpointId(c.id)));
    EXPECT_EQ(md.storage_meta->checkpoint_id, c.expected) << c.id;
  }
  DCP_ASSERT_OK_AND_ASSIGN(Metadata md,
                           DecodeValue(MetaWithCheckpointId(V::None())));
  EXPECT_EQ(md.storage_meta->checkpoint_id, std::nullopt);
  EXPECT_THAT(DecodeValue(MetaWithCheckpointId(V::Int(3))),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("storage_meta.checkpoint_id: expected a str, "
                                 "None or pathlib path, got 3")));
}

TEST(DecodeMetadataPickleTest, PlannerDataShapes) {
  // None or a custom planner's non-dict: ignored.
  for (V planner : {V::None(), V::List({V::Int(1)}), S("custom")}) {
    V md = MetadataValue({});
    DCP_ASSERT_OK_AND_ASSIGN(
        Metadata decoded,
        DecodeValue(Obj(kMd, "Metadata",
                        {{S("state_dict_metadata"), V::Dict({})},
                         {S("planner_data"), planner},
                         {S("storage_data"), V::Dict({})},
                         {S("storage_meta"), V::None()}})));
    EXPECT_TRUE(decoded.planner_data.empty()) << planner;
  }
  // A dict whose values are not paths: an error naming the key.
  EXPECT_THAT(
      DecodeValue(MetadataValue(
          {{"planner_data", V::Dict({{S("t"), V::Tuple({V::Float(1.5)})}})}})),
      StatusIs(absl::StatusCode::kDataLoss,
               HasSubstr("planner_data[\"t\"][0]: expected a str or int path "
                         "element, got 1.5")));
  // Lists are accepted as paths.
  DCP_ASSERT_OK_AND_ASSIGN(
      Metadata md, DecodeValue(MetadataValue(
                       {{"planner_data",
                         V::Dict({{S("t"), V::List({S("a"), V::Int(2)})}})}})));
  EXPECT_EQ(md.planner_data.at("t"),
            (ObjectPath{std::string("a"), int64_t{2}}));
}

TEST(DecodeMetadataPickleTest, UnsupportedContentIsNamed) {
  // An unknown dtype.
  EXPECT_THAT(
      DecodeValue(MetadataValue(
          {{"state_dict_metadata",
            V::Dict({{S("t"), Tensor(Properties(kMd, "float8_e4m3fn", kMd,
                                                "_MEM_FORMAT_ENCODING"))}})}})),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("state_dict_metadata[\"t\"].properties.dtype: "
                         "unsupported dtype torch.float8_e4m3fn")));
  // A sparse layout.
  EXPECT_THAT(
      DecodeValue(MetadataValue(
          {{"state_dict_metadata",
            V::Dict({{S("t"), Tensor(Properties(kMd, "float32", kMd,
                                                "_MEM_FORMAT_ENCODING",
                                                Layout("torch.sparse_coo")))}})}})),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("unsupported layout torch.sparse_coo")));
  // Any other global.
  EXPECT_THAT(DecodeValue(MetadataValue({{"planner_data", G("os", "system")}})),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("unsupported global \"os.system\"")));
  EXPECT_THAT(
      DecodeValue(MetadataValue({{"storage_data",
                                  V::Dict({{Index("t"),
                                            Obj("my.storage", "Info", {})}})}})),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("unsupported global \"my.storage.Info\"")));
  // A custom storage layout.
  EXPECT_THAT(DecodeValue(MetadataValue({{"storage_data", V::List({})}})),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("custom storage layouts are not supported")));
  // Storage transforms.
  EXPECT_THAT(
      DecodeValue(MetadataValue(
          {{"storage_data",
            V::Dict({{Index("t"), Info({{S("transform_descriptors"),
                                         V::List({S("zstd")})}})}})}})),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("transforms ['zstd']")));
}

TEST(DecodeMetadataPickleTest, SchemaViolationsAreDataLoss) {
  EXPECT_THAT(DecodeMetadataPickle(Asm().Proto(2).Op('}').Stop()),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("root: expected a "
                                 "torch.distributed.checkpoint.metadata."
                                 "Metadata, got {} (pickle byte 2)")));
  EXPECT_THAT(DecodeValue(Obj(kMd, "Metadata", {})),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("missing field \"state_dict_metadata\"")));
  EXPECT_THAT(
      DecodeValue(MetadataValue(
          {{"state_dict_metadata",
            V::Dict({{S("t"), Obj(kMd, "TensorStorageMetadata",
                                  {{S("properties"), DefaultProperties()},
                                   {S("size"), SizeV({4})},
                                   {S("chunks"),
                                    V::List({Obj(kMd, "ChunkStorageMetadata",
                                                 {{S("offsets"), SizeV({0})},
                                                  {S("sizes"),
                                                   V::Tuple({S("4")})}})})}})}})}})),
      StatusIs(absl::StatusCode::kDataLoss,
               HasSubstr("state_dict_metadata[\"t\"].chunks[0].sizes[0]: "
                         "expected an int dimension, got '4'")));
  EXPECT_THAT(
      DecodeValue(MetadataValue(
          {{"storage_data",
            V::Dict({{Index("t"),
                      Obj(kFs, "_StorageInfo",
                          {{S("relative_path"), S("f")},
                           {S("offset"), V::Int(-1)},
                           {S("length"), V::Int(1)}})}})}})),
      StatusIs(absl::StatusCode::kDataLoss,
               HasSubstr("storage_data[\"t\"].offset: expected a non-negative "
                         "offset, got -1")));
  EXPECT_THAT(DecodeValue(MetadataValue(
                  {{"storage_data", V::Dict({{S("t"), Info()}})}})),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("storage_data[0].key: expected a "
                                 "MetadataIndex")));
  EXPECT_THAT(
      DecodeValue(MetadataValue(
          {{"state_dict_metadata",
            V::Dict({{S("t"), Tensor(V::NewObj(G(kMd, "TensorProperties"),
                                               V::Tuple({}),
                                               V::Tuple({V::Int(1)})))}})}})),
      StatusIs(absl::StatusCode::kDataLoss, HasSubstr("a 5-tuple")));
  // Trailing bytes after STOP.
  EXPECT_THAT(DecodeMetadataPickle(Section45Pickle() + "x"),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("trailing bytes")));
}

// ---- Hostile input -----------------------------------------------------------------

TEST(DecodeMetadataPickleTest, EveryTruncationFails) {
  const std::string bytes = Protocol4Section45();
  for (size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_THAT(DecodeMetadataPickle(absl::string_view(bytes).substr(0, n)),
                StatusIs(absl::StatusCode::kDataLoss))
        << n;
  }
  DCP_ASSERT_OK_AND_ASSIGN(std::string encoded,
                           EncodeMetadataPickle(Section45Metadata()));
  for (size_t n = 0; n < encoded.size(); ++n) {
    EXPECT_THAT(DecodeMetadataPickle(absl::string_view(encoded).substr(0, n)),
                StatusIs(absl::StatusCode::kDataLoss))
        << n;
  }
}

TEST(DecodeMetadataPickleTest, RandomMutationsNeverCrash) {
  const uint32_t seed = dcp::test::TestSeed();
  SCOPED_TRACE(absl::StrCat("DCP_TEST_SEED=", seed));
  std::mt19937 rng(seed);
  const std::vector<std::string> inputs = {
      Protocol4Section45(), Section45Pickle(),
      ReadTestData("fake_torch26_py313_small.metadata"),
      ReadTestData("torch26_w_step.metadata")};
  int decoded = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string input = inputs[iter % inputs.size()];
    const int edits = 1 + rng() % 3;
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng() % input.size();
      switch (rng() % 3) {
        case 0:
          input[at] = static_cast<char>(rng());
          break;
        case 1:
          input[at] ^= static_cast<char>(1u << (rng() % 8));
          break;
        default:
          input.erase(at, 1 + rng() % 8);
          break;
      }
      if (input.empty()) input = "x";
    }
    absl::StatusOr<Metadata> md = DecodeMetadataPickle(input);
    if (md.ok()) {
      ++decoded;
    } else {
      EXPECT_FALSE(md.status().message().empty());
    }
  }
  LOG(INFO) << decoded << " of 3000 mutated files still decoded";
  // Both outcomes occur (mutations in string payloads still decode).
  EXPECT_GT(decoded, 0);
  EXPECT_LT(decoded, 3000);
}

}  // namespace
}  // namespace dcp
