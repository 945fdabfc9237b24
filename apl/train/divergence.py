"""A training step that diverged: descriptors or loss no longer finite (too large a learning rate,
float16 overflow). apl's losses refuse NaN or Inf descriptors with a ValueError, and a baseline's
loss may come out NaN; either way the run stops with one message that says where, what is on disk,
the learning rate that step used and what to try, instead of training on NaN weights."""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch


class TrainingDiverged(ValueError):
    """Raised by `checked_step` when a step's descriptors or loss are not finite."""


def _diverged(message: str, epoch: int, step: int, lr: float, amp, on_disk: Optional[str],
              schedule: Optional[str]) -> TrainingDiverged:
    rate = f"{'this step' if step >= 0 else 'its last step'}'s learning rate was {lr:g}" + (f" (--lr with the {schedule} schedule)" if schedule else "")
    hint = "start again with a lower --lr" + (" or with --amp bf16" if amp == "fp16" else "")
    disk = f" {on_disk[0].upper()}{on_disk[1:]}." if on_disk else ""
    where = f"at epoch {epoch + 1}, step {step + 1}" if step >= 0 else f"in epoch {epoch + 1}"
    return TrainingDiverged(f"training diverged {where}: {message}.{disk} {rate[0].upper()}{rate[1:]}; {hint}.")


def checked_step(step_fn: Callable, x, y, epoch: int, step: int, lr: float, amp=None, on_disk: Optional[str] = None,
                 schedule: Optional[str] = None) -> torch.Tensor:
    """`step_fn(x, y)` (forward and backward), with divergence turned into a `TrainingDiverged`.

    `lr` is the learning rate this step used; `on_disk` says which checkpoint holds the run (the
    trainer knows), `schedule` the schedule that turned --lr into `lr`."""
    try:
        loss = step_fn(x, y)
    except ValueError as err:
        if "NaN or Inf" not in str(err):
            raise
        raise _diverged("the descriptors are no longer finite (NaN or Inf)", epoch, step, lr, amp, on_disk,
                        schedule) from None
    if not math.isfinite(float(loss)):
        raise _diverged(f"the loss is {float(loss)}", epoch, step, lr, amp, on_disk, schedule)
    return loss


def checked_evaluation(evaluate: Callable[[], dict], epoch: int, lr: float, amp=None, on_disk: Optional[str] = None,
                       schedule: Optional[str] = None) -> dict:
    """`evaluate()`, with descriptors of the held-out images that are not finite turned into a
    `TrainingDiverged`: the training steps can stay finite while a network whose activations grew
    too large overflows on images it has not seen (`lr`: the rate of the epoch's last step)."""
    try:
        return evaluate()
    except ValueError as err:
        if "NaN or infinite" not in str(err):
            raise
        raise _diverged(f"after its last step, the descriptors of the held-out images are no longer finite ({err})",
                        epoch, -1, lr, amp, on_disk, schedule) from None
