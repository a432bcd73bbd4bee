// train_resume: a data-parallel libtorch training job that checkpoints
// through dcp's CheckpointManager and resumes after being killed.
//
//   dcp launch --nproc=2 -- train_resume --root=/tmp/run --steps=12
//
// Every rank holds the whole model (a small MLP) and AdamW; each step,
// rank r trains on rows r, r + W, ... of that step's batch, and the ranks
// average their gradients. Every `--save_every` steps the job saves
// {"model", "optim", "step"} asynchronously into <root>/step_<n>, keeping
// the last two steps. On start it resumes from the latest complete step,
// so a job killed at any point and started again ends with exactly the
// parameters of a run that was never interrupted. Rank 0 prints the steps
// and writes the final parameters (hex floats) to `--out`.
//
// `--sigkill_after_save=N` makes rank 0 SIGKILL itself right after it
// issued the save of step N, while that save may still be in flight (the
// test in train_resume_test.sh uses it).
#include <signal.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "checkpoint/checkpoint_manager.h"
#include "checkpoint/module_state.h"
#include "core/state_dict.h"
#include "core/status.h"
#include "distributed/c10d_process_group.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "torch/nn/functional/loss.h"
#include "torch/nn/module.h"
#include "torch/nn/modules/linear.h"
#include "torch/optim/adamw.h"

DEFINE_string(root, "", "Checkpoint root: steps go to <root>/step_<n>.");
DEFINE_int32(steps, 12, "Train until this step.");
DEFINE_int32(save_every, 3, "Save every this many steps.");
DEFINE_int32(sigkill_after_save, -1,
             "Test hook: rank 0 SIGKILLs itself right after issuing the "
             "save of this step.");
DEFINE_string(out, "", "Where rank 0 writes the final parameters.");

