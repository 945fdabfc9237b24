"""The AP loss as functions: per-query AP, the batch loss, and the score-matrix form."""
from __future__ import annotations

from typing import Optional

import torch

from ..ops import core, health, validation as V
from ..ops.dispatch import resolve_for
from .inputs import batch_loss, prepare


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
    ap, npos, _ = _per_query(embeddings, labels, ref_embeddings, ref_labels, num_bins, score_range, variant, backend,
                             chunk_size, normalize, ref_includes_queries)
    return ap, npos > 0


def _per_query(embeddings, labels, ref_embeddings, ref_labels, num_bins, score_range, variant, backend, chunk_size,
               normalize=False, ref_includes_queries=False):
    num_bins = V.check_num_bins(num_bins)
    score_range = V.check_score_range(score_range)
    V.check_variant(variant)
    variant = V.canonical_variant(variant)
    x = prepare(embeddings, labels, ref_embeddings, ref_labels, backend, chunk_size, normalize, ref_includes_queries,
                check_norm=score_range == (-1.0, 1.0))  # a custom range: raw dot products on purpose
    checked = health.due()
    if checked:
        health.check_scores(x.embeddings, x.ref_embeddings, num_bins, score_range, x.self_offset)
    ap, npos = core.per_query(x.embeddings, x.labels, x.ref_embeddings, x.ref_labels, num_bins=num_bins,
                              score_range=score_range, variant=variant, backend=x.backend, chunk_size=x.chunk_size,
                              self_offset=x.self_offset)
    if checked:
        health.check_positives(npos > 0)
    return ap, npos, x


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
    ap, npos, x = _per_query(embeddings, labels, ref_embeddings, ref_labels, num_bins, score_range, variant, backend,
                             chunk_size, normalize, ref_includes_queries)
    return batch_loss(ap, npos, x.labels, x.embeddings, query_weights, class_balanced)


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
    score_range = V.check_score_range(score_range)
    V.check_variant(variant)
    variant = V.canonical_variant(variant)
    which = resolve_for(V.check_backend(backend), scores.device)
    return core.scores_ap(scores, relevance, num_bins=num_bins, score_range=score_range, variant=variant, backend=which)
