// CUDA row kernels of the quantized AP loss (docs/ap_q.md), pure CUDA: no torch header.
//
// Forward  : one block per query row. Every thread walks the row with a stride of blockDim,
//            locates each score in the bins (apl::locate, the arithmetic of the CPU kernel) and
//            adds its two triangular weights to the row's histograms (positives, all) in shared
//            memory. The histograms are 64-bit fixed point: a weight w in [0, 1] adds
//            round(w * 2^shift), with shift = 62 - bit_length(N), so a bin never exceeds 2^62.
//            Integer addition is associative, so the shared-memory atomics give the same sums in
//            any thread order: the result is bitwise deterministic, with no float atomics. For
//            float32 scores the weights are (in all but the top bin) multiples of 2^-24, which the
//            fixed point holds exactly: the histograms are then the exact sums of the weights.
//            Each thread sums runs of scores that fall in the same bin in registers, each warp
//            adds into its own copy of the histograms (fewer conflicts); the copies are summed
//            (exact integers), converted to double, and one thread turns them into the row's AP
//            and coefficients with apl::ap_and_coefficients (the CPU kernel's code).
// Backward : an elementwise pass per row, G = slope[relevance][bin] inside (lo, hi), else 0.
// Symmetric: H = G + G^T by pairs of 32 x 32 tiles (I, J), I <= J: both score tiles go through
//            shared memory, so every read and write of S and H is coalesced, and each H value is
//            g(i, j) + g(j, i) computed once in double, as on the CPU.
// Nothing here allocates, synchronises or calls the runtime beyond the launch itself, so the
// launches can be captured into a CUDA graph.
#include "ap_kernels.cuh"

#include <cuda_runtime.h>

#include "../ap_math.h"

