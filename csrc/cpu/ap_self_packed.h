// The CPU kernels of self retrieval on packed scores (packed_upper.h); see ap_ops.h's RowKernels.
#pragma once

#include <ATen/ATen.h>

#include "../ap_ops.h"

namespace apl {

void self_packed_forward(const at::Tensor& P, const at::Tensor& labels, const BinParams& prm,
                         at::Tensor& ap, at::Tensor& npos, at::Tensor& coef, at::Tensor& nonfinite);
void self_packed_backward(const at::Tensor& P, const at::Tensor& labels, const at::Tensor& coef,
                          const at::Tensor& g, const BinParams& prm, const at::Tensor& D, at::Tensor& dD);

}  // namespace apl
