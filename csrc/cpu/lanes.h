// Eight doubles as one value, and the few operations the CPU rank kernel's inner loops need on it
// (csrc/cpu/rank_cpu.cpp). Torch-free, so that tests/ops/test_lanes.py can compile it alone and check
// the accuracy of exp_lanes and reciprocal against long double.
//
// Lanes is a GCC/Clang vector extension type: one AVX-512 register, two AVX2 or four SSE2 ones.
// Loops over Lanes are compiled once per instruction set with APL_SIMD_CLONES (x86-64, GCC): the
// CPU picks its clone when the library loads, so a machine always runs the same code. The AVX-512
// clone contracts multiply-adds, so its last bits can differ from the others'.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace apl {
namespace lanes {

constexpr int kLanes = 8;
typedef double Lanes __attribute__((vector_size(kLanes * sizeof(double))));
typedef float Floats __attribute__((vector_size(kLanes * sizeof(float))));
typedef int64_t Ints __attribute__((vector_size(kLanes * sizeof(int64_t))));

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define APL_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define APL_SIMD_CLONES
#endif
// The lanes I of x (0 ... 7) and of y (8 ... 15) as one vector of x's type (Idx: the integer vector
// of the same shape), in either compiler's spelling.
template <typename V, typename Idx, int... I>
__attribute__((always_inline)) inline V pick(const V& x, const V& y) {
#if defined(__clang__)
  return __builtin_shufflevector(x, y, I...);
#else
  return __builtin_shuffle(x, y, Idx{I...});
#endif
}

// Whether any lane of a comparison's result is true: an OR across the lanes by three shuffles.
__attribute__((always_inline)) inline bool any_lane(const Ints& m) {
  Ints v = m | pick<Ints, Ints, 4, 5, 6, 7, 0, 1, 2, 3>(m, m);
  v |= pick<Ints, Ints, 2, 3, 0, 1, 6, 7, 4, 5>(v, v);
  v |= pick<Ints, Ints, 1, 0, 3, 2, 5, 4, 7, 6>(v, v);
  return v[0] != 0;
}

// Always inlined: a Lanes value passed or returned across a call has another ABI in each clone.
__attribute__((always_inline)) inline Lanes load_lanes(const double* x, int64_t n) {  // zeros after n < kLanes
  Lanes v;
  if (n >= kLanes) {
    std::memcpy(&v, x, sizeof v);
    return v;
  }
  double buf[kLanes] = {};
  std::copy(x, x + n, buf);
  std::memcpy(&v, buf, sizeof v);
  return v;
}
// The first n entries of v into x (all kLanes when n >= kLanes).
__attribute__((always_inline)) inline void store_lanes(double* x, const Lanes& v, int64_t n) {
  if (n >= kLanes) {
    std::memcpy(x, &v, sizeof v);
    return;
  }
  double buf[kLanes];
  std::memcpy(buf, &v, sizeof buf);
  std::copy(buf, buf + n, x);
}
// x[0, kLanes) += v, at any alignment (heap memory is not aligned to a Lanes).
__attribute__((always_inline)) inline void add_lanes(double* x, const Lanes& v) {
  Lanes t;
  std::memcpy(&t, x, sizeof t);
  t += v;
  std::memcpy(x, &t, sizeof t);
}
__attribute__((always_inline)) inline double lane_sum(const double* x) {
  Lanes v;
  std::memcpy(&v, x, sizeof v);
  return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}

// 1 / x for x >= 1 without a double division (x86 divides doubles at about 2 cycles an element at
// any vector width, and the pair loops did three a pair): the float reciprocal, then two Newton
// steps in double (relative error 2^-23, then 2^-46, then within 3 ulp). Where x is beyond float's
// range the float reciprocal is 0, and so is the result (for 1 / x < 3e-39: nothing in a sum of
// sigmoids bounded by N).
__attribute__((always_inline)) inline Lanes reciprocal(const Lanes& x) {
  Lanes r = __builtin_convertvector(1.0f / __builtin_convertvector(x, Floats), Lanes);
  r = r * (2.0 - x * r);
  return r * (2.0 - x * r);
}

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define APL_AVX512_RECIPROCAL 1
// reciprocal() on AVX-512 (callable only from code compiled for it): the hardware's 14-bit estimate
// (vrcp14pd), then two Newton steps in double (relative error 2^-28, then 2^-56: within 3 ulp). The
// float division above issues once per several cycles on x86 cores, and it bounded the kernel's
// first pass over the pairs. Where 1 / x is subnormal (x > 4e307) the estimate, and so the result,
// is 0.
__attribute__((target("avx512f"))) inline Lanes reciprocal_avx512(const Lanes& x) {
  typedef double V8 __attribute__((vector_size(64)));
  Lanes r = (Lanes)__builtin_ia32_rcp14pd512_mask((V8)x, V8{}, (unsigned char)0xFF);
  r = r * (2.0 - x * r);
  return r * (2.0 - x * r);
}
#endif

// e^x for x in [-708, 708] (normal results), within 2 ulp: x = n ln 2 + r with |r| <= ln 2 / 2
// (n by the 1.5 * 2^52 rounding trick, ln 2 split in two so that n ln2_hi is exact), e^r by its
// Taylor polynomial of degree 13 (remainder below 1e-17), and 2^n written into the exponent bits.
// libm's exp one value at a time was a tenth of the forward op.
__attribute__((always_inline)) inline Lanes exp_lanes(const Lanes& x) {
  constexpr double kLog2e = 1.4426950408889634, kLn2Hi = 6.93147180369123816490e-01,
                   kLn2Lo = 1.90821492927058770002e-10, kShift = 6755399441055744.0;
  const Lanes k = x * kLog2e + kShift;
  const Lanes n = k - kShift;
  const Lanes r = (x - n * kLn2Hi) - n * kLn2Lo;
  Lanes e = Lanes{} + 1.0 / 6227020800.0;  // 1 / 13!
  for (double c : {1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0, 1.0 / 362880.0, 1.0 / 40320.0,
                   1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0}) {
    e = e * r + c;
  }
  const Ints scale = ((Ints)k - (Ints)(Lanes{} + kShift) + 1023) << 52;
  return e * (Lanes)scale;
}

}  // namespace lanes
}  // namespace apl
