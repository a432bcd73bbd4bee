#include "checkpoint/module_state.h"

#include <stdlib.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "checkpoint/save_load.h"
#include "core/state_dict.h"
#include "core/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/fs_storage.h"
#include "testing/simulator.h"
#include "testing/status_matchers.h"
#include "testing/tensor_matchers.h"
#include "testing/tiny_mlp.h"
#include "torch/nn/module.h"
#include "torch/nn/modules/linear.h"
#include "torch/optim/adam.h"
#include "torch/optim/adamw.h"
#include "torch/optim/rmsprop.h"
#include "torch/optim/sgd.h"

namespace dcp {
namespace {

using ::dcp::test::RankContext;
using ::dcp::test::Simulator;
using ::dcp::test::SimulatorOptions;
using ::dcp::test::StatusIs;
using ::dcp::test::TensorEq;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string MakeTempDir() {
  const char* base = getenv("TEST_TMPDIR");
  std::string pattern =
      absl::StrCat(base != nullptr ? base : "/tmp", "/module_state_XXXXXX");
  CHECK(mkdtemp(pattern.data()) != nullptr) << pattern;
  return pattern;
}

using TinyMlp = ::dcp::test::TinyMlp;

float TrainStep(TinyMlp& model, torch::optim::Optimizer& optimizer, int step) {
  return ::dcp::test::TinyMlpTrainStep(model, optimizer, step);
}

torch::optim::AdamWOptions AdamWOpts() {
  return ::dcp::test::TinyMlpAdamWOptions();
}

absl::Status SaveTo(const std::string& dir, const StateDict& state) {
  DCP_ASSIGN_OR_RETURN(std::unique_ptr<FileSystemWriter> writer,
                       FileSystemWriter::Create(dir));
  SaveOptions options;
  options.no_dist = true;
  return Save(state, *writer, options).status();
}

absl::Status LoadFrom(const std::string& dir, StateDict& state) {
  DCP_ASSIGN_OR_RETURN(std::unique_ptr<FileSystemReader> reader,
                       FileSystemReader::Create(dir));
  LoadOptions options;
  options.no_dist = true;
  return Load(state, *reader, options);
}

const StateDict& Dict(const StateDict& sd, const std::string& key) {
  return sd.Find(key)->get<StateDict>();
}

// ---- Model ------------------------------------------------------------------

TEST(GetModelStateDictTest, PyTorchOrderAndAliasesTheModule) {
  TinyMlp model;
  DCP_ASSERT_OK_AND_ASSIGN(StateDict sd, GetModelStateDict(*model));
  EXPECT_THAT(sd.Keys(), ElementsAre("input_scale", "fc1.weight", "fc1.bias",
                                     "fc2.weight", "fc2.bias"));
  at::Tensor w = sd.Find("fc1.weight")->get<at::Tensor>();
  EXPECT_FALSE(w.requires_grad());
  EXPECT_EQ(w.data_ptr(), model->fc1->weight.data_ptr());
  // Writing into the state dict (as Load does) writes into the module.
  w.fill_(0.25f);
  EXPECT_EQ(model->fc1->weight[2][3].item<float>(), 0.25f);
}

TEST(GetModelStateDictTest, UndefinedBiasIsLeftOut) {
  torch::nn::Linear linear(torch::nn::LinearOptions(3, 2).bias(false));
  DCP_ASSERT_OK_AND_ASSIGN(StateDict sd, GetModelStateDict(*linear));
  EXPECT_THAT(sd.Keys(), ElementsAre("weight"));
}

TEST(SetModelStateDictTest, CopiesIntoAFreshModel) {
  TinyMlp trained;
  {
    torch::NoGradGuard no_grad;
    trained->fc2->bias.add_(1.5f);
    trained->input_scale.mul_(3.0f);
  }
  DCP_ASSERT_OK_AND_ASSIGN(StateDict sd, GetModelStateDict(*trained));
  TinyMlp fresh;
  DCP_ASSERT_OK(SetModelStateDict(*fresh, sd));
  EXPECT_THAT(fresh->fc2->bias, TensorEq(trained->fc2->bias.detach()));
  EXPECT_THAT(fresh->input_scale, TensorEq(trained->input_scale));
  EXPECT_TRUE(fresh->fc2->bias.requires_grad());
}

TEST(SetModelStateDictTest,
     StrictNamesMissingAndUnexpectedKeysAndChangesNothing) {
  TinyMlp model;
  DCP_ASSERT_OK_AND_ASSIGN(StateDict sd, GetModelStateDict(*model));
  StateDict other;
  for (const auto& [key, value] : sd.entries()) {
    other.Set(key, Value(value.get<at::Tensor>().clone().add_(1.0f)));
  }
  other.Erase("fc1.bias");
  other.Set("fc3.weight", at::zeros({2}));
  const at::Tensor before = model->fc1->weight.detach().clone();
  EXPECT_THAT(SetModelStateDict(*model, other),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("missing keys \"fc1.bias\"; unexpected keys "
                                 "\"fc3.weight\"")));
  EXPECT_THAT(model->fc1->weight.detach(), TensorEq(before));
  // Non-strict copies the keys both have.
  DCP_ASSERT_OK(SetModelStateDict(*model, other, /*strict=*/false));
  EXPECT_THAT(model->fc1->weight.detach(), TensorEq(before + 1.0f));
}

TEST(SetModelStateDictTest, ShapeAndDtypeMismatchesNameTheKeyAndBoth) {
  TinyMlp model;
  DCP_ASSERT_OK_AND_ASSIGN(StateDict sd, GetModelStateDict(*model));
  StateDict wrong_shape = sd;
  wrong_shape.Set("fc1.weight", at::zeros({4, 8}));
  EXPECT_THAT(SetModelStateDict(*model, wrong_shape),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("\"fc1.weight\": shape [4, 8] in the state "
                                 "dict, [8, 4] in the module")));
  StateDict wrong_dtype = sd;
  wrong_dtype.Set("fc2.bias", at::zeros({3}, at::kDouble));
  EXPECT_THAT(SetModelStateDict(*model, wrong_dtype),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("\"fc2.bias\": dtype Double in the state "
                                 "dict, Float in the module")));
  StateDict not_tensor = sd;
  not_tensor.Set("fc2.bias", 3);
  EXPECT_THAT(SetModelStateDict(*model, not_tensor),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("\"fc2.bias\" has type int, not a tensor")));
}

