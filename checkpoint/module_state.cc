#include "checkpoint/module_state.h"

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <typeinfo>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "c10/util/C++17.h"
#include "c10/util/Type.h"
#include "core/metadata.h"
#include "core/status.h"
#include "core/torch_status.h"
#include "torch/nn/module.h"
#include "torch/optim/adam.h"
#include "torch/optim/adamw.h"
#include "torch/optim/optimizer.h"
#include "torch/optim/sgd.h"

namespace dcp {
namespace {

using ::torch::optim::Adam;
using ::torch::optim::AdamOptions;
using ::torch::optim::AdamParamState;
using ::torch::optim::AdamW;
using ::torch::optim::AdamWOptions;
using ::torch::optim::AdamWParamState;
using ::torch::optim::Optimizer;
using ::torch::optim::OptimizerParamGroup;
using ::torch::optim::SGD;
using ::torch::optim::SGDOptions;
using ::torch::optim::SGDParamState;

std::string QuotedKeys(const std::vector<std::string>& keys) {
  return absl::StrJoin(keys, ", ", [](std::string* out, const std::string& k) {
    absl::StrAppend(out, "\"", k, "\"");
  });
}

// ---- Model ------------------------------------------------------------------

struct NamedTensor {
  std::string fqn;
  at::Tensor tensor;
};

// PyTorch's state_dict order: a module's parameters, its buffers, then each
// child's, depth first. Undefined tensors (e.g. a Linear without bias) are
// left out, as Python leaves out None.
void CollectModuleTensors(const torch::nn::Module& module,
                          const std::string& prefix,
                          std::vector<NamedTensor>& out) {
  for (const auto& item : module.named_parameters(/*recurse=*/false)) {
    if (item.value().defined()) {
      out.push_back({absl::StrCat(prefix, item.key()), item.value()});
    }
  }
  for (const auto& item : module.named_buffers(/*recurse=*/false)) {
    if (item.value().defined()) {
      out.push_back({absl::StrCat(prefix, item.key()), item.value()});
    }
  }
  for (const auto& child : module.named_children()) {
    CollectModuleTensors(*child.value(), absl::StrCat(prefix, child.key(), "."),
                         out);
  }
}

absl::StatusOr<std::vector<NamedTensor>> ModuleTensors(
    const torch::nn::Module& module) {
  return TorchCall("module state dict", [&] {
    std::vector<NamedTensor> out;
    CollectModuleTensors(module, "", out);
    return out;
  });
}

// The state-dict value for `tensor` (a detached alias) of `fqn`: a plain
// tensor, or a one-shard ShardedTensor when `options` places it.
absl::StatusOr<Value> TensorEntry(
    const std::string& fqn, const at::Tensor& tensor,
    const std::optional<ShardPlacement>& placement) {
  DCP_ASSIGN_OR_RETURN(at::Tensor alias, TorchCall("module state dict", [&] {
                         return tensor.detach();
                       }));
  if (!placement.has_value()) return Value(std::move(alias));
  const int64_t dims = alias.dim();
  if (static_cast<int64_t>(placement->global_size.size()) != dims ||
      static_cast<int64_t>(placement->offsets.size()) != dims) {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", fqn, "\": sharding placement (global size ",
        FormatShape(placement->global_size), ", offsets ",
        FormatShape(placement->offsets), ") does not match the ", dims,
        "-dimensional local tensor ", FormatShape(alias.sizes())));
  }
  for (int64_t d = 0; d < dims; ++d) {
    const int64_t offset = placement->offsets[d];
    if (offset < 0 || alias.size(d) > placement->global_size[d] ||
        offset > placement->global_size[d] - alias.size(d)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "\"", fqn, "\": local tensor ", FormatShape(alias.sizes()),
          " at offsets ", FormatShape(placement->offsets),
          " does not fit the global size ",
          FormatShape(placement->global_size)));
    }
  }
  ShardedTensor sharded;
  sharded.global_size = placement->global_size;
  sharded.local_shards.push_back(Shard{std::move(alias), placement->offsets});
  return Value(std::move(sharded));
}

std::optional<ShardPlacement> PlacementOf(const ModuleStateOptions& options,
                                          const std::string& fqn,
                                          const at::Tensor& tensor) {
  if (!options.sharding) return std::nullopt;
  return options.sharding(fqn, tensor);
}

