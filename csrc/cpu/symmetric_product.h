// dD = H D for a symmetric H built a tile at a time on and above its diagonal: the gradient of the
// embeddings in self retrieval, H = d loss / d S + its transpose (the AP and rank losses' CPU backward).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/FunctionRef.h>

namespace apl {

// The tiles the product is built from: kSymmetricRows x kSymmetricCols stays in L2 between being
// written and being multiplied.
constexpr int64_t kSymmetricRows = 256;
constexpr int64_t kSymmetricCols = 1024;

// fill(r0, R, a, w, h) writes H_{r0+i, a+j} into h[i * kSymmetricCols + j] for i < R, j < w: a tile of
// block row r0 (r0 a multiple of kSymmetricRows) from its diagonal block on (a >= r0), H symmetric.
template <typename T>
using SymmetricTile = c10::function_ref<void(int64_t r0, int64_t R, int64_t a, int64_t w, T* h)>;

// dD (B, dim) = H D for a symmetric B x B H given by its tiles on and above the diagonal: each tile
// multiplies D's rows into dD's rows of its block row, and its transpose D's block-row rows into dD's
// rows beyond the diagonal block. D and dD contiguous, dD overwritten.
void symmetric_tiles_product(const at::Tensor& D, at::Tensor& dD, SymmetricTile<float> fill);
void symmetric_tiles_product(const at::Tensor& D, at::Tensor& dD, SymmetricTile<double> fill);

// The rank losses' case, H = diag(g) U + U^T diag(g) for a square U: U (B, B), g (B), D (B, dim)
// contiguous, in one floating dtype; dD (B, dim) is overwritten. Each U entry is read once.
void symmetric_product(const at::Tensor& U, const at::Tensor& g, const at::Tensor& D, at::Tensor& dD);

}  // namespace apl
