"""`APLoss`, the listwise AP loss as an nn.Module."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..functional import ap_loss
from ..ops import validation as V


class APLoss(nn.Module):
    """1 - mAP_Q over a batch where every image is a query (Revaud et al., ICCV 2019).

    Args:
        num_bins: M, histogram bins (the paper uses 20).
        score_range: (lo, hi) covered by the bins; (-1, 1) for cosine similarities.
        variant: "ap_q", "tie_aware" (full AP_T) or "tie_aware_simplified".
        class_balanced: weigh each query by 1 / (queries of its class in the batch).
        backend: "auto", "torch", "cpu" or "cuda".
        chunk_size: stream over blocks of queries (memory O(chunk x N) instead of O(B x N)).
        normalize: L2-normalise the embeddings (and reference embeddings) first. On by default,
            as in pytorch-metric-learning's losses: the bins cover cosine similarities, and raw
            model outputs of norm 10 would put most scores outside (-1, 1), where the loss has no
            gradient. For rows that are already unit-norm it changes nothing but rounding and
            costs O(B x D), against the loss's O(B x N x D). Pass False to bin raw dot products
            (with your own `score_range`).

    forward(embeddings, labels, ref_embeddings=None, ref_labels=None, query_weights=None,
    ref_includes_queries=False) takes (B, D) embeddings and (B,) integer labels and returns a
    scalar (see `apl.ap_loss`).
    """

    def __init__(
        self,
        num_bins: int = 20,
        score_range: tuple[float, float] = (-1.0, 1.0),
        variant: str = "ap_q",
        class_balanced: bool = False,
        backend: str = "auto",
        chunk_size: Optional[int] = None,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        self.num_bins = V.check_num_bins(num_bins)
        self.score_range = V.check_score_range(score_range)
        V.check_variant(variant)
        self.variant = variant
        self.class_balanced = bool(class_balanced)
        self.backend = V.check_backend(backend)
        V.check_chunk_size(chunk_size)
        self.chunk_size = chunk_size
        self.normalize = bool(normalize)

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        ref_embeddings: Optional[torch.Tensor] = None,
        ref_labels: Optional[torch.Tensor] = None,
        query_weights: Optional[torch.Tensor] = None,
        ref_includes_queries: bool = False,
    ) -> torch.Tensor:
        return ap_loss(
            embeddings,
            labels,
            ref_embeddings,
            ref_labels,
            query_weights,
            num_bins=self.num_bins,
            score_range=self.score_range,
            variant=self.variant,
            class_balanced=self.class_balanced,
            backend=self.backend,
            chunk_size=self.chunk_size,
            normalize=self.normalize,
            ref_includes_queries=ref_includes_queries,
        )

    def extra_repr(self) -> str:
        return (
            f"num_bins={self.num_bins}, score_range={self.score_range}, variant={self.variant!r}, "
            f"class_balanced={self.class_balanced}, backend={self.backend!r}, chunk_size={self.chunk_size}, "
            f"normalize={self.normalize}"
        )
