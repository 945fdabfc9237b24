// CUDA row kernel of the rank surrogates (Smooth-AP, Recall@k; csrc/rank_math.h), pure CUDA: no
// torch header. The math is that of the CPU kernel (csrc/cpu/rank_cpu.cpp), arranged for a block of
// kThreads threads per query row:
//  0. count the row's positives (labels only), then over its scores: the non-finite flag and the
//     items' largest and smallest score (a non-finite score counts as 0, as on the CPU);
//  1. the positives' columns in column order, by a block-wide scan (no atomics), each with its key:
//     E_i = exp((s_i - max) / tau) on the shared-exponential path ((max - min) / tau <= 700, the
//     CPU's switch), else s_i (an exp per pair);
//  2. pass 1: for each positive i, T_i, TP_i and G_i = sum_j g_ji, GP_i = sum_{j in P} g_ji, by block
//     reductions in a fixed order (bitwise deterministic), the j = i terms (1/2, 1/(4 tau)) included
//     and taken out after, as on the CPU (which sums G, GP in its pass 2: the same sums);
//  3. one thread: the value and a_i, b_i (rank::smooth_ap / rank::recall_at_k); then
//     c_i = a_i G_i + b_i GP_i;
//  4. pass 2, item-major: each thread sums g_ji (a_i + p_j b_i) over the positives in their order
//     for each of its items j, subtracts the j = i terms where the CPU does, and writes U_j. It reads
//     only S_j and the positives' keys (copied in step 1), so U_j may overwrite S_j at once: U may be
//     S for any N.
// Sums and coefficients are in double. A row's per-positive values (8 doubles each) live in shared
// memory up to kTable positives. Rows with more are skipped by that kernel and done by a second
// launch (the spill kernel): a bounded grid whose blocks walk those rows, each block with its own
// slice of the workspace for the values; its pass 2 reads them through shared memory in tiles.
// Nothing here allocates, synchronises or calls the runtime beyond the launches.
#include "rank_kernels.cuh"

#include <cuda_runtime.h>

#include <cmath>

#include "../rank_math.h"

