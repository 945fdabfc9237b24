// CUDA row kernels of the quantized AP loss: a C-style launcher API on raw pointers.
//
// This header includes no torch/ATen header and declares no __global__ function, so both nvcc
// (ap_kernels.cu) and the host compiler (ap_cuda.cpp, the ATen glue) can include it.
// Tensor contracts are those of csrc/ap_ops.h (RowKernels):
//   S          (R, N) scores, row-major contiguous, float or double (the compute dtype T).
//   labels     q_labels (R) and x_labels (N) int64; with self_offset >= 0, column self_offset + r
//              is query r itself and is left out of its list (its gradient is 0).
//   mask       (R, N) bool, row-major contiguous (used instead of labels when use_mask).
//   Pointers of empty tensors may be null.
//   ap (R) T, npos (R) int64, coef (R, 2, M) double = [dAP/dp, dAP/dn], nonfinite (1) int32:
//              set to 1 when a score (the self column included) is NaN or Inf, never cleared.
//   slopes     (R, 2, M - 1) double = [negatives, positives] (ap_math.h `slopes`).
//   G / H      (R, N) / (B, B) in T.
// Every launcher enqueues its work on `stream` and returns cudaSuccess, cudaErrorInvalidValue
// when the arguments cannot be handled (see max_num_bins), or the launch error left by the
// runtime (not cleared, so C10_CUDA_KERNEL_LAUNCH_CHECK still sees it). Nothing here
// synchronises, allocates or changes device attributes, so every launcher may be captured
// into a CUDA graph.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace apl {
namespace cuda {

template <typename T>
struct RowArgs {
  const T* S = nullptr;
  int64_t R = 0, N = 0;
  const int64_t* q_labels = nullptr;  // labels form
  const int64_t* x_labels = nullptr;
  int64_t self_offset = -1;
  bool use_mask = false;       // mask form (relevance from `mask`) instead of labels
  const bool* mask = nullptr;  // may be null when R * N == 0
  int M = 20;
  double lo = -1.0, hi = 1.0;
  int64_t variant = 0;
  int64_t forward_blocks_per_row = 0;  // 0: chosen by the forward launcher (forced by tests)
};

// The largest number of bins the kernels handle (3056: one copy of the forward histograms,
// 16 bytes per bin, must fit in the 48 KiB of shared memory a block gets without an opt-in).
int max_num_bins();

// Launch limits (checked by the ops with a ValueError naming them; a launcher returns
// cudaErrorInvalidValue beyond them): query rows per forward/backward launch (grid.x), and B of
// the self-retrieval symmetric backward (B / 32 tiles per grid dimension, at most 65535).
int64_t max_rows();
int64_t max_symmetric_batch();

// Binning, AP and coefficients of every row. Short rows: one block per row. Long rows (few of
// them): split over several blocks, whose exact integer histograms are summed by a second kernel;
// that needs forward_workspace_bytes(a) bytes of device memory at `workspace` (0: may be null).
size_t forward_workspace_bytes(const RowArgs<float>& a);
size_t forward_workspace_bytes(const RowArgs<double>& a);
cudaError_t forward(const RowArgs<float>& a, float* ap, int64_t* npos, double* coef,
                    int32_t* nonfinite, void* workspace, cudaStream_t stream);
cudaError_t forward(const RowArgs<double>& a, double* ap, int64_t* npos, double* coef,
                    int32_t* nonfinite, void* workspace, cudaStream_t stream);

// G = dL/dS, row by row (labels with optional self-exclusion, or mask).
cudaError_t backward(const RowArgs<float>& a, const double* slopes, float* G,
                     cudaStream_t stream);
cudaError_t backward(const RowArgs<double>& a, const double* slopes, double* G,
                     cudaStream_t stream);

// Self retrieval, S square (B, B): H = G + G^T with a zero diagonal, by 32 x 32 tile pairs.
cudaError_t backward_symmetric(const float* S, int64_t B, const int64_t* labels,
                               const double* slopes, int M, double lo, double hi, float* H,
                               cudaStream_t stream);
cudaError_t backward_symmetric(const double* S, int64_t B, const int64_t* labels,
                               const double* slopes, int M, double lo, double hi, double* H,
                               cudaStream_t stream);

}  // namespace cuda
}  // namespace apl
