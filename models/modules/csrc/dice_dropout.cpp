// Dice and dropout of the top MLPs in training, each one pass forward and one backward:
// models.modules.activations (Dice) and models.modules.dropout (Dropout) in C++.
//
// Dice (DIN paper, eq. 9) over an (N, H) batch: y = x * (alpha + p (1 - alpha)),
// p = sigmoid((x - mean) / sqrt(var + eps)) with the batch's biased per-channel statistics;
// ATen needs ~10 kernels (batch norm, sigmoid, addcmul, mul and their backwards) where this
// needs three passes over the batch. Dropout: y = x * mask / (1 - p), the mask drawn from a
// counter-based hash of the element's index and one 64-bit seed taken from torch's default
// CPU generator, so torch.manual_seed makes it repeatable and the thread count does not
// change it (torch's bernoulli_ draws one Mersenne-twister number per element: ~7 ns each
// here, where the hash takes well under one).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <vector>

#include "dice.h"
#include "kernels.h"

namespace {

constexpr int64_t kGrain = 16;  // rows per task

// Per-channel sums of f(row, channel) over the rows, in double, from per-thread partials.
template <typename T, typename F>
std::vector<double> channel_sums(int64_t n, int64_t h, int64_t k, F f) {
  const int64_t threads = at::get_num_threads();
  std::vector<double> part(threads * k * h, 0.0);
  at::parallel_for(0, n, kGrain, [&](int64_t lo, int64_t hi) {
    double* acc = part.data() + at::get_thread_num() * k * h;
    std::vector<T> loc(k * h, T(0));
    for (int64_t r = lo; r < hi; ++r) f(r, loc.data());
    for (int64_t j = 0; j < k * h; ++j) acc[j] += loc[j];
  });
  std::vector<double> tot(k * h, 0.0);
  for (int64_t t = 0; t < threads; ++t) {
    for (int64_t j = 0; j < k * h; ++j) tot[j] += part[t * k * h + j];
  }
  return tot;
}

template <typename T>
std::vector<at::Tensor> dice_forward_impl(const at::Tensor& x_t, const at::Tensor& alpha_t,
                                          double eps) {
  const int64_t n = x_t.size(0), h = x_t.size(1);
  const T* x = x_t.data_ptr<T>();
  const T* alpha = alpha_t.data_ptr<T>();
  // Sums of the deviations from the first row (the shifted-data algorithm): E[x^2] - E[x]^2
  // over the raw values loses the variance to cancellation when the mean is large against
  // the spread (two rows 1e-3 apart around 3 lost 9 of float64's 16 digits).
  const T* __restrict shift = x;
  const std::vector<double> s = channel_sums<T>(n, h, 2, [&](int64_t r, T* acc) {
    const T* __restrict xr = x + r * h;
    T* __restrict a1 = acc;
    T* __restrict a2 = acc + h;
#pragma omp simd
    for (int64_t j = 0; j < h; ++j) {
      const T d = xr[j] - shift[j];
      a1[j] += d;
      a2[j] += d * d;
    }
  });
  at::Tensor mean_t = at::empty({h}, x_t.options().dtype(at::kDouble));
  at::Tensor var_t = at::empty({h}, x_t.options().dtype(at::kDouble));
  double* mean = mean_t.data_ptr<double>();
  double* var = var_t.data_ptr<double>();
  for (int64_t j = 0; j < h; ++j) {
    const double dm = s[j] / static_cast<double>(n);  // mean deviation from the shift
    mean[j] = static_cast<double>(shift[j]) + dm;
    var[j] = std::max(0.0, s[h + j] / static_cast<double>(n) - dm * dm);  // biased
  }
  std::vector<T> mu(h), inv(h);
  dice_norm(mean, var, eps, h, mu.data(), inv.data());
  at::Tensor y_t = at::empty_like(x_t);
  at::Tensor p_t = at::empty_like(x_t);
  T* y = y_t.data_ptr<T>();
  T* p = p_t.data_ptr<T>();
  at::parallel_for(0, n, kGrain, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const T* __restrict xr = x + r * h;
      T* __restrict yr = y + r * h;
      T* __restrict pr = p + r * h;
      const T* __restrict m = mu.data();
      const T* __restrict iv = inv.data();
      const T* __restrict al = alpha;
#pragma omp simd
      for (int64_t j = 0; j < h; ++j) {
        const T pj = dice_p(xr[j], m[j], iv[j]);
        pr[j] = pj;
        yr[j] = xr[j] * dice_gate(pj, al[j]);
      }
    }
  });
  return {y_t, p_t, mean_t, var_t};
}

