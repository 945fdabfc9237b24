"""Pure-PyTorch reference of the quantized AP (docs/ap_q.md), autograd end to end.

It holds at most a block of R x N scores (never B x N x M): the soft assignment of each score to
its two neighbouring bins is scattered straight into the (R, M) histograms. With `chunk_size`,
each block of queries runs under activation checkpointing, so memory stays bounded in backward
too. The AP of the histograms is plain autograd, which makes this an independent check of the
closed-form coefficients of the compiled kernels.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch.utils.checkpoint import checkpoint

from .variants import TIE_EPS

# Block size used when none is given: bounds the (R, N) temporaries to about 2^22 elements.
_DEFAULT_BLOCK_ELEMS = 1 << 22


def soft_histograms(
    scores: torch.Tensor, relevance: torch.Tensor, valid: Optional[torch.Tensor], num_bins: int, lo: float, hi: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Histograms (p, n), each (R, M), of an (R, N) block of scores.

    Bin centres are b_m = hi - m * Delta (descending). A score s, clamped to [lo, hi], sits at
    t = (hi - s) / Delta and gives 1 - frac(t) to bin floor(t) and frac(t) to the next, which is
    the triangular kernel max(0, 1 - |s - b_m| / Delta). Outside (lo, hi) the gradient is zero.
    `valid` (R, N) bool marks the items that count (the query itself does not).
    """
    M = num_bins
    inside = (scores > lo) & (scores < hi)
    s = torch.where(inside, scores, scores.detach().clamp(lo, hi))
    inv_delta = (M - 1) / (hi - lo)  # rounded once to the tensor's dtype, as in csrc/ap_math.h
    t = ((hi - s) * inv_delta).clamp(0, M - 1)
    m = t.detach().floor().clamp(max=M - 2).long()
    w1 = t - m
    w0 = 1 - w1
    rel = relevance
    if valid is not None:
        w0 = w0 * valid
        w1 = w1 * valid
        rel = rel & valid
    zeros = torch.zeros(scores.shape[0], M, dtype=scores.dtype, device=scores.device)
    n = zeros.scatter_add(1, m, w0).scatter_add(1, m + 1, w1)
    p = zeros.scatter_add(1, m, w0 * rel).scatter_add(1, m + 1, w1 * rel)
    return p, n


def ap_from_histograms(p: torch.Tensor, n: torch.Tensor, npos: torch.Tensor, variant: str) -> torch.Tensor:
    """Per-row AP from (R, M) histograms; rows with npos == 0 get 0."""
    P, N = p.cumsum(1), n.cumsum(1)
    zero = torch.zeros_like(P[:, :1])
    A = torch.cat([zero, P[:, :-1]], 1)  # P_{m-1}
    C = torch.cat([zero, N[:, :-1]], 1)  # N_{m-1}
    if variant == "ap_q":
        nonempty = N > 0
        terms = torch.where(nonempty, p * P / torch.where(nonempty, N, torch.ones_like(N)), torch.zeros_like(N))
    elif variant == "tie_aware_simplified":
        terms = p * (A + P + 1) / (C + N + 1)
    elif variant == "tie_aware":
        r = torch.relu(p - 1) / (torch.relu(n - 1) + TIE_EPS)
        L = torch.log((N + 1) / (C + 1))
        terms = p * (n * r + (A + 1 - r * (C + 1)) * L) / (n + TIE_EPS)
    else:
        raise ValueError(f"unknown variant {variant!r}")
    has_pos = npos > 0
    denom = torch.where(has_pos, npos, torch.ones_like(npos)).to(terms.dtype)
    return torch.where(has_pos, terms.sum(1) / denom, torch.zeros_like(denom))


def masked_ap(scores: torch.Tensor, relevance: torch.Tensor, valid: Optional[torch.Tensor], num_bins: int,
              score_range: tuple[float, float], variant: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(ap, npos) of each row of a (R, N) block of scores, counting only the items where `valid`
    (bool, or None for all) is true."""
    lo, hi = score_range
    p, n = soft_histograms(scores, relevance, valid, num_bins, lo, hi)
    rel = relevance if valid is None else relevance & valid
    npos = rel.sum(1)
    return ap_from_histograms(p, n, npos, variant), npos


def _rows(B: int, N: int, chunk_size: int) -> int:
    return chunk_size if chunk_size > 0 else max(1, min(B, _DEFAULT_BLOCK_ELEMS // max(N, 1)))


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def per_query_ap(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    ref_embeddings: Optional[torch.Tensor] = None,
    ref_labels: Optional[torch.Tensor] = None,
    num_bins: int = 20,
    score_range: tuple[float, float] = (-1.0, 1.0),
    variant: str = "ap_q",
    chunk_size: int = 0,
    self_offset: int = -1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference per-query AP and positive counts (inputs already validated). With a reference
    set and self_offset >= 0, query i is row self_offset + i of it and is left out of its ranking."""
    lo, hi = score_range
    Q = embeddings.to(_compute_dtype(embeddings))
    self_mode = ref_embeddings is None
    X = Q if self_mode else ref_embeddings.to(Q.dtype)
    xl = labels if self_mode else ref_labels
    B, N = Q.shape[0], X.shape[0]
    R = _rows(B, N, chunk_size)
    checkpointed = chunk_size > 0 and torch.is_grad_enabled() and (Q.requires_grad or X.requires_grad)

    def block(q, ql, r0):
        S = q @ X.t()
        rel = ql[:, None] == xl[None, :]
        valid = None
        if self_mode or self_offset >= 0:
            rows = torch.arange(r0, r0 + q.shape[0], device=q.device) + max(self_offset, 0)
            valid = rows[:, None] != torch.arange(N, device=q.device)[None, :]
        return masked_ap(S, rel, valid, num_bins, (lo, hi), variant)

    aps, nposes = [], []
    for r0 in range(0, B, R):
        q, ql = Q[r0 : r0 + R], labels[r0 : r0 + R]
        if checkpointed:
            ap, npos = checkpoint(block, q, ql, r0, use_reentrant=False)
        else:
            ap, npos = block(q, ql, r0)
        aps.append(ap)
        nposes.append(npos)
    return torch.cat(aps), torch.cat(nposes)


def quantized_ap(
    scores: torch.Tensor,
    relevance: torch.Tensor,
    num_bins: int = 20,
    score_range: tuple[float, float] = (-1.0, 1.0),
    variant: str = "ap_q",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference AP of a (B, N) score matrix with a bool relevance mask (no self-exclusion)."""
    lo, hi = score_range
    S = scores.to(_compute_dtype(scores))
    return masked_ap(S, relevance, None, num_bins, (lo, hi), variant)
