"""Cross-batch memory for apl's losses (Wang et al., "Cross-Batch Memory for Embedding Learning",
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
from torch import nn

from .functional.inputs import unit_rows
from .losses.base import ListwiseLoss


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


class MemoryLoss(nn.Module):
    """One of apl's losses (`APLoss`, `SmoothAPLoss`, `RecallAtKLoss`) whose queries (the batch) are
    ranked against the batch plus a cross-batch memory, which then receives the batch. Called as
    `loss(embeddings, labels)`."""

    def __init__(self, loss: ListwiseLoss, memory: CrossBatchMemory) -> None:
        super().__init__()
        if not isinstance(loss, ListwiseLoss):
            raise TypeError(f"with_memory needs one of apl's losses (apl.APLoss, apl.SmoothAPLoss, apl.RecallAtKLoss), "
                            f"got {type(loss).__name__}")
        self.loss, self.memory = loss, memory

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.memory.check(embeddings)
        if self.memory.embeddings.device != embeddings.device:
            self.memory.to(embeddings.device)
        m_e, m_y = self.memory.contents()
        L = self.loss
        # Normalised once here: the memory holds normalised rows already.
        e = unit_rows(embeddings) if L.normalize else embeddings
        refs = torch.cat([e, m_e.to(e.dtype)])  # the batch first: each query's own row is excluded
        ref_labels = torch.cat([torch.as_tensor(labels).to(m_y), m_y])
        loss = type(L).function(e, labels, refs, ref_labels, None, class_balanced=L.class_balanced, backend=L.backend,
                                chunk_size=L.chunk_size, normalize=False, ref_includes_queries=True, **L.options())
        self.memory.enqueue(e, labels)
        return loss


def with_memory(loss: ListwiseLoss, memory: Optional[CrossBatchMemory] = None, size: Optional[int] = None,
                dim: Optional[int] = None) -> MemoryLoss:
    """`loss` with a cross-batch memory: `memory`, or a new one of `size` items of dimension `dim`
    (the width of the descriptors the loss receives)."""
    if memory is None:
        if size is None or dim is None:
            missing = " and ".join(n for n, v in (("size", size), ("dim", dim)) if v is None)
            raise TypeError(f"with_memory: pass memory=CrossBatchMemory(size, dim), or size= (the number of past "
                            f"descriptors kept, e.g. 4096) and dim= (the descriptor width, e.g. 512 for (B, 512) "
                            f"embeddings); {missing} missing")
        memory = CrossBatchMemory(size, dim)
    elif size is not None or dim is not None:
        raise TypeError("with_memory: pass either memory= or size= and dim=, not both")
    return MemoryLoss(loss, memory)