// The tensor of a state-dict entry: a tensor, or the one shard of a
// ShardedTensor.
absl::StatusOr<at::Tensor> LocalTensorOf(const Value& value,
                                         const std::string& key) {
  if (const auto* tensor = value.get_if<at::Tensor>()) {
    if (!tensor->defined()) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", key, "\" is an undefined tensor"));
    }
    return *tensor;
  }
  if (const auto* sharded = value.get_if<ShardedTensor>()) {
    if (sharded->local_shards.size() != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", key, "\" is a sharded tensor with ",
                       sharded->local_shards.size(),
                       " local shards; a module tensor takes exactly one"));
    }
    return sharded->local_shards[0].tensor;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "\"", key, "\" has type ", value.TypeName(), ", not a tensor"));
}

// Checks that `src` can be copied into `dst` (same shape and dtype).
absl::Status CheckCopyable(const std::string& key, const at::Tensor& dst,
                           const at::Tensor& src) {
  if (dst.sizes() != src.sizes()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", key, "\": shape ", FormatShape(src.sizes()),
        " in the state dict, ", FormatShape(dst.sizes()), " in the module"));
  }
  if (dst.scalar_type() != src.scalar_type()) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", key, "\": dtype ", c10::toString(src.scalar_type()),
                     " in the state dict, ", c10::toString(dst.scalar_type()),
                     " in the module"));
  }
  return absl::OkStatus();
}

bool SameMemory(const at::Tensor& a, const at::Tensor& b) {
  return a.data_ptr() == b.data_ptr() && a.sizes() == b.sizes() &&
         a.strides() == b.strides() && a.scalar_type() == b.scalar_type();
}

// Copies `src` into `dst` without recording gradients, unless they are the
// same memory already (a Load into GetModelStateDict's aliases).
absl::Status CopyInto(const std::string& key, at::Tensor& dst,
                      const at::Tensor& src) {
  if (SameMemory(dst, src)) return absl::OkStatus();
  return TorchCall(absl::StrCat("copying \"", key, "\""), [&] {
    at::NoGradGuard no_grad;
    dst.copy_(src);
  });
}

// ---- Optimizer --------------------------------------------------------------

enum class OptimizerKind { kAdam, kAdamW, kSgd };

absl::StatusOr<OptimizerKind> KindOf(const Optimizer& optimizer) {
  if (dynamic_cast<const AdamW*>(&optimizer) != nullptr) {
    return OptimizerKind::kAdamW;
  }
  if (dynamic_cast<const Adam*>(&optimizer) != nullptr) {
    return OptimizerKind::kAdam;
  }
  if (dynamic_cast<const SGD*>(&optimizer) != nullptr) {
    return OptimizerKind::kSgd;
  }
  return absl::UnimplementedError(absl::StrCat(
      "optimizer state dicts support torch::optim::Adam, AdamW and SGD, not ",
      c10::demangle(typeid(optimizer).name())));
}

// libtorch keys optimizer state by the parameter's TensorImpl address.
std::string StateKey(const at::Tensor& param) {
  return c10::guts::to_string(param.unsafeGetTensorImpl());
}

struct GroupParams {
  // The group's parameters and their FQNs, in the group's order.
  std::vector<at::Tensor> params;
  std::vector<std::string> fqns;
};

// Every group's parameters by FQN. A parameter the model has under several
// names takes the first, as PyTorch's named_parameters() does.
absl::StatusOr<std::vector<GroupParams>> GroupsByFqn(
    const torch::nn::Module& model, const Optimizer& optimizer) {
  absl::flat_hash_map<const c10::TensorImpl*, std::string> fqn_of;
  DCP_ASSIGN_OR_RETURN(auto params, TorchCall("model parameters", [&] {
                         return model.named_parameters(/*recurse=*/true);
                       }));
  for (const auto& item : params) {
    fqn_of.emplace(item.value().unsafeGetTensorImpl(), item.key());
  }
  std::vector<GroupParams> groups;
  for (size_t g = 0; g < optimizer.param_groups().size(); ++g) {
    GroupParams group;
    const auto& group_params = optimizer.param_groups()[g].params();
    for (size_t i = 0; i < group_params.size(); ++i) {
      const at::Tensor& param = group_params[i];
      auto it = fqn_of.find(param.unsafeGetTensorImpl());
      if (it == fqn_of.end()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "optimizer parameter group ", g, ", parameter ", i, " (shape ",
            FormatShape(param.sizes()), ") is not a parameter of the model"));
      }
      group.params.push_back(param);
      group.fqns.push_back(it->second);
    }
    groups.push_back(std::move(group));
  }
  return groups;
}

