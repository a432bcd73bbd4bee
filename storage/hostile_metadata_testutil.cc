#include "storage/hostile_metadata_testutil.h"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "storage/pickle_test_util.h"

namespace dcp::test {
namespace {

constexpr absl::string_view kMd = "torch.distributed.checkpoint.metadata";
constexpr absl::string_view kFs = "torch.distributed.checkpoint.filesystem";

// Emits what CPython's pickler writes: each object once, memoized
// (LONG_BINPUT), and LONG_BINGET at later references.
class MemoPickler {
 public:
  MemoPickler() { a_.Proto(2); }

  // Pushes the memoized object `key`, emitting it with `emit` the first
  // time.
  void Memoized(const std::string& key, const std::function<void()>& emit) {
    auto it = memo_.find(key);
    if (it != memo_.end()) {
      if (it->second < 256) {
        a_.Op('h').U8(it->second);  // BINGET
      } else {
        a_.Op('j').U32(it->second);  // LONG_BINGET
      }
      return;
    }
    emit();
    const uint32_t index = static_cast<uint32_t>(memo_.size());
    if (index < 256) {
      a_.Op('q').U8(index);  // BINPUT
    } else {
      a_.Op('r').U32(index);  // LONG_BINPUT
    }
    memo_.emplace(key, index);
  }
  void Str(absl::string_view s) {
    Memoized(absl::StrCat("s:", s), [&] { a_.Unicode(s); });
  }
  // A str memoized under the name `tag`, so that a huge one is not hashed
  // at every reference.
  void TaggedStr(absl::string_view tag, absl::string_view s) {
    Memoized(absl::StrCat("t:", tag), [&] { a_.Unicode(s); });
  }
  void Global(absl::string_view module, absl::string_view name) {
    Memoized(absl::StrCat("g:", module, ".", name),
             [&] { a_.Global(module, name); });
  }
  void Int(int64_t v) {
    if (v >= 0 && v < 256) {
      a_.BinInt1(static_cast<int>(v));
    } else if (v >= 0 && v < 65536) {
      a_.Op('M').U16(static_cast<uint64_t>(v));  // BININT2
    } else {
      a_.Op('J').U32(static_cast<uint32_t>(v));
    }
  }
  void Op(char op) { a_.Op(static_cast<uint8_t>(op)); }

  // torch.Size((dims...)).
  void Size(const std::vector<int64_t>& dims) {
    Global("torch", "Size");
    Op('(');
    for (int64_t d : dims) Int(d);
    Op('t');
    Op('\x85');  // TUPLE1
    Op('R');
  }
  // `cls()` via NEWOBJ, then its state dict {name: value} and BUILD; the
  // state is built by `fields`, which pushes key/value pairs.
  void Dataclass(absl::string_view module, absl::string_view name,
                 const std::function<void()>& fields) {
    Global(module, name);
    Op(')');
    Op('\x81');  // NEWOBJ
    Op('}');
    Op('(');
    fields();
    Op('u');
    Op('b');
  }
  // A dict of `n` entries pushed by `entry(i)`, in SETITEMS batches of 1000
  // as Python writes them.
  void Dict(int n, const std::function<void(int)>& entry) {
    Op('}');
    for (int start = 0; start < n; start += 1000) {
      Op('(');
      for (int i = start; i < n && i < start + 1000; ++i) entry(i);
      Op('u');
    }
  }
  void List(int n, const std::function<void(int)>& item) {
    Op(']');
    for (int start = 0; start < n; start += 1000) {
      Op('(');
      for (int i = start; i < n && i < start + 1000; ++i) item(i);
      Op('e');
    }
  }

  // The TensorProperties of a strided float32 tensor, as torch 2.6 pickles
  // it (its __getstate__ 5-tuple; layout and format are shared objects).
  void Float32Properties() {
    Global(kMd, "TensorProperties");
    Op(')');
    Op('\x81');
    Op('(');
    Global("torch", "float32");
    Memoized("layout", [&] {
      Global("torch.serialization", "_get_layout");
      Str("torch.strided");
      Op('\x85');
      Op('R');
    });
    Op('\x89');  // NEWFALSE
    Memoized("format", [&] {
      Global(kMd, "_MEM_FORMAT_ENCODING");
      Int(0);
      Op('\x85');
      Op('R');
    });
    Op('\x89');
    Op('t');
    Op('b');
  }

  void Chunk(const std::vector<int64_t>& offsets,
             const std::vector<int64_t>& sizes) {
    Dataclass(kMd, "ChunkStorageMetadata", [&] {
      Str("offsets");
      Size(offsets);
      Str("sizes");
      Size(sizes);
    });
  }

