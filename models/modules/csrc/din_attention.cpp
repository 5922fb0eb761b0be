// DIN attention pooling in training, fused: models.modules.din_fused.FusedDINPooling in C++.
//
// For every real history position n = (b, t) of a padded (B, T, E) batch:
//   h_n = c_b + k_n G_b          G_b = W_k' + diag(q_b) W_p'   (the activation unit's first
//                                layer; c_b = W_c q_b + bias is computed by the caller)
//   a_n = Dice(h_n)              batch statistics over the real positions, per channel
//   s_n = <a_n, w2> + b2         the unit's score (no softmax: the DIN paper's default)
//   interest_b = sum_n s_n k_n,  pooled_b = sum_n k_n (the plain sum pooling, free here)
// and the backward of all of it. Positions where mask is false are skipped (weight 0). The
// batch rows are dealt to torch's intra-op threads; channel statistics and weight
// gradients are summed from per-thread partials. The Python module keeps the same algebra
// as ATen ops (ActivationUnit / AttentionPooling) for eval, GPUs and other configurations.
//
// Layout: every channel vector is padded with zeros to a multiple of 8 (HP >= H, EP >= E),
// so each inner loop has a width known at compile time (the common sizes: 8..64) and runs
// as whole vector registers with no scalar remainder; two positions share each load of the
// gate matrix. A padded channel has h = 0, w2 = 0 and alpha = 0: it adds nothing anywhere.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "dice.h"
#include "kernels.h"

