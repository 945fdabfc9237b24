"""The Revisited Oxford / Paris evaluation protocol (Radenovic et al., CVPR 2018).

Ground truth comes in that benchmark's format: one dict per query with "easy", "hard" and "junk"
lists of database indices (0-based). The three protocols are

    easy:   positives = easy          junk = junk + hard
    medium: positives = easy + hard   junk = junk
    hard:   positives = hard          junk = junk + easy

Junk images are removed from the ranking (the positives behind them move up). AP is the
benchmark's trapezoidal AP: with the positives at 0-based ranks r_0 < r_1 < ... (junk removed) and
P positives in all, AP = sum_j (1/P) * (j / r_j + (j + 1) / (r_j + 1)) / 2, where j / r_j is read as
1 when r_j = 0. The precision at k is the benchmark's: with the positives at 1-based ranks and k' =
min(k, rank of the last positive), it is (positives within the top k') / k'; a query with fewer than
k positives that finds them all first therefore scores 1. A query with no positive in a protocol is
left out of that protocol's means (NaN when every query is).

The ranking sorts the scores in decreasing order; equal scores keep the database order (the lower
index ranks first), which makes the result deterministic. If an index is both a positive and junk
for a protocol, it counts as a positive.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
import torch

from .search import as_matrix, rows_per_block

PROTOCOLS = ("easy", "medium", "hard")

# Queries ranked per block when none is given: bounds the (R, N) temporaries to about 2^22 elements.
_BLOCK_ELEMS = 1 << 22


def trapezoidal_ap(ranks: np.ndarray, num_positives: int) -> float:
    """The benchmark's AP from the sorted 0-based ranks of the positives (junk already removed)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    j = np.arange(ranks.shape[0], dtype=np.float64)
    before = np.divide(j, ranks, out=np.ones_like(ranks), where=ranks > 0)
    after = (j + 1) / (ranks + 1)
    return float(((before + after) / 2).sum() / num_positives)


def _index_list(entry: Mapping, key: str, q: int, n: int, required: bool) -> np.ndarray:
    if key not in entry:
        if required:
            raise KeyError(f"gnd[{q}] has no {key!r} list (expected keys 'easy', 'hard', 'junk')")
        return np.zeros(0, dtype=np.int64)
    idx = np.asarray(entry[key], dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise IndexError(f"gnd[{q}][{key!r}] has an index outside the database [0, {n})")
    return idx


def protocol_lists(entry: Mapping, protocol: str, q: int = 0, n: int = np.iinfo(np.int64).max):
    """(positives, junk) index arrays of one ground-truth entry under `protocol`."""
    easy = _index_list(entry, "easy", q, n, True)
    hard = _index_list(entry, "hard", q, n, True)
    junk = _index_list(entry, "junk", q, n, False)
    if protocol == "easy":
        pos, bad = easy, np.concatenate([junk, hard])
    elif protocol == "medium":
        pos, bad = np.concatenate([easy, hard]), junk
    elif protocol == "hard":
        pos, bad = hard, np.concatenate([junk, easy])
    else:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    pos = np.unique(pos)
    return pos, np.setdiff1d(bad, pos)


def _database_ranks(scores: torch.Tensor, chunk_size: Optional[int]):
    """Yield (first query, (R, N) int64 NumPy array of each database item's 0-based rank)."""
    q, n = scores.shape
    rows = rows_per_block(chunk_size, n, _BLOCK_ELEMS)
    for start in range(0, q, rows):
        block = scores[start : start + rows]
        order = torch.sort(block, dim=1, descending=True, stable=True).indices
        ranks = torch.empty_like(order)
        ranks.scatter_(1, order, torch.arange(n, device=order.device).expand_as(order))
        yield start, ranks.cpu().numpy()


@torch.no_grad()
def revisited_average_precisions(
    scores, gnd: Sequence[Mapping], kappas: Sequence[int] = (1, 5, 10), chunk_size: Optional[int] = None
) -> dict:
    """Per-query results: {protocol: (aps (Q,), precisions (Q, len(kappas)))}, NaN where no positive.

    `scores` (Q, N): the similarity of each query to each database image (higher is closer).
    """
    s = as_matrix(scores, "scores")
    nq, n = s.shape
    if len(gnd) != nq:
        raise ValueError(f"gnd has {len(gnd)} entries but scores has {nq} queries (rows)")
    kappas = [int(k) for k in kappas]
    if any(k < 1 for k in kappas):
        raise ValueError(f"kappas must be positive ints, got {kappas}")
    out = {p: (np.full(nq, np.nan), np.full((nq, len(kappas)), np.nan)) for p in PROTOCOLS}
    for start, ranks in _database_ranks(s, chunk_size):
        for r in range(ranks.shape[0]):
            qi = start + r
            for protocol in PROTOCOLS:
                pos, junk = protocol_lists(gnd[qi], protocol, qi, n)
                if pos.size == 0:
                    continue
                pos_ranks = np.sort(ranks[r, pos])
                junk_ranks = np.sort(ranks[r, junk])
                # each positive moves up by the number of junk images ranked before it
                pos_ranks = pos_ranks - np.searchsorted(junk_ranks, pos_ranks)
                aps, prs = out[protocol]
                aps[qi] = trapezoidal_ap(pos_ranks, pos.size)
                one_based = pos_ranks + 1
                for j, k in enumerate(kappas):
                    kq = min(int(one_based[-1]), k)
                    prs[qi, j] = np.count_nonzero(one_based <= kq) / kq
    return out


def revisited_map(
    scores, gnd: Sequence[Mapping], kappas: Sequence[int] = (1, 5, 10), chunk_size: Optional[int] = None
) -> dict:
    """mAP and mean precision at `kappas` under the easy, medium and hard protocols.

    `scores` is (Q, N) (tensor or array; ranked on its device), `gnd` the benchmark's per-query
    dicts. Returns {"easy": {"map": float, "mp": {k: float}}, "medium": {...}, "hard": {...}}.
    """
    kappas = [int(k) for k in kappas]
    per_query = revisited_average_precisions(scores, gnd, kappas, chunk_size)
    result = {}
    for protocol, (aps, prs) in per_query.items():
        valid = ~np.isnan(aps)
        if valid.any():
            mean_ap, mean_pr = float(aps[valid].mean()), prs[valid].mean(0)
        else:
            mean_ap, mean_pr = float("nan"), np.full(len(kappas), np.nan)
        result[protocol] = {"map": mean_ap, "mp": {int(k): float(v) for k, v in zip(kappas, mean_pr)}}
    return result
