"""Training runs of the demo: one configuration over several seeds, and the untrained network."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

import torch

from ..evaluation.extraction import extract
from ..evaluation.summary import retrieval_metrics
from ..train.checkpoint import load_checkpoint
from ..train.model import build_model
from ..train.config import TrainConfig
from ..train.data import build_datasets, in_channels
from ..train.divergence import TrainingDiverged
from ..train.loop import Trainer
from .tables import summary

Log = Callable[[str], None]


def machine() -> dict:
    """What a result was measured on: the CPU, its cores, torch and its threads."""
    import os
    import platform

    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads()}


def train(cfg: TrainConfig, out: Path, log: Log) -> tuple[list[dict], float]:
    """One run in `out` (the demo owns its folders: overwritten); its history and seconds. A run that
    diverges counts with what it kept, as a user's would: the epochs of its last checkpoint, or the
    untrained network if it diverged in the first epoch; its last row says so ("diverged")."""
    t0 = time.perf_counter()
    try:
        history = Trainer(cfg, out, log=lambda m: None, progress=False, overwrite=True).run()
        note = ""
    except TrainingDiverged as err:
        last = out / "last.pt"
        history = list(load_checkpoint(last)["history"]) if last.exists() else []
        if not history:
            history = [{"epoch": 0, **_untrained_metrics(cfg, cfg.seed)}]
        history[-1] = {**history[-1], "diverged": str(err)}
        note = f"  DIVERGED after epoch {history[-1]['epoch']}: counted as it was then"
    elapsed = time.perf_counter() - t0
    last = history[-1]
    log(f"  {out.parent.name + '/' + out.name:32s} held-out MAP@R {last['eval_map@r']:.4f}  mAP {last['eval_map']:.4f}  "
        f"P@1 {last['eval_p@1']:.4f}  ({elapsed:.0f}s){note}")
    return history, elapsed


@torch.no_grad()
def _untrained_metrics(cfg: TrainConfig, seed: int, held_out=None) -> dict:
    """Held-out metrics ("eval_" keys) of the network as `seed` initialises it."""
    held_out = held_out if held_out is not None else build_datasets(cfg)[1]
    torch.manual_seed(seed)  # the trainer's initialisation for this seed
    d, y = extract(build_model(cfg, in_channels(cfg)).eval(), held_out)
    return {f"eval_{k}": v for k, v in retrieval_metrics(d, y).items()}


def over_seeds(cfg: TrainConfig, out: Path, seeds: tuple, log: Log) -> tuple[list[list[dict]], list[float]]:
    """`cfg` trained once per seed in out/seed<k>; the histories and times."""
    histories, times = [], []
    for seed in seeds:
        history, elapsed = train(dataclasses.replace(cfg, seed=seed), out / f"seed{seed}", log)
        histories.append(history)
        times.append(elapsed)
    return histories, times


def untrained(cfg: TrainConfig, seeds: tuple, key: str = "loss") -> dict:
    """The held-out metrics of the network as each seed initialises it, before any training: what a
    loss must beat."""
    held_out = build_datasets(cfg)[1]
    finals = [_untrained_metrics(cfg, seed, held_out) for seed in seeds]
    return summary(key, "untrained network", finals, [0.0] * len(seeds))
