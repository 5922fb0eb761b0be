// DIN attention pooling in training, fused: models.modules.din_fused.FusedDINPooling in C++.
//
// For every real history position n = (b, t) of a padded (B, T, E) batch:
//   h_n = c_b + k_n G_b          G_b = W_k' + diag(q_b) W_p'   (the activation unit's first
//                                layer; c_b = W_c q_b + bias is computed by the caller)
//   a_n = Dice(h_n)              batch statistics over the real positions, per channel
//   s_n = <a_n, w2> + b2         the unit's score (no softmax: the DIN paper's default)
//   interest_b = sum_n s_n k_n
// and the backward of all of it. Positions where mask is false are skipped (weight 0). The
// batch rows are dealt to torch's intra-op threads; channel statistics and weight
// gradients are summed from per-thread partials. The Python module keeps the same algebra
// as ATen ops (ActivationUnit / AttentionPooling) for eval, GPUs and other configurations.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels.h"

namespace {

struct Dims {
  int64_t b, t, e, h;
};

Dims dims_of(const at::Tensor& keys, const at::Tensor& w_k) {
  return {keys.size(0), keys.size(1), keys.size(2), w_k.size(1)};
}

// G_b = W_k' + diag(q_b) W_p' (E, H), written with row stride ``ld`` >= H (zero padded), or
// transposed (H, E) with row stride ``ld`` >= E when ``transposed``.
template <typename T>
void gate_matrix(const T* q, const T* w_k, const T* w_p, T* g, int64_t e, int64_t h,
                 int64_t ld, bool transposed) {
  std::fill(g, g + (transposed ? h : e) * ld, T(0));
  for (int64_t i = 0; i < e; ++i) {
    for (int64_t j = 0; j < h; ++j) {
      const T v = w_k[i * h + j] + q[i] * w_p[i * h + j];
      g[transposed ? j * ld + i : i * ld + j] = v;
    }
  }
}

int64_t padded(int64_t n) { return (n + 7) / 8 * 8; }

template <typename T>
T dot(const T* a, const T* b, int64_t n) {
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

// Dice a = h * gate, gate = alpha + p (1 - alpha), p = sigmoid(normalised h).
template <typename T>
inline T dice_gate(T p, T alpha) {
  return alpha + p * (T(1) - alpha);
}

// dL/d(normalised h) of Dice, from dL/da.
template <typename T>
inline T dice_dx(T da, T h, T p, T alpha) {
  return da * h * (T(1) - alpha) * p * (T(1) - p);
}

// Dice's normalisation in T: mu = mean, inv = 1 / sqrt(var + eps), from the float64 batch
// statistics (the forward and the backward use the same values).
template <typename T>
void norm_params(const double* mean, const double* var, double eps, int64_t h,
                 std::vector<T>& mu, std::vector<T>& inv) {
  mu.resize(h);
  inv.resize(h);
  for (int64_t j = 0; j < h; ++j) {
    mu[j] = static_cast<T>(mean[j]);
    inv[j] = static_cast<T>(1.0 / std::sqrt(var[j] + eps));
  }
}

// offs[b] = the real positions of the rows before b (offs[B] = all of them): the buffers the
// passes share hold real positions only, packed in row order (fresh memory costs page
// faults: (B, T, H) buffers made the forward ~2x slower).
std::vector<int64_t> real_offsets(const bool* mask, int64_t b, int64_t t) {
  std::vector<int64_t> offs(b + 1, 0);
  for (int64_t r = 0; r < b; ++r) {
    int64_t n = 0;
    for (int64_t i = 0; i < t; ++i) n += mask[r * t + i] ? 1 : 0;
    offs[r + 1] = offs[r] + n;
  }
  return offs;
}

// out[:n] = init[:n] + sum_r x[r] m[r, :] for an (rows, W) matrix m: the W accumulators stay
// in vector registers across the rows (W known at compile time, a multiple of 8).
template <typename T, int W>
void row_times(const T* x, int64_t rows, const T* m, const T* init, T* out, int64_t n) {
  T acc[W];
  for (int j = 0; j < W; ++j) acc[j] = (init != nullptr && j < n) ? init[j] : T(0);
  for (int64_t r = 0; r < rows; ++r) {
    const T xr = x[r];
    const T* mr = m + r * W;
#pragma omp simd
    for (int j = 0; j < W; ++j) acc[j] += xr * mr[j];
  }
  for (int64_t j = 0; j < n; ++j) out[j] = acc[j];
}

// The same for any padded width (slower: the accumulators live in memory).
template <typename T>
void row_times_any(const T* x, int64_t rows, const T* m, const T* init, T* out, int64_t n,
                   int64_t w) {
  for (int64_t j = 0; j < n; ++j) out[j] = init != nullptr ? init[j] : T(0);
  for (int64_t r = 0; r < rows; ++r) {
    const T xr = x[r];
    const T* mr = m + r * w;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) out[j] += xr * mr[j];
  }
}

template <typename T>
void row_times_w(const T* x, int64_t rows, const T* m, const T* init, T* out, int64_t n,
                 int64_t w) {
  switch (w) {
    case 8: return row_times<T, 8>(x, rows, m, init, out, n);
    case 16: return row_times<T, 16>(x, rows, m, init, out, n);
    case 24: return row_times<T, 24>(x, rows, m, init, out, n);
    case 32: return row_times<T, 32>(x, rows, m, init, out, n);
    case 40: return row_times<T, 40>(x, rows, m, init, out, n);
    case 48: return row_times<T, 48>(x, rows, m, init, out, n);
    case 56: return row_times<T, 56>(x, rows, m, init, out, n);
    case 64: return row_times<T, 64>(x, rows, m, init, out, n);
    default: return row_times_any(x, rows, m, init, out, n, w);
  }
}

template <typename T>
std::vector<at::Tensor> forward_impl(const at::Tensor& c_t, const at::Tensor& q_t,
                                     const at::Tensor& keys_t, const at::Tensor& mask_t,
                                     const at::Tensor& w_k_t, const at::Tensor& w_p_t,
                                     const at::Tensor& alpha_t, const at::Tensor& w2_t,
                                     double b2, double eps) {
  const Dims d = dims_of(keys_t, w_k_t);
  const auto opt = keys_t.options();
  const bool* mask = mask_t.data_ptr<bool>();
  const std::vector<int64_t> offs = real_offsets(mask, d.b, d.t);
  const int64_t n = offs[d.b];
  at::Tensor hid_t = at::empty({n, d.h}, opt);
  at::Tensor out_t = at::zeros({d.b, d.e}, opt);
  const int64_t threads = at::get_num_threads();
  std::vector<double> sums(threads * 2 * d.h, 0.0);
  const T* c = c_t.data_ptr<T>();
  const T* q = q_t.data_ptr<T>();
  const T* keys = keys_t.data_ptr<T>();
  const T* w_k = w_k_t.data_ptr<T>();
  const T* w_p = w_p_t.data_ptr<T>();
  T* hid = hid_t.data_ptr<T>();
  // Pass 1: first layer at every real position, and the channel sums of Dice's statistics.
  at::parallel_for(0, d.b, 8, [&](int64_t lo, int64_t hi) {
    const int64_t tid = at::get_thread_num();
    double* s1 = sums.data() + tid * 2 * d.h;
    double* s2 = s1 + d.h;
    const int64_t ld = padded(d.h);
    std::vector<T> g(d.e * ld), l1(d.h), l2(d.h);  // G_b; one batch row's sums, in T
    for (int64_t b = lo; b < hi; ++b) {
      gate_matrix(q + b * d.e, w_k, w_p, g.data(), d.e, d.h, ld, false);
      std::fill(l1.begin(), l1.end(), T(0));
      std::fill(l2.begin(), l2.end(), T(0));
      int64_t m = offs[b];
      for (int64_t t = 0; t < d.t; ++t) {
        if (!mask[b * d.t + t]) continue;
        const T* k = keys + (b * d.t + t) * d.e;
        T* hn = hid + (m++) * d.h;
        row_times_w(k, d.e, g.data(), c + b * d.h, hn, d.h, ld);  // c_b + k G_b
        T* a1 = l1.data();
        T* a2 = l2.data();
#pragma omp simd
        for (int64_t j = 0; j < d.h; ++j) {
          a1[j] += hn[j];
          a2[j] += hn[j] * hn[j];
        }
      }
      for (int64_t j = 0; j < d.h; ++j) {
        s1[j] += l1[j];
        s2[j] += l2[j];
      }
    }
  });
  at::Tensor mean_t = at::zeros({d.h}, opt.dtype(at::kDouble));
  at::Tensor var_t = at::zeros({d.h}, opt.dtype(at::kDouble));
  double* mean = mean_t.data_ptr<double>();
  double* var = var_t.data_ptr<double>();
  for (int64_t tid = 0; tid < threads; ++tid) {
    for (int64_t j = 0; j < d.h; ++j) {
      mean[j] += sums[tid * 2 * d.h + j];
      var[j] += sums[tid * 2 * d.h + d.h + j];
    }
  }
  for (int64_t j = 0; j < d.h; ++j) {
    mean[j] /= static_cast<double>(n);
    var[j] = std::max(0.0, var[j] / static_cast<double>(n) - mean[j] * mean[j]);  // biased
  }
  std::vector<T> mu, inv;
  norm_params(mean, var, eps, d.h, mu, inv);
  const T* alpha = alpha_t.data_ptr<T>();
  const T* w2 = w2_t.data_ptr<T>();
  T* out = out_t.data_ptr<T>();
  at::Tensor gates_t = at::empty({n, d.h}, opt);  // Dice's p at every real position
  at::Tensor score_t = at::empty({n}, opt);
  T* gates = gates_t.data_ptr<T>();
  T* score = score_t.data_ptr<T>();
  const T* mu_p = mu.data();
  const T* inv_p = inv.data();
  // Pass 2: Dice, the score, and the weighted sum of the keys.
  at::parallel_for(0, d.b, 8, [&](int64_t lo, int64_t hi) {
    for (int64_t b = lo; b < hi; ++b) {
      T* ob = out + b * d.e;
      int64_t m = offs[b];
      for (int64_t t = 0; t < d.t; ++t) {
        if (!mask[b * d.t + t]) continue;
        const T* hn = hid + m * d.h;
        T* pn = gates + m * d.h;
        T s = static_cast<T>(b2);
#pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < d.h; ++j) {
          const T p = T(1) / (T(1) + std::exp(-(hn[j] - mu_p[j]) * inv_p[j]));
          pn[j] = p;
          s += hn[j] * dice_gate(p, alpha[j]) * w2[j];
        }
        score[m++] = s;
        const T* k = keys + (b * d.t + t) * d.e;
        for (int64_t i = 0; i < d.e; ++i) ob[i] += s * k[i];
      }
    }
  });
  return {out_t, hid_t, gates_t, score_t, mean_t, var_t,
          at::scalar_tensor(n, opt.dtype(at::kLong))};
}