namespace apl {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kRound = 2;               // positives per pass-1 reduction
constexpr int kRoundSums = 4 * kRound;  // their T, TP, G, GP
// Block reduction: each value's kThreads partials are summed in kRuns runs of kRunLength, then the
// runs in order (shared memory and barriers only: the CPU emulator has no warps).
constexpr int kRuns = 32;
constexpr int kRunLength = kThreads / kRuns;
static_assert(kRoundSums * kRuns <= kThreads, "one thread per run");
constexpr double kMaxSpread = 700.0;  // must match rank_cpu.cpp
constexpr int kTableArrays = 8;       // column, key, T, TP, G (then c), GP, a, b
// Dynamic shared memory, the only shared memory of the kernels: the reduction buffer, ks | k
// temperatures | sums, and the table of positives, within the 48 KiB a block gets without an opt-in.
constexpr int kSharedBytes = 48 * 1024;
constexpr int kFixedDoubles = kRoundSums * kThreads + 3 * kRankMaxKs;
constexpr int kTable = (kSharedBytes / 8 - kFixedDoubles) / kTableArrays / 32 * 32;
constexpr size_t kDynamicSmem = (kFixedDoubles + static_cast<size_t>(kTableArrays) * kTable) * 8;
static_assert(kTable >= kThreads && kDynamicSmem <= kSharedBytes, "shared memory layout");
constexpr int64_t kMaxRows = 0x7fffffffLL;             // grid.x
constexpr int64_t kSpillBudget = int64_t{64} << 20;  // workspace bytes the spill kernel aims at

// A row's per-positive values, in column order: kTableArrays arrays of `cap` entries.
struct Table {
  int64_t* idx;
  double *key, *T, *TP, *G, *GP, *a, *b;  // G holds c_i after step 3
};

__device__ __forceinline__ Table table_at(double* base, int64_t cap) {
  Table t;
  t.idx = reinterpret_cast<int64_t*>(base);
  t.key = base + cap;
  t.T = base + 2 * cap;
  t.TP = base + 3 * cap;
  t.G = base + 4 * cap;
  t.GP = base + 5 * cap;
  t.a = base + 6 * cap;
  t.b = base + 7 * cap;
  return t;
}

template <typename T>
struct Row {
  const T* s;
  const int64_t* xl;
  int64_t N, self, label, mode;
  // Item (w_j = 1: all but the query's own column when it is left out) and positive (p_j = 1).
  __device__ __forceinline__ void flags(int64_t j, bool& item, bool& pos) const {
    const bool own = j == self;
    item = !(own && mode == rank::kExcluded);
    pos = item && xl[j] == label && !(own && mode == rank::kItemOnly);
  }
  __device__ __forceinline__ double score(int64_t j) const {
    const double v = static_cast<double>(s[j]);
    return isfinite(v) ? v : 0.0;
  }
};

struct Pair {
  double tau, inv_tau, hi;
  bool shared;
  template <bool kShared>
  __device__ __forceinline__ double key(double s) const {
    return kShared ? exp((s - hi) / tau) : s;
  }
};

// sigma((s_j - s_i) / tau) and its slope g from the keys of j and i, as on the CPU's positive-major rows (its
// item-major rows form the reciprocal otherwise: the results agree to double round-off), except that the
// shared path's slope is q (E_i / d) / tau instead of E_j E_i / d^2 / tau: the latter is 0 / 0 when
// both exponentials are below about 1e-162 (scores 373 tau below the row's largest). Both give
// exactly 1/2 and 1/(4 tau) for j = i.
template <bool kShared>
__device__ __forceinline__ void sigma_pair(double kj, double ki, const Pair& pr, double& q, double& g) {
  if (kShared) {
    const double d = kj + ki;
    q = kj / d;
    g = q * (ki / d) * pr.inv_tau;
  } else {
    q = 1.0 / (1.0 + exp((ki - kj) / pr.tau));
    g = q * (1.0 - q) / pr.tau;
  }
}

struct Sum {
  __device__ __forceinline__ double operator()(double x, double y) const { return x + y; }
};
struct Max {
  __device__ __forceinline__ double operator()(double x, double y) const { return x > y ? x : y; }
};

// v[k] reduced over the block, into every thread's v[k], in a fixed order. Called by the whole block.
template <int kVals, typename Op>
__device__ __forceinline__ void block_reduce(double (&v)[kVals], double* red, Op op) {
  static_assert(kVals * kRuns <= kThreads, "one thread per run");
  const int t = threadIdx.x;
  for (int k = 0; k < kVals; ++k) red[k * kThreads + t] = v[k];
  __syncthreads();
  if (t < kVals * kRuns) {
    double* run = red + (t / kRuns) * kThreads + (t % kRuns) * kRunLength;
    double acc = run[0];
    for (int m = 1; m < kRunLength; ++m) acc = op(acc, run[m]);
    run[0] = acc;
  }
  __syncthreads();
  for (int k = 0; k < kVals; ++k) {
    const double* runs = red + k * kThreads;
    double acc = runs[0];
    for (int m = 1; m < kRuns; ++m) acc = op(acc, runs[m * kRunLength]);
    v[k] = acc;
  }
  __syncthreads();  // red is free again
}

template <typename T>
__device__ int64_t count_positives(const Row<T>& row, double* red) {
  double v[1] = {0.0};  // exact up to 2^53
  for (int64_t j = threadIdx.x; j < row.N; j += kThreads) {
    bool item, pos;
    row.flags(j, item, pos);
    v[0] += pos ? 1.0 : 0.0;
  }
  block_reduce(v, red, Sum());
  return static_cast<int64_t>(v[0]);
}

// Step 0 over the scores: whether one is not finite, the items' largest and smallest.
template <typename T>
__device__ void sweep(const Row<T>& row, double* red, bool& bad, double& hi, double& lo) {
  double v[3] = {0.0, -INFINITY, -INFINITY};  // bad, max, -min
  for (int64_t j = threadIdx.x; j < row.N; j += kThreads) {
    const double x = static_cast<double>(row.s[j]);
    if (!isfinite(x)) v[0] = 1.0;  // the query's own column too, as on the CPU
    bool item, pos;
    row.flags(j, item, pos);
    if (!item) continue;
    const double s = isfinite(x) ? x : 0.0;
    v[1] = s > v[1] ? s : v[1];
    v[2] = -s > v[2] ? -s : v[2];
  }
  block_reduce(v, red, Max());
  bad = v[0] != 0.0;
  hi = v[1];
  lo = -v[2];
}

// Step 1: columns and keys of the positives, by an exclusive scan of each kThreads columns' flags.
template <typename T>
__device__ void build_table(const Row<T>& row, const Pair& pr, const Table& tab, double* red) {
  int* flag = reinterpret_cast<int*>(red);  // kThreads flags, then kRuns run totals
  int* total = flag + kThreads;
  const int t = threadIdx.x;
  const int run = t / kRunLength;
  int64_t count = 0;
  for (int64_t base = 0; base < row.N; base += kThreads) {
    const int64_t j = base + t;
    bool item = false, pos = false;
    if (j < row.N) row.flags(j, item, pos);
    flag[t] = pos;
    __syncthreads();
    if (t < kRuns) {
      int s = 0;
      for (int m = 0; m < kRunLength; ++m) s += flag[t * kRunLength + m];
      total[t] = s;
    }
    __syncthreads();
    int before = 0, all = 0;
    for (int m = 0; m < kRuns; ++m) {
      before += m < run ? total[m] : 0;
      all += total[m];
    }
    for (int m = run * kRunLength; m < t; ++m) before += flag[m];
    if (pos) {
      const int64_t k = count + before;
      tab.idx[k] = j;
      const double s = row.score(j);
      tab.key[k] = pr.shared ? pr.key<true>(s) : pr.key<false>(s);
    }
    count += all;
    __syncthreads();  // the flags are rewritten for the next columns
  }
}

// Step 2, kRound positives per block reduction.
template <typename T, bool kShared>
__device__ void pass1(const Row<T>& row, const Pair& pr, const Table& tab, int64_t P, double* red) {
  const double self = 0.25 / pr.tau;
  for (int64_t k0 = 0; k0 < P; k0 += kRound) {
    const int nr = P - k0 < kRound ? static_cast<int>(P - k0) : kRound;
    double ki[kRound];
    for (int m = 0; m < kRound; ++m) ki[m] = tab.key[k0 + (m < nr ? m : 0)];  // a spare slot redoes k0
    double acc[kRoundSums] = {};  // T | TP | G | GP
    for (int64_t j = threadIdx.x; j < row.N; j += kThreads) {
      bool item, pos;
      row.flags(j, item, pos);
      if (!item) continue;  // w_j = 0: adds nothing
      const double kj = pr.key<kShared>(row.score(j));
      const double p = pos ? 1.0 : 0.0;
      for (int m = 0; m < kRound; ++m) {
        double q, g;
        sigma_pair<kShared>(kj, ki[m], pr, q, g);
        acc[m] += q;
        acc[kRound + m] += p * q;
        acc[2 * kRound + m] += g;
        acc[3 * kRound + m] += p * g;
      }
    }
    block_reduce(acc, red, Sum());
    if (threadIdx.x == 0) {
      for (int m = 0; m < kRound; ++m) {
        if (m >= nr) break;
        tab.T[k0 + m] = acc[m] - 0.5;
        tab.TP[k0 + m] = acc[kRound + m] - 0.5;
        tab.G[k0 + m] = acc[2 * kRound + m] - self;
        tab.GP[k0 + m] = acc[3 * kRound + m] - self;
      }
    }
  }
}

// Step 3. kc: ks | k temperatures | sums (kRankMaxKs each). Returns the value (thread 0).
__device__ double finish(const Table& tab, int64_t P, int64_t kind, int nk, double* kc) {
  const bool recall = kind == rank::kRecallAtK;
  double value = 0.0;
  if (threadIdx.x == 0) {
    value = recall ? rank::recall_at_k(tab.T, P, kc, kc + kRankMaxKs, nk, kc + 2 * kRankMaxKs, tab.a)
                   : rank::smooth_ap(tab.T, tab.TP, P, tab.a, tab.b);
  }
  __syncthreads();
  for (int64_t k = threadIdx.x; k < P; k += kThreads) {
    const double b = recall ? 0.0 : tab.b[k];
    tab.b[k] = b;
    tab.G[k] = tab.a[k] * tab.G[k] + b * tab.GP[k];
  }
  __syncthreads();
  return value;
}

// Positives [k0, k0 + n) of the workspace table into the shared tile (what pass 2 reads).
__device__ void stage(const Table& tab, const Table& tile, int64_t k0, int n) {
  __syncthreads();  // the previous tile is no longer read
  for (int m = threadIdx.x; m < n; m += kThreads) {
    tile.idx[m] = tab.idx[k0 + m];
    tile.key[m] = tab.key[k0 + m];
    tile.a[m] = tab.a[k0 + m];
    tile.b[m] = tab.b[k0 + m];
    tile.G[m] = tab.G[k0 + m];
  }
  __syncthreads();
}

// Step 4; kStaged: the table is in the workspace and goes through `tile` kTable positives at a time.
template <typename T, bool kShared, bool kStaged>
__device__ void pass2(const Row<T>& row, const Pair& pr, const Table& tab, const Table& tile, int64_t P, T* u) {
  const double self = 0.25 / pr.tau;
  const int64_t step = kStaged ? kTable : P;
  for (int64_t base = 0; base < row.N; base += kThreads) {
    const int64_t j = base + threadIdx.x;
    bool item = false, pos = false;
    double kj = 0.0;
    if (j < row.N) {
      row.flags(j, item, pos);
      if (item) kj = pr.key<kShared>(row.score(j));
    }
    const double p = pos ? 1.0 : 0.0;
    double acc = 0.0, own = 0.0;
    for (int64_t k0 = 0; k0 < P; k0 += step) {
      const int n = static_cast<int>(P - k0 < step ? P - k0 : step);
      if (kStaged) stage(tab, tile, k0, n);
      const Table& src = kStaged ? tile : tab;
      if (!item) continue;
      for (int m = 0; m < n; ++m) {
        double q, g;
        sigma_pair<kShared>(kj, src.key[m], pr, q, g);
        const double am = src.a[m], bm = src.b[m];
        acc += g * (am + p * bm);
        if (src.idx[m] == j) {  // j is this positive: the CPU's order of the j = i terms
          acc -= self * (am + bm);
          own = src.G[m];
        }
      }
    }
    if (j < row.N) u[j] = static_cast<T>(item ? acc - own : 0.0);
  }
}

template <typename T, bool kSpill>
__device__ void process_row(const RankRowArgs<T>& a, int64_t r, const Table& tab, const Table& tile,
                            double* red, double* kc, T* value, int64_t* npos, int32_t* nonfinite, T* U) {
  const Row<T> row{a.S + r * a.N, a.x_labels, a.N, a.self_offset >= 0 ? a.self_offset + r : -1,
                   a.N > 0 ? a.q_labels[r] : 0, a.query_mode};
  const int64_t P = count_positives(row, red);
  if (kSpill ? P <= kTable : P > kTable) return;  // the other kernel's row
  bool bad;
  double hi, lo;
  sweep(row, red, bad, hi, lo);
  const int t = threadIdx.x;
  if (bad && t == 0) *nonfinite = 1;  // every writer stores the same 1
  T* u = U + r * a.N;
  if (P == 0) {
    for (int64_t j = t; j < a.N; j += kThreads) u[j] = T(0);
    if (t == 0) value[r] = T(0), npos[r] = 0;
    return;
  }
  const Pair pr{a.temperature, 1.0 / a.temperature, hi, (hi - lo) / a.temperature <= kMaxSpread};
  build_table(row, pr, tab, red);
  if (pr.shared) {
    pass1<T, true>(row, pr, tab, P, red);
  } else {
    pass1<T, false>(row, pr, tab, P, red);
  }
  const double v = finish(tab, P, a.kind, a.num_ks, kc);
  if (t == 0) value[r] = static_cast<T>(v), npos[r] = P;
  if (pr.shared) {
    pass2<T, true, kSpill>(row, pr, tab, tile, P, u);
  } else {
    pass2<T, false, kSpill>(row, pr, tab, tile, P, u);
  }
}

// !kSpill: row blockIdx.x, if it has at most kTable positives. kSpill: the rows with more, walked by
// gridDim.x blocks, block b keeping its table in workspace slice b. U is not __restrict__: it may be S.
template <typename T, bool kSpill>
__global__ void __launch_bounds__(kThreads)
    rank_kernel(const RankRowArgs<T> a, T* __restrict__ value, int64_t* __restrict__ npos,
                int32_t* __restrict__ nonfinite, T* U, double* __restrict__ workspace) {
  extern __shared__ double smem[];
  double* red = smem;
  double* kc = red + kRoundSums * kThreads;
  const Table shared_table = table_at(kc + 3 * kRankMaxKs, kTable);
  for (int k = threadIdx.x; k < a.num_ks; k += kThreads) {  // read after the barriers of steps 0-2
    kc[k] = a.ks[k];
    kc[kRankMaxKs + k] = a.k_temperatures[k];
  }
  if (!kSpill) {
    process_row<T, false>(a, blockIdx.x, shared_table, shared_table, red, kc, value, npos, nonfinite, U);
    return;
  }
  const Table slice = table_at(workspace + static_cast<int64_t>(blockIdx.x) * kTableArrays * a.N, a.N);
  for (int64_t r = blockIdx.x; r < a.R; r += gridDim.x) {
    process_row<T, true>(a, r, slice, shared_table, red, kc, value, npos, nonfinite, U);
  }
}

template <typename T>
bool valid(const RankRowArgs<T>& a) {
  if (a.R < 0 || a.N < 0 || a.R > kMaxRows) return false;
  if (a.kind != rank::kSmoothAP && a.kind != rank::kRecallAtK) return false;
  if (a.query_mode < rank::kExcluded || a.query_mode > rank::kItemOnly) return false;
  if (!(std::isfinite(a.temperature) && a.temperature > 0.0)) return false;
  if (a.num_ks < 0 || a.num_ks > kRankMaxKs || (a.kind == rank::kRecallAtK && a.num_ks < 1)) return false;
  if (a.R == 0 || a.N == 0) return true;
  return a.S != nullptr && a.q_labels != nullptr && a.x_labels != nullptr;
}

// Blocks of the spill kernel (rank_spill_blocks in the header). The budget alone gave 2^20 / N blocks
// (16 at N = 65536, one from N = 2^20), a few SMs of a GPU with 132; the scores already take
// R N sizeof(T) bytes, so a workspace up to that size is proportionate.
template <typename T>
int64_t spill_blocks(const RankRowArgs<T>& a) {
  if (a.R <= 0 || a.N <= kTable) return 0;
  if (a.spill_blocks > 0) return a.spill_blocks < a.R ? a.spill_blocks : a.R;
  const int64_t per_block = kTableArrays * 8 * a.N;
  const int64_t budget = kSpillBudget / per_block;
  const int64_t want = a.multiprocessors > budget ? a.multiprocessors : budget;
  // Workspace <= the scores' R N sizeof(T) bytes: at most R sizeof(T) / 64 blocks (N cancels).
  const int64_t scores_cap = a.R * static_cast<int64_t>(sizeof(T)) / (kTableArrays * 8);
  const int64_t cap = scores_cap > budget ? scores_cap : budget;
  int64_t b = want < cap ? want : cap;
  if (b > a.R) b = a.R;
  return b < 1 ? 1 : b;
}

template <typename T>
size_t workspace_bytes(const RankRowArgs<T>& a) {
  if (!valid(a)) return 0;
  return static_cast<size_t>(spill_blocks(a)) * kTableArrays * 8 * static_cast<size_t>(a.N);
}

template <typename T>
cudaError_t launch(const RankRowArgs<T>& a, T* value, int64_t* npos, int32_t* nonfinite, T* U,
                   void* workspace, cudaStream_t stream) {
  if (!valid(a)) return cudaErrorInvalidValue;
  if (a.R == 0) return cudaSuccess;
  if (value == nullptr || npos == nullptr || nonfinite == nullptr || (a.N > 0 && U == nullptr)) {
    return cudaErrorInvalidValue;
  }
  const int64_t spill = spill_blocks(a);
  if (spill > 0 && workspace == nullptr) return cudaErrorInvalidValue;
  const dim3 rows(static_cast<unsigned>(a.R));
  rank_kernel<T, false><<<rows, kThreads, kDynamicSmem, stream>>>(a, value, npos, nonfinite, U, nullptr);
  const cudaError_t e = cudaPeekAtLastError();
  if (e != cudaSuccess || spill == 0) return e;
  const dim3 blocks(static_cast<unsigned>(spill));
  rank_kernel<T, true><<<blocks, kThreads, kDynamicSmem, stream>>>(a, value, npos, nonfinite, U,
                                                                    static_cast<double*>(workspace));
  return cudaPeekAtLastError();
}

}  // namespace

int rank_max_ks() { return kRankMaxKs; }
int64_t rank_max_rows() { return kMaxRows; }
int rank_table_positives() { return kTable; }

int64_t rank_spill_blocks(const RankRowArgs<float>& a) { return valid(a) ? spill_blocks(a) : 0; }
int64_t rank_spill_blocks(const RankRowArgs<double>& a) { return valid(a) ? spill_blocks(a) : 0; }

size_t rank_forward_workspace_bytes(const RankRowArgs<float>& a) { return workspace_bytes(a); }
size_t rank_forward_workspace_bytes(const RankRowArgs<double>& a) { return workspace_bytes(a); }
cudaError_t rank_forward(const RankRowArgs<float>& a, float* value, int64_t* npos, int32_t* nonfinite,
                         float* U, void* workspace, cudaStream_t stream) {
  return launch(a, value, npos, nonfinite, U, workspace, stream);
}
cudaError_t rank_forward(const RankRowArgs<double>& a, double* value, int64_t* npos, int32_t* nonfinite,
                         double* U, void* workspace, cudaStream_t stream) {
  return launch(a, value, npos, nonfinite, U, workspace, stream);
}

}  // namespace cuda
}  // namespace apl
