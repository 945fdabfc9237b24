"""Optimizer and learning-rate schedule of a run.

The schedule is a pure function of the global step and the run's total number of steps, set on
the optimizer before every step; nothing about it needs saving. Extending a run (`--resume
--epochs N`) changes the total, so the remaining steps follow the longer schedule from where it
is at the current step (for cosine: the rate goes back up to that curve's value).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .config import TrainConfig


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)


def lr_factor(schedule: str, step: int, total: int) -> float:
    """Multiplier of the base learning rate at 0-based `step` of `total` steps."""
    total = max(1, total)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    if schedule == "step":  # x0.1 after each third of the run
        return 0.1 ** (step // max(1, total // 3))
    return 1.0


def set_learning_rate(optimizer: torch.optim.Optimizer, cfg: TrainConfig, step: int, total: int) -> float:
    """Sets and returns the learning rate that step `step` uses."""
    lr = cfg.lr * lr_factor(cfg.schedule, step, total)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr
