// The CPU implementation of symmetric_product.h.
#include "symmetric_product.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "lanes.h"
#include "transpose8.h"

namespace apl {
namespace {

constexpr int64_t kRows = kSymmetricRows;
constexpr int64_t kCols = kSymmetricCols;

// h[i * kCols + (j - a)] = H_{r0+i, j} = g_{r0+i} U_{r0+i, j} + g_j U_{j, r0+i} for i in [i0, i1),
// j in [j0, j1): U's rows r0 + i read along the row, the mirrored entries U_{j, r0+i} along rows j
// and transposed, 8 x 8 blocks at a time in registers (transpose8.h), the edges entry by entry.
template <typename T>
__attribute__((always_inline)) inline void h_tile(const T* u, const T* gs, int64_t B, int64_t r0, int64_t i0,
                                                  int64_t i1, int64_t j0, int64_t j1, int64_t a, T* h) {
  using namespace transpose8;
  for (int64_t ib = i0; ib < i1; ib += 8) {
    for (int64_t jb = j0; jb < j1; jb += 8) {
      if (ib + 8 <= i1 && jb + 8 <= j1) {
        typename Vec<T>::V r[8];
        for (int k = 0; k < 8; ++k) r[k] = load8(u + (jb + k) * B + r0 + ib) * gs[jb + k];
        transpose<T>(r);  // r[i][k] = g_{jb+k} U_{jb+k, r0+ib+i}
        for (int i = 0; i < 8; ++i) {
          const T gi = gs[r0 + ib + i];
          store8(h + (ib + i) * kCols + (jb - a), load8(u + (r0 + ib + i) * B + jb) * gi + r[i]);
        }
        continue;
      }
      for (int64_t i = ib; i < std::min(ib + 8, i1); ++i) {
        for (int64_t j = jb; j < std::min(jb + 8, j1); ++j) {
          h[i * kCols + (j - a)] = gs[r0 + i] * u[(r0 + i) * B + j] + gs[j] * u[j * B + r0 + i];
        }
      }
    }
  }
}

APL_SIMD_CLONES void h_tile_of(const float* u, const float* gs, int64_t B, int64_t r0, int64_t i0, int64_t i1,
                               int64_t j0, int64_t j1, int64_t a, float* h) {
  h_tile(u, gs, B, r0, i0, i1, j0, j1, a, h);
}
APL_SIMD_CLONES void h_tile_of(const double* u, const double* gs, int64_t B, int64_t r0, int64_t i0, int64_t i1,
                               int64_t j0, int64_t j1, int64_t a, double* h) {
  h_tile(u, gs, B, r0, i0, i1, j0, j1, a, h);
}

// Columns [a, a + w) of the R rows of H's block row starting at row r0, into h: tiles of 64 x 64
// in parallel.
template <typename T>
void build_tile(const T* u, const T* gs, int64_t B, int64_t r0, int64_t R, int64_t a, int64_t w, T* h) {
  constexpr int64_t kTile = 64;
  const int64_t ti = (R + kTile - 1) / kTile, tj = (w + kTile - 1) / kTile;
  at::parallel_for(0, ti * tj, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i0 = (t / tj) * kTile, j0 = a + (t % tj) * kTile;
      h_tile_of(u, gs, B, r0, i0, std::min(R, i0 + kTile), j0, std::min(a + w, j0 + kTile), a, h);
    }
  });
}

// Block rows one after the other, each from its diagonal on, a tile at a time; the tiles' GEMMs use
// all threads (a version that gave each block row to one task and built H whole read U twice and
// was slower by about a tenth of the backward at B = 4096). A GEMM split over threads may round by
// the thread count (MKL's does, for some shapes): the result is the same from run to run, and
// within rounding across thread counts.
template <typename T>
void product(const at::Tensor& D, at::Tensor& dD, SymmetricTile<T> fill) {
  TORCH_CHECK(D.is_contiguous() && dD.is_contiguous() && D.dim() == 2 && dD.sizes() == D.sizes() &&
                  D.scalar_type() == c10::CppTypeToScalarType<T>::value && dD.scalar_type() == D.scalar_type(),
              "apl: symmetric_tiles_product got inconsistent tensors");
  const int64_t B = D.size(0);
  std::vector<T> h(kRows * kCols);
  dD.zero_();
  for (int64_t r0 = 0; r0 < B; r0 += kRows) {
    const int64_t R = std::min(kRows, B - r0);
    auto rows = dD.narrow(0, r0, R);
    const auto Dr = D.narrow(0, r0, R);
    for (int64_t a = r0; a < B; a += kCols) {  // columns [a, a + w) of the block row, from its diagonal on
      const int64_t w = std::min(kCols, B - a);
      fill(r0, R, a, w, h.data());
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

void symmetric_tiles_product(const at::Tensor& D, at::Tensor& dD, SymmetricTile<float> fill) {
  product<float>(D, dD, fill);
}
void symmetric_tiles_product(const at::Tensor& D, at::Tensor& dD, SymmetricTile<double> fill) {
  product<double>(D, dD, fill);
}

void symmetric_product(const at::Tensor& U, const at::Tensor& g, const at::Tensor& D, at::Tensor& dD) {
  TORCH_CHECK(U.is_contiguous() && g.is_contiguous() && U.dim() == 2 && U.size(0) == U.size(1) &&
                  g.numel() == U.size(0) && D.dim() == 2 && D.size(0) == U.size(0) &&
                  g.scalar_type() == U.scalar_type() && D.scalar_type() == U.scalar_type(),
              "apl: symmetric_product got inconsistent tensors");
  AT_DISPATCH_FLOATING_TYPES(U.scalar_type(), "apl_symmetric_product", [&] {
    const scalar_t* u = U.data_ptr<scalar_t>();
    const scalar_t* gs = g.data_ptr<scalar_t>();
    const int64_t B = U.size(0);
    product<scalar_t>(D, dD, [&](int64_t r0, int64_t R, int64_t a, int64_t w, scalar_t* h) {
      build_tile(u, gs, B, r0, R, a, w, h);
    });
  });
}

}  // namespace apl