namespace {

int64_t padded(int64_t n) { return (n + 7) / 8 * 8; }

// The real positions of a padded (B, T) mask, packed in row order: offs[b]..offs[b+1] index
// pos (flat b * T + t). The buffers the passes share hold real positions only (fresh memory
// costs page faults: (B, T, H) buffers made the forward ~2x slower).
struct Real {
  std::vector<int64_t> offs, pos;
};

Real real_positions(const bool* mask, int64_t b, int64_t t) {
  Real r;
  r.offs.assign(b + 1, 0);
  r.pos.reserve(b * t);
  for (int64_t row = 0; row < b; ++row) {
    for (int64_t i = 0; i < t; ++i) {
      if (mask[row * t + i]) r.pos.push_back(row * t + i);
    }
    r.offs[row + 1] = static_cast<int64_t>(r.pos.size());
  }
  return r;
}

// (rows, cols) -> (rows, ld) with zero columns after cols.
template <typename T>
std::vector<T> pad_cols(const T* x, int64_t rows, int64_t cols, int64_t ld) {
  std::vector<T> out(rows * ld, T(0));
  for (int64_t r = 0; r < rows; ++r) std::copy(x + r * cols, x + (r + 1) * cols, &out[r * ld]);
  return out;
}

// out_r[:w] = init[:w] + sum_i a_r[i] m[i, :w] for one or two rows a_r (length k) of an
// (k, w) matrix m (a1 / o1 null for one row): the plain loop, for float64 (the tests'
// gradchecks) and for float widths past the vector kernels below.
template <typename T>
void rows_times_any(const T* a0, const T* a1, int64_t k, const T* m, const T* init, T* o0,
                    T* o1, int64_t w) {
  for (int r = 0; r < 2; ++r) {
    const T* a = r == 0 ? a0 : a1;
    T* o = r == 0 ? o0 : o1;
    if (a == nullptr) continue;
    for (int64_t j = 0; j < w; ++j) o[j] = init != nullptr ? init[j] : T(0);
    for (int64_t i = 0; i < k; ++i) {
      const T x = a[i];
      const T* mi = m + i * w;
#pragma omp simd
      for (int64_t j = 0; j < w; ++j) o[j] += x * mi[j];
    }
  }
}

// The products' entry: float has the vector kernels below, every other T the plain loop.
template <typename T>
void rows_times_w(const T* a0, const T* a1, int64_t k, const T* m, const T* init, T* o0,
                  T* o1, int64_t w) {
  rows_times_any(a0, a1, k, m, init, o0, o1, w);
}

// float, widths 8..48: GCC/Clang vector types (8 lanes; AVX where the target has it), so the
// 2 x W / 8 accumulators are registers by construction and each load of m serves both rows.
typedef float v8f __attribute__((vector_size(32)));
typedef float v8f_u __attribute__((vector_size(32), aligned(4)));  // unaligned access

inline v8f load8(const float* p) { return *reinterpret_cast<const v8f_u*>(p); }
inline void store8(float* p, v8f v) { *reinterpret_cast<v8f_u*>(p) = v; }

template <int V>
void rows_times_v(const float* __restrict a0, const float* __restrict a1, int64_t k,
                  const float* __restrict m, const float* __restrict init,
                  float* __restrict o0, float* __restrict o1) {
  v8f acc0[V], acc1[V];
  for (int v = 0; v < V; ++v) acc0[v] = acc1[v] = init != nullptr ? load8(init + 8 * v) : v8f{};
  if (a1 != nullptr) {
    for (int64_t i = 0; i < k; ++i) {
      const float x0 = a0[i], x1 = a1[i];
      const float* mi = m + i * 8 * V;
      for (int v = 0; v < V; ++v) {
        const v8f mv = load8(mi + 8 * v);
        acc0[v] += x0 * mv;
        acc1[v] += x1 * mv;
      }
    }
    for (int v = 0; v < V; ++v) store8(o1 + 8 * v, acc1[v]);
  } else {
    for (int64_t i = 0; i < k; ++i) {
      const float x0 = a0[i];
      const float* mi = m + i * 8 * V;
      for (int v = 0; v < V; ++v) acc0[v] += x0 * load8(mi + 8 * v);
    }
  }
  for (int v = 0; v < V; ++v) store8(o0 + 8 * v, acc0[v]);
}

template <>
void rows_times_w<float>(const float* a0, const float* a1, int64_t k, const float* m,
                         const float* init, float* o0, float* o1, int64_t w) {
  switch (w) {
    case 8: return rows_times_v<1>(a0, a1, k, m, init, o0, o1);
    case 16: return rows_times_v<2>(a0, a1, k, m, init, o0, o1);
    case 24: return rows_times_v<3>(a0, a1, k, m, init, o0, o1);
    case 32: return rows_times_v<4>(a0, a1, k, m, init, o0, o1);
    case 40: return rows_times_v<5>(a0, a1, k, m, init, o0, o1);
    case 48: return rows_times_v<6>(a0, a1, k, m, init, o0, o1);
    default: return rows_times_any(a0, a1, k, m, init, o0, o1, w);
  }
}

// G_b = W_k' + diag(q_b) W_p' (E, HP) from the padded (E, HP) weights, or its transpose
// (HP, EP) when ``transposed`` (zero beyond E).
template <typename T>
void gate_matrix(const T* q, const T* w_k, const T* w_p, T* g, int64_t e, int64_t hp,
                 int64_t ep, bool transposed) {
  if (!transposed) {
    for (int64_t i = 0; i < e; ++i) {
      const T qi = q[i];
#pragma omp simd
      for (int64_t j = 0; j < hp; ++j) g[i * hp + j] = w_k[i * hp + j] + qi * w_p[i * hp + j];
    }
    return;
  }
  std::fill(g, g + hp * ep, T(0));
  for (int64_t i = 0; i < e; ++i) {
    for (int64_t j = 0; j < hp; ++j) g[j * ep + i] = w_k[i * hp + j] + q[i] * w_p[i * hp + j];
  }
}

// Chan et al.'s pairwise update: fold a group of c values per channel (its mean and sum of
// squared deviations M2) into running ones (n values so far, mean, M2); n becomes n + c.
inline void fold_moments(double& n, double* mean, double* m2, double c, int64_t h,
                         const double* c_mean, const double* c_m2) {
  if (c <= 0) return;
  const double total = n + c;
  for (int64_t j = 0; j < h; ++j) {
    const double delta = c_mean[j] - mean[j];
    mean[j] += delta * c / total;
    m2[j] += c_m2[j] + delta * delta * n * c / total;
  }
  n = total;
}

// Fold a group of c values given as sums of deviations from a shift (s1 = sum(h - shift),
// s2 = the sum of their squares) into the running moments.
// c_mean and c_m2: scratch of h values each.
template <typename T>
void merge_moments(double& n, double* mean, double* m2, double c, const T* shift, const T* s1,
                   const T* s2, int64_t h, double* c_mean, double* c_m2) {
  for (int64_t j = 0; j < h; ++j) {
    const double dm = static_cast<double>(s1[j]) / c;
    c_mean[j] = static_cast<double>(shift[j]) + dm;
    c_m2[j] = std::max(0.0, static_cast<double>(s2[j]) - static_cast<double>(s1[j]) * dm);
  }
  fold_moments(n, mean, m2, c, h, c_mean, c_m2);
}

// The padded weights and Dice's normalisation, shared by the forward and the backward.
template <typename T>
struct Params {
  int64_t b, t, e, h, ep, hp;
  std::vector<T> w_k, w_p, alpha, w2, mu, inv;  // (E, HP) x 2, (HP) x 4

