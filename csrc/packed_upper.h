// The packed upper block rows of a symmetric B x B matrix (self-retrieval scores S = D D^T).
//
// Rows are grouped into blocks of kPackedRows; block row I keeps only the columns from its own first
// row on: S[I, i0:B] (the diagonal block whole, then everything to its right), stored row-major with
// row length B - i0, one block row after the other. That is S's upper triangle plus half of each
// diagonal block: about B^2 / 2 values, and every score S_ij = S_ji is in it exactly once or (in a
// diagonal block) twice with the same value. Torch-free so that any backend can use the layout.
#pragma once

#include <cstdint>

namespace apl {

constexpr int64_t kPackedRows = 256;

struct PackedUpper {
  int64_t B;

  int64_t blocks() const { return (B + kPackedRows - 1) / kPackedRows; }
  int64_t first_row(int64_t I) const { return I * kPackedRows; }
  int64_t rows(int64_t I) const {
    const int64_t r = B - first_row(I);
    return r < kPackedRows ? r : kPackedRows;
  }
  // Row length of block row I: its columns are [first_row(I), B).
  int64_t width(int64_t I) const { return B - first_row(I); }
  // Where block row I starts: sum over the earlier block rows of rows * width.
  int64_t offset(int64_t I) const {
    const int64_t k = I < blocks() ? I : blocks();  // full blocks before I all have kPackedRows rows
    return kPackedRows * (k * B - kPackedRows * k * (k - 1) / 2);
  }
  int64_t numel() const { return offset(blocks() - 1) + rows(blocks() - 1) * width(blocks() - 1); }
  // S_ij for i in block row I and j >= first_row(I).
  int64_t index(int64_t I, int64_t i, int64_t j) const {
    return offset(I) + (i - first_row(I)) * width(I) + (j - first_row(I));
  }
};

}  // namespace apl
