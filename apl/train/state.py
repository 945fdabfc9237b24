"""`TrainState`: everything a run changes as it trains (the weights, the optimizer, the fp16
gradient scaler, the cross-batch memory, the random states, the history and the counters), and
the one place that turns it into a checkpoint and back. checkpoint.py writes and reads the file."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from .checkpoint import FORMAT, VERSION
from .config import TrainConfig


def rng_state() -> dict:
    """Global random states as tensors (loadable with weights_only=True)."""
    state: dict = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class TrainState:
    """The state of a run between steps.

    `epoch`: epochs trained so far; `step`: optimizer steps so far; `history`: one row per
    evaluated epoch; `best`: the best held-out mAP so far; `evaluated`: whether epoch `epoch` has
    been evaluated (a checkpoint saved right after training holds its row in `pending`)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: Optional["torch.amp.GradScaler"] = None
    memory: Optional[nn.Module] = None
    history: list = field(default_factory=list)
    epoch: int = 0
    step: int = 0
    best: Optional[float] = None
    evaluated: bool = True
    pending: Optional[dict] = None

    def checkpoint(self, cfg: TrainConfig, world_size: int) -> dict:
        """What a checkpoint file holds (tensors, numbers, strings, lists and dicts only)."""
        ck = {"format": FORMAT, "version": VERSION, "config": cfg.to_dict(), "epoch": self.epoch, "step": self.step,
              "evaluated": self.evaluated, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
              "scaler": self.scaler.state_dict() if self.scaler is not None else None, "rng": rng_state(),
              "memory": self.memory.state_dict() if self.memory is not None else None,
              "history": self.history, "best_map": self.best, "world_size": world_size}
        if not self.evaluated:
            ck["pending_row"] = self.pending
        return ck

    def restore(self, ck: dict) -> None:
        """Back to the state a checkpoint holds: weights, optimizer, scaler, memory, random states,
        history and counters."""
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        if self.scaler is not None and ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        if self.memory is not None and ck.get("memory"):
            self.memory.load_state_dict(ck["memory"])
        set_rng_state(ck["rng"])
        self.history, self.epoch, self.step = list(ck["history"]), int(ck["epoch"]), int(ck["step"])
        self.best, self.evaluated = ck.get("best_map"), bool(ck["evaluated"])
        self.pending = ck.get("pending_row")

    def record(self, row: dict) -> bool:
        """Adds an evaluated epoch's row; returns whether its held-out mAP is the best so far."""
        self.history.append(row)
        self.evaluated, self.pending = True, None
        improved = self.best is None or row["eval_map"] > self.best
        if improved:
            self.best = row["eval_map"]
        return improved