template <typename T>
std::vector<at::Tensor> backward_impl(const at::Tensor& grad_t, const at::Tensor& q_t,
                                      const at::Tensor& keys_t, const at::Tensor& mask_t,
                                      const at::Tensor& w_k_t, const at::Tensor& w_p_t,
                                      const at::Tensor& alpha_t, const at::Tensor& w2_t,
                                      const at::Tensor& hid_t, const at::Tensor& gates_t,
                                      const at::Tensor& score_t, const at::Tensor& mean_t,
                                      const at::Tensor& var_t, double eps) {
  const Dims d = dims_of(keys_t, w_k_t);
  const auto opt = keys_t.options();
  const T* grad = grad_t.data_ptr<T>();
  const T* q = q_t.data_ptr<T>();
  const T* keys = keys_t.data_ptr<T>();
  const bool* mask = mask_t.data_ptr<bool>();
  const T* w_k = w_k_t.data_ptr<T>();
  const T* w_p = w_p_t.data_ptr<T>();
  const T* alpha = alpha_t.data_ptr<T>();
  const T* w2 = w2_t.data_ptr<T>();
  const T* hid = hid_t.data_ptr<T>();
  const T* gates = gates_t.data_ptr<T>();
  const T* score = score_t.data_ptr<T>();
  std::vector<T> mu, inv;
  norm_params(mean_t.data_ptr<double>(), var_t.data_ptr<double>(), eps, d.h, mu, inv);
  const T* mu_p = mu.data();
  const T* inv_p = inv.data();
  const std::vector<int64_t> offs = real_offsets(mask, d.b, d.t);
  const int64_t n_real = offs[d.b];
  const int64_t threads = at::get_num_threads();
  // Per thread: [d_alpha (H), d_w2 (H), sum dx (H), sum dx * xh (H), d_b2 (1)].
  const int64_t width = 4 * d.h + 1;
  std::vector<double> part(threads * width, 0.0);
  // Pass 1: the score's and Dice's gradients at every real position.
  at::parallel_for(0, d.b, 8, [&](int64_t lo, int64_t hi) {
    double* acc = part.data() + at::get_thread_num() * width;
    std::vector<T> loc(width);  // one batch row's sums, in T
    T* l_al = loc.data();
    T* l_w2 = l_al + d.h;
    T* l_dx = l_w2 + d.h;
    T* l_dxx = l_dx + d.h;
    for (int64_t b = lo; b < hi; ++b) {
      std::fill(loc.begin(), loc.end(), T(0));
      const T* gb = grad + b * d.e;
      int64_t m = offs[b];
      for (int64_t t = 0; t < d.t; ++t) {
        if (!mask[b * d.t + t]) continue;
        const T ds = dot(gb, keys + (b * d.t + t) * d.e, d.e);  // dL/d(score)
        loc[4 * d.h] += ds;
        const T* hn = hid + m * d.h;
        const T* pn = gates + (m++) * d.h;
#pragma omp simd
        for (int64_t j = 0; j < d.h; ++j) {
          const T xh = (hn[j] - mu_p[j]) * inv_p[j];
          const T p = pn[j];
          const T da = ds * w2[j];
          l_w2[j] += ds * hn[j] * dice_gate(p, alpha[j]);
          l_al[j] += da * hn[j] * (T(1) - p);
          const T dx = dice_dx(da, hn[j], p, alpha[j]);
          l_dx[j] += dx;
          l_dxx[j] += dx * xh;
        }
      }
      for (int64_t j = 0; j < width; ++j) acc[j] += loc[j];
    }
  });
  std::vector<double> tot(width, 0.0);
  for (int64_t tid = 0; tid < threads; ++tid) {
    for (int64_t j = 0; j < width; ++j) tot[j] += part[tid * width + j];
  }
  std::vector<T> m_dx(d.h), m_dxx(d.h);
  for (int64_t j = 0; j < d.h; ++j) {
    m_dx[j] = static_cast<T>(tot[2 * d.h + j] / static_cast<double>(n_real));
    m_dxx[j] = static_cast<T>(tot[3 * d.h + j] / static_cast<double>(n_real));
  }
  const T* m_dx_p = m_dx.data();
  const T* m_dxx_p = m_dxx.data();
  at::Tensor d_c_t = at::zeros({d.b, d.h}, opt);
  at::Tensor d_q_t = at::zeros({d.b, d.e}, opt);
  at::Tensor d_keys_t = at::zeros({d.b, d.t, d.e}, opt);
  std::vector<T> d_wk_part(threads * d.e * d.h, T(0));
  std::vector<T> d_wp_part(threads * d.e * d.h, T(0));
  T* d_c = d_c_t.data_ptr<T>();
  T* d_q = d_q_t.data_ptr<T>();
  T* d_keys = d_keys_t.data_ptr<T>();
  // Pass 2: batch-norm backward, then the first layer's gradients.
  at::parallel_for(0, d.b, 8, [&](int64_t lo, int64_t hi) {
    const int64_t tid = at::get_thread_num();
    T* d_wk = d_wk_part.data() + tid * d.e * d.h;
    T* d_wp = d_wp_part.data() + tid * d.e * d.h;
    const int64_t ld = padded(d.e);
    std::vector<T> g_t(d.h * ld), dg(d.e * d.h), dh_v(d.h);  // G_b transposed
    T* dh = dh_v.data();
    for (int64_t b = lo; b < hi; ++b) {
      gate_matrix(q + b * d.e, w_k, w_p, g_t.data(), d.e, d.h, ld, true);
      std::fill(dg.begin(), dg.end(), T(0));
      const T* gb = grad + b * d.e;
      T* dcb = d_c + b * d.h;
      bool any = false;
      int64_t m = offs[b];
      for (int64_t t = 0; t < d.t; ++t) {
        if (!mask[b * d.t + t]) continue;
        any = true;
        const int64_t n = b * d.t + t;
        const T* k = keys + n * d.e;
        const T ds = dot(gb, k, d.e);  // pass 1's values again: cheaper than storing them
        const T* hn = hid + m * d.h;
        const T* pn = gates + m * d.h;
#pragma omp simd
        for (int64_t j = 0; j < d.h; ++j) {
          const T xh = (hn[j] - mu_p[j]) * inv_p[j];
          const T p = pn[j];
          const T da = ds * w2[j];
          const T direct = da * dice_gate(p, alpha[j]);
          const T dx = dice_dx(da, hn[j], p, alpha[j]);
          dh[j] = direct + inv_p[j] * (dx - m_dx_p[j] - xh * m_dxx_p[j]);  // batch norm
          dcb[j] += dh[j];
        }
        const T s = score[m++];
        T* dk = d_keys + n * d.e;
        // dh G_b^T
        row_times_w(dh, d.h, g_t.data(), static_cast<const T*>(nullptr), dk, d.e, ld);
        for (int64_t i = 0; i < d.e; ++i) {
          T* dgi = dg.data() + i * d.h;
          const T ki = k[i];
          dk[i] += s * gb[i];
#pragma omp simd
          for (int64_t j = 0; j < d.h; ++j) dgi[j] += ki * dh[j];
        }
      }
      if (!any) continue;
      const T* qb = q + b * d.e;
      for (int64_t i = 0; i < d.e; ++i) {
        T acc = 0;
        const T* dgi = dg.data() + i * d.h;
        const T* wpi = w_p + i * d.h;
        T* dwk = d_wk + i * d.h;
        T* dwp = d_wp + i * d.h;
        const T qi = qb[i];
#pragma omp simd reduction(+ : acc)
        for (int64_t j = 0; j < d.h; ++j) {
          dwk[j] += dgi[j];
          dwp[j] += qi * dgi[j];
          acc += dgi[j] * wpi[j];
        }
        d_q[b * d.e + i] = acc;
      }
    }
  });
  at::Tensor d_wk_t = at::zeros({d.e, d.h}, opt);
  at::Tensor d_wp_t = at::zeros({d.e, d.h}, opt);
  for (int64_t tid = 0; tid < threads; ++tid) {
    for (int64_t i = 0; i < d.e * d.h; ++i) {
      d_wk_t.data_ptr<T>()[i] += d_wk_part[tid * d.e * d.h + i];
      d_wp_t.data_ptr<T>()[i] += d_wp_part[tid * d.e * d.h + i];
    }
  }
  at::Tensor d_alpha_t = at::empty({d.h}, opt);
  at::Tensor d_w2_t = at::empty({d.h}, opt);
  for (int64_t j = 0; j < d.h; ++j) {
    d_alpha_t.data_ptr<T>()[j] = static_cast<T>(tot[j]);
    d_w2_t.data_ptr<T>()[j] = static_cast<T>(tot[d.h + j]);
  }
  at::Tensor d_b2_t = at::scalar_tensor(tot[4 * d.h], opt);
  return {d_c_t, d_q_t, d_keys_t, d_wk_t, d_wp_t, d_alpha_t, d_w2_t, d_b2_t};
}

}  // namespace