namespace {

struct MlpImpl : torch::nn::Module {
  MlpImpl()
      : fc1(register_module("fc1", torch::nn::Linear(4, 16))),
        fc2(register_module("fc2", torch::nn::Linear(16, 2))) {
    // Deterministic initial values, the same on every rank and every run.
    torch::NoGradGuard no_grad;
    int s = 0;
    for (torch::Tensor p : parameters()) {
      p.copy_(torch::sin(torch::arange(p.numel(), torch::kFloat) + s++)
                  .view(p.sizes()) *
              0.3);
    }
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return fc2(torch::tanh(fc1(x)));
  }
  torch::nn::Linear fc1;
  torch::nn::Linear fc2;
};
TORCH_MODULE(Mlp);

// Step `step`'s rows for `rank` of `world`: a batch of 8 that depends on
// the step only.
std::pair<torch::Tensor, torch::Tensor> Batch(int step, int rank, int world) {
  torch::Tensor x =
      torch::cos(torch::arange(32, torch::kFloat).view({8, 4}) * 0.7 + step);
  torch::Tensor y = torch::stack({x.sum(1).sin(), (x[0] * x).sum(1)}, 1);
  torch::Tensor rows = torch::arange(rank, 8, world);
  return {x.index_select(0, rows), y.index_select(0, rows)};
}

// Averages the gradients over the ranks, summing in rank order so every
// rank (and every run) gets the same bits. A real job would use c10d's
// allreduce or DDP; the group's AllGather keeps this example small.
absl::Status AverageGradients(Mlp& model, dcp::ProcessGroup& pg, int step) {
  std::string local;
  for (const torch::Tensor& p : model->parameters()) {
    torch::Tensor g = p.grad().contiguous();
    local.append(static_cast<const char*>(g.data_ptr()),
                 g.numel() * sizeof(float));
  }
  DCP_ASSIGN_OR_RETURN(
      std::vector<std::string> all,
      pg.AllGather(absl::StrCat("grads ", step), local,
                   absl::Now() + absl::Seconds(60)));
  size_t offset = 0;
  for (torch::Tensor p : model->parameters()) {
    torch::Tensor sum = torch::zeros_like(p);
    for (const std::string& payload : all) {
      if (payload.size() != local.size()) {
        return absl::DataLossError("gradient payloads differ in size");
      }
      sum += torch::from_blob(const_cast<char*>(payload.data()) + offset,
                              p.sizes(), torch::kFloat);
    }
    p.mutable_grad().copy_(sum / static_cast<double>(all.size()));
    offset += p.numel() * sizeof(float);
  }
  return absl::OkStatus();
}

absl::Status Run() {
  if (FLAGS_root.empty()) return absl::InvalidArgumentError("--root is required");
  DCP_ASSIGN_OR_RETURN(std::shared_ptr<dcp::ProcessGroup> pg,
                       dcp::C10dProcessGroup::CreateFromEnv());
  const int rank = pg->rank();

  Mlp model;
  torch::optim::AdamW optimizer(model->parameters(),
                                torch::optim::AdamWOptions(0.02));

  dcp::CheckpointManagerOptions options;
  options.checkpointer.process_group = pg;
  options.max_to_keep = 2;
  DCP_ASSIGN_OR_RETURN(std::unique_ptr<dcp::CheckpointManager> manager,
                       dcp::CheckpointManager::Create(FLAGS_root, options));

  // The state to save and restore: the model's and the optimizer's state
  // dicts in PyTorch's layout, and the step.
  auto make_state = [&](int64_t step) -> absl::StatusOr<dcp::StateDict> {
    DCP_ASSIGN_OR_RETURN(dcp::StateDict model_sd,
                         dcp::GetModelStateDict(*model));
    DCP_ASSIGN_OR_RETURN(dcp::StateDict optim_sd,
                         dcp::GetOptimizerStateDict(*model, optimizer));
    return dcp::StateDict{{"model", std::move(model_sd)},
                          {"optim", std::move(optim_sd)},
                          {"step", step}};
  };

  DCP_ASSIGN_OR_RETURN(dcp::StateDict state, make_state(0));
  DCP_ASSIGN_OR_RETURN(std::optional<int64_t> restored,
                       manager->RestoreLatest(state));
  int64_t start = 0;
  if (restored.has_value()) {
    DCP_RETURN_IF_ERROR(dcp::SetModelStateDict(
        *model, state.Find("model")->get<dcp::StateDict>()));
    DCP_RETURN_IF_ERROR(dcp::SetOptimizerStateDict(
        *model, optimizer, state.Find("optim")->get<dcp::StateDict>()));
    start = state.Find("step")->get<int64_t>();
  }
  if (rank == 0) {
    std::cout << (restored ? absl::StrCat("resumed from step ", start)
                           : std::string("starting from scratch"))
              << std::endl;
  }

  for (int step = static_cast<int>(start) + 1; step <= FLAGS_steps; ++step) {
    auto [x, y] = Batch(step, rank, pg->size());
    optimizer.zero_grad();
    torch::Tensor loss = torch::nn::functional::mse_loss(model->forward(x), y);
    loss.backward();
    DCP_RETURN_IF_ERROR(AverageGradients(model, *pg, step));
    optimizer.step();
    if (rank == 0) {
      std::cout << absl::StrFormat("step %d loss %.6f", step,
                                   loss.item<float>())
                << std::endl;
    }
    if (step % FLAGS_save_every == 0) {
      DCP_ASSIGN_OR_RETURN(dcp::StateDict to_save, make_state(step));
      // Returns once the state is copied; training goes on meanwhile. Its
      // result arrives through WaitForPendingSaves (or a later save).
      (void)manager->AsyncSave(step, to_save);
      if (step == FLAGS_sigkill_after_save && rank == 0) {
        std::cout << "SIGKILL after issuing the save of step " << step
                  << std::endl;
        raise(SIGKILL);
      }
    }
  }
  DCP_RETURN_IF_ERROR(manager->WaitForPendingSaves());

  if (rank == 0 && !FLAGS_out.empty()) {
    std::ofstream out(FLAGS_out);
    for (const auto& item : model->named_parameters()) {
      torch::Tensor t = item.value().detach().contiguous().view({-1});
      out << item.key();
      for (int64_t i = 0; i < t.numel(); ++i) {
        out << " " << absl::StrFormat("%a", t[i].item<float>());
      }
      out << "\n";
    }
    if (!out) return absl::UnavailableError("cannot write " + FLAGS_out);
  }
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage(
      "dcp launch --nproc=N -- train_resume --root=DIR [--steps=12] "
      "[--save_every=3] [--out=FILE]");
  gflags::ParseCommandLineFlags(&argc, &argv, /*remove_flags=*/true);
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;
  absl::Status status = Run();
  if (!status.ok()) {
    std::cerr << "train_resume: " << status << std::endl;
    return 1;
  }
  return 0;
}
