// -----------------------------------------------------------------------------
// File: checkpoint/module_state.h
// -----------------------------------------------------------------------------
//
// State dicts of libtorch modules and optimizers, in the layout PyTorch
// 2.6's `torch.distributed.checkpoint.state_dict.get_state_dict` produces,
// so a C++ training job and a Python one can resume from each other's
// checkpoints.
//
//   torch::nn::Sequential model(...);
//   torch::optim::AdamW optimizer(model->parameters(), ...);
//   ...
//   DCP_ASSIGN_OR_RETURN(StateDict model_sd, GetModelStateDict(*model));
//   DCP_ASSIGN_OR_RETURN(StateDict optim_sd,
//                        GetOptimizerStateDict(*model, optimizer));
//   StateDict state{{"model", model_sd}, {"optim", optim_sd}, {"step", 3}};
//   ... checkpointer.Save(state) ...
//
// and to resume, the same calls on a fresh model and optimizer give the
// destination; after `Load(state)`:
//
//   DCP_RETURN_IF_ERROR(SetModelStateDict(*model, state.Find("model")...));
//   DCP_RETURN_IF_ERROR(SetOptimizerStateDict(*model, optimizer, ...));
//
// Model state dict: every parameter and buffer under its fully qualified
// name ("layers.0.weight"), in PyTorch's order (each module's parameters,
// then its buffers, then its children in registration order). The tensors
// are detached views of the module's own tensors (same storage,
// requires_grad false), so loading into the state dict updates the model in
// place; SetModelStateDict copies whatever is not already shared.
//
// Optimizer state dict (PyTorch's `get_optimizer_state_dict` with default
// options):
//
//   {"state": {"<param fqn>": {"step": float32 0-d tensor,
//                              "exp_avg": ..., "exp_avg_sq": ...}},
//    "param_groups": [{"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-08,
//                      "weight_decay": 0.01, "amsgrad": False, ...,
//                      "params": ["<param fqn>", ...]}]}
//
// For torch::optim::Adam and AdamW: state `step`, `exp_avg`, `exp_avg_sq`
// (and `max_exp_avg_sq` with amsgrad); group keys in PyTorch 2.6's order,
// including the ones libtorch has no option for, with PyTorch's defaults
// (foreach None, maximize False, capturable False, differentiable False,
// fused None), because PyTorch's load asks for every key it has.
// For torch::optim::SGD: state `momentum_buffer` (only when momentum is not
// zero, as PyTorch); groups lr, momentum, dampening, weight_decay, nesterov,
// maximize, foreach, differentiable, fused, params. Any other optimizer is
// Unimplemented. State tensors alias the optimizer's own; `step` (an int64
// in libtorch, a float32 tensor in PyTorch) is a new tensor, which
// SetOptimizerStateDict reads back.
//
// Lazily created state: before building the dict, every parameter that
// requires grad and has no state yet gets it as PyTorch's
// `_init_optim_state` makes it: one optimizer step with zero gradients and
// a learning rate of 0 (Adam: step 1, zero moments; parameters unchanged).
// Other parameters' gradients and states are untouched (their gradients are
// hidden from that step and restored).
//
// Sharding: `ModuleStateOptions::sharding` names the parameters (and
// buffers) whose module tensor is this rank's shard of a larger global
// tensor. Their entries, and the optimizer state tensors shaped like them,
// are `ShardedTensor`s with one local shard that aliases the module's
// tensor; every rank calls the same functions with its own placements.
//
// Errors: InvalidArgument for an optimizer parameter that is not a
// parameter of the model, and when setting: missing or unexpected keys
// (all listed), a shape or dtype mismatch (naming the key and both shapes),
// values of the wrong type, hyperparameters libtorch cannot represent
// (e.g. maximize True); Unimplemented for optimizers other than Adam, AdamW
// and SGD. Nothing is modified when a Set call fails its checks, which all
// run before the first copy.
//
// Thread safety: the module and optimizer must not be used concurrently
// with these calls. Getting the optimizer state dict may create state (see
// above), so it takes the optimizer by non-const reference.
//
// This is the one target of the library that uses libtorch's C++ frontend
// (torch::nn, torch::optim); the header only declares its types.
#ifndef DCP_CHECKPOINT_MODULE_STATE_H_
#define DCP_CHECKPOINT_MODULE_STATE_H_

#include <functional>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/metadata.h"
#include "core/state_dict.h"

namespace torch {
namespace nn {
class Module;
}  // namespace nn
namespace optim {
class Optimizer;
}  // namespace optim
}  // namespace torch

namespace dcp {

// Where this rank's module tensor sits in the global tensor it is a shard
// of: `offsets` has one entry per dimension of `global_size`, and the
// module tensor's shape is the extent.
struct ShardPlacement {
  Shape global_size;
  Shape offsets;
};

struct ModuleStateOptions {
  // For a parameter or buffer FQN and this rank's tensor, its placement if
  // it is sharded, nullopt if it is replicated (the whole tensor on every
  // rank). Unset: everything is replicated. Called synchronously, on the
  // calling thread: by GetModelStateDict once per parameter and buffer, by
  // GetOptimizerStateDict once per parameter that has state (with the
  // parameter, not the state tensor).
  std::function<std::optional<ShardPlacement>(absl::string_view fqn,
                                              const at::Tensor& local)>
      sharding;
};

// The model's parameters and buffers by FQN; see the file comment.
// InvalidArgument if a sharding placement does not fit its tensor.
absl::StatusOr<StateDict> GetModelStateDict(
    const torch::nn::Module& model, const ModuleStateOptions& options = {});

// Copies `state` (a model state dict, e.g. GetModelStateDict's after a
// Load) into the model's parameters and buffers, without recording
// gradients. With `strict`, keys missing from `state` and keys the model
// does not have are an error; without it, only the keys both have are
// copied. Entries may be tensors or single-shard `ShardedTensor`s whose
// shard has the module tensor's shape.
absl::Status SetModelStateDict(torch::nn::Module& model, const StateDict& state,
                               bool strict = true);

// The optimizer's state in PyTorch's layout; see the file comment. Creates
// missing state first (which modifies `optimizer`). InvalidArgument for an
// optimizer parameter the model does not have, or a sharding placement
// that does not fit its tensor; Unimplemented for optimizers other than
// Adam, AdamW and SGD.
absl::StatusOr<StateDict> GetOptimizerStateDict(
    const torch::nn::Module& model, torch::optim::Optimizer& optimizer,
    const ModuleStateOptions& options = {});

// Loads `state` (an optimizer state dict as GetOptimizerStateDict returns,
// typically after a Load filled it) into `optimizer`: per-parameter state
// (copied unless it already aliases the optimizer's tensors, `step` read
// back as an integer) and every group's hyperparameters. The groups must
// match the optimizer's, group by group, as sets of FQNs.
absl::Status SetOptimizerStateDict(const torch::nn::Module& model,
                                   torch::optim::Optimizer& optimizer,
                                   const StateDict& state);

}  // namespace dcp

#endif  // DCP_CHECKPOINT_MODULE_STATE_H_
