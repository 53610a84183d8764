// Python bindings of the fused kernels (lstm_cell.cpp); see __init__.py.

#include <torch/extension.h>

#include <optional>
#include <vector>

using Maybe = std::optional<at::Tensor>;

std::vector<at::Tensor> lstm_cell_forward(const at::Tensor& P, const Maybe& Q,
                                          const Maybe& c_prev, const Maybe& w0, const Maybe& w1,
                                          int64_t num_modules);
std::vector<at::Tensor> lstm_cell_backward(const Maybe& grad_h, const Maybe& grad_c,
                                           const Maybe& grad_logits, const at::Tensor& P,
                                           const Maybe& Q, const Maybe& c_prev, const Maybe& w0,
                                           const Maybe& w1, int64_t num_modules);
std::vector<at::Tensor> mix_forward(const at::Tensor& h_m, const at::Tensor& c_m,
                                    const at::Tensor& probs);
std::vector<at::Tensor> mix_backward(const Maybe& grad_h, const Maybe& grad_c,
                                     const at::Tensor& h_m, const at::Tensor& c_m,
                                     const at::Tensor& probs);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("lstm_cell_forward", &lstm_cell_forward, "Fused modular LSTM cell, forward");
  module.def("lstm_cell_backward", &lstm_cell_backward, "Fused modular LSTM cell, backward");
  module.def("mix_forward", &mix_forward, "Routed state sum_m p_m (h_m, c_m), forward");
  module.def("mix_backward", &mix_backward, "Routed state sum_m p_m (h_m, c_m), backward");
}
