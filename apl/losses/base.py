"""`ListwiseLoss`: what apl's loss modules share (options, checks, the forward signature)."""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from ..ops import validation as V


class ListwiseLoss(nn.Module):
    """Base of apl's loss modules: every image of a batch is a query ranked against the others (or
    against a reference set), and the loss is 1 - the weighted mean of a per-query measure.

    Args (common to every loss):
        class_balanced: weigh each query by 1 / (queries of its class in the batch).
        backend: "auto", "torch", "cpu" or "cuda".
        chunk_size: stream over blocks of queries (memory O(chunk x N) instead of O(B x N)).
        normalize: L2-normalise the embeddings (and reference embeddings) first. On by default, as in
            pytorch-metric-learning's losses: the losses compare cosine similarities.

    forward(embeddings, labels, ref_embeddings=None, ref_labels=None, query_weights=None,
    ref_includes_queries=False) takes (B, D) embeddings and (B,) integer labels and returns a scalar.
    Subclasses set `function` (the loss as a function) and return their own options from `options()`.
    """

    function: Callable[..., torch.Tensor]

    def __init__(self, class_balanced: bool = False, backend: str = "auto", chunk_size: Optional[int] = None,
                 normalize: bool = True) -> None:
        super().__init__()
        self.class_balanced = bool(class_balanced)
        self.backend = V.check_backend(backend)
        V.check_chunk_size(chunk_size)
        self.chunk_size = chunk_size
        self.normalize = bool(normalize)

    def options(self) -> dict:
        """The keyword arguments of `function` that are the loss's own."""
        return {}

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        ref_embeddings: Optional[torch.Tensor] = None,
        ref_labels: Optional[torch.Tensor] = None,
        query_weights: Optional[torch.Tensor] = None,
        ref_includes_queries: bool = False,
    ) -> torch.Tensor:
        return type(self).function(embeddings, labels, ref_embeddings, ref_labels, query_weights,
                                   class_balanced=self.class_balanced, backend=self.backend, chunk_size=self.chunk_size,
                                   normalize=self.normalize, ref_includes_queries=ref_includes_queries, **self.options())

    def extra_repr(self) -> str:
        own = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        common = (f"class_balanced={self.class_balanced}, backend={self.backend!r}, chunk_size={self.chunk_size}, "
                  f"normalize={self.normalize}")
        return f"{own}, {common}" if own else common
