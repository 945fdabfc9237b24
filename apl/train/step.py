"""One training step of `apl train`: where each part of the network runs.

The network is split as `RetrievalNet` is (apl/nn/model.py): its features are per image, its head
couples the batch (BatchNorm). A step therefore runs

    features      per chunk (multistage) and per rank (torchrun, under DistributedDataParallel),
    head + loss   once, on the whole global batch (`HeadLoss`, all-gathered under torchrun),

so that the BatchNorm's statistics, like the listwise loss, are those of the global batch whatever
the chunking and the number of processes: one process, two ranks and multistage chunks compute the
same step. Forward passes of the features run under autocast when asked; the head and the loss
always run in float32.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Optional

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..distributed import GlobalBatchLoss
from ..multistage import multistage_step

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class HeadLoss(nn.Module):
    """`loss(head(pooled), labels)`: the batch-coupled head and the loss, run together on a whole
    batch of pooled features. Keeps the last descriptors (detached) for the trainer's checks."""

    def __init__(self, head: nn.Module, loss: LossFn) -> None:
        super().__init__()
        self.head, self.loss = head, loss
        self.last_descriptors: Optional[torch.Tensor] = None

    def forward(self, pooled: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        d = self.head(pooled)
        self.last_descriptors = d.detach()
        return self.loss(d, labels)


class TrainStep:
    """Forward and backward of one batch: `step(images, labels) -> loss` (detached); the gradients
    are accumulated into the parameters, the optimizer step is the caller's.

    Args:
        model: a `RetrievalNet` (anything with `features` and `head` modules).
        loss: `loss(descriptors, labels)`, e.g. `apl.APLoss()` (or one with a cross-batch memory).
        device: where the model is.
        distributed: torchrun: features under DistributedDataParallel, head and loss on the
            all-gathered global batch on every rank.
        chunk_size: multistage backpropagation with chunks of this many images (None: plain).
        amp_dtype: autocast dtype of the feature passes (None: full precision).
        scaler: a `torch.amp.GradScaler` for float16 (the scaled loss is backpropagated).
    """

    def __init__(self, model: nn.Module, loss: LossFn, device: torch.device, distributed: bool = False,
                 chunk_size: Optional[int] = None, amp_dtype: Optional[torch.dtype] = None,
                 scaler: Optional["torch.amp.GradScaler"] = None) -> None:
        self.device, self.chunk_size, self.amp_dtype, self.scaler = device, chunk_size, amp_dtype, scaler
        self.features: nn.Module = model.features
        if distributed:
            ids = [device.index] if device.type == "cuda" else None
            self.features = DistributedDataParallel(model.features, device_ids=ids)
        self.head_loss = HeadLoss(model.head, loss)
        self.loss_fn: nn.Module = GlobalBatchLoss(self.head_loss) if distributed else self.head_loss

    @property
    def last_descriptors(self) -> Optional[torch.Tensor]:
        """The descriptors the loss saw at the last step (the global batch), detached."""
        return self.head_loss.last_descriptors

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.to(self.device, non_blocking=True)
        if self.chunk_size:  # images stay where they are; chunks move to the device
            loss, _ = multistage_step(self.features, images, labels, self.loss_fn, self.chunk_size, device=self.device,
                                      amp_dtype=self.amp_dtype, scaler=self.scaler)
            return loss
        autocast = (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype is not None
                    else contextlib.nullcontext())
        with autocast:
            pooled = self.features(images.to(self.device, non_blocking=True))
        with torch.autocast(self.device.type, enabled=False):  # the head and the loss run in float32
            loss = self.loss_fn(pooled.float() if pooled.dtype in (torch.float16, torch.bfloat16) else pooled, labels)
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        return loss.detach()
