// The CPU implementation of symmetrize.h.
#include "symmetrize.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace apl {
namespace {

// Rows [r0, r0 + R) of H = diag(g) U + U^T diag(g), tile by tile: U's rows r0 + i are read
// contiguously, and the mirrored entries U_{j, r0+i} come from rows j through a transposing tile
// buffer. (The AP loss leaves the query out of its own list: U, and so H, then have a zero diagonal.)
template <typename T>
void symmetrize_rows(const at::Tensor& U, const at::Tensor& g, int64_t r0, at::Tensor& H) {
  constexpr int64_t kTile = 64;
  const int64_t B = U.size(1), R = H.size(0);
  const T* u = U.data_ptr<T>();
  const T* gs = g.data_ptr<T>();
  T* h = H.data_ptr<T>();
  const int64_t ti = (R + kTile - 1) / kTile, tj = (B + kTile - 1) / kTile;
  at::parallel_for(0, ti * tj, 1, [&](int64_t t0, int64_t t1) {
    std::vector<T> buf(kTile * kTile);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i0 = (t / tj) * kTile, i1 = std::min(R, i0 + kTile);
      const int64_t j0 = (t % tj) * kTile, j1 = std::min(B, j0 + kTile);
      for (int64_t j = j0; j < j1; ++j) {  // buf[j - j0][i - i0] = g_j U_{j, r0+i}
        const T* src = u + j * B + r0;
        const T gj = gs[j];
        T* dst = buf.data() + (j - j0) * kTile;
        for (int64_t i = i0; i < i1; ++i) dst[i - i0] = gj * src[i];
      }
      for (int64_t i = i0; i < i1; ++i) {
        const T gi = gs[r0 + i];
        const T* row = u + (r0 + i) * B;
        T* out = h + i * B;
        for (int64_t j = j0; j < j1; ++j) out[j] = gi * row[j] + buf[(j - j0) * kTile + (i - i0)];
      }
    }
  });
}

}  // namespace

void symmetrize_unit(const at::Tensor& U, const at::Tensor& g, int64_t r0, at::Tensor& H) {
  TORCH_CHECK(U.is_contiguous() && g.is_contiguous() && H.is_contiguous() &&
                  g.scalar_type() == U.scalar_type() && H.scalar_type() == U.scalar_type() &&
                  H.size(1) == U.size(1) && r0 + H.size(0) <= U.size(0),
              "apl: symmetrize_unit got inconsistent tensors");
  AT_DISPATCH_FLOATING_TYPES(U.scalar_type(), "apl_symmetrize_unit",
                             [&] { symmetrize_rows<scalar_t>(U, g, r0, H); });
}

}  // namespace apl
