"""`APLoss`, the listwise AP loss as an nn.Module."""
from __future__ import annotations

from typing import Optional

from ..functional import ap_loss
from ..ops import validation as V
from .base import ListwiseLoss


class APLoss(ListwiseLoss):
    """1 - mAP_Q over a batch where every image is a query (Revaud et al., ICCV 2019).

    Args:
        num_bins: M, histogram bins (the paper uses 20).
        score_range: (lo, hi) covered by the bins; (-1, 1) for cosine similarities.
        variant: "ap_q", "tie_aware" (full AP_T) or "tie_aware_simplified".
        class_balanced, backend, chunk_size, normalize: as in `ListwiseLoss`. `normalize` is on by
            default: raw model outputs of norm 10 would put most scores outside (-1, 1), where the
            loss has no gradient; for rows that are already unit-norm it changes nothing but
            rounding and costs O(B x D), against the loss's O(B x N x D). Pass False to bin raw
            dot products (with your own `score_range`).

    forward(embeddings, labels, ref_embeddings=None, ref_labels=None, query_weights=None,
    ref_includes_queries=False) takes (B, D) embeddings and (B,) integer labels and returns a
    scalar (see `apl.ap_loss`).
    """

    function = staticmethod(ap_loss)

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
        super().__init__(class_balanced, backend, chunk_size, normalize)
        self.num_bins = V.check_num_bins(num_bins)
        self.score_range = V.check_score_range(score_range)
        V.check_variant(variant)
        self.variant = V.canonical_variant(variant)

    def options(self) -> dict:
        return {"num_bins": self.num_bins, "score_range": self.score_range, "variant": self.variant}
