// The quantized-AP math shared by every compiled backend (see docs/ap_q.md).
//
// Plain C++ with no torch header, so the CUDA kernels include it from .cu files that nvcc
// compiles without torch. Everything is per query row: locate a score in the bins, then turn
// the row's two histograms into its AP and the per-bin coefficients dAP/dp_k, dAP/dn_k.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define APL_HD __host__ __device__ __forceinline__
#else
#define APL_HD inline
#endif

namespace apl {

// Must match apl/ops/variants.py.
enum Variant : int64_t { kApQ = 0, kTieAware = 1, kTieAwareSimplified = 2 };

// Same constant as the paper's tie-aware code: keeps r_m and p_m / n_m finite when n_m -> 0.
constexpr double kTieEps = 1e-8;

// Where a score falls among the M bins. Bin centres b_m = hi - m * Delta (m = 0..M-1, descending),
// t = (hi - clamp(s)) / Delta in [0, M-1]; the score gives weight 1 - frac to bin m and frac to
// bin m + 1 (m <= M - 2). `grad` says whether dAP/ds is non-zero: only strictly inside (lo, hi).
template <typename T>
struct BinPos {
  int m;
  T frac;
  bool grad;
};

template <typename T>
struct Bins {
  T lo, hi, inv_delta, tmax;  // tmax = M - 1
  int M;
};

template <typename T>
APL_HD Bins<T> make_bins(double lo, double hi, int M) {
  Bins<T> b;
  b.lo = static_cast<T>(lo);
  b.hi = static_cast<T>(hi);
  // Computed in double then rounded once; the torch reference does the same (apl/ops/reference.py).
  b.inv_delta = static_cast<T>(static_cast<double>(M - 1) / (hi - lo));
  b.tmax = static_cast<T>(M - 1);
  b.M = M;
  return b;
}

// The exact arithmetic sequence matters: the reference computes t the same way, so both agree
// on which side of a bin centre a score lies even when it sits exactly on it.
// The core of `locate` with out-parameters and without branches or short-circuits: GCC
// vectorises a loop of these (it does not when a struct is returned).
template <typename T>
APL_HD void locate_into(T s, const Bins<T>& b, int& m_out, T& frac, bool& grad) {
  const bool inside = (s > b.lo) & (s < b.hi);
  T sc = s < b.lo ? b.lo : s;
  sc = sc > b.hi ? b.hi : sc;
  T t = (b.hi - sc) * b.inv_delta;
  const bool t_ok = (t >= T(0)) & (t <= b.tmax);
  // NaN lands in bin 0 instead of an out-of-range index; callers reject non-finite scores.
  t = (t >= T(0)) ? t : T(0);
  t = (t <= b.tmax) ? t : b.tmax;
  int m = static_cast<int>(t);  // t >= 0, so truncation is floor
  m = m < b.M - 2 ? m : b.M - 2;
  m_out = m;
  frac = t - static_cast<T>(m);
  grad = inside & t_ok;
}

template <typename T>
APL_HD BinPos<T> locate(T s, const Bins<T>& b) {
  BinPos<T> r;
  locate_into(s, b, r.m, r.frac, r.grad);
  return r;
}

// Per-bin term T_m of the AP sum and its partial derivatives with respect to the bin's own counts
// (p, n) and to the counts of all earlier bins (A = P_{m-1}, C = N_{m-1}).
struct Term {
  double value, d_p, d_n, d_A, d_C;
};

APL_HD Term term_ap_q(double p, double n, double A, double C) {
  const double P = A + p, N = C + n;
  Term t{0.0, 0.0, 0.0, 0.0, 0.0};
  if (N > 0.0) {  // N == 0 implies p == P == 0: the term is 0 (design doc)
    const double inv = 1.0 / N;
    t.value = p * P * inv;
    t.d_p = (P + p) * inv;
    t.d_n = -p * P * inv * inv;
    t.d_A = p * inv;
    t.d_C = t.d_n;
  }
  return t;
}

APL_HD Term term_tie_simplified(double p, double n, double A, double C) {
  const double U = 2.0 * A + p + 1.0;  // P_{m-1} + P_m + 1
  const double inv = 1.0 / (2.0 * C + n + 1.0);  // 1 / (N_{m-1} + N_m + 1), denominator >= 1
  Term t;
  t.value = p * U * inv;
  t.d_p = (U + p) * inv;
  t.d_n = -p * U * inv * inv;
  t.d_A = 2.0 * p * inv;
  t.d_C = 2.0 * t.d_n;
  return t;
}

// Full tie-aware AP (He et al. 2018) in binned form. The max(x - 1, 0) kinks take derivative 0
// at x == 1 (strict), which keeps dr/dp bounded when a bin holds exactly one positive.
APL_HD Term term_tie_full(double p, double n, double A, double C) {
  const double pm = p > 1.0 ? p - 1.0 : 0.0;
  const double nm = n > 1.0 ? n - 1.0 : 0.0;
  const double den_r = nm + kTieEps;
  const double r = pm / den_r;
  const double dr_dp = p > 1.0 ? 1.0 / den_r : 0.0;
  const double dr_dn = n > 1.0 ? -pm / (den_r * den_r) : 0.0;
  const double L = log((C + n + 1.0) / (C + 1.0));
  const double dL_dn = 1.0 / (C + n + 1.0);
  const double dL_dC = dL_dn - 1.0 / (C + 1.0);
  const double K = A + 1.0 - r * (C + 1.0);
  const double F = n * r + K * L;
  const double dF_dr = n - (C + 1.0) * L;
  const double inv = 1.0 / (n + kTieEps);
  const double q = p * inv;
  Term t;
  t.value = q * F;
  t.d_p = F * inv + q * dF_dr * dr_dp;
  t.d_n = q * (r + dF_dr * dr_dn + K * dL_dn) - q * F * inv;
  t.d_A = q * L;
  t.d_C = q * (-r * L + K * dL_dC);
  return t;
}

APL_HD Term term(int64_t variant, double p, double n, double A, double C) {
  switch (variant) {
    case kTieAware: return term_tie_full(p, n, A, C);
    case kTieAwareSimplified: return term_tie_simplified(p, n, A, C);
    default: return term_ap_q(p, n, A, C);
  }
}

// AP of one query from its histograms p[0..M) (positives) and n[0..M) (all items), and the
// coefficients dAP/dp_k -> cp[k], dAP/dn_k -> cn[k]. npos is the exact count of positives.
// cp and cn double as scratch for the prefix sums: walking the bins from the last to the first,
// P_{m-1} (= cp[m-1]) is still unread when bin m is overwritten. No other memory is needed.
APL_HD double ap_and_coefficients(const double* p, const double* n, int M, double npos,
                                  int64_t variant, double* cp, double* cn) {
  if (!(npos > 0.0)) {
    for (int k = 0; k < M; ++k) cp[k] = cn[k] = 0.0;
    return 0.0;
  }
  double P = 0.0, N = 0.0;
  for (int k = 0; k < M; ++k) {
    P += p[k];
    N += n[k];
    cp[k] = P;
    cn[k] = N;
  }
  const double inv_npos = 1.0 / npos;
  double ap = 0.0, suffix_A = 0.0, suffix_C = 0.0;
  for (int m = M - 1; m >= 0; --m) {
    const double A = m > 0 ? cp[m - 1] : 0.0;
    const double C = m > 0 ? cn[m - 1] : 0.0;
    const Term t = term(variant, p[m], n[m], A, C);
    ap += t.value;
    cp[m] = (t.d_p + suffix_A) * inv_npos;
    cn[m] = (t.d_n + suffix_C) * inv_npos;
    suffix_A += t.d_A;
    suffix_C += t.d_C;
  }
  return ap * inv_npos;
}

// dL/ds for a score in [b_{m+1}, b_m] is grad_ap * (a_m - a_{m+1}) / Delta with
// a_k = y * cp[k] + cn[k]. This precomputes it per (relevance, m) for one row:
// slope[0][m] for negatives, slope[1][m] for positives, m = 0..M-2.
APL_HD void slopes(const double* cp, const double* cn, int M, double grad_ap, double inv_delta,
                   double* slope_neg, double* slope_pos) {
  const double g = grad_ap * inv_delta;
  for (int m = 0; m + 1 < M; ++m) {
    const double dn = cn[m] - cn[m + 1];
    slope_neg[m] = g * dn;
    slope_pos[m] = g * (dn + cp[m] - cp[m + 1]);
  }
}

}  // namespace apl
