// The CPU implementation of symmetric_product.h.
#include "symmetric_product.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace apl {
namespace {

constexpr int64_t kRows = 256;   // rows of a block row of H
constexpr int64_t kCols = 1024;  // columns of H built per pair of GEMMs: (kRows, kCols) stays in L2
constexpr int64_t kTile = 64;    // the transposing tiles

// h[i * kCols + (j - a)] = H_{r0+i, j} = g_{r0+i} U_{r0+i, j} + g_j U_{j, r0+i} for i < R, j in
// [a, a + w): U's rows r0 + i are read contiguously, the mirrored entries U_{j, r0+i} (the same
// rows' columns) through a transposing tile buffer.
template <typename T>
void build_tile(const T* u, const T* gs, int64_t B, int64_t r0, int64_t R, int64_t a, int64_t w, T* h) {
  const int64_t ti = (R + kTile - 1) / kTile, tj = (w + kTile - 1) / kTile;
  at::parallel_for(0, ti * tj, 1, [&](int64_t t0, int64_t t1) {
    std::vector<T> buf(kTile * kTile);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i0 = (t / tj) * kTile, i1 = std::min(R, i0 + kTile);
      const int64_t j0 = a + (t % tj) * kTile, j1 = std::min(a + w, j0 + kTile);
      for (int64_t j = j0; j < j1; ++j) {  // buf[j - j0][i - i0] = g_j U_{j, r0+i}
        const T* src = u + j * B + r0;
        const T gj = gs[j];
        T* dst = buf.data() + (j - j0) * kTile;
        for (int64_t i = i0; i < i1; ++i) dst[i - i0] = gj * src[i];
      }
      for (int64_t i = i0; i < i1; ++i) {
        const T gi = gs[r0 + i];
        const T* row = u + (r0 + i) * B;
        T* out = h + i * kCols - a;
        for (int64_t j = j0; j < j1; ++j) out[j] = gi * row[j] + buf[(j - j0) * kTile + (i - i0)];
      }
    }
  });
}

template <typename T>
void product(const at::Tensor& U, const at::Tensor& g, const at::Tensor& D, at::Tensor& dD) {
  const int64_t B = U.size(0);
  std::vector<T> h(kRows * kCols);
  dD.zero_();
  for (int64_t r0 = 0; r0 < B; r0 += kRows) {
    const int64_t R = std::min(kRows, B - r0);
    auto rows = dD.narrow(0, r0, R);
    const auto Dr = D.narrow(0, r0, R);
    for (int64_t a = r0; a < B; a += kCols) {  // columns [a, a + w) of the block row, from its diagonal on
      const int64_t w = std::min(kCols, B - a);
      build_tile(U.data_ptr<T>(), g.data_ptr<T>(), B, r0, R, a, w, h.data());
      const auto H = at::from_blob(h.data(), {R, w}, {kCols, 1}, D.options());
      rows.addmm_(H, D.narrow(0, a, w));  // rows r0 + i: sum_j H_ij d_j
      // rows j beyond the diagonal block: sum_i H_ij d_i (the diagonal block's pairs are all in the
      // product above)
      const int64_t j0 = std::max(a, r0 + R);
      if (j0 < a + w) dD.narrow(0, j0, a + w - j0).addmm_(H.narrow(1, j0 - a, a + w - j0).t(), Dr);
    }
  }
}

}  // namespace

void symmetric_product(const at::Tensor& U, const at::Tensor& g, const at::Tensor& D, at::Tensor& dD) {
  TORCH_CHECK(U.is_contiguous() && g.is_contiguous() && D.is_contiguous() && dD.is_contiguous() &&
                  U.dim() == 2 && U.size(0) == U.size(1) && g.numel() == U.size(0) && D.size(0) == U.size(0) &&
                  dD.sizes() == D.sizes() && g.scalar_type() == U.scalar_type() &&
                  D.scalar_type() == U.scalar_type() && dD.scalar_type() == U.scalar_type(),
              "apl: symmetric_product got inconsistent tensors");
  AT_DISPATCH_FLOATING_TYPES(U.scalar_type(), "apl_symmetric_product", [&] { product<scalar_t>(U, g, D, dD); });
}

}  // namespace apl