// Whether the optimizer keeps per-parameter state under `options`: Adam
// always, SGD only with momentum (as PyTorch).
bool KeepsState(OptimizerKind kind, const torch::optim::OptimizerOptions& o) {
  if (kind != OptimizerKind::kSgd) return true;
  return static_cast<const SGDOptions&>(o).momentum() != 0;
}

// PyTorch's `_init_optim_state`, for just the parameters that need state
// and have none: one step with their gradients zero, every other gradient
// hidden, and every learning rate 0; then gradients and rates are restored.
absl::Status InitMissingState(OptimizerKind kind, Optimizer& optimizer) {
  std::vector<at::Tensor*> missing;
  for (auto& group : optimizer.param_groups()) {
    if (!KeepsState(kind, group.options())) continue;
    for (at::Tensor& param : group.params()) {
      if (param.requires_grad() &&
          optimizer.state().find(StateKey(param)) == optimizer.state().end()) {
        missing.push_back(&param);
      }
    }
  }
  if (missing.empty()) return absl::OkStatus();
  return TorchCall("initialising optimizer state", [&] {
    std::vector<std::pair<at::Tensor, at::Tensor>> saved_grads;
    std::vector<double> saved_lrs;
    for (auto& group : optimizer.param_groups()) {
      for (at::Tensor& param : group.params()) {
        saved_grads.emplace_back(param, param.grad());
        param.mutable_grad() = at::Tensor();
      }
      saved_lrs.push_back(group.options().get_lr());
      group.options().set_lr(0.0);
    }
    for (at::Tensor* param : missing) {
      param->mutable_grad() = at::zeros_like(*param);
    }
    optimizer.step();
    for (auto& [param, grad] : saved_grads) param.mutable_grad() = grad;
    for (size_t g = 0; g < optimizer.param_groups().size(); ++g) {
      optimizer.param_groups()[g].options().set_lr(saved_lrs[g]);
    }
  });
}

// PyTorch 2.6's param_group keys and values of Adam and AdamW, whose
// libtorch options have the same fields; PyTorch orders "maximize" and
// "foreach" differently for the two.
template <typename AdamOptionsT>
StateDict AdamGroup(const AdamOptionsT& a, bool maximize_first) {
  StateDict group;
  group.Set("lr", a.lr());
  group.Set("betas", Tuple{{std::get<0>(a.betas()), std::get<1>(a.betas())}});
  group.Set("eps", a.eps());
  group.Set("weight_decay", a.weight_decay());
  group.Set("amsgrad", a.amsgrad());
  if (maximize_first) {
    group.Set("maximize", false);
    group.Set("foreach", None{});
  } else {
    group.Set("foreach", None{});
    group.Set("maximize", false);
  }
  group.Set("capturable", false);
  group.Set("differentiable", false);
  group.Set("fused", None{});
  return group;
}

// PyTorch 2.6's param_group keys and values for the group's options, in
// its order; "params" is added by the caller.
StateDict GroupHyperparameters(OptimizerKind kind,
                               const torch::optim::OptimizerOptions& o) {
  switch (kind) {
    case OptimizerKind::kAdamW:
      return AdamGroup(static_cast<const AdamWOptions&>(o),
                       /*maximize_first=*/false);
    case OptimizerKind::kAdam:
      return AdamGroup(static_cast<const AdamOptions&>(o),
                       /*maximize_first=*/true);
    case OptimizerKind::kSgd:
      break;
  }
  const auto& s = static_cast<const SGDOptions&>(o);
  StateDict group;
  group.Set("lr", s.lr());
  group.Set("momentum", s.momentum());
  group.Set("dampening", s.dampening());
  group.Set("weight_decay", s.weight_decay());
  group.Set("nesterov", s.nesterov());
  group.Set("maximize", false);
  group.Set("foreach", None{});
  group.Set("differentiable", false);
  group.Set("fused", None{});
  return group;
}

