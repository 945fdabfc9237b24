// One row of scores into the CPU rank kernel's double arrays (with its range and the query's
// class), and its derivatives back into the op's tensor (float or double), as vector loops compiled
// per instruction set (lanes.h). Written as scalar loops these moves took as long as the kernel's
// first pass over the pairs: the compiler did not vectorise the finite test, the range, the
// narrowing with its flush, or the float <-> double conversions. Torch-free.
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

// dst = src in double, and the smallest and largest entry except column `skip` (-1: none) in lo,
// hi (inf, -inf when there is none); false when an entry is NaN or Inf (v - v is 0 exactly when v
// is finite; lo and hi are then meaningless).
template <typename T>
__attribute__((always_inline)) inline bool widen(const T* src, int64_t n, int64_t skip, double* dst, double* lo,
                                                 double* hi) {
  constexpr double kInf = __builtin_inf();
  Ints ok = Ints{} == Ints{};
  Lanes low = Lanes{} + kInf, high = Lanes{} - kInf;
  const Ints lane = {0, 1, 2, 3, 4, 5, 6, 7};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    const Lanes v = load_widened(src + j);
    std::memcpy(dst + j, &v, sizeof v);
    ok &= (v - v) == 0.0;
    // the skipped column becomes +-inf by bit masks (a select on a combined condition is compiled
    // lane by lane, one on a plain comparison is a vector blend)
    const Ints keep = (lane + j) != skip;
    const Lanes up = (Lanes)(((Ints)v & keep) | ((Ints)(Lanes{} + kInf) & ~keep));
    const Lanes down = (Lanes)(((Ints)v & keep) | ((Ints)(Lanes{} - kInf) & ~keep));
    low = up < low ? up : low;
    high = down > high ? down : high;
  }
  bool finite = true;
  double l = kInf, h = -kInf;
  for (int k = 0; k < kLanes; ++k) {
    finite &= ok[k] != 0;
    l = low[k] < l ? low[k] : l, h = high[k] > h ? high[k] : h;
  }
  for (; j < n; ++j) {
    const double v = static_cast<double>(src[j]);
    dst[j] = v;
    finite &= std::isfinite(v);
    if (j != skip) l = v < l ? v : l, h = v > h ? v : h;
  }
  *lo = l, *hi = h;
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

APL_SIMD_CLONES inline bool widen_row(const float* src, int64_t n, int64_t skip, double* dst, double* lo,
                                      double* hi) {
  return widen(src, n, skip, dst, lo, hi);
}
APL_SIMD_CLONES inline bool widen_row(const double* src, int64_t n, int64_t skip, double* dst, double* lo,
                                      double* hi) {
  return widen(src, n, skip, dst, lo, hi);
}
APL_SIMD_CLONES inline void narrow_row(const double* src, int64_t n, double floor, float* dst) {
  narrow(src, n, floor, dst);
}
APL_SIMD_CLONES inline void narrow_row(const double* src, int64_t n, double floor, double* dst) {
  narrow(src, n, floor, dst);
}

// The columns whose label is `label` into pos (room for n); returns their count.
APL_SIMD_CLONES inline int64_t class_columns(const int64_t* labels, int64_t n, int64_t label, int64_t* pos) {
  int64_t j = 0, count = 0;
  for (; j + kLanes <= n; j += kLanes) {
    Ints l;
    std::memcpy(&l, labels + j, sizeof l);
    const Ints hit = l == label;
    if (!lanes::any_lane(hit)) continue;  // most blocks hold no positive
    for (int q = 0; q < kLanes; ++q) {
      if (hit[q] != 0) pos[count++] = j + q;
    }
  }
  for (; j < n; ++j) {
    if (labels[j] == label) pos[count++] = j;
  }
  return count;
}

}  // namespace row_io
}  // namespace apl
