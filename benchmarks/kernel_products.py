"""The matrix products the CPU self-retrieval AP kernel runs, without its per-score work: the floor
of that design on this machine's BLAS, timed as the `gemm_kernel` row of bench_loss.

Forward: S's block rows of 256 on and above the diagonal, each one GEMM into the packed buffer
(csrc/gram.cpp, csrc/packed_upper.h). Backward: dD = H D from H's tiles of 256 x 1024 on and above
the diagonal, each multiplied twice (csrc/cpu/symmetric_product.cpp); H is S itself here, so
dD = S D, which the tests check.
"""
from __future__ import annotations

import torch

ROWS, COLS = 256, 1024


def packed_gram(x: torch.Tensor) -> list[torch.Tensor]:
    """S[i0:i0 + 256, i0:] for each block row, as views of one packed buffer."""
    B = x.shape[0]
    blocks = [(i0, min(ROWS, B - i0), B - i0) for i0 in range(0, B, ROWS)]
    buf = torch.empty(sum(r * w for _, r, w in blocks), dtype=x.dtype)
    out, off = [], 0
    for i0, r, w in blocks:
        block = buf[off:off + r * w].view(r, w)
        torch.mm(x[i0:i0 + r], x[i0:].t(), out=block)
        out.append(block)
        off += r * w
    return out


def symmetric_tiles_product(blocks: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """H x for the symmetric H whose block rows on and above the diagonal are `blocks`."""
    B = x.shape[0]
    dD = torch.zeros_like(x)
    for k, block in enumerate(blocks):
        r0, R = k * ROWS, block.shape[0]
        for a in range(r0, B, COLS):
            w = min(COLS, B - a)
            tile = block[:, a - r0:a - r0 + w]
            dD[r0:r0 + R].addmm_(tile, x[a:a + w])
            j0 = max(a, r0 + R)  # rows beyond the diagonal block, from the tile's transpose
            if j0 < a + w:
                dD[j0:a + w].addmm_(tile[:, j0 - a:].t(), x[r0:r0 + R])
    return dD


def kernel_products(x: torch.Tensor) -> torch.Tensor:
    """One forward + backward's products: S's packed block rows, then S x from them."""
    return symmetric_tiles_product(packed_gram(x), x)
