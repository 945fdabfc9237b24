// CPU row kernel of the rank surrogates (Smooth-AP, Recall@k): one pass per query row that, while
// the row is in cache, computes for every positive i the sigmoid sums over the row (rank_math.h),
// the query's value, and overwrites the row with d value / d s. O(P x N) per row (P positives),
// O(N) memory per thread; parallel over rows.
//
// The pairwise sigmoids without an exp per pair: with E_j = exp((s_j - c) / tau) for one shift c
// per row, sigma((s_j - s_i) / tau) = E_j / (E_j + E_i) and its slope E_i E_j / (E_i + E_j)^2 / tau:
// one exp per item and a reciprocal per pair (about 4x faster than an exp per pair; rows with few
// positives run item-major, with the reciprocal from a hardware or float estimate and two Newton
// steps, below). It needs the row's scores within 700 tau of each other (exp in double); otherwise
// (raw dot products, tiny temperatures) the row takes the exp-per-pair path. E is 0 for a column
// left out of the ranking (it may lie far above the items), and the slope is formed as
// (E_j / d)(E_i / d) (the product E_j E_i underflows for scores far below the top). Sums and
// coefficients are in double.
//
// Saturation window: sigma(x) is 1 or 0, and its slope 0, to within e^-40 (4e-18) once |x| > 40
// temperatures. A row with many positives is therefore grouped by score once, into buckets 10 tau
// wide (a counting sort, O(N)); for each positive, the items of the buckets more than four above
// its own are counted (prefix counts), those more than four below skipped, and only the nine
// buckets around it are summed term by term: O(N + P x W) for W items in those buckets instead of
// O(P x N), and the result equals the all-pairs sums to within N e^-40 on each T_i (far below
// double's rounding of the sums). Rows with few positives, or whose scores all lie within one
// window, take the all-pairs loops (the grouping would cost more than it saves).
//
// Self retrieval (forward_upper) reads S's block rows on and above the diagonal only: no mirror is
// written, each row's left part is gathered from the columns (S_rc = S_cr).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "../gram.h"
#include "../rank_device_ops.h"
#include "../rank_math.h"
#include "../rank_ops.h"
#include "lanes.h"
#include "mirror.h"
#include "row_io.h"
#include "transpose8.h"
#include "symmetric_product.h"

