// C entry points over the emulated CUDA launchers, for ctypes (tests/cuda/test_emulator.py). The kernel
// source (csrc/cuda/ap_kernels.cu with its launches and extern shared arrays rewritten for the
// emulator by transform.py) is included from the path given as APL_EMU_KERNELS.
#include "cuda_runtime_api.h"

#include APL_EMU_KERNELS

#include <vector>

namespace {
template <typename T>
apl::cuda::RowArgs<T> args(const T* S, int64_t R, int64_t N, const int64_t* ql, const int64_t* xl,
                           int64_t self_offset, const bool* mask, int use_mask, int M, double lo,
                           double hi, int64_t variant) {
  apl::cuda::RowArgs<T> a;
  a.S = S;
  a.R = R;
  a.N = N;
  a.q_labels = ql;
  a.x_labels = xl;
  a.self_offset = self_offset;
  a.use_mask = use_mask != 0;
  a.mask = mask;
  a.M = M;
  a.lo = lo;
  a.hi = hi;
  a.variant = variant;
  return a;
}

// split > 0 forces the blocks per row of the forward pass (0: the launcher's choice); the
// workspace of split rows is allocated here, as the ATen glue does on the device.
template <typename T>
int forward(const T* S, int64_t R, int64_t N, const int64_t* ql, const int64_t* xl,
            int64_t self_offset, const bool* mask, int use_mask, int M, double lo, double hi,
            int64_t variant, T* ap, int64_t* npos, double* coef, int32_t* nonfinite, int split) {
  cudaGetLastError();  // each call starts clean, as after the glue's C10_CUDA_KERNEL_LAUNCH_CHECK
  auto a = args<T>(S, R, N, ql, xl, self_offset, mask, use_mask, M, lo, hi, variant);
  a.forward_blocks_per_row = split;
  std::vector<unsigned long long> ws((apl::cuda::forward_workspace_bytes(a) + 7) / 8);
  return apl::cuda::forward(a, ap, npos, coef, nonfinite, ws.empty() ? nullptr : ws.data(), nullptr);
}

template <typename T>
int backward(const T* S, int64_t R, int64_t N, const int64_t* ql, const int64_t* xl,
             int64_t self_offset, const bool* mask, int use_mask, int M, double lo, double hi,
             const double* slopes, T* G) {
  cudaGetLastError();
  return apl::cuda::backward(args<T>(S, R, N, ql, xl, self_offset, mask, use_mask, M, lo, hi, 0),
                             slopes, G, nullptr);
}
}  // namespace

extern "C" {
int apl_emu_forward_f32(const float* S, int64_t R, int64_t N, const int64_t* ql, const int64_t* xl,
                        int64_t so, const bool* mask, int use_mask, int M, double lo, double hi,
                        int64_t variant, float* ap, int64_t* npos, double* coef, int32_t* nf,
                        int split) {
  return forward(S, R, N, ql, xl, so, mask, use_mask, M, lo, hi, variant, ap, npos, coef, nf, split);
}
int apl_emu_forward_f64(const double* S, int64_t R, int64_t N, const int64_t* ql,
                        const int64_t* xl, int64_t so, const bool* mask, int use_mask, int M,
                        double lo, double hi, int64_t variant, double* ap, int64_t* npos,
                        double* coef, int32_t* nf, int split) {
  return forward(S, R, N, ql, xl, so, mask, use_mask, M, lo, hi, variant, ap, npos, coef, nf, split);
}
int apl_emu_backward_f32(const float* S, int64_t R, int64_t N, const int64_t* ql,
                         const int64_t* xl, int64_t so, const bool* mask, int use_mask, int M,
                         double lo, double hi, const double* slopes, float* G) {
  return backward(S, R, N, ql, xl, so, mask, use_mask, M, lo, hi, slopes, G);
}
int apl_emu_backward_f64(const double* S, int64_t R, int64_t N, const int64_t* ql,
                         const int64_t* xl, int64_t so, const bool* mask, int use_mask, int M,
                         double lo, double hi, const double* slopes, double* G) {
  return backward(S, R, N, ql, xl, so, mask, use_mask, M, lo, hi, slopes, G);
}
int apl_emu_symmetric_f32(const float* S, int64_t B, const int64_t* labels, const double* slopes,
                          int M, double lo, double hi, float* H) {
  cudaGetLastError();
  return apl::cuda::backward_symmetric(S, B, labels, slopes, M, lo, hi, H, nullptr);
}
int apl_emu_symmetric_f64(const double* S, int64_t B, const int64_t* labels,
                          const double* slopes, int M, double lo, double hi, double* H) {
  cudaGetLastError();
  return apl::cuda::backward_symmetric(S, B, labels, slopes, M, lo, hi, H, nullptr);
}
int apl_emu_max_num_bins() { return apl::cuda::max_num_bins(); }
int64_t apl_emu_max_rows() { return apl::cuda::max_rows(); }
int64_t apl_emu_max_symmetric_batch() { return apl::cuda::max_symmetric_batch(); }
const char* apl_emu_last_message() { return emu::last_message(); }
}