template <typename T>
std::vector<at::Tensor> dice_backward_impl(const at::Tensor& g_t, const at::Tensor& x_t,
                                           const at::Tensor& p_t, const at::Tensor& alpha_t,
                                           const at::Tensor& mean_t, const at::Tensor& var_t,
                                           double eps) {
  const int64_t n = x_t.size(0), h = x_t.size(1);
  const T* g = g_t.data_ptr<T>();
  const T* x = x_t.data_ptr<T>();
  const T* p = p_t.data_ptr<T>();
  const T* alpha = alpha_t.data_ptr<T>();
  std::vector<T> mu(h), inv(h);
  dice_norm(mean_t.data_ptr<double>(), var_t.data_ptr<double>(), eps, h, mu.data(), inv.data());
  // dx_hat = dL/d(normalised x) = g x (1 - alpha) p (1 - p); its mean and its mean times
  // x_hat over the batch are the batch norm's correction; d_alpha = sum g x (1 - p).
  const std::vector<double> s = channel_sums<T>(n, h, 3, [&](int64_t r, T* acc) {
    const T* __restrict gr = g + r * h;
    const T* __restrict xr = x + r * h;
    const T* __restrict pr = p + r * h;
    T* __restrict a_dx = acc;
    T* __restrict a_dxx = acc + h;
    T* __restrict a_al = acc + 2 * h;
    const T* __restrict al = alpha;
    const T* __restrict m = mu.data();
    const T* __restrict iv = inv.data();
#pragma omp simd
    for (int64_t j = 0; j < h; ++j) {
      const T gx = gr[j] * xr[j] * (T(1) - pr[j]);
      const T dxh = gx * (T(1) - al[j]) * pr[j];
      a_dx[j] += dxh;
      a_dxx[j] += dxh * (xr[j] - m[j]) * iv[j];
      a_al[j] += gx;
    }
  });
  std::vector<T> m_dx(h), m_dxx(h);
  at::Tensor d_alpha_t = at::empty({h}, x_t.options());
  for (int64_t j = 0; j < h; ++j) {
    m_dx[j] = static_cast<T>(s[j] / static_cast<double>(n));
    m_dxx[j] = static_cast<T>(s[h + j] / static_cast<double>(n));
    d_alpha_t.data_ptr<T>()[j] = static_cast<T>(s[2 * h + j]);
  }
  at::Tensor dx_t = at::empty_like(x_t);
  T* dx = dx_t.data_ptr<T>();
  at::parallel_for(0, n, kGrain, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const T* __restrict gr = g + r * h;
      const T* __restrict xr = x + r * h;
      const T* __restrict pr = p + r * h;
      T* __restrict dr = dx + r * h;
      const T* __restrict al = alpha;
      const T* __restrict m = mu.data();
      const T* __restrict iv = inv.data();
      const T* __restrict mdx = m_dx.data();
      const T* __restrict mdxx = m_dxx.data();
#pragma omp simd
      for (int64_t j = 0; j < h; ++j) {
        const T xh = (xr[j] - m[j]) * iv[j];
        // dice_dx's product written out: through the helper GCC contracts it differently
        // (1 ulp), which would change the committed benchmark's training bits.
        const T dxh = gr[j] * xr[j] * (T(1) - al[j]) * pr[j] * (T(1) - pr[j]);
        const T direct = gr[j] * dice_gate(pr[j], al[j]);
        dr[j] = direct + iv[j] * (dxh - mdx[j] - xh * mdxx[j]);
      }
    }
  });
  return {dx_t, d_alpha_t};
}

// scale[i] = 1 / (1 - p) if element i is kept (not a hit of the call's draws), else 0;
// out = x * scale.
template <typename T>
void dropout_pass(const T* __restrict x, T* __restrict scale_out, T* __restrict out,
                  int64_t lo, int64_t hi, const HashDraws draws, T scale) {
#pragma omp simd
  for (int64_t i = lo; i < hi; ++i) {
    const T s = draws.hit(static_cast<uint32_t>(i)) ? T(0) : scale;
    scale_out[i] = s;
    out[i] = x[i] * s;
  }
}

}  // namespace