namespace apl {
namespace {

using lanes::kLanes;
using lanes::Lanes;
using lanes::add_lanes;
using lanes::exp_lanes;
using lanes::lane_sum;
using lanes::load_lanes;
using lanes::reciprocal;
using lanes::store_lanes;

// Largest spread of a row's scores, in temperatures, for the shared-exp path (exp(-700) is far
// from double's underflow at -745).
constexpr double kMaxSpread = 700.0;
// Half-width of the saturation window, in temperatures, and the fewest positives for which a row
// is sorted to use it (below that the sort costs more than the pairs it saves).
constexpr double kWindow = 40.0;
// Buckets per window half-width: a positive's window is its bucket and kBuckets on either side,
// (2 kBuckets + 1) / kBuckets half-widths in all (finer buckets: closer to the exact window).
constexpr int64_t kBuckets = 4;
constexpr int64_t kWindowMinPositives = 16;
// Most positives for the item-major passes (P kLanes doubles of partial sums per pass, in L1).
constexpr int64_t kItemMajorPositives = 64;

// Whether rows use the saturation window: "auto" (the rule above), or forced either way by
// APL_RANK_WINDOW=always|never (tests compare the two paths; read once per call).
enum class WindowUse { kAuto, kAlways, kNever };
WindowUse window_use() {
  const char* v = std::getenv("APL_RANK_WINDOW");
  if (v == nullptr) return WindowUse::kAuto;
  const std::string mode(v);
  if (mode == "always") return WindowUse::kAlways;
  if (mode == "never") return WindowUse::kNever;
  TORCH_CHECK(mode == "auto" || mode.empty(), "APL_RANK_WINDOW must be auto, always or never, got '", mode, "'");
  return WindowUse::kAuto;
}

// One query row in double: items (w = 1, or 0 for the query's own column when it is left out),
// positives (pos; p = 1 for the paths that weigh by it), the shared exponentials E and the gradient
// accumulator. With the window, the items are permuted into ascending score order (`order`:
// original column of each) and the per-positive ranges [lo, hi) and counts above them are set.
struct Row {
  std::vector<double> s, w, p, E, grad, out;
  std::vector<int64_t> pos, columns, order, lo, hi, pos_prefix, bucket, start, next;
  std::vector<double> T, TP, a, b, G, GP, sums, above, above_pos, tmp, keys, R;
  std::vector<double> lanes;  // the item-major passes' per-positive partial sums, kLanes each
  std::vector<double> scaled_a, scaled_b;  // a / tau, b / tau for the item-major pass 2
  const double* result = nullptr;  // d value / d s per column, after row_value_and_gradient
  double low = 0.0, high = 0.0;    // the items' smallest and largest score, before it
  void resize(int64_t n, int64_t nk) {
    s.resize(n), w.resize(n), p.resize(n), E.resize(n), grad.resize(n), out.resize(n), tmp.resize(n);
    order.resize(n), columns.resize(n), pos_prefix.resize(n + 1);
    sums.resize(std::max<int64_t>(nk, 1));
  }
  // Groups the items (w != 0) by score into buckets of `width` (at least 1/kBuckets of the window's
  // half-width), lowest first, in a stable counting sort: s, E, p are permuted into that order (w
  // becomes all ones) and `order` holds each one's column. For every positive (pos: its new
  // position) the window is its bucket and kBuckets on either side, a contiguous range [lo, hi):
  // items in buckets further up are more than kBuckets x width above it (sigmoid 1: counted in
  // above, above_pos), items further down as far below (sigmoid 0: skipped). Returns the number
  // of items m.
  int64_t bucket_items(int64_t n, double low, double width, int64_t nb) {
    bucket.resize(n), start.assign(nb + 2, 0);
    for (int64_t j = 0; j < n; ++j) {
      if (w[j] == 0.0) continue;
      bucket[j] = std::min<int64_t>(nb - 1, static_cast<int64_t>((s[j] - low) / width));
      ++start[bucket[j] + 1];
    }
    for (int64_t b = 0; b < nb; ++b) start[b + 1] += start[b];
    const int64_t m = start[nb];
    next.assign(start.begin(), start.begin() + nb);
    for (int64_t j = 0; j < n; ++j) {
      if (w[j] != 0.0) order[next[bucket[j]]++] = j;
    }
    for (double* v : {s.data(), E.data(), p.data()}) {
      for (int64_t k = 0; k < m; ++k) tmp[k] = v[order[k]];
      std::copy(tmp.begin(), tmp.begin() + m, v);
    }
    std::fill(w.begin(), w.begin() + m, 1.0);
    pos.clear();
    pos_prefix[0] = 0;
    for (int64_t k = 0; k < m; ++k) {
      if (p[k] != 0.0) pos.push_back(k);
      pos_prefix[k + 1] = pos_prefix[k] + (p[k] != 0.0);
    }
    const int64_t P = static_cast<int64_t>(pos.size());
    lo.resize(P), hi.resize(P), above.resize(P), above_pos.resize(P);
    for (int64_t k = 0; k < P; ++k) {
      const int64_t b = bucket[order[pos[k]]];
      lo[k] = start[std::max<int64_t>(b - kBuckets, 0)];
      hi[k] = start[std::min<int64_t>(b + kBuckets + 1, nb)];
      above[k] = static_cast<double>(m - hi[k]);
      above_pos[k] = static_cast<double>(pos_prefix[m] - pos_prefix[hi[k]]);
    }
    return m;
  }
  // The whole row for every positive (no window).
  void full_windows(int64_t n) {
    const int64_t P = static_cast<int64_t>(pos.size());
    lo.assign(P, 0), hi.assign(P, n), above.assign(P, 0.0), above_pos.assign(P, 0.0);
  }
};

// The shared-exponential path without a window (every item against every positive), item-major:
// blocks of kLanes items (lanes.h), each block read once per pass and held in registers while it
// meets every positive, whose keys and coefficients stay in L1 (positive-major loops read the row's
// arrays once per positive). The per-positive sums are kLanes partial sums each, added up in a fixed
// order at the end, so the result does not depend on the thread count. What made it faster (B = 4096,
// classes of 8, a 2-core Xeon; docs/benchmarks.md): no double division per pair (a float reciprocal
// refined in double) and a vectorised exp for the keys; vectorising the loops alone changed nothing
// measurable.

// The shared path's keys of a row, one exponential per item: with x_j = (s_j - hi) / tau (clamped to
// [-708, 708]), either E_j = w_j exp(x_j) (the positive-major loops) or R_j = w_j exp(-x_j) = 1 / E_j
// (the item-major passes, which need E only at the positives). A column left out (w_j = 0) may lie
// anywhere: its exponent is clamped before the exp, then multiplied by 0.
APL_SIMD_CLONES
void shared_keys(const double* s, const double* w, int64_t n, double hi, double tau, double sign, double* out) {
  for (int64_t j = 0; j < n; j += kLanes) {
    const int64_t left = n - j;
    Lanes x = sign * (load_lanes(s + j, left) - hi) / tau;
    x = x < -708.0 ? Lanes{} - 708.0 : (x > 708.0 ? Lanes{} + 708.0 : x);
    store_lanes(out + j, load_lanes(w + j, left) * exp_lanes(x), left);
  }
}

// 1 / x for x >= 1 (lanes.h): the AVX-512 estimate refined when kRcp14, else from a float division.
template <bool kRcp14>
__attribute__((always_inline)) inline Lanes pair_reciprocal(const Lanes& x) {
#ifdef APL_AVX512_RECIPROCAL
  if constexpr (kRcp14) return lanes::reciprocal_avx512(x);
#endif
  return reciprocal(x);
}

// The positives go G <= kGroup at a time: their per-positive sums stay in registers while the
// row's items stream past (in memory they cost a load and a store per pair), and each pass reads
// the row's arrays once per group. The sums are kLanes partial sums each, in the items' order. The
// terms that only positives have (p_j = 1) are left to positive_pairs: P^2 pairs instead of a
// multiply-add on every one of the P x m pairs.
constexpr int64_t kGroup = 8;

// Pass 1 for G positives with keys Ek: acc[k] = sum_j w_j q_jk (kLanes partial sums) over the m
// items, with q_jk = E_j / (E_j + E_k) = 1 / (1 + E_k R_j), R_j = 1 / E_j (0 where w_j = 0: there
// q = 1 and w = 0; a padded item likewise adds 0). The whole blocks and the partial last one run
// in separate loops: with the partial loads in the loop, the compiler kept the sums in memory.
template <int G, bool kRcp14>
__attribute__((always_inline)) inline void sums_block(const Lanes& rj, const Lanes& wj, const double* Ek, Lanes* t) {
#pragma GCC unroll 8
  for (int k = 0; k < G; ++k) t[k] += wj * pair_reciprocal<kRcp14>(1.0 + Ek[k] * rj);
}

template <int G, bool kRcp14>
__attribute__((always_inline)) inline void sums_group(const double* R, const double* w, int64_t m, const double* Ek,
                                                      double* acc) {
  Lanes t[G] = {};
  int64_t j = 0;
  for (; j + kLanes <= m; j += kLanes) {
    sums_block<G, kRcp14>(load_lanes(R + j, kLanes), load_lanes(w + j, kLanes), Ek, t);
  }
  if (j < m) sums_block<G, kRcp14>(load_lanes(R + j, m - j), load_lanes(w + j, m - j), Ek, t);
  for (int k = 0; k < G; ++k) store_lanes(acc + k * kLanes, t[k], kLanes);
}

// Pass 2 for G positives: tau times the slopes, g_jk = q_jk (1 - q_jk) with 1 - q_jk = E_k R_j q_jk
// (no cancellation near q = 1); grad_j += sum_k g_jk a_k and acc[k] = sum_j g_jk. No w_j factor:
// R_j = 0 where w_j = 0, and so is g.
template <int G, bool kRcp14>
__attribute__((always_inline)) inline void slopes_block(const Lanes& rj, const double* Ek, const double* a, Lanes& gr,
                                                        Lanes* gs) {
#pragma GCC unroll 8
  for (int k = 0; k < G; ++k) {
    const Lanes ratio = Ek[k] * rj;
    const Lanes q = pair_reciprocal<kRcp14>(1.0 + ratio);
    const Lanes g = (q * q) * ratio;
    gr += g * a[k];
    gs[k] += g;
  }
}

// (the first group writes grad, the others add to it)
template <int G, bool kRcp14>
__attribute__((always_inline)) inline void slopes_group(const double* R, int64_t m, const double* Ek,
                                                        const double* a, bool first, double* grad, double* acc) {
  Lanes gs[G] = {};
  int64_t j = 0;
  for (; j + kLanes <= m; j += kLanes) {
    Lanes gr = first ? Lanes{} : load_lanes(grad + j, kLanes);
    slopes_block<G, kRcp14>(load_lanes(R + j, kLanes), Ek, a, gr, gs);
    store_lanes(grad + j, gr, kLanes);
  }
  if (j < m) {
    Lanes gr = first ? Lanes{} : load_lanes(grad + j, m - j);
    slopes_block<G, kRcp14>(load_lanes(R + j, m - j), Ek, a, gr, gs);
    store_lanes(grad + j, gr, m - j);
  }
  for (int k = 0; k < G; ++k) store_lanes(acc + k * kLanes, gs[k], kLanes);
}

// Runs Body::run<G> for each group of positives [k0, k0 + G).
template <typename Body>
__attribute__((always_inline)) inline void for_groups(int64_t P, const Body& body) {
  for (int64_t k0 = 0; k0 < P; k0 += kGroup) {
    switch (std::min(kGroup, P - k0)) {
      case 1: body.template run<1>(k0); break;
      case 2: body.template run<2>(k0); break;
      case 3: body.template run<3>(k0); break;
      case 4: body.template run<4>(k0); break;
      case 5: body.template run<5>(k0); break;
      case 6: body.template run<6>(k0); break;
      case 7: body.template run<7>(k0); break;
      default: body.template run<8>(k0); break;
    }
  }
}

// The item-major passes over one row: pass 1 (sums) or pass 2 (slopes), for all P positives.
struct ItemMajor {
  const double *R, *w;
  int64_t m;
  const double *Ek, *a;  // a: pass 2's coefficients
  double *grad, *acc;
};

template <bool kRcp14>
struct SumsBody {
  const ItemMajor& im;
  template <int G>
  __attribute__((always_inline)) void run(int64_t k0) const {
    sums_group<G, kRcp14>(im.R, im.w, im.m, im.Ek + k0, im.acc + k0 * kLanes);
  }
};

template <bool kRcp14>
struct SlopesBody {
  const ItemMajor& im;
  template <int G>
  __attribute__((always_inline)) void run(int64_t k0) const {
    slopes_group<G, kRcp14>(im.R, im.m, im.Ek + k0, im.a + k0, k0 == 0, im.grad, im.acc + k0 * kLanes);
  }
};

APL_SIMD_CLONES void item_major_sums_portable(const ItemMajor& im, int64_t P) { for_groups(P, SumsBody<false>{im}); }
APL_SIMD_CLONES void item_major_slopes_portable(const ItemMajor& im, int64_t P) {
  for_groups(P, SlopesBody<false>{im});
}
#ifdef APL_AVX512_RECIPROCAL
__attribute__((target("avx512f"))) void item_major_sums_avx512(const ItemMajor& im, int64_t P) {
  for_groups(P, SumsBody<true>{im});
}
__attribute__((target("avx512f"))) void item_major_slopes_avx512(const ItemMajor& im, int64_t P) {
  for_groups(P, SlopesBody<true>{im});
}
#endif

// Whether the item-major passes take the AVX-512 reciprocal: where the CPU has it, unless
// APL_RANK_RECIPROCAL=portable (tests run the other CPUs' path with it; read once per call).
bool hardware_reciprocal() {
#ifdef APL_AVX512_RECIPROCAL
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  const char* v = std::getenv("APL_RANK_RECIPROCAL");
  const std::string mode(v == nullptr ? "" : v);
  TORCH_CHECK(mode.empty() || mode == "auto" || mode == "portable",
              "APL_RANK_RECIPROCAL must be auto or portable, got '", mode, "'");
  return avx512 && mode != "portable";
#else
  return false;
#endif
}

void item_major_sums(const ItemMajor& im, int64_t P, bool rcp14) {
#ifdef APL_AVX512_RECIPROCAL
  if (rcp14) return item_major_sums_avx512(im, P);
#endif
  item_major_sums_portable(im, P);
}

void item_major_slopes(const ItemMajor& im, int64_t P, bool rcp14) {
#ifdef APL_AVX512_RECIPROCAL
  if (rcp14) return item_major_slopes_avx512(im, P);
#endif
  item_major_slopes_portable(im, P);
}

// The positives' own terms of both passes, over the P x P pairs of positives l (column pos[l], key
// Ek[l]) and k: q_lk = 1 / (1 + E_k / E_l) and tau times its slope g_lk = q_lk^2 E_k / E_l.
// TP[k] += sum_l q_lk, GP[k] += sum_l g_lk, and (pass 2, b given) grad[pos[l]] += sum_k g_lk b_k.
void positive_pairs(const int64_t* pos, const double* Ek, int64_t P, const double* b, double* TP, double* GP,
                    double* grad) {
  for (int64_t l = 0; l < P; ++l) {
    double extra = 0.0;
    for (int64_t k = 0; k < P; ++k) {
      const double ratio = Ek[k] / Ek[l], q = 1.0 / (1.0 + ratio);
      if (b == nullptr) {
        TP[k] += q;
      } else {
        const double g = (q * q) * ratio;
        GP[k] += g;
        extra += g * b[k];
      }
    }
    if (b != nullptr) grad[pos[l]] += extra;
  }
}

// sigma((s_j - s_i) / tau) and its slope for one pair, on either path.
struct Pair {
  bool shared;
  double tau;
  double sig(const Row& r, int64_t j, int64_t i) const {
    return shared ? r.E[j] / (r.E[j] + r.E[i]) : 1.0 / (1.0 + std::exp((r.s[i] - r.s[j]) / tau));
  }
  double slope(const Row& r, int64_t j, int64_t i) const {
    if (shared) {  // (E_j / d)(E_i / d): E_j E_i alone underflows for scores far below the row's top
      const double d = r.E[j] + r.E[i];
      return (r.E[j] / d) * (r.E[i] / d) / tau;
    }
    const double q = 1.0 / (1.0 + std::exp((r.s[i] - r.s[j]) / tau));
    return q * (1.0 - q) / tau;
  }
};

// Sums over the items for every positive (pass 1), the value and coefficients, then the gradient
// (pass 2). Returns the value; r.result points to d value / d s_j for the n columns.
double row_value_and_gradient(Row& r, int64_t n, const RankParams& prm, WindowUse use, bool rcp14) {
  const int64_t P = static_cast<int64_t>(r.pos.size());
  r.T.assign(P, 0.0), r.TP.assign(P, 0.0), r.a.assign(P, 0.0), r.b.assign(P, 0.0);
  r.G.assign(P, 0.0), r.GP.assign(P, 0.0);
  if (P == 0) {
    std::fill(r.grad.begin(), r.grad.begin() + n, 0.0);
    r.result = r.grad.data();
    return 0.0;
  }
  const double lo = r.low, hi = r.high;
  const double tau = prm.temperature;
  const Pair pair{(hi - lo) / tau <= kMaxSpread, tau};
  const bool window = use == WindowUse::kAlways ||
                      (use == WindowUse::kAuto && P >= kWindowMinPositives && (hi - lo) / tau > kWindow);
  const bool item_major = pair.shared && !window && P <= kItemMajorPositives;
  if (item_major) {  // R for every item, E at the positives (w = 1 there)
    r.R.resize(n);
    shared_keys(r.s.data(), r.w.data(), n, hi, tau, -1.0, r.R.data());
  } else if (pair.shared) {  // the query's own column, when left out, may lie far above the items: E = 0 there
    shared_keys(r.s.data(), r.w.data(), n, hi, tau, 1.0, r.E.data());
  }
  if (!item_major) {  // the positive-major loops and the window weigh the items by p
    std::fill(r.p.begin(), r.p.begin() + n, 0.0);
    for (const int64_t j : r.pos) r.p[j] = 1.0;
  }
  int64_t m = n;  // columns of the arrays below: all of them, or the sorted items
  if (window) {  // buckets a kBuckets-th of the window's half-width wide, at most 4 per item
    const double width = std::max(kWindow * tau / kBuckets, (hi - lo) / (4.0 * static_cast<double>(n)));
    const int64_t nb = std::max<int64_t>(1, static_cast<int64_t>((hi - lo) / width) + 1);
    m = r.bucket_items(n, lo, width, nb);
  } else {
    r.full_windows(n);
  }
  if (!item_major) std::fill(r.grad.begin(), r.grad.begin() + m, 0.0);  // item-major pass 2 writes it whole
  const double* w = r.w.data();
  const double* p = r.p.data();  // set unless item-major
  if (item_major) {  // pass 1, item-major: T_i, TP_i (the j = i term, 1/2, is taken out after)
    r.keys.resize(P);
    for (int64_t k = 0; k < P; ++k) r.keys[k] = std::exp(std::max(-708.0, (r.s[r.pos[k]] - hi) / tau));
    r.lanes.assign(P * kLanes, 0.0);
    item_major_sums(ItemMajor{r.R.data(), w, m, r.keys.data(), nullptr, nullptr, r.lanes.data()}, P, rcp14);
    positive_pairs(r.pos.data(), r.keys.data(), P, nullptr, r.TP.data(), nullptr, nullptr);
    for (int64_t k = 0; k < P; ++k) {
      r.T[k] = lane_sum(r.lanes.data() + k * kLanes) - 0.5;
      r.TP[k] -= 0.5;
    }
  }
  for (int64_t k = 0; k < P && !item_major; ++k) {  // pass 1: T_i, TP_i (the j = i term, 1/2, is taken out after)
    const int64_t i = r.pos[k], j0 = r.lo[k], j1 = r.hi[k];
    double t = 0.0, tp = 0.0;
    if (pair.shared) {
      const double* E = r.E.data();
      const double Ei = E[i];
      for (int64_t j = j0; j < j1; ++j) {
        const double q = E[j] / (E[j] + Ei);
        t += w[j] * q;
        tp += p[j] * q;
      }
    } else {
      for (int64_t j = j0; j < j1; ++j) {
        const double q = pair.sig(r, j, i);
        t += w[j] * q;
        tp += p[j] * q;
      }
    }
    r.T[k] = r.above[k] + t - 0.5;
    r.TP[k] = r.above_pos[k] + tp - 0.5;
  }
  double value;
  if (prm.kind == rank::kRecallAtK) {
    value = rank::recall_at_k(r.T.data(), P, prm.ks.data(), prm.k_temperatures.data(),
                              static_cast<int64_t>(prm.ks.size()), r.sums.data(), r.a.data());
  } else {
    value = rank::smooth_ap(r.T.data(), r.TP.data(), P, r.a.data(), r.b.data());
  }
  double* grad = r.grad.data();
  const double self = 0.25 / tau;  // the j = i term of a slope sum
  if (item_major) {  // pass 2, item-major
    const double inv_tau = 1.0 / tau;
    r.lanes.assign(P * kLanes, 0.0);
    r.scaled_a.resize(P), r.scaled_b.resize(P);
    for (int64_t k = 0; k < P; ++k) r.scaled_a[k] = r.a[k] * inv_tau, r.scaled_b[k] = r.b[k] * inv_tau;
    item_major_slopes(ItemMajor{r.R.data(), w, m, r.keys.data(), r.scaled_a.data(), grad, r.lanes.data()}, P, rcp14);
    positive_pairs(r.pos.data(), r.keys.data(), P, r.scaled_b.data(), nullptr, r.GP.data(), grad);
    for (int64_t k = 0; k < P; ++k) {
      grad[r.pos[k]] -= self * (r.a[k] + r.b[k]);
      r.G[k] = lane_sum(r.lanes.data() + k * kLanes) * inv_tau - self;
      r.GP[k] = r.GP[k] * inv_tau - self;
    }
  }
  for (int64_t k = 0; k < P && !item_major; ++k) {  // pass 2: sum_i g_mi (a_i + p_m b_i), and G_i, GP_i
    const int64_t i = r.pos[k], j0 = r.lo[k], j1 = r.hi[k];
    const double ai = r.a[k], bi = r.b[k];
    double g_all = 0.0, g_pos = 0.0;
    if (pair.shared) {
      const double* E = r.E.data();
      const double Ei = E[i], inv_tau = 1.0 / tau;
      for (int64_t j = j0; j < j1; ++j) {
        const double d = E[j] + Ei;
        const double g = w[j] * ((E[j] / d) * (Ei / d) * inv_tau);
        grad[j] += g * (ai + p[j] * bi);
        g_all += g;
        g_pos += p[j] * g;
      }
    } else {
      for (int64_t j = j0; j < j1; ++j) {
        const double g = w[j] * pair.slope(r, j, i);
        grad[j] += g * (ai + p[j] * bi);
        g_all += g;
        g_pos += p[j] * g;
      }
    }
    grad[i] -= self * (ai + bi);
    r.G[k] = g_all - self;
    r.GP[k] = g_pos - self;
  }
  for (int64_t k = 0; k < P; ++k) grad[r.pos[k]] -= r.a[k] * r.G[k] + r.b[k] * r.GP[k];
  r.result = grad;
  if (window) {  // back to the columns' order (a column left out of the ranking keeps 0)
    std::fill(r.out.begin(), r.out.begin() + n, 0.0);
    for (int64_t k = 0; k < m; ++k) r.out[r.order[k]] = grad[k];
    r.result = r.out.data();
  }
  return value;
}

// A slope of a saturated sigmoid, stored as it is, is a subnormal number, and one subnormal operand
// makes x86 GEMMs in the backward up to 90x slower (measured: Recall@k's backward 12x, on a
// Xeon). Values below the dtype's smallest normal number times 2^24 (which leaves room for the
// factor g ~ 1/B the backward multiplies by) are stored as 0: about 1e-31 in float, far below any
// term that can move a float gradient.
template <typename T>
constexpr double kFlushFloor = static_cast<double>(std::numeric_limits<T>::min()) * 16777216.0;

// Rows per parallel task: about 32k score elements (the work per element is P times that of AP).
inline int64_t row_grain(int64_t N) { return std::max<int64_t>(1, 8192 / std::max<int64_t>(N, 1)); }

// stage[k * N + c] = s[c * N + r + k] for k < rows, c < c0: the left parts of rows r ... r + rows - 1
// read from S's columns, 8 x 8 blocks at a time transposed in registers (transpose8.h). Rows taken
// together so that each page of S is visited once per group, not once per row (one strided load per
// entry, row by row, was slower than writing the mirror).
APL_SIMD_CLONES void gather_left_of(const float* s, int64_t N, int64_t r, int64_t rows, int64_t c0, float* stage) {
  transpose8::copy_transposed(s + r, N, stage, N, c0, rows);
}
APL_SIMD_CLONES void gather_left_of(const double* s, int64_t N, int64_t r, int64_t rows, int64_t c0, double* stage) {
  transpose8::copy_transposed(s + r, N, stage, N, c0, rows);
}

// Rows gathered together (gather_left_of): 32 rows of up to N entries staged per thread.
constexpr int64_t kGatherRows = 32;

// Rows of S whose entries left of column `upper_from(r)` are read from S's columns (S_rc = S_cr):
// 0 for every row when S is whole; the first column of row r's block when S holds only its block
// rows on and above the diagonal (self_gram_upper).
struct RowSource {
  int64_t block = 0;  // 0: S whole
  int64_t upper_from(int64_t r) const { return block == 0 ? 0 : (r / block) * block; }
};

template <typename T>
void forward_rows(const at::Tensor& S, const at::Tensor& q_labels, const at::Tensor& x_labels, int64_t self_offset,
                  const RankParams& prm, RowSource source, at::Tensor& value, at::Tensor& npos,
                  at::Tensor& nonfinite, at::Tensor& U) {
  const int64_t R = S.size(0), N = S.size(1);
  const T* s = S.data_ptr<T>();
  T* u = U.data_ptr<T>();
  T* val = value.data_ptr<T>();
  int64_t* np = npos.data_ptr<int64_t>();
  const int64_t* ql = q_labels.data_ptr<int64_t>();
  const int64_t* xl = x_labels.data_ptr<int64_t>();
  int32_t* bad = nonfinite.data_ptr<int32_t>();
  const WindowUse use = window_use();
  const bool rcp14 = hardware_reciprocal();
  auto rows = [&](int64_t r0, int64_t r1) {
    Row row;
    row.resize(N, static_cast<int64_t>(prm.ks.size()));
    std::vector<T> stage(source.block == 0 ? 0 : kGatherRows * N);
    int64_t staged_from = r0, staged_to = r0;  // the rows in stage
    for (int64_t r = r0; r < r1; ++r) {
      const T* src = s + r * N;
      const int64_t c0 = source.upper_from(r);
      if (c0 > 0) {  // the columns left of row r's block from rows c < c0 (its block's rows all share c0)
        if (r >= staged_to) {
          staged_from = r, staged_to = std::min({r1, r + kGatherRows, c0 + source.block});
          gather_left_of(s, N, r, staged_to - r, c0, stage.data());
        }
        T* row_stage = stage.data() + (r - staged_from) * N;
        std::copy(src + c0, src + N, row_stage + c0);
        src = row_stage;
      }
      const int64_t self = self_offset >= 0 ? self_offset + r : -1;
      const int64_t label = ql[r];
      const bool left_out = self >= 0 && self < N && prm.query_mode == rank::kExcluded;
      const bool finite = row_io::widen_row(src, N, left_out ? self : -1, row.s.data(), &row.low, &row.high);
      std::fill(row.w.begin(), row.w.begin() + N, 1.0);
      if (left_out) row.w[self] = 0.0;
      const int64_t P = row_io::class_columns(xl, N, label, row.columns.data());
      row.pos.assign(row.columns.begin(), row.columns.begin() + P);
      if (self >= 0 && self < N && prm.query_mode != rank::kItemAndPositive) {  // the query is not its own positive
        const auto it = std::find(row.pos.begin(), row.pos.end(), self);
        if (it != row.pos.end()) row.pos.erase(it);
      }
      if (!finite) {
        __atomic_store_n(bad, 1, __ATOMIC_RELAXED);  // any thread may set it
        for (int64_t j = 0; j < N; ++j) row.s[j] = std::isfinite(row.s[j]) ? row.s[j] : 0.0;
        row_io::widen_row(row.s.data(), N, left_out ? self : -1, row.s.data(), &row.low, &row.high);
      }
      val[r] = static_cast<T>(row_value_and_gradient(row, N, prm, use, rcp14));
      np[r] = static_cast<int64_t>(row.pos.size());
      row_io::narrow_row(row.result, N, kFlushFloor<T>, u + r * N);
    }
  };
  if (source.block == 0) {
    at::parallel_for(0, R, row_grain(N), rows);
    return;
  }
  // U overwrites S row by row. Block rows go last to first: a block's rows read only their own
  // rows and the rows of earlier blocks, which are overwritten after them.
  for (int64_t b0 = ((R - 1) / source.block) * source.block; b0 >= 0; b0 -= source.block) {
    at::parallel_for(b0, std::min(R, b0 + source.block), row_grain(N), rows);
  }
}

void forward(const at::Tensor& S, const at::Tensor& q_labels, const at::Tensor& x_labels, int64_t self_offset,
             const RankParams& prm, at::Tensor& value, at::Tensor& npos, at::Tensor& nonfinite, at::Tensor& U) {
  TORCH_CHECK(U.sizes() == S.sizes() && U.is_contiguous() && U.scalar_type() == S.scalar_type() && S.is_contiguous(),
              "apl: U must be a contiguous tensor like the scores");
  AT_DISPATCH_FLOATING_TYPES(S.scalar_type(), "apl_rank_forward", [&] {
    forward_rows<scalar_t>(S, q_labels, x_labels, self_offset, prm, RowSource{}, value, npos, nonfinite, U);
  });
}

// Self retrieval on self_gram_upper's block rows: no mirror written, the rows' left parts gathered
// from the columns as each row is widened.
void forward_upper(const at::Tensor& S, const at::Tensor& labels, const RankParams& prm, at::Tensor& value,
                   at::Tensor& npos, at::Tensor& nonfinite, at::Tensor& U) {
  TORCH_CHECK(U.is_same(S) && S.is_contiguous() && S.dim() == 2 && S.size(0) == S.size(1),
              "apl: forward_upper overwrites a square S with U");
  const RowSource source{S.size(0) < kSymmetricMinRows ? 0 : kBlockRows};
  AT_DISPATCH_FLOATING_TYPES(S.scalar_type(), "apl_rank_forward_upper", [&] {
    forward_rows<scalar_t>(S, labels, labels, 0, prm, source, value, npos, nonfinite, U);
  });
}

bool always_sync() { return true; }

const RankKernels kCpuRankKernels{forward, symmetric_product, always_sync, INT64_MAX, nullptr, forward_upper};

}  // namespace

TORCH_LIBRARY_IMPL(apl, CPU, m) { RankDeviceOps<kCpuRankKernels>::register_all(m); }

}  // namespace apl
