"""apl's AP loss as a pytorch-metric-learning loss: swap it into a PML training loop in one line.

    from apl.pml import APLoss
    loss_func = APLoss(num_bins=20)          # instead of e.g. losses.TripletMarginLoss()
    loss = loss_func(embeddings, labels)     # or (embeddings, labels, indices_tuple, ref_emb, ref_labels)

Semantics (the same value as `apl.ap_loss`):
- embeddings are L2-normalised first (PML's losses do the same through their distance);
- without `ref_emb`, every row is a query against the other rows;
- with `ref_emb` / `ref_labels`, the rows are ranked against that reference set;
- inside PML's cross-batch memory: PML's `CrossBatchMemory` accepts only the losses on its own
  list, so use `apl.pml.CrossBatchMemory`, PML's class with "APLoss" added to that list (nothing
  else changes);
- with `indices_tuple` (pairs (a1, p, a2, n), or triplets, converted to pairs), each query is
  ranked only against the reference items of its listed pairs: positives from (a1, p), negatives
  from (a2, n). This is what PML's `CrossBatchMemory` passes: all pairs with the memory except each
  query's own copy, so inside it every query is ranked against the memory minus itself. The
  restricted ranking runs on apl's pure-PyTorch reference (a few B x N tensors).
A reducer other than PML's default is refused: the AP loss is already a mean over queries.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .functional import ap_loss
from .ops import core, reference, validation as V

try:
    from pytorch_metric_learning import losses as pml_losses
    from pytorch_metric_learning.losses import BaseMetricLossFunction
    from pytorch_metric_learning.reducers import MeanReducer
    from pytorch_metric_learning.utils import loss_and_miner_utils as lmu
except ImportError as err:  # a declared dependency; only a broken install gets here
    raise ImportError("apl.pml needs pytorch-metric-learning: pip install --no-deps pytorch-metric-learning==2.9.0") from err

__all__ = ["APLoss", "CrossBatchMemory"]


class APLoss(BaseMetricLossFunction):
    """1 - mAP_Q (Revaud et al., ICCV 2019) as a PML `BaseMetricLossFunction`.

    Args: as `apl.APLoss` (num_bins, score_range, variant, class_balanced, backend, chunk_size);
    other keyword arguments go to PML's base class (e.g. an embedding regularizer).
    """

    def __init__(self, num_bins: int = 20, score_range: tuple[float, float] = (-1.0, 1.0), variant: str = "ap_q",
                 class_balanced: bool = False, backend: str = "auto", chunk_size: Optional[int] = None, **kwargs) -> None:
        if "distance" in kwargs:
            raise ValueError("apl.pml.APLoss ranks by cosine similarity (normalised dot products); it takes no distance")
        reducer = kwargs.pop("reducer", None)
        if reducer is not None and type(reducer) is not MeanReducer:
            raise ValueError("apl.pml.APLoss is already a mean over queries (1 - mAP): it takes no reducer")
        super().__init__(**kwargs)
        self.num_bins = V.check_num_bins(num_bins)
        self.score_range = V.check_score_range(score_range)
        V.check_variant(variant)
        self.variant, self.class_balanced = variant, bool(class_balanced)
        self.backend = V.check_backend(backend)
        V.check_chunk_size(chunk_size)
        self.chunk_size = chunk_size
        self.add_to_recordable_attributes(list_of_names=["num_bins"], is_stat=False)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        if labels is None:
            raise ValueError("apl.pml.APLoss needs labels (the classes define the positives)")
        self_mode = ref_emb is embeddings  # PML passes the batch itself when no ref_emb was given
        kw = dict(num_bins=self.num_bins, score_range=self.score_range, variant=self.variant)
        if indices_tuple is None:
            loss = ap_loss(embeddings, labels, None if self_mode else ref_emb, None if self_mode else ref_labels,
                           class_balanced=self.class_balanced, backend=self.backend, chunk_size=self.chunk_size,
                           normalize=True, **kw)
        else:
            loss = self._pairs_loss(embeddings, labels, indices_tuple, ref_emb, ref_labels, **kw)
        return {"loss": {"losses": loss, "indices": None, "reduction_type": "already_reduced"}}

    def _pairs_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels, num_bins, score_range, variant):
        if len(indices_tuple) == 3:
            indices_tuple = lmu.convert_to_pairs(indices_tuple, labels, ref_labels)
        if len(indices_tuple) != 4:
            raise ValueError(
                f"apl.pml.APLoss takes indices_tuple as pairs (a1, p, a2, n) or triplets (a, p, n), got {len(indices_tuple)} tensors"
            )
        a1, p, a2, n = (t.to(embeddings.device).long() for t in indices_tuple)
        V.check_embeddings_pair(embeddings, labels, ref_emb, ref_labels)
        B, N = embeddings.shape[0], ref_emb.shape[0]
        rel = torch.zeros(B, N, dtype=torch.bool, device=embeddings.device)
        valid = torch.zeros_like(rel)
        rel[a1, p] = True
        valid[a1, p] = True
        valid[a2, n] = True
        q = F.normalize(embeddings, dim=1)
        x = F.normalize(ref_emb, dim=1).to(q.dtype)
        V.check_finite(q, "embeddings")
        S = (q @ x.t()).to(torch.float64 if q.dtype == torch.float64 else torch.float32)
        ap, npos = reference.masked_ap(S, rel, valid, num_bins, score_range, variant)
        return core.weighted_loss(ap, npos > 0, core.query_weights(labels, None, self.class_balanced, ap.dtype))


class CrossBatchMemory(pml_losses.CrossBatchMemory):
    """PML's `CrossBatchMemory` that also accepts `apl.pml.APLoss` (PML checks loss class names
    against a fixed list). Same arguments and behaviour as PML's."""

    @staticmethod
    def supported_losses():
        return pml_losses.CrossBatchMemory.supported_losses() + ["APLoss"]