  // Metadata with the fields pushed by `fields` (key/value pairs).
  std::string Metadata(const std::function<void()>& fields) && {
    Dataclass(kMd, "Metadata", fields);
    a_.Stop();
    return a_.bytes();
  }

 private:
  Asm a_;
  absl::flat_hash_map<std::string, uint32_t> memo_;
};

}  // namespace

std::string SharedKeyMetadataPickle(int entries, size_t key_bytes) {
  const std::string key(key_bytes, 'k');
  MemoPickler p;
  return std::move(p).Metadata([&] {
    p.Str("state_dict_metadata");
    p.Dict(1, [&](int) {
      p.TaggedStr("key", key);
      p.Global(kMd, "BytesStorageMetadata");
      p.Op(')');
      p.Op('\x81');
    });
    p.Str("storage_data");
    p.Dict(entries, [&](int i) {
      p.Dataclass(kMd, "MetadataIndex", [&] {
        p.Str("fqn");
        p.TaggedStr("key", key);  // A BINGET of the 1 MiB key every time.
        p.Str("offset");
        p.Size({i});
      });
      p.Dataclass(kFs, "_StorageInfo", [&] {
        p.Str("relative_path");
        p.Str("__0_0.distcp");
        p.Str("offset");
        p.Int(0);
        p.Str("length");
        p.Int(1);
      });
    });
  });
}

std::string SharedChunksMetadataPickle(int tensors, int chunks) {
  MemoPickler p;
  return std::move(p).Metadata([&] {
    p.Str("state_dict_metadata");
    p.Dict(tensors, [&](int t) {
      p.Str(absl::StrCat("t", t));
      p.Dataclass(kMd, "TensorStorageMetadata", [&] {
        p.Str("properties");
        p.Float32Properties();
        p.Str("size");
        p.Size({chunks, 4});
        p.Str("chunks");
        p.Memoized("chunks", [&] {
          p.List(chunks, [&](int c) { p.Chunk({c, 0}, {1, 4}); });
        });
      });
    });
  });
}

std::string RealisticFqn(int i, size_t name_bytes) {
  std::string fqn = absl::StrCat("model.layers.", i, ".self_attention.");
  const std::string leaf = absl::StrCat(".weight_", i);
  while (fqn.size() + leaf.size() < name_bytes) fqn += "block_";
  return fqn + leaf;
}

std::string RealisticMetadataPickle(int keys, size_t name_bytes,
                                    int chunks_per_key) {
  constexpr int64_t kRows = 64;
  constexpr int64_t kCols = 16;
  std::vector<std::string> fqns;
  fqns.reserve(keys);
  for (int i = 0; i < keys; ++i) fqns.push_back(RealisticFqn(i, name_bytes));
  MemoPickler p;
  return std::move(p).Metadata([&] {
    p.Str("state_dict_metadata");
    p.Dict(keys, [&](int i) {
      p.Str(fqns[i]);
      p.Dataclass(kMd, "TensorStorageMetadata", [&] {
        p.Str("properties");
        p.Float32Properties();
        p.Str("size");
        p.Size({kRows * chunks_per_key, kCols});
        p.Str("chunks");
        p.List(chunks_per_key, [&](int c) {
          p.Chunk({kRows * c, 0}, {kRows, kCols});
        });
      });
    });
    p.Str("planner_data");
    p.Dict(keys, [&](int i) {
      p.Str(fqns[i]);
      p.Op('(');
      for (absl::string_view part : absl::StrSplit(fqns[i], '.')) {
        p.Str(part);
      }
      p.Op('t');
    });
    p.Str("storage_data");
    p.Dict(keys * chunks_per_key, [&](int e) {
      const int i = e / chunks_per_key;
      const int c = e % chunks_per_key;
      p.Dataclass(kMd, "MetadataIndex", [&] {
        p.Str("fqn");
        p.Str(fqns[i]);
        p.Str("offset");
        p.Size({kRows * c, 0});
        p.Str("index");
        p.Int(0);
      });
      p.Dataclass(kFs, "_StorageInfo", [&] {
        p.Str("relative_path");
        p.Str("__0_0.distcp");
        p.Str("offset");
        p.Int(static_cast<int64_t>(e) * kRows * kCols * 4);
        p.Str("length");
        p.Int(kRows * kCols * 4);
      });
    });
    p.Str("storage_meta");
    p.Op('N');
  });
}

}  // namespace dcp::test
