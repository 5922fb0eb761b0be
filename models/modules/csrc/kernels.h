// Entry points of the C++ kernels, bound to Python by bindings.cpp.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

// A 32-bit integer hash (Wellons' "lowbias32"): bijective, well mixed, and only 32-bit
// multiplies, so eight lanes run at once under AVX2. hash32(hash32(i ^ k0) ^ k1) is the
// i-th draw of a call seeded with (k0, k1): dropout's masks and the bank's OOV dropout.
inline uint32_t hash32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

// One 64-bit draw from torch's default CPU generator (so torch.manual_seed repeats a run).
uint64_t draw_seed();

// The draws of one call: element i is hit with probability p (to within 2^-32) when
// hash32(hash32(i ^ k0) ^ k1) < cut, (k0, k1) from one draw_seed() (none when p == 0) and
// cut = p * 2^32. Dropout drops its hits; the bank's OOV dropout sends them to the OOV row.
struct HashDraws {
  uint32_t k0 = 0, k1 = 0, cut = 0;
  explicit HashDraws(double p);
  bool hit(uint32_t i) const { return hash32(hash32(i ^ k0) ^ k1) < cut; }
};

void forward_loop(at::Tensor& gh_all, const at::Tensor& gx, const at::Tensor& att,
                  const at::Tensor& w_hh, at::Tensor& states, at::Tensor& ru_all,
                  at::Tensor& c_all, const std::vector<int64_t>& counts, int64_t kind,
                  int64_t parts);
std::vector<at::Tensor> backward(const at::Tensor& grad, const at::Tensor& att_in,
                                 const at::Tensor& w_hh, const at::Tensor& states,
                                 const at::Tensor& ru, const at::Tensor& c,
                                 const at::Tensor& gh, const std::vector<int64_t>& counts,
                                 int64_t kind, int64_t parts);
std::vector<at::Tensor> din_forward(const at::Tensor& c, const at::Tensor& q,
                                    const at::Tensor& keys, const at::Tensor& mask,
                                    const at::Tensor& w_k, const at::Tensor& w_p,
                                    const at::Tensor& alpha, const at::Tensor& w2, double b2,
                                    double eps);
std::vector<at::Tensor> din_backward(const at::Tensor& grad, const at::Tensor& grad_pooled,
                                     const at::Tensor& q,
                                     const at::Tensor& keys, const at::Tensor& mask,
                                     const at::Tensor& w_k, const at::Tensor& w_p,
                                     const at::Tensor& alpha, const at::Tensor& w2,
                                     const at::Tensor& hidden, const at::Tensor& gates,
                                     const at::Tensor& score, const at::Tensor& mean,
                                     const at::Tensor& var, double eps);
at::Tensor pair_gather(const at::Tensor& items, const at::Tensor& cats,
                       const at::Tensor& item_rows, const at::Tensor& cat_rows);
std::vector<at::Tensor> pair_gather_backward(const at::Tensor& grad, const at::Tensor& item_rows,
                                             const at::Tensor& cat_rows, int64_t n_items,
                                             int64_t n_cats);
std::vector<at::Tensor> dice_forward(const at::Tensor& x, const at::Tensor& alpha, double eps);
std::vector<at::Tensor> dice_backward(const at::Tensor& grad, const at::Tensor& x,
                                      const at::Tensor& p, const at::Tensor& alpha,
                                      const at::Tensor& mean, const at::Tensor& var,
                                      double eps);
std::vector<at::Tensor> dropout_forward(const at::Tensor& x, double p);
void bn_running_update(at::Tensor& running_mean, at::Tensor& running_var,
                       const at::Tensor& mean, const at::Tensor& var, double momentum,
                       double count);
at::Tensor dense_rows(const at::Tensor& ids, const at::Tensor& table, double oov_p,
                      int64_t oov_row);
