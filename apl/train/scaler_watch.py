"""Float16 training's gradient scaler, watched: the optimizer steps it skips (gradients that
overflow float16 or are NaN) are counted, reported per epoch, and a run that skips most of its
steps stops with a clear error instead of training nothing in silence."""
from __future__ import annotations

from collections import deque

import torch

# The scaler legitimately skips steps while it finds its scale (it starts at 65536 and halves on
# each overflow): the first WARMUP steps are not judged.
WARMUP, WINDOW, LIMIT = 20, 50, 0.5


class SkippedStepsError(RuntimeError):
    """Most recent optimizer steps were skipped: the float16 gradients are not finite."""


class ScalerWatch:
    def __init__(self, scaler: "torch.amp.GradScaler") -> None:
        self.scaler = scaler
        self.recent: deque[bool] = deque(maxlen=WINDOW)
        self.steps = 0
        self.skipped_in_epoch = 0

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """scaler.step + scaler.update; returns whether the step was skipped (the scale went down)."""
        before = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        skipped = self.scaler.get_scale() < before
        self.steps += 1
        self.recent.append(skipped)
        self.skipped_in_epoch += skipped
        if self.steps > WARMUP and len(self.recent) >= min(WINDOW, self.steps - WARMUP) and \
                sum(self.recent) > LIMIT * len(self.recent):
            raise SkippedStepsError(
                f"--amp fp16: {sum(self.recent)} of the last {len(self.recent)} optimizer steps were skipped because the "
                f"float16 gradients were not finite (gradient scale now {self.scaler.get_scale():g}): the run is not "
                "training. Use --amp bf16 (or no --amp); the last checkpoint is safe")
        return skipped

    def end_epoch(self) -> int:
        """The steps skipped since the last call."""
        n, self.skipped_in_epoch = self.skipped_in_epoch, 0
        return n
