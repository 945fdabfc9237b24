"""Cross-batch memory for the AP loss (Wang et al., "Cross-Batch Memory for Embedding Learning",
CVPR 2020): a FIFO of the descriptors and labels of the last N training images, ranked together
with the current batch, so that every query is ranked against B + N items instead of B.

The memory holds detached descriptors: gradients flow through the current batch only (as queries,
and as items of the other queries' rankings). With the fused kernels a step costs one more
(B x N) matrix product and its binning pass; nothing of size (B + N) x (B + N) is built.

    memory = apl.memory.CrossBatchMemory(size=4096, dim=512)
    loss_fn = apl.memory.with_memory(apl.APLoss(), memory)
    loss = loss_fn(embeddings, labels)      # ranks against batch + memory, then enqueues the batch
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .losses.ap import APLoss
from .ops import core
from .ops.dispatch import resolve_for
from .ops.validation import check_embeddings_pair, warn_if_not_unit_rows


class CrossBatchMemory(nn.Module):
    """FIFO of the last `size` (descriptor, label) pairs; its state is saved with `state_dict()`.

    Args:
        size: N, the number of items kept (>= 1).
        dim: descriptor dimension D; a batch of another dimension is refused.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        for name, value in (("size", size), ("dim", dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"memory {name} must be a positive integer, got {value!r}")
        self.size, self.dim = size, dim
        self.register_buffer("embeddings", torch.zeros(size, dim))
        self.register_buffer("labels", torch.zeros(size, dtype=torch.long))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))  # items written so far

    def __len__(self) -> int:
        return min(int(self.count), self.size)

    def contents(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, D) descriptors and (n,) labels currently held, oldest first."""
        n, head = len(self), int(self.count) % self.size
        if n < self.size:
            return self.embeddings[:n], self.labels[:n]
        order = torch.arange(head, head + self.size, device=self.labels.device) % self.size
        return self.embeddings[order], self.labels[order]

    def check(self, embeddings: torch.Tensor) -> None:
        if embeddings.dim() != 2 or embeddings.shape[1] != self.dim:
            raise ValueError(
                f"the cross-batch memory holds {self.dim}-dimensional descriptors but the batch has shape "
                f"{tuple(embeddings.shape)}: build the memory with dim={embeddings.shape[-1]} (or --memory for this model)"
            )

    @torch.no_grad()
    def enqueue(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        """Adds a batch (detached), overwriting the oldest items once full."""
        self.check(embeddings)
        e, y = embeddings.detach().to(self.embeddings.dtype), labels.detach().to(self.labels.device)
        if e.shape[0] > self.size:  # only the newest `size` items of a huge batch survive anyway
            e, y = e[-self.size:], y[-self.size:]
        start = int(self.count) % self.size
        idx = torch.arange(start, start + e.shape[0], device=self.labels.device) % self.size
        self.embeddings[idx] = e.to(self.embeddings.device)
        self.labels[idx] = y
        self.count += embeddings.shape[0]


class MemoryAPLoss(nn.Module):
    """An `APLoss` whose queries (the batch) are ranked against the batch plus a cross-batch
    memory, which then receives the batch. Called as `loss(embeddings, labels)`."""

    def __init__(self, loss: APLoss, memory: CrossBatchMemory) -> None:
        super().__init__()
        if not isinstance(loss, APLoss):
            raise TypeError(f"with_memory needs an apl.APLoss, got {type(loss).__name__}")
        self.loss, self.memory = loss, memory

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.memory.check(embeddings)
        m_e, m_y = self.memory.contents()
        if self.memory.embeddings.device != embeddings.device:
            self.memory.to(embeddings.device)
            m_e, m_y = self.memory.contents()
        L = self.loss
        # Normalised once here: the memory holds normalised rows already, so the (B + N) reference
        # rows are neither normalised again nor checked for their norm at every step.
        e = F.normalize(embeddings, dim=1) if L.normalize else embeddings
        if not L.normalize and L.score_range == (-1.0, 1.0):
            warn_if_not_unit_rows(e, "embeddings")
        refs = torch.cat([e, m_e.to(e.dtype)])  # the batch first: each query's own row is excluded
        ref_labels = torch.cat([labels.to(m_y.dtype), m_y])
        e, labels, refs, ref_labels = check_embeddings_pair(e, labels, refs, ref_labels)
        ap, npos = core.per_query(e, labels, refs, ref_labels, num_bins=L.num_bins, score_range=L.score_range,
                                  variant=L.variant, backend=resolve_for(L.backend, e.device),
                                  chunk_size=L.chunk_size or 0, self_offset=0)
        loss = core.weighted_loss(ap, npos > 0, core.query_weights(labels, None, L.class_balanced, ap.dtype))
        self.memory.enqueue(e, labels)
        return loss


def with_memory(loss: APLoss, memory: Optional[CrossBatchMemory] = None, size: int = 0, dim: int = 0) -> MemoryAPLoss:
    """`loss` with a cross-batch memory (given, or a new one of `size` items of dimension `dim`)."""
    return MemoryAPLoss(loss, memory if memory is not None else CrossBatchMemory(size, dim))
