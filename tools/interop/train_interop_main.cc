// train_interop: the C++ side of the train/checkpoint/resume interop test
// (tools/interop/train_resume_test.sh), the twin of tools/peer/train_peer.py.
//
//   train_interop train     --dir=D --world_size=W --steps=N --out=OUT.json
//   train_interop resume    --dir=D --world_size=W --steps=K --out=OUT.json
//   train_interop reference --steps=N --out=OUT.json
//
// `train`: W simulated ranks each train a fresh test::TinyMlp with AdamW
// for N steps and save {"model", "optim", "step"} with GetModelStateDict and
// GetOptimizerStateDict (checkpoint/module_state.h). `resume`: W simulated
// ranks build a fresh model and optimizer, load D into their state dicts,
// apply them with SetModelStateDict / SetOptimizerStateDict, check what was
// loaded, and train K more steps. `reference`: N steps, no checkpoint.
// OUT.json has train_peer.py's format (see its docstring); every rank must
// compute the same numbers. Exit status: 0 on success, 1 on any error, 2 on
// usage errors.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "checkpoint/module_state.h"
#include "checkpoint/save_load.h"
#include "core/state_dict.h"
#include "core/status.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "storage/fs_storage.h"
#include "testing/simulator.h"
#include "testing/tiny_mlp.h"
#include "torch/optim/adamw.h"

DEFINE_string(dir, "", "Checkpoint directory (train, resume).");
DEFINE_int32(world_size, 1, "Number of simulated ranks (train, resume).");
DEFINE_int32(steps, 1, "Training steps to take.");
DEFINE_string(out, "", "Where rank 0 writes its JSON results.");