// One parameter's state entries (name -> tensor), step as a float32 0-d
// tensor; empty if the parameter has no state.
std::vector<std::pair<std::string, at::Tensor>> ParamStateTensors(
    OptimizerKind kind, const torch::optim::OptimizerParamState* state) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  if (state == nullptr) return out;
  auto adam_like = [&](int64_t step, const at::Tensor& exp_avg,
                       const at::Tensor& exp_avg_sq,
                       const at::Tensor& max_exp_avg_sq) {
    out.emplace_back("step",
                     at::scalar_tensor(static_cast<double>(step), at::kFloat));
    out.emplace_back("exp_avg", exp_avg);
    out.emplace_back("exp_avg_sq", exp_avg_sq);
    if (max_exp_avg_sq.defined()) {
      out.emplace_back("max_exp_avg_sq", max_exp_avg_sq);
    }
  };
  switch (kind) {
    case OptimizerKind::kAdamW: {
      const auto& s = static_cast<const AdamWParamState&>(*state);
      adam_like(s.step(), s.exp_avg(), s.exp_avg_sq(), s.max_exp_avg_sq());
      break;
    }
    case OptimizerKind::kAdam: {
      const auto& s = static_cast<const AdamParamState&>(*state);
      adam_like(s.step(), s.exp_avg(), s.exp_avg_sq(), s.max_exp_avg_sq());
      break;
    }
    case OptimizerKind::kSgd: {
      const auto& s = static_cast<const SGDParamState&>(*state);
      if (s.momentum_buffer().defined()) {
        out.emplace_back("momentum_buffer", s.momentum_buffer());
      }
      break;
    }
  }
  return out;
}

// ---- Reading hyperparameters and state back ---------------------------------

class GroupReader {
 public:
  GroupReader(const StateDict& group, std::string where)
      : group_(group), where_(std::move(where)) {}

  absl::StatusOr<double> Number(const std::string& key) {
    DCP_ASSIGN_OR_RETURN(const Value* v, Required(key));
    if (const auto* d = v->get_if<double>()) return *d;
    if (const auto* i = v->get_if<int64_t>()) return static_cast<double>(*i);
    return WrongType(key, *v, "a number");
  }

  // Python's default when absent.
  absl::StatusOr<bool> Bool(const std::string& key, bool absent) {
    const Value* v = group_.Find(key);
    if (v == nullptr) return absent;
    if (const auto* b = v->get_if<bool>()) return *b;
    return WrongType(key, *v, "a bool");
  }

  absl::StatusOr<std::tuple<double, double>> Pair(const std::string& key) {
    DCP_ASSIGN_OR_RETURN(const Value* v, Required(key));
    const List* items = v->get_if<List>();
    if (const auto* t = v->get_if<Tuple>()) items = &t->items;
    if (items == nullptr || items->size() != 2) {
      return WrongType(key, *v, "a pair of numbers");
    }
    double out[2];
    for (int i = 0; i < 2; ++i) {
      if (const auto* d = (*items)[i].get_if<double>()) {
        out[i] = *d;
      } else if (const auto* n = (*items)[i].get_if<int64_t>()) {
        out[i] = static_cast<double>(*n);
      } else {
        return WrongType(key, *v, "a pair of numbers");
      }
    }
    return std::make_tuple(out[0], out[1]);
  }

  absl::Status Check(bool ok, const std::string& what) {
    if (ok) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(where_, ": ", what));
  }

 private:
  absl::StatusOr<const Value*> Required(const std::string& key) {
    const Value* v = group_.Find(key);
    if (v == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(where_, ": missing \"", key, "\""));
    }
    return v;
  }
  absl::Status WrongType(const std::string& key, const Value& v,
                         absl::string_view expected) {
    return absl::InvalidArgumentError(absl::StrCat(where_, ": \"", key,
                                                   "\" has type ", v.TypeName(),
                                                   ", expected ", expected));
  }

  const StateDict& group_;
  std::string where_;
};

// Validated hyperparameters of one group, ready to apply.
struct NewOptions {
  std::unique_ptr<torch::optim::OptimizerOptions> options;
  bool amsgrad = false;
};

// A copy of Adam's or AdamW's `old` options with these hyperparameters.
template <typename AdamOptionsT>
std::unique_ptr<torch::optim::OptimizerOptions> AdamOptionsWith(
    const AdamOptionsT& old, double lr, std::tuple<double, double> betas,
    double eps, double weight_decay, bool amsgrad) {
  auto o = std::make_unique<AdamOptionsT>(old);
  o->lr(lr).betas(betas).eps(eps).weight_decay(weight_decay).amsgrad(amsgrad);
  return o;
}