// ---- Optimizer --------------------------------------------------------------

TEST(GetOptimizerStateDictTest, AdamWHasPyTorchsLayout) {
  TinyMlp model;
  torch::optim::AdamW optimizer(model->parameters(), AdamWOpts());
  for (int step = 1; step <= 3; ++step) TrainStep(model, optimizer, step);
  DCP_ASSERT_OK_AND_ASSIGN(StateDict sd,
                           GetOptimizerStateDict(*model, optimizer));
  EXPECT_THAT(sd.Keys(), ElementsAre("state", "param_groups"));
  const StateDict& state = Dict(sd, "state");
  EXPECT_THAT(state.Keys(),
              ElementsAre("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"));
  const StateDict& w = Dict(state, "fc1.weight");
  EXPECT_THAT(w.Keys(), ElementsAre("step", "exp_avg", "exp_avg_sq"));
  EXPECT_THAT(w.Find("step")->get<at::Tensor>(),
              TensorEq(at::scalar_tensor(3.0, at::kFloat)));
  EXPECT_EQ(w.Find("exp_avg")->get<at::Tensor>().sizes(),
            model->fc1->weight.sizes());

  const List& groups = sd.Find("param_groups")->get<List>();
  ASSERT_EQ(groups.size(), 1);
  const StateDict& group = groups[0].get<StateDict>();
  EXPECT_THAT(group.Keys(),
              ElementsAre("lr", "betas", "eps", "weight_decay", "amsgrad",
                          "foreach", "maximize", "capturable", "differentiable",
                          "fused", "params"));
  EXPECT_TRUE(ValuesEqual(*group.Find("betas"), Value(Tuple{{0.9, 0.999}})));
  EXPECT_TRUE(ValuesEqual(*group.Find("foreach"), Value(None{})));
  EXPECT_TRUE(ValuesEqual(
      *group.Find("params"),
      Value(List{"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"})));
}

