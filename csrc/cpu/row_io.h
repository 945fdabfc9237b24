// One row of scores into the CPU rank kernel's double arrays (and its range), and its derivatives back into the op's
// tensor (float or double), as vector loops compiled per instruction set (lanes.h). Written as
// scalar loops these moves took as long as the kernel's first pass over the pairs: the compiler did
// not vectorise the finite test, the narrowing with its flush, or the float <-> double conversions.
// Torch-free.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "lanes.h"

namespace apl {
namespace row_io {

using lanes::Floats;
using lanes::Ints;
using lanes::kLanes;
using lanes::Lanes;

template <typename T>
__attribute__((always_inline)) inline Lanes load_widened(const T* x) {
  if constexpr (sizeof(T) == sizeof(float)) {
    Floats f;
    std::memcpy(&f, x, sizeof f);
    return __builtin_convertvector(f, Lanes);
  } else {
    Lanes v;
    std::memcpy(&v, x, sizeof v);
    return v;
  }
}

// dst = src in double; false when an entry is NaN or Inf (v - v is 0 exactly when v is finite).
template <typename T>
__attribute__((always_inline)) inline bool widen(const T* src, int64_t n, double* dst) {
  Ints ok = Ints{} == Ints{};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    const Lanes v = load_widened(src + j);
    std::memcpy(dst + j, &v, sizeof v);
    ok &= (v - v) == 0.0;
  }
  bool finite = true;
  for (int l = 0; l < kLanes; ++l) finite &= ok[l] != 0;
  for (; j < n; ++j) {
    dst[j] = static_cast<double>(src[j]);
    finite &= std::isfinite(dst[j]);
  }
  return finite;
}

// dst = src in T, an entry below `floor` in magnitude stored as 0.
template <typename T>
__attribute__((always_inline)) inline void narrow(const double* src, int64_t n, double floor, T* dst) {
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    Lanes v;
    std::memcpy(&v, src + j, sizeof v);
    const Lanes magnitude = v < 0.0 ? -v : v;
    v = magnitude < floor ? Lanes{} : v;
    if constexpr (sizeof(T) == sizeof(float)) {
      const Floats f = __builtin_convertvector(v, Floats);
      std::memcpy(dst + j, &f, sizeof f);
    } else {
      std::memcpy(dst + j, &v, sizeof v);
    }
  }
  for (; j < n; ++j) dst[j] = std::fabs(src[j]) < floor ? T(0) : static_cast<T>(src[j]);
}

APL_SIMD_CLONES inline bool widen_row(const float* src, int64_t n, double* dst) { return widen(src, n, dst); }
APL_SIMD_CLONES inline bool widen_row(const double* src, int64_t n, double* dst) { return widen(src, n, dst); }
APL_SIMD_CLONES inline void narrow_row(const double* src, int64_t n, double floor, float* dst) {
  narrow(src, n, floor, dst);
}
APL_SIMD_CLONES inline void narrow_row(const double* src, int64_t n, double floor, double* dst) {
  narrow(src, n, floor, dst);
}

// The smallest and largest s_j over the items (w_j != 0); lo = inf, hi = -inf when there is none.
APL_SIMD_CLONES inline void item_range(const double* s, const double* w, int64_t n, double* lo, double* hi) {
  constexpr double kInf = __builtin_inf();
  Lanes low = Lanes{} + kInf, high = Lanes{} - kInf;
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    Lanes v, wj;
    std::memcpy(&v, s + j, sizeof v);
    std::memcpy(&wj, w + j, sizeof wj);
    // Columns left out become +-inf by bit masks: a select on a combined condition is compiled lane
    // by lane, one on a plain comparison is a vector blend.
    const Ints item = wj != 0.0;
    const Lanes up = (Lanes)(((Ints)v & item) | ((Ints)(Lanes{} + kInf) & ~item));
    const Lanes down = (Lanes)(((Ints)v & item) | ((Ints)(Lanes{} - kInf) & ~item));
    low = up < low ? up : low;
    high = down > high ? down : high;
  }
  double l = kInf, h = -kInf;
  for (int k = 0; k < kLanes; ++k) l = low[k] < l ? low[k] : l, h = high[k] > h ? high[k] : h;
  for (; j < n; ++j) {
    if (w[j] != 0.0) l = s[j] < l ? s[j] : l, h = s[j] > h ? s[j] : h;
  }
  *lo = l, *hi = h;
}

// w_j = 1 and p_j = [labels_j == label] for the n columns; returns the positives' columns in pos
// (room for n) and their count.
APL_SIMD_CLONES inline int64_t mark_class(const int64_t* labels, int64_t n, int64_t label, double* w, double* p,
                                          int64_t* pos) {
  const Ints one = (Ints)(Lanes{} + 1.0);
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    Ints l;
    std::memcpy(&l, labels + j, sizeof l);
    const Lanes pj = (Lanes)((l == label) & one), wj = Lanes{} + 1.0;
    std::memcpy(p + j, &pj, sizeof pj);
    std::memcpy(w + j, &wj, sizeof wj);
  }
  for (; j < n; ++j) w[j] = 1.0, p[j] = labels[j] == label ? 1.0 : 0.0;
  int64_t count = 0;
  for (j = 0; j < n; ++j) {
    if (labels[j] == label) pos[count++] = j;
  }
  return count;
}

}  // namespace row_io
}  // namespace apl
