#include "tools/inspect.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/metadata.h"
#include "core/status.h"
#include "storage/fs_storage.h"
#include "storage/posix_file_system.h"
#include "tools/tool_util.h"

namespace dcp::tools {
namespace {

std::string ShapeText(const Shape& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

std::string JsonInts(const Shape& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

std::string JsonOptional(const std::optional<std::string>& s) {
  return s.has_value() ? JsonString(*s) : "null";
}

std::string JsonPath(const ObjectPath& path) {
  std::vector<std::string> items;
  for (const PathElement& e : path) {
    if (const auto* s = std::get_if<std::string>(&e)) {
      items.push_back(JsonString(*s));
    } else {
      items.push_back(absl::StrCat(std::get<int64_t>(e)));
    }
  }
  return absl::StrCat("[", absl::StrJoin(items, ", "), "]");
}

const StorageInfo* FindStorage(const Metadata& md, const std::string& fqn,
                               std::optional<Shape> offset) {
  auto it = md.storage_data.find(MetadataIndex(fqn, std::move(offset)));
  return it == md.storage_data.end() ? nullptr : &it->second;
}

// "file", offset and length of a storage entry as JSON members.
std::string JsonLocation(const StorageInfo* info) {
  if (info == nullptr) return "\"file\": null, \"offset\": null, \"length\": null";
  return absl::StrCat("\"file\": ", JsonString(info->relative_path),
                      ", \"offset\": ", info->offset,
                      ", \"length\": ", info->length);
}

void PrintJson(const std::string& dir, const Metadata& md,
               const std::vector<FileInfo>& files, std::ostream& out) {
  out << "{\n  \"checkpoint\": " << JsonString(dir) << ",\n";
  out << "  \"version\": " << JsonOptional(md.version) << ",\n";
  out << "  \"storage_meta\": ";
  if (md.storage_meta.has_value()) {
    out << "{\"checkpoint_id\": "
        << JsonOptional(md.storage_meta->checkpoint_id)
        << ", \"save_id\": " << JsonOptional(md.storage_meta->save_id)
        << ", \"load_id\": " << JsonOptional(md.storage_meta->load_id) << "}";
  } else {
    out << "null";
  }
  out << ",\n  \"keys\": [";
  int64_t total = 0;
  bool first = true;
  for (const auto& [fqn, entry] : md.state_dict_metadata) {
    out << (first ? "\n" : ",\n") << "    {\"key\": " << JsonString(fqn);
    first = false;
    auto path = md.planner_data.find(fqn);
    const std::string path_json =
        path == md.planner_data.end() ? "null" : JsonPath(path->second);
    int64_t bytes = 0;
    if (const auto* tensor = std::get_if<TensorStorageMetadata>(&entry)) {
      std::vector<std::string> chunks;
      for (const ChunkStorageMetadata& chunk : tensor->chunks) {
        const StorageInfo* info = FindStorage(md, fqn, chunk.offsets);
        if (info != nullptr) bytes += info->length;
        chunks.push_back(absl::StrCat(
            "{\"offsets\": ", JsonInts(chunk.offsets),
            ", \"sizes\": ", JsonInts(chunk.sizes), ", ", JsonLocation(info),
            "}"));
      }
      out << ", \"kind\": \"tensor\", \"path\": " << path_json
          << ", \"dtype\": " << JsonString(DtypeName(tensor->properties.dtype))
          << ", \"shape\": " << JsonInts(tensor->size)
          << ", \"requires_grad\": "
          << (tensor->properties.requires_grad ? "true" : "false")
          << ", \"bytes\": " << bytes << ",\n     \"chunks\": ["
          << absl::StrJoin(chunks, ",\n                 ") << "]}";
    } else {
      const StorageInfo* info = FindStorage(md, fqn, std::nullopt);
      if (info != nullptr) bytes = info->length;
      out << ", \"kind\": \"bytes\", \"path\": " << path_json
          << ", \"bytes\": " << bytes << ", " << JsonLocation(info) << "}";
    }
    total += bytes;
  }
  out << (first ? "],\n" : "\n  ],\n");
  out << "  \"total_bytes\": " << total << ",\n  \"files\": [";
  uint64_t file_total = 0;
  for (size_t i = 0; i < files.size(); ++i) {
    out << (i == 0 ? "\n" : ",\n") << "    {\"name\": "
        << JsonString(files[i].name) << ", \"size\": " << files[i].size << "}";
    file_total += files[i].size;
  }
  out << (files.empty() ? "],\n" : "\n  ],\n");
  out << "  \"total_file_bytes\": " << file_total << "\n}\n";
}

void PrintText(const std::string& dir, const Metadata& md,
               const std::vector<FileInfo>& files, std::ostream& out) {
  out << "checkpoint: " << dir << "\n";
  out << "format version: "
      << (md.version.has_value() ? *md.version : "none (PyTorch 2.6 style)")
      << "\n";
  if (md.storage_meta.has_value() && md.storage_meta->save_id.has_value()) {
    out << "save id: " << *md.storage_meta->save_id << "\n";
  }
  out << "\n";
  TextTable table({"KEY / CHUNK", "KIND", "DTYPE", "SHAPE", "CHUNKS", "BYTES",
                   "FILE", "OFFSET"},
                  {false, false, false, false, true, true, false, true});
  int64_t total = 0;
  int tensors = 0;
  int values = 0;
  for (const auto& [fqn, entry] : md.state_dict_metadata) {
    if (const auto* tensor = std::get_if<TensorStorageMetadata>(&entry)) {
      ++tensors;
      int64_t bytes = 0;
      std::vector<std::vector<std::string>> chunk_rows;
      for (const ChunkStorageMetadata& chunk : tensor->chunks) {
        const StorageInfo* info = FindStorage(md, fqn, chunk.offsets);
        if (info != nullptr) bytes += info->length;
        chunk_rows.push_back(
            {absl::StrCat("  ", ShapeText(chunk.offsets), " +",
                          ShapeText(chunk.sizes)),
             "", "", "", "",
             info != nullptr ? HumanBytes(info->length) : "?",
             info != nullptr ? info->relative_path : "<missing>",
             info != nullptr ? absl::StrCat(info->offset) : ""});
      }
      table.AddRow({fqn, "tensor", std::string(DtypeName(tensor->properties.dtype)),
                    ShapeText(tensor->size),
                    absl::StrCat(tensor->chunks.size()), HumanBytes(bytes), "",
                    ""});
      for (auto& row : chunk_rows) table.AddRow(std::move(row));
      total += bytes;
    } else {
      ++values;
      const StorageInfo* info = FindStorage(md, fqn, std::nullopt);
      const int64_t bytes = info != nullptr ? info->length : 0;
      table.AddRow({fqn, "bytes", "", "", "1", HumanBytes(bytes),
                    info != nullptr ? info->relative_path : "<missing>",
                    info != nullptr ? absl::StrCat(info->offset) : ""});
      total += bytes;
    }
  }
  table.Print(out);
  out << "\n"
      << md.state_dict_metadata.size() << " keys (" << tensors << " tensors, "
      << values << " bytes values), " << HumanBytes(total) << " in records\n\n";

  TextTable file_table({"FILE", "SIZE", "BYTES"}, {false, true, true});
  uint64_t file_total = 0;
  for (const FileInfo& f : files) {
    file_table.AddRow({f.name, HumanBytes(f.size), WithThousands(f.size)});
    file_total += f.size;
  }
  file_table.AddRow(
      {absl::StrCat("total (", files.size(), " files)"),
       HumanBytes(file_total), WithThousands(file_total)});
  file_table.Print(out);
}

}  // namespace

absl::Status InspectCheckpoint(const InspectOptions& options,
                               std::ostream& out) {
  if (options.dir.empty()) {
    return absl::InvalidArgumentError("no checkpoint directory given");
  }
  std::shared_ptr<FileSystem> fs = NewPosixFileSystem();
  FileSystemReaderOptions reader_options;
  reader_options.file_system = fs;
  reader_options.allow_symlinks = options.allow_symlinks;
  DCP_ASSIGN_OR_RETURN(Metadata md,
                       ReadCheckpointMetadata(options.dir, reader_options));
  DCP_ASSIGN_OR_RETURN(std::vector<FileInfo> files,
                       ListCheckpointFiles(*fs, options.dir));
  if (options.json) {
    PrintJson(options.dir, md, files, out);
  } else {
    PrintText(options.dir, md, files, out);
  }
  return absl::OkStatus();
}

}  // namespace dcp::tools