TEST(GetOptimizerStateDictTest, FreshOptimizerGetsStateAsPyTorchInitsIt) {
  TinyMlp model;
  torch::optim::AdamW optimizer(model->parameters(), AdamWOpts());
  const at::Tensor before = model->fc1->weight.detach().clone();
  DCP_ASSERT_OK_AND_ASSIGN(StateDict sd,
                           GetOptimizerStateDict(*model, optimizer));
  const StateDict& w = Dict(Dict(sd, "state"), "fc1.weight");
  // _init_optim_state: one step with zero gradients and lr 0.
  EXPECT_THAT(w.Find("step")->get<at::Tensor>(),
              TensorEq(at::scalar_tensor(1.0, at::kFloat)));
  EXPECT_THAT(w.Find("exp_avg")->get<at::Tensor>(),
              TensorEq(at::zeros({8, 4})));
  EXPECT_THAT(model->fc1->weight.detach(), TensorEq(before));
  EXPECT_FALSE(model->fc1->weight.grad().defined());
  const StateDict& group =
      sd.Find("param_groups")->get<List>()[0].get<StateDict>();
  EXPECT_EQ(group.Find("lr")->get<double>(), 0.01);
}

TEST(GetOptimizerStateDictTest, InitOnlyTouchesParametersWithoutState) {
  TinyMlp model;
  torch::optim::AdamW optimizer(model->parameters(), AdamWOpts());
  TrainStep(model, optimizer, 1);
  // A parameter added later has no state; the others keep theirs and their
  // gradients.
  torch::Tensor extra = torch::ones({2}, torch::requires_grad());
  model->register_parameter("extra", extra);
  optimizer.param_groups()[0].params().push_back(extra);
  const at::Tensor grad = model->fc1->weight.grad().clone();
  DCP_ASSERT_OK_AND_ASSIGN(StateDict sd,
                           GetOptimizerStateDict(*model, optimizer));
  const StateDict& state = Dict(sd, "state");
  EXPECT_THAT(Dict(state, "fc1.weight").Find("step")->get<at::Tensor>(),
              TensorEq(at::scalar_tensor(1.0, at::kFloat)));
  EXPECT_THAT(Dict(state, "extra").Find("step")->get<at::Tensor>(),
              TensorEq(at::scalar_tensor(1.0, at::kFloat)));
  EXPECT_THAT(model->fc1->weight.grad(), TensorEq(grad));
  EXPECT_THAT(extra.detach(), TensorEq(at::ones({2})));
}

