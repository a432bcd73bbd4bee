#include "tools/interop/interop.h"

#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "checkpoint/save_load.h"
#include "core/metadata.h"
#include "core/state_dict.h"
#include "core/status.h"
#include "glog/logging.h"
#include "planner/flatten.h"
#include "storage/fs_storage.h"
#include "testing/peer_cases.h"
#include "testing/simulator.h"

namespace dcp::tools {
namespace {

using ::dcp::test::MakePeerCase;
using ::dcp::test::PeerCaseLeaves;
using ::dcp::test::PeerLeaf;
using ::dcp::test::PeerValues;
using ::dcp::test::RankContext;
using ::dcp::test::Simulator;
using ::dcp::test::SimulatorOptions;

absl::Status CheckOptions(const InteropOptions& options) {
  if (options.dir.empty()) {
    return absl::InvalidArgumentError("interop: --dir is empty");
  }
  if (options.world_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "interop: world size ", options.world_size, " is below 1"));
  }
  // Validates the case name.
  return PeerCaseLeaves(options.case_name).status();
}

absl::StatusOr<std::unique_ptr<Simulator>> MakeSimulator(
    const InteropOptions& options) {
  SimulatorOptions sim;
  sim.world_size = options.world_size;
  sim.collective_timeout = options.collective_timeout;
  return Simulator::Create(sim);
}

std::string PathString(const ObjectPath& path) {
  std::ostringstream os;
  os << path;
  return os.str();
}

// dcp_peer.py's check_metadata: `expected` is the flattened destination of
// rank 0 (its keys are the keys the checkpoint must have, its mappings the
// planner_data paths); tensor leaves also carry the case's dtype and shape.
std::vector<std::string> CheckMetadata(const Metadata& md,
                                       const FlatStateDict& expected,
                                       const std::vector<PeerLeaf>& leaves) {
  std::vector<std::string> problems;
  std::set<std::string> keys;
  for (const auto& item : expected.items) keys.insert(item.first);
  for (const auto& [fqn, unused] : md.state_dict_metadata) {
    if (keys.count(fqn) == 0) {
      problems.push_back(absl::StrCat("metadata: unexpected key \"", fqn, "\""));
    }
  }
  std::map<std::string, const PeerLeaf*> tensor_leaves;
  for (const PeerLeaf& leaf : leaves) {
    if (leaf.is_tensor) tensor_leaves[leaf.fqn] = &leaf;
  }
  for (const auto& [fqn, unused] : expected.items) {
    auto it = md.state_dict_metadata.find(fqn);
    if (it == md.state_dict_metadata.end()) {
      problems.push_back(absl::StrCat("metadata: key \"", fqn, "\" is missing"));
      continue;
    }
    auto leaf = tensor_leaves.find(fqn);
    if (leaf != tensor_leaves.end()) {
      const auto* tensor = std::get_if<TensorStorageMetadata>(&it->second);
      if (tensor == nullptr) {
        problems.push_back(absl::StrCat(
            "metadata: ", fqn, " is BytesStorageMetadata, expected "
            "TensorStorageMetadata"));
        continue;
      }
      const Shape& shape = leaf->second->shape;
      if (tensor->properties.dtype != leaf->second->dtype) {
        problems.push_back(absl::StrCat(
            "metadata: ", fqn, " dtype ", DtypeName(tensor->properties.dtype),
            ", expected ", DtypeName(leaf->second->dtype)));
      }
      if (tensor->size != shape) {
        problems.push_back(absl::StrCat("metadata: ", fqn, " size ",
                                        FormatShape(tensor->size),
                                        ", expected ", FormatShape(shape)));
        continue;
      }
      int64_t volume = 0;
      for (const ChunkStorageMetadata& c : tensor->chunks) {
        volume += NumElements(c.sizes);
        bool in_bounds = c.offsets.size() == shape.size() &&
                         c.sizes.size() == shape.size();
        for (size_t d = 0; in_bounds && d < shape.size(); ++d) {
          in_bounds = c.offsets[d] >= 0 && c.sizes[d] >= 0 &&
                      c.offsets[d] + c.sizes[d] <= shape[d];
        }
        if (!in_bounds) {
          problems.push_back(absl::StrCat(
              "metadata: ", fqn, " chunk offsets ", FormatShape(c.offsets),
              " sizes ", FormatShape(c.sizes), " out of bounds"));
        }
        if (md.storage_data.count(MetadataIndex(fqn, c.offsets)) == 0) {
          problems.push_back(absl::StrCat("metadata: ", fqn, " chunk at ",
                                          FormatShape(c.offsets),
                                          " has no storage_data entry"));
        }
      }
      if (volume != NumElements(shape)) {
        problems.push_back(absl::StrCat("metadata: ", fqn, " chunks cover ",
                                        volume, " elements, expected ",
                                        NumElements(shape)));
      }
    } else {
      if (!std::holds_alternative<BytesStorageMetadata>(it->second)) {
        problems.push_back(absl::StrCat(
            "metadata: ", fqn, " is TensorStorageMetadata, expected "
            "BytesStorageMetadata"));
      }
      if (md.storage_data.count(MetadataIndex(fqn)) == 0) {
        problems.push_back(
            absl::StrCat("metadata: ", fqn, " has no storage_data entry"));
      }
    }
    auto want_path = expected.mappings.find(fqn);
    auto got_path = md.planner_data.find(fqn);
    if (got_path == md.planner_data.end()) {
      problems.push_back(
          absl::StrCat("metadata: planner_data[\"", fqn, "\"] is missing"));
    } else if (want_path != expected.mappings.end() &&
               got_path->second != want_path->second) {
      problems.push_back(absl::StrCat(
          "metadata: planner_data[\"", fqn, "\"] is ",
          PathString(got_path->second), ", expected ",
          PathString(want_path->second)));
    }
  }
  return problems;
}

}  // namespace

