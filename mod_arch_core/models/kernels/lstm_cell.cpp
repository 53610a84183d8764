// Fused LSTM cell of R modules sharing one previous state (spec §3.4), forward and backward.
//
// One pass over the gate pre-activations replaces the dozen elementwise passes of eager
// PyTorch (sum of the input and recurrent halves, four gate nonlinearities, the cell update,
// the modules' ReLU score logits and, in backward, their gradients). Built on first use by
// mod_arch_core/models/kernels/__init__.py (bindings.cpp names the functions); the pure-PyTorch
// path in layers.py and aggregation.py computes the same function and the tests compare the two.
//
// Layout (all float32, contiguous):
//   P, Q   (N, B, R * 4h)  input and recurrent halves of the pre-activations; module m owns
//                          columns [m * 4h, (m + 1) * 4h) in nn.LSTMCell's order (i, f, g, o).
//                          Q may be undefined (the zero initial state).
//   c_prev (N, B, h)       the shared previous cell state; undefined means zeros.
//   w0, w1 (N, R, 4h)      the self-scorer's halves (Modular): module m's score logit is
//                          sum_j relu(P_mj) w0_mj + relu(Q_mj) w1_mj. Undefined: no scores.
// Outputs: h_m and c_m (N, B, R, h), logits (N, B, R) or an empty tensor.
// mix_forward / mix_backward (end of file) then give the routed state sum_m p_m (h_m, c_m).
//
// Each inner loop runs over one module row from its start, vectorised by the compiler with
// no peeling for alignment (see _compile_flags in __init__.py), so which lanes compute which
// element depends only on h: a number never depends on its address or on how many runs are
// stacked, and run k alone equals run k in a stack, bit for bit.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

#if defined(__x86_64__) && defined(__GLIBC__) && defined(MOD_ARCH_VECTOR_MATH)
// glibc's vector math library (libmvec) supplies the SIMD variant of expf.
extern "C" {
#pragma omp declare simd notinbranch
float expf(float) noexcept;
}
#endif

namespace {

inline float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// tanh(x) = 1 - 2 / (1 + exp(2x)), exact at both tails (exp overflows to inf: 1; underflows
// to 0: -1) and within about 1e-7 of tanh near 0. glibc's vector tanhf hands many ordinary
// inputs to its scalar expm1f, which made it as slow as the rest of the cell together.
inline float tanh_(float x) { return 1.0f - 2.0f / (1.0f + expf(2.0f * x)); }

using Maybe = std::optional<at::Tensor>;

at::Tensor value(const Maybe& t) { return t.has_value() ? *t : at::Tensor(); }

const float* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<float>() : nullptr;
}

float* mutable_or_null(at::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }

void check(const at::Tensor& t, const char* name, std::vector<int64_t> shape) {
  if (!t.defined()) return;
  TORCH_CHECK(t.scalar_type() == at::kFloat, name, " must be float32");
  TORCH_CHECK(t.device().is_cpu(), name, " must be on the CPU");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
  TORCH_CHECK(t.sizes().vec() == shape, name, " has shape ", t.sizes(), ", expected ",
              at::IntArrayRef(shape));
}

struct Shape {
  int64_t n, b, r, h;
};

Shape shape_of(const at::Tensor& P, int64_t num_modules) {
  TORCH_CHECK(P.dim() == 3, "P must be (N, B, R * 4h)");
  TORCH_CHECK(num_modules > 0 && P.size(2) % (4 * num_modules) == 0,
              "P's last axis is not a multiple of 4 * num_modules");
  return {P.size(0), P.size(1), num_modules, P.size(2) / (4 * num_modules)};
}