TEST(OptimizerStateDictTest, SaveLoadAndContinueMatchesUninterruptedAdamW) {
  // Uninterrupted: 4 steps.
  TinyMlp reference;
  torch::optim::AdamW reference_optim(reference->parameters(), AdamWOpts());
  float reference_loss = 0;
  for (int step = 1; step <= 4; ++step) {
    reference_loss = TrainStep(reference, reference_optim, step);
  }

  // 3 steps, save, load into a fresh model and optimizer, step 4.
  const std::string dir = MakeTempDir();
  {
    TinyMlp model;
    torch::optim::AdamW optimizer(model->parameters(), AdamWOpts());
    for (int step = 1; step <= 3; ++step) TrainStep(model, optimizer, step);
    DCP_ASSERT_OK_AND_ASSIGN(StateDict model_sd, GetModelStateDict(*model));
    DCP_ASSERT_OK_AND_ASSIGN(StateDict optim_sd,
                             GetOptimizerStateDict(*model, optimizer));
    DCP_ASSERT_OK(SaveTo(
        dir, StateDict{{"model", model_sd}, {"optim", optim_sd}, {"step", 3}}));
  }
  TinyMlp model;
  // Different hyperparameters, to see they come from the checkpoint.
  torch::optim::AdamW optimizer(
      model->parameters(),
      torch::optim::AdamWOptions(0.5).betas({0.5, 0.5}).weight_decay(0.0));
  DCP_ASSERT_OK_AND_ASSIGN(StateDict model_sd, GetModelStateDict(*model));
  DCP_ASSERT_OK_AND_ASSIGN(StateDict optim_sd,
                           GetOptimizerStateDict(*model, optimizer));
  StateDict state{{"model", model_sd}, {"optim", optim_sd}, {"step", 0}};
  DCP_ASSERT_OK(LoadFrom(dir, state));
  EXPECT_EQ(state.Find("step")->get<int64_t>(), 3);
  DCP_ASSERT_OK(SetModelStateDict(*model, Dict(state, "model")));
  DCP_ASSERT_OK(SetOptimizerStateDict(*model, optimizer, Dict(state, "optim")));
  const auto& options = static_cast<const torch::optim::AdamWOptions&>(
      optimizer.param_groups()[0].options());
  EXPECT_EQ(options.lr(), 0.01);
  EXPECT_EQ(std::get<0>(options.betas()), 0.9);
  const float loss = TrainStep(model, optimizer, 4);

  EXPECT_EQ(loss, reference_loss);
  for (const auto& item : reference->named_parameters()) {
    EXPECT_THAT(model->named_parameters()[item.key()].detach(),
                TensorEq(item.value().detach()))
        << item.key();
  }
}

TEST(OptimizerStateDictTest, AdamWithAmsgradAndSgdWithMomentumRoundTrip) {
  for (int kind = 0; kind < 2; ++kind) {
    SCOPED_TRACE(kind == 0 ? "adam" : "sgd");
    auto make = [&](TinyMlp& m) -> std::unique_ptr<torch::optim::Optimizer> {
      if (kind == 0) {
        return std::make_unique<torch::optim::Adam>(
            m->parameters(),
            torch::optim::AdamOptions(0.02).amsgrad(true).weight_decay(0.1));
      }
      return std::make_unique<torch::optim::SGD>(
          m->parameters(),
          torch::optim::SGDOptions(0.05).momentum(0.9).nesterov(true));
    };
    TinyMlp reference;
    auto reference_optim = make(reference);
    for (int step = 1; step <= 3; ++step) {
      TrainStep(reference, *reference_optim, step);
    }

    TinyMlp trained;
    auto trained_optim = make(trained);
    TrainStep(trained, *trained_optim, 1);
    DCP_ASSERT_OK_AND_ASSIGN(StateDict saved,
                             GetOptimizerStateDict(*trained, *trained_optim));
    const StateDict& w = Dict(Dict(saved, "state"), "fc1.weight");
    if (kind == 0) {
      EXPECT_THAT(w.Keys(), ElementsAre("step", "exp_avg", "exp_avg_sq",
                                        "max_exp_avg_sq"));
    } else {
      EXPECT_THAT(w.Keys(), ElementsAre("momentum_buffer"));
    }
    DCP_ASSERT_OK_AND_ASSIGN(StateDict model_saved,
                             GetModelStateDict(*trained));
    const std::string dir = MakeTempDir();
    DCP_ASSERT_OK(
        SaveTo(dir, StateDict{{"model", model_saved}, {"optim", saved}}));

    TinyMlp model;
    auto optimizer = make(model);
    DCP_ASSERT_OK_AND_ASSIGN(StateDict model_sd, GetModelStateDict(*model));
    DCP_ASSERT_OK_AND_ASSIGN(StateDict optim_sd,
                             GetOptimizerStateDict(*model, *optimizer));
    StateDict state{{"model", model_sd}, {"optim", optim_sd}};
    DCP_ASSERT_OK(LoadFrom(dir, state));
    DCP_ASSERT_OK(SetModelStateDict(*model, Dict(state, "model")));
    DCP_ASSERT_OK(
        SetOptimizerStateDict(*model, *optimizer, Dict(state, "optim")));
    TrainStep(model, *optimizer, 2);
    TrainStep(model, *optimizer, 3);
    for (const auto& item : reference->named_parameters()) {
      EXPECT_THAT(model->named_parameters()[item.key()].detach(),
                  TensorEq(item.value().detach()))
          << item.key();
    }
  }
}

