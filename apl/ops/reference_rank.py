"""Pure-PyTorch reference of the rank surrogates (docs/rank_losses.md), autograd end to end:
Smooth-AP and the Recall@k surrogate.

A block of R query rows at a time: the scores (R, N), then for each row's positives (padded to the
block's largest count) the sigmoids of their differences with every item, (R, P, N). The block
size bounds that tensor to about 2^22 elements; with `chunk_size`, each block runs under activation
checkpointing, so memory stays bounded in backward too. The compiled kernels are checked against
this, and this against the NumPy oracle of the tests.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch.utils.checkpoint import checkpoint

from .variants import QUERY_EXCLUDED, QUERY_ITEM_ONLY, RANK_KINDS

_BLOCK_ELEMS = 1 << 22


def _masks(ql: torch.Tensor, xl: torch.Tensor, own: Optional[torch.Tensor], query_mode: int):
    """(items, positives) bool (R, N): every item but the query's own column when it is left out;
    the items of the query's label but its own column when it is an item only."""
    N = xl.shape[0]
    pos = ql[:, None] == xl[None, :]
    items = torch.ones_like(pos)
    if own is not None:
        is_own = torch.arange(N, device=xl.device)[None, :] == own[:, None]
        if query_mode == QUERY_EXCLUDED:
            items = ~is_own
            pos = pos & items
        elif query_mode == QUERY_ITEM_ONLY:
            pos = pos & ~is_own
    return items, pos


def masked_values(S: torch.Tensor, items: torch.Tensor, pos: torch.Tensor, kind: int, temperature: float,
                  ks: Sequence[float], k_temperatures: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(value, npos) of each row of a (R, N) block of scores, ranking only the `items` (bool (R, N))
    of each row, of which `pos` are the positives."""
    npos = pos.sum(1)
    # Padded to the block's most positives; inside torch.compile to N (a shape that does not depend
    # on the data: more memory, the same values).
    P = S.shape[1] if torch.compiler.is_compiling() else (max(int(npos.max()), 1) if npos.numel() else 1)
    # each row's positives first (stable: in column order), then padding
    order = torch.sort(pos.to(torch.int8), dim=1, descending=True, stable=True).indices[:, :P]
    valid = torch.arange(P, device=S.device)[None, :] < npos[:, None]  # (R, P)
    s_pos = S.gather(1, order)  # (R, P)
    sig = torch.sigmoid((S[:, None, :] - s_pos[:, :, None]) / temperature)  # (R, P, N): sigma(s_j - s_i)
    w, p = items.to(S.dtype)[:, None, :], pos.to(S.dtype)[:, None, :]
    # the j = i term (sigma(0) = 1/2, i being an item and a positive) is taken out
    T = (sig * w).sum(-1) - 0.5
    zero = torch.zeros_like(T)
    if kind == RANK_KINDS["smooth_ap"]:
        TP = (sig * p).sum(-1) - 0.5
        ratio = torch.where(valid, (1 + TP) / (1 + T), zero)
        value = ratio.sum(1) / npos.clamp(min=1).to(S.dtype)
    else:
        value = torch.zeros(S.shape[0], dtype=S.dtype, device=S.device)
        for k, t2 in zip(ks, k_temperatures):
            hits = torch.where(valid, torch.sigmoid((k - (1 + T)) / t2), zero).sum(1)
            norm = torch.clamp(npos.to(S.dtype), max=k).clamp(min=1)
            value = value + torch.minimum(hits, torch.full_like(hits, k)) / norm
        value = value / len(ks)
    return torch.where(npos > 0, value, torch.zeros_like(value)), npos


def _most_positives(ql: torch.Tensor, xl: torch.Tensor) -> int:
    """The largest number of items of a query's label: bounds the padding of a block."""
    labels, counts = torch.unique(xl, return_counts=True)
    found = torch.isin(ql, labels)
    if not bool(found.any()):
        return 1
    idx = torch.searchsorted(labels, ql[found])
    return int(counts[idx].max())


def per_query(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    ref_embeddings: Optional[torch.Tensor],
    ref_labels: Optional[torch.Tensor],
    kind: int,
    temperature: float,
    ks: Sequence[float],
    k_temperatures: Sequence[float],
    query_mode: int,
    chunk_size: int = 0,
    self_offset: int = -1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(value, npos) of every query (inputs already validated). Without a reference set, query i is
    item i; with one and self_offset >= 0, query i is item self_offset + i."""
    Q = embeddings.to(torch.float64 if embeddings.dtype == torch.float64 else torch.float32)
    self_mode = ref_embeddings is None
    X = Q if self_mode else ref_embeddings.to(Q.dtype)
    xl = labels if self_mode else ref_labels
    offset = 0 if self_mode else self_offset
    B, N = Q.shape[0], X.shape[0]
    most = N if torch.compiler.is_compiling() else _most_positives(labels, xl)
    rows = chunk_size if chunk_size > 0 else max(1, min(B, _BLOCK_ELEMS // max(N * most, 1)))
    checkpointed = chunk_size > 0 and torch.is_grad_enabled() and (Q.requires_grad or X.requires_grad)

    def block(q, ql, r0):
        own = None if offset < 0 else torch.arange(r0, r0 + q.shape[0], device=q.device) + offset
        items, pos = _masks(ql, xl, own, query_mode)
        return masked_values(q @ X.t(), items, pos, kind, temperature, ks, k_temperatures)

    values, nposes = [], []
    for r0 in range(0, B, rows):
        q, ql = Q[r0:r0 + rows], labels[r0:r0 + rows]
        v, n = checkpoint(block, q, ql, r0, use_reentrant=False) if checkpointed else block(q, ql, r0)
        values.append(v)
        nposes.append(n)
    return torch.cat(values), torch.cat(nposes)
