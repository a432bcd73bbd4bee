#include "storage/metadata_pickle.h"

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "c10/core/Layout.h"
#include "c10/core/ScalarType.h"
#include "core/metadata.h"
#include "core/status.h"
#include "storage/pickle.h"

namespace dcp {
namespace {

constexpr absl::string_view kMetadataModule =
    "torch.distributed.checkpoint.metadata";
constexpr absl::string_view kLegacyMetadataModule =
    "torch.distributed._shard.sharded_tensor.metadata";
constexpr absl::string_view kFilesystemModule =
    "torch.distributed.checkpoint.filesystem";
constexpr absl::string_view kStrided = "torch.strided";

// ---- Encoding ----------------------------------------------------------------

class Encoder {
 public:
  absl::StatusOr<std::string> Encode(const Metadata& md) && {
    Dataclass(kMetadataModule, "Metadata", md.version.has_value() ? 5 : 4,
              [&](size_t i) {
                switch (i) {
                  case 0:
                    w_.WriteString("state_dict_metadata");
                    WriteMap(md.state_dict_metadata,
                             [&](const std::string& fqn,
                                 const StorageMetadata& item) {
                               w_.WriteString(fqn);
                               StorageMetadataValue(fqn, item);
                             });
                    return;
                  case 1:
                    w_.WriteString("planner_data");
                    WriteMap(md.planner_data, [&](const std::string& fqn,
                                                  const ObjectPath& path) {
                      w_.WriteString(fqn);
                      Path(path);
                    });
                    return;
                  case 2:
                    w_.WriteString("storage_data");
                    WriteMap(md.storage_data, [&](const MetadataIndex& index,
                                                  const StorageInfo& info) {
                      Index(index);
                      Info(info);
                    });
                    return;
                  case 3:
                    w_.WriteString("storage_meta");
                    if (md.storage_meta.has_value()) {
                      Meta(*md.storage_meta);
                    } else {
                      w_.WriteNone();
                    }
                    return;
                  default:
                    w_.WriteString("version");
                    w_.WriteString(*md.version);
                    return;
                }
              });
    absl::StatusOr<std::string> bytes = std::move(w_).Finish();
    DCP_RETURN_IF_ERROR(status_);
    return bytes;
  }

 private:
  template <typename Map, typename Fn>
  void WriteMap(const Map& map, Fn write_entry) {
    auto it = map.begin();
    w_.WriteDict(map.size(), [&](size_t) {
      write_entry(it->first, it->second);
      ++it;
    });
  }

  // `GLOBAL cls, EMPTY_TUPLE, NEWOBJ`, then the state dict and BUILD unless
  // it has no entries.
  void Dataclass(absl::string_view module, absl::string_view name,
                 size_t num_fields,
                 absl::FunctionRef<void(size_t)> write_field) {
    w_.WriteGlobal(module, name);
    w_.EmitEmptyTuple();
    w_.EmitNewObj();
    if (num_fields == 0) return;
    w_.WriteDict(num_fields, write_field);
    w_.EmitBuild();
  }

  void Fail(absl::Status status) {
    if (status_.ok()) status_ = std::move(status);
  }

  void Size(const Shape& shape) {
    w_.WriteGlobal("torch", "Size");
    w_.WriteTuple(1, [&](size_t) {
      w_.WriteTuple(shape.size(), [&](size_t i) { w_.WriteInt(shape[i]); });
    });
    w_.EmitReduce();
  }

  void Path(const ObjectPath& path) {
    w_.WriteTuple(path.size(), [&](size_t i) {
      if (const auto* key = std::get_if<std::string>(&path[i])) {
        w_.WriteString(*key);
      } else {
        w_.WriteInt(std::get<int64_t>(path[i]));
      }
    });
  }

