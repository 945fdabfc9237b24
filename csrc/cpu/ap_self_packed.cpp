// CPU self retrieval from the packed upper block rows of S = D D^T (packed_upper.h): half a GEMM,
// no mirrored copy, and about B^2 / 2 values kept for backward instead of B^2.
//
// Forward: for each query row, the histogram of all its items by vector passes over the positions of its
// scores (those in earlier block rows read through a transposed tile in cache, S_jr = S_rj, then its
// own packed row), and its positives' histogram from its class's list. Backward: dD = H D with
// H = G + G^T, G = diag(g) U, from H's tiles on and above the diagonal only (symmetric_product.h),
// read straight from the packed rows: U_ij and U_ji are the same entry of rows i's and j's derivative
// tables (S_ij = S_ji and relevance is symmetric), so each score is read once and neither U nor H is
// ever written out whole.
//
// Every row is owned by one task and accumulated in a fixed order, so the forward does not depend on
// the thread count; the backward's GEMMs are MKL's (see symmetric_product.h).
#include "ap_self_packed.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "../ap_math.h"
#include "../packed_upper.h"
#include "lanes.h"
#include "symmetric_product.h"
#include "transpose8.h"

namespace apl {
namespace {

using lanes::kLanes;
using lanes::Lanes;
using lanes::load_lanes;

constexpr int64_t kTile = kPackedRows;

// out[c * kTile + j] = S_{j0 + j, c0 + c} for the rows j of block row J < R and the columns c of
// block row R: a transposed copy that turns the columns of the earlier block rows into rows, 8 x 8
// blocks at a time through registers (transpose8.h), the edges entry by entry.
template <typename T>
__attribute__((always_inline)) inline void transposed_tile_body(const T* p, const PackedUpper& L, int64_t J,
                                                                int64_t R, T* out) {
  const int64_t j0 = L.first_row(J), c0 = L.first_row(R);
  transpose8::copy_transposed(p + L.index(J, j0, c0), L.width(J), out, kTile, L.rows(J), L.rows(R));
}
APL_SIMD_CLONES void transposed_tile(const float* p, const PackedUpper& L, int64_t J, int64_t R, float* out) {
  transposed_tile_body(p, L, J, R, out);
}
APL_SIMD_CLONES void transposed_tile(const double* p, const PackedUpper& L, int64_t J, int64_t R, double* out) {
  transposed_tile_body(p, L, J, R, out);
}

// Where a score falls, t = (hi - clamp(s)) / Delta in [0, M - 1], computed exactly as locate_into
// does (in T).
template <typename T>
__attribute__((always_inline)) inline T position(T v, const Bins<T>& b) {
  T sc = v < b.lo ? b.lo : v;
  sc = sc > b.hi ? b.hi : sc;
  T x = (b.hi - sc) * b.inv_delta;
  x = (x >= T(0)) ? x : T(0);  // NaN lands at 0, as in locate_into
  return (x <= b.tmax) ? x : b.tmax;
}
// The positions of s[0..n) into t, and whether every score was finite. V: kLanes values of T
// (lanes.h), written out with vector operations (the compiler does not vectorise the scalar
// loop's selects).
template <typename T, typename V>
__attribute__((always_inline)) inline bool positions(const T* s, int64_t n, const Bins<T>& b, double* t) {
  constexpr T kMax = std::numeric_limits<T>::max();
  const V lo = V{} + b.lo, hi = V{} + b.hi, inv = V{} + b.inv_delta, tmax = V{} + b.tmax, big = V{} + kMax;
  decltype(V{} < V{}) bad = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    V v;
    std::memcpy(&v, s + j, sizeof v);
    bad |= ~((v <= big) & (v >= -big));  // NaN and +-Inf
    V sc = v < lo ? lo : v;
    sc = sc > hi ? hi : sc;
    V x = (hi - sc) * inv;
    x = x >= T(0) ? x : V{};
    x = x <= tmax ? x : tmax;
    const Lanes d = __builtin_convertvector(x, Lanes);
    std::memcpy(t + j, &d, sizeof d);
  }
  bool finite = true;
  for (int k = 0; k < kLanes; ++k) finite &= bad[k] == 0;
  for (; j < n; ++j) {
    finite &= std::abs(s[j]) <= kMax;
    t[j] = static_cast<double>(position(s[j], b));
  }
  return finite;
}
APL_SIMD_CLONES bool positions_of(const float* __restrict s, int64_t n, const Bins<float>& b, double* __restrict t) {
  return positions<float, lanes::Floats>(s, n, b, t);
}
APL_SIMD_CLONES bool positions_of(const double* __restrict s, int64_t n, const Bins<double>& b, double* __restrict t) {
  return positions<double, Lanes>(s, n, b, t);
}

// n[k] += sum_j max(0, 1 - |t_j - k|), k = 0..M-1: the histogram of all items, each item at
// t = m + f giving 1 - f to bin m and f to bin m + 1 (the triangular kernel; both weights exact in
// double, so an item on a bin centre adds exactly 1). No scatter into bins (a serial chain through
// memory when scores crowd into a few of them): each bin between the smallest and the largest t is
// one vector pass over the items.
APL_SIMD_CLONES void add_triangles(const double* t, int64_t n, int64_t M, double* hist) {
  if (n == 0) return;
  const int64_t body = n - n % kLanes;
  Lanes lo = Lanes{} + 1e300, hi = Lanes{} - 1e300;
  for (int64_t j = 0; j < body; j += kLanes) {
    const Lanes v = load_lanes(t + j, kLanes);
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
  }
  double tmin = 1e300, tmax = -1e300;
  for (int k = 0; k < kLanes; ++k) tmin = std::min(tmin, lo[k]), tmax = std::max(tmax, hi[k]);
  for (int64_t j = body; j < n; ++j) tmin = std::min(tmin, t[j]), tmax = std::max(tmax, t[j]);
  const int64_t k0 = static_cast<int64_t>(std::floor(tmin));
  const int64_t k1 = std::min<int64_t>(M - 1, static_cast<int64_t>(std::ceil(tmax)));
  for (int64_t k = k0; k <= k1; ++k) {  // no other bin is within 1 of an item
    const double c = static_cast<double>(k);
    Lanes acc = {};
    for (int64_t j = 0; j < body; j += kLanes) {
      Lanes d = load_lanes(t + j, kLanes) - c;
      d = d < 0.0 ? -d : d;
      d = 1.0 - d;
      acc += d > 0.0 ? d : Lanes{};
    }
    double sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (int64_t j = body; j < n; ++j) sum += std::max(0.0, 1.0 - std::abs(t[j] - c));
    hist[k] += sum;
  }
}

// Rows of each label in increasing order: the positives of a query without a pass over its row.
struct Classes {
  std::vector<int64_t> members, first, last;  // members[first[r] .. last[r]): the items labelled like r
  explicit Classes(const int64_t* lab, int64_t B) : members(B), first(B), last(B) {
    for (int64_t i = 0; i < B; ++i) members[i] = i;
    std::stable_sort(members.begin(), members.end(), [&](int64_t a, int64_t b) { return lab[a] < lab[b]; });
    for (int64_t k = 0; k < B;) {
      int64_t e = k;
      while (e < B && lab[members[e]] == lab[members[k]]) ++e;
      for (int64_t q = k; q < e; ++q) first[members[q]] = k, last[members[q]] = e;
      k = e;
    }
  }
};

template <typename T>
void forward_packed(const at::Tensor& P, const at::Tensor& labels, const BinParams& prm,
                    at::Tensor& ap, at::Tensor& npos, at::Tensor& coef, at::Tensor& nonfinite) {
  const int64_t B = labels.size(0), M = prm.M;
  const PackedUpper L{B};
  const auto b = make_bins<T>(prm.lo, prm.hi, static_cast<int>(M));
  const T* p = P.data_ptr<T>();
  const int64_t* lab = labels.data_ptr<int64_t>();
  T* ap_p = ap.data_ptr<T>();
  int64_t* npos_p = npos.data_ptr<int64_t>();
  double* coef_p = coef.data_ptr<double>();
  int32_t* bad = nonfinite.data_ptr<int32_t>();
  const Classes classes(lab, B);
  // S_rj for j in any block row: from row r's packed row when j >= r0, else from row j's.
  auto score = [&](int64_t r, int64_t r0, int64_t j) {
    return j >= r0 ? p[L.index(r0 / kTile, r, j)] : p[L.index(j / kTile, j, r)];
  };
  at::parallel_for(0, L.blocks(), 1, [&](int64_t R0, int64_t R1) {
    std::vector<double> all(kTile * M), pos(M), t(kTile);
    std::vector<T> tile(kTile * kTile);
    for (int64_t R = R0; R < R1; ++R) {
      const int64_t r0 = L.first_row(R), nr = L.rows(R);
      std::fill(all.begin(), all.end(), 0.0);
      bool finite = true;
      auto add = [&](int64_t c, const T* s, int64_t n) {  // items s[0..n) of row r0 + c
        for (int64_t k = 0; k < n; k += kTile) {
          const int64_t m = std::min(kTile, n - k);
          finite &= positions_of(s + k, m, b, t.data());
          add_triangles(t.data(), m, M, all.data() + c * M);
        }
      };
      for (int64_t J = 0; J < R; ++J) {  // items of the earlier block rows, from their columns
        transposed_tile(p, L, J, R, tile.data());
        for (int64_t c = 0; c < nr; ++c) add(c, tile.data() + c * kTile, L.rows(J));
      }
      for (int64_t c = 0; c < nr; ++c) {
        const int64_t r = r0 + c;
        const T* row = p + L.index(R, r, r0) - r0;  // row[j] = S_rj for j >= r0
        add(c, row + r0, r - r0);  // its own packed row, itself left out
        add(c, row + r + 1, B - r - 1);
        finite &= std::isfinite(static_cast<double>(row[r]));
        // Positives: the query's class, in increasing order.
        std::fill(pos.begin(), pos.end(), 0.0);
        for (int64_t q = classes.first[r]; q < classes.last[r]; ++q) {
          const int64_t j = classes.members[q];
          if (j == r) continue;
          const BinPos<T> w = locate(score(r, r0, j), b);
          pos[w.m] += static_cast<double>(T(1) - w.frac);
          pos[w.m + 1] += static_cast<double>(w.frac);
        }
        const int64_t count = classes.last[r] - classes.first[r] - 1;
        double* cp = coef_p + r * 2 * M;
        ap_p[r] = static_cast<T>(ap_and_coefficients(pos.data(), all.data() + c * M, static_cast<int>(M),
                                                     static_cast<double>(count),
                                                     prm.variant, cp, cp + M));
        npos_p[r] = count;
      }
      if (!finite) __atomic_store_n(bad, 1, __ATOMIC_RELAXED);  // any thread may set it
    }
  });
}

typedef int32_t Int32s __attribute__((vector_size(lanes::kLanes * sizeof(int32_t))));

// o[k] = H_rj = g_r U_rj + g_j U_jr for the scores s[k] = S_rj of one row r and n items j: U_rj and
// U_jr are the same entry e of rows r's and j's derivative tables (tr, and tj + k * E), since
// S_jr = S_rj and relevance is symmetric; e = m (a negative), M - 1 + m (a positive) or the zero
// entry 2 (M - 1) where the score has no gradient, located exactly as locate_into does.
template <typename T, typename V>
__attribute__((always_inline)) inline void h_row_body(const T* __restrict s, int64_t n, const Bins<T>& b,
                                                      const int64_t* __restrict lab, int64_t lr, T gr,
                                                      const T* __restrict tr, const T* __restrict gj,
                                                      const T* __restrict tj, int64_t E, T* __restrict o) {
  const int32_t m1 = b.M - 1, zero = 2 * m1;
  int32_t e[kTile];  // n <= kTile
  // The table entries, with vector operations (as positions(); the same arithmetic as locate_into).
  const V lo = V{} + b.lo, hi = V{} + b.hi, inv = V{} + b.inv_delta, tmax = V{} + b.tmax;
  const lanes::Ints lrv = lanes::Ints{} + lr;
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes) {
    V v;
    std::memcpy(&v, s + k, sizeof v);
    const auto inside = (v > lo) & (v < hi);
    V sc = v < lo ? lo : v;
    sc = sc > hi ? hi : sc;
    V t = (hi - sc) * inv;
    const auto t_ok = (t >= T(0)) & (t <= tmax);
    t = t >= T(0) ? t : V{};
    t = t <= tmax ? t : tmax;
    Int32s m = __builtin_convertvector(t, Int32s);
    m = m < m1 - 1 ? m : Int32s{} + (m1 - 1);
    lanes::Ints lk;
    std::memcpy(&lk, lab + k, sizeof lk);
    const Int32s pos = __builtin_convertvector(lk == lrv, Int32s);  // -1 where a positive
    const Int32s grad = __builtin_convertvector(inside & t_ok, Int32s);
    const Int32s ek = grad != 0 ? m + (pos & m1) : Int32s{} + zero;
    std::memcpy(e + k, &ek, sizeof ek);
  }
  for (; k < n; ++k) {
    int m;
    T frac;
    bool grad;
    locate_into(s[k], b, m, frac, grad);
    e[k] = grad ? m + (lab[k] == lr ? m1 : 0) : zero;
  }
  for (k = 0; k < n; ++k) o[k] = gr * tr[e[k]] + gj[k] * tj[k * E + e[k]];
}
APL_SIMD_CLONES void h_row(const float* s, int64_t n, const Bins<float>& b, const int64_t* lab, int64_t lr,
                           float gr, const float* tr, const float* gj, const float* tj, int64_t E, float* o) {
  h_row_body<float, lanes::Floats>(s, n, b, lab, lr, gr, tr, gj, tj, E, o);
}
APL_SIMD_CLONES void h_row(const double* s, int64_t n, const Bins<double>& b, const int64_t* lab, int64_t lr,
                           double gr, const double* tr, const double* gj, const double* tj, int64_t E, double* o) {
  h_row_body<double, Lanes>(s, n, b, lab, lr, gr, tr, gj, tj, E, o);
}