absl::StatusOr<NewOptions> ReadOptions(
    OptimizerKind kind, const torch::optim::OptimizerOptions& old,
    const StateDict& group, const std::string& where) {
  GroupReader r(group, where);
  DCP_ASSIGN_OR_RETURN(double lr, r.Number("lr"));
  DCP_ASSIGN_OR_RETURN(double weight_decay, r.Number("weight_decay"));
  DCP_ASSIGN_OR_RETURN(bool maximize, r.Bool("maximize", false));
  DCP_RETURN_IF_ERROR(r.Check(lr >= 0, absl::StrCat("invalid lr ", lr)));
  DCP_RETURN_IF_ERROR(r.Check(
      weight_decay >= 0, absl::StrCat("invalid weight_decay ", weight_decay)));
  if (maximize) {
    return absl::UnimplementedError(
        absl::StrCat(where, ": maximize=True has no libtorch equivalent"));
  }
  NewOptions out;
  if (kind == OptimizerKind::kSgd) {
    DCP_ASSIGN_OR_RETURN(double momentum, r.Number("momentum"));
    DCP_ASSIGN_OR_RETURN(double dampening, r.Number("dampening"));
    DCP_ASSIGN_OR_RETURN(bool nesterov, r.Bool("nesterov", false));
    DCP_RETURN_IF_ERROR(
        r.Check(momentum >= 0, absl::StrCat("invalid momentum ", momentum)));
    DCP_RETURN_IF_ERROR(
        r.Check(!nesterov || (momentum > 0 && dampening == 0),
                "nesterov momentum requires a momentum and zero dampening"));
    auto o = std::make_unique<SGDOptions>(static_cast<const SGDOptions&>(old));
    o->lr(lr).momentum(momentum).dampening(dampening);
    o->weight_decay(weight_decay).nesterov(nesterov);
    out.options = std::move(o);
    return out;
  }
  DCP_ASSIGN_OR_RETURN(auto betas, r.Pair("betas"));
  DCP_ASSIGN_OR_RETURN(double eps, r.Number("eps"));
  DCP_ASSIGN_OR_RETURN(out.amsgrad, r.Bool("amsgrad", false));
  for (double beta : {std::get<0>(betas), std::get<1>(betas)}) {
    DCP_RETURN_IF_ERROR(
        r.Check(beta >= 0 && beta < 1, absl::StrCat("invalid beta ", beta)));
  }
  DCP_RETURN_IF_ERROR(r.Check(eps >= 0, absl::StrCat("invalid eps ", eps)));
  if (kind == OptimizerKind::kAdamW) {
    out.options = AdamOptionsWith(static_cast<const AdamWOptions&>(old), lr,
                                  betas, eps, weight_decay, out.amsgrad);
  } else {
    out.options = AdamOptionsWith(static_cast<const AdamOptions&>(old), lr,
                                  betas, eps, weight_decay, out.amsgrad);
  }
  return out;
}

// A saved `step`: a 0-d tensor or a number holding a non-negative integer.
absl::StatusOr<int64_t> ReadStep(const Value& value, const std::string& key) {
  double step = 0;
  if (const auto* t = value.get_if<at::Tensor>()) {
    if (!t->defined() || t->numel() != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", key, "\" must hold one number"));
    }
    DCP_ASSIGN_OR_RETURN(step, TorchCall(key, [&] {
                           return t->to(at::kDouble).item<double>();
                         }));
  } else if (const auto* d = value.get_if<double>()) {
    step = *d;
  } else if (const auto* i = value.get_if<int64_t>()) {
    step = static_cast<double>(*i);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", key, "\" has type ", value.TypeName(), ", expected a number"));
  }
  if (!(step >= 0) || step > 9007199254740992.0 || std::floor(step) != step) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", key, "\" is ", step, ", not a step count"));
  }
  return static_cast<int64_t>(step);
}

// One parameter's checked state, ready to apply.
struct NewParamState {
  at::Tensor param;
  std::string fqn;
  int64_t step = 0;
  // name -> source tensor (already checked against the parameter's shape).
  std::vector<std::pair<std::string, at::Tensor>> tensors;
};

