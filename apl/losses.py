"""Baseline metric-learning losses, for comparing the AP loss ceteris paribus, and a factory.

Both take L2-normalised (B, D) embeddings and (B,) integer labels, like `apl.APLoss`.
"""
from __future__ import annotations

import torch
from torch import nn

from .loss import APLoss

LOSSES = ("ap", "tie-aware", "triplet", "contrastive")


def _pair_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def _distances(e: torch.Tensor) -> torch.Tensor:
    # Unit vectors: |a - b|^2 = 2 - 2 a.b; the clamp keeps sqrt's gradient finite at 0.
    return (2 - 2 * e @ e.t()).clamp_min(1e-12).sqrt()


class TripletLoss(nn.Module):
    """Triplet margin loss with batch-hard negatives: every (anchor, positive) pair of the batch
    with the anchor's closest negative; mean of relu(d_ap - d_an + margin) over those pairs.
    (Taking the hardest positive too tends to collapse all embeddings with large batches.)"""

    def __init__(self, margin: float = 0.2) -> None:
        super().__init__()
        if not margin >= 0:
            raise ValueError(f"margin must be >= 0, got {margin!r}")
        self.margin = float(margin)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        d = _distances(embeddings)
        pos, neg = _pair_masks(labels)
        has_neg = neg.any(1, keepdim=True)
        hardest_neg = torch.where(neg, d, torch.full_like(d, float("inf"))).amin(1, keepdim=True)
        hardest_neg = torch.where(has_neg, hardest_neg, torch.zeros_like(hardest_neg))  # no inf below
        pairs = pos & has_neg
        losses = torch.relu(d - hardest_neg + self.margin) * pairs
        return losses.sum() / pairs.sum().clamp_min(1)


class ContrastiveLoss(nn.Module):
    """Contrastive loss over all pairs of the batch (Hadsell et al., 2006, in the form used for
    retrieval by Radenović et al.): d^2 for positive pairs, relu(margin - d)^2 for negative pairs,
    each averaged over its pairs."""

    def __init__(self, margin: float = 0.7) -> None:
        super().__init__()
        if not margin > 0:
            raise ValueError(f"margin must be > 0, got {margin!r}")
        self.margin = float(margin)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        d = _distances(embeddings)
        pos, neg = _pair_masks(labels)
        pos_term = (d.pow(2) * pos).sum() / pos.sum().clamp_min(1)
        neg_term = (torch.relu(self.margin - d).pow(2) * neg).sum() / neg.sum().clamp_min(1)
        return pos_term + neg_term


def build_loss(name: str, num_bins: int = 20, class_balanced: bool = False, margin: float | None = None,
               chunk_size: int | None = None) -> nn.Module:
    """A training loss by name: "ap" (AP_Q), "tie-aware" (AP_T), "triplet" or "contrastive"."""
    if name == "ap":
        return APLoss(num_bins=num_bins, class_balanced=class_balanced, chunk_size=chunk_size)
    if name == "tie-aware":
        return APLoss(num_bins=num_bins, variant="tie_aware", class_balanced=class_balanced, chunk_size=chunk_size)
    if name == "triplet":
        return TripletLoss(0.2 if margin is None else margin)
    if name == "contrastive":
        return ContrastiveLoss(0.7 if margin is None else margin)
    raise ValueError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")
