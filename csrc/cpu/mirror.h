// The lower triangle of a square matrix from its upper one: with it, self retrieval multiplies only
// the blocks of S = D D^T on and above the diagonal (half a GEMM's flops; csrc/gram.h), and S is
// exactly symmetric. Shared by the CPU kernels of every loss.
#pragma once

#include <ATen/ATen.h>

namespace apl {

// S (B, B) contiguous, float or double: S_ji = S_ij for every i < j; the diagonal is kept.
void mirror_upper(at::Tensor& S);

}  // namespace apl
