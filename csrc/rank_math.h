// The math of the rank surrogates shared by every compiled backend (see docs/rank_losses.md):
// Smooth-AP (Brown et al., ECCV 2020) and the Recall@k surrogate (Patel et al., CVPR 2022).
//
// Plain C++ with no torch header (the CUDA kernels include it too). Per query row, both losses are
// functions of two sums per positive i, over the row's ranked items j (j != i):
//   T_i  = sum_j        sigma((s_j - s_i) / tau)   (soft count of the items ranked above i)
//   TP_i = sum_{j in P} sigma((s_j - s_i) / tau)   (the same among the positives)
// The row kernels compute these sums; the functions here turn them into the query's value (its
// Smooth-AP or Recall@k) and the coefficients a_i = d value / d T_i, b_i = d value / d TP_i, from
// which the gradient with respect to every score of the row follows (docs/rank_losses.md):
//   d value / d s_m = sum_{i in P, i != m} g_mi (a_i + y_m b_i)
//                     - y_m (a_m sum_{j != m} g_jm + b_m sum_{j in P, j != m} g_jm),
//   g_mi = sigma'((s_m - s_i) / tau) / tau.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define APL_RANK_HD __host__ __device__ __forceinline__
#else
#define APL_RANK_HD inline
#endif

namespace apl {
namespace rank {

// Must match apl/ops/variants.py.
enum Kind : int64_t { kSmoothAP = 0, kRecallAtK = 1 };
// Where the query stands in its own ranking: left out (the papers), among the items and the
// positives (the Smooth-AP authors' code), among the items only (the Recall@k authors' code).
enum QueryMode : int64_t { kExcluded = 0, kItemAndPositive = 1, kItemOnly = 2 };

// sigma(x / t) of the logistic function, and its derivative with respect to x.
APL_RANK_HD double sigmoid(double x, double t) { return 1.0 / (1.0 + exp(-x / t)); }
APL_RANK_HD double sigmoid_slope(double x, double t) {
  const double s = sigmoid(x, t);
  return s * (1.0 - s) / t;
}

// Smooth-AP of one query from the sums of its npos positives; writes a (and b). The positives'
// count is the number of terms averaged (the query itself counts when it is one of them).
APL_RANK_HD double smooth_ap(const double* T, const double* TP, int64_t npos, double* a, double* b) {
  if (npos <= 0) return 0.0;
  const double inv = 1.0 / static_cast<double>(npos);
  double ap = 0.0;
  for (int64_t i = 0; i < npos; ++i) {
    const double rank_all = 1.0 + T[i], rank_pos = 1.0 + TP[i];
    ap += rank_pos / rank_all;
    a[i] = -inv * rank_pos / (rank_all * rank_all);
    b[i] = inv / rank_all;
  }
  return ap * inv;
}

// Recall@k surrogate of one query, averaged over the nk values of k:
//   value = (1/nk) sum_k min(sum_i sigma((k - r_i) / t_k), k) / min(k, npos),  r_i = 1 + T_i.
// Writes a (b is 0). `sums` is scratch of nk doubles. The min's derivative follows torch.minimum:
// the whole gradient below k, half of it at k, none above.
APL_RANK_HD double recall_at_k(const double* T, int64_t npos, const double* ks, const double* k_temps, int64_t nk,
                               double* sums, double* a) {
  if (npos <= 0) return 0.0;
  for (int64_t i = 0; i < npos; ++i) a[i] = 0.0;
  double value = 0.0;
  for (int64_t k = 0; k < nk; ++k) {
    double s = 0.0;
    for (int64_t i = 0; i < npos; ++i) s += sigmoid(ks[k] - (1.0 + T[i]), k_temps[k]);
    sums[k] = s;
    const double norm = ks[k] < static_cast<double>(npos) ? ks[k] : static_cast<double>(npos);
    value += (s < ks[k] ? s : ks[k]) / norm;
    const double pass = s < ks[k] ? 1.0 : (s == ks[k] ? 0.5 : 0.0);
    if (pass == 0.0) continue;
    // d/dT_i of sigma((k - 1 - T_i) / t) is -sigma'
    for (int64_t i = 0; i < npos; ++i) a[i] -= pass * sigmoid_slope(ks[k] - (1.0 + T[i]), k_temps[k]) / norm;
  }
  const double inv_nk = 1.0 / static_cast<double>(nk);
  for (int64_t i = 0; i < npos; ++i) a[i] *= inv_nk;
  return value * inv_nk;
}

}  // namespace rank
}  // namespace apl
