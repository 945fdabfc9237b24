// The score matrix of self retrieval, S = D D^T, for the device-agnostic op bodies.
#pragma once

#include <ATen/ATen.h>

namespace apl {

// Copies the upper triangle of a square matrix onto its lower one (a device's kernel; nullptr: none).
using MirrorFn = void (*)(at::Tensor& S);

// S = D D^T. With `mirror` and B >= kSymmetricMinRows, only the blocks of rows of S on and above the
// diagonal are multiplied (S[I, I:] = D_I D_{I:}^T: half the flops of a GEMM, as a symmetric rank-k
// update has) and the rest is mirrored, so S is exactly symmetric; without, one GEMM.
at::Tensor self_gram(const at::Tensor& D, MirrorFn mirror);

constexpr int64_t kSymmetricMinRows = 512;

// Rows per block of the products above: large enough for the GEMM to run at its speed, small enough
// that the blocks on the diagonal (computed whole) cost little: 4096 / 256 = 16 blocks, 1/32 extra
// flops.
constexpr int64_t kBlockRows = 256;

// The block rows of S = D D^T on and above the diagonal, S[I, i0:] for blocks of kBlockRows rows,
// in a (B, B) tensor whose other entries are left unset (below B = kSymmetricMinRows: all of S, one
// GEMM). S_ij for j below row i's block is S_ji: for kernels that read it from the columns instead
// of a mirror.
at::Tensor self_gram_upper(const at::Tensor& D);

// The packed upper block rows of S = D D^T (packed_upper.h) as a 1-D tensor: each block row
// S[I, i0:] is one GEMM, half the flops of the full product and nothing mirrored.
at::Tensor self_gram_packed(const at::Tensor& D);

}  // namespace apl
