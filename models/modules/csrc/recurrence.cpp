// The recurrence of models.modules.recurrence.FusedGRU in C++: the same algebra as its
// Python loops, with each step's element-wise work in one vectorised loop (the Python
// loops run ~6 ATen ops a step, and at batch 256 their dispatch costs more than the
// arithmetic) and the backward as one reverse pass that computes its coefficients on the
// fly instead of materialising them for all steps. The matmuls stay ATen's (MKL/oneDNN).
// Both loops split the batch rows into ``parts`` (recurrence.row_parts: one per intra-op
// thread). A row keeps its rank from step to step (packing sorts rows by length), so part k
// owns the ranks congruent to k and runs the whole sequence for them, its own small matmul
// each step on one thread, with no synchronisation between steps: at batch 256 one
// (256 x 32) @ (32 x 96) matmul is slower on two threads than on one, so splitting the rows
// is what lets a second core help.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels.h"

// MKL (torch's BLAS on x86) would start threads of its own for each part's matmul inside
// the parallel region (measured: forward 2.6 ms against 1.8 ms with MKL on one thread).
// (mkl_service.h maps mkl_set_num_threads_local to this C entry; the lower-case symbol is
// the Fortran one, taking a pointer.) Weak: absent from a torch without MKL.
extern "C" int MKL_Set_Num_Threads_Local(int) __attribute__((weak));

namespace {

constexpr int64_t kGRU = 0;
constexpr int64_t kAUGRU = 1;
constexpr int64_t kAGRU = 2;

// For the life of a part: autograd off and BLAS on this thread only. Autograd state is per
// thread and an OpenMP worker does not inherit the caller's disabled grad mode: without the
// guard its in-place matmul would record history (and wait for the GIL the caller holds).
// These are raw kernels; nothing here is differentiated.
class PartGuard {
 public:
  PartGuard() : blas_(MKL_Set_Num_Threads_Local ? MKL_Set_Num_Threads_Local(1) : 0) {}
  ~PartGuard() {
    if (MKL_Set_Num_Threads_Local) MKL_Set_Num_Threads_Local(blas_);
  }
  PartGuard(const PartGuard&) = delete;
  PartGuard& operator=(const PartGuard&) = delete;

 private:
  at::AutoDispatchBelowADInplaceOrView below_autograd_;
  int blas_;
};

// The rows of ``step`` (n rows of a (N, C) tensor from row ``off``) whose rank is congruent
// to ``k`` modulo ``parts``: a strided view, which BLAS reads and writes in place.
at::Tensor ranks(const at::Tensor& all, int64_t off, int64_t n, int64_t k, int64_t parts) {
  return all.narrow(0, off, n).slice(0, k, n, parts);
}

}  // namespace

// One step's gates after its addmm: r, u = sigmoid, c = tanh(gx_c + r * gh_c), then
// h = h_prev + u' * (c - h_prev) with u' = u (GRU), a * u (AUGRU) or a (AGRU).
template <typename T>
void step_gates(const T* gh, const T* gx, const T* att, const T* hp, T* ru, T* c, T* h,
                int64_t n, int64_t hd, int64_t kind, int64_t first, int64_t stride) {
  for (int64_t i = first; i < n; i += stride) {
    const T* gh_i = gh + i * 3 * hd;
    const T* gxc_i = gx + i * 3 * hd + 2 * hd;
    T* ru_i = ru + i * 2 * hd;
    T* c_i = c + i * hd;
    T* h_i = h + i * hd;
    const T* hp_i = hp == nullptr ? nullptr : hp + i * hd;
    const T a = att[i];
#pragma omp simd
    for (int64_t j = 0; j < hd; ++j) {
      // Arguments clamped: -ffast-math assumes no infinities, exp(80) is finite in float.
      const T r = T(1) / (T(1) + std::exp(std::fmin(T(80), std::fmax(T(-80), -gh_i[j]))));
      const T u = T(1) / (T(1) + std::exp(std::fmin(T(80), std::fmax(T(-80), -gh_i[hd + j]))));
      ru_i[j] = r;
      ru_i[hd + j] = u;
      const T cand = std::tanh(gxc_i[j] + r * gh_i[2 * hd + j]);
      c_i[j] = cand;
      const T ue = kind == kAUGRU ? a * u : (kind == kAGRU ? a : u);
      const T prev = hp_i == nullptr ? T(0) : hp_i[j];
      h_i[j] = prev + ue * (cand - prev);
    }
  }
}

