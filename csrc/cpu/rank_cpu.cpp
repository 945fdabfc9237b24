// CPU row kernel of the rank surrogates (Smooth-AP, Recall@k): one pass per query row that, while
// the row is in cache, computes for every positive i the sigmoid sums over the row (rank_math.h),
// the query's value, and overwrites the row with d value / d s. O(P x N) per row (P positives),
// O(N) memory per thread; parallel over rows.
//
// The pairwise sigmoids without an exp per pair: with E_j = exp((s_j - c) / tau) for one shift c
// per row, sigma((s_j - s_i) / tau) = E_j / (E_j + E_i) and its slope E_i E_j / (E_i + E_j)^2 / tau:
// one exp per item and a division per pair (about 4x faster than an exp per pair). It needs the
// row's scores within 700 tau of each other (exp in double); otherwise (raw dot products, tiny
// temperatures) the row takes the exp-per-pair path. Sums and coefficients are in double.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../rank_device_ops.h"
#include "../rank_math.h"
#include "../rank_ops.h"
#include "symmetrize.h"

namespace apl {
namespace {

// Largest spread of a row's scores, in temperatures, for the shared-exp path (exp(-700) is far
// from double's underflow at -745).
constexpr double kMaxSpread = 700.0;

// One query row in double: items (w = 1, or 0 for the query's own column when it is left out),
// positives (p = 1), the shared exponentials E and the gradient accumulator.
struct Row {
  std::vector<double> s, w, p, E, grad;
  std::vector<int64_t> pos;
  std::vector<double> T, TP, a, b, G, GP, sums;
  void resize(int64_t n, int64_t nk) {
    s.resize(n), w.resize(n), p.resize(n), E.resize(n), grad.resize(n);
    sums.resize(std::max<int64_t>(nk, 1));
  }
};

// sigma((s_j - s_i) / tau) and its slope for one pair, on either path.
struct Pair {
  bool shared;
  double tau;
  double sig(const Row& r, int64_t j, int64_t i) const {
    return shared ? r.E[j] / (r.E[j] + r.E[i]) : 1.0 / (1.0 + std::exp((r.s[i] - r.s[j]) / tau));
  }
  double slope(const Row& r, int64_t j, int64_t i) const {
    if (shared) {
      const double d = r.E[j] + r.E[i];
      return r.E[j] * r.E[i] / (d * d) / tau;
    }
    const double q = 1.0 / (1.0 + std::exp((r.s[i] - r.s[j]) / tau));
    return q * (1.0 - q) / tau;
  }
};

// Sums over the items for every positive (pass 1), the value and coefficients, then the gradient
// (pass 2). Returns the value; r.grad holds d value / d s_j.
double row_value_and_gradient(Row& r, int64_t n, const RankParams& prm) {
  const int64_t P = static_cast<int64_t>(r.pos.size());
  r.T.assign(P, 0.0), r.TP.assign(P, 0.0), r.a.assign(P, 0.0), r.b.assign(P, 0.0);
  r.G.assign(P, 0.0), r.GP.assign(P, 0.0);
  std::fill(r.grad.begin(), r.grad.begin() + n, 0.0);
  if (P == 0) return 0.0;
  double hi = -std::numeric_limits<double>::infinity(), lo = std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < n; ++j) {
    if (r.w[j] != 0.0) hi = std::max(hi, r.s[j]), lo = std::min(lo, r.s[j]);
  }
  const double tau = prm.temperature;
  const Pair pair{(hi - lo) / tau <= kMaxSpread, tau};
  if (pair.shared) {
    for (int64_t j = 0; j < n; ++j) r.E[j] = std::exp((r.s[j] - hi) / tau);
  }
  const double* w = r.w.data();
  const double* p = r.p.data();
  for (int64_t k = 0; k < P; ++k) {  // pass 1: T_i, TP_i (the j = i term, 1/2, is taken out after)
    const int64_t i = r.pos[k];
    double t = 0.0, tp = 0.0;
    if (pair.shared) {
      const double* E = r.E.data();
      const double Ei = E[i];
      for (int64_t j = 0; j < n; ++j) {
        const double q = E[j] / (E[j] + Ei);
        t += w[j] * q;
        tp += p[j] * q;
      }
    } else {
      for (int64_t j = 0; j < n; ++j) {
        const double q = pair.sig(r, j, i);
        t += w[j] * q;
        tp += p[j] * q;
      }
    }
    r.T[k] = t - 0.5;
    r.TP[k] = tp - 0.5;
  }
  double value;
  if (prm.kind == rank::kRecallAtK) {
    value = rank::recall_at_k(r.T.data(), P, prm.ks.data(), prm.k_temperatures.data(),
                              static_cast<int64_t>(prm.ks.size()), r.sums.data(), r.a.data());
  } else {
    value = rank::smooth_ap(r.T.data(), r.TP.data(), P, r.a.data(), r.b.data());
  }
  double* grad = r.grad.data();
  for (int64_t k = 0; k < P; ++k) {  // pass 2: sum_i g_mi (a_i + p_m b_i), and G_i, GP_i
    const int64_t i = r.pos[k];
    const double ai = r.a[k], bi = r.b[k];
    double g_all = 0.0, g_pos = 0.0;
    if (pair.shared) {
      const double* E = r.E.data();
      const double Ei = E[i], inv_tau = 1.0 / tau;
      for (int64_t j = 0; j < n; ++j) {
        const double d = E[j] + Ei;
        const double g = w[j] * (E[j] * Ei / (d * d) * inv_tau);
        grad[j] += g * (ai + p[j] * bi);
        g_all += g;
        g_pos += p[j] * g;
      }
    } else {
      for (int64_t j = 0; j < n; ++j) {
        const double g = w[j] * pair.slope(r, j, i);
        grad[j] += g * (ai + p[j] * bi);
        g_all += g;
        g_pos += p[j] * g;
      }
    }
    const double self = 0.25 / tau;  // the j = i term, included above
    grad[i] -= self * (ai + bi);
    r.G[k] = g_all - self;
    r.GP[k] = g_pos - self;
  }
  for (int64_t k = 0; k < P; ++k) grad[r.pos[k]] -= r.a[k] * r.G[k] + r.b[k] * r.GP[k];
  return value;
}

// Rows per parallel task: about 32k score elements (the work per element is P times that of AP).
inline int64_t row_grain(int64_t N) { return std::max<int64_t>(1, 8192 / std::max<int64_t>(N, 1)); }

template <typename T>
void forward_rows(const at::Tensor& S, const at::Tensor& q_labels, const at::Tensor& x_labels, int64_t self_offset,
                  const RankParams& prm, at::Tensor& value, at::Tensor& npos, at::Tensor& nonfinite, at::Tensor& U) {
  const int64_t R = S.size(0), N = S.size(1);
  const T* s = S.data_ptr<T>();
  T* u = U.data_ptr<T>();
  T* val = value.data_ptr<T>();
  int64_t* np = npos.data_ptr<int64_t>();
  const int64_t* ql = q_labels.data_ptr<int64_t>();
  const int64_t* xl = x_labels.data_ptr<int64_t>();
  int32_t* bad = nonfinite.data_ptr<int32_t>();
  at::parallel_for(0, R, row_grain(N), [&](int64_t r0, int64_t r1) {
    Row row;
    row.resize(N, static_cast<int64_t>(prm.ks.size()));
    for (int64_t r = r0; r < r1; ++r) {
      const T* src = s + r * N;
      const int64_t self = self_offset >= 0 ? self_offset + r : -1;
      const int64_t label = ql[r];
      bool finite = true;
      row.pos.clear();
      for (int64_t j = 0; j < N; ++j) {
        const double v = static_cast<double>(src[j]);
        finite &= std::isfinite(v);
        row.s[j] = v;
        const bool is_self = j == self;
        const bool item = !(is_self && prm.query_mode == rank::kExcluded);
        const bool positive = item && xl[j] == label && !(is_self && prm.query_mode == rank::kItemOnly);
        row.w[j] = item ? 1.0 : 0.0;
        row.p[j] = positive ? 1.0 : 0.0;
        if (positive) row.pos.push_back(j);
      }
      if (!finite) {
        __atomic_store_n(bad, 1, __ATOMIC_RELAXED);  // any thread may set it
        for (int64_t j = 0; j < N; ++j) row.s[j] = std::isfinite(row.s[j]) ? row.s[j] : 0.0;
      }
      val[r] = static_cast<T>(row_value_and_gradient(row, N, prm));
      np[r] = static_cast<int64_t>(row.pos.size());
      T* dst = u + r * N;
      for (int64_t j = 0; j < N; ++j) dst[j] = static_cast<T>(row.grad[j]);
    }
  });
}

void forward(const at::Tensor& S, const at::Tensor& q_labels, const at::Tensor& x_labels, int64_t self_offset,
             const RankParams& prm, at::Tensor& value, at::Tensor& npos, at::Tensor& nonfinite, at::Tensor& U) {
  TORCH_CHECK(U.sizes() == S.sizes() && U.is_contiguous() && U.scalar_type() == S.scalar_type() && S.is_contiguous(),
              "apl: U must be a contiguous tensor like the scores");
  AT_DISPATCH_FLOATING_TYPES(S.scalar_type(), "apl_rank_forward", [&] {
    forward_rows<scalar_t>(S, q_labels, x_labels, self_offset, prm, value, npos, nonfinite, U);
  });
}

bool always_sync() { return true; }

const RankKernels kCpuRankKernels{forward, symmetrize_unit, always_sync};

}  // namespace

TORCH_LIBRARY_IMPL(apl, CPU, m) { RankDeviceOps<kCpuRankKernels>::register_all(m); }

}  // namespace apl
