"""A training step that diverged: descriptors or loss no longer finite (too large a learning rate,
float16 overflow). apl's losses refuse NaN or Inf descriptors with a ValueError, and a baseline's
loss may come out NaN; either way the run stops with one message that says where, what is safe
and what to try, instead of training on NaN weights."""
from __future__ import annotations

import math
from typing import Callable

import torch


class TrainingDiverged(ValueError):
    """Raised by `checked_step` when a step's descriptors or loss are not finite."""


def _diverged(message: str, epoch: int, step: int, lr: float, amp) -> TrainingDiverged:
    hint = f"lower --lr (now {lr:g})" + (" or use --amp bf16" if amp == "fp16" else "")
    return TrainingDiverged(
        f"training diverged at epoch {epoch + 1}, step {step + 1}: {message}. The last checkpoint (end of the "
        f"previous epoch) is intact; {hint}."
    )


def checked_step(step_fn: Callable, x, y, epoch: int, step: int, lr: float, amp=None) -> torch.Tensor:
    """`step_fn(x, y)` (forward and backward), with divergence turned into a `TrainingDiverged`."""
    try:
        loss = step_fn(x, y)
    except ValueError as err:
        if "NaN or Inf" not in str(err):
            raise
        raise _diverged("the descriptors are no longer finite (NaN or Inf)", epoch, step, lr, amp) from None
    if not math.isfinite(float(loss)):
        raise _diverged(f"the loss is {float(loss)}", epoch, step, lr, amp)
    return loss
