// The bank's item representations [item vector, category vector] in one pass, and their
// gradient: models.bank._PairGather in C++; and the rows of raw ids (dense_rows, below).
//
// Forward: out[m] = [items[item_rows[m]], cats[cat_rows[m]]] (M, 2D), written row by row,
// instead of two index_selects and a cat along the last dimension (a strided copy of every
// row). Backward: each table's gradient accumulated straight from its half of the incoming
// (M, 2D) gradient (ATen's index_add_ first needs each half copied contiguous, and its
// scatter over a 21-row category table took ~0.2 ms for 13k rows); row 0 (padding) is
// zeroed, so padding never trains. The rows are read in order and added serially: a row
// that appears many times (a popular item) gets its adds in one place, with no atomics.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "kernels.h"

namespace {

void check(const at::Tensor& items, const at::Tensor& cats, const at::Tensor& item_rows,
           const at::Tensor& cat_rows) {
  TORCH_CHECK(items.dim() == 2 && cats.dim() == 2 && items.size(1) == cats.size(1),
              "pair_gather: two (rows, D) tables of the same width");
  TORCH_CHECK(items.scalar_type() == cats.scalar_type(), "pair_gather: one dtype");
  TORCH_CHECK(item_rows.scalar_type() == at::kLong && cat_rows.scalar_type() == at::kLong &&
                  item_rows.numel() == cat_rows.numel(),
              "pair_gather: int64 row indices of the same length");
}

}  // namespace

at::Tensor pair_gather(const at::Tensor& items_in, const at::Tensor& cats_in,
                       const at::Tensor& item_rows_in, const at::Tensor& cat_rows_in) {
  check(items_in, cats_in, item_rows_in, cat_rows_in);
  const auto items = items_in.contiguous(), cats = cats_in.contiguous();
  const auto item_rows = item_rows_in.contiguous(), cat_rows = cat_rows_in.contiguous();
  const int64_t m = item_rows.numel(), d = items.size(1);
  const int64_t n_items = items.size(0), n_cats = cats.size(0);
  auto out = at::empty({m, 2 * d}, items.options());
  const int64_t* ir = item_rows.data_ptr<int64_t>();
  const int64_t* cr = cat_rows.data_ptr<int64_t>();
  for (int64_t k = 0; k < m; ++k) {
    TORCH_CHECK(ir[k] >= 0 && ir[k] < n_items && cr[k] >= 0 && cr[k] < n_cats,
                "pair_gather: row index out of range");
  }
  AT_DISPATCH_FLOATING_TYPES(items.scalar_type(), "pair_gather", [&] {
    const scalar_t* iw = items.data_ptr<scalar_t>();
    const scalar_t* cw = cats.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, m, 2048, [&](int64_t lo, int64_t hi) {
      for (int64_t k = lo; k < hi; ++k) {
        std::copy(iw + ir[k] * d, iw + (ir[k] + 1) * d, o + k * 2 * d);
        std::copy(cw + cr[k] * d, cw + (cr[k] + 1) * d, o + k * 2 * d + d);
      }
    });
  });
  return out;
}

std::vector<at::Tensor> pair_gather_backward(const at::Tensor& grad_in,
                                             const at::Tensor& item_rows_in,
                                             const at::Tensor& cat_rows_in, int64_t n_items,
                                             int64_t n_cats) {
  const auto grad = grad_in.contiguous();
  const auto item_rows = item_rows_in.contiguous(), cat_rows = cat_rows_in.contiguous();
  const int64_t m = item_rows.numel(), d = grad.size(1) / 2;
  auto d_items = at::zeros({n_items, d}, grad.options());
  auto d_cats = at::zeros({n_cats, d}, grad.options());
  const int64_t* ir = item_rows.data_ptr<int64_t>();
  const int64_t* cr = cat_rows.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "pair_gather_backward", [&] {
    const scalar_t* g = grad.data_ptr<scalar_t>();
    scalar_t* di = d_items.data_ptr<scalar_t>();
    scalar_t* dc = d_cats.data_ptr<scalar_t>();
    for (int64_t k = 0; k < m; ++k) {
      const scalar_t* gk = g + k * 2 * d;
      scalar_t* ti = di + ir[k] * d;
      scalar_t* tc = dc + cr[k] * d;
      for (int64_t j = 0; j < d; ++j) {
        ti[j] += gk[j];
        tc[j] += gk[d + j];
      }
    }
    std::fill(di, di + d, scalar_t(0));  // row 0: padding never trains
    std::fill(dc, dc + d, scalar_t(0));
  });
  return {d_items, d_cats};
}

// The bank's row of every id through its dense table (int32, entry 0 padding, the last entry
// OOV): ids below 0 read entry 0, ids past the table its last entry; then, with probability
// oov_p, a real id (> 0) is sent to ``oov_row`` (OOV dropout, drawn from the shared hash).
// One pass where ATen took a clamp, a gather, a cast and, for OOV dropout, torch.rand over
// every id (~0.17 ms for a DIN batch's 13k ids) and three element-wise ops.
at::Tensor dense_rows(const at::Tensor& ids_in, const at::Tensor& table_in, double oov_p,
                      int64_t oov_row) {
  TORCH_CHECK(ids_in.scalar_type() == at::kLong && table_in.scalar_type() == at::kInt &&
                  table_in.dim() == 1 && table_in.numel() > 0,
              "dense_rows: int64 ids and a non-empty int32 table");
  TORCH_CHECK(oov_p >= 0.0 && oov_p < 1.0, "dense_rows: 0 <= oov_p < 1");
  TORCH_CHECK(ids_in.numel() < (int64_t(1) << 32), "dense_rows: at most 2^32 ids");
  const auto ids = ids_in.contiguous();
  const auto table = table_in.contiguous();
  auto out = at::empty(ids.sizes(), ids.options());
  const int64_t* id = ids.data_ptr<int64_t>();
  const int32_t* tab = table.data_ptr<int32_t>();
  int64_t* rows = out.data_ptr<int64_t>();
  const int64_t top = table.numel() - 1;
  const HashDraws draws(oov_p);
  at::parallel_for(0, ids.numel(), 16384, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const int64_t v = id[i];
      int64_t r = tab[v < 0 ? 0 : (v > top ? top : v)];
      if (draws.cut > 0 && v > 0 && draws.hit(static_cast<uint32_t>(i))) {
        r = oov_row;
      }
      rows[i] = r;
    }
  });
  return out;
}
