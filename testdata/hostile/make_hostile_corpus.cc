// Writes the hostile checkpoint corpus: one directory per case under OUT,
// each a checkpoint directory that is not what it claims (see README.md in
// this directory for the list and what every entry point must do with it).
//
//   make_hostile_corpus OUT
//
// Cases are generated rather than stored: a few are large (a 1 GiB sparse
// `.metadata`, a 2.6 MB `.metadata`), FIFOs and symbolic links do not live
// in a repository, and the good checkpoints they start from are written by
// the current code, so the corpus follows the format as it evolves.
#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <map>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "checkpoint/save_load.h"
#include "core/metadata.h"
#include "core/state_dict.h"
#include "core/status.h"
#include "storage/fs_storage.h"
#include "storage/metadata_pickle.h"

namespace dcp {
namespace {

std::string Join(const std::string& dir, const std::string& name) {
  return dir + "/" + name;
}

absl::Status Errno(const std::string& what, const std::string& path) {
  return absl::InternalError(
      absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

absl::Status WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) return Errno("writing", path);
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Errno("opening", path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

absl::Status MakeDir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return Errno("creating", dir);
  }
  return absl::OkStatus();
}

// A good checkpoint: "w" (float32 [4, 6]) as two row chunks, "b" (int64
// [5]) and a bytes value "step", one file per item.
absl::Status WriteGoodCheckpoint(const std::string& dir) {
  DCP_RETURN_IF_ERROR(MakeDir(dir));
  const at::Tensor w = at::arange(24, at::kFloat).reshape({4, 6});
  ShardedTensor sharded;
  sharded.global_size = {4, 6};
  sharded.local_shards.push_back({w.narrow(0, 0, 2).clone(), {0, 0}});
  sharded.local_shards.push_back({w.narrow(0, 2, 2).clone(), {2, 0}});
  StateDict state;
  state.Set("w", std::move(sharded));
  state.Set("b", at::arange(5, at::kLong));
  state.Set("step", int64_t{7});
  FileSystemWriterOptions options;
  options.single_file_per_rank = false;
  options.sync_files = false;
  DCP_ASSIGN_OR_RETURN(auto writer,
                       FileSystemWriter::Create(dir, std::move(options)));
  return Save(state, *writer).status();
}

// The data file that holds `key` (its first chunk for a tensor).
absl::StatusOr<std::string> DataFileOf(const std::string& dir,
                                       const std::string& key) {
  DCP_ASSIGN_OR_RETURN(Metadata md, ReadCheckpointMetadata(dir));
  for (const auto& [index, info] : md.storage_data) {
    if (index.fqn == key) return info.relative_path;
  }
  return absl::NotFoundError(absl::StrCat("no storage entry for ", key));
}

absl::Status EditMetadata(const std::string& dir,
                          const std::function<void(Metadata&)>& edit) {
  DCP_ASSIGN_OR_RETURN(Metadata md, ReadCheckpointMetadata(dir));
  edit(md);
  DCP_ASSIGN_OR_RETURN(std::string bytes, EncodeMetadataPickle(md));
  return WriteFile(Join(dir, ".metadata"), bytes);
}

// Moves chunk `i` of "w" to `offsets`, in both places `.metadata` names it.
void MoveChunk(Metadata& md, size_t i, Shape offsets) {
  auto& tensor = std::get<TensorStorageMetadata>(md.state_dict_metadata["w"]);
  const Shape old = tensor.chunks[i].offsets;
  tensor.chunks[i].offsets = offsets;
  std::map<MetadataIndex, StorageInfo> storage;
  for (auto& [index, info] : md.storage_data) {
    MetadataIndex key = index;
    if (key.fqn == "w" && key.offset == old) key.offset = offsets;
    storage.emplace(std::move(key), info);
  }
  md.storage_data = std::move(storage);
}

// ---- A raw pickle writer, for shapes PickleWriter will not emit (memo) ----

class RawPickle {
 public:
  RawPickle() { out_ = "\x80\x02"; }
  void Op(char op) { out_.push_back(op); }
  void U32(uint32_t v) {
    for (int i = 0; i < 4; ++i) out_.push_back(static_cast<char>(v >> (8 * i)));
  }
  void Str(const std::string& s) {
    Op('X');  // BINUNICODE
    U32(static_cast<uint32_t>(s.size()));
    out_ += s;
  }
  void Int(int32_t v) {
    Op('J');  // BININT
    U32(static_cast<uint32_t>(v));
  }
  void Global(const std::string& module, const std::string& name) {
    out_ += absl::StrCat("c", module, "\n", name, "\n");
  }
  void Put(uint32_t slot) {
    Op('r');  // LONG_BINPUT
    U32(slot);
  }
  void Get(uint32_t slot) {
    Op('j');  // LONG_BINGET
    U32(slot);
  }
  std::string Finish() && {
    Op('.');
    return std::move(out_);
  }

