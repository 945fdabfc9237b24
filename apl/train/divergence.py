"""A run that diverged: descriptors or loss no longer finite (too large a learning rate, float16
overflow). apl's losses refuse NaN or Inf descriptors with a ValueError, a baseline's loss may come
out NaN, and a network can stay finite on its training batches while its descriptors of the images
it is evaluated on overflow; each way the run stops with one message that says where, what is on
disk, the learning rate used and what to try, instead of training on (or saving as best) NaN."""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from ..evaluation.search import NonFiniteDescriptors


class TrainingDiverged(ValueError):
    """Raised by `checked_step` (a step's descriptors or loss are not finite) and by
    `checked_evaluation` (the descriptors of an epoch's evaluation are not)."""


def _diverged(message: str, epoch: int, lr: float, amp, on_disk: Optional[str], schedule: Optional[str],
              step: Optional[int] = None) -> TrainingDiverged:
    """The message; `step` None: the epoch's evaluation, after its last step."""
    which = "this step's learning rate" if step is not None else f"the learning rate of epoch {epoch + 1}'s last step"
    rate = f"{which} was {lr:g}" + (f" (--lr with the {schedule} schedule)" if schedule else "")
    hint = "start again with a lower --lr" + (" or with --amp bf16" if amp == "fp16" else "")
    disk = f" {on_disk[0].upper()}{on_disk[1:]}." if on_disk else ""
    where = f"at epoch {epoch + 1}, step {step + 1}" if step is not None else f"in epoch {epoch + 1}"
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
        raise _diverged("the descriptors are no longer finite (NaN or Inf)", epoch, lr, amp, on_disk, schedule,
                        step) from None
    if not math.isfinite(float(loss)):
        raise _diverged(f"the loss is {float(loss)}", epoch, lr, amp, on_disk, schedule, step)
    return loss


def checked_evaluation(evaluate: Callable[[], dict], epoch: int, lr: float, amp=None, on_disk: Optional[str] = None,
                       schedule: Optional[str] = None) -> dict:
    """`evaluate()`, with descriptors that come out NaN or Inf turned into a `TrainingDiverged`:
    the training steps can stay finite while a network whose activations grew too large overflows
    on images it was not trained on (`lr`: the rate of the epoch's last step)."""
    try:
        return evaluate()
    except NonFiniteDescriptors:
        raise _diverged("evaluating it, the network's descriptors came out NaN or Inf", epoch, lr, amp, on_disk,
                        schedule) from None
