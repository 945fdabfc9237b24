"""DataLoader settings shared by training and extraction."""
from __future__ import annotations

import torch


def loader_options(workers: int, prefetch: int, device: torch.device) -> dict:
    """DataLoader keywords: worker processes (persistent, `prefetch` batches ahead each) and pinned
    memory when the batches go to a GPU."""
    opts: dict = {"num_workers": workers, "pin_memory": device.type == "cuda"}
    if workers > 0:
        opts.update(persistent_workers=True, prefetch_factor=prefetch)
    return opts