void check_all(const Shape& s, const at::Tensor& P, const at::Tensor& Q,
               const at::Tensor& c_prev, const at::Tensor& w0, const at::Tensor& w1) {
  check(P, "P", {s.n, s.b, s.r * 4 * s.h});
  check(Q, "Q", {s.n, s.b, s.r * 4 * s.h});
  check(c_prev, "c_prev", {s.n, s.b, s.h});
  check(w0, "w0", {s.n, s.r, 4 * s.h});
  check(w1, "w1", {s.n, s.r, 4 * s.h});
  TORCH_CHECK(w0.defined() == w1.defined(), "w0 and w1 come together");
}

// One module's state update over its h units. p and q point at the module's 4h
// pre-activations (gate order i, f, g, o); q, cp may point at zeros.
void forward_row(const float* __restrict p, const float* __restrict q,
                 const float* __restrict cp, int64_t h, float* __restrict h_out,
                 float* __restrict c_out) {
#pragma omp simd
  for (int64_t k = 0; k < h; ++k) {
    const float i = sigmoid(p[k] + q[k]);
    const float f = sigmoid(p[h + k] + q[h + k]);
    const float g = tanh_(p[2 * h + k] + q[2 * h + k]);
    const float o = sigmoid(p[3 * h + k] + q[3 * h + k]);
    const float c = f * cp[k] + i * g;
    c_out[k] = c;
    h_out[k] = o * tanh_(c);
  }
}

// The gradients of forward_row: writes the pre-activations' gradients to gp (and gq when
// given; without scores the two are equal) and adds the shared state's to gcp. With kScored,
// the module's score logit (relu_dot of p with w0 and of q with w1) has gradient g: its
// share [x > 0] w g is added to gp and gq, and [x > 0] x g to the weights' gw0 and gw1.
// One gate's pre-activation gradient d at column `at`, plus its score share (backward_row).
template <bool kWriteQ, bool kScored>
inline void gate_grad(int64_t at, float xp, float xq, float d, const float* __restrict w0,
                      const float* __restrict w1, float g, float* __restrict gp,
                      float* __restrict gq, float* __restrict gw0, float* __restrict gw1) {
  if constexpr (kScored) {
    // The step [x > 0] as a factor 0 or 1: branch-free, so the loop vectorises.
    const float on_p = static_cast<float>(xp > 0.0f);
    gp[at] = d + on_p * (w0[at] * g);
    gw0[at] += on_p * (xp * g);
    if constexpr (kWriteQ) {
      const float on_q = static_cast<float>(xq > 0.0f);
      gq[at] = d + on_q * (w1[at] * g);
      gw1[at] += on_q * (xq * g);
    }
  } else {
    gp[at] = d;
    if constexpr (kWriteQ) gq[at] = d;
  }
}

template <bool kWriteQ, bool kScored>
void backward_row(const float* __restrict p, const float* __restrict q,
                  const float* __restrict cp, const float* __restrict gh,
                  const float* __restrict gc, int64_t h, float* __restrict gp,
                  float* __restrict gq, float* __restrict gcp, const float* __restrict w0,
                  const float* __restrict w1, float g, float* __restrict gw0,
                  float* __restrict gw1) {
#pragma omp simd
  for (int64_t k = 0; k < h; ++k) {
    const float pi = p[k], pf = p[h + k], pg = p[2 * h + k], po = p[3 * h + k];
    const float qi = q[k], qf = q[h + k], qg = q[2 * h + k], qo = q[3 * h + k];
    const float i = sigmoid(pi + qi);
    const float f = sigmoid(pf + qf);
    const float gv = tanh_(pg + qg);
    const float o = sigmoid(po + qo);
    const float c = f * cp[k] + i * gv;
    const float tc = tanh_(c);
    const float dc = gh[k] * o * (1.0f - tc * tc) + gc[k];
    const float di = dc * gv * i * (1.0f - i);
    const float df = dc * cp[k] * f * (1.0f - f);
    const float dg = dc * i * (1.0f - gv * gv);
    const float d_o = gh[k] * tc * o * (1.0f - o);
    gcp[k] += dc * f;
    gate_grad<kWriteQ, kScored>(k, pi, qi, di, w0, w1, g, gp, gq, gw0, gw1);
    gate_grad<kWriteQ, kScored>(h + k, pf, qf, df, w0, w1, g, gp, gq, gw0, gw1);
    gate_grad<kWriteQ, kScored>(2 * h + k, pg, qg, dg, w0, w1, g, gp, gq, gw0, gw1);
    gate_grad<kWriteQ, kScored>(3 * h + k, po, qo, d_o, w0, w1, g, gp, gq, gw0, gw1);
  }
}