TEST(OptimizerStateDictTest, SgdWithoutMomentumHasNoState) {
  TinyMlp model;
  torch::optim::SGD optimizer(model->parameters(),
                              torch::optim::SGDOptions(0.1));
  DCP_ASSERT_OK_AND_ASSIGN(StateDict sd,
                           GetOptimizerStateDict(*model, optimizer));
  EXPECT_TRUE(Dict(sd, "state").empty());
  const StateDict& group =
      sd.Find("param_groups")->get<List>()[0].get<StateDict>();
  EXPECT_THAT(
      group.Keys(),
      ElementsAre("lr", "momentum", "dampening", "weight_decay", "nesterov",
                  "maximize", "foreach", "differentiable", "fused", "params"));
  DCP_ASSERT_OK(SetOptimizerStateDict(*model, optimizer, sd));
}

TEST(OptimizerStateDictTest, OtherOptimizersAreUnimplemented) {
  TinyMlp model;
  torch::optim::RMSprop optimizer(model->parameters(),
                                  torch::optim::RMSpropOptions(0.1));
  EXPECT_THAT(GetOptimizerStateDict(*model, optimizer),
              StatusIs(absl::StatusCode::kUnimplemented,
                       HasSubstr("torch::optim::RMSprop")));
  EXPECT_THAT(SetOptimizerStateDict(*model, optimizer, StateDict{}),
              StatusIs(absl::StatusCode::kUnimplemented));
}

TEST(OptimizerStateDictTest, ParameterOutsideTheModelIsAnError) {
  TinyMlp model;
  torch::Tensor stray = torch::zeros({5}, torch::requires_grad());
  torch::optim::AdamW optimizer(std::vector<torch::Tensor>{stray}, AdamWOpts());
  EXPECT_THAT(GetOptimizerStateDict(*model, optimizer),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("parameter group 0, parameter 0 (shape [5]) "
                                 "is not a parameter of the model")));
}

