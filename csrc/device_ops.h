// Registration of the apl ops for one device: the thin functions that bind a device's RowKernels
// to the device-agnostic op bodies, written once for every device.
#pragma once

#include <torch/library.h>

#include "ap_ops.h"

namespace apl {

struct NoDeviceGuard {
  explicit NoDeviceGuard(c10::Device) {}
};

// K: the device's row kernels. Guard: taken on the inputs' device for every op (CUDA needs one so
// that kernels, streams and allocations land on that device).
template <const RowKernels& K, typename Guard = NoDeviceGuard>
struct DeviceOps {
  static ForwardOut ap_self(const at::Tensor& e, const at::Tensor& l, int64_t M, double lo,
                            double hi, int64_t v, int64_t c) {
    const Guard guard(e.device());
    return ap_self_impl(K, e, l, M, lo, hi, v, c);
  }
  static at::Tensor ap_self_backward(const at::Tensor& g, const at::Tensor& e, const at::Tensor& l,
                                     const at::Tensor& coef, const at::Tensor& s, int64_t M,
                                     double lo, double hi, int64_t c) {
    const Guard guard(e.device());
    return ap_self_backward_impl(K, g, e, l, coef, s, M, lo, hi, c);
  }
  static ForwardOut ap_ref(const at::Tensor& q, const at::Tensor& ql, const at::Tensor& x,
                           const at::Tensor& xl, int64_t M, double lo, double hi, int64_t v,
                           int64_t c, int64_t o) {
    const Guard guard(q.device());
    return ap_ref_impl(K, q, ql, x, xl, M, lo, hi, v, c, o);
  }
  static std::tuple<at::Tensor, at::Tensor> ap_ref_backward(
      const at::Tensor& g, const at::Tensor& q, const at::Tensor& ql, const at::Tensor& x,
      const at::Tensor& xl, const at::Tensor& coef, const at::Tensor& s, int64_t M, double lo,
      double hi, int64_t c, int64_t o) {
    const Guard guard(q.device());
    return ap_ref_backward_impl(K, g, q, ql, x, xl, coef, s, M, lo, hi, c, o);
  }
  static std::tuple<at::Tensor, at::Tensor, at::Tensor> ap_scores(const at::Tensor& s,
                                                                  const at::Tensor& r, int64_t M,
                                                                  double lo, double hi,
                                                                  int64_t v) {
    const Guard guard(s.device());
    return ap_scores_impl(K, s, r, M, lo, hi, v);
  }
  static at::Tensor ap_scores_backward(const at::Tensor& g, const at::Tensor& s,
                                       const at::Tensor& r, const at::Tensor& coef, int64_t M,
                                       double lo, double hi) {
    const Guard guard(s.device());
    return ap_scores_backward_impl(K, g, s, r, coef, M, lo, hi);
  }

  static void register_all(torch::Library& m) {
    m.impl("ap_self", &ap_self);
    m.impl("ap_self_backward", &ap_self_backward);
    m.impl("ap_ref", &ap_ref);
    m.impl("ap_ref_backward", &ap_ref_backward);
    m.impl("ap_scores", &ap_scores);
    m.impl("ap_scores_backward", &ap_scores_backward);
  }
};

}  // namespace apl