// sum_j relu(x_j) w_j over one module's 4h units.
float relu_dot(const float* __restrict x, const float* __restrict w, int64_t width) {
  float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
  for (int64_t j = 0; j < width; ++j) {
    const float xv = x[j];
    acc += (xv > 0.0f ? xv : 0.0f) * w[j];
  }
  return acc;
}

}  // namespace

std::vector<at::Tensor> lstm_cell_forward(const at::Tensor& P, const Maybe& Q_,
                                          const Maybe& c_prev_, const Maybe& w0_,
                                          const Maybe& w1_, int64_t num_modules) {
  const at::Tensor Q = value(Q_), c_prev = value(c_prev_), w0 = value(w0_), w1 = value(w1_);
  const Shape s = shape_of(P, num_modules);
  check_all(s, P, Q, c_prev, w0, w1);
  const bool scored = w0.defined();
  auto h_out = at::empty({s.n, s.b, s.r, s.h}, P.options());
  auto c_out = at::empty({s.n, s.b, s.r, s.h}, P.options());
  auto logits = scored ? at::empty({s.n, s.b, s.r}, P.options()) : at::empty({0}, P.options());
  const float *p = P.data_ptr<float>(), *q = data_or_null(Q), *cp = data_or_null(c_prev);
  const float *v0 = data_or_null(w0), *v1 = data_or_null(w1);
  float *ho = h_out.data_ptr<float>(), *co = c_out.data_ptr<float>();
  float* lo = scored ? logits.data_ptr<float>() : nullptr;
  const int64_t width = 4 * s.h, row = s.r * width;
  const std::vector<float> zeros(width, 0.0f);  // the missing Q or c_prev
  at::parallel_for(0, s.n * s.b, 1, [&](int64_t begin, int64_t end) {
    for (int64_t nb = begin; nb < end; ++nb) {
      const int64_t run = nb / s.b;
      const float* cp_row = cp == nullptr ? zeros.data() : cp + nb * s.h;
      for (int64_t m = 0; m < s.r; ++m) {
        const float* p_row = p + nb * row + m * width;
        const float* q_row = q == nullptr ? zeros.data() : q + nb * row + m * width;
        const int64_t out = (nb * s.r + m) * s.h;
        forward_row(p_row, q_row, cp_row, s.h, ho + out, co + out);
        if (scored) {
          // Module m's score logit: relu of its own pre-activations, one weight each.
          const int64_t w_off = (run * s.r + m) * width;
          float logit = relu_dot(p_row, v0 + w_off, width);
          if (q != nullptr) logit += relu_dot(q_row, v1 + w_off, width);
          lo[nb * s.r + m] = logit;
        }
      }
    }
  });
  return {h_out, c_out, logits};
}

