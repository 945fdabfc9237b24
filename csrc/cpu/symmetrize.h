// H = diag(g) U + U^T diag(g) for a square U, a block of rows at a time: the gradient of the
// embeddings in self retrieval is then one GEMM H @ D. Shared by the CPU kernels of every loss.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace apl {

// Rows [r0, r0 + H.size(0)) of H; U (B, B), g (B) and H (R, B) contiguous, in one floating dtype.
void symmetrize_unit(const at::Tensor& U, const at::Tensor& g, int64_t r0, at::Tensor& H);

}  // namespace apl