// Forward recurrence: fills states, ru_all, c_all and adds each step's recurrent term to
// gh_all, which enters with the input terms and biases (see FusedGRU.forward).
void forward_loop(at::Tensor& gh_all, const at::Tensor& gx, const at::Tensor& att,
                  const at::Tensor& w_hh, at::Tensor& states, at::Tensor& ru_all,
                  at::Tensor& c_all, const std::vector<int64_t>& counts, int64_t kind,
                  int64_t parts) {
  if (counts.empty()) return;
  const int64_t hd = w_hh.size(1);
  const at::Tensor w_t = w_hh.t();
  const at::Tensor gxc = gx.contiguous();
  const at::Tensor a = att.contiguous();
  const auto steps = static_cast<int64_t>(counts.size());
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    const PartGuard guard;
    for (int64_t k = begin; k < end; ++k) {
      int64_t off = 0;
      for (int64_t t = 0; t < steps; ++t) {
        const int64_t n = counts[t];
        if (t > 0 && k < n) {  // h_0 = 0: step 0 has no recurrent term
          const int64_t prev_off = off - counts[t - 1];
          at::Tensor gh_k = ranks(gh_all, off, n, k, parts);  // (n_k, 3H)
          gh_k.addmm_(ranks(states, prev_off, n, k, parts), w_t);
        }
        AT_DISPATCH_FLOATING_TYPES(gx.scalar_type(), "step_gates", [&] {
          scalar_t* h = states.data_ptr<scalar_t>();
          step_gates<scalar_t>(gh_all.data_ptr<scalar_t>() + off * 3 * hd,
                               gxc.data_ptr<scalar_t>() + off * 3 * hd,
                               a.data_ptr<scalar_t>() + off,
                               t == 0 ? nullptr : h + (off - counts[t - 1]) * hd,
                               ru_all.data_ptr<scalar_t>() + off * 2 * hd,
                               c_all.data_ptr<scalar_t>() + off * hd, h + off * hd, n, hd,
                               kind, k, parts);
        });
        off += n;
      }
    }
  });
}

