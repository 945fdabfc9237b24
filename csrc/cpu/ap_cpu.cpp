// CPU row kernels: one fused pass per query row that bins its scores into the two histograms,
// turns them into AP and per-bin coefficients and (unit-gradient strategy) overwrites the row with
// dAP/dS while it is in cache; the backward passes that write dL/dS or H = G + G^T. Parallel over
// rows with ATen's parallel_for; nothing of size B x N x M, and no B x N label matrix.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../ap_math.h"
#include "../ap_ops.h"
#include "../device_ops.h"
#include "ap_self_packed.h"
#include "mirror.h"

namespace apl {
namespace {

// Relevance of item j for one query row, from integer labels or a bool mask.
struct LabelRow {
  const int64_t* x_labels;
  int64_t label;
  bool operator()(int64_t j) const { return x_labels[j] == label; }
};
struct MaskRow {
  const bool* row;
  bool operator()(int64_t j) const { return row[j]; }
};

// Independent accumulator lanes per row. Scores of a batch crowd into a few bins, so a single
// histogram turns `n[m] += w` into a serial chain through memory; four lanes (items j, j+1, j+2,
// j+3) run in parallel and are summed in a fixed order, which keeps results deterministic.
constexpr int kLanes = 4;
// Items per block: bin positions are computed for a block first (a loop the compiler vectorises),
// then scattered into the histograms.
constexpr int64_t kBlock = 256;

// Bin positions of scores s[0..n) (vectorised).
template <typename T>
void locate_block(const T* __restrict s, int64_t n, const Bins<T>& bins, int32_t* __restrict bin,
                  T* __restrict frac, int32_t* __restrict grad) {
  const Bins<T> b = bins;  // a local copy: the outputs cannot alias it
  for (int64_t k = 0; k < n; ++k) {
    int m;
    T f;
    bool g;
    locate_into(s[k], b, m, f, g);
    bin[k] = m;
    frac[k] = f;
    grad[k] = g;
  }
}

// Accumulate one row's histograms over items [j0, j1) into the lanes: lane l holds p at
// hist + 2*M*l and n right after it. Returns whether every score was finite: a per-element test
// folded into the same pass without a branch (a row sum would overflow for finite float64 scores
// such as two of 1e308, and raise where nothing is wrong).
//
// With `idx` (unit-gradient strategy), also records for every item the entry of the row's
// derivative table it will read in the second pass: m for a negative, M - 1 + m for a positive,
// 2 * (M - 1) (a zero) where the score has no gradient.
template <typename T, typename Rel>
bool accumulate(const T* s, int64_t j0, int64_t j1, const Rel& rel, const Bins<T>& b,
                  int64_t M, double* hist, int64_t& npos, int32_t* idx) {
  constexpr T kMax = std::numeric_limits<T>::max();
  bool finite[kLanes] = {true, true, true, true};
  int64_t count[kLanes] = {0, 0, 0, 0};
  int32_t bin[kBlock];
  T frac[kBlock];
  int32_t grad[kBlock];
  const int32_t m1 = static_cast<int32_t>(M - 1);
  for (int64_t c0 = j0; c0 < j1; c0 += kBlock) {
    const int64_t n_items = std::min(kBlock, j1 - c0);
    locate_block(s + c0, n_items, b, bin, frac, grad);
    auto add = [&](int lane, int64_t k) {
      const int64_t j = c0 + k;
      finite[lane] &= std::abs(s[j]) <= kMax;  // false for NaN and +-Inf
      const int32_t m = bin[k];
      const T w1 = frac[k], w0 = T(1) - w1;
      double* p = hist + 2 * M * lane;
      double* n = p + M;
      n[m] += w0;
      n[m + 1] += w1;
      const bool y = rel(j);
      if (y) {
        p[m] += w0;
        p[m + 1] += w1;
        ++count[lane];
      }
      if (idx != nullptr) idx[j] = grad[k] ? m + (y ? m1 : 0) : 2 * m1;
    };
    int64_t k = 0;
    for (; k + kLanes <= n_items; k += kLanes) {
      for (int l = 0; l < kLanes; ++l) add(l, k + l);
    }
    for (; k < n_items; ++k) add(0, k);
  }
  npos += count[0] + count[1] + count[2] + count[3];
  return finite[0] & finite[1] & finite[2] & finite[3];
}

// Folds lanes 1.. into lane 0 (fixed order).
inline void reduce_lanes(double* hist, int64_t M) {
  for (int l = 1; l < kLanes; ++l) {
    const double* src = hist + 2 * M * l;
    for (int64_t k = 0; k < 2 * M; ++k) hist[k] += src[k];
  }
}

// Fill one row of dL/dS over items [j0, j1) from the row's slope tables.
template <typename T, typename Rel>
void gradient(const T* s, int64_t j0, int64_t j1, const Rel& rel, const Bins<T>& b,
              const double* slope_neg, const double* slope_pos, T* g) {
  int32_t bin[kBlock];
  T frac[kBlock];
  int32_t grad[kBlock];
  for (int64_t c0 = j0; c0 < j1; c0 += kBlock) {
    const int64_t n_items = std::min(kBlock, j1 - c0);
    locate_block(s + c0, n_items, b, bin, frac, grad);
    for (int64_t k = 0; k < n_items; ++k) {
      const double v = rel(c0 + k) ? slope_pos[bin[k]] : slope_neg[bin[k]];
      g[c0 + k] = grad[k] ? static_cast<T>(v) : T(0);
    }
  }
}

// Rows per parallel task: about 32k score elements keeps the scheduling overhead negligible.
inline int64_t row_grain(int64_t N) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(N, 1)); }

