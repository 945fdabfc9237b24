// CUDA row kernel behind RankKernels, and the CUDA registration of the rank-surrogate ops. The op
// bodies (GEMMs, streaming, dtype handling) are the device-agnostic ones of rank_ops.cpp; this file
// only checks and passes pointers, sizes, the parameters and the current stream to the launcher of
// rank_kernels.cu. Only c10/cuda headers, as in ap_cuda.cpp (syntax-checkable with a CPU build of
// torch and a bare CUDA toolkit).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../rank_device_ops.h"
#include "../rank_ops.h"
#include "rank_kernels.cuh"

namespace apl {
namespace {

void check_tensor(const at::Tensor& t, at::ScalarType dtype, const at::Tensor& like, int64_t numel,
                  const char* what) {
  TORCH_CHECK(t.is_cuda() && t.device() == like.device(), "apl: ", what, " must be on ", like.device(), ", got ",
              t.device());
  TORCH_CHECK(t.scalar_type() == dtype, "apl: ", what, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous() && t.numel() == numel, "apl: ", what, " must be contiguous with ", numel,
              " elements, got ", t.sizes());
}

template <typename T>
apl::cuda::RankRowArgs<T> rank_args(const at::Tensor& S, const at::Tensor& q_labels, const at::Tensor& x_labels,
                                    int64_t self_offset, const RankParams& p) {
  const int64_t nk = static_cast<int64_t>(p.ks.size());
  TORCH_CHECK_VALUE(nk <= apl::cuda::rank_max_ks() && p.k_temperatures.size() == p.ks.size(),
                    "apl: the CUDA kernel takes at most ", apl::cuda::rank_max_ks(),
                    " values of k (each with a temperature), got ", nk);
  apl::cuda::RankRowArgs<T> a;
  a.S = S.data_ptr<T>();
  a.R = S.size(0);
  a.N = S.size(1);
  a.q_labels = q_labels.data_ptr<int64_t>();
  a.x_labels = x_labels.data_ptr<int64_t>();
  a.self_offset = self_offset;
  a.kind = p.kind;
  a.temperature = p.temperature;
  a.query_mode = p.query_mode;
  a.num_ks = static_cast<int>(nk);
  for (int64_t k = 0; k < nk; ++k) {
    a.ks[k] = p.ks[k];
    a.k_temperatures[k] = p.k_temperatures[k];
  }
  if (a.N > apl::cuda::rank_table_positives()) {  // a row may spill: its grid aims at the SM count
    int sms = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, S.get_device()));
    a.multiprocessors = sms;
  }
  return a;
}

template <typename T>
void run_forward(const apl::cuda::RankRowArgs<T>& a, const at::Tensor& S, at::Tensor& value, at::Tensor& npos,
                 at::Tensor& nonfinite, at::Tensor& U) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  // Per-positive values of rows with many positives, from the caching allocator (allowed under
  // graph capture); sized from the shapes alone, no synchronisation.
  const size_t ws_bytes = apl::cuda::rank_forward_workspace_bytes(a);
  at::Tensor ws;
  if (ws_bytes > 0) ws = at::empty({static_cast<int64_t>(ws_bytes)}, S.options().dtype(at::kByte));
  C10_CUDA_CHECK(apl::cuda::rank_forward(a, value.data_ptr<T>(), npos.data_ptr<int64_t>(),
                                         nonfinite.data_ptr<int32_t>(), U.data_ptr<T>(),
                                         ws_bytes > 0 ? ws.data_ptr() : nullptr, stream));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// RankKernels::forward. U may be S itself (the kernel reads each row before overwriting it).
void forward(const at::Tensor& S, const at::Tensor& q_labels, const at::Tensor& x_labels, int64_t self_offset,
             const RankParams& p, at::Tensor& value, at::Tensor& npos, at::Tensor& nonfinite, at::Tensor& U) {
  TORCH_CHECK(S.is_cuda() && S.dim() == 2 && S.is_contiguous(), "apl: scores must be a contiguous 2-D CUDA tensor");
  TORCH_CHECK(S.scalar_type() == at::kFloat || S.scalar_type() == at::kDouble,
              "apl: the CUDA rank kernel takes float32 or float64 scores, got ", S.scalar_type());
  const int64_t R = S.size(0), N = S.size(1);
  check_tensor(q_labels, at::kLong, S, R, "query labels");
  check_tensor(x_labels, at::kLong, S, N, "item labels");
  check_tensor(value, S.scalar_type(), S, R, "value");
  check_tensor(npos, at::kLong, S, R, "npos");
  check_tensor(U, S.scalar_type(), S, R * N, "U");
  TORCH_CHECK(nonfinite.is_cuda() && nonfinite.device() == S.device() && nonfinite.scalar_type() == at::kInt &&
                  nonfinite.numel() >= 1,
              "apl: nonfinite must be an int32 tensor on ", S.device());
  AT_DISPATCH_FLOATING_TYPES(S.scalar_type(), "apl_cuda_rank_forward", [&] {
    run_forward<scalar_t>(rank_args<scalar_t>(S, q_labels, x_labels, self_offset, p), S, value, npos, nonfinite,
                          U);
  });
}

// No host synchronisation (the non-finite flag's .item()) while the current stream is being
// captured into a CUDA graph: the check is skipped then.
bool can_sync() {
  return c10::cuda::currentStreamCaptureStatusMayInitCtx() == c10::cuda::CaptureStatus::None;
}

const RankKernels kCudaRankKernels{forward, nullptr /* no symmetric product: two GEMMs */, can_sync,
                                   apl::cuda::rank_max_rows()};

}  // namespace

// Every op takes a device guard on its inputs' device (kernels, current stream, allocations).
TORCH_LIBRARY_IMPL(apl, CUDA, m) { RankDeviceOps<kCudaRankKernels, c10::cuda::CUDAGuard>::register_all(m); }

}  // namespace apl
