"""The progress display of an epoch: a bar on a terminal, plain periodic lines (about ten per
epoch) otherwise, and nothing on ranks other than 0 or when asked for quiet."""
from __future__ import annotations

import sys
import time
from typing import Callable


class EpochProgress:
    """`show(step, loss, lr)` after each step of an epoch; `close()` at its end."""

    def __init__(self, epoch: int, epochs: int, steps: int, batch_size: int, log: Callable[[str], None],
                 enabled: bool) -> None:
        self.epoch, self.epochs, self.steps, self.batch_size, self.log = epoch, epochs, steps, batch_size, log
        self.enabled = enabled
        self.every = max(1, steps // 10)
        self.t0 = time.perf_counter()
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=False)

    def show(self, step: int, loss: float, lr: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}")
        elif self.enabled and ((step + 1) % self.every == 0 or step + 1 == self.steps):
            rate = self.batch_size * (step + 1) / max(time.perf_counter() - self.t0, 1e-9)
            self.log(f"  epoch {self.epoch + 1}/{self.epochs} step {step + 1}/{self.steps}  loss {loss:.4f}  "
                     f"lr {lr:.3g}  {rate:.0f} img/s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