  Params(const at::Tensor& keys, const at::Tensor& w_k_t, const at::Tensor& w_p_t,
         const at::Tensor& alpha_t, const at::Tensor& w2_t)
      : b(keys.size(0)), t(keys.size(1)), e(keys.size(2)), h(w_k_t.size(1)),
        ep(padded(e)), hp(padded(h)),
        w_k(pad_cols(w_k_t.data_ptr<T>(), e, h, hp)),
        w_p(pad_cols(w_p_t.data_ptr<T>(), e, h, hp)),
        alpha(pad_cols(alpha_t.data_ptr<T>(), 1, h, hp)),
        w2(pad_cols(w2_t.data_ptr<T>(), 1, h, hp)), mu(hp, T(0)), inv(hp, T(1)) {}

  // mu = mean, inv = 1 / sqrt(var + eps), from the float64 batch statistics.
  void set_norm(const double* mean, const double* var, double eps) {
    dice_norm(mean, var, eps, h, mu.data(), inv.data());
  }
};

// Dice and the score at one position over W channels: gates p (stored), the score.
template <typename T, int W>
T dice_score(const T* __restrict hn, const T* __restrict mu, const T* __restrict inv,
             const T* __restrict alpha, const T* __restrict w2, T* __restrict pn, int64_t) {
  T s = 0;
  for (int j = 0; j < W; ++j) pn[j] = dice_p(hn[j], mu[j], inv[j]);
  for (int j = 0; j < W; ++j) s += hn[j] * dice_gate(pn[j], alpha[j]) * w2[j];
  return s;
}

// The same for any width w.
template <typename T>
T dice_score_any(const T* hn, const T* mu, const T* inv, const T* alpha, const T* w2, T* pn,
                 int64_t w) {
  T s = 0;
  for (int64_t j = 0; j < w; ++j) pn[j] = dice_p(hn[j], mu[j], inv[j]);
  for (int64_t j = 0; j < w; ++j) s += hn[j] * dice_gate(pn[j], alpha[j]) * w2[j];
  return s;
}

template <typename T>
std::vector<at::Tensor> forward_impl(const at::Tensor& c_t, const at::Tensor& q_t,
                                     const at::Tensor& keys_t, const at::Tensor& mask_t,
                                     const at::Tensor& w_k_t, const at::Tensor& w_p_t,
                                     const at::Tensor& alpha_t, const at::Tensor& w2_t,
                                     double b2, double eps) {
  Params<T> p(keys_t, w_k_t, w_p_t, alpha_t, w2_t);
  const auto opt = keys_t.options();
  const Real real = real_positions(mask_t.data_ptr<bool>(), p.b, p.t);
  const int64_t n = static_cast<int64_t>(real.pos.size());
  const std::vector<T> c = pad_cols(c_t.data_ptr<T>(), p.b, p.h, p.hp);
  at::Tensor hid_t = at::empty({n, p.hp}, opt);  // (N, HP): padded channels are zero
  at::Tensor out_t = at::zeros({p.b, p.e}, opt);
  at::Tensor pooled_t = at::zeros({p.b, p.e}, opt);
  const int64_t threads = at::get_num_threads();
  // Dice's statistics, per thread: positions seen, channel means and sums of squared
  // deviations, merged batch row by batch row with Chan et al.'s pairwise update from the
  // row's sums of deviations from its first real position. E[h^2] - E[h]^2 over the raw
  // values loses the variance to cancellation when the mean is large against the spread.
  std::vector<double> stats(threads * 2 * p.hp, 0.0);
  std::vector<double> counts(threads, 0.0);
  const T* q = q_t.data_ptr<T>();
  const T* keys = keys_t.data_ptr<T>();
  T* hid = hid_t.data_ptr<T>();
  // Pass 1: the first layer at every real position, two at a time, and the channel sums of
  // Dice's statistics.
  at::parallel_for(0, p.b, 8, [&](int64_t lo, int64_t hi) {
    const int64_t tid = at::get_thread_num();
    double* mu_t = stats.data() + tid * 2 * p.hp;
    double* m2_t = mu_t + p.hp;
    std::vector<T> g(p.e * p.hp), l1(p.hp), l2(p.hp);  // G_b; one batch row's sums, in T
    std::vector<double> row_mean(p.hp), row_m2(p.hp);  // the row's moments, merged
    for (int64_t b = lo; b < hi; ++b) {
      const int64_t m0 = real.offs[b], m1 = real.offs[b + 1];
      if (m0 == m1) continue;
      gate_matrix(q + b * p.e, p.w_k.data(), p.w_p.data(), g.data(), p.e, p.hp, p.ep, false);
      for (int64_t m = m0; m < m1; m += 2) {
        const bool two = m + 1 < m1;
        rows_times_w(keys + real.pos[m] * p.e, two ? keys + real.pos[m + 1] * p.e : nullptr,
                     p.e, g.data(), &c[b * p.hp], hid + m * p.hp,
                     two ? hid + (m + 1) * p.hp : nullptr, p.hp);
      }
      std::fill(l1.begin(), l1.end(), T(0));
      std::fill(l2.begin(), l2.end(), T(0));
      const T* __restrict h0 = hid + m0 * p.hp;
      for (int64_t m = m0; m < m1; ++m) {
        const T* hn = hid + m * p.hp;
#pragma omp simd
        for (int64_t j = 0; j < p.hp; ++j) {
          const T d = hn[j] - h0[j];
          l1[j] += d;
          l2[j] += d * d;
        }
      }
      merge_moments(counts[tid], mu_t, m2_t, static_cast<double>(m1 - m0), h0, l1.data(),
                    l2.data(), p.h, row_mean.data(), row_m2.data());
    }
  });
  at::Tensor mean_t = at::zeros({p.h}, opt.dtype(at::kDouble));
  at::Tensor var_t = at::zeros({p.h}, opt.dtype(at::kDouble));
  double* mean = mean_t.data_ptr<double>();
  double* var = var_t.data_ptr<double>();  // the sums of squared deviations until the end
  double seen = 0.0;
  for (int64_t tid = 0; tid < threads; ++tid) {
    const double* mu_t = stats.data() + tid * 2 * p.hp;
    fold_moments(seen, mean, var, counts[tid], p.h, mu_t, mu_t + p.hp);
  }
  for (int64_t j = 0; j < p.h; ++j) var[j] = std::max(0.0, var[j] / static_cast<double>(n));
  p.set_norm(mean, var, eps);
  at::Tensor gates_t = at::empty({n, p.hp}, opt);  // Dice's p at every real position
  at::Tensor score_t = at::empty({n}, opt);
  T* gates = gates_t.data_ptr<T>();
  T* score = score_t.data_ptr<T>();
  T* out = out_t.data_ptr<T>();
  T* pooled = pooled_t.data_ptr<T>();
  T (*score_fn)(const T*, const T*, const T*, const T*, const T*, T*, int64_t) =
      dice_score_any<T>;
  if (p.hp == 40) score_fn = dice_score<T, 40>;
  if (p.hp == 32) score_fn = dice_score<T, 32>;
  if (p.hp == 16) score_fn = dice_score<T, 16>;
  if (p.hp == 8) score_fn = dice_score<T, 8>;
  // Pass 2: Dice, the score, and the weighted sum of the keys.
  at::parallel_for(0, p.b, 8, [&](int64_t lo, int64_t hi) {
    for (int64_t b = lo; b < hi; ++b) {
      T* ob = out + b * p.e;
      T* pb = pooled + b * p.e;
      for (int64_t m = real.offs[b]; m < real.offs[b + 1]; ++m) {
        const T s = static_cast<T>(b2) + score_fn(hid + m * p.hp, p.mu.data(), p.inv.data(),
                                                  p.alpha.data(), p.w2.data(),
                                                  gates + m * p.hp, p.hp);
        score[m] = s;
        const T* k = keys + real.pos[m] * p.e;
#pragma omp simd
        for (int64_t i = 0; i < p.e; ++i) {
          ob[i] += s * k[i];
          pb[i] += k[i];
        }
      }
    }
  });
  return {out_t, pooled_t, hid_t, gates_t, score_t, mean_t, var_t,
          at::scalar_tensor(n, opt.dtype(at::kLong))};
}

template <typename T>
std::vector<at::Tensor> backward_impl(const at::Tensor& grad_t, const at::Tensor& grad_pool_t,
                                      const at::Tensor& q_t,
                                      const at::Tensor& keys_t, const at::Tensor& mask_t,
                                      const at::Tensor& w_k_t, const at::Tensor& w_p_t,
                                      const at::Tensor& alpha_t, const at::Tensor& w2_t,
                                      const at::Tensor& hid_t, const at::Tensor& gates_t,
                                      const at::Tensor& score_t, const at::Tensor& mean_t,
                                      const at::Tensor& var_t, double eps) {
  Params<T> p(keys_t, w_k_t, w_p_t, alpha_t, w2_t);
  p.set_norm(mean_t.data_ptr<double>(), var_t.data_ptr<double>(), eps);
  const auto opt = keys_t.options();
  const T* grad = grad_t.data_ptr<T>();
  const T* grad_pool = grad_pool_t.data_ptr<T>();
  const T* q = q_t.data_ptr<T>();
  const T* keys = keys_t.data_ptr<T>();
  const T* hid = hid_t.data_ptr<T>();
  const T* gates = gates_t.data_ptr<T>();
  const T* score = score_t.data_ptr<T>();
  const Real real = real_positions(mask_t.data_ptr<bool>(), p.b, p.t);
  const int64_t n_real = static_cast<int64_t>(real.pos.size());
  const int64_t threads = at::get_num_threads();
  const int64_t hp = p.hp;
  const T* mu = p.mu.data();
  const T* inv = p.inv.data();
  const T* alpha = p.alpha.data();
  const T* w2 = p.w2.data();
  // dL/d(score) at every real position, and dL/d(h) before the batch norm's correction.
  std::vector<T> ds(n_real), dh(n_real * hp);
  // Per thread: [d_alpha (HP), d_w2 (HP), sum dx (HP), sum dx * xh (HP), d_b2 (1)].
  const int64_t width = 4 * hp + 1;
  std::vector<double> part(threads * width, 0.0);
  // Pass 1: the score's and Dice's gradients at every real position.
  at::parallel_for(0, p.b, 8, [&](int64_t lo, int64_t hi) {
    double* acc = part.data() + at::get_thread_num() * width;
    std::vector<T> loc(width);  // one batch row's sums, in T
    T* l_al = loc.data();
    T* l_w2 = l_al + hp;
    T* l_dx = l_w2 + hp;
    T* l_dxx = l_dx + hp;
    for (int64_t b = lo; b < hi; ++b) {
      std::fill(loc.begin(), loc.end(), T(0));
      const T* gb = grad + b * p.e;
      for (int64_t m = real.offs[b]; m < real.offs[b + 1]; ++m) {
        const T* k = keys + real.pos[m] * p.e;
        T d = 0;
#pragma omp simd reduction(+ : d)
        for (int64_t i = 0; i < p.e; ++i) d += gb[i] * k[i];
        ds[m] = d;
        loc[4 * hp] += d;
        const T* hn = hid + m * hp;
        const T* pn = gates + m * hp;
        T* dn = dh.data() + m * hp;
#pragma omp simd
        for (int64_t j = 0; j < hp; ++j) {
          const T xh = (hn[j] - mu[j]) * inv[j];
          const T pj = pn[j];
          const T da = d * w2[j];
          const T gate = dice_gate(pj, alpha[j]);
          l_w2[j] += d * hn[j] * gate;
          l_al[j] += da * hn[j] * (T(1) - pj);
          const T dx = dice_dx(da, hn[j], pj, alpha[j]);
          l_dx[j] += dx;
          l_dxx[j] += dx * xh;
          dn[j] = da * gate;  // the direct term; pass 2 adds the normalisation's
        }
      }
      for (int64_t j = 0; j < width; ++j) acc[j] += loc[j];
    }
  });
  std::vector<double> tot(width, 0.0);
  for (int64_t tid = 0; tid < threads; ++tid) {
    for (int64_t j = 0; j < width; ++j) tot[j] += part[tid * width + j];
  }
  std::vector<T> m_dx(hp), m_dxx(hp);
  for (int64_t j = 0; j < hp; ++j) {
    m_dx[j] = static_cast<T>(tot[2 * hp + j] / static_cast<double>(n_real));
    m_dxx[j] = static_cast<T>(tot[3 * hp + j] / static_cast<double>(n_real));
  }
  at::Tensor d_c_t = at::zeros({p.b, p.h}, opt);
  at::Tensor d_q_t = at::zeros({p.b, p.e}, opt);
  at::Tensor d_keys_t = at::empty({p.b, p.t, p.e}, opt);  // padding rows zeroed below
  const bool* mask = mask_t.data_ptr<bool>();
  std::vector<T> d_wk_part(threads * p.e * hp, T(0));
  std::vector<T> d_wp_part(threads * p.e * hp, T(0));
  T* d_c = d_c_t.data_ptr<T>();
  T* d_q = d_q_t.data_ptr<T>();
  T* d_keys = d_keys_t.data_ptr<T>();
  const T* w_p = p.w_p.data();
  int64_t nb_max = 1;
  for (int64_t b = 0; b < p.b; ++b) nb_max = std::max(nb_max, real.offs[b + 1] - real.offs[b]);
  // Pass 2: the batch norm's backward, then the first layer's gradients.
  at::parallel_for(0, p.b, 8, [&](int64_t lo, int64_t hi) {
    const int64_t tid = at::get_thread_num();
    T* d_wk = d_wk_part.data() + tid * p.e * hp;
    T* d_wp = d_wp_part.data() + tid * p.e * hp;
    std::vector<T> g_t(hp * p.ep), dg(p.e * hp), dc(hp), dk0(p.ep), dk1(p.ep);
    std::vector<T> kt(p.e * nb_max);  // K_b transposed (E, real positions of b)
    for (int64_t b = lo; b < hi; ++b) {
      for (int64_t t = 0; t < p.t; ++t) {  // padding: no gradient
        if (!mask[b * p.t + t]) std::fill_n(d_keys + (b * p.t + t) * p.e, p.e, T(0));
      }
      const int64_t m0 = real.offs[b], m1 = real.offs[b + 1];
      if (m0 == m1) continue;
      gate_matrix(q + b * p.e, p.w_k.data(), w_p, g_t.data(), p.e, hp, p.ep, true);
      std::fill(dc.begin(), dc.end(), T(0));
      const T* gb = grad + b * p.e;
      for (int64_t m = m0; m < m1; ++m) {
        const T* hn = hid + m * hp;
        const T* pn = gates + m * hp;
        T* dn = dh.data() + m * hp;
        const T d = ds[m];
#pragma omp simd
        for (int64_t j = 0; j < hp; ++j) {
          const T xh = (hn[j] - mu[j]) * inv[j];
          const T pj = pn[j];
          const T dx = dice_dx(d * w2[j], hn[j], pj, alpha[j]);
          dn[j] += inv[j] * (dx - m_dx[j] - xh * m_dxx[j]);  // the batch norm's backward
          dc[j] += dn[j];
        }
        const T* k = keys + real.pos[m] * p.e;
        for (int64_t i = 0; i < p.e; ++i) kt[i * nb_max + (m - m0)] = k[i];
      }
      for (int64_t i = 0; i < p.e; i += 2) {  // dG_b = K_b^T dH_b, two rows of it at a time
        const bool two = i + 1 < p.e;
        rows_times_w(&kt[i * nb_max], two ? &kt[(i + 1) * nb_max] : nullptr, m1 - m0,
                     dh.data() + m0 * hp, static_cast<const T*>(nullptr), dg.data() + i * hp,
                     two ? dg.data() + (i + 1) * hp : nullptr, hp);
      }
      const T* gpb = grad_pool + b * p.e;
      for (int64_t m = m0; m < m1; m += 2) {  // d_keys = dh G_b^T + s grad_b + grad_pooled_b
        const bool two = m + 1 < m1;
        rows_times_w(dh.data() + m * hp, two ? dh.data() + (m + 1) * hp : nullptr, hp,
                     g_t.data(), static_cast<const T*>(nullptr), dk0.data(), dk1.data(), p.ep);
        for (int r = 0; r < (two ? 2 : 1); ++r) {
          T* dk = d_keys + real.pos[m + r] * p.e;
          const T* src = r == 0 ? dk0.data() : dk1.data();
          const T s = score[m + r];
#pragma omp simd
          for (int64_t i = 0; i < p.e; ++i) dk[i] = src[i] + s * gb[i] + gpb[i];
        }
      }
      for (int64_t j = 0; j < p.h; ++j) d_c[b * p.h + j] = dc[j];
      const T* qb = q + b * p.e;
      for (int64_t i = 0; i < p.e; ++i) {
        T acc = 0;
        const T* dgi = dg.data() + i * hp;
        const T* wpi = w_p + i * hp;
        T* dwk = d_wk + i * hp;
        T* dwp = d_wp + i * hp;
        const T qi = qb[i];
#pragma omp simd reduction(+ : acc)
        for (int64_t j = 0; j < hp; ++j) {
          dwk[j] += dgi[j];
          dwp[j] += qi * dgi[j];
          acc += dgi[j] * wpi[j];
        }
        d_q[b * p.e + i] = acc;
      }
    }
  });
  at::Tensor d_wk_t = at::zeros({p.e, p.h}, opt);
  at::Tensor d_wp_t = at::zeros({p.e, p.h}, opt);
  T* d_wk_out = d_wk_t.data_ptr<T>();
  T* d_wp_out = d_wp_t.data_ptr<T>();
  for (int64_t tid = 0; tid < threads; ++tid) {
    for (int64_t i = 0; i < p.e; ++i) {
      for (int64_t j = 0; j < p.h; ++j) {
        d_wk_out[i * p.h + j] += d_wk_part[(tid * p.e + i) * hp + j];
        d_wp_out[i * p.h + j] += d_wp_part[(tid * p.e + i) * hp + j];
      }
    }
  }
  at::Tensor d_alpha_t = at::empty({p.h}, opt);
  at::Tensor d_w2_t = at::empty({p.h}, opt);
  for (int64_t j = 0; j < p.h; ++j) {
    d_alpha_t.data_ptr<T>()[j] = static_cast<T>(tot[j]);
    d_w2_t.data_ptr<T>()[j] = static_cast<T>(tot[hp + j]);
  }
  at::Tensor d_b2_t = at::scalar_tensor(tot[4 * hp], opt);
  return {d_c_t, d_q_t, d_keys_t, d_wk_t, d_wp_t, d_alpha_t, d_w2_t, d_b2_t};
}

}  // namespace

// interest (B, E), pooled (B, E); at the N real positions in row order: hidden (N, H), Dice's gates (N, H),
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
std::vector<at::Tensor> din_backward(const at::Tensor& grad, const at::Tensor& grad_pooled,
                                     const at::Tensor& q,
                                     const at::Tensor& keys, const at::Tensor& mask,
                                     const at::Tensor& w_k, const at::Tensor& w_p,
                                     const at::Tensor& alpha, const at::Tensor& w2,
                                     const at::Tensor& hidden, const at::Tensor& gates,
                                     const at::Tensor& score, const at::Tensor& mean,
                                     const at::Tensor& var, double eps) {
  std::vector<at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(keys.scalar_type(), "din_backward", [&] {
    out = backward_impl<scalar_t>(grad.contiguous(), grad_pooled.contiguous(), q.contiguous(),
                                  keys.contiguous(), mask.contiguous(), w_k.contiguous(), w_p.contiguous(),
                                  alpha.contiguous(), w2.contiguous(), hidden, gates, score,
                                  mean, var, eps);
  });
  return out;
}
