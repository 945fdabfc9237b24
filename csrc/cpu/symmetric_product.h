// dD = H D with H = diag(g) U + U^T diag(g), for a square U: the gradient of the embeddings in self
// retrieval when U holds d value_i / d S_ij (the rank losses' CPU backward).
#pragma once

#include <ATen/ATen.h>

namespace apl {

// U (B, B), g (B), D (B, dim) contiguous, in one floating dtype; dD (B, dim) is overwritten. H is
// symmetric, so only its block rows on and above the diagonal are built, a cache-sized tile at a
// time (never written whole), each U entry read once: a tile multiplies D's rows into dD's rows of
// its block row, and its transpose D's block-row rows into dD's rows beyond the diagonal block.
void symmetric_product(const at::Tensor& U, const at::Tensor& g, const at::Tensor& D, at::Tensor& dD);

}  // namespace apl
