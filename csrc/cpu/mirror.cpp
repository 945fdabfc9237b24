// The CPU implementation of mirror.h: cache-sized tiles, each read along its rows and written along
// the rows of its mirror tile through a small transposing buffer. A pure copy: the result does not
// depend on the thread count.
#include "mirror.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace apl {
namespace {

template <typename T>
void mirror_rows(at::Tensor& S) {
  constexpr int64_t kTile = 64;
  const int64_t B = S.size(0);
  T* s = S.data_ptr<T>();
  // Tile row I writes the tiles (J, I), J >= I, below the diagonal: no two threads write one tile.
  auto tile_row = [&](int64_t I, T* buf) {
    const int64_t i0 = I * kTile, i1 = std::min(B, i0 + kTile), ni = i1 - i0;
    for (int64_t j0 = i0; j0 < B; j0 += kTile) {
      const int64_t j1 = std::min(B, j0 + kTile), nj = j1 - j0;
      for (int64_t i = 0; i < ni; ++i) {
        const T* row = s + (i0 + i) * B + j0;
        for (int64_t j = 0; j < nj; ++j) buf[j * kTile + i] = row[j];
      }
      for (int64_t j = 0; j < nj; ++j) {
        T* row = s + (j0 + j) * B + i0;
        const T* src = buf + j * kTile;
        // On the diagonal tile only the entries below the diagonal are written.
        const int64_t n = j0 == i0 ? j : ni;
        for (int64_t i = 0; i < n; ++i) row[i] = src[i];
      }
    }
  };
  // Tile rows hold a decreasing triangle of work; pairing row I with row T-1-I balances threads.
  const int64_t tiles = (B + kTile - 1) / kTile;
  at::parallel_for(0, (tiles + 1) / 2, 1, [&](int64_t k0, int64_t k1) {
    std::vector<T> buf(kTile * kTile);
    for (int64_t k = k0; k < k1; ++k) {
      tile_row(k, buf.data());
      if (tiles - 1 - k != k) tile_row(tiles - 1 - k, buf.data());
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
