"""What every loss function of apl does with its inputs before the loss core runs, and with the
per-query values after: argument checks, the backend choice, L2 normalisation or the norm check,
and the weighted mean over the queries that have a positive."""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

from ..ops import core, validation as V
from ..ops.dispatch import resolve_for
from ..ops.validation import warn_if_not_unit_rows


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm. float16 / bfloat16 rows are normalised in float32 and rounded
    once, back to their dtype: in their own dtype the norm and the division each round (bfloat16
    keeps 8 bits of mantissa), which moves the result by several units in the last place."""
    if x.dtype in (torch.float16, torch.bfloat16):
        return F.normalize(x.float(), dim=1).to(x.dtype)
    return F.normalize(x, dim=1)


class Inputs(NamedTuple):
    embeddings: torch.Tensor
    labels: torch.Tensor
    ref_embeddings: Optional[torch.Tensor]
    ref_labels: Optional[torch.Tensor]
    backend: str  # resolved: "torch", "cpu" or "cuda"
    chunk_size: int  # 0: no streaming
    self_offset: int  # -1, or 0 when the reference set starts with the queries


def prepare(embeddings, labels, ref_embeddings, ref_labels, backend, chunk_size, normalize: bool,
            ref_includes_queries: bool, check_norm: bool = True, family: str = "ap") -> Inputs:
    """Validated inputs; normalised when asked (in float32 for half precision), else checked once per
    process and loss `family` for rows far from unit norm (when `check_norm`: the loss assumes
    cosine similarities)."""
    embeddings, labels, ref_embeddings, ref_labels = V.check_embeddings_pair(embeddings, labels, ref_embeddings, ref_labels)
    self_offset = V.check_ref_includes_queries(ref_includes_queries, embeddings, ref_embeddings)
    chunk = V.check_chunk_size(chunk_size)
    which = resolve_for(V.check_backend(backend), embeddings.device)
    if normalize:
        embeddings = unit_rows(embeddings)
        ref_embeddings = None if ref_embeddings is None else unit_rows(ref_embeddings)
    elif check_norm:
        warn_if_not_unit_rows(embeddings, "embeddings", family)
        if ref_embeddings is not None:
            warn_if_not_unit_rows(ref_embeddings, "ref_embeddings", family)
    return Inputs(embeddings, labels, ref_embeddings, ref_labels, which, chunk, self_offset)


def batch_loss(values: torch.Tensor, npos: torch.Tensor, labels: torch.Tensor, embeddings: torch.Tensor,
               query_weights: Optional[torch.Tensor], class_balanced: bool) -> torch.Tensor:
    """1 - sum_i w_i value_i / sum_i w_i over the queries with a positive (never NaN)."""
    if query_weights is not None:
        query_weights = V.check_weights(query_weights, values.shape[0], embeddings)
    return core.weighted_loss(values, npos > 0, core.query_weights(labels, query_weights, class_balanced, values.dtype))
