"""Independent oracle: per-query loops in NumPy, straight from docs/ap_q.md.

Nothing here is shared with apl: the triangular kernel is the literal max(0, 1 - |s - b_m| / Delta)
on the clamped score, and the AP sums run bin by bin in plain Python.
"""
from __future__ import annotations

import math

import numpy as np

TIE_EPS = 1e-8


def histograms(scores: np.ndarray, rel: np.ndarray, M: int, lo: float, hi: float):
    delta = (hi - lo) / (M - 1)
    centres = hi - np.arange(M) * delta
    s = np.clip(scores, lo, hi)
    w = np.maximum(0.0, 1.0 - np.abs(s[:, None] - centres[None, :]) / delta)  # (N, M)
    return (w * rel[:, None]).sum(0), w.sum(0)


def ap_of_histograms(p, n, npos: float, variant: str) -> float:
    if npos == 0:
        return 0.0
    total, P, N = 0.0, 0.0, 0.0
    for m in range(len(p)):
        A, C = P, N  # counts before bin m
        P, N = P + p[m], N + n[m]
        if variant == "ap_q":
            total += p[m] * P / N if N > 0 else 0.0
        elif variant == "tie_aware_simplified":
            total += p[m] * (A + P + 1) / (C + N + 1)
        elif variant == "tie_aware":
            r = max(p[m] - 1, 0.0) / (max(n[m] - 1, 0.0) + TIE_EPS)
            total += p[m] * (n[m] * r + (A + 1 - r * (C + 1)) * math.log((N + 1) / (C + 1))) / (n[m] + TIE_EPS)
        else:
            raise ValueError(variant)
    return total / npos


def per_query_ap(emb, labels, ref_emb=None, ref_labels=None, M=20, score_range=(-1.0, 1.0), variant="ap_q"):
    """(ap, has_pos) for every query, self-retrieval when ref_emb is None."""
    emb = np.asarray(emb, dtype=np.float64)
    labels = np.asarray(labels)
    self_mode = ref_emb is None
    X = emb if self_mode else np.asarray(ref_emb, dtype=np.float64)
    xl = labels if self_mode else np.asarray(ref_labels)
    lo, hi = score_range
    aps, has = [], []
    for i in range(emb.shape[0]):
        keep = np.ones(X.shape[0], bool)
        if self_mode:
            keep[i] = False
        s = X[keep] @ emb[i]
        rel = (xl[keep] == labels[i]).astype(np.float64)
        p, n = histograms(s, rel, M, lo, hi)
        aps.append(ap_of_histograms(p, n, rel.sum(), variant))
        has.append(rel.sum() > 0)
    return np.array(aps), np.array(has)


def score_form_ap(scores, relevance, M=20, score_range=(-1.0, 1.0), variant="ap_q"):
    scores = np.asarray(scores, dtype=np.float64)
    relevance = np.asarray(relevance, dtype=np.float64)
    lo, hi = score_range
    out = []
    for i in range(scores.shape[0]):
        p, n = histograms(scores[i], relevance[i], M, lo, hi)
        out.append(ap_of_histograms(p, n, relevance[i].sum(), variant))
    return np.array(out)


def loss(emb, labels, weights=None, **kw) -> float:
    ap, has = per_query_ap(emb, labels, **kw)
    w = np.ones(len(ap)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w * has
    return 0.0 if w.sum() == 0 else 1.0 - float((w * ap).sum() / w.sum())


def numerical_grad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of a scalar function of an array."""
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        idx = it.multi_index
        old = x[idx]
        x[idx] = old + eps
        fp = f(x)
        x[idx] = old - eps
        fm = f(x)
        x[idx] = old
        g[idx] = (fp - fm) / (2 * eps)
    return g
