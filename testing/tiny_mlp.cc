#include "testing/tiny_mlp.h"

#include "torch/nn/functional/activation.h"
#include "torch/nn/functional/loss.h"

namespace dcp::test {

TinyMlpImpl::TinyMlpImpl(int64_t hidden)
    : input_scale(register_buffer("input_scale",
                                  torch::tensor({1.0f, 0.5f, 2.0f, 1.0f}))),
      fc1(register_module("fc1", torch::nn::Linear(4, hidden))),
      fc2(register_module("fc2", torch::nn::Linear(hidden, 3))) {
  torch::NoGradGuard no_grad;
  int s = 0;
  for (torch::Tensor p : {fc1->weight, fc1->bias, fc2->weight, fc2->bias}) {
    torch::Tensor values = torch::empty({p.numel()});
    float* data = values.data_ptr<float>();
    for (int64_t i = 0; i < p.numel(); ++i) {
      data[i] = static_cast<float>(((i * 7 + s) % 17) - 8) / 64.0f;
    }
    p.copy_(values.view(p.sizes()));
    ++s;
  }
}

torch::Tensor TinyMlpImpl::forward(const torch::Tensor& x) {
  return fc2(torch::relu(fc1(x * input_scale)));
}

torch::Tensor TinyMlpInput(int step) {
  torch::Tensor x = torch::empty({6, 4});
  float* data = x.data_ptr<float>();
  for (int b = 0; b < 6; ++b) {
    for (int j = 0; j < 4; ++j) {
      data[b * 4 + j] =
          static_cast<float>(((b * 5 + j * 3 + step) % 11) - 5) / 8.0f;
    }
  }
  return x;
}

torch::Tensor TinyMlpTarget(int step) {
  torch::Tensor y = torch::empty({6, 3});
  float* data = y.data_ptr<float>();
  for (int b = 0; b < 6; ++b) {
    for (int k = 0; k < 3; ++k) {
      data[b * 3 + k] = static_cast<float>(((b + 2 * k + step) % 7) - 3) / 4.0f;
    }
  }
  return y;
}

torch::optim::AdamWOptions TinyMlpAdamWOptions() {
  return torch::optim::AdamWOptions(0.01)
      .betas({0.9, 0.999})
      .eps(1e-8)
      .weight_decay(0.01);
}

float TinyMlpTrainStep(TinyMlp& model, torch::optim::Optimizer& optimizer,
                       int step) {
  optimizer.zero_grad();
  torch::Tensor loss = torch::nn::functional::mse_loss(
      model->forward(TinyMlpInput(step)), TinyMlpTarget(step));
  loss.backward();
  optimizer.step();
  return loss.item<float>();
}

}  // namespace dcp::test