namespace apl {
namespace cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kForwardThreads = 256;
constexpr int kForwardWarps = kForwardThreads / kWarp;
constexpr int kBackwardThreads = 256;
constexpr int kTile = 32;     // symmetric kernel: kTile x kTile tiles
constexpr int kTileRows = 8;  // ... with kTile x kTileRows threads
// Dynamic shared memory used without an opt-in: static + dynamic must stay within 48 KiB on
// every architecture; 256 bytes are left for the kernels' static shared variables.
constexpr int kSharedBudget = 48 * 1024 - 256;
// Bytes of one copy of the two histograms per bin (p and n, 64-bit each).
constexpr int kBytesPerBin = 2 * static_cast<int>(sizeof(unsigned long long));

int bit_length(int64_t n) {
  int b = 0;
  while (n > 0) {
    ++b;
    n >>= 1;
  }
  return b;
}

// Fixed-point shift for rows of N items: every bin total stays below N * 2^shift <= 2^62.
int fixed_shift(int64_t N) { return 62 - bit_length(N); }

template <typename T>
__device__ __forceinline__ unsigned long long to_fixed(T w, double scale) {
  // w in [0, 1]; scaling by a power of two is exact, the rounding to an integer is the only one.
  // A positive weight never rounds to 0: the gradient pass assigns the score to this bin pair, so
  // the histogram must see the bin as non-empty too (else, when this bin and all above it hold
  // nothing else, the coefficients come from the N == 0 branch and disagree with the CPU kernel).
  const unsigned long long u = __double2ull_rn(static_cast<double>(w) * scale);
  return (u == 0ull && w > T(0)) ? 1ull : u;
}

// kPartial: this block bins columns [blockIdx.y * per, ...) of row blockIdx.x and writes its exact
// integer histograms and count to `partial` (forward_finish_kernel sums them); otherwise one block
// bins the whole row and finishes it.
template <typename T, bool kMask, bool kPartial>
__global__ void __launch_bounds__(kForwardThreads)
    forward_kernel(const RowArgs<T> a, const int copies, const int shift, T* __restrict__ ap,
                   int64_t* __restrict__ npos, double* __restrict__ coef,
                   int32_t* __restrict__ nonfinite, unsigned long long* __restrict__ partial) {
  extern __shared__ unsigned long long hist[];  // copies x [p (M) | n (M)]
  __shared__ unsigned long long s_count;
  const int M = a.M;
  const int tid = threadIdx.x;
  const int64_t r = blockIdx.x;
  for (int i = tid; i < copies * 2 * M; i += blockDim.x) hist[i] = 0ull;
  if (tid == 0) s_count = 0ull;
  __syncthreads();

  unsigned long long* hp = hist + ((tid / kWarp) % copies) * 2 * M;
  unsigned long long* hn = hp + M;
  const Bins<T> b = make_bins<T>(a.lo, a.hi, M);
  const int64_t N = a.N;
  const T* __restrict__ row = a.S + r * N;
  const bool* __restrict__ mrow = kMask ? a.mask + r * N : nullptr;
  const int64_t qlab = (kMask || N == 0) ? 0 : a.q_labels[r];
  const int64_t self = (!kMask && a.self_offset >= 0) ? a.self_offset + r : -1;
  const double scale = ldexp(1.0, shift);

  // Each thread keeps the sums for the bin pair (cm, cm + 1) of its last score in registers and
  // adds them to the shared histograms only when a score falls elsewhere: scores of a batch
  // crowd into a few bins, so this removes most shared atomics (and their serialisation when all
  // lanes of a warp hit the same bin). Integer sums, so the grouping changes no bit.
  unsigned long long count = 0, c_n0 = 0, c_n1 = 0, c_p0 = 0, c_p1 = 0;
  int cm = -1;
  auto flush = [&]() {
    if (cm < 0) return;
    if (c_n0) atomicAdd(hn + cm, c_n0);
    if (c_n1) atomicAdd(hn + cm + 1, c_n1);
    if (c_p0) atomicAdd(hp + cm, c_p0);
    if (c_p1) atomicAdd(hp + cm + 1, c_p1);
    c_n0 = c_n1 = c_p0 = c_p1 = 0;
  };
  int bad = 0;
  const int64_t per = (N + gridDim.y - 1) / gridDim.y;
  const int64_t j0 = static_cast<int64_t>(blockIdx.y) * per;
  const int64_t j1 = j0 + per < N ? j0 + per : N;
  for (int64_t j = j0 + tid; j < j1; j += blockDim.x) {
    const T v = row[j];
    bad |= !isfinite(v);  // the self column too, as on the CPU
    if (j == self) continue;
    const BinPos<T> q = locate(v, b);
    const T w1 = q.frac, w0 = T(1) - w1;
    const unsigned long long u0 = to_fixed(w0, scale), u1 = to_fixed(w1, scale);
    const bool rel = kMask ? mrow[j] : (a.x_labels[j] == qlab);
    if (q.m != cm) {
      flush();
      cm = q.m;
    }
    c_n0 += u0;
    c_n1 += u1;
    if (rel) {
      c_p0 += u0;
      c_p1 += u1;
      ++count;
    }
  }
  flush();
  if (count) atomicAdd(&s_count, count);
  // Every writer stores the same 1: the outcome does not depend on the order.
  if (__syncthreads_or(bad) && tid == 0) *nonfinite = 1;

  if (kPartial) {  // this block's share of the row (s_count is complete after the barrier above)
    unsigned long long* out = partial + (r * gridDim.y + blockIdx.y) * (2 * M + 1);
    for (int i = tid; i < 2 * M; i += blockDim.x) {
      unsigned long long s = 0ull;
      for (int c = 0; c < copies; ++c) s += hist[c * 2 * M + i];
      out[i] = s;
    }
    if (tid == 0) out[2 * M] = s_count;
    return;
  }
  // Sum the per-warp copies (exact, integer) and convert each bin to double in place: thread t
  // reads only index i of every copy and then overwrites index i of copy 0, and no other thread
  // touches index i.
  double* h = reinterpret_cast<double*>(hist);
  const double inv_scale = ldexp(1.0, -shift);
  for (int i = tid; i < 2 * M; i += blockDim.x) {
    unsigned long long s = 0ull;
    for (int c = 0; c < copies; ++c) s += hist[c * 2 * M + i];
    h[i] = __ull2double_rn(s) * inv_scale;
  }
  __syncthreads();
  if (tid == 0) {
    double* cp = coef + r * 2 * M;
    const double v = ap_and_coefficients(h, h + M, M, static_cast<double>(s_count), a.variant,
                                         cp, cp + M);
    ap[r] = static_cast<T>(v);
    npos[r] = static_cast<int64_t>(s_count);
  }
}

// Second level of a split row: sums the `split` partial histograms of row blockIdx.x (integers:
// exact, so the result is bitwise that of one block binning the whole row), converts them to
// double and turns them into the row's AP and coefficients.
template <typename T>
__global__ void __launch_bounds__(kForwardThreads)
    forward_finish_kernel(const int M, const int split, const int shift, const int64_t variant,
                          const unsigned long long* __restrict__ partial, T* __restrict__ ap,
                          int64_t* __restrict__ npos, double* __restrict__ coef) {
  extern __shared__ double fin[];  // [p (M) | n (M) | count]
  const int64_t r = blockIdx.x;
  const unsigned long long* base = partial + r * split * (2 * M + 1);
  const double inv_scale = ldexp(1.0, -shift);
  for (int i = threadIdx.x; i < 2 * M + 1; i += blockDim.x) {
    unsigned long long s = 0ull;
    for (int k = 0; k < split; ++k) s += base[static_cast<int64_t>(k) * (2 * M + 1) + i];
    fin[i] = i < 2 * M ? __ull2double_rn(s) * inv_scale : static_cast<double>(s);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    double* cp = coef + r * 2 * M;
    const double count = fin[2 * M];
    ap[r] = static_cast<T>(ap_and_coefficients(fin, fin + M, M, count, variant, cp, cp + M));
    npos[r] = static_cast<int64_t>(count);
  }
}

template <typename T, bool kMask>
__global__ void __launch_bounds__(kBackwardThreads)
    backward_kernel(const RowArgs<T> a, const double* __restrict__ slopes, T* __restrict__ G) {
  extern __shared__ double sl[];  // [negatives (M - 1) | positives (M - 1)] of this row
  const int M1 = a.M - 1;
  const int64_t r = blockIdx.x;
  const int64_t N = a.N;
  for (int i = threadIdx.x; i < 2 * M1; i += blockDim.x) sl[i] = slopes[r * 2 * M1 + i];
  __syncthreads();
  const double* neg = sl;
  const double* pos = sl + M1;
  // This block's share of the row's columns.
  const int64_t per = (N + gridDim.y - 1) / gridDim.y;
  const int64_t j0 = static_cast<int64_t>(blockIdx.y) * per;
  const int64_t j1 = j0 + per < N ? j0 + per : N;
  const Bins<T> b = make_bins<T>(a.lo, a.hi, a.M);
  const T* __restrict__ row = a.S + r * N;
  T* __restrict__ g = G + r * N;
  const bool* __restrict__ mrow = kMask ? a.mask + r * N : nullptr;
  const int64_t qlab = kMask ? 0 : a.q_labels[r];
  const int64_t self = (!kMask && a.self_offset >= 0) ? a.self_offset + r : -1;
  for (int64_t j = j0 + threadIdx.x; j < j1; j += blockDim.x) {
    const BinPos<T> q = locate(row[j], b);
    const bool rel = kMask ? mrow[j] : (a.x_labels[j] == qlab);
    const double v = rel ? pos[q.m] : neg[q.m];
    g[j] = (q.grad && j != self) ? static_cast<T>(v) : T(0);
  }
}

// dL/dS_ij of query i for item j (i != j), from its score s.
template <typename T>
__device__ __forceinline__ double grad_of(T s, const Bins<T>& b, const double* __restrict__ slopes,
                                          int64_t i, bool rel) {
  const BinPos<T> q = locate(s, b);
  if (!q.grad) return 0.0;
  const int M1 = b.M - 1;
  return __ldg(slopes + i * 2 * M1 + (rel ? M1 : 0) + q.m);
}

template <typename T>
__global__ void __launch_bounds__(kTile* kTileRows)
    symmetric_kernel(const T* __restrict__ S, const int64_t B, const int64_t* __restrict__ labels,
                     const double* __restrict__ slopes, const int M, const double lo,
                     const double hi, T* __restrict__ H) {
  const int64_t I = blockIdx.y, J = blockIdx.x;
  if (J < I) return;  // tile pairs (I, J) with I <= J; (J, I) is written from here
  __shared__ T sA[kTile][kTile + 1];  // S[I rows, J cols]
  __shared__ T sB[kTile][kTile + 1];  // S[J rows, I cols]
  __shared__ T sO[kTile][kTile + 1];  // H[I rows, J cols]
  __shared__ int64_t li[kTile], lj[kTile];
  const int64_t i0 = I * kTile, j0 = J * kTile;
  const int tx = threadIdx.x, ty = threadIdx.y;
  if (ty == 0) {
    li[tx] = i0 + tx < B ? labels[i0 + tx] : 0;
    lj[tx] = j0 + tx < B ? labels[j0 + tx] : 0;
  }
  for (int y = ty; y < kTile; y += kTileRows) {
    sA[y][tx] = (i0 + y < B && j0 + tx < B) ? S[(i0 + y) * B + j0 + tx] : T(0);
    sB[y][tx] = (j0 + y < B && i0 + tx < B) ? S[(j0 + y) * B + i0 + tx] : T(0);
  }
  __syncthreads();
  const Bins<T> b = make_bins<T>(lo, hi, M);
  for (int y = ty; y < kTile; y += kTileRows) {
    const int64_t i = i0 + y, j = j0 + tx;
    T v = T(0);
    if (i < B && j < B && i != j) {
      const bool rel = li[y] == lj[tx];
      v = static_cast<T>(grad_of(sA[y][tx], b, slopes, i, rel) +
                         grad_of(sB[tx][y], b, slopes, j, rel));
    }
    sO[y][tx] = v;
    if (i < B && j < B) H[i * B + j] = v;
  }
  if (I == J) return;  // the diagonal tile pair is one tile, fully written above
  __syncthreads();
  for (int y = ty; y < kTile; y += kTileRows) {
    const int64_t j = j0 + y, i = i0 + tx;
    if (i < B && j < B) H[j * B + i] = sO[tx][y];
  }
}

int max_bins() { return kSharedBudget / kBytesPerBin; }
constexpr int64_t kMaxRows = 0x7fffffffLL;                // grid.x
constexpr int64_t kMaxSymmetricBatch = 65535LL * kTile;  // tiles per grid dimension

// Sizes the kernels handle, and the pointers they will read (none when R * N == 0).
template <typename T>
bool valid(const RowArgs<T>& a) {
  if (a.M < 2 || a.M > max_bins() || a.R < 0 || a.N < 0 || a.R > kMaxRows) return false;
  if (a.R == 0 || a.N == 0) return true;
  if (a.S == nullptr) return false;
  return a.use_mask ? a.mask != nullptr : (a.q_labels != nullptr && a.x_labels != nullptr);
}

// Blocks per row of the forward pass. Long rows are split so that a few rows still fill the GPU:
// about 1024 blocks in all, each with at least 16 scores per thread, and at most 64 MiB of
// partial histograms. a.forward_blocks_per_row > 0 forces a value (tests).
template <typename T>
int64_t forward_split(const RowArgs<T>& a) {
  if (a.R <= 0 || a.N <= 0) return 1;
  int64_t split = a.forward_blocks_per_row;
  if (split <= 0) {
    const int64_t min_cols = 16LL * kForwardThreads;
    split = (a.N + min_cols - 1) / min_cols;
    const int64_t want = (1024 + a.R - 1) / a.R;
    if (split > want) split = want;
    const int64_t cap = (int64_t{64} << 20) / (8 * (2 * static_cast<int64_t>(a.M) + 1) * a.R);
    if (split > cap) split = cap;
  }
  if (split > 65535) split = 65535;
  return split < 1 ? 1 : split;
}

template <typename T>
size_t workspace_bytes(const RowArgs<T>& a) {
  if (!valid(a)) return 0;
  const int64_t split = forward_split(a);
  return split > 1 ? static_cast<size_t>(a.R * split * (2 * static_cast<int64_t>(a.M) + 1)) * 8 : 0;
}

template <typename T>
cudaError_t launch_forward(const RowArgs<T>& a, T* ap, int64_t* npos, double* coef,
                           int32_t* nonfinite, unsigned long long* workspace,
                           cudaStream_t stream) {
  if (!valid(a)) return cudaErrorInvalidValue;
  if (a.R == 0) return cudaSuccess;
  int copies = kSharedBudget / (kBytesPerBin * a.M);
  if (copies > kForwardWarps) copies = kForwardWarps;
  const size_t smem = static_cast<size_t>(copies) * kBytesPerBin * a.M;
  const int shift = fixed_shift(a.N);
  const int64_t split = forward_split(a);
  if (split == 1) {
    const dim3 grid(static_cast<unsigned>(a.R));
    if (a.use_mask) {
      forward_kernel<T, true, false><<<grid, kForwardThreads, smem, stream>>>(
          a, copies, shift, ap, npos, coef, nonfinite, nullptr);
    } else {
      forward_kernel<T, false, false><<<grid, kForwardThreads, smem, stream>>>(
          a, copies, shift, ap, npos, coef, nonfinite, nullptr);
    }
    return cudaPeekAtLastError();
  }
  if (workspace == nullptr) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(a.R), static_cast<unsigned>(split));
  if (a.use_mask) {
    forward_kernel<T, true, true><<<grid, kForwardThreads, smem, stream>>>(
        a, copies, shift, ap, npos, coef, nonfinite, workspace);
  } else {
    forward_kernel<T, false, true><<<grid, kForwardThreads, smem, stream>>>(
        a, copies, shift, ap, npos, coef, nonfinite, workspace);
  }
  const cudaError_t e = cudaPeekAtLastError();
  if (e != cudaSuccess) return e;
  const size_t fin_smem = (2 * static_cast<size_t>(a.M) + 1) * sizeof(double);
  const dim3 rows(static_cast<unsigned>(a.R));
  forward_finish_kernel<T><<<rows, kForwardThreads, fin_smem, stream>>>(
      a.M, static_cast<int>(split), shift, a.variant, workspace, ap, npos, coef);
  return cudaPeekAtLastError();
}

