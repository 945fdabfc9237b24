// Registration of the rank-surrogate ops for one device: thin functions that bind a device's
// RankKernels to the device-agnostic op bodies (rank_ops.cpp), as device_ops.h does for AP.
#pragma once

#include <torch/library.h>

#include "device_ops.h"
#include "rank_ops.h"

namespace apl {

template <const RankKernels& K, typename Guard = NoDeviceGuard>
struct RankDeviceOps {
  static RankForwardOut rank_self(const at::Tensor& e, const at::Tensor& l, int64_t kind, double t,
                                  at::ArrayRef<double> ks, at::ArrayRef<double> kt, int64_t mode, int64_t c) {
    const Guard guard(e.device());
    return rank_self_impl(K, e, l, rank_params(kind, t, ks, kt, mode), c);
  }
  static at::Tensor rank_self_backward(const at::Tensor& g, const at::Tensor& e, const at::Tensor& l,
                                       const at::Tensor& saved, int64_t kind, double t, at::ArrayRef<double> ks,
                                       at::ArrayRef<double> kt, int64_t mode, int64_t c) {
    const Guard guard(e.device());
    return rank_self_backward_impl(K, g, e, l, saved, rank_params(kind, t, ks, kt, mode), c);
  }
  static RankForwardOut rank_ref(const at::Tensor& q, const at::Tensor& ql, const at::Tensor& x,
                                 const at::Tensor& xl, int64_t kind, double t, at::ArrayRef<double> ks,
                                 at::ArrayRef<double> kt, int64_t mode, int64_t c, int64_t o) {
    const Guard guard(q.device());
    return rank_ref_impl(K, q, ql, x, xl, rank_params(kind, t, ks, kt, mode), c, o);
  }
  static std::tuple<at::Tensor, at::Tensor> rank_ref_backward(
      const at::Tensor& g, const at::Tensor& q, const at::Tensor& ql, const at::Tensor& x, const at::Tensor& xl,
      const at::Tensor& saved, int64_t kind, double t, at::ArrayRef<double> ks, at::ArrayRef<double> kt,
      int64_t mode, int64_t c, int64_t o) {
    const Guard guard(q.device());
    return rank_ref_backward_impl(K, g, q, ql, x, xl, saved, rank_params(kind, t, ks, kt, mode), c, o);
  }

  static void register_all(torch::Library& m) {
    m.impl("rank_self", &rank_self);
    m.impl("rank_self_backward", &rank_self_backward);
    m.impl("rank_ref", &rank_ref);
    m.impl("rank_ref_backward", &rank_ref_backward);
  }
};

}  // namespace apl