absl::StatusOr<at::Tensor> StateTensor(const StateDict& state,
                                       const std::string& name,
                                       const std::string& key,
                                       const at::Tensor& param) {
  const Value* v = state.Find(name);
  if (v == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("missing optimizer state \"", key, "\""));
  }
  DCP_ASSIGN_OR_RETURN(at::Tensor t, LocalTensorOf(*v, key));
  if (t.sizes() != param.sizes()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", key, "\": shape ", FormatShape(t.sizes()), " in the state dict, ",
        FormatShape(param.sizes()), " for the parameter"));
  }
  if (!at::isFloatingType(t.scalar_type())) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", key, "\": dtype ", c10::toString(t.scalar_type()),
                     ", expected a floating-point dtype"));
  }
  return t;
}

// Copies `src` into `*slot` (or a new tensor shaped like the parameter when
// there is none yet), cast to the parameter's dtype as PyTorch does.
absl::Status ApplyStateTensor(const std::string& key, at::Tensor* slot,
                              const at::Tensor& param, const at::Tensor& src) {
  if (slot->defined() && slot->sizes() == param.sizes() &&
      slot->scalar_type() == param.scalar_type()) {
    return CopyInto(key, *slot, src);
  }
  return TorchCall(absl::StrCat("copying \"", key, "\""), [&] {
    at::NoGradGuard no_grad;
    *slot = at::empty_like(param).copy_(src);
  });
}

template <typename ParamState>
std::unique_ptr<torch::optim::OptimizerParamState> AdamStateFor(
    const NewParamState& in, ParamState* existing, absl::Status* status) {
  auto state = existing != nullptr ? std::unique_ptr<ParamState>()
                                   : std::make_unique<ParamState>();
  ParamState& s = existing != nullptr ? *existing : *state;
  s.step(in.step);
  for (const auto& [name, src] : in.tensors) {
    at::Tensor slot = name == "exp_avg"      ? s.exp_avg()
                      : name == "exp_avg_sq" ? s.exp_avg_sq()
                                             : s.max_exp_avg_sq();
    absl::Status copied = ApplyStateTensor(
        absl::StrCat("state.", in.fqn, ".", name), &slot, in.param, src);
    if (!copied.ok()) {
      *status = copied;
      return nullptr;
    }
    if (name == "exp_avg") {
      s.exp_avg(slot);
    } else if (name == "exp_avg_sq") {
      s.exp_avg_sq(slot);
    } else {
      s.max_exp_avg_sq(slot);
    }
  }
  return state;
}

}  // namespace

// ---- Public API -------------------------------------------------------------

absl::StatusOr<StateDict> GetModelStateDict(const torch::nn::Module& model,
                                            const ModuleStateOptions& options) {
  DCP_ASSIGN_OR_RETURN(std::vector<NamedTensor> named, ModuleTensors(model));
  StateDict out;
  for (const NamedTensor& item : named) {
    DCP_ASSIGN_OR_RETURN(
        Value value, TensorEntry(item.fqn, item.tensor,
                                 PlacementOf(options, item.fqn, item.tensor)));
    out.Set(item.fqn, std::move(value));
  }
  return out;
}

absl::Status SetModelStateDict(torch::nn::Module& model, const StateDict& state,
                               bool strict) {
  DCP_ASSIGN_OR_RETURN(std::vector<NamedTensor> named, ModuleTensors(model));
  std::vector<std::string> missing;
  std::vector<std::pair<NamedTensor*, at::Tensor>> copies;
  absl::flat_hash_set<std::string> module_keys;
  for (NamedTensor& item : named) {
    module_keys.insert(item.fqn);
    const Value* value = state.Find(item.fqn);
    if (value == nullptr) {
      missing.push_back(item.fqn);
      continue;
    }
    DCP_ASSIGN_OR_RETURN(at::Tensor src, LocalTensorOf(*value, item.fqn));
    DCP_RETURN_IF_ERROR(CheckCopyable(item.fqn, item.tensor, src));
    copies.emplace_back(&item, std::move(src));
  }
  std::vector<std::string> unexpected;
  for (const auto& [key, value] : state.entries()) {
    if (!module_keys.contains(key)) unexpected.push_back(key);
  }
  if (strict && (!missing.empty() || !unexpected.empty())) {
    std::vector<std::string> parts;
    if (!missing.empty()) {
      parts.push_back(absl::StrCat("missing keys ", QuotedKeys(missing)));
    }
    if (!unexpected.empty()) {
      parts.push_back(absl::StrCat("unexpected keys ", QuotedKeys(unexpected)));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("model state dict does not match the module: ",
                     absl::StrJoin(parts, "; ")));
  }
  for (auto& [item, src] : copies) {
    DCP_RETURN_IF_ERROR(CopyInto(item->fqn, item->tensor, src));
  }
  return absl::OkStatus();
}