template <typename T>
cudaError_t launch_backward(const RowArgs<T>& a, const double* slopes, T* G,
                            cudaStream_t stream) {
  if (!valid(a)) return cudaErrorInvalidValue;
  if (a.R == 0 || a.N == 0) return cudaSuccess;
  // Split long rows over several blocks so that a few rows still fill the GPU: aim at about
  // 2048 blocks, each with at least 4 elements per thread.
  const int64_t min_cols = 4LL * kBackwardThreads;
  int64_t split = (a.N + min_cols - 1) / min_cols;
  const int64_t want = (2048 + a.R - 1) / a.R;
  if (split > want) split = want;
  if (split > 65535) split = 65535;
  if (split < 1) split = 1;
  const dim3 grid(static_cast<unsigned>(a.R), static_cast<unsigned>(split));
  const size_t smem = 2 * static_cast<size_t>(a.M - 1) * sizeof(double);
  if (a.use_mask) {
    backward_kernel<T, true><<<grid, kBackwardThreads, smem, stream>>>(a, slopes, G);
  } else {
    backward_kernel<T, false><<<grid, kBackwardThreads, smem, stream>>>(a, slopes, G);
  }
  return cudaPeekAtLastError();
}

template <typename T>
cudaError_t launch_symmetric(const T* S, int64_t B, const int64_t* labels, const double* slopes,
                             int M, double lo, double hi, T* H, cudaStream_t stream) {
  if (M < 2 || B < 0 || B > kMaxSymmetricBatch) return cudaErrorInvalidValue;
  if (B == 0) return cudaSuccess;
  const int64_t tiles = (B + kTile - 1) / kTile;
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(tiles));
  const dim3 block(kTile, kTileRows);
  symmetric_kernel<T><<<grid, block, 0, stream>>>(S, B, labels, slopes, M, lo, hi, H);
  return cudaPeekAtLastError();
}

}  // namespace

