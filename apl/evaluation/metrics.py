"""Exact retrieval metrics on labelled descriptors: every item is a query against all the others.

Relevance is "same label"; similarity is the inner product (the cosine for L2-normalised
descriptors); the query itself is never part of its own ranking. Queries that have no other item
of their class have no positive: they are left out of every mean below (their AP is NaN), and a
mean over no query at all is NaN.

Ties. `average_precisions` / `mean_average_precision` do not depend on how equal scores are
ordered: all items sharing a score form one group, and each positive of a group gets the precision
measured at the end of the group, i.e. AP = sum over distinct score thresholds t of
(precision at t) x (fraction of positives with score exactly t). This is the usual
threshold-based definition (the one scikit-learn's `average_precision_score` uses); without ties it
is the plain AP. `precision_at_k` / `recall_at_k` need a cut in the list: they order equal scores
by increasing item index.

Metrics of the metric-learning literature (Musgrave, Belongie & Lim, "A Metric Learning Reality
Check", ECCV 2020), with R the number of positives of the query:

- `r_precision`: the share of positives among the query's R nearest other items;
- `map_at_r` (MAP@R): an AP truncated at rank R, normalised by R (see its docstring);
- "Recall@K" as metric-learning papers report it (does the top K hold at least one positive) is
  `hit_rate_at_k`; it is not the information-retrieval recall of `recall_at_k`.

These cut the list at R, so like `precision_at_k` they order equal scores by increasing index.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import numpy as np
import torch

from .search import as_matrix, knn, rows_per_block

# Queries per block when none is given: bounds the (R, N) temporaries to about 2^20 elements.
_BLOCK_ELEMS = 1 << 20

KType = Union[int, Sequence[int]]


def as_labels(labels, n: int) -> torch.Tensor:
    """Any labels (ints, strings; list, array or tensor) as (n,) class indices 0..C-1."""
    arr = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"labels must be a 1-D sequence of {n} labels (one per descriptor), got shape {arr.shape}")
    _, inverse = np.unique(arr, return_inverse=True)
    return torch.as_tensor(inverse.reshape(-1), dtype=torch.long)


def _setup(embeddings, labels) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    e = as_matrix(embeddings, "embeddings")
    if e.shape[0] < 2:
        raise ValueError(f"need at least 2 descriptors, got {e.shape[0]}")
    y = as_labels(labels, e.shape[0]).to(e.device)
    # positives of each query: the other members of its class
    num_pos = torch.bincount(y)[y] - 1
    return e, y, num_pos


@torch.no_grad()
def average_precisions(embeddings, labels, chunk_size: Optional[int] = None) -> torch.Tensor:
    """Per-query exact AP, (N,) float64 on the device of `embeddings`; NaN where no positive.

    `chunk_size` queries are ranked at a time (default: enough to hold ~1M scores); the same
    holds for the functions below.
    """
    e, y, num_pos = _setup(embeddings, labels)
    n = e.shape[0]
    rows = rows_per_block(chunk_size, n, _BLOCK_ELEMS)
    positions = torch.arange(n, device=e.device)
    aps = torch.full((n,), float("nan"), dtype=torch.float64, device=e.device)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        q = torch.arange(start, stop, device=e.device)
        s = e[start:stop] @ e.T
        is_self = positions[None, :] == q[:, None]
        # The query goes last (-inf, alone in its group since scores are finite) and is no positive.
        s = s.masked_fill(is_self, float("-inf"))
        rel = (y[None, :] == y[q][:, None]) & ~is_self
        s_sorted, order = torch.sort(s, dim=1, descending=True)
        rel_sorted = rel.gather(1, order).to(torch.float64)
        hits = rel_sorted.cumsum(1)
        # Index of the last item of each tie group: next position j' >= j where the score changes.
        is_end = torch.ones_like(rel_sorted, dtype=torch.bool)
        is_end[:, :-1] = s_sorted[:, :-1] != s_sorted[:, 1:]
        end = torch.where(is_end, positions.expand_as(is_end), torch.full_like(order, n))
        end = end.flip(1).cummin(1).values.flip(1)
        precision = hits.gather(1, end) / (end + 1).to(torch.float64)
        npos = num_pos[start:stop].to(torch.float64)
        ap = (precision * rel_sorted).sum(1) / npos.clamp(min=1)
        aps[start:stop] = torch.where(npos > 0, ap, torch.full_like(ap, float("nan")))
    return aps


def mean_average_precision(embeddings, labels, chunk_size: Optional[int] = None) -> float:
    """mAP of `embeddings` (N, D) with class `labels` (N,), each item a query against all others.

    Exact (not the quantized AP of the loss); ties handled as in the module docstring; queries
    without a positive are left out (NaN when none has one).
    """
    aps = average_precisions(embeddings, labels, chunk_size)
    valid = ~torch.isnan(aps)
    return float(aps[valid].mean()) if bool(valid.any()) else float("nan")


@torch.no_grad()
def _hits_at_k(embeddings, labels, ks: KType, chunk_size: Optional[int]):
    e, y, num_pos = _setup(embeddings, labels)
    single = isinstance(ks, (int, np.integer)) and not isinstance(ks, bool)
    k_list = [int(ks)] if single else [int(k) for k in ks]
    if not k_list or any(k < 1 or k > e.shape[0] - 1 for k in k_list):
        raise ValueError(f"k must be in [1, {e.shape[0] - 1}] (the number of other items), got {ks!r}")
    n, kmax = e.shape[0], max(k_list)
    rows = rows_per_block(chunk_size, n, _BLOCK_ELEMS)
    rel = torch.empty(n, kmax, dtype=torch.float64, device=e.device)
    for start in range(0, n, rows):
        block = e[start : start + rows]
        _, idx = knn(block, e, kmax, exclude_self=True, self_offset=start)
        rel[start : start + block.shape[0]] = (y[idx] == y[start : start + block.shape[0], None]).to(torch.float64)
    hits = {k: rel[:, :k].sum(1) for k in k_list}
    return single, k_list, hits, num_pos.to(torch.float64)


def _reduce(values: dict, has_pos: torch.Tensor, single: bool, k_list: list):
    out = {k: (float(values[k][has_pos].mean()) if bool(has_pos.any()) else float("nan")) for k in k_list}
    return out[k_list[0]] if single else out


def precision_at_k(embeddings, labels, k: KType, chunk_size: Optional[int] = None):
    """Mean over queries of (positives among the k nearest other items) / k.

    `k` an int gives a float; a sequence of ints gives {k: float}. Equal scores are ordered by
    increasing index; queries without a positive are left out.
    """
    single, k_list, hits, num_pos = _hits_at_k(embeddings, labels, k, chunk_size)
    return _reduce({k: h / k for k, h in hits.items()}, num_pos > 0, single, k_list)


def recall_at_k(embeddings, labels, k: KType, chunk_size: Optional[int] = None):
    """Mean over queries of (positives among the k nearest other items) / (positives of the query).

    This is the information-retrieval recall. The "Recall@K" of metric-learning papers (is there
    at least one positive in the top k) is `hit_rate_at_k`. Same conventions as `precision_at_k`.
    """
    single, k_list, hits, num_pos = _hits_at_k(embeddings, labels, k, chunk_size)
    has_pos = num_pos > 0
    return _reduce({k: h / num_pos.clamp(min=1) for k, h in hits.items()}, has_pos, single, k_list)


def hit_rate_at_k(embeddings, labels, k: KType, chunk_size: Optional[int] = None):
    """Fraction of queries with at least one positive among their k nearest other items.

    This is the "Recall@K" of metric-learning papers (and PML's precision_at_1 for k = 1, which
    equals `precision_at_k(..., 1)`). Same conventions as `precision_at_k`.
    """
    single, k_list, hits, num_pos = _hits_at_k(embeddings, labels, k, chunk_size)
    return _reduce({k: (h > 0).to(torch.float64) for k, h in hits.items()}, num_pos > 0, single, k_list)


@torch.no_grad()
def at_r_per_query(embeddings, labels, chunk_size: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-query (AP@R, R-precision): two (N,) float64 tensors, NaN where the query has no
    positive; `map_at_r` and `r_precision` are their means (one pass computes both)."""
    e, y, num_pos = _setup(embeddings, labels)
    n = e.shape[0]
    rows = rows_per_block(chunk_size, n, _BLOCK_ELEMS)
    ap_r = torch.full((n,), float("nan"), dtype=torch.float64, device=e.device)
    r_prec = ap_r.clone()
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        r = num_pos[start:stop]
        r_max = int(r.max())
        if r_max == 0:  # no query of this block has a positive
            continue
        # The R nearest other items of each query (R differs per query: take the block's largest
        # and mask the ranks beyond each query's own R).
        _, idx = knn(e[start:stop], e, r_max, exclude_self=True, self_offset=start)
        rank = torch.arange(1, r_max + 1, device=e.device)
        within = rank[None, :] <= r[:, None]
        rel = ((y[idx] == y[start:stop, None]) & within).to(torch.float64)
        hits = rel.cumsum(1)
        denom = r.to(torch.float64).clamp(min=1)
        has_pos = r > 0
        nan = torch.full_like(denom, float("nan"))
        ap_r[start:stop] = torch.where(has_pos, (rel * hits / rank).sum(1) / denom, nan)
        r_prec[start:stop] = torch.where(has_pos, rel.sum(1) / denom, nan)
    return ap_r, r_prec


