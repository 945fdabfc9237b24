"""The rank surrogates as functions: Smooth-AP (Brown et al., ECCV 2020) and the Recall@k surrogate
(Patel, Tolias & Matas, CVPR 2022), with the API of `ap_loss`. The math and its gradient are in
docs/rank_losses.md; the compiled kernels compute them in O(B x P x N) time (P positives per query)
and O(B x N) memory, O(c x N) when streaming, where the authors' code builds B x B x B tensors.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from ..ops import core, health, validation as V
from ..ops.variants import QUERY_EXCLUDED, QUERY_ITEM_AND_POSITIVE, QUERY_ITEM_ONLY, RANK_KINDS
from .inputs import Inputs, batch_loss, prepare

KTemperature = Union[float, Sequence[float]]
SMOOTH_AP_TEMPERATURE = 0.01  # the Smooth-AP paper's tau
RECALL_K = (1, 2, 4, 8, 16)  # the Recall@k paper's training k and temperatures
RECALL_TEMPERATURE, RECALL_K_TEMPERATURE = 0.01, 1.0


def _values(kind: str, embeddings, labels, ref_embeddings, ref_labels, temperature, ks, k_temperatures,
            include_query, backend, chunk_size, normalize, ref_includes_queries) -> tuple[torch.Tensor, torch.Tensor, Inputs]:
    temperature = V.check_temperature(temperature)
    x = prepare(embeddings, labels, ref_embeddings, ref_labels, backend, chunk_size, normalize, ref_includes_queries,
                family=kind)
    V.check_include_query(include_query, x.self_offset, x.ref_embeddings is not None)
    mode = QUERY_EXCLUDED
    if include_query:  # as each paper's authors' code: the query is a positive in Smooth-AP, an item only in Recall@k
        mode = QUERY_ITEM_AND_POSITIVE if kind == "smooth_ap" else QUERY_ITEM_ONLY
    checked = health.due()
    values, npos = core.rank_per_query(x.embeddings, x.labels, x.ref_embeddings, x.ref_labels, kind=RANK_KINDS[kind],
                                       temperature=temperature, ks=ks, k_temperatures=k_temperatures, query_mode=mode,
                                       backend=x.backend, chunk_size=x.chunk_size, self_offset=x.self_offset)
    if checked:
        health.check_positives(npos > 0)
    return values, npos, x


def per_query_smooth_ap(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    ref_embeddings: Optional[torch.Tensor] = None,
    ref_labels: Optional[torch.Tensor] = None,
    *,
    temperature: float = SMOOTH_AP_TEMPERATURE,
    include_query: bool = False,
    backend: str = "auto",
    chunk_size: Optional[int] = None,
    normalize: bool = False,
    ref_includes_queries: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth-AP of every query, differentiable with respect to the embeddings.

    For a query with positives P among its ranked items Omega and scores s (dot products),
    Smooth-AP = (1/|P|) sum_{i in P} (1 + sum_{j in P, j != i} G(s_j - s_i)) / (1 + sum_{j in Omega, j != i} G(s_j - s_i)),
    G(x) = sigmoid(x / temperature).

    Args:
        embeddings, labels, ref_embeddings, ref_labels, backend, chunk_size, normalize,
            ref_includes_queries: as in `apl.per_query_ap` (items with the query's label are its
            positives; without a reference set every row is a query against the other rows).
        temperature: tau of the sigmoid (the paper's 0.01).
        include_query: False (the paper): the query is not among its own ranked items. True (the
            authors' code): the query is one of its items (with its own score) and one of its
            positives, and is averaged over; needs the queries among the items (no reference set,
            or `ref_includes_queries=True`).

    Returns:
        (ap, has_pos): (B,) Smooth-AP per query (0 where undefined) and a bool mask of the queries
        with at least one positive.
    """
    ap, npos, _ = _values("smooth_ap", embeddings, labels, ref_embeddings, ref_labels, temperature, (), (),
                          include_query, backend, chunk_size, normalize, ref_includes_queries)
    return ap, npos > 0