// One row at a time: histograms (pass 1), AP and coefficients; with `unit` (which may alias S),
// pass 2 writes U_ij = dAP_i / dS_ij from a 2M - 1 entry table while the row is still in cache.
template <typename T, typename MakeRel>
void forward_rows(const at::Tensor& S, int64_t self_offset, const BinParams& prm,
                  const MakeRel& make_rel, at::Tensor& ap, at::Tensor& npos, at::Tensor& coef,
                  at::Tensor& nonfinite, T* unit = nullptr) {
  const int64_t R = S.size(0), N = S.size(1), M = prm.M;
  const auto b = make_bins<T>(prm.lo, prm.hi, static_cast<int>(M));
  const double inv_delta = static_cast<double>(M - 1) / (prm.hi - prm.lo);
  const int32_t no_grad = static_cast<int32_t>(2 * (M - 1));  // the table's zero entry
  const T* s = S.data_ptr<T>();
  T* ap_p = ap.data_ptr<T>();
  int64_t* npos_p = npos.data_ptr<int64_t>();
  double* coef_p = coef.data_ptr<double>();
  int32_t* bad = nonfinite.data_ptr<int32_t>();
  at::parallel_for(0, R, row_grain(N), [&](int64_t r0, int64_t r1) {
    std::vector<double> hist(kLanes * 2 * M), slope(2 * (M - 1));
    std::vector<int32_t> idx_buf(unit != nullptr ? N : 0);
    std::vector<T> table(2 * M - 1);
    int32_t* idx = unit != nullptr ? idx_buf.data() : nullptr;
    for (int64_t r = r0; r < r1; ++r) {
      std::fill(hist.begin(), hist.end(), 0.0);
      const T* row = s + r * N;
      const auto rel = make_rel(r);
      int64_t count = 0;
      bool finite;
      const int64_t self = self_offset >= 0 ? self_offset + r : -1;
      if (self >= 0 && self < N) {  // leave the query itself out, without a branch per element
        finite = accumulate(row, 0, self, rel, b, M, hist.data(), count, idx);
        finite &= accumulate(row, self + 1, N, rel, b, M, hist.data(), count, idx);
        finite &= std::isfinite(static_cast<double>(row[self]));
        if (idx != nullptr) idx[self] = no_grad;
      } else {
        finite = accumulate(row, 0, N, rel, b, M, hist.data(), count, idx);
      }
      if (!finite) __atomic_store_n(bad, 1, __ATOMIC_RELAXED);  // any thread may set it
      reduce_lanes(hist.data(), M);
      double* cp = coef_p + r * 2 * M;
      ap_p[r] = static_cast<T>(ap_and_coefficients(hist.data(), hist.data() + M,
                                                   static_cast<int>(M), static_cast<double>(count),
                                                   prm.variant, cp, cp + M));
      npos_p[r] = count;
      if (unit != nullptr) {
        slopes(cp, cp + M, static_cast<int>(M), 1.0, inv_delta, slope.data(), slope.data() + (M - 1));
        for (int64_t k = 0; k < no_grad; ++k) table[k] = static_cast<T>(slope[k]);
        table[no_grad] = T(0);
        T* u = unit + r * N;
        for (int64_t j = 0; j < N; ++j) u[j] = table[idx[j]];
      }
    }
  });
}