namespace dcp::tools {
namespace {

using ::dcp::test::RankContext;
using ::dcp::test::Simulator;
using ::dcp::test::SimulatorOptions;
using ::dcp::test::TinyMlp;

constexpr const char* kParams[] = {"fc1.weight", "fc1.bias", "fc2.weight",
                                   "fc2.bias"};

struct Run {
  TinyMlp model;
  std::unique_ptr<torch::optim::AdamW> optimizer;
  int64_t start_step = 0;
  std::vector<float> losses;
};

std::unique_ptr<Run> FreshRun() {
  auto run = std::make_unique<Run>();
  run->optimizer = std::make_unique<torch::optim::AdamW>(
      run->model->parameters(), test::TinyMlpAdamWOptions());
  return run;
}

void Train(Run& run, int steps) {
  for (int i = 1; i <= steps; ++i) {
    run.losses.push_back(test::TinyMlpTrainStep(
        run.model, *run.optimizer, static_cast<int>(run.start_step) + i));
  }
}

std::string FloatList(const at::Tensor& t) {
  at::Tensor flat = t.detach().to(at::kFloat).contiguous().view({-1});
  const float* data = flat.data_ptr<float>();
  std::vector<std::string> items;
  for (int64_t i = 0; i < flat.numel(); ++i) {
    items.push_back(absl::StrFormat("%.9g", data[i]));
  }
  return absl::StrCat("[", absl::StrJoin(items, ", "), "]");
}

// train_peer.py's OUT.json.
absl::StatusOr<std::string> ResultJson(Run& run) {
  std::vector<std::string> losses;
  for (float loss : run.losses) losses.push_back(absl::StrFormat("%.9g", loss));
  std::vector<std::string> params;
  for (const auto& item : run.model->named_parameters()) {
    params.push_back(
        absl::StrCat("\"", item.key(), "\": ", FloatList(item.value())));
  }
  for (const auto& item : run.model->named_buffers()) {
    params.push_back(
        absl::StrCat("\"", item.key(), "\": ", FloatList(item.value())));
  }
  DCP_ASSIGN_OR_RETURN(StateDict optim,
                       GetOptimizerStateDict(*run.model, *run.optimizer));
  std::vector<std::string> state;
  for (const auto& [fqn, entry] :
       optim.Find("state")->get<StateDict>().entries()) {
    const StateDict& s = entry.get<StateDict>();
    state.push_back(absl::StrCat(
        "\"", fqn, "\": {\"step\": ",
        absl::StrFormat("%.9g",
                        s.Find("step")->get<at::Tensor>().item<float>()),
        ", \"exp_avg\": ", FloatList(s.Find("exp_avg")->get<at::Tensor>()),
        ", \"exp_avg_sq\": ",
        FloatList(s.Find("exp_avg_sq")->get<at::Tensor>()), "}"));
  }
  const auto& o = static_cast<const torch::optim::AdamWOptions&>(
      run.optimizer->param_groups()[0].options());
  const std::string groups = absl::StrFormat(
      "{\"lr\": %.17g, \"betas\": [%.17g, %.17g], \"eps\": %.17g, "
      "\"weight_decay\": %.17g, \"amsgrad\": %s}",
      o.lr(), std::get<0>(o.betas()), std::get<1>(o.betas()), o.eps(),
      o.weight_decay(), o.amsgrad() ? "true" : "false");
  return absl::StrCat("{\"start_step\": ", run.start_step, ", \"losses\": [",
                      absl::StrJoin(losses, ", "), "], \"params\": {",
                      absl::StrJoin(params, ", "), "}, \"optim_state\": {",
                      absl::StrJoin(state, ", "),
                      "}, \"param_groups\": ", groups, "}\n");
}

absl::Status SaveRun(Run& run, RankContext& ctx, const std::string& dir) {
  DCP_ASSIGN_OR_RETURN(StateDict model_sd, GetModelStateDict(*run.model));
  DCP_ASSIGN_OR_RETURN(StateDict optim_sd,
                       GetOptimizerStateDict(*run.model, *run.optimizer));
  DCP_ASSIGN_OR_RETURN(std::unique_ptr<FileSystemWriter> writer,
                       FileSystemWriter::Create(dir));
  SaveOptions options;
  options.process_group = &ctx.pg();
  StateDict state{{"model", std::move(model_sd)},
                  {"optim", std::move(optim_sd)},
                  {"step", int64_t{static_cast<int64_t>(run.losses.size())}}};
  return Save(state, *writer, options).status();
}

absl::Status LoadRun(Run& run, RankContext& ctx, const std::string& dir) {
  DCP_ASSIGN_OR_RETURN(StateDict model_sd, GetModelStateDict(*run.model));
  DCP_ASSIGN_OR_RETURN(StateDict optim_sd,
                       GetOptimizerStateDict(*run.model, *run.optimizer));
  StateDict state{{"model", std::move(model_sd)},
                  {"optim", std::move(optim_sd)},
                  {"step", int64_t{0}}};
  DCP_ASSIGN_OR_RETURN(std::unique_ptr<FileSystemReader> reader,
                       FileSystemReader::Create(dir));
  LoadOptions options;
  options.process_group = &ctx.pg();
  DCP_RETURN_IF_ERROR(Load(state, *reader, options));
  DCP_RETURN_IF_ERROR(
      SetModelStateDict(*run.model, state.Find("model")->get<StateDict>()));
  DCP_RETURN_IF_ERROR(SetOptimizerStateDict(
      *run.model, *run.optimizer, state.Find("optim")->get<StateDict>()));
  const Value* step = state.Find("step");
  if (!step->is<int64_t>()) {
    return absl::DataLossError(
        absl::StrCat("\"step\" loaded as a ", step->TypeName()));
  }
  run.start_step = step->get<int64_t>();

  // What was loaded is what was saved: every parameter's optimizer step is
  // the checkpoint's, and no parameter is still at its fresh value.
  DCP_ASSIGN_OR_RETURN(StateDict optim,
                       GetOptimizerStateDict(*run.model, *run.optimizer));
  TinyMlp fresh;
  for (const char* fqn : kParams) {
    const StateDict* s =
        optim.Find("state")->get<StateDict>().Find(fqn)->get_if<StateDict>();
    const float saved_step = s->Find("step")->get<at::Tensor>().item<float>();
    if (saved_step != static_cast<float>(run.start_step)) {
      return absl::DataLossError(absl::StrCat("optimizer step of ", fqn, " is ",
                                              saved_step, ", expected ",
                                              run.start_step));
    }
    if (run.model->named_parameters()[fqn].detach().equal(
            fresh->named_parameters()[fqn].detach())) {
      return absl::DataLossError(
          absl::StrCat(fqn, " still has its initial value after loading"));
    }
  }
  return absl::OkStatus();
}

absl::Status WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return absl::UnavailableError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::Status Main(const std::string& action) {
  if (FLAGS_out.empty()) return absl::InvalidArgumentError("--out is required");
  if (action == "reference") {
    std::unique_ptr<Run> run = FreshRun();
    Train(*run, FLAGS_steps);
    DCP_ASSIGN_OR_RETURN(std::string json, ResultJson(*run));
    return WriteFile(FLAGS_out, json);
  }
  if (FLAGS_dir.empty()) return absl::InvalidArgumentError("--dir is required");
  // libtorch creates its default random generator (used by Linear's
  // initialisation) lazily; creating it here, before the rank threads,
  // keeps them from racing on its creation in a way ThreadSanitizer cannot
  // see through uninstrumented libtorch.
  FreshRun();
  SimulatorOptions sim_options;
  sim_options.world_size = FLAGS_world_size;
  sim_options.collective_timeout = absl::Seconds(120);
  DCP_ASSIGN_OR_RETURN(std::unique_ptr<Simulator> sim,
                       Simulator::Create(sim_options));
  std::vector<std::string> results(FLAGS_world_size);
  std::vector<absl::Status> statuses =
      sim->Run([&](RankContext& ctx) -> absl::Status {
        std::unique_ptr<Run> run = FreshRun();
        if (action == "train") {
          Train(*run, FLAGS_steps);
          DCP_RETURN_IF_ERROR(SaveRun(*run, ctx, FLAGS_dir));
        } else {
          DCP_RETURN_IF_ERROR(LoadRun(*run, ctx, FLAGS_dir));
          Train(*run, FLAGS_steps);
        }
        DCP_ASSIGN_OR_RETURN(results[ctx.rank()], ResultJson(*run));
        return absl::OkStatus();
      });
  for (size_t r = 0; r < statuses.size(); ++r) {
    if (!statuses[r].ok()) {
      return Annotate(statuses[r], absl::StrCat("rank ", r));
    }
  }
  for (size_t r = 1; r < results.size(); ++r) {
    if (results[r] != results[0]) {
      return absl::InternalError(
          absl::StrCat("rank ", r, " computed other numbers than rank 0"));
    }
  }
  return WriteFile(FLAGS_out, results[0]);
}

}  // namespace
}  // namespace dcp::tools

int main(int argc, char** argv) {
  gflags::SetUsageMessage(
      "train_interop train|resume|reference --dir=D --world_size=W "
      "--steps=N --out=OUT.json");
  gflags::ParseCommandLineFlags(&argc, &argv, /*remove_flags=*/true);
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;
  const std::string action = argc == 2 ? argv[1] : "";
  if (action != "train" && action != "resume" && action != "reference") {
    std::cerr << "usage: " << gflags::ProgramUsage() << "\n";
    return 2;
  }
  absl::Status status = dcp::tools::Main(action);
  if (!status.ok()) {
    std::cerr << "train_interop " << action << ": " << status << "\n";
    return 1;
  }
  std::cout << "train_interop " << action << ": OK\n";
  return 0;
}
