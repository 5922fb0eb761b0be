// Dice (DIN paper, eq. 9) element by element, shared by the kernels that compute it:
// DIN's fused attention (din_attention.cpp) and the top MLPs' Dice (dice_dropout.cpp).
//   p = sigmoid((x - mu) * inv), inv = 1 / sqrt(var + eps)   (batch statistics)
//   a = x * gate,                gate = alpha + p (1 - alpha)
#pragma once

#include <cmath>
#include <cstdint>

template <typename T>
inline T dice_p(T x, T mu, T inv) {
  return T(1) / (T(1) + std::exp(-(x - mu) * inv));
}

template <typename T>
inline T dice_gate(T p, T alpha) {
  return alpha + p * (T(1) - alpha);
}

// dL/d(normalised x) from da = dL/da.
template <typename T>
inline T dice_dx(T da, T x, T p, T alpha) {
  return da * x * (T(1) - alpha) * p * (T(1) - p);
}

// mu and inv in T from the float64 batch statistics of h channels.
template <typename T>
inline void dice_norm(const double* mean, const double* var, double eps, int64_t h, T* mu,
                      T* inv) {
  for (int64_t j = 0; j < h; ++j) {
    mu[j] = static_cast<T>(mean[j]);
    inv[j] = static_cast<T>(1.0 / std::sqrt(var[j] + eps));
  }
}
