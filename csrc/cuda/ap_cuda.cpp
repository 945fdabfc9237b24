// CUDA row kernels behind RowKernels, and the CUDA registration of the apl ops. The op bodies
// (GEMMs, streaming, dtype handling) are the device-agnostic ones of ap_ops.cpp; this file only
// passes pointers, sizes and the current stream to the launchers of ap_kernels.cu.
// Only c10/cuda headers (no ATen/cuda/CUDAContext.h, which pulls in cuBLAS/cuSPARSE headers):
// c10::cuda::getCurrentCUDAStream() is the function at::cuda::getCurrentCUDAStream() names, and
// this keeps the file syntax-checkable with a CPU build of torch and a bare CUDA toolkit.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../ap_ops.h"
#include "../device_ops.h"
#include "ap_kernels.cuh"

namespace apl {
namespace {

void check_bins(int64_t M) {
  TORCH_CHECK_VALUE(M >= 2 && M <= apl::cuda::max_num_bins(), "apl: the CUDA kernels handle ",
                    "num_bins in [2, ", apl::cuda::max_num_bins(), "], got ", M,
                    " (use the \"torch\" backend for more bins)");
}

void check_tensor(const at::Tensor& t, at::ScalarType dtype, const at::Tensor& like,
                  const char* what) {
  TORCH_CHECK(t.is_cuda() && t.device() == like.device(), "apl: ", what, " must be on ",
              like.device(), ", got ", t.device());
  TORCH_CHECK(t.scalar_type() == dtype, "apl: ", what, " must be ", dtype, ", got ",
              t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), "apl: ", what, " must be contiguous");
}

void check_scores(const at::Tensor& S) {
  TORCH_CHECK(S.is_cuda() && S.dim() == 2 && S.is_contiguous(),
              "apl: scores must be a contiguous 2-D CUDA tensor");
  TORCH_CHECK(S.scalar_type() == at::kFloat || S.scalar_type() == at::kDouble,
              "apl: the CUDA row kernels take float32 or float64 scores, got ", S.scalar_type());
}

template <typename T>
apl::cuda::RowArgs<T> row_args(const at::Tensor& S, const BinParams& p) {
  apl::cuda::RowArgs<T> a;
  a.S = S.data_ptr<T>();
  a.R = S.size(0);
  a.N = S.size(1);
  a.M = static_cast<int>(p.M);
  a.lo = p.lo;
  a.hi = p.hi;
  a.variant = p.variant;
  return a;
}

template <typename T>
void run_forward(apl::cuda::RowArgs<T> a, const BinParams& p, at::Tensor& ap, at::Tensor& npos,
                 at::Tensor& coef, at::Tensor& nonfinite) {
  check_tensor(ap, ap.scalar_type(), coef, "ap");
  TORCH_CHECK(ap.scalar_type() == c10::CppTypeToScalarType<T>::value && ap.numel() == a.R,
              "apl: ap must hold R values in the scores' dtype");
  check_tensor(npos, at::kLong, coef, "npos");
  check_tensor(coef, at::kDouble, coef, "coef");
  check_tensor(nonfinite, at::kInt, coef, "nonfinite");
  TORCH_CHECK(npos.numel() == a.R && coef.numel() == a.R * 2 * p.M && nonfinite.numel() >= 1,
              "apl: forward outputs have the wrong sizes");
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  // Partial histograms of split rows, from the caching allocator (allowed under graph capture).
  const size_t ws_bytes = apl::cuda::forward_workspace_bytes(a);
  at::Tensor ws;
  if (ws_bytes > 0) ws = at::empty({static_cast<int64_t>(ws_bytes)}, coef.options().dtype(at::kByte));
  C10_CUDA_CHECK(apl::cuda::forward(a, ap.data_ptr<T>(), npos.data_ptr<int64_t>(),
                                    coef.data_ptr<double>(), nonfinite.data_ptr<int32_t>(),
                                    ws_bytes > 0 ? ws.data_ptr() : nullptr, stream));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T>
void run_backward(const apl::cuda::RowArgs<T>& a, const at::Tensor& slopes, const BinParams& p,
                  at::Tensor& G) {
  check_tensor(slopes, at::kDouble, G, "slopes");
  TORCH_CHECK(slopes.numel() == a.R * 2 * (p.M - 1), "apl: slopes must be (R, 2, M - 1)");
  check_tensor(G, c10::CppTypeToScalarType<T>::value, G, "G");
  TORCH_CHECK(G.numel() == a.R * a.N, "apl: G must have the shape of the scores");
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  C10_CUDA_CHECK(apl::cuda::backward(a, slopes.data_ptr<double>(), G.data_ptr<T>(), stream));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void check_labels_pair(const at::Tensor& S, const at::Tensor& q_labels,
                       const at::Tensor& x_labels) {
  check_tensor(q_labels, at::kLong, S, "query labels");
  check_tensor(x_labels, at::kLong, S, "item labels");
  TORCH_CHECK(q_labels.numel() == S.size(0) && x_labels.numel() == S.size(1),
              "apl: labels do not match the scores' shape ", S.sizes());
}

void check_mask(const at::Tensor& S, const at::Tensor& relevance) {
  check_tensor(relevance, at::kBool, S, "relevance");
  TORCH_CHECK(relevance.sizes() == S.sizes(), "apl: relevance must have the shape of scores");
}

void forward_labels(const at::Tensor& S, const at::Tensor& q_labels, const at::Tensor& x_labels,
                    int64_t self_offset, const BinParams& prm, at::Tensor& ap, at::Tensor& npos,
                    at::Tensor& coef, at::Tensor& nonfinite) {
  check_scores(S);
  check_bins(prm.M);
  check_labels_pair(S, q_labels, x_labels);
  AT_DISPATCH_FLOATING_TYPES(S.scalar_type(), "apl_cuda_forward_labels", [&] {
    auto a = row_args<scalar_t>(S, prm);
    a.q_labels = q_labels.data_ptr<int64_t>();
    a.x_labels = x_labels.data_ptr<int64_t>();
    a.self_offset = self_offset;
    run_forward<scalar_t>(a, prm, ap, npos, coef, nonfinite);
  });
}

void forward_mask(const at::Tensor& S, const at::Tensor& relevance, const BinParams& prm,
                  at::Tensor& ap, at::Tensor& npos, at::Tensor& coef, at::Tensor& nonfinite) {
  check_scores(S);
  check_bins(prm.M);
  check_mask(S, relevance);
  AT_DISPATCH_FLOATING_TYPES(S.scalar_type(), "apl_cuda_forward_mask", [&] {
    auto a = row_args<scalar_t>(S, prm);
    a.use_mask = true;
    a.mask = relevance.data_ptr<bool>();
    run_forward<scalar_t>(a, prm, ap, npos, coef, nonfinite);
  });
}

void backward_labels(const at::Tensor& S, const at::Tensor& q_labels, const at::Tensor& x_labels,
                     int64_t self_offset, const at::Tensor& slopes, const BinParams& prm,
                     at::Tensor& G) {
  check_scores(S);
  check_bins(prm.M);
  check_labels_pair(S, q_labels, x_labels);
  AT_DISPATCH_FLOATING_TYPES(S.scalar_type(), "apl_cuda_backward_labels", [&] {
    auto a = row_args<scalar_t>(S, prm);
    a.q_labels = q_labels.data_ptr<int64_t>();
    a.x_labels = x_labels.data_ptr<int64_t>();
    a.self_offset = self_offset;
    run_backward<scalar_t>(a, slopes, prm, G);
  });
}

void backward_mask(const at::Tensor& S, const at::Tensor& relevance, const at::Tensor& slopes,
                   const BinParams& prm, at::Tensor& G) {
  check_scores(S);
  check_bins(prm.M);
  check_mask(S, relevance);
  AT_DISPATCH_FLOATING_TYPES(S.scalar_type(), "apl_cuda_backward_mask", [&] {
    auto a = row_args<scalar_t>(S, prm);
    a.use_mask = true;
    a.mask = relevance.data_ptr<bool>();
    run_backward<scalar_t>(a, slopes, prm, G);
  });
}

void backward_self_symmetric(const at::Tensor& S, const at::Tensor& labels,
                             const at::Tensor& slopes, const BinParams& prm, at::Tensor& H) {
  check_scores(S);
  check_bins(prm.M);
  const int64_t B = S.size(0);
  TORCH_CHECK(S.size(1) == B, "apl: the symmetric backward needs square scores");
  check_tensor(labels, at::kLong, S, "labels");
  TORCH_CHECK(labels.numel() == B, "apl: labels must have B entries");
  check_tensor(slopes, at::kDouble, S, "slopes");
  TORCH_CHECK(slopes.numel() == B * 2 * (prm.M - 1), "apl: slopes must be (B, 2, M - 1)");
  check_tensor(H, S.scalar_type(), S, "H");
  TORCH_CHECK(H.sizes() == S.sizes(), "apl: H must have the shape of the scores");
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(S.scalar_type(), "apl_cuda_backward_symmetric", [&] {
    C10_CUDA_CHECK(apl::cuda::backward_symmetric(
        S.data_ptr<scalar_t>(), B, labels.data_ptr<int64_t>(), slopes.data_ptr<double>(),
        static_cast<int>(prm.M), prm.lo, prm.hi, H.data_ptr<scalar_t>(), stream));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// No host synchronisation (the non-finite flag's .item()) while the current stream is being
// captured into a CUDA graph: the check is skipped then.
bool can_sync() {
  return c10::cuda::currentStreamCaptureStatusMayInitCtx() == c10::cuda::CaptureStatus::None;
}

const RowKernels kCudaKernels{forward_labels,
                              forward_mask,
                              backward_labels,
                              backward_mask,
                              backward_self_symmetric,
                              can_sync,
                              nullptr,
                              apl::cuda::max_rows(),
                              apl::cuda::max_symmetric_batch()};


}  // namespace

// Every op takes a device guard on its inputs' device, so that kernels, the current stream and
// allocations are those of that device.
TORCH_LIBRARY_IMPL(apl, CUDA, m) { DeviceOps<kCudaKernels, c10::cuda::CUDAGuard>::register_all(m); }

}  // namespace apl