TEST(SetOptimizerStateDictTest, BadStateIsRefusedBeforeAnyChange) {
  TinyMlp model;
  torch::optim::AdamW optimizer(model->parameters(), AdamWOpts());
  TrainStep(model, optimizer, 1);
  DCP_ASSERT_OK_AND_ASSIGN(StateDict good,
                           GetOptimizerStateDict(*model, optimizer));
  // Detach the checked copy from the optimizer's own tensors.
  auto clone_state = [&]() {
    StateDict sd = good;
    StateDict& state = sd.FindMutable("state")->get<StateDict>();
    for (auto& [fqn, entry] : state.mutable_entries()) {
      for (auto& [name, value] : entry.get<StateDict>().mutable_entries()) {
        value = Value(value.get<at::Tensor>().clone().add_(1.0f));
      }
    }
    return sd;
  };
  auto group_of = [](StateDict& sd) -> StateDict& {
    return sd.FindMutable("param_groups")->get<List>()[0].get<StateDict>();
  };
  const at::Tensor exp_avg_before = Dict(Dict(good, "state"), "fc1.weight")
                                        .Find("exp_avg")
                                        ->get<at::Tensor>()
                                        .clone();

  StateDict renamed = clone_state();
  group_of(renamed).Set(
      "params", List{"fc1.weight", "fc1.bias", "fc2.weight", "fc9.bias"});
  EXPECT_THAT(
      SetOptimizerStateDict(*model, optimizer, renamed),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("missing \"fc2.bias\"; unexpected \"fc9.bias\"")));

  StateDict bad_shape = clone_state();
  bad_shape.FindMutable("state")
      ->get<StateDict>()
      .FindMutable("fc2.bias")
      ->get<StateDict>()
      .Set("exp_avg", at::zeros({4}));
  EXPECT_THAT(SetOptimizerStateDict(*model, optimizer, bad_shape),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("\"state.fc2.bias.exp_avg\": shape [4] in the "
                                 "state dict, [3] for the parameter")));

  StateDict bad_step = clone_state();
  bad_step.FindMutable("state")
      ->get<StateDict>()
      .FindMutable("fc2.bias")
      ->get<StateDict>()
      .Set("step", at::scalar_tensor(2.5));
  EXPECT_THAT(SetOptimizerStateDict(*model, optimizer, bad_step),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("\"state.fc2.bias.step\" is 2.5")));

  StateDict maximize = clone_state();
  group_of(maximize).Set("maximize", true);
  EXPECT_THAT(
      SetOptimizerStateDict(*model, optimizer, maximize),
      StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("maximize")));

  StateDict no_lr = clone_state();
  group_of(no_lr).Erase("lr");
  EXPECT_THAT(SetOptimizerStateDict(*model, optimizer, no_lr),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("param_groups[0]: missing \"lr\"")));

  // None of these changed the optimizer.
  const auto& state = optimizer.state();
  ASSERT_EQ(state.size(), 4);
  DCP_ASSERT_OK_AND_ASSIGN(StateDict after,
                           GetOptimizerStateDict(*model, optimizer));
  EXPECT_THAT(Dict(Dict(after, "state"), "fc1.weight")
                  .Find("exp_avg")
                  ->get<at::Tensor>(),
              TensorEq(exp_avg_before));
  EXPECT_EQ(group_of(after).Find("lr")->get<double>(), 0.01);

  // Python's ints and lists are accepted where PyTorch writes them.
  StateDict pythonic = clone_state();
  group_of(pythonic).Set("weight_decay", 0);
  group_of(pythonic).Set("betas", List{0.8, 0.9});
  DCP_ASSERT_OK(SetOptimizerStateDict(*model, optimizer, pythonic));
  const auto& options = static_cast<const torch::optim::AdamWOptions&>(
      optimizer.param_groups()[0].options());
  EXPECT_EQ(options.weight_decay(), 0.0);
  EXPECT_EQ(std::get<0>(options.betas()), 0.8);
  EXPECT_THAT(Dict(Dict(after, "state"), "fc1.weight")
                  .Find("exp_avg")
                  ->get<at::Tensor>(),
              TensorEq(exp_avg_before + 1.0f));
}

TEST(OptimizerStateDictTest, LoadingIntoAModelOfAnotherShapeNamesKeyAndShapes) {
  const std::string dir = MakeTempDir();
  {
    TinyMlp model;  // hidden 8
    torch::optim::AdamW optimizer(model->parameters(), AdamWOpts());
    TrainStep(model, optimizer, 1);
    DCP_ASSERT_OK_AND_ASSIGN(StateDict model_sd, GetModelStateDict(*model));
    DCP_ASSERT_OK_AND_ASSIGN(StateDict optim_sd,
                             GetOptimizerStateDict(*model, optimizer));
    DCP_ASSERT_OK(
        SaveTo(dir, StateDict{{"model", model_sd}, {"optim", optim_sd}}));
  }
  TinyMlp wider(/*hidden=*/16);
  torch::optim::AdamW optimizer(wider->parameters(), AdamWOpts());
  DCP_ASSERT_OK_AND_ASSIGN(StateDict model_sd, GetModelStateDict(*wider));
  DCP_ASSERT_OK_AND_ASSIGN(StateDict optim_sd,
                           GetOptimizerStateDict(*wider, optimizer));
  StateDict state{{"model", model_sd}, {"optim", optim_sd}};
  const absl::Status status = LoadFrom(dir, state);
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument,
                               HasSubstr("model.fc1.weight")));
  EXPECT_THAT(std::string(status.message()), HasSubstr("[8, 4]"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("[16, 4]"));
  // Nothing was loaded into the model.
  EXPECT_THAT(wider->fc1->weight.detach(),
              TensorEq(TinyMlp(16)->fc1->weight.detach()));
}

// ---- Sharding ---------------------------------------------------------------