 private:
  std::string out_;
};

// The reported case: 20,000 storage entries whose MetadataIndex.fqn is one
// memoized 1 MiB string. Evaluating it naively copies the string 20,000
// times (20 GiB).
std::string SharedKeyMetadata() {
  constexpr char kModule[] = "torch.distributed.checkpoint.metadata";
  constexpr char kFs[] = "torch.distributed.checkpoint.filesystem";
  enum Slot : uint32_t { kKey, kIndexClass, kInfoClass, kFqn, kIdx, kPath,
                         kFile, kOff, kLen };
  RawPickle p;
  p.Global(kModule, "Metadata");
  p.Op(')');     // EMPTY_TUPLE
  p.Op('\x81');  // NEWOBJ
  p.Op('}');     // EMPTY_DICT
  p.Op('(');     // MARK
  p.Str("state_dict_metadata");
  p.Op('}');
  p.Op('(');
  p.Str(std::string(size_t{1} << 20, 'k'));
  p.Put(kKey);
  p.Global(kModule, "BytesStorageMetadata");
  p.Op(')');
  p.Op('\x81');
  p.Op('u');  // SETITEMS
  p.Str("planner_data");
  p.Op('}');
  p.Str("storage_data");
  p.Op('}');
  p.Op('(');
  for (int i = 0; i < 20000; ++i) {
    if (i == 0) {
      p.Global(kModule, "MetadataIndex");
      p.Put(kIndexClass);
    } else {
      p.Get(kIndexClass);
    }
    p.Op(')');
    p.Op('\x81');
    p.Op('}');
    p.Op('(');
    if (i == 0) {
      p.Str("fqn");
      p.Put(kFqn);
    } else {
      p.Get(kFqn);
    }
    p.Get(kKey);
    if (i == 0) {
      p.Str("index");
      p.Put(kIdx);
    } else {
      p.Get(kIdx);
    }
    p.Int(i);
    p.Op('u');
    p.Op('b');  // BUILD
    if (i == 0) {
      p.Global(kFs, "_StorageInfo");
      p.Put(kInfoClass);
    } else {
      p.Get(kInfoClass);
    }
    p.Op(')');
    p.Op('\x81');
    p.Op('}');
    p.Op('(');
    if (i == 0) {
      p.Str("relative_path");
      p.Put(kPath);
      p.Str("__0_0.distcp");
      p.Put(kFile);
      p.Str("offset");
      p.Put(kOff);
    } else {
      p.Get(kPath);
      p.Get(kFile);
      p.Get(kOff);
    }
    p.Int(i);
    if (i == 0) {
      p.Str("length");
      p.Put(kLen);
    } else {
      p.Get(kLen);
    }
    p.Int(1);
    p.Op('u');
    p.Op('b');
  }
  p.Op('u');
  p.Str("storage_meta");
  p.Op('N');
  p.Str("version");
  p.Str("1.0.0");
  p.Op('u');
  p.Op('b');
  return std::move(p).Finish();
}

// 100,000 nested lists as the planner_data value.
std::string DeeplyNestedMetadata() {
  RawPickle p;
  p.Global("torch.distributed.checkpoint.metadata", "Metadata");
  p.Op(')');
  p.Op('\x81');
  p.Op('}');
  p.Op('(');
  p.Str("planner_data");
  for (int i = 0; i < 100000; ++i) p.Op(']');  // EMPTY_LIST
  for (int i = 0; i < 100000 - 1; ++i) p.Op('a');  // APPEND
  p.Op('u');
  p.Op('b');
  return std::move(p).Finish();
}

struct Case {
  const char* name;
  std::function<absl::Status(const std::string& dir)> make;
};

std::vector<Case> Cases() {
  auto with_good = [](std::function<absl::Status(const std::string&)> edit) {
    return [edit](const std::string& dir) {
      DCP_RETURN_IF_ERROR(WriteGoodCheckpoint(dir));
      return edit(dir);
    };
  };
  auto replace_data_file = [](const std::string& dir, const std::string& key,
                              const std::function<absl::Status(
                                  const std::string& path)>& replace) {
    DCP_ASSIGN_OR_RETURN(std::string file, DataFileOf(dir, key));
    const std::string path = Join(dir, file);
    if (::unlink(path.c_str()) != 0) return Errno("removing", path);
    return replace(path);
  };
  return {
      {"good", WriteGoodCheckpoint},
      {"shared_key_metadata",
       [](const std::string& dir) {
         DCP_RETURN_IF_ERROR(MakeDir(dir));
         return WriteFile(Join(dir, ".metadata"), SharedKeyMetadata());
       }},
      {"deeply_nested_metadata",
       [](const std::string& dir) {
         DCP_RETURN_IF_ERROR(MakeDir(dir));
         return WriteFile(Join(dir, ".metadata"), DeeplyNestedMetadata());
       }},
      {"huge_metadata",
       [](const std::string& dir) {
         // Sparse: 1 GiB + 1 byte of zeros, no disk space used.
         DCP_RETURN_IF_ERROR(MakeDir(dir));
         const std::string path = Join(dir, ".metadata");
         DCP_RETURN_IF_ERROR(WriteFile(path, ""));
         if (::truncate(path.c_str(), (int64_t{1} << 30) + 1) != 0) {
           return Errno("truncating", path);
         }
         return absl::OkStatus();
       }},
      {"fifo_metadata",
       [](const std::string& dir) {
         DCP_RETURN_IF_ERROR(MakeDir(dir));
         const std::string path = Join(dir, ".metadata");
         if (::mkfifo(path.c_str(), 0644) != 0) return Errno("mkfifo", path);
         return absl::OkStatus();
       }},
      {"directory_metadata",
       [](const std::string& dir) {
         DCP_RETURN_IF_ERROR(MakeDir(dir));
         return MakeDir(Join(dir, ".metadata"));
       }},
      {"truncated_metadata", with_good([](const std::string& dir) {
         const std::string path = Join(dir, ".metadata");
         DCP_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
         return WriteFile(path, bytes.substr(0, bytes.size() / 2));
       })},
      {"fifo_data_file", with_good([=](const std::string& dir) {
         return replace_data_file(dir, "w", [](const std::string& path) {
           if (::mkfifo(path.c_str(), 0644) != 0) return Errno("mkfifo", path);
           return absl::OkStatus();
         });
       })},
      {"symlink_data_file", with_good([=](const std::string& dir) {
         // The same bytes, moved out of the directory and linked back.
         DCP_ASSIGN_OR_RETURN(std::string file, DataFileOf(dir, "w"));
         const std::string path = Join(dir, file);
         const std::string outside = dir + ".outside";
         if (::rename(path.c_str(), outside.c_str()) != 0) {
           return Errno("moving", path);
         }
         if (::symlink(outside.c_str(), path.c_str()) != 0) {
           return Errno("symlink", path);
         }
         return absl::OkStatus();
       })},
      {"missing_data_file", with_good([=](const std::string& dir) {
         return replace_data_file(dir, "b", [](const std::string&) {
           return absl::OkStatus();
         });
       })},
      {"truncated_data_file", with_good([=](const std::string& dir) {
         DCP_ASSIGN_OR_RETURN(std::string file, DataFileOf(dir, "b"));
         const std::string path = Join(dir, file);
         DCP_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
         return WriteFile(path, bytes.substr(0, bytes.size() - 30));
       })},
      {"flipped_tensor_byte", with_good([=](const std::string& dir) {
         // The last element of "b": inside the tensor data, covered only
         // by the record's CRC-32.
         DCP_ASSIGN_OR_RETURN(std::string file, DataFileOf(dir, "b"));
         const std::string path = Join(dir, file);
         DCP_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
         const std::string needle(
             "\x04\x00\x00\x00\x00\x00\x00\x00", 8);  // int64 4
         const size_t at = bytes.find(needle);
         if (at == std::string::npos) {
           return absl::InternalError("element 4 of b not found");
         }
         bytes[at] ^= 0x10;
         return WriteFile(path, bytes);
       })},
      {"overlapping_chunks", with_good([](const std::string& dir) {
         // Chunk 1 of "w" claims rows [1, 3), overlapping chunk 0's rows
         // [0, 2) and leaving row 3 unsaved.
         return EditMetadata(dir, [](Metadata& md) { MoveChunk(md, 1, {1, 0}); });
       })},
      {"chunk_outside_tensor", with_good([](const std::string& dir) {
         return EditMetadata(dir, [](Metadata& md) { MoveChunk(md, 1, {3, 0}); });
       })},
      {"gap_between_chunks", with_good([](const std::string& dir) {
         // "w" claims 5 rows; its chunks hold 4.
         return EditMetadata(dir, [](Metadata& md) {
           std::get<TensorStorageMetadata>(md.state_dict_metadata["w"]).size =
               {5, 6};
         });
       })},
      {"oversized_tensor_claim", with_good([](const std::string& dir) {
         // "w" claims 2^16 x 2^16 float32 (16 GiB); its chunks hold 96 bytes.
         return EditMetadata(dir, [](Metadata& md) {
           std::get<TensorStorageMetadata>(md.state_dict_metadata["w"]).size =
               {int64_t{1} << 16, int64_t{1} << 16};
         });
       })},
  };
}

int Main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: make_hostile_corpus OUT\n";
    return 2;
  }
  const std::string out = argv[1];
  if (absl::Status s = MakeDir(out); !s.ok()) {
    std::cerr << s << "\n";
    return 1;
  }
  for (const Case& c : Cases()) {
    if (absl::Status s = c.make(Join(out, c.name)); !s.ok()) {
      std::cerr << "make_hostile_corpus: case " << c.name << ": " << s << "\n";
      return 1;
    }
    std::cout << c.name << "\n";
  }
  return 0;
}

}  // namespace
}  // namespace dcp

int main(int argc, char** argv) { return dcp::Main(argc, argv); }
