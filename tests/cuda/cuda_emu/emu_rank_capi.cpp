// C entry points over the emulated rank-surrogate launcher, for ctypes
// (tests/cuda/test_emulator_rank.py). The kernel source (csrc/cuda/rank_kernels.cu rewritten for the
// emulator by transform.py) is included from the path given as APL_EMU_KERNELS. A file of its own:
// ap_kernels.cu and rank_kernels.cu both have an anonymous namespace in apl::cuda with names of the
// same kind, so they are not included into one translation unit.
#include "cuda_runtime_api.h"

#include APL_EMU_KERNELS

#include <algorithm>
#include <vector>

namespace {
// num_ks beyond rank_max_ks() is passed on (the launcher must refuse it); only the entries that fit
// are copied. spill_blocks > 0 forces the blocks of the many-positives kernel.
template <typename T>
apl::cuda::RankRowArgs<T> args(const T* S, int64_t R, int64_t N, const int64_t* ql, const int64_t* xl,
                               int64_t self_offset, int64_t kind, double tau, const double* ks,
                               const double* kts, int num_ks, int64_t mode, int64_t spill_blocks) {
  apl::cuda::RankRowArgs<T> a;
  a.S = S;
  a.R = R;
  a.N = N;
  a.q_labels = ql;
  a.x_labels = xl;
  a.self_offset = self_offset;
  a.kind = kind;
  a.temperature = tau;
  a.query_mode = mode;
  a.num_ks = num_ks;
  for (int k = 0; k < std::min(num_ks, apl::cuda::kRankMaxKs); ++k) {
    a.ks[k] = ks[k];
    a.k_temperatures[k] = kts[k];
  }
  a.spill_blocks = spill_blocks;
  return a;
}

// The workspace is allocated here, as the ATen glue does on the device.
template <typename T>
int forward(const T* S, int64_t R, int64_t N, const int64_t* ql, const int64_t* xl, int64_t so, int64_t kind,
            double tau, const double* ks, const double* kts, int num_ks, int64_t mode, int64_t spill_blocks,
            T* value, int64_t* npos, int32_t* nf, T* U) {
  cudaGetLastError();  // each call starts clean, as after the glue's C10_CUDA_KERNEL_LAUNCH_CHECK
  const auto a = args<T>(S, R, N, ql, xl, so, kind, tau, ks, kts, num_ks, mode, spill_blocks);
  std::vector<double> ws((apl::cuda::rank_forward_workspace_bytes(a) + 7) / 8);
  return apl::cuda::rank_forward(a, value, npos, nf, U, ws.empty() ? nullptr : ws.data(), nullptr);
}
}  // namespace

extern "C" {
// The launcher's spill grid for R rows of N scores on a GPU of `multiprocessors` SMs (float32 when
// f32, else float64), with a valid row set-up otherwise.
int64_t apl_emu_rank_spill_blocks(int64_t R, int64_t N, int64_t multiprocessors, int f32) {
  static const int64_t label = 0;
  auto fill = [&](auto a) {
    a.R = R, a.N = N, a.q_labels = &label, a.x_labels = &label, a.multiprocessors = multiprocessors;
    return apl::cuda::rank_spill_blocks(a);
  };
  static const float sf = 0.0f;
  static const double sd = 0.0;
  if (f32) {
    apl::cuda::RankRowArgs<float> a;
    a.S = &sf;
    return fill(a);
  }
  apl::cuda::RankRowArgs<double> a;
  a.S = &sd;
  return fill(a);
}

int apl_emu_rank_forward_f32(const float* S, int64_t R, int64_t N, const int64_t* ql, const int64_t* xl,
                             int64_t so, int64_t kind, double tau, const double* ks, const double* kts,
                             int num_ks, int64_t mode, int64_t spill_blocks, float* value, int64_t* npos,
                             int32_t* nf, float* U) {
  return forward(S, R, N, ql, xl, so, kind, tau, ks, kts, num_ks, mode, spill_blocks, value, npos, nf, U);
}
int apl_emu_rank_forward_f64(const double* S, int64_t R, int64_t N, const int64_t* ql, const int64_t* xl,
                             int64_t so, int64_t kind, double tau, const double* ks, const double* kts,
                             int num_ks, int64_t mode, int64_t spill_blocks, double* value, int64_t* npos,
                             int32_t* nf, double* U) {
  return forward(S, R, N, ql, xl, so, kind, tau, ks, kts, num_ks, mode, spill_blocks, value, npos, nf, U);
}
int apl_emu_rank_max_ks() { return apl::cuda::rank_max_ks(); }
int64_t apl_emu_rank_max_rows() { return apl::cuda::rank_max_rows(); }
int apl_emu_rank_table_positives() { return apl::cuda::rank_table_positives(); }
const char* apl_emu_last_message() { return emu::last_message(); }
}