// Backward of the whole recurrence (the algebra of FusedGRU.backward, fused): returns
// d_gx (N, 3H), d_att (N, 1), d_w_hh (3H, H), d_b_hh (3H). One reverse pass over the steps:
// when step t is reached, the state gradient g of its elements is complete (their only later
// use is step t + 1), so every coefficient is computed there, from the saved forward values,
// and written straight into the outputs (and h_{t-1} into prev, for d_w_hh). Element e of
// step t > 0 has its previous state at e - counts[t - 1] (rows keep their rank from step
// to step).
template <typename T>
void backward_impl(const at::Tensor& att_t, const at::Tensor& states_t, const at::Tensor& ru_t,
                   const at::Tensor& c_t, const at::Tensor& gh_t, at::Tensor& g_all_t,
                   at::Tensor& d_gh_t, at::Tensor& d_gx_t, at::Tensor& d_att_t,
                   at::Tensor& prev_t, const at::Tensor& w_hh,
                   const std::vector<int64_t>& counts, int64_t kind, int64_t k,
                   int64_t parts) {
  const int64_t hd = states_t.size(1);
  const int64_t h3 = 3 * hd;
  std::vector<int64_t> offs(counts.size(), 0);
  for (size_t t = 1; t < counts.size(); ++t) offs[t] = offs[t - 1] + counts[t - 1];
  const T* att = att_t.data_ptr<T>();
  const T* states = states_t.data_ptr<T>();
  const T* ru = ru_t.data_ptr<T>();
  const T* c = c_t.data_ptr<T>();
  const T* gh = gh_t.data_ptr<T>();
  T* g_all = g_all_t.data_ptr<T>();
  T* d_gh = d_gh_t.data_ptr<T>();
  T* d_gx = d_gx_t.data_ptr<T>();
  T* d_att = d_att_t.data_ptr<T>();
  T* prev = prev_t.data_ptr<T>();
  for (auto t = static_cast<int64_t>(counts.size()) - 1; t >= 0; --t) {
    const int64_t n = counts[t];
    for (int64_t i = k; i < n; i += parts) {
      const int64_t e = offs[t] + i;
      const T* p_src = t > 0 ? states + (e - counts[t - 1]) * hd : nullptr;
      T* g_prev = t > 0 ? g_all + (e - counts[t - 1]) * hd : nullptr;
      const T* g = g_all + e * hd;
      const T* ru_e = ru + e * 2 * hd;
      const T* c_e = c + e * hd;
      const T* ghc = gh + e * h3 + 2 * hd;
      T* dgh = d_gh + e * h3;
      T* dgx = d_gx + e * h3;
      T* prev_e = prev + e * hd;
      const T a = att[e];
      T da = T(0);
#pragma omp simd reduction(+ : da)
      for (int64_t j = 0; j < hd; ++j) {
        const T p = p_src == nullptr ? T(0) : p_src[j];
        prev_e[j] = p;
        const T r = ru_e[j];
        const T u = ru_e[hd + j];
        const T cc = c_e[j];
        const T ue = kind == kAUGRU ? u * a : (kind == kAGRU ? a : u);
        const T diff = cc - p;
        const T gk = g[j] * ue * (T(1) - cc * cc);  // dL/d(candidate pre-activation)
        const T d_u = kind == kAGRU ? T(0) : g[j] * diff * u * (T(1) - u);
        dgh[j] = gk * ghc[j] * r * (T(1) - r);
        dgh[hd + j] = kind == kAUGRU ? d_u * a : d_u;
        dgh[2 * hd + j] = gk * r;
        dgx[j] = dgh[j];
        dgx[hd + j] = dgh[hd + j];
        dgx[2 * hd + j] = gk;
        da += kind == kAUGRU ? g[j] * diff * u : g[j] * diff;
        if (g_prev != nullptr) g_prev[j] += g[j] * (T(1) - ue);
      }
      d_att[e] = da;
    }
    if (t > 0 && k < n) {  // the recurrent path into the rows of step t - 1 running at t
      ranks(g_all_t, offs[t - 1], n, k, parts).addmm_(ranks(d_gh_t, offs[t], n, k, parts), w_hh);
    }
  }
}

std::vector<at::Tensor> backward(const at::Tensor& grad, const at::Tensor& att_in,
                                 const at::Tensor& w_hh, const at::Tensor& states,
                                 const at::Tensor& ru, const at::Tensor& c,
                                 const at::Tensor& gh, const std::vector<int64_t>& counts,
                                 int64_t kind, int64_t parts) {
  const int64_t n_all = states.size(0);
  const int64_t hd = states.size(1);
  const at::Tensor att = att_in.contiguous();
  const auto opt = states.options();
  at::Tensor g_all = grad.contiguous().clone();  // becomes dL/dh with the carry
  at::Tensor d_gh = at::empty({n_all, 3 * hd}, opt);
  at::Tensor d_gx = at::empty({n_all, 3 * hd}, opt);
  at::Tensor d_att = at::empty({n_all, 1}, opt);
  at::Tensor prev = at::empty({n_all, hd}, opt);  // h_{t-1} of every element (0 at step 0)
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    const PartGuard guard;
    for (int64_t k = begin; k < end; ++k) {
      AT_DISPATCH_FLOATING_TYPES(states.scalar_type(), "gru_backward", [&] {
        backward_impl<scalar_t>(att, states, ru, c, gh, g_all, d_gh, d_gx, d_att, prev, w_hh,
                                counts, kind, k, parts);
      });
    }
  });
  return {d_gx, d_att, d_gh.t().mm(prev), d_gh.sum(0)};  // one matmul for d_w_hh
}