uint64_t draw_seed() {
  auto* gen = at::check_generator<at::CPUGeneratorImpl>(at::detail::getDefaultCPUGenerator());
  std::lock_guard<std::mutex> lock(gen->mutex_);
  return gen->random64();
}

HashDraws::HashDraws(double p) {
  if (p <= 0) return;
  const uint64_t seed = draw_seed();
  k0 = static_cast<uint32_t>(seed);
  k1 = static_cast<uint32_t>(seed >> 32);
  cut = static_cast<uint32_t>(std::min(std::ldexp(p, 32), 4294967295.0));
}

std::vector<at::Tensor> dice_forward(const at::Tensor& x, const at::Tensor& alpha, double eps) {
  TORCH_CHECK(x.dim() == 2 && x.size(0) >= 2 && alpha.numel() == x.size(1),
              "dice_forward: x (N >= 2, H) and alpha (H)");
  std::vector<at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dice_forward", [&] {
    out = dice_forward_impl<scalar_t>(x.contiguous(), alpha.contiguous(), eps);
  });
  return out;
}

std::vector<at::Tensor> dice_backward(const at::Tensor& grad, const at::Tensor& x,
                                      const at::Tensor& p, const at::Tensor& alpha,
                                      const at::Tensor& mean, const at::Tensor& var,
                                      double eps) {
  std::vector<at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dice_backward", [&] {
    out = dice_backward_impl<scalar_t>(grad.contiguous(), x.contiguous(), p.contiguous(),
                                       alpha.contiguous(), mean.contiguous(), var.contiguous(),
                                       eps);
  });
  return out;
}

// y = x * mask / (1 - p) and mask / (1 - p) (the backward's multiplier), for 0 <= p < 1.
std::vector<at::Tensor> dropout_forward(const at::Tensor& x_in, double p) {
  TORCH_CHECK(p >= 0.0 && p < 1.0, "dropout_forward: 0 <= p < 1");
  TORCH_CHECK(x_in.numel() < (int64_t(1) << 32), "dropout_forward: at most 2^32 elements");
  const at::Tensor x = x_in.contiguous();
  const HashDraws draws(p);
  at::Tensor scale_t = at::empty_like(x);
  at::Tensor y_t = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dropout_forward", [&] {
    const scalar_t* xs = x.data_ptr<scalar_t>();
    scalar_t* sc = scale_t.data_ptr<scalar_t>();
    scalar_t* ys = y_t.data_ptr<scalar_t>();
    const auto scale = static_cast<scalar_t>(1.0 / (1.0 - p));
    at::parallel_for(0, x.numel(), 16384, [&](int64_t lo, int64_t hi) {
      dropout_pass(xs, sc, ys, lo, hi, draws, scale);
    });
  });
  return {y_t, scale_t};
}

// BatchNorm's running statistics after a training batch with this (biased, float64) mean
// and variance over ``count`` values a channel, in place: r = (1 - m) r + m batch (the
// variance unbiased first). One call where the Python update took ~8 small ops.
void bn_running_update(at::Tensor& running_mean, at::Tensor& running_var,
                       const at::Tensor& mean_in, const at::Tensor& var_in, double momentum,
                       double count) {
  TORCH_CHECK(running_mean.is_contiguous() && running_var.is_contiguous() &&
                  running_mean.numel() == mean_in.numel() &&
                  running_var.numel() == var_in.numel(),
              "bn_running_update: contiguous running statistics of the batch's size");
  const at::Tensor mean = mean_in.to(at::kDouble).contiguous();
  const at::Tensor var = var_in.to(at::kDouble).contiguous();
  const double unbias = count / std::max(count - 1.0, 1.0);
  AT_DISPATCH_FLOATING_TYPES(running_mean.scalar_type(), "bn_running_update", [&] {
    scalar_t* rm = running_mean.data_ptr<scalar_t>();
    scalar_t* rv = running_var.data_ptr<scalar_t>();
    const double* bm = mean.data_ptr<double>();
    const double* bv = var.data_ptr<double>();
    for (int64_t j = 0; j < running_mean.numel(); ++j) {
      rm[j] = static_cast<scalar_t>((1.0 - momentum) * rm[j] + momentum * bm[j]);
      rv[j] = static_cast<scalar_t>((1.0 - momentum) * rv[j] + momentum * bv[j] * unbias);
    }
  });
}
