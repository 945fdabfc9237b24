"""apl's losses as pytorch-metric-learning losses: swap one into a PML training loop in one line.

    from apl.pml import APLoss                # or SmoothAPLoss, RecallAtKLoss
    loss_func = APLoss(num_bins=20)          # instead of e.g. losses.TripletMarginLoss()
    loss = loss_func(embeddings, labels)     # or (embeddings, labels, indices_tuple, ref_emb, ref_labels)

Semantics (the same value as `apl.ap_loss`, `apl.smooth_ap_loss`, `apl.recall_at_k_loss`):
- embeddings are L2-normalised first (PML's losses do the same through their distance);
- without `ref_emb`, every row is a query against the other rows;
- with `ref_emb` / `ref_labels`, the rows are ranked against that reference set;
- inside PML's cross-batch memory: PML's `CrossBatchMemory` accepts only the losses on its own
  list, so use `apl.pml.CrossBatchMemory`, PML's class with apl's losses added to that list
  (nothing else changes);
- with `indices_tuple` (pairs (a1, p, a2, n), or triplets, converted to pairs), each query is
  ranked only against the reference items of its listed pairs: positives from (a1, p), negatives
  from (a2, n). This is what PML's `CrossBatchMemory` passes: all pairs with the memory except each
  query's own copy, so inside it every query is ranked against the memory minus itself. The
  restricted ranking runs on apl's pure-PyTorch references (a few B x N tensors).
  PML's `memory_size` counts the current batch: with a memory of N items, PML ranks each query
  against the N most recent items (the batch included), where `apl.memory` ranks it against the
  batch plus the N items before it. The two agree until the memory is full.
A reducer other than PML's default is refused: these losses are already means over queries.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from . import losses as apl_losses
from .functional.inputs import unit_rows
from .ops import core, reference, reference_rank, validation as V
from .ops.variants import RANK_KINDS

from .extras import require

require("pml", "apl.pml")
from pytorch_metric_learning import losses as pml_losses  # noqa: E402
from pytorch_metric_learning.losses import BaseMetricLossFunction  # noqa: E402
from pytorch_metric_learning.reducers import MeanReducer  # noqa: E402
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu  # noqa: E402

__all__ = ["APLoss", "SmoothAPLoss", "RecallAtKLoss", "CrossBatchMemory"]
_PML_NAMES = ("embeddings", "labels", "ref_emb", "ref_labels")  # PML's spelling of the arguments


class _Adapter(BaseMetricLossFunction):
    """One of apl's loss modules (`self.apl_loss`) as a PML `BaseMetricLossFunction`."""

    def __init__(self, apl_loss: apl_losses.ListwiseLoss, **kwargs) -> None:
        name = type(self).__name__
        if "distance" in kwargs:
            raise ValueError(f"apl.pml.{name} ranks by cosine similarity (normalised dot products); it takes no distance")
        reducer = kwargs.pop("reducer", None)
        if reducer is not None and type(reducer) is not MeanReducer:
            raise ValueError(f"apl.pml.{name} is already a mean over queries: it takes no reducer")
        super().__init__(**kwargs)
        self.apl_loss = apl_loss

    def _masked(self, S: torch.Tensor, rel: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(value, npos) of each row of the scores, ranking only its `valid` items."""
        raise NotImplementedError

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        if labels is None:
            raise ValueError(f"apl.pml.{type(self).__name__} needs labels (the classes define the positives)")
        self_mode = ref_emb is embeddings  # PML passes the batch itself when no ref_emb was given
        # checked here with PML's argument names (the apl loss below would call ref_emb "ref_embeddings")
        V.check_embeddings_pair(embeddings, labels, None if self_mode else ref_emb, None if self_mode else ref_labels,
                                names=_PML_NAMES)
        if indices_tuple is None:
            loss = self.apl_loss(embeddings, labels, None if self_mode else ref_emb, None if self_mode else ref_labels)
        else:
            loss = self._pairs_loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        return {"loss": {"losses": loss, "indices": None, "reduction_type": "already_reduced"}}

    def _pairs_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        if len(indices_tuple) == 3:
            indices_tuple = lmu.convert_to_pairs(indices_tuple, labels, ref_labels)
        if len(indices_tuple) != 4:
            raise ValueError(f"apl.pml.{type(self).__name__} takes indices_tuple as pairs (a1, p, a2, n) or triplets "
                             f"(a, p, n), got {len(indices_tuple)} tensors")
        a1, p, a2, n = (t.to(embeddings.device).long() for t in indices_tuple)
        V.check_embeddings_pair(embeddings, labels, ref_emb, ref_labels, names=_PML_NAMES)
        B, N = embeddings.shape[0], ref_emb.shape[0]
        rel = torch.zeros(B, N, dtype=torch.bool, device=embeddings.device)
        valid = torch.zeros_like(rel)
        rel[a1, p] = True
        valid[a1, p] = True
        valid[a2, n] = True
        q = unit_rows(embeddings)
        x = unit_rows(ref_emb).to(q.dtype)
        V.check_finite(q, "embeddings")
        S = (q @ x.t()).to(torch.float64 if q.dtype == torch.float64 else torch.float32)
        values, npos = self._masked(S, rel, valid)
        return core.weighted_loss(values, npos > 0,
                                  core.query_weights(labels, None, self.apl_loss.class_balanced, values.dtype))


class APLoss(_Adapter):
    """1 - mAP_Q (Revaud et al., ICCV 2019) as a PML loss. Args: as `apl.APLoss`; other keyword
    arguments go to PML's base class (e.g. an embedding regularizer)."""

    def __init__(self, num_bins: int = 20, score_range: tuple[float, float] = (-1.0, 1.0), variant: str = "ap_q",
                 class_balanced: bool = False, backend: str = "auto", chunk_size: Optional[int] = None, **kwargs) -> None:
        super().__init__(apl_losses.APLoss(num_bins, score_range, variant, class_balanced, backend, chunk_size), **kwargs)
        self.num_bins = self.apl_loss.num_bins
        self.add_to_recordable_attributes(list_of_names=["num_bins"], is_stat=False)

    def _masked(self, S, rel, valid):
        L = self.apl_loss
        return reference.masked_ap(S, rel, valid, L.num_bins, L.score_range, L.variant)


class SmoothAPLoss(_Adapter):
    """1 - mean Smooth-AP (Brown et al., ECCV 2020) as a PML loss, any number of images per class
    (PML's own SmoothAPLoss needs P x K batches with P == K: docs/pml_smoothap.md). Args: as
    `apl.SmoothAPLoss` (without include_query)."""

    def __init__(self, temperature: float = 0.01, class_balanced: bool = False, backend: str = "auto",
                 chunk_size: Optional[int] = None, **kwargs) -> None:
        super().__init__(apl_losses.SmoothAPLoss(temperature, False, class_balanced, backend, chunk_size), **kwargs)

    def _masked(self, S, rel, valid):
        return reference_rank.masked_values(S, valid, rel, RANK_KINDS["smooth_ap"], self.apl_loss.temperature, (), ())


class RecallAtKLoss(_Adapter):
    """1 - mean Recall@k surrogate (Patel et al., CVPR 2022) as a PML loss. Args: as
    `apl.RecallAtKLoss` (without include_query)."""

    def __init__(self, k: Union[int, Sequence[int]] = (1, 2, 4, 8, 16), temperature: float = 0.01,
                 k_temperature: Union[float, Sequence[float]] = 1.0, class_balanced: bool = False, backend: str = "auto",
                 chunk_size: Optional[int] = None, **kwargs) -> None:
        super().__init__(apl_losses.RecallAtKLoss(k, temperature, k_temperature, False, class_balanced, backend,
                                                  chunk_size), **kwargs)

    def _masked(self, S, rel, valid):
        L = self.apl_loss
        return reference_rank.masked_values(S, valid, rel, RANK_KINDS["recall_at_k"], L.temperature,
                                            tuple(float(k) for k in L.k), L.k_temperature)


class CrossBatchMemory(pml_losses.CrossBatchMemory):
    """PML's `CrossBatchMemory` that also accepts apl's losses (PML checks loss class names against
    a fixed list). Same arguments and behaviour as PML's."""

    @staticmethod
    def supported_losses():
        return pml_losses.CrossBatchMemory.supported_losses() + ["APLoss", "SmoothAPLoss", "RecallAtKLoss"]