// Gradients of lstm_cell_forward. grad_h, grad_c (N, B, R, h) and grad_logits (N, B, R) may
// be undefined (zero). Returns gP, gQ (undefined without Q), g_c_prev (undefined without
// c_prev), g_w0, g_w1 (undefined without scores). The weight gradients sum over the batch in
// a fixed order, one run per task.
std::vector<at::Tensor> lstm_cell_backward(const Maybe& grad_h_, const Maybe& grad_c_,
                                           const Maybe& grad_logits_, const at::Tensor& P,
                                           const Maybe& Q_, const Maybe& c_prev_,
                                           const Maybe& w0_, const Maybe& w1_,
                                           int64_t num_modules) {
  const at::Tensor grad_h = value(grad_h_), grad_c = value(grad_c_);
  const at::Tensor grad_logits = value(grad_logits_);
  const at::Tensor Q = value(Q_), c_prev = value(c_prev_), w0 = value(w0_), w1 = value(w1_);
  const Shape s = shape_of(P, num_modules);
  check_all(s, P, Q, c_prev, w0, w1);
  check(grad_h, "grad_h", {s.n, s.b, s.r, s.h});
  check(grad_c, "grad_c", {s.n, s.b, s.r, s.h});
  const bool scored = w0.defined() && grad_logits.defined();
  if (scored) check(grad_logits, "grad_logits", {s.n, s.b, s.r});
  auto gP = at::empty_like(P);
  at::Tensor gQ = Q.defined() ? at::empty_like(Q) : at::Tensor();
  at::Tensor gcp = c_prev.defined() ? at::zeros_like(c_prev) : at::Tensor();
  at::Tensor gw0 = w0.defined() ? at::zeros_like(w0) : at::Tensor();
  at::Tensor gw1 = w1.defined() ? at::zeros_like(w1) : at::Tensor();
  const float *p = P.data_ptr<float>(), *q = data_or_null(Q), *cp = data_or_null(c_prev);
  const float *v0 = data_or_null(w0), *v1 = data_or_null(w1);
  const float *gh = data_or_null(grad_h), *gc = data_or_null(grad_c);
  const float* gl = scored ? grad_logits.data_ptr<float>() : nullptr;
  float *gp = gP.data_ptr<float>(), *gq = mutable_or_null(gQ), *gcpo = mutable_or_null(gcp);
  float *gv0 = mutable_or_null(gw0), *gv1 = mutable_or_null(gw1);
  const int64_t width = 4 * s.h, row = s.r * width;
  const std::vector<float> zeros(width, 0.0f);
  at::parallel_for(0, s.n, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(s.h, 0.0f);  // the unused gradient of a missing c_prev
    for (int64_t run = begin; run < end; ++run) {
      for (int64_t b = 0; b < s.b; ++b) {
        const int64_t nb = run * s.b + b;
        const float* cp_row = cp == nullptr ? zeros.data() : cp + nb * s.h;
        float* gcp_row = gcpo == nullptr ? scratch.data() : gcpo + nb * s.h;
        for (int64_t m = 0; m < s.r; ++m) {
          const int64_t off = nb * row + m * width, hm = (nb * s.r + m) * s.h;
          const float* p_row = p + off;
          const float* q_row = q == nullptr ? zeros.data() : q + off;
          const float* gh_row = gh == nullptr ? zeros.data() : gh + hm;
          const float* gc_row = gc == nullptr ? zeros.data() : gc + hm;
          const float g = scored ? gl[nb * s.r + m] : 0.0f;
          const int64_t w_off = (run * s.r + m) * width;
          float* gq_row = gq == nullptr ? nullptr : gq + off;
          const auto row_grad = gq == nullptr
                                    ? (scored ? backward_row<false, true> : backward_row<false, false>)
                                    : (scored ? backward_row<true, true> : backward_row<true, false>);
          row_grad(p_row, q_row, cp_row, gh_row, gc_row, s.h, gp + off, gq_row, gcp_row,
                   scored ? v0 + w_off : nullptr, scored ? v1 + w_off : nullptr, g,
                   scored ? gv0 + w_off : nullptr, scored ? gv1 + w_off : nullptr);
        }
      }
    }
  });
  return {gP, gQ, gcp, gw0, gw1};
}