  void Properties(absl::string_view fqn, const TensorProperties& p) {
    Dataclass(kMetadataModule, "TensorProperties", 0, [](size_t) {});
    w_.WriteTuple(5, [&](size_t i) {
      switch (i) {
        case 0: {
          const absl::string_view name = DtypeName(p.dtype);
          if (name == "unknown") {
            Fail(absl::InvalidArgumentError(absl::StrCat(
                "cannot encode tensor \"", absl::CEscape(fqn), "\": dtype ",
                static_cast<int>(p.dtype), " has no PyTorch name")));
          }
          w_.WriteGlobal("torch", name);
          return;
        }
        case 1:
          if (p.layout != c10::kStrided) {
            std::ostringstream layout;
            layout << p.layout;
            Fail(absl::InvalidArgumentError(absl::StrCat(
                "cannot encode tensor \"", absl::CEscape(fqn), "\": layout ",
                layout.str(), " is not supported (only torch.strided)")));
          }
          w_.WriteGlobal("torch.serialization", "_get_layout");
          w_.WriteTuple(1, [&](size_t) { w_.WriteString(kStrided); });
          w_.EmitReduce();
          return;
        case 2:
          w_.WriteBool(p.requires_grad);
          return;
        case 3: {
          const int format = static_cast<int>(p.memory_format);
          if (format < 0 || format > 2) {
            Fail(absl::InvalidArgumentError(absl::StrCat(
                "cannot encode tensor \"", absl::CEscape(fqn),
                "\": invalid memory format ", format)));
          }
          w_.WriteGlobal(kMetadataModule, "_MEM_FORMAT_ENCODING");
          w_.WriteTuple(1, [&](size_t) { w_.WriteInt(format); });
          w_.EmitReduce();
          return;
        }
        default:
          w_.WriteBool(p.pin_memory);
          return;
      }
    });
    w_.EmitBuild();
  }

  void StorageMetadataValue(absl::string_view fqn,
                            const StorageMetadata& item) {
    if (std::holds_alternative<BytesStorageMetadata>(item)) {
      Dataclass(kMetadataModule, "BytesStorageMetadata", 0, [](size_t) {});
      return;
    }
    const auto& tensor = std::get<TensorStorageMetadata>(item);
    Dataclass(kMetadataModule, "TensorStorageMetadata", 3, [&](size_t i) {
      switch (i) {
        case 0:
          w_.WriteString("properties");
          Properties(fqn, tensor.properties);
          return;
        case 1:
          w_.WriteString("size");
          Size(tensor.size);
          return;
        default:
          w_.WriteString("chunks");
          w_.WriteList(tensor.chunks.size(), [&](size_t c) {
            const ChunkStorageMetadata& chunk = tensor.chunks[c];
            Dataclass(kMetadataModule, "ChunkStorageMetadata", 2,
                      [&](size_t f) {
                        w_.WriteString(f == 0 ? "offsets" : "sizes");
                        Size(f == 0 ? chunk.offsets : chunk.sizes);
                      });
          });
          return;
      }
    });
  }

  // MetadataIndex's __init__ sets fqn, index, then offset only if not None.
  void Index(const MetadataIndex& index) {
    Dataclass(kMetadataModule, "MetadataIndex",
              index.offset.has_value() ? 3 : 2, [&](size_t i) {
                switch (i) {
                  case 0:
                    w_.WriteString("fqn");
                    w_.WriteString(index.fqn);
                    return;
                  case 1:
                    w_.WriteString("index");
                    if (index.index.has_value()) {
                      w_.WriteInt(*index.index);
                    } else {
                      w_.WriteNone();
                    }
                    return;
                  default:
                    w_.WriteString("offset");
                    Size(*index.offset);
                    return;
                }
              });
  }

  void Info(const StorageInfo& info) {
    Dataclass(kFilesystemModule, "_StorageInfo", 3, [&](size_t i) {
      switch (i) {
        case 0:
          w_.WriteString("relative_path");
          w_.WriteString(info.relative_path);
          return;
        case 1:
          w_.WriteString("offset");
          w_.WriteInt(info.offset);
          return;
        default:
          w_.WriteString("length");
          w_.WriteInt(info.length);
          return;
      }
    });
  }

  void OptionalString(const std::optional<std::string>& s) {
    if (s.has_value()) {
      w_.WriteString(*s);
    } else {
      w_.WriteNone();
    }
  }

  void Meta(const StorageMeta& meta) {
    Dataclass(kMetadataModule, "StorageMeta", meta.modules.empty() ? 3 : 4,
              [&](size_t i) {
                switch (i) {
                  case 0:
                    w_.WriteString("checkpoint_id");
                    OptionalString(meta.checkpoint_id);
                    return;
                  case 1:
                    w_.WriteString("save_id");
                    OptionalString(meta.save_id);
                    return;
                  case 2:
                    w_.WriteString("load_id");
                    OptionalString(meta.load_id);
                    return;
                  default:
                    w_.WriteString("modules");
                    w_.WriteList(meta.modules.size(), [&](size_t m) {
                      w_.WriteString(meta.modules[m]);
                    });
                    return;
                }
              });
  }