def smooth_ap_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    ref_embeddings: Optional[torch.Tensor] = None,
    ref_labels: Optional[torch.Tensor] = None,
    query_weights: Optional[torch.Tensor] = None,
    *,
    temperature: float = SMOOTH_AP_TEMPERATURE,
    include_query: bool = False,
    class_balanced: bool = False,
    backend: str = "auto",
    chunk_size: Optional[int] = None,
    normalize: bool = False,
    ref_includes_queries: bool = False,
) -> torch.Tensor:
    """The Smooth-AP loss, 1 - weighted mean Smooth-AP over the queries that have a positive. Any
    number of images per class; see `per_query_smooth_ap` and `apl.ap_loss` for the arguments."""
    ap, npos, x = _values("smooth_ap", embeddings, labels, ref_embeddings, ref_labels, temperature, (), (),
                          include_query, backend, chunk_size, normalize, ref_includes_queries)
    return batch_loss(ap, npos, x.labels, x.embeddings, query_weights, class_balanced)


def per_query_recall_at_k(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    ref_embeddings: Optional[torch.Tensor] = None,
    ref_labels: Optional[torch.Tensor] = None,
    *,
    k: Union[int, Sequence[int]] = RECALL_K,
    temperature: float = RECALL_TEMPERATURE,
    k_temperature: KTemperature = RECALL_K_TEMPERATURE,
    include_query: bool = False,
    backend: str = "auto",
    chunk_size: Optional[int] = None,
    normalize: bool = False,
    ref_includes_queries: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Recall@k surrogate of every query, averaged over the values of `k`.

    The rank of a positive i is r_i = 1 + sum_{j in Omega, j != i} sigmoid((s_j - s_i) / temperature);
    Recall@k = min(sum_{i in P} sigmoid((k - r_i) / k_temperature), k) / min(k, |P|).

    Args:
        k: the k values, at most 32 (the paper trains with 1, 2, 4, 8, 16).
        temperature: tau_1 of the rank's sigmoid (the paper's 0.01).
        k_temperature: tau_2 of the sigmoid of each k (one number, or one per k; the paper's 1).
        include_query: False (the paper): the query is not among its ranked items. True (the
            authors' code): it is one of its items, ranked by its own score, but not a positive.
        Others as in `per_query_smooth_ap`.

    Returns:
        (recall, has_pos): (B,) and the mask of the queries with at least one positive.
    """
    ks, temps = V.check_ks(k, k_temperature)
    value, npos, _ = _values("recall_at_k", embeddings, labels, ref_embeddings, ref_labels, temperature, ks, temps,
                             include_query, backend, chunk_size, normalize, ref_includes_queries)
    return value, npos > 0


def recall_at_k_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    ref_embeddings: Optional[torch.Tensor] = None,
    ref_labels: Optional[torch.Tensor] = None,
    query_weights: Optional[torch.Tensor] = None,
    *,
    k: Union[int, Sequence[int]] = RECALL_K,
    temperature: float = RECALL_TEMPERATURE,
    k_temperature: KTemperature = RECALL_K_TEMPERATURE,
    include_query: bool = False,
    class_balanced: bool = False,
    backend: str = "auto",
    chunk_size: Optional[int] = None,
    normalize: bool = False,
    ref_includes_queries: bool = False,
) -> torch.Tensor:
    """The Recall@k surrogate loss, 1 - weighted mean Recall@k (averaged over `k`) over the queries
    that have a positive; see `per_query_recall_at_k` and `apl.ap_loss` for the arguments."""
    ks, temps = V.check_ks(k, k_temperature)
    value, npos, x = _values("recall_at_k", embeddings, labels, ref_embeddings, ref_labels, temperature, ks, temps,
                             include_query, backend, chunk_size, normalize, ref_includes_queries)
    return batch_loss(value, npos, x.labels, x.embeddings, query_weights, class_balanced)