absl::StatusOr<StateDict> GetOptimizerStateDict(
    const torch::nn::Module& model, torch::optim::Optimizer& optimizer,
    const ModuleStateOptions& options) {
  DCP_ASSIGN_OR_RETURN(OptimizerKind kind, KindOf(optimizer));
  DCP_ASSIGN_OR_RETURN(std::vector<GroupParams> groups,
                       GroupsByFqn(model, optimizer));
  DCP_RETURN_IF_ERROR(InitMissingState(kind, optimizer));
  StateDict state;
  List param_groups;
  for (size_t g = 0; g < groups.size(); ++g) {
    const GroupParams& group = groups[g];
    for (size_t i = 0; i < group.params.size(); ++i) {
      const at::Tensor& param = group.params[i];
      auto it = optimizer.state().find(StateKey(param));
      const auto* param_state =
          it == optimizer.state().end() ? nullptr : it->second.get();
      std::vector<std::pair<std::string, at::Tensor>> tensors =
          ParamStateTensors(kind, param_state);
      if (tensors.empty()) continue;
      const std::optional<ShardPlacement> placement =
          PlacementOf(options, group.fqns[i], param);
      StateDict entries;
      for (auto& [name, tensor] : tensors) {
        const bool shaped_like_param = tensor.sizes() == param.sizes();
        DCP_ASSIGN_OR_RETURN(
            Value value,
            TensorEntry(absl::StrCat("state.", group.fqns[i], ".", name),
                        tensor, shaped_like_param ? placement : std::nullopt));
        entries.Set(name, std::move(value));
      }
      state.Set(group.fqns[i], std::move(entries));
    }
    StateDict hyper =
        GroupHyperparameters(kind, optimizer.param_groups()[g].options());
    List fqns;
    for (const std::string& fqn : group.fqns) fqns.push_back(fqn);
    hyper.Set("params", std::move(fqns));
    param_groups.push_back(std::move(hyper));
  }
  return StateDict{{"state", std::move(state)},
                   {"param_groups", std::move(param_groups)}};
}

