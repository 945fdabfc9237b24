// The CPU implementation of mirror.h: cache-sized tiles, each read along its rows and written along
// the rows of its mirror tile, 8 x 8 blocks at a time through registers (transpose8.h). A pure
// copy: the result does not depend on the thread count.
#include "mirror.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>

#include "lanes.h"
#include "transpose8.h"

namespace apl {
namespace {

// The tile of S at rows [i0, i0 + ni), columns [j0, j0 + nj) (j0 >= i0) copied onto its mirror
// (rows j0..., columns i0...); on the diagonal tile (i0 == j0) only its entries above the diagonal,
// entry by entry.
template <typename T>
__attribute__((always_inline)) inline void mirror_tile(T* s, int64_t B, int64_t i0, int64_t ni, int64_t j0,
                                                       int64_t nj) {
  if (i0 != j0) return transpose8::copy_transposed(s + i0 * B + j0, B, s + j0 * B + i0, B, ni, nj);
  for (int64_t i = 0; i < ni; ++i) {
    for (int64_t j = i + 1; j < nj; ++j) s[(j0 + j) * B + i0 + i] = s[(i0 + i) * B + j0 + j];
  }
}

APL_SIMD_CLONES void mirror_tile_of(float* s, int64_t B, int64_t i0, int64_t ni, int64_t j0, int64_t nj) {
  mirror_tile(s, B, i0, ni, j0, nj);
}
APL_SIMD_CLONES void mirror_tile_of(double* s, int64_t B, int64_t i0, int64_t ni, int64_t j0, int64_t nj) {
  mirror_tile(s, B, i0, ni, j0, nj);
}

template <typename T>
void mirror_rows(at::Tensor& S) {
  constexpr int64_t kTile = 64;
  const int64_t B = S.size(0);
  T* s = S.data_ptr<T>();
  // Tile row I writes the tiles (J, I), J >= I, below the diagonal: no two threads write one tile.
  auto tile_row = [&](int64_t I) {
    const int64_t i0 = I * kTile, ni = std::min(B, i0 + kTile) - i0;
    for (int64_t j0 = i0; j0 < B; j0 += kTile) mirror_tile_of(s, B, i0, ni, j0, std::min(B, j0 + kTile) - j0);
  };
  // Tile rows hold a decreasing triangle of work; pairing row I with row T-1-I balances threads.
  const int64_t tiles = (B + kTile - 1) / kTile;
  at::parallel_for(0, (tiles + 1) / 2, 1, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      tile_row(k);
      if (tiles - 1 - k != k) tile_row(tiles - 1 - k);
    }
  });
}

}  // namespace

void mirror_upper(at::Tensor& S) {
  TORCH_CHECK(S.dim() == 2 && S.size(0) == S.size(1) && S.is_contiguous(),
              "apl: mirror_upper takes a contiguous square matrix");
  AT_DISPATCH_FLOATING_TYPES(S.scalar_type(), "apl_mirror_upper", [&] { mirror_rows<scalar_t>(S); });
}

}  // namespace apl
