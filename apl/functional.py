"""The AP loss as functions: per-query AP, the batch loss, and the score-matrix form."""
from __future__ import annotations

from typing import Optional

import torch

from . import _ops, _validation as V, reference
from .backends import resolve


def per_query_ap(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    ref_embeddings: Optional[torch.Tensor] = None,
    ref_labels: Optional[torch.Tensor] = None,
    *,
    num_bins: int = 20,
    score_range: tuple[float, float] = (-1.0, 1.0),
    variant: str = "ap_q",
    backend: str = "auto",
    chunk_size: Optional[int] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantized AP of every query, differentiable with respect to the embeddings.

    Args:
        embeddings: (B, D) query descriptors, expected L2-normalised (scores are dot products;
            nothing is normalised here).
        labels: (B,) integer class ids; items with the query's label are its positives.
        ref_embeddings, ref_labels: an optional separate database (N, D) and (N,). Without them,
            every row is a query against the other B - 1 rows (itself excluded).
        num_bins: M, the number of histogram bins (>= 2).
        score_range: (lo, hi), the range covered by the bins; scores outside land in the edge
            bin with zero gradient.
        variant: "ap_q" (the paper's AP_Q), "tie_aware" (full AP_T) or "tie_aware_simplified".
        backend: "auto", "torch" (reference), "cpu" or "cuda" (compiled kernels).
        chunk_size: stream over blocks of this many queries so that nothing of size B x N is
            kept (scores are recomputed in backward).

    Returns:
        (ap, has_pos): (B,) AP per query (0 where undefined) and a bool mask of the queries with
        at least one positive. float16/bfloat16 embeddings give float32 AP.
    """
    ap, npos = _per_query(embeddings, labels, ref_embeddings, ref_labels, num_bins, score_range, variant, backend, chunk_size)
    return ap, npos > 0


def _per_query(embeddings, labels, ref_embeddings, ref_labels, num_bins, score_range, variant, backend, chunk_size):
    embeddings, labels, ref_embeddings, ref_labels = V.check_embeddings_pair(embeddings, labels, ref_embeddings, ref_labels)
    num_bins = V.check_num_bins(num_bins)
    lo, hi = V.check_score_range(score_range)
    variant_id = V.check_variant(variant)
    chunk = V.check_chunk_size(chunk_size)
    which = resolve(V.check_backend(backend), embeddings.device)
    if which == "torch":
        V.check_finite(embeddings, "embeddings")
        if ref_embeddings is not None:
            V.check_finite(ref_embeddings, "ref_embeddings")
        return reference.per_query_ap(embeddings, labels, ref_embeddings, ref_labels, num_bins, (lo, hi), variant, chunk)
    if ref_embeddings is None:
        return _ops.self_ap(embeddings, labels, num_bins, lo, hi, variant_id, chunk)
    return _ops.ref_ap(embeddings, labels, ref_embeddings, ref_labels, num_bins, lo, hi, variant_id, chunk)


def class_balanced_weights(labels: torch.Tensor) -> torch.Tensor:
    """w_i = 1 / #{k : labels_k = labels_i}: every class weighs the same in the mean."""
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse].to(torch.float32)


def weighted_loss(ap: torch.Tensor, has_pos: torch.Tensor, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """1 - sum_i w_i AP_i / sum_i w_i over the queries with a positive.

    With no such query (or all weights 0) the loss is 0, still attached to the graph, with zero
    gradient: never a NaN.
    """
    w = has_pos.to(ap.dtype)
    if weights is not None:
        w = w * weights.to(ap.dtype)
    total = w.sum()
    mean = (w * ap).sum() / torch.where(total > 0, total, torch.ones_like(total))
    return torch.where(total > 0, 1.0 - mean, mean * 0.0)


def ap_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    ref_embeddings: Optional[torch.Tensor] = None,
    ref_labels: Optional[torch.Tensor] = None,
    query_weights: Optional[torch.Tensor] = None,
    *,
    num_bins: int = 20,
    score_range: tuple[float, float] = (-1.0, 1.0),
    variant: str = "ap_q",
    class_balanced: bool = False,
    backend: str = "auto",
    chunk_size: Optional[int] = None,
) -> torch.Tensor:
    """The listwise AP loss, 1 - weighted mAP over the queries that have a positive (eq. 12).

    Embeddings are expected L2-normalised. `query_weights` (B,) >= 0 weigh the queries;
    `class_balanced=True` multiplies them by 1 / (number of queries of the query's class).
    See :func:`per_query_ap` for the other arguments. Returns a scalar tensor.
    """
    ap, npos = _per_query(embeddings, labels, ref_embeddings, ref_labels, num_bins, score_range, variant, backend, chunk_size)
    weights = None
    if query_weights is not None:
        weights = V.check_weights(query_weights, embeddings.shape[0], embeddings)
    if class_balanced:
        cb = class_balanced_weights(labels).to(ap.dtype)
        weights = cb if weights is None else weights * cb
    return weighted_loss(ap, npos > 0, weights)


def quantized_ap(
    scores: torch.Tensor,
    relevance: torch.Tensor,
    num_bins: int = 20,
    score_range: tuple[float, float] = (-1.0, 1.0),
    variant: str = "ap_q",
    backend: str = "auto",
) -> torch.Tensor:
    """Quantized AP of each row of a (B, N) score matrix, differentiable with respect to scores.

    `relevance` (B, N) marks the relevant items (bool, or 0/1). No item is excluded: this is the
    form the paper's public code takes. Rows without a relevant item get AP 0.
    """
    scores, relevance = V.check_scores_relevance(scores, relevance)
    num_bins = V.check_num_bins(num_bins)
    lo, hi = V.check_score_range(score_range)
    variant_id = V.check_variant(variant)
    which = resolve(V.check_backend(backend), scores.device)
    if which == "torch":
        V.check_finite(scores, "scores")
        ap, _ = reference.quantized_ap(scores, relevance, num_bins, (lo, hi), variant)
    else:
        ap, _ = _ops.scores_ap(scores, relevance, num_bins, lo, hi, variant_id)
    return ap
