"""The naive B x M x N formulation of the quantized AP loss, for the benchmarks.

Written in the style of the paper's public code (Revaud et al., ICCV 2019): the soft assignment of
every score to every bin is materialised as a (B, M, N) tensor with the triangular kernel
max(0, 1 - |s - b_m| / Delta), then reduced to the histograms, and everything is left to autograd.
This is what the fused kernels avoid: it holds B x M x N numbers (and autograd keeps several of
them). It computes the same AP_Q as apl's reference (docs/ap_q.md): the query itself is
left out of its list, queries without a positive are left out of the mean, and scores are clamped
to the range (zero gradient outside it). Device-agnostic: it runs wherever its inputs are.
"""
from __future__ import annotations

import torch

__all__ = ["naive_per_query_ap", "naive_ap_loss"]


def naive_per_query_ap(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    num_bins: int = 20,
    score_range: tuple[float, float] = (-1.0, 1.0),
) -> tuple[torch.Tensor, torch.Tensor]:
    """AP_Q of every row of `embeddings` against the other rows, and the mask of the queries
    with a positive. float16/bfloat16 are computed in float32."""
    lo, hi = float(score_range[0]), float(score_range[1])
    M = int(num_bins)
    x = embeddings if embeddings.dtype == torch.float64 else embeddings.float()
    B = x.shape[0]
    S = x @ x.t()  # (B, N), N = B
    eye = torch.eye(B, dtype=torch.bool, device=x.device)
    valid = (~eye).to(x.dtype)  # the query itself is not in its own list
    rel = (labels[:, None] == labels[None, :]).to(x.dtype) * valid
    delta = (hi - lo) / (M - 1)
    centres = hi - delta * torch.arange(M, dtype=x.dtype, device=x.device)  # descending
    s = S.clamp(lo, hi)  # the edge bins absorb everything outside the range
    # (B, M, N) soft assignment: the tensor the fused kernels never build.
    q = (1 - (s[:, None, :] - centres[None, :, None]).abs() / delta).clamp(min=0)
    q = q * valid[:, None, :]
    n = q.sum(-1)  # (B, M) all items per bin
    p = (q * rel[:, None, :]).sum(-1)  # (B, M) positives per bin
    P, N = p.cumsum(-1), n.cumsum(-1)
    nonempty = N > 0
    prec = torch.where(nonempty, P / torch.where(nonempty, N, torch.ones_like(N)), torch.zeros_like(N))
    npos = rel.sum(-1)
    has_pos = npos > 0
    ap = (p * prec).sum(-1) / torch.where(has_pos, npos, torch.ones_like(npos))
    return torch.where(has_pos, ap, torch.zeros_like(ap)), has_pos


def naive_ap_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    num_bins: int = 20,
    score_range: tuple[float, float] = (-1.0, 1.0),
) -> torch.Tensor:
    """1 - mean AP_Q over the queries with a positive (0 when there is none)."""
    ap, has_pos = naive_per_query_ap(embeddings, labels, num_bins, score_range)
    w = has_pos.to(ap.dtype)
    total = w.sum()
    mean = (w * ap).sum() / torch.where(total > 0, total, torch.ones_like(total))
    return torch.where(total > 0, 1.0 - mean, mean * 0.0)