template <typename T, typename MakeRel>
void backward_rows(const at::Tensor& S, int64_t self_offset, const at::Tensor& slopes,
                   const BinParams& prm, const MakeRel& make_rel, at::Tensor& G) {
  const int64_t R = S.size(0), N = S.size(1), M = prm.M;
  const auto b = make_bins<T>(prm.lo, prm.hi, static_cast<int>(M));
  const T* s = S.data_ptr<T>();
  T* g = G.data_ptr<T>();
  const double* sl = slopes.data_ptr<double>();
  at::parallel_for(0, R, row_grain(N), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const double* neg = sl + r * 2 * (M - 1);
      const double* pos = neg + (M - 1);
      const auto rel = make_rel(r);
      const int64_t self = self_offset >= 0 ? self_offset + r : -1;
      if (self >= 0 && self < N) {
        gradient(s + r * N, 0, self, rel, b, neg, pos, g + r * N);
        g[r * N + self] = T(0);
        gradient(s + r * N, self + 1, N, rel, b, neg, pos, g + r * N);
      } else {
        gradient(s + r * N, 0, N, rel, b, neg, pos, g + r * N);
      }
    }
  });
}

void forward_labels(const at::Tensor& S, const at::Tensor& q_labels, const at::Tensor& x_labels,
                    int64_t self_offset, const BinParams& prm, at::Tensor& ap, at::Tensor& npos,
                    at::Tensor& coef, at::Tensor& nonfinite) {
  const int64_t* ql = q_labels.data_ptr<int64_t>();
  const int64_t* xl = x_labels.data_ptr<int64_t>();
  auto make_rel = [&](int64_t r) { return LabelRow{xl, ql[r]}; };
  AT_DISPATCH_FLOATING_TYPES(S.scalar_type(), "apl_forward_labels", [&] {
    forward_rows<scalar_t>(S, self_offset, prm, make_rel, ap, npos, coef, nonfinite);
  });
}

void forward_labels_unit(const at::Tensor& S, const at::Tensor& q_labels,
                         const at::Tensor& x_labels, int64_t self_offset, const BinParams& prm,
                         at::Tensor& ap, at::Tensor& npos, at::Tensor& coef,
                         at::Tensor& nonfinite, at::Tensor& U) {
  TORCH_CHECK(U.sizes() == S.sizes() && U.is_contiguous() && U.scalar_type() == S.scalar_type(),
              "apl: U must be a contiguous tensor like the scores");
  const int64_t* ql = q_labels.data_ptr<int64_t>();
  const int64_t* xl = x_labels.data_ptr<int64_t>();
  auto make_rel = [&](int64_t r) { return LabelRow{xl, ql[r]}; };
  AT_DISPATCH_FLOATING_TYPES(S.scalar_type(), "apl_forward_labels_unit", [&] {
    forward_rows<scalar_t>(S, self_offset, prm, make_rel, ap, npos, coef, nonfinite,
                           U.data_ptr<scalar_t>());
  });
}

void forward_mask(const at::Tensor& S, const at::Tensor& relevance, const BinParams& prm,
                  at::Tensor& ap, at::Tensor& npos, at::Tensor& coef, at::Tensor& nonfinite) {
  const bool* rel = relevance.data_ptr<bool>();
  const int64_t N = S.size(1);
  auto make_rel = [&](int64_t r) { return MaskRow{rel + r * N}; };
  AT_DISPATCH_FLOATING_TYPES(S.scalar_type(), "apl_forward_mask", [&] {
    forward_rows<scalar_t>(S, -1, prm, make_rel, ap, npos, coef, nonfinite);
  });
}

void backward_labels(const at::Tensor& S, const at::Tensor& q_labels, const at::Tensor& x_labels,
                     int64_t self_offset, const at::Tensor& slopes, const BinParams& prm,
                     at::Tensor& G) {
  const int64_t* ql = q_labels.data_ptr<int64_t>();
  const int64_t* xl = x_labels.data_ptr<int64_t>();
  auto make_rel = [&](int64_t r) { return LabelRow{xl, ql[r]}; };
  AT_DISPATCH_FLOATING_TYPES(S.scalar_type(), "apl_backward_labels", [&] {
    backward_rows<scalar_t>(S, self_offset, slopes, prm, make_rel, G);
  });
}

void backward_mask(const at::Tensor& S, const at::Tensor& relevance, const at::Tensor& slopes,
                   const BinParams& prm, at::Tensor& G) {
  const bool* rel = relevance.data_ptr<bool>();
  const int64_t N = S.size(1);
  auto make_rel = [&](int64_t r) { return MaskRow{rel + r * N}; };
  AT_DISPATCH_FLOATING_TYPES(S.scalar_type(), "apl_backward_mask", [&] {
    backward_rows<scalar_t>(S, -1, slopes, prm, make_rel, G);
  });
}