  // Memoized: a .metadata names the same classes, keys and file names in
  // every entry.
  PickleWriter w_{PickleWriterOptions{/*memoize=*/true}};
  absl::Status status_;
};

// ---- Decoding ----------------------------------------------------------------

using Kind = PickleValue::Kind;

bool IsAllowedGlobal(absl::string_view module, absl::string_view name) {
  if (module == "torch") return true;  // Size, dtypes; checked when decoded.
  if (module == kMetadataModule) {
    for (absl::string_view allowed :
         {"Metadata", "TensorStorageMetadata", "TensorProperties",
          "ChunkStorageMetadata", "BytesStorageMetadata", "MetadataIndex",
          "StorageMeta", "_MEM_FORMAT_ENCODING", "MEM_FORMAT_ENCODING"}) {
      if (name == allowed) return true;
    }
    return false;
  }
  if (module == kLegacyMetadataModule) {
    return name == "TensorProperties" || name == "MEM_FORMAT_ENCODING";
  }
  if (module == kFilesystemModule) return name == "_StorageInfo";
  if (module == "torch.serialization") return name == "_get_layout";
  if (module == "pathlib" || module == "pathlib._local") {
    return name == "PosixPath" || name == "WindowsPath" ||
           name == "PurePosixPath" || name == "PureWindowsPath";
  }
  return false;
}

// At most this many bytes of a key are quoted in a field path: a hostile
// key may be megabytes long.
constexpr size_t kMaxQuotedKey = 200;

std::string Quote(absl::string_view s) {
  if (s.size() > kMaxQuotedKey) {
    return absl::StrCat("\"", absl::CEscape(s.substr(0, kMaxQuotedKey)),
                        "\"... (", s.size(), " bytes)");
  }
  return absl::StrCat("\"", absl::CEscape(s), "\"");
}

// What a decoded std::map entry costs beyond its key and value (tree links).
constexpr uint64_t kMapNodeBytes = 48;

std::string Describe(const PickleValue& v) {
  return absl::StrCat(v.DebugString(80), " (pickle byte ", v.offset(), ")");
}

// Converts the pickle into dcp::Metadata, charging every string it copies
// and every element it creates to `budget`: a memoized value is copied at
// each reference, so the result can be far larger than the pickle.
class Decoder {
 public:
  explicit Decoder(DecodeBudget& budget) : budget_(budget) {}

  absl::StatusOr<Metadata> Decode(const PickleValue& root);

 private:
  // A field path such as `state_dict_metadata["w"].chunks[0]`.
  static std::string Field(absl::string_view where, absl::string_view field) {
    return absl::StrCat(where, where.empty() ? "" : ".", field);
  }
  static std::string Key(absl::string_view where, absl::string_view key) {
    return absl::StrCat(where, "[", Quote(key), "]");
  }
  static std::string Index(absl::string_view where, size_t i) {
    return absl::StrCat(where, "[", i, "]");
  }

  static absl::Status Mismatch(absl::string_view where,
                               absl::string_view expected,
                               const PickleValue& got) {
    return absl::DataLossError(absl::StrCat(
        ".metadata ", where.empty() ? "root" : where, ": expected ", expected,
        ", got ", Describe(got)));
  }
  static absl::Status Unsupported(absl::string_view where,
                                  absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(
        ".metadata ", where.empty() ? "root" : where, ": ", what));
  }

  // Whether `v` is an instance `module.name` built by NEWOBJ (dataclasses).
  static bool IsInstance(const PickleValue& v,
                         std::initializer_list<absl::string_view> modules,
                         absl::string_view name) {
    if (v.kind() != Kind::kObject ||
        v.construction() != PickleValue::Construction::kNewObj) {
      return false;
    }
    for (absl::string_view module : modules) {
      if (v.callable().IsGlobal(module, name)) return true;
    }
    return false;
  }

  // The BUILD dict of a dataclass instance, or null if it has none.
  static absl::StatusOr<const PickleValue*> State(absl::string_view where,
                                                  const PickleValue& v) {
    if (!v.has_state()) return nullptr;
    const PickleValue& state = v.state();
    if (state.kind() != Kind::kDict) {
      return Mismatch(Field(where, "__dict__"), "a dict", state);
    }
    return &state;
  }

