// 8 x 8 blocks of floats or doubles transposed in registers: three rounds of two-source shuffles
// (each swaps the off-diagonal sub-blocks of size 4, 2, then 1) instead of 64 scalar moves, for the
// CPU's tiled transposes (the mirror, H's tiles, the rank and AP self-retrieval reads). Torch-free.
// Callers compile their loops per instruction set (APL_SIMD_CLONES) and inline these.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "lanes.h"

namespace apl {
namespace transpose8 {

typedef int32_t Int32s __attribute__((vector_size(8 * sizeof(int32_t))));

// The 8-lane vector of T and the index vector of its shuffles.
template <typename T>
struct Vec;
template <>
struct Vec<float> {
  using V = lanes::Floats;
  using I = Int32s;
};
template <>
struct Vec<double> {
  using V = lanes::Lanes;
  using I = lanes::Ints;
};

// Round b: rows i and i + b of every 2b-row group swap their off-diagonal b x b sub-blocks: row i
// keeps its lanes j with (j & b) == 0 and takes row i + b's lanes j - b, row i + b the converse.
template <typename T, int b>
__attribute__((always_inline)) inline void swap_round(typename Vec<T>::V* r) {
  using V = typename Vec<T>::V;
  using I = typename Vec<T>::I;
  for (int i = 0; i < 8; ++i) {
    if (i & b) continue;
    const V x = r[i], y = r[i + b];
    if constexpr (b == 4) {
      r[i] = lanes::pick<V, I, 0, 1, 2, 3, 8, 9, 10, 11>(x, y);
      r[i + b] = lanes::pick<V, I, 4, 5, 6, 7, 12, 13, 14, 15>(x, y);
    } else if constexpr (b == 2) {
      r[i] = lanes::pick<V, I, 0, 1, 8, 9, 4, 5, 12, 13>(x, y);
      r[i + b] = lanes::pick<V, I, 2, 3, 10, 11, 6, 7, 14, 15>(x, y);
    } else {
      static_assert(b == 1, "rounds of 4, 2, 1");
      r[i] = lanes::pick<V, I, 0, 8, 2, 10, 4, 12, 6, 14>(x, y);
      r[i + b] = lanes::pick<V, I, 1, 9, 3, 11, 5, 13, 7, 15>(x, y);
    }
  }
}

// r[i][j] <- r[j][i].
template <typename T>
__attribute__((always_inline)) inline void transpose(typename Vec<T>::V* r) {
  swap_round<T, 4>(r);
  swap_round<T, 2>(r);
  swap_round<T, 1>(r);
}

template <typename T>
__attribute__((always_inline)) inline typename Vec<T>::V load8(const T* x) {
  typename Vec<T>::V v;
  std::memcpy(&v, x, sizeof v);
  return v;
}

template <typename T>
__attribute__((always_inline)) inline void store8(T* x, const typename Vec<T>::V& v) {
  std::memcpy(x, &v, sizeof v);
}

// dst[c * ds + r] = src[r * ss + c] for r < rows, c < cols: whole 8 x 8 blocks through registers,
// the edges entry by entry.
template <typename T>
__attribute__((always_inline)) inline void copy_transposed(const T* src, int64_t ss, T* dst, int64_t ds, int64_t rows,
                                                           int64_t cols) {
  for (int64_t r = 0; r < rows; r += 8) {
    for (int64_t c = 0; c < cols; c += 8) {
      if (r + 8 <= rows && c + 8 <= cols) {
        typename Vec<T>::V v[8];
        for (int k = 0; k < 8; ++k) v[k] = load8(src + (r + k) * ss + c);
        transpose<T>(v);
        for (int k = 0; k < 8; ++k) store8(dst + (c + k) * ds + r, v[k]);
        continue;
      }
      for (int64_t i = r; i < std::min(r + 8, rows); ++i) {
        for (int64_t j = c; j < std::min(c + 8, cols); ++j) dst[j * ds + i] = src[i * ss + j];
      }
    }
  }
}

}  // namespace transpose8
}  // namespace apl
