"""Global-batch training across processes with torch.distributed.

The AP loss is listwise: every image is a query ranked against all the others, so splitting a batch
over W ranks and computing W local losses would rank each query against 1/W of the batch only.
`all_gather_embeddings` gives every rank the descriptors and labels of the whole global batch (in
rank order), with a backward pass that routes gradients back to each rank's own rows.

Gradient scaling. The backward of the gather sums the gradient of the gathered tensor over the
ranks and hands each rank its own rows: rank r receives d(sum_k L_k)/dD_r, where L_k is the loss
computed on rank k. DistributedDataParallel then *averages* parameter gradients over the W ranks,
so the parameters get the gradient of mean_k L_k. When every rank computes the same global loss
L (the usual case: `loss_fn(*all_gather_embeddings(d, y))`), mean_k L_k = L: the parameter
gradients are exactly those of one process running the concatenated batch. (Had the backward
returned only the local slice of the local gradient, DDP's averaging would divide them by W.)
The same holds when each rank computes a different loss over the global batch (for instance only
its own queries against all descriptors): the optimised objective is then the mean over ranks.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.distributed as dist

__all__ = ["all_gather_embeddings", "GlobalBatchLoss", "is_distributed"]


def is_distributed(group: Optional[dist.ProcessGroup] = None) -> bool:
    """True when torch.distributed is initialised and the group has more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def _gather_rows(x: torch.Tensor, sizes: list[int], group) -> torch.Tensor:
    """All-gather tensors whose first dimension differs across ranks (padded to the largest)."""
    n_max = max(sizes)
    padded = x.new_zeros((n_max,) + tuple(x.shape[1:]))
    padded[: x.shape[0]] = x
    pieces = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(pieces, padded, group=group)
    return torch.cat([p[:n] for p, n in zip(pieces, sizes)], dim=0)


class _AllGatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: list[int], group) -> torch.Tensor:  # type: ignore[override]
        ctx.sizes = sizes
        ctx.group = group
        return _gather_rows(x.contiguous(), sizes, group)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        sizes, group = ctx.sizes, ctx.group
        rank = dist.get_rank(group)
        n_max = max(sizes)
        # Lay the per-rank row blocks out padded, sum over ranks, keep our block.
        padded = grad.new_zeros((len(sizes), n_max) + tuple(grad.shape[1:]))
        offset = 0
        for r, n in enumerate(sizes):
            padded[r, :n] = grad[offset : offset + n]
            offset += n
        if dist.get_backend(group) == dist.Backend.NCCL:
            # reduce_scatter moves 1/W of what an all_reduce moves; gloo does not implement it.
            out = padded.new_empty(padded.shape[1:])
            dist.reduce_scatter_tensor(out, padded, op=dist.ReduceOp.SUM, group=group)
        else:
            dist.all_reduce(padded, op=dist.ReduceOp.SUM, group=group)
            out = padded[rank]
        return out[: sizes[rank]], None, None


def all_gather_embeddings(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    group: Optional[dist.ProcessGroup] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather descriptors and labels of all ranks into the global batch, keeping gradients.

    Args:
        embeddings: (B_r, D) descriptors of this rank. B_r may differ across ranks.
        labels: tensor whose first dimension is B_r (class labels, or any per-row targets).
        group: process group (default: the world).

    Returns:
        `(all_embeddings, all_labels)`: (sum_r B_r, D) and (sum_r B_r, ...), rows ordered by rank,
        so that this rank's rows start at sum_{k<rank} B_k. Gradients with respect to
        `all_embeddings` are summed over ranks and flow back to `embeddings` (see the module
        docstring for why this is the right scaling under DistributedDataParallel).
        Without torch.distributed initialised, or with one rank, the inputs are returned as they are.

    Every rank of the group must call it (it is a collective), also in backward.
    """
    if not isinstance(embeddings, torch.Tensor):
        raise TypeError(f"embeddings must be a torch.Tensor, got {type(embeddings).__name__}")
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must be 2-D (batch, dim), got shape {tuple(embeddings.shape)}")
    if labels.dim() < 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"labels must have one entry per row of embeddings ({embeddings.shape[0]}), "
            f"got shape {tuple(labels.shape)}"
        )
    if not is_distributed(group):
        return embeddings, labels

    device = embeddings.device
    # Rows per rank (local batches may differ, e.g. the last batch of an epoch).
    n_local = torch.tensor([embeddings.shape[0]], dtype=torch.int64, device=device)
    counts = [torch.empty_like(n_local) for _ in range(dist.get_world_size(group))]
    dist.all_gather(counts, n_local, group=group)
    sizes = [int(c.item()) for c in counts]

    all_embeddings = _AllGatherRows.apply(embeddings, sizes, group)
    with torch.no_grad():
        all_labels = _gather_rows(labels.to(device), sizes, group).to(labels.device)
    return all_embeddings, all_labels


class GlobalBatchLoss(torch.nn.Module):
    """Wrap `loss_fn(descriptors, labels)` so that it runs on the global batch of all ranks.

    `GlobalBatchLoss(apl.APLoss())(d, y)` equals `apl.APLoss()(*all_gather_embeddings(d, y))`; every
    rank returns the same loss. Usable as the `loss_fn` of `apl.multistage_step` and in plain
    training. Under DistributedDataParallel the parameter gradients are those of the global loss.
    """

    def __init__(self, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 group: Optional[dist.ProcessGroup] = None) -> None:
        super().__init__()
        self.loss_fn = loss_fn
        self.group = group

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(*all_gather_embeddings(embeddings, labels, self.group))