// The routed state (spec §3.4): h = sum_m p_m h_m and c = sum_m p_m c_m, summed in module
// order; h_m, c_m (N, B, R, h), p (N, B, R) -> h, c (N, B, h).
std::vector<at::Tensor> mix_forward(const at::Tensor& h_m, const at::Tensor& c_m,
                                    const at::Tensor& probs) {
  TORCH_CHECK(h_m.dim() == 4, "h_modules must be (N, B, R, h)");
  const int64_t n = h_m.size(0), b = h_m.size(1), r = h_m.size(2), h = h_m.size(3);
  check(h_m, "h_modules", {n, b, r, h});
  check(c_m, "c_modules", {n, b, r, h});
  check(probs, "probs", {n, b, r});
  auto h_out = at::empty({n, b, h}, h_m.options());
  auto c_out = at::empty({n, b, h}, h_m.options());
  const float *hm = h_m.data_ptr<float>(), *cm = c_m.data_ptr<float>();
  const float* p = probs.data_ptr<float>();
  float *ho = h_out.data_ptr<float>(), *co = c_out.data_ptr<float>();
  at::parallel_for(0, n * b, 1, [&](int64_t begin, int64_t end) {
    for (int64_t nb = begin; nb < end; ++nb) {
      float* __restrict hr = ho + nb * h;
      float* __restrict cr = co + nb * h;
      for (int64_t m = 0; m < r; ++m) {
        const float pm = p[nb * r + m];
        const float* __restrict hs = hm + (nb * r + m) * h;
        const float* __restrict cs = cm + (nb * r + m) * h;
        if (m == 0) {
#pragma omp simd
          for (int64_t k = 0; k < h; ++k) {
            hr[k] = pm * hs[k];
            cr[k] = pm * cs[k];
          }
        } else {
#pragma omp simd
          for (int64_t k = 0; k < h; ++k) {
            hr[k] += pm * hs[k];
            cr[k] += pm * cs[k];
          }
        }
      }
    }
  });
  return {h_out, c_out};
}

// Gradients of mix_forward: g_hm = p gh, g_cm = p gc, g_p_m = gh . h_m + gc . c_m. grad_h and
// grad_c may be undefined (zero).
std::vector<at::Tensor> mix_backward(const Maybe& grad_h_, const Maybe& grad_c_,
                                     const at::Tensor& h_m, const at::Tensor& c_m,
                                     const at::Tensor& probs) {
  const at::Tensor grad_h = value(grad_h_), grad_c = value(grad_c_);
  const int64_t n = h_m.size(0), b = h_m.size(1), r = h_m.size(2), h = h_m.size(3);
  check(grad_h, "grad_h", {n, b, h});
  check(grad_c, "grad_c", {n, b, h});
  auto g_hm = at::empty_like(h_m), g_cm = at::empty_like(c_m), g_p = at::empty_like(probs);
  const float *hm = h_m.data_ptr<float>(), *cm = c_m.data_ptr<float>();
  const float *p = probs.data_ptr<float>(), *gh = data_or_null(grad_h);
  const float* gc = data_or_null(grad_c);
  float *ghm = g_hm.data_ptr<float>(), *gcm = g_cm.data_ptr<float>(), *gp = g_p.data_ptr<float>();
  const std::vector<float> zeros(h, 0.0f);
  at::parallel_for(0, n * b, 1, [&](int64_t begin, int64_t end) {
    for (int64_t nb = begin; nb < end; ++nb) {
      const float* __restrict ghr = gh == nullptr ? zeros.data() : gh + nb * h;
      const float* __restrict gcr = gc == nullptr ? zeros.data() : gc + nb * h;
      for (int64_t m = 0; m < r; ++m) {
        const int64_t row = (nb * r + m) * h;
        const float pm = p[nb * r + m];
        const float* __restrict hs = hm + row;
        const float* __restrict cs = cm + row;
        float* __restrict ghs = ghm + row;
        float* __restrict gcs = gcm + row;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int64_t k = 0; k < h; ++k) {
          ghs[k] = pm * ghr[k];
          gcs[k] = pm * gcr[k];
          dot += ghr[k] * hs[k] + gcr[k] * cs[k];
        }
        gp[nb * r + m] = dot;
      }
    }
  });
  return {g_hm, g_cm, g_p};
}