// Scores strategy (APL_SCORES_STRATEGY=1; what CUDA does today):
// H = G + G^T for the square self-retrieval score matrix, tile by tile. For tile (I, J), I <= J,
// A[i][j] = g(i, j) comes from rows i of S and Bt[j][i] = g(j, i) from rows j, both read
// contiguously into two cache-resident buffers; H_IJ and its mirror H_JI are then written row by
// row. S is read twice and H written once.
template <typename T>
void symmetric_rows(const at::Tensor& S, const at::Tensor& labels, const at::Tensor& slopes,
                    const BinParams& prm, at::Tensor& H) {
  constexpr int64_t kTile = 64;
  const int64_t B = S.size(0), M = prm.M;
  const auto b = make_bins<T>(prm.lo, prm.hi, static_cast<int>(M));
  const T* s = S.data_ptr<T>();
  T* h = H.data_ptr<T>();
  const int64_t* lab = labels.data_ptr<int64_t>();
  const double* sl = slopes.data_ptr<double>();
  // out[j - j0] = dL/dS_ij for query i and items [j0, j1).
  auto g_row = [&](int64_t i, int64_t j0, int64_t j1, double* out) {
    const double* neg = sl + i * 2 * (M - 1);
    const double* pos = neg + (M - 1);
    const T* row = s + i * B;
    const int64_t li = lab[i];
    for (int64_t j = j0; j < j1; ++j) {
      const BinPos<T> q = locate(row[j], b);
      const double v = lab[j] == li ? pos[q.m] : neg[q.m];
      out[j - j0] = q.grad ? v : 0.0;
    }
  };
  auto tile_row = [&](int64_t I, double* A, double* Bt) {
    const int64_t i0 = I * kTile, i1 = std::min(B, i0 + kTile), ni = i1 - i0;
    for (int64_t j0 = i0; j0 < B; j0 += kTile) {
      const int64_t j1 = std::min(B, j0 + kTile), nj = j1 - j0;
      for (int64_t i = i0; i < i1; ++i) g_row(i, j0, j1, A + (i - i0) * kTile);
      for (int64_t j = j0; j < j1; ++j) g_row(j, i0, i1, Bt + (j - j0) * kTile);
      for (int64_t i = 0; i < ni; ++i) {
        T* out = h + (i0 + i) * B + j0;
        for (int64_t j = 0; j < nj; ++j) out[j] = static_cast<T>(A[i * kTile + j] + Bt[j * kTile + i]);
      }
      if (j0 != i0) {
        for (int64_t j = 0; j < nj; ++j) {
          T* out = h + (j0 + j) * B + i0;
          for (int64_t i = 0; i < ni; ++i) out[i] = static_cast<T>(A[i * kTile + j] + Bt[j * kTile + i]);
        }
      }
    }
    for (int64_t i = i0; i < i1; ++i) h[i * B + i] = T(0);  // the query is not in its own list
  };
  // Tile rows hold a decreasing triangle of work; pairing row I with row T-1-I balances threads.
  const int64_t tiles = (B + kTile - 1) / kTile;
  at::parallel_for(0, (tiles + 1) / 2, 1, [&](int64_t k0, int64_t k1) {
    std::vector<double> buf(2 * kTile * kTile);
    for (int64_t k = k0; k < k1; ++k) {
      tile_row(k, buf.data(), buf.data() + kTile * kTile);
      if (tiles - 1 - k != k) tile_row(tiles - 1 - k, buf.data(), buf.data() + kTile * kTile);
    }
  });
}

void backward_self_symmetric(const at::Tensor& S, const at::Tensor& labels,
                             const at::Tensor& slopes, const BinParams& prm, at::Tensor& H) {
  AT_DISPATCH_FLOATING_TYPES(S.scalar_type(), "apl_backward_symmetric", [&] {
    symmetric_rows<scalar_t>(S, labels, slopes, prm, H);
  });
}

bool always_sync() { return true; }

const RowKernels kCpuKernels{forward_labels,       forward_mask,       backward_labels,
                             backward_mask,        backward_self_symmetric, always_sync,
                             forward_labels_unit,  INT64_MAX,          INT64_MAX,
                             mirror_upper,         self_packed_forward, self_packed_backward};

}  // namespace

TORCH_LIBRARY_IMPL(apl, CPU, m) { DeviceOps<kCpuKernels>::register_all(m); }

}  // namespace apl
