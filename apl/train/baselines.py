"""The trainer's baselines from pytorch-metric-learning (PML, the extra apl[pml]), behind one small
adapter so that the trainer calls every loss the same way: `loss(embeddings, labels)`. PML's SmoothAPLoss is not among them: it is
wrong unless classes per batch == images per class (docs/pml_smoothap.md); `--loss smoothap` is
apl's own.

PML's distances L2-normalise the embeddings themselves (like `apl.APLoss`). Mining happens inside
the adapter, on the batch the loss sees (the global batch under torchrun).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn


def _pml():
    from ..extras import require

    require("pml", "the baseline losses (triplet, contrastive, multi-similarity, fastap)")
    from pytorch_metric_learning import losses, miners

    return losses, miners


class PMLLoss(nn.Module):
    """A PML loss (and an optional PML miner) called as `forward(embeddings, labels)`.

    Args:
        loss: a `pytorch_metric_learning.losses` instance.
        miner: a `pytorch_metric_learning.miners` instance, or None (all pairs/triplets).
    """

    def __init__(self, loss: nn.Module, miner: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.loss, self.miner = loss, miner

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        indices = self.miner(embeddings, labels) if self.miner is not None else None
        return self.loss(embeddings, labels, indices)


def _positive(option: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"--{option.replace('_', '-')} must be a positive number, got {value!r}")


def triplet(margin: float) -> PMLLoss:
    """Every triplet that violates the margin. PML's semi-hard and hard triplets stalled on an image folder
    of digits (held-out mAP stuck at the untrained network's, near chance), and a hand-written
    batch-hard loss collapsed there: tests/losses/test_baselines_folder.py."""
    losses, miners = _pml()
    _positive("triplet_margin", margin)
    return PMLLoss(losses.TripletMarginLoss(margin=margin), miners.TripletMarginMiner(margin=margin, type_of_triplets="all"))


def triplet_hard(margin: float) -> PMLLoss:
    """Hard-negative mining as in the AP paper's triplet baseline, in its batch form (Hermans et al.,
    2017): each anchor with its farthest positive and its closest negative, B triplets per batch
    (memory of the B x B distances, so it holds batches of thousands)."""
    losses, miners = _pml()
    _positive("triplet_margin", margin)
    return PMLLoss(losses.TripletMarginLoss(margin=margin), miners.BatchHardMiner())


def triplet_semihard(margin: float) -> PMLLoss:
    """Semi-hard negative mining in its batch form (Xuan et al., 2020, "easy positive, semi-hard
    negative"): each anchor with its closest positive and the closest negative farther than that
    positive; at most B triplets per batch (an anchor without either gives none), so it holds
    batches of thousands. The hard-negative baseline that trains on the glyphs at every batch size:
    batch-hard mining (`triplet_hard`) collapses there at B = 256 and 1024 for every rate and margin
    tried, and so did the easiest positive with the hardest negative at B = 1024."""
    losses, miners = _pml()
    _positive("triplet_margin", margin)
    return PMLLoss(losses.TripletMarginLoss(margin=margin),
                   miners.BatchEasyHardMiner(pos_strategy="easy", neg_strategy="semihard"))


def contrastive(margin: float) -> PMLLoss:
    """Positive pairs pulled to distance 0, negative pairs pushed beyond `margin`."""
    losses, _ = _pml()
    _positive("contrastive_margin", margin)
    return PMLLoss(losses.ContrastiveLoss(pos_margin=0.0, neg_margin=margin))


def multi_similarity(base: float) -> PMLLoss:
    """`base` is lambda, the similarity above which a negative (below which a positive) is weighted
    up: 0.5 in the authors' code, 1 in their paper."""
    losses, miners = _pml()
    _positive("ms_base", base)
    return PMLLoss(losses.MultiSimilarityLoss(alpha=2.0, beta=50.0, base=base), miners.MultiSimilarityMiner(epsilon=0.1))


def fastap(num_bins: int) -> PMLLoss:
    losses, _ = _pml()
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 2:
        raise ValueError(f"--bins must be an integer >= 2 for fastap, got {num_bins!r}")
    return PMLLoss(losses.FastAPLoss(num_bins=num_bins))