// One copy of the forward histograms must fit; the backward slope table (16 (M - 1) bytes) is
// smaller.
int max_num_bins() { return max_bins(); }
int64_t max_rows() { return kMaxRows; }
int64_t max_symmetric_batch() { return kMaxSymmetricBatch; }

size_t forward_workspace_bytes(const RowArgs<float>& a) { return workspace_bytes(a); }
size_t forward_workspace_bytes(const RowArgs<double>& a) { return workspace_bytes(a); }
cudaError_t forward(const RowArgs<float>& a, float* ap, int64_t* npos, double* coef,
                    int32_t* nonfinite, void* workspace, cudaStream_t stream) {
  return launch_forward(a, ap, npos, coef, nonfinite, static_cast<unsigned long long*>(workspace),
                        stream);
}
cudaError_t forward(const RowArgs<double>& a, double* ap, int64_t* npos, double* coef,
                    int32_t* nonfinite, void* workspace, cudaStream_t stream) {
  return launch_forward(a, ap, npos, coef, nonfinite, static_cast<unsigned long long*>(workspace),
                        stream);
}
cudaError_t backward(const RowArgs<float>& a, const double* slopes, float* G,
                     cudaStream_t stream) {
  return launch_backward(a, slopes, G, stream);
}
cudaError_t backward(const RowArgs<double>& a, const double* slopes, double* G,
                     cudaStream_t stream) {
  return launch_backward(a, slopes, G, stream);
}
cudaError_t backward_symmetric(const float* S, int64_t B, const int64_t* labels,
                               const double* slopes, int M, double lo, double hi, float* H,
                               cudaStream_t stream) {
  return launch_symmetric(S, B, labels, slopes, M, lo, hi, H, stream);
}
cudaError_t backward_symmetric(const double* S, int64_t B, const int64_t* labels,
                               const double* slopes, int M, double lo, double hi, double* H,
                               cudaStream_t stream) {
  return launch_symmetric(S, B, labels, slopes, M, lo, hi, H, stream);
}

}  // namespace cuda
}  // namespace apl
