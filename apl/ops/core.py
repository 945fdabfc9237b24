"""The losses (AP_Q and its variants, the rank surrogates) on validated inputs, computed by a backend
that is already chosen: "torch" (the references), "cpu" or "cuda" (the compiled kernels). No
argument checks, no warnings, no backend choice: the public API (apl/functional/) does those, the
self-test calls this directly."""
from __future__ import annotations

from typing import Optional

import torch

from . import compiled, reference, reference_rank
from .validation import check_finite
from .variants import VARIANTS


def per_query(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    ref_embeddings: Optional[torch.Tensor],
    ref_labels: Optional[torch.Tensor],
    *,
    num_bins: int,
    score_range: tuple[float, float],
    variant: str,
    backend: str,
    chunk_size: int = 0,
    self_offset: int = -1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ap, npos) of every query: against the other rows without a reference set, else against
    `ref_embeddings` (with row `self_offset + i` left out of query i's ranking when >= 0)."""
    lo, hi = score_range
    if backend == "torch":
        check_finite(embeddings, "embeddings")
        if ref_embeddings is not None:
            check_finite(ref_embeddings, "ref_embeddings")
        return reference.per_query_ap(embeddings, labels, ref_embeddings, ref_labels, num_bins, (lo, hi), variant,
                                      chunk_size, self_offset)
    vid = VARIANTS[variant]
    if ref_embeddings is None:
        return compiled.self_ap(embeddings, labels, num_bins, lo, hi, vid, chunk_size)
    return compiled.ref_ap(embeddings, labels, ref_embeddings, ref_labels, num_bins, lo, hi, vid, chunk_size,
                           self_offset)


def rank_per_query(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    ref_embeddings: Optional[torch.Tensor],
    ref_labels: Optional[torch.Tensor],
    *,
    kind: int,
    temperature: float,
    ks: tuple[float, ...],
    k_temperatures: tuple[float, ...],
    query_mode: int,
    backend: str,
    chunk_size: int = 0,
    self_offset: int = -1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(value, npos) of every query for a rank surrogate (`kind`, see variants.RANK_KINDS): its
    Smooth-AP or Recall@k and its number of positives; ranked as `per_query` does."""
    args = (kind, temperature, ks, k_temperatures, query_mode)
    if backend == "torch":
        check_finite(embeddings, "embeddings")
        if ref_embeddings is not None:
            check_finite(ref_embeddings, "ref_embeddings")
        return reference_rank.per_query(embeddings, labels, ref_embeddings, ref_labels, *args, chunk_size, self_offset)
    if ref_embeddings is None:
        return compiled.self_rank(embeddings, labels, *args, chunk_size)
    return compiled.ref_rank(embeddings, labels, ref_embeddings, ref_labels, *args, chunk_size, self_offset)


def scores_ap(scores: torch.Tensor, relevance: torch.Tensor, *, num_bins: int, score_range: tuple[float, float],
              variant: str, backend: str) -> torch.Tensor:
    """AP of each row of a (B, N) score matrix with a bool relevance mask (no item left out)."""
    if backend == "torch":
        check_finite(scores, "scores")
        return reference.quantized_ap(scores, relevance, num_bins, score_range, variant)[0]
    return compiled.scores_ap(scores, relevance, num_bins, score_range[0], score_range[1], VARIANTS[variant])[0]


def class_balanced_weights(labels: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """w_i = 1 / #{k : labels_k = labels_i}: every class weighs the same in the mean (eq. 12).
    Computed in `dtype` (the loss's), so that float64 losses get exact weights."""
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse].to(dtype)


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


def query_weights(labels: torch.Tensor, weights: Optional[torch.Tensor], class_balanced: bool,
                  dtype: torch.dtype) -> Optional[torch.Tensor]:
    """The user's (validated) weights, times the class-balanced ones when asked for."""
    if class_balanced:
        cb = class_balanced_weights(labels, dtype)
        return cb if weights is None else weights.to(dtype) * cb
    return weights