absl::Status SaveCase(const InteropOptions& options) {
  DCP_RETURN_IF_ERROR(CheckOptions(options));
  DCP_ASSIGN_OR_RETURN(std::unique_ptr<Simulator> sim, MakeSimulator(options));
  std::vector<absl::Status> statuses =
      sim->Run([&](RankContext& ctx) -> absl::Status {
        DCP_ASSIGN_OR_RETURN(
            StateDict sd, MakePeerCase(options.case_name, ctx.rank(),
                                       ctx.world_size(), PeerValues::kTrue));
        FileSystemWriterOptions writer_options;
        writer_options.thread_count = options.thread_count;
        writer_options.single_file_per_rank = options.single_file_per_rank;
        DCP_ASSIGN_OR_RETURN(
            std::unique_ptr<FileSystemWriter> writer,
            FileSystemWriter::Create(options.dir, writer_options));
        SaveOptions save;
        save.process_group = &ctx.pg();
        save.collective_timeout = options.collective_timeout;
        DCP_ASSIGN_OR_RETURN(Metadata md, Save(sd, *writer, save));
        if (ctx.rank() == 0) {
          LOG(INFO) << "saved case " << options.case_name << " with "
                    << ctx.world_size() << " ranks to " << options.dir << ": "
                    << md.state_dict_metadata.size() << " keys, "
                    << md.storage_data.size() << " records";
        }
        return absl::OkStatus();
      });
  return FirstError(statuses);
}

absl::StatusOr<LoadReport> LoadCase(const InteropOptions& options) {
  DCP_RETURN_IF_ERROR(CheckOptions(options));
  DCP_ASSIGN_OR_RETURN(std::vector<PeerLeaf> leaves,
                       PeerCaseLeaves(options.case_name));
  const PeerValues placeholder = PeerValues::kPlaceholder;
  DCP_ASSIGN_OR_RETURN(std::unique_ptr<Simulator> sim, MakeSimulator(options));
  std::vector<std::vector<std::string>> diffs(options.world_size);
  std::vector<absl::Status> statuses =
      sim->Run([&](RankContext& ctx) -> absl::Status {
        DCP_ASSIGN_OR_RETURN(
            StateDict sd, MakePeerCase(options.case_name, ctx.rank(),
                                       ctx.world_size(), placeholder));
        DCP_ASSIGN_OR_RETURN(std::unique_ptr<FileSystemReader> reader,
                             FileSystemReader::Create(options.dir));
        LoadOptions load;
        load.process_group = &ctx.pg();
        load.collective_timeout = options.collective_timeout;
        DCP_RETURN_IF_ERROR(Load(sd, *reader, load));
        for (std::string& line : test::ComparePeerCase(
                 options.case_name, sd, ctx.rank(), ctx.world_size(),
                 options.max_diffs_per_key)) {
          diffs[ctx.rank()].push_back(
              absl::StrCat("[rank ", ctx.rank(), "] ", std::move(line)));
        }
        return absl::OkStatus();
      });
  DCP_RETURN_IF_ERROR(FirstError(statuses));
  LoadReport report;
  report.leaves = static_cast<int>(leaves.size());
  for (std::vector<std::string>& rank_diffs : diffs) {
    for (std::string& line : rank_diffs) report.diffs.push_back(std::move(line));
  }
  if (options.check_metadata) {
    DCP_ASSIGN_OR_RETURN(Metadata md, ReadCheckpointMetadata(options.dir));
    DCP_ASSIGN_OR_RETURN(StateDict dest,
                         MakePeerCase(options.case_name, 0, 1, placeholder));
    DCP_ASSIGN_OR_RETURN(FlatStateDict flat, FlattenStateDict(dest));
    for (std::string& line : CheckMetadata(md, flat, leaves)) {
      report.diffs.push_back(std::move(line));
    }
  }
  return report;
}

}  // namespace dcp::tools