// interest (B, E); at the N real positions in row order: hidden (N, H), Dice's gates (N, H),
// scores (N,); channel mean and biased var (H, float64); N.
std::vector<at::Tensor> din_forward(const at::Tensor& c, const at::Tensor& q,
                                    const at::Tensor& keys, const at::Tensor& mask,
                                    const at::Tensor& w_k, const at::Tensor& w_p,
                                    const at::Tensor& alpha, const at::Tensor& w2, double b2,
                                    double eps) {
  std::vector<at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(keys.scalar_type(), "din_forward", [&] {
    out = forward_impl<scalar_t>(c.contiguous(), q.contiguous(), keys.contiguous(),
                                 mask.contiguous(), w_k.contiguous(), w_p.contiguous(),
                                 alpha.contiguous(), w2.contiguous(), b2, eps);
  });
  return out;
}

// d_c, d_q, d_keys, d_w_k, d_w_p, d_alpha, d_w2, d_b2.
std::vector<at::Tensor> din_backward(const at::Tensor& grad, const at::Tensor& q,
                                     const at::Tensor& keys, const at::Tensor& mask,
                                     const at::Tensor& w_k, const at::Tensor& w_p,
                                     const at::Tensor& alpha, const at::Tensor& w2,
                                     const at::Tensor& hidden, const at::Tensor& gates,
                                     const at::Tensor& score, const at::Tensor& mean,
                                     const at::Tensor& var, double eps) {
  std::vector<at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(keys.scalar_type(), "din_backward", [&] {
    out = backward_impl<scalar_t>(grad.contiguous(), q.contiguous(), keys.contiguous(),
                                  mask.contiguous(), w_k.contiguous(), w_p.contiguous(),
                                  alpha.contiguous(), w2.contiguous(), hidden, gates, score,
                                  mean, var, eps);
  });
  return out;
}
