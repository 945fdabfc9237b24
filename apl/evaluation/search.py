"""Similarity scores and nearest neighbours, computed in chunks of the database.

Descriptors are compared by inner product (the cosine for L2-normalised descriptors). The work
runs on the device of `queries` (a GPU when they live there); database chunks are moved there one
at a time, so a database of a million descriptors kept on the CPU never has to fit on the GPU.
"""
from __future__ import annotations

from typing import Optional

import torch

# Database rows per chunk: a (Q, 65536) float32 block is 256 KiB per query.
DEFAULT_CHUNK_SIZE = 65536


class NonFiniteDescriptors(ValueError):
    """Descriptors given to a search or a metric hold NaN or Inf (a network that diverged)."""


def as_matrix(x, name: str) -> torch.Tensor:
    """`x` (a tensor, NumPy array or nested list) as a floating (N, D) tensor with finite values."""
    t = torch.as_tensor(x)
    if t.dim() != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) array, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.float()
    if not bool(torch.isfinite(t).all()):
        raise NonFiniteDescriptors(f"{name} contains NaN or infinite values")
    return t


def rows_per_block(chunk_size: Optional[int], row_length: int, block_elems: int) -> int:
    """`chunk_size` rows when given (checked), else as many rows of `row_length` as fit `block_elems`."""
    if chunk_size is None:
        return max(1, block_elems // max(1, row_length))
    return _check_chunk_size(chunk_size)


def _check_chunk_size(chunk_size: int) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    return chunk_size


@torch.no_grad()
def pairwise_scores(
    queries, database, chunk_size: int = DEFAULT_CHUNK_SIZE, out_device: Optional[torch.device] = None
) -> torch.Tensor:
    """The (Q, N) matrix of inner products between `queries` (Q, D) and `database` (N, D).

    Computed on the device of `queries`, `chunk_size` database rows at a time; the result is
    put on `out_device` (default: the device of `queries`).
    """
    q = as_matrix(queries, "queries")
    db = as_matrix(database, "database")
    if q.shape[1] != db.shape[1]:
        raise ValueError(f"queries have dimension {q.shape[1]} but database has {db.shape[1]}")
    _check_chunk_size(chunk_size)
    dtype = torch.promote_types(q.dtype, db.dtype)
    out = torch.empty(q.shape[0], db.shape[0], dtype=dtype, device=out_device or q.device)
    q = q.to(dtype)
    for start in range(0, db.shape[0], chunk_size):
        block = db[start : start + chunk_size].to(device=q.device, dtype=dtype)
        out[:, start : start + block.shape[0]] = (q @ block.T).to(out.device)
    return out


@torch.no_grad()
def knn(
    queries,
    database,
    k: int,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    exclude_self: bool = False,
    self_offset: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The `k` highest-scoring database items for each query: (scores, indices), each (Q, k).

    Only a (Q, k + chunk_size) block is held at a time. Equal scores are ordered by increasing
    database index, so the result does not depend on the chunk size. With `exclude_self`, query r
    is database item `self_offset + r` (the queries are database[self_offset : self_offset + Q])
    and is never returned for itself.
    """
    q = as_matrix(queries, "queries")
    db = as_matrix(database, "database")
    if q.shape[1] != db.shape[1]:
        raise ValueError(f"queries have dimension {q.shape[1]} but database has {db.shape[1]}")
    _check_chunk_size(chunk_size)
    if exclude_self and not 0 <= self_offset <= db.shape[0] - q.shape[0]:
        raise ValueError(f"exclude_self: queries {self_offset}..{self_offset + q.shape[0]} must be database items")
    available = db.shape[0] - (1 if exclude_self else 0)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= available:
        raise ValueError(f"k must be an int in [1, {available}], got {k!r}")
    dtype = torch.promote_types(q.dtype, db.dtype)
    q = q.to(dtype)
    rows = torch.arange(q.shape[0], device=q.device) + self_offset
    best_s = torch.empty(q.shape[0], 0, dtype=dtype, device=q.device)
    best_i = torch.empty(q.shape[0], 0, dtype=torch.long, device=q.device)
    for start in range(0, db.shape[0], chunk_size):
        block = db[start : start + chunk_size].to(device=q.device, dtype=dtype)
        s = q @ block.T
        idx = torch.arange(start, start + block.shape[0], device=q.device).expand_as(s)
        if exclude_self:
            s = s.masked_fill(idx == rows[:, None], float("-inf"))
        # The kept best always have lower indices than the new chunk, and a stable sort keeps that
        # order among equal scores: ties resolve to the lower index, whatever the chunking.
        cat_s = torch.cat([best_s, s], dim=1)
        cat_i = torch.cat([best_i, idx], dim=1)
        order = torch.sort(cat_s, dim=1, descending=True, stable=True).indices[:, :k]
        best_s = cat_s.gather(1, order)
        best_i = cat_i.gather(1, order)
    return best_s, best_i