def nan_mean(values: torch.Tensor) -> float:
    """Mean of the non-NaN entries of per-query values (NaN when all are NaN)."""
    valid = ~torch.isnan(values)
    return float(values[valid].mean()) if bool(valid.any()) else float("nan")


def map_at_r(embeddings, labels, chunk_size: Optional[int] = None) -> float:
    """MAP@R (Musgrave et al., ECCV 2020): the mean over queries of an AP cut at rank R.

    For a query with R positives (the other items of its class), look only at its R nearest
    other items; at each rank i <= R that holds a positive, take the precision of the top i; add
    these precisions up and divide by R (not by the positives actually found). It is 1 only when
    the R positives are exactly the R nearest items, and unlike the full AP it gives no credit for
    positives ranked beyond R. Equal scores are ordered by increasing index; queries without a
    positive are left out (NaN when none has one).
    """
    return nan_mean(at_r_per_query(embeddings, labels, chunk_size)[0])


def r_precision(embeddings, labels, chunk_size: Optional[int] = None) -> float:
    """R-precision: the mean over queries of (positives among the R nearest other items) / R.

    R is the number of positives of the query (the other items of its class), so the cut adapts
    to the class size: a perfect ranking scores 1 whatever the class sizes. Equal scores are
    ordered by increasing index; queries without a positive are left out.
    """
    return nan_mean(at_r_per_query(embeddings, labels, chunk_size)[1])


def precision_recall_curve(descriptors: torch.Tensor, labels: torch.Tensor, levels: int = 21) -> tuple[list, list]:
    """Mean interpolated precision at recall levels 0, 0.05, ..., 1 over the queries (each item a
    query against the others), for plotting."""
    s = descriptors @ descriptors.t()
    s.fill_diagonal_(-math.inf)
    order = s.argsort(1, descending=True)[:, :-1]
    rel = (labels[order] == labels[:, None]).double()
    npos = rel.sum(1)
    keep = npos > 0
    rel, npos = rel[keep], npos[keep]
    hits = rel.cumsum(1)
    precision = hits / torch.arange(1, rel.shape[1] + 1, dtype=torch.float64)
    recall = hits / npos[:, None]
    # interpolated precision: best precision at any recall >= r
    best = precision.flip(1).cummax(1).values.flip(1)
    grid = torch.linspace(0, 1, levels, dtype=torch.float64)
    out = []
    for r in grid:
        idx = (recall >= r - 1e-12).double().argmax(1)
        out.append(float(best.gather(1, idx[:, None]).mean()))
    return grid.tolist(), out
