// -----------------------------------------------------------------------------
// File: testing/tiny_mlp.h
// -----------------------------------------------------------------------------
//
// The tiny training run that tools/peer/train_peer.py runs in PyTorch 2.6,
// reproduced with libtorch's C++ frontend, for tests that checkpoint and
// resume real training (checkpoint/module_state.h) in either language. The
// spec is train_peer.py's docstring; in short:
//
//   TinyMlp: buffer input_scale = [1, 0.5, 2, 1], fc1 = Linear(4, 8),
//            fc2 = Linear(8, 3); forward(x) = fc2(relu(fc1(x * input_scale)));
//            parameter s (fc1.weight, fc1.bias, fc2.weight, fc2.bias) element
//            i = (((i * 7 + s) % 17) - 8) / 64.
//   step t:  x[b][j] = (((b*5 + j*3 + t) % 11) - 5) / 8 ([6, 4]),
//            y[b][k] = (((b + 2k + t) % 7) - 3) / 4 ([6, 3]),
//            loss = mse_loss(model(x), y), AdamW(lr 0.01, betas (0.9,
//            0.999), eps 1e-8, weight_decay 0.01).
//
// Every value is an exact binary fraction, so every build of the model is
// identical; training steps agree with PyTorch's up to floating-point
// rounding differences between libtorch 1.13 and torch 2.6.
//
// Thread safety: a module and its optimizer belong to one thread at a time.
#ifndef DCP_TESTING_TINY_MLP_H_
#define DCP_TESTING_TINY_MLP_H_

#include "torch/nn/module.h"
#include "torch/nn/modules/linear.h"
#include "torch/nn/pimpl.h"
#include "torch/optim/adamw.h"
#include "torch/optim/optimizer.h"

namespace dcp::test {

struct TinyMlpImpl : torch::nn::Module {
  // `hidden` is fc1's output size (8 in the spec).
  explicit TinyMlpImpl(int64_t hidden = 8);
  torch::Tensor forward(const torch::Tensor& x);

  torch::Tensor input_scale;
  torch::nn::Linear fc1;
  torch::nn::Linear fc2;
};
TORCH_MODULE(TinyMlp);

// The inputs and targets of training step `step` (1-based).
torch::Tensor TinyMlpInput(int step);
torch::Tensor TinyMlpTarget(int step);

// The spec's AdamW options.
torch::optim::AdamWOptions TinyMlpAdamWOptions();

// One training step (zero_grad, forward, mse loss, backward, step); returns
// the loss.
float TinyMlpTrainStep(TinyMlp& model, torch::optim::Optimizer& optimizer,
                       int step);

}  // namespace dcp::test

#endif  // DCP_TESTING_TINY_MLP_H_
