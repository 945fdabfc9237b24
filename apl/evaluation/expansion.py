"""alpha-query-expansion (alpha-QE) and alpha-database-augmentation (alpha-DBA).

Both replace a descriptor x by normalise(x + sum_i max(s_i, 0) ** alpha * d_i) over its k nearest
database neighbours d_i with scores s_i (Radenovic et al., TPAMI 2018). x itself keeps weight 1
(its own score, 1 for an L2-normalised descriptor); negative scores get no weight.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .search import DEFAULT_CHUNK_SIZE, as_matrix, knn

# Queries expanded per block: bounds the (R, k, D) neighbour gather and the (R, chunk) scores.
_QUERY_BLOCK = 1024


def _check(k: int, alpha: float, n: int, limit_name: str) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"k must be an int in [1, {n}] ({limit_name}), got {k!r}")
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha!r}")


def _weighted_sum(x, db, scores, idx, alpha):
    w = scores.clamp(min=0).pow(alpha)
    neighbours = db[idx.to(db.device)].to(device=x.device, dtype=x.dtype)
    return F.normalize(x + (w.to(x.dtype)[..., None] * neighbours).sum(1), dim=1)


@torch.no_grad()
def alpha_query_expansion(
    queries, database, k: int = 2, alpha: float = 3.0, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> torch.Tensor:
    """Expanded, L2-normalised queries (Q, D): each query plus its `k` nearest database items."""
    q = as_matrix(queries, "queries")
    db = as_matrix(database, "database")
    _check(k, alpha, db.shape[0], "the database size")
    out = torch.empty_like(q)
    for start in range(0, q.shape[0], _QUERY_BLOCK):
        block = q[start : start + _QUERY_BLOCK]
        s, idx = knn(block, db, k, chunk_size)
        out[start : start + block.shape[0]] = _weighted_sum(block, db, s, idx, alpha)
    return out


@torch.no_grad()
def alpha_database_augmentation(
    database, k: int = 2, alpha: float = 3.0, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> torch.Tensor:
    """Augmented, L2-normalised database (N, D): each item plus its `k` nearest other items."""
    db = as_matrix(database, "database")
    n = db.shape[0]
    _check(k, alpha, n - 1, "the database size minus one")
    out = torch.empty_like(db)
    for start in range(0, n, _QUERY_BLOCK):
        block = db[start : start + _QUERY_BLOCK]
        s, idx = knn(block, db, k, chunk_size, exclude_self=True, self_offset=start)
        out[start : start + block.shape[0]] = _weighted_sum(block, db, s, idx, alpha)
    return out