  static const PickleValue* Get(const PickleValue* state,
                                absl::string_view key) {
    return state == nullptr ? nullptr : state->FindString(key);
  }

  static absl::StatusOr<const PickleValue*> Require(absl::string_view where,
                                                    const PickleValue* state,
                                                    absl::string_view key) {
    const PickleValue* v = Get(state, key);
    if (v == nullptr) {
      return absl::DataLossError(absl::StrCat(".metadata ", where,
                                              ": missing field \"", key, "\""));
    }
    return v;
  }

  absl::Status Charge(absl::string_view where, uint64_t bytes) {
    absl::Status status = budget_.Charge(bytes);
    if (status.ok()) return status;
    return Annotate(status,
                    absl::StrCat("at ", where.empty() ? "root" : where));
  }
  absl::StatusOr<std::string> String(absl::string_view where,
                                     const PickleValue& v) {
    if (v.kind() != Kind::kString) return Mismatch(where, "a str", v);
    DCP_RETURN_IF_ERROR(
        Charge(where, sizeof(std::string) + v.string_value().size()));
    return v.string_value();
  }
  absl::StatusOr<std::optional<std::string>> OptionalString(
      absl::string_view where, const PickleValue* v) {
    if (v == nullptr || v->is_none()) return std::nullopt;
    DCP_ASSIGN_OR_RETURN(std::string s, String(where, *v));
    return s;
  }
  static absl::StatusOr<int64_t> Int(absl::string_view where,
                                     const PickleValue& v) {
    if (v.kind() != Kind::kInt) return Mismatch(where, "an int", v);
    return v.int_value();
  }
  static absl::StatusOr<bool> Bool(absl::string_view where,
                                   const PickleValue& v) {
    if (v.kind() != Kind::kBool) return Mismatch(where, "a bool", v);
    return v.bool_value();
  }
  static bool IsSequence(const PickleValue& v) {
    return v.kind() == Kind::kTuple || v.kind() == Kind::kList;
  }

  absl::StatusOr<Shape> Size(absl::string_view where, const PickleValue& v);
  absl::StatusOr<std::string> PathString(absl::string_view where,
                                         const PickleValue& v);
  absl::StatusOr<TensorProperties> Properties(absl::string_view where,
                                              const PickleValue& v);
  absl::StatusOr<StorageMetadata> Item(absl::string_view where,
                                       const PickleValue& v);
  absl::StatusOr<ObjectPath> Path(absl::string_view where,
                                  const PickleValue& v);
  absl::StatusOr<MetadataIndex> IndexKey(absl::string_view where,
                                         const PickleValue& v);
  absl::StatusOr<StorageInfo> Info(absl::string_view where,
                                   const PickleValue& v);
  absl::StatusOr<StorageMeta> Meta(absl::string_view where,
                                   const PickleValue& v);