absl::Status SetOptimizerStateDict(const torch::nn::Module& model,
                                   torch::optim::Optimizer& optimizer,
                                   const StateDict& state) {
  DCP_ASSIGN_OR_RETURN(OptimizerKind kind, KindOf(optimizer));
  DCP_ASSIGN_OR_RETURN(std::vector<GroupParams> groups,
                       GroupsByFqn(model, optimizer));
  const Value* state_value = state.Find("state");
  const Value* groups_value = state.Find("param_groups");
  if (state_value == nullptr || !state_value->is<StateDict>() ||
      groups_value == nullptr || !groups_value->is<List>()) {
    return absl::InvalidArgumentError(
        "optimizer state dict needs \"state\" (a dict) and \"param_groups\" "
        "(a list)");
  }
  const StateDict& per_param = state_value->get<StateDict>();
  const List& saved_groups = groups_value->get<List>();
  if (saved_groups.size() != groups.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("optimizer state dict has ", saved_groups.size(),
                     " parameter groups, the optimizer ", groups.size()));
  }

  // Check everything before changing anything.
  std::vector<NewOptions> new_options;
  std::vector<NewParamState> new_states;
  for (size_t g = 0; g < groups.size(); ++g) {
    const std::string where = absl::StrCat("param_groups[", g, "]");
    const StateDict* saved = saved_groups[g].get_if<StateDict>();
    if (saved == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, " is a ", saved_groups[g].TypeName(), ", expected a dict"));
    }
    const Value* params = saved->Find("params");
    const List* fqn_list = params != nullptr ? params->get_if<List>() : nullptr;
    if (fqn_list == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": \"params\" must be a list of parameter FQNs"));
    }
    absl::flat_hash_set<std::string> saved_fqns;
    for (const Value& fqn : *fqn_list) {
      if (!fqn.is<std::string>()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": \"params\" holds a ", fqn.TypeName(),
                         ", expected parameter FQNs (str)"));
      }
      saved_fqns.insert(fqn.get<std::string>());
    }
    absl::flat_hash_set<std::string> own(groups[g].fqns.begin(),
                                         groups[g].fqns.end());
    std::vector<std::string> missing;
    std::vector<std::string> unexpected;
    for (const std::string& fqn : groups[g].fqns) {
      if (!saved_fqns.contains(fqn)) missing.push_back(fqn);
    }
    for (const Value& fqn : *fqn_list) {
      if (!own.contains(fqn.get<std::string>())) {
        unexpected.push_back(fqn.get<std::string>());
      }
    }
    if (!missing.empty() || !unexpected.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": the optimizer's parameters differ from the state dict's: ",
          "missing ", missing.empty() ? "none" : QuotedKeys(missing),
          "; unexpected ",
          unexpected.empty() ? "none" : QuotedKeys(unexpected)));
    }
    DCP_ASSIGN_OR_RETURN(
        NewOptions options,
        ReadOptions(kind, optimizer.param_groups()[g].options(), *saved,
                    where));
    const bool keeps_state = KeepsState(kind, *options.options);
    for (size_t i = 0; i < groups[g].params.size(); ++i) {
      const std::string& fqn = groups[g].fqns[i];
      const at::Tensor& param = groups[g].params[i];
      const Value* entry = per_param.Find(fqn);
      if (!param.requires_grad() || !keeps_state) continue;
      if (entry == nullptr || !entry->is<StateDict>()) {
        if (kind == OptimizerKind::kSgd) continue;  // PyTorch: no buffer yet.
        return absl::InvalidArgumentError(
            absl::StrCat("missing optimizer state for \"", fqn, "\""));
      }
      const StateDict& s = entry->get<StateDict>();
      NewParamState ps;
      ps.param = param;
      ps.fqn = fqn;
      std::vector<std::string> names;
      if (kind == OptimizerKind::kSgd) {
        if (s.Contains("momentum_buffer")) names.push_back("momentum_buffer");
      } else {
        const Value* step = s.Find("step");
        if (step == nullptr) {
          return absl::InvalidArgumentError(
              absl::StrCat("missing optimizer state \"state.", fqn, ".step\""));
        }
        DCP_ASSIGN_OR_RETURN(
            ps.step, ReadStep(*step, absl::StrCat("state.", fqn, ".step")));
        names = {"exp_avg", "exp_avg_sq"};
        if (options.amsgrad) names.push_back("max_exp_avg_sq");
      }
      for (const std::string& name : names) {
        DCP_ASSIGN_OR_RETURN(
            at::Tensor t,
            StateTensor(s, name, absl::StrCat("state.", fqn, ".", name),
                        param));
        ps.tensors.emplace_back(name, std::move(t));
      }
      new_states.push_back(std::move(ps));
    }
    new_options.push_back(std::move(options));
  }

  // Apply.
  for (size_t g = 0; g < groups.size(); ++g) {
    optimizer.param_groups()[g].set_options(std::move(new_options[g].options));
  }
  for (const NewParamState& ps : new_states) {
    const std::string key = StateKey(ps.param);
    auto it = optimizer.state().find(key);
    torch::optim::OptimizerParamState* existing =
        it == optimizer.state().end() ? nullptr : it->second.get();
    absl::Status status;
    std::unique_ptr<torch::optim::OptimizerParamState> created;
    switch (kind) {
      case OptimizerKind::kAdamW:
        created = AdamStateFor<AdamWParamState>(
            ps, static_cast<AdamWParamState*>(existing), &status);
        break;
      case OptimizerKind::kAdam:
        created = AdamStateFor<AdamParamState>(
            ps, static_cast<AdamParamState*>(existing), &status);
        break;
      case OptimizerKind::kSgd: {
        auto fresh = existing != nullptr ? std::unique_ptr<SGDParamState>()
                                         : std::make_unique<SGDParamState>();
        SGDParamState& s = existing != nullptr
                               ? static_cast<SGDParamState&>(*existing)
                               : *fresh;
        for (const auto& [name, src] : ps.tensors) {
          at::Tensor slot = s.momentum_buffer();
          status = ApplyStateTensor(absl::StrCat("state.", ps.fqn, ".", name),
                                    &slot, ps.param, src);
          if (!status.ok()) break;
          s.momentum_buffer(slot);
        }
        created = std::move(fresh);
        break;
      }
    }
    DCP_RETURN_IF_ERROR(status);
    if (created != nullptr) optimizer.state()[key] = std::move(created);
  }
  return absl::OkStatus();
}

}  // namespace dcp