TEST(ModuleStateShardingTest, RowShardedModulesSaveOneGlobalTensor) {
  // Two ranks each hold rows [4r, 4r + 4) of fc1 (a 4 -> 8 Linear) as their
  // own 4 -> 4 Linear; a single rank loads the whole 4 -> 8 layer.
  const std::string dir = MakeTempDir();
  // Creates libtorch's default generator before the rank threads do (see
  // tools/interop/train_interop_main.cc).
  torch::nn::Linear warm_up(1, 1);
  SimulatorOptions sim_options;
  sim_options.world_size = 2;
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Simulator> sim,
                           Simulator::Create(sim_options));
  std::vector<at::Tensor> local_weights(2);
  std::vector<absl::Status> statuses =
      sim->Run([&](RankContext& ctx) -> absl::Status {
        const int64_t rank = ctx.rank();
        torch::nn::Linear local(4, 4);
        {
          torch::NoGradGuard no_grad;
          local->weight.copy_(torch::arange(16, torch::kFloat).view({4, 4}) +
                              100 * rank);
          local->bias.fill_(static_cast<float>(rank));
        }
        local_weights[rank] = local->weight.detach().clone();
        ModuleStateOptions options;
        options.sharding =
            [rank](absl::string_view fqn,
                   const at::Tensor& t) -> std::optional<ShardPlacement> {
          if (fqn == "weight") return ShardPlacement{{8, 4}, {4 * rank, 0}};
          return ShardPlacement{{8}, {4 * rank}};
        };
        torch::optim::SGD optimizer(
            local->parameters(), torch::optim::SGDOptions(0.1).momentum(0.5));
        DCP_ASSIGN_OR_RETURN(StateDict model_sd,
                             GetModelStateDict(*local, options));
        if (!model_sd.Find("weight")->is<ShardedTensor>()) {
          return absl::InternalError("weight is not sharded");
        }
        DCP_ASSIGN_OR_RETURN(StateDict optim_sd,
                             GetOptimizerStateDict(*local, optimizer, options));
        DCP_ASSIGN_OR_RETURN(std::unique_ptr<FileSystemWriter> writer,
                             FileSystemWriter::Create(dir));
        SaveOptions save;
        save.process_group = &ctx.pg();
        return Save(StateDict{{"model", model_sd}, {"optim", optim_sd}},
                    *writer, save)
            .status();
      });
  for (const absl::Status& status : statuses) DCP_ASSERT_OK(status);

  torch::nn::Linear whole(4, 8);
  torch::optim::SGD optimizer(whole->parameters(),
                              torch::optim::SGDOptions(0.1).momentum(0.5));
  DCP_ASSERT_OK_AND_ASSIGN(StateDict model_sd, GetModelStateDict(*whole));
  DCP_ASSERT_OK_AND_ASSIGN(StateDict optim_sd,
                           GetOptimizerStateDict(*whole, optimizer));
  StateDict state{{"model", model_sd}, {"optim", optim_sd}};
  DCP_ASSERT_OK(LoadFrom(dir, state));
  DCP_ASSERT_OK(SetModelStateDict(*whole, Dict(state, "model")));
  DCP_ASSERT_OK(SetOptimizerStateDict(*whole, optimizer, Dict(state, "optim")));
  EXPECT_THAT(whole->weight.detach(),
              TensorEq(at::cat({local_weights[0], local_weights[1]})));
  EXPECT_THAT(whole->bias.detach(),
              TensorEq(at::tensor({0.f, 0.f, 0.f, 0.f, 1.f, 1.f, 1.f, 1.f})));
}

TEST(ModuleStateShardingTest, PlacementThatDoesNotFitIsAnError) {
  torch::nn::Linear linear(4, 4);
  ModuleStateOptions options;
  options.sharding = [](absl::string_view,
                        const at::Tensor&) -> std::optional<ShardPlacement> {
    return ShardPlacement{{6}, {4}};
  };
  EXPECT_THAT(GetModelStateDict(*linear, options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("\"weight\": sharding placement")));
}

}  // namespace
}  // namespace dcp