template <typename T>
void backward_packed(const at::Tensor& P, const at::Tensor& labels, const at::Tensor& coef,
                     const at::Tensor& g, const BinParams& prm, const at::Tensor& D, at::Tensor& dD) {
  const int64_t B = labels.size(0), M = prm.M, E = 2 * M - 1;  // E: table entries per row
  const PackedUpper L{B};
  const auto b = make_bins<T>(prm.lo, prm.hi, static_cast<int>(M));
  const double inv_delta = static_cast<double>(M - 1) / (prm.hi - prm.lo);
  const int64_t zero = 2 * (M - 1);  // the tables' zero entry
  const T* p = P.data_ptr<T>();
  const int64_t* lab = labels.data_ptr<int64_t>();
  const T* gs = g.data_ptr<T>();
  // Row i's table: U_ij = table[i][k] with k = m (negative), M - 1 + m (positive) or `zero` (no
  // gradient), the same entries the unit-gradient row kernel writes.
  std::vector<T> tables(B * E);
  at::parallel_for(0, B, 256, [&](int64_t i0, int64_t i1) {
    std::vector<double> slope(2 * (M - 1));
    for (int64_t i = i0; i < i1; ++i) {
      const double* cp = coef.data_ptr<double>() + i * 2 * M;
      slopes(cp, cp + M, static_cast<int>(M), 1.0, inv_delta, slope.data(), slope.data() + (M - 1));
      T* t = tables.data() + i * E;
      for (int64_t k = 0; k < zero; ++k) t[k] = static_cast<T>(slope[k]);
      t[zero] = T(0);
    }
  });
  // H's tiles on and above the diagonal, from the packed rows (their columns j >= r0 are all there),
  // each score read once.
  static_assert(kSymmetricRows == kTile, "H's block rows are the packed block rows");
  const at::Tensor Dd = D.detach().contiguous();  // the GEMMs need no autograd
  symmetric_tiles_product(Dd, dD, [&](int64_t r0, int64_t R, int64_t a, int64_t w, T* h) {
    const int64_t I = r0 / kTile;
    at::parallel_for(0, R, 16, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t r = r0 + c;
        T* o = h + c * kSymmetricCols;
        for (int64_t j = a; j < a + w; j += kTile) {  // h_row takes at most kTile items
          h_row(p + L.index(I, r, j), std::min(kTile, a + w - j), b, lab + j, lab[r], gs[r], tables.data() + r * E,
                gs + j, tables.data() + j * E, E, o + (j - a));
        }
        if (r >= a && r < a + w) o[r - a] = T(0);  // the query is not in its own list
      }
    });
  });
}

}  // namespace

void self_packed_forward(const at::Tensor& P, const at::Tensor& labels, const BinParams& prm,
                         at::Tensor& ap, at::Tensor& npos, at::Tensor& coef, at::Tensor& nonfinite) {
  AT_DISPATCH_FLOATING_TYPES(P.scalar_type(), "apl_self_packed_forward", [&] {
    forward_packed<scalar_t>(P, labels, prm, ap, npos, coef, nonfinite);
  });
}

void self_packed_backward(const at::Tensor& P, const at::Tensor& labels, const at::Tensor& coef,
                          const at::Tensor& g, const BinParams& prm, const at::Tensor& D, at::Tensor& dD) {
  AT_DISPATCH_FLOATING_TYPES(P.scalar_type(), "apl_self_packed_backward", [&] {
    backward_packed<scalar_t>(P, labels, coef, g, prm, D, dD);
  });
}

}  // namespace apl
