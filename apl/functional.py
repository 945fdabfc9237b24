"""The AP loss as functions: per-query AP, the batch loss, and the score-matrix form."""
from __future__ import annotations

import math
import warnings
from typing import Optional

import torch
import torch.nn.functional as F

from . import _ops, _validation as V, reference
from .backends import resolve_for


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
    normalize: bool = False,
    ref_includes_queries: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantized AP of every query, differentiable with respect to the embeddings.

    Args:
        embeddings: (B, D) query descriptors. Scores are dot products, binned over
            `score_range`: with the default (-1, 1) the rows must be L2-normalised (cosine
            similarities), which `normalize=True` does here; otherwise a warning says so once.
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
        normalize: L2-normalise the rows of `embeddings` and `ref_embeddings` first.
        ref_includes_queries: the first B rows of `ref_embeddings` are the queries themselves (the
            batch followed by other items, e.g. a cross-batch memory: see `apl.memory`); each
            query's own row is then left out of its ranking, as without a reference set.

    Returns:
        (ap, has_pos): (B,) AP per query (0 where undefined) and a bool mask of the queries with
        at least one positive. float16/bfloat16 embeddings give float32 AP.
    """
    ap, npos = _per_query(embeddings, labels, ref_embeddings, ref_labels, num_bins, score_range, variant, backend,
                          chunk_size, normalize, ref_includes_queries)
    return ap, npos > 0


# Rows whose norm is further than this from 1 are "not normalised" (bf16 rounding stays far below).
NORM_TOLERANCE = 0.05
_norm_warned = False


def _warn_if_not_unit_rows(x: torch.Tensor, name: str) -> None:
    """Warns once per process when a row of `x` is far from unit norm: with cosine bins most of its
    scores would fall outside (-1, 1), where the loss has zero gradient. Costs one norm of the
    (B, D) embeddings and one host sync per call until it has warned (benchmarks/bench_norm_check.py
    measures it); skipped inside torch.compile, where it would break the graph."""
    global _norm_warned
    if _norm_warned or torch.compiler.is_compiling() or x.numel() == 0:
        return
    with torch.no_grad():
        norms = torch.linalg.vector_norm(x.detach().to(torch.promote_types(x.dtype, torch.float32)), dim=1)
        extremes = torch.stack([norms.min(), norms.max()]).tolist()
    # non-finite rows are an error raised next, not a warning
    if all(map(math.isfinite, extremes)) and max(abs(extremes[0] - 1), abs(extremes[1] - 1)) > NORM_TOLERANCE:
        _norm_warned = True
        warnings.warn(
            f"apl: rows of {name} are not L2-normalised (norms from {extremes[0]:.3g} to {extremes[1]:.3g}); "
            "the AP loss bins cosine similarities over score_range=(-1, 1) and scores outside it get no "
            "gradient. Normalise them (torch.nn.functional.normalize(x, dim=1)) or pass normalize=True.",
            UserWarning,
            stacklevel=4,
        )


def _per_query(embeddings, labels, ref_embeddings, ref_labels, num_bins, score_range, variant, backend, chunk_size,
               normalize=False, ref_includes_queries=False, check_norm=True):
    embeddings, labels, ref_embeddings, ref_labels = V.check_embeddings_pair(embeddings, labels, ref_embeddings, ref_labels)
    self_offset = V.check_ref_includes_queries(ref_includes_queries, embeddings, ref_embeddings)
    num_bins = V.check_num_bins(num_bins)
    lo, hi = V.check_score_range(score_range)
    variant_id = V.check_variant(variant)
    chunk = V.check_chunk_size(chunk_size)
    which = resolve_for(V.check_backend(backend), embeddings.device)
    if normalize:
        embeddings = F.normalize(embeddings, dim=1)
        ref_embeddings = None if ref_embeddings is None else F.normalize(ref_embeddings, dim=1)
    elif check_norm and (lo, hi) == (-1.0, 1.0):
        _warn_if_not_unit_rows(embeddings, "embeddings")
        if ref_embeddings is not None:
            _warn_if_not_unit_rows(ref_embeddings, "ref_embeddings")
    if which == "torch":
        V.check_finite(embeddings, "embeddings")
        if ref_embeddings is not None:
            V.check_finite(ref_embeddings, "ref_embeddings")
        return reference.per_query_ap(embeddings, labels, ref_embeddings, ref_labels, num_bins, (lo, hi), variant, chunk,
                                      self_offset)
    if ref_embeddings is None:
        return _ops.self_ap(embeddings, labels, num_bins, lo, hi, variant_id, chunk)
    return _ops.ref_ap(embeddings, labels, ref_embeddings, ref_labels, num_bins, lo, hi, variant_id, chunk, self_offset)


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
    normalize: bool = False,
    ref_includes_queries: bool = False,
) -> torch.Tensor:
    """The listwise AP loss, 1 - weighted mAP over the queries that have a positive (eq. 12).

    Embeddings are expected L2-normalised (or pass `normalize=True`). `query_weights` (B,) >= 0 weigh the queries;
    `class_balanced=True` multiplies them by 1 / (number of queries of the query's class).
    See :func:`per_query_ap` for the other arguments. Returns a scalar tensor.
    """
    return _ap_loss(embeddings, labels, ref_embeddings, ref_labels, query_weights, num_bins, score_range, variant,
                    class_balanced, backend, chunk_size, normalize, ref_includes_queries)


def _ap_loss(embeddings, labels, ref_embeddings, ref_labels, query_weights, num_bins, score_range, variant,
             class_balanced, backend, chunk_size, normalize, ref_includes_queries, check_norm=True):
    ap, npos = _per_query(embeddings, labels, ref_embeddings, ref_labels, num_bins, score_range, variant, backend,
                          chunk_size, normalize, ref_includes_queries, check_norm)
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
    which = resolve_for(V.check_backend(backend), scores.device)
    if which == "torch":
        V.check_finite(scores, "scores")
        ap, _ = reference.quantized_ap(scores, relevance, num_bins, (lo, hi), variant)
    else:
        ap, _ = _ops.scores_ap(scores, relevance, num_bins, lo, hi, variant_id)
    return ap
