"""Independent oracle of the rank surrogates: per-query loops in NumPy (float64), straight from the
definitions of docs/rank_losses.md, and finite differences for gradients. No shared code with apl."""
from __future__ import annotations

import numpy as np


def _sig(x: float, t: float) -> float:
    return 1.0 / (1.0 + np.exp(-x / t))


def _items(i_query, n, self_col, mode):
    """(items, positives-eligible) index lists of one query; mode "excluded", "item_and_positive",
    "item_only" (where the query's own column self_col stands)."""
    items = [j for j in range(n) if not (j == self_col and mode == "excluded")]
    return items


def per_query(q, ql, x=None, xl=None, loss="smooth_ap", temperature=0.01, ks=(1, 2, 4, 8, 16), k_temps=None,
              mode="excluded", self_offset=None):
    """(value (B,), npos (B,)) of every query. Without x, the queries are ranked against themselves
    (query i is column i); with x and self_offset, query i is column self_offset + i of x."""
    q = np.asarray(q, np.float64)
    self_mode = x is None
    x = q if self_mode else np.asarray(x, np.float64)
    xl = ql if self_mode else xl
    offset = 0 if self_mode else self_offset
    k_temps = [1.0] * len(ks) if k_temps is None else k_temps
    B, N = q.shape[0], x.shape[0]
    out, npos = np.zeros(B), np.zeros(B, dtype=np.int64)
    for b in range(B):
        s = x @ q[b]
        own = None if offset is None else offset + b
        items = [j for j in range(N) if not (j == own and mode == "excluded")]
        positives = [j for j in items if xl[j] == ql[b] and not (j == own and mode == "item_only")]
        npos[b] = len(positives)
        if not positives:
            continue
        if loss == "smooth_ap":
            ap = 0.0
            for i in positives:
                r_all = 1.0 + sum(_sig(s[j] - s[i], temperature) for j in items if j != i)
                r_pos = 1.0 + sum(_sig(s[j] - s[i], temperature) for j in positives if j != i)
                ap += r_pos / r_all
            out[b] = ap / len(positives)
        else:
            ranks = [1.0 + sum(_sig(s[j] - s[i], temperature) for j in items if j != i) for i in positives]
            total = 0.0
            for k, t2 in zip(ks, k_temps):
                hits = sum(_sig(k - r, t2) for r in ranks)
                total += min(hits, k) / min(k, len(positives))
            out[b] = total / len(ks)
    return out, npos


def loss(q, ql, **kw) -> float:
    value, npos = per_query(q, ql, **kw)
    keep = npos > 0
    return float(1.0 - value[keep].mean()) if keep.any() else 0.0


def numerical_grad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    g = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        old = x[idx]
        x[idx] = old + eps
        hi = f(x)
        x[idx] = old - eps
        lo = f(x)
        x[idx] = old
        g[idx] = (hi - lo) / (2 * eps)
    return g