  DecodeBudget& budget_;
};

absl::StatusOr<Shape> Decoder::Size(absl::string_view where,
                                    const PickleValue& v) {
  // torch.Size((d0, d1, ...)); a plain tuple or list of ints is accepted too.
  const PickleValue* dims = &v;
  if (v.kind() == Kind::kObject &&
      v.construction() == PickleValue::Construction::kReduce &&
      v.callable().IsGlobal("torch", "Size") && v.args().num_items() == 1) {
    dims = &v.args().item(0);
  }
  if (!IsSequence(*dims)) return Mismatch(where, "a torch.Size", v);
  DCP_RETURN_IF_ERROR(Charge(where, sizeof(Shape) + sizeof(int64_t) *
                                                        dims->num_items()));
  Shape shape;
  shape.reserve(dims->num_items());
  for (size_t i = 0; i < dims->num_items(); ++i) {
    const PickleValue& d = dims->item(i);
    if (d.kind() != Kind::kInt) {
      return Mismatch(Index(where, i), "an int dimension", d);
    }
    shape.push_back(d.int_value());
  }
  return shape;
}

absl::StatusOr<std::string> Decoder::PathString(absl::string_view where,
                                                const PickleValue& v) {
  if (v.kind() == Kind::kString) return String(where, v);
  if (v.kind() != Kind::kObject ||
      v.construction() != PickleValue::Construction::kReduce ||
      v.callable().kind() != Kind::kGlobal ||
      (v.callable().module() != "pathlib" &&
       v.callable().module() != "pathlib._local")) {
    return Mismatch(where, "a str, None or pathlib path", v);
  }
  // Python <= 3.12 pickles the parts ('/', 'a', 'b'); 3.13 the raw
  // constructor arguments ('/a/b',). Both join the same way.
  const bool windows = v.callable().name() == "WindowsPath" ||
                       v.callable().name() == "PureWindowsPath";
  const char sep = windows ? '\\' : '/';
  std::string path;
  const PickleValue& parts = v.args();
  for (size_t i = 0; i < parts.num_items(); ++i) {
    DCP_ASSIGN_OR_RETURN(std::string part,
                         String(Index(Field(where, "parts"), i), parts.item(i)));
    if (part.empty()) continue;
    const bool absolute =
        part[0] == '/' || (windows && (part[0] == '\\' ||
                                       (part.size() >= 2 && part[1] == ':')));
    if (path.empty() || absolute) {
      path = std::move(part);
    } else {
      if (path.back() != sep && !(windows && path.back() == '/')) {
        path.push_back(sep);
      }
      path += part;
    }
  }
  return path;
}

absl::StatusOr<TensorProperties> Decoder::Properties(absl::string_view where,
                                                     const PickleValue& v) {
  if (!IsInstance(v, {kMetadataModule, kLegacyMetadataModule},
                  "TensorProperties")) {
    return Mismatch(where, "a TensorProperties", v);
  }
  TensorProperties p;
  if (!v.has_state()) return p;
  // 2.6 pickles the 5-tuple of __getstate__; a dict is accepted as well.
  const PickleValue& state = v.state();
  const PickleValue* fields[5] = {nullptr, nullptr, nullptr, nullptr, nullptr};
  static constexpr absl::string_view kNames[5] = {
      "dtype", "layout", "requires_grad", "memory_format", "pin_memory"};
  if (state.kind() == Kind::kTuple) {
    if (state.num_items() != 5) {
      return Mismatch(Field(where, "__setstate__"), "a 5-tuple", state);
    }
    for (int i = 0; i < 5; ++i) fields[i] = &state.item(i);
  } else if (state.kind() == Kind::kDict) {
    for (int i = 0; i < 5; ++i) fields[i] = state.FindString(kNames[i]);
  } else {
    return Mismatch(Field(where, "__setstate__"), "a 5-tuple", state);
  }
  if (const PickleValue* dtype = fields[0]; dtype != nullptr) {
    if (dtype->kind() != Kind::kGlobal || dtype->module() != "torch") {
      return Mismatch(Field(where, "dtype"), "a torch dtype", *dtype);
    }
    absl::StatusOr<c10::ScalarType> scalar_type = DtypeFromName(dtype->name());
    if (!scalar_type.ok()) {
      return Unsupported(Field(where, "dtype"),
                         absl::StrCat("unsupported dtype torch.",
                                      dtype->name()));
    }
    p.dtype = *scalar_type;
  }
  if (const PickleValue* layout = fields[1]; layout != nullptr) {
    std::string name;
    if (layout->kind() == Kind::kObject &&
        layout->callable().IsGlobal("torch.serialization", "_get_layout") &&
        layout->args().num_items() == 1 &&
        layout->args().item(0).kind() == Kind::kString) {
      name = layout->args().item(0).string_value();
    } else if (layout->kind() == Kind::kGlobal &&
               layout->module() == "torch") {
      name = absl::StrCat("torch.", layout->name());
    } else {
      return Mismatch(Field(where, "layout"), "a torch layout", *layout);
    }
    if (name != kStrided) {
      return Unsupported(Field(where, "layout"),
                         absl::StrCat("unsupported layout ", name,
                                      " (only torch.strided)"));
    }
    p.layout = c10::kStrided;
  }
  if (fields[2] != nullptr) {
    DCP_ASSIGN_OR_RETURN(p.requires_grad,
                         Bool(Field(where, "requires_grad"), *fields[2]));
  }
  if (const PickleValue* format = fields[3]; format != nullptr) {
    const std::string field = Field(where, "memory_format");
    bool is_enum = false;
    if (format->kind() == Kind::kObject &&
        format->construction() == PickleValue::Construction::kReduce &&
        format->args().num_items() == 1) {
      for (absl::string_view module : {kMetadataModule, kLegacyMetadataModule}) {
        for (absl::string_view name :
             {"_MEM_FORMAT_ENCODING", "MEM_FORMAT_ENCODING"}) {
          is_enum = is_enum || format->callable().IsGlobal(module, name);
        }
      }
    }
    if (!is_enum) return Mismatch(field, "a _MEM_FORMAT_ENCODING", *format);
    DCP_ASSIGN_OR_RETURN(int64_t value, Int(field, format->args().item(0)));
    if (value < 0 || value > 2) {
      return Mismatch(field, "a memory format 0, 1 or 2",
                      format->args().item(0));
    }
    p.memory_format = static_cast<MemoryFormat>(value);
  }
  if (fields[4] != nullptr) {
    DCP_ASSIGN_OR_RETURN(p.pin_memory,
                         Bool(Field(where, "pin_memory"), *fields[4]));
  }
  return p;
}

absl::StatusOr<StorageMetadata> Decoder::Item(absl::string_view where,
                                              const PickleValue& v) {
  if (IsInstance(v, {kMetadataModule}, "BytesStorageMetadata")) {
    return BytesStorageMetadata{};
  }
  if (!IsInstance(v, {kMetadataModule}, "TensorStorageMetadata")) {
    return Mismatch(where, "a TensorStorageMetadata or BytesStorageMetadata",
                    v);
  }
  DCP_ASSIGN_OR_RETURN(const PickleValue* state, State(where, v));
  DCP_RETURN_IF_ERROR(Charge(where, sizeof(TensorStorageMetadata)));
  TensorStorageMetadata tensor;
  DCP_ASSIGN_OR_RETURN(const PickleValue* properties,
                       Require(where, state, "properties"));
  DCP_ASSIGN_OR_RETURN(tensor.properties,
                       Properties(Field(where, "properties"), *properties));
  DCP_ASSIGN_OR_RETURN(const PickleValue* size, Require(where, state, "size"));
  DCP_ASSIGN_OR_RETURN(tensor.size, Size(Field(where, "size"), *size));
  DCP_ASSIGN_OR_RETURN(const PickleValue* chunks,
                       Require(where, state, "chunks"));
  const std::string chunks_where = Field(where, "chunks");
  if (!IsSequence(*chunks)) return Mismatch(chunks_where, "a list", *chunks);
  DCP_RETURN_IF_ERROR(Charge(chunks_where, sizeof(ChunkStorageMetadata) *
                                               chunks->num_items()));
  tensor.chunks.reserve(chunks->num_items());
  for (size_t i = 0; i < chunks->num_items(); ++i) {
    const std::string chunk_where = Index(chunks_where, i);
    const PickleValue& chunk = chunks->item(i);
    if (!IsInstance(chunk, {kMetadataModule}, "ChunkStorageMetadata")) {
      return Mismatch(chunk_where, "a ChunkStorageMetadata", chunk);
    }
    DCP_ASSIGN_OR_RETURN(const PickleValue* chunk_state,
                         State(chunk_where, chunk));
    ChunkStorageMetadata c;
    DCP_ASSIGN_OR_RETURN(const PickleValue* offsets,
                         Require(chunk_where, chunk_state, "offsets"));
    DCP_ASSIGN_OR_RETURN(c.offsets,
                         Size(Field(chunk_where, "offsets"), *offsets));
    DCP_ASSIGN_OR_RETURN(const PickleValue* sizes,
                         Require(chunk_where, chunk_state, "sizes"));
    DCP_ASSIGN_OR_RETURN(c.sizes, Size(Field(chunk_where, "sizes"), *sizes));
    tensor.chunks.push_back(std::move(c));
  }
  return tensor;
}

absl::StatusOr<ObjectPath> Decoder::Path(absl::string_view where,
                                         const PickleValue& v) {
  if (!IsSequence(v)) return Mismatch(where, "a tuple path", v);
  DCP_RETURN_IF_ERROR(Charge(where, sizeof(ObjectPath) +
                                        sizeof(ObjectPath::value_type) *
                                            v.num_items()));
  ObjectPath path;
  path.reserve(v.num_items());
  for (size_t i = 0; i < v.num_items(); ++i) {
    const PickleValue& element = v.item(i);
    if (element.kind() == Kind::kString) {
      DCP_RETURN_IF_ERROR(
          Charge(where, element.string_value().size()));  // Beyond the slot.
      path.emplace_back(element.string_value());
    } else if (element.kind() == Kind::kInt) {
      path.emplace_back(element.int_value());
    } else {
      return Mismatch(Index(where, i), "a str or int path element", element);
    }
  }
  return path;
}

absl::StatusOr<MetadataIndex> Decoder::IndexKey(absl::string_view where,
                                                const PickleValue& v) {
  if (!IsInstance(v, {kMetadataModule}, "MetadataIndex")) {
    return Mismatch(where, "a MetadataIndex", v);
  }
  DCP_ASSIGN_OR_RETURN(const PickleValue* state, State(where, v));
  MetadataIndex index;
  DCP_ASSIGN_OR_RETURN(const PickleValue* fqn, Require(where, state, "fqn"));
  DCP_ASSIGN_OR_RETURN(index.fqn, String(Field(where, "fqn"), *fqn));
  if (const PickleValue* offset = Get(state, "offset");
      offset != nullptr && !offset->is_none()) {
    DCP_ASSIGN_OR_RETURN(index.offset, Size(Field(where, "offset"), *offset));
  }
  if (const PickleValue* hint = Get(state, "index");
      hint != nullptr && !hint->is_none()) {
    DCP_ASSIGN_OR_RETURN(index.index, Int(Field(where, "index"), *hint));
  }
  return index;
}

absl::StatusOr<StorageInfo> Decoder::Info(absl::string_view where,
                                          const PickleValue& v) {
  if (!IsInstance(v, {kFilesystemModule}, "_StorageInfo")) {
    return Mismatch(where, "a _StorageInfo", v);
  }
  DCP_ASSIGN_OR_RETURN(const PickleValue* state, State(where, v));
  StorageInfo info;
  DCP_ASSIGN_OR_RETURN(const PickleValue* path,
                       Require(where, state, "relative_path"));
  DCP_ASSIGN_OR_RETURN(info.relative_path,
                       String(Field(where, "relative_path"), *path));
  DCP_ASSIGN_OR_RETURN(const PickleValue* offset,
                       Require(where, state, "offset"));
  DCP_ASSIGN_OR_RETURN(info.offset, Int(Field(where, "offset"), *offset));
  DCP_ASSIGN_OR_RETURN(const PickleValue* length,
                       Require(where, state, "length"));
  DCP_ASSIGN_OR_RETURN(info.length, Int(Field(where, "length"), *length));
  if (info.offset < 0) {
    return Mismatch(Field(where, "offset"), "a non-negative offset", *offset);
  }
  if (info.length < 0) {
    return Mismatch(Field(where, "length"), "a non-negative length", *length);
  }
  if (const PickleValue* transforms = Get(state, "transform_descriptors");
      transforms != nullptr && !transforms->is_none() &&
      !(IsSequence(*transforms) && transforms->num_items() == 0)) {
    return Unsupported(
        Field(where, "transform_descriptors"),
        absl::StrCat("the item is stored through transforms ",
                     transforms->DebugString(80),
                     ", which dcp cannot read"));
  }
  return info;
}

absl::StatusOr<StorageMeta> Decoder::Meta(absl::string_view where,
                                          const PickleValue& v) {
  if (!IsInstance(v, {kMetadataModule}, "StorageMeta")) {
    return Mismatch(where, "a StorageMeta or None", v);
  }
  DCP_ASSIGN_OR_RETURN(const PickleValue* state, State(where, v));
  StorageMeta meta;
  if (const PickleValue* id = Get(state, "checkpoint_id");
      id != nullptr && !id->is_none()) {
    DCP_ASSIGN_OR_RETURN(meta.checkpoint_id,
                         PathString(Field(where, "checkpoint_id"), *id));
  }
  DCP_ASSIGN_OR_RETURN(
      meta.save_id,
      OptionalString(Field(where, "save_id"), Get(state, "save_id")));
  DCP_ASSIGN_OR_RETURN(
      meta.load_id,
      OptionalString(Field(where, "load_id"), Get(state, "load_id")));
  if (const PickleValue* modules = Get(state, "modules");
      modules != nullptr && !modules->is_none()) {
    const std::string modules_where = Field(where, "modules");
    if (!IsSequence(*modules)) {
      return Mismatch(modules_where, "a list of str", *modules);
    }
    for (size_t i = 0; i < modules->num_items(); ++i) {
      DCP_ASSIGN_OR_RETURN(std::string module,
                           String(Index(modules_where, i), modules->item(i)));
      meta.modules.push_back(std::move(module));
    }
  }
  return meta;
}

absl::StatusOr<Metadata> Decoder::Decode(const PickleValue& root) {
  if (!IsInstance(root, {kMetadataModule}, "Metadata")) {
    return Mismatch("", "a torch.distributed.checkpoint.metadata.Metadata",
                    root);
  }
  DCP_ASSIGN_OR_RETURN(const PickleValue* state, State("", root));
  Metadata md;

  DCP_ASSIGN_OR_RETURN(const PickleValue* items,
                       Require("Metadata", state, "state_dict_metadata"));
  if (items->kind() != Kind::kDict) {
    return Mismatch("state_dict_metadata", "a dict", *items);
  }
  for (size_t i = 0; i < items->num_entries(); ++i) {
    DCP_ASSIGN_OR_RETURN(
        std::string fqn,
        String(Index("state_dict_metadata keys", i), items->key(i)));
    const std::string where = Key("state_dict_metadata", fqn);
    DCP_ASSIGN_OR_RETURN(StorageMetadata item, Item(where, items->value(i)));
    DCP_RETURN_IF_ERROR(Charge(where, kMapNodeBytes));
    md.state_dict_metadata.insert_or_assign(std::move(fqn), std::move(item));
  }

  // Only the default planner's {fqn: path} is representable; anything that
  // is not a dict is ignored (loading does not use it).
  if (const PickleValue* planner = Get(state, "planner_data");
      planner != nullptr && planner->kind() == Kind::kDict) {
    for (size_t i = 0; i < planner->num_entries(); ++i) {
      DCP_ASSIGN_OR_RETURN(
          std::string fqn,
          String(Index("planner_data keys", i), planner->key(i)));
      DCP_ASSIGN_OR_RETURN(ObjectPath path,
                           Path(Key("planner_data", fqn), planner->value(i)));
      DCP_RETURN_IF_ERROR(Charge("planner_data", kMapNodeBytes));
      md.planner_data.insert_or_assign(std::move(fqn), std::move(path));
    }
  }

  if (const PickleValue* storage = Get(state, "storage_data");
      storage != nullptr && !storage->is_none()) {
    if (storage->kind() != Kind::kDict) {
      return Unsupported(
          "storage_data",
          absl::StrCat("expected {MetadataIndex: _StorageInfo}, got ",
                       Describe(*storage),
                       "; custom storage layouts are not supported"));
    }
    for (size_t i = 0; i < storage->num_entries(); ++i) {
      const std::string where = Index("storage_data", i);
      DCP_ASSIGN_OR_RETURN(MetadataIndex index,
                           IndexKey(absl::StrCat(where, ".key"), storage->key(i)));
      DCP_ASSIGN_OR_RETURN(StorageInfo info,
                           Info(Key("storage_data", index.fqn), storage->value(i)));
      DCP_RETURN_IF_ERROR(Charge(where, sizeof(MetadataIndex) +
                                            sizeof(StorageInfo) +
                                            kMapNodeBytes));
      md.storage_data.insert_or_assign(std::move(index), std::move(info));
    }
  }

  if (const PickleValue* meta = Get(state, "storage_meta");
      meta != nullptr && !meta->is_none()) {
    DCP_ASSIGN_OR_RETURN(md.storage_meta, Meta("storage_meta", *meta));
  }
  DCP_ASSIGN_OR_RETURN(md.version,
                       OptionalString("version", Get(state, "version")));
  return md;
}

}  // namespace

absl::StatusOr<std::string> EncodeMetadataPickle(const Metadata& metadata) {
  absl::StatusOr<std::string> bytes = Encoder().Encode(metadata);
  if (!bytes.ok()) return Annotate(bytes.status(), "encoding .metadata");
  return bytes;
}

absl::StatusOr<Metadata> DecodeMetadataPickle(absl::string_view bytes,
                                              const DecodeLimits& limits) {
  PickleReadOptions options = limits.PickleOptions(bytes.size());
  options.allow_global = &IsAllowedGlobal;
  absl::StatusOr<PickleValue> root = ReadPickle(bytes, options);
  if (!root.ok()) return Annotate(root.status(), "decoding .metadata");
  DecodeBudget budget(bytes.size(), limits, ".metadata");
  return Decoder(budget).Decode(*root);
}

}  // namespace dcp
