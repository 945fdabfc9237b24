// CUDA row kernel of the rank surrogates (Smooth-AP, Recall@k): a C-style launcher API on raw
// pointers, like ap_kernels.cuh. No torch/ATen header and no __global__ declaration, so both nvcc
// (rank_kernels.cu) and the host compiler (rank_cuda.cpp, the ATen glue) can include it.
// Tensor contracts are those of RankKernels::forward (csrc/rank_ops.h):
//   S          (R, N) scores, row-major contiguous, float or double (the compute dtype T).
//   q_labels   (R), x_labels (N) int64; item j is a positive of query r when the labels match.
//   self_offset >= 0: column self_offset + r is query r itself, placed as query_mode says; -1: none.
//   value (R) T, npos (R) int64, nonfinite (1) int32 (set to 1 when a score is NaN or Inf, never
//   cleared), U (R, N) T = d value_r / d S; U may be S itself (each row is read before it is
//   overwritten). Pointers of empty tensors may be null.
// The launcher enqueues its work on `stream` and returns cudaSuccess, cudaErrorInvalidValue when the
// arguments cannot be handled (see rank_max_ks, rank_max_rows), or the launch error left by the
// runtime (not cleared, so C10_CUDA_KERNEL_LAUNCH_CHECK still sees it). It never synchronises,
// allocates or changes device attributes, so it may be captured into a CUDA graph.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace apl {
namespace cuda {

// The most k values of Recall@k a launch takes (they travel in the kernel's arguments).
constexpr int kRankMaxKs = 32;

template <typename T>
struct RankRowArgs {
  const T* S = nullptr;
  int64_t R = 0, N = 0;
  const int64_t* q_labels = nullptr;
  const int64_t* x_labels = nullptr;
  int64_t self_offset = -1;
  int64_t kind = 0;           // rank::Kind
  double temperature = 0.01;  // tau
  int64_t query_mode = 0;     // rank::QueryMode
  int num_ks = 0;             // Recall@k: ks[0, num_ks) and their temperatures
  double ks[kRankMaxKs] = {};
  double k_temperatures[kRankMaxKs] = {};
  int64_t spill_blocks = 0;     // blocks of the many-positives kernel; 0: the launcher's choice (tests)
  int64_t multiprocessors = 0;  // the GPU's SM count, which the spill kernel's grid aims at (0: unknown)
};

int rank_max_ks();
// Query rows per launch (grid.x).
int64_t rank_max_rows();
// Positives per row held in shared memory; rows with more keep their per-positive values in the
// workspace (rank_forward_workspace_bytes).
int rank_table_positives();

// Blocks of the spill kernel (0: no row can have more than rank_table_positives() positives). Each
// block walks its share of the long rows with a workspace slice of 64 N bytes; the grid aims at one
// block per multiprocessor (at least what 64 MiB of workspace holds), but the workspace never
// exceeds the larger of 64 MiB and the scores' own size, and there is at most one block per row.
int64_t rank_spill_blocks(const RankRowArgs<float>& a);
int64_t rank_spill_blocks(const RankRowArgs<double>& a);

// Device memory the launcher needs at `workspace` (0: it may be null): per-positive values of the
// rows with more than rank_table_positives() positives, for rank_spill_blocks() such rows at once.
size_t rank_forward_workspace_bytes(const RankRowArgs<float>& a);
size_t rank_forward_workspace_bytes(const RankRowArgs<double>& a);

// value, npos, U of every row, nonfinite when a score is NaN or Inf (rank_cpu.cpp's math).
cudaError_t rank_forward(const RankRowArgs<float>& a, float* value, int64_t* npos, int32_t* nonfinite,
                         float* U, void* workspace, cudaStream_t stream);
cudaError_t rank_forward(const RankRowArgs<double>& a, double* value, int64_t* npos, int32_t* nonfinite,
                         double* U, void* workspace, cudaStream_t stream);

}  // namespace cuda
}  // namespace apl
