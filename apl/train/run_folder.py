"""The run folder: what a new run, a resumed run and `--overwrite` may do with it, and the metrics log.

Files: config.json, metrics.jsonl (one JSON line per step and one per epoch), last.pt (after every
epoch), best.pt (best held-out mAP so far), curves.png. A new run refuses a non-empty folder unless
told to overwrite it; a resumed run continues last.pt (or starts over when the run was killed
before its first checkpoint) and refuses changed settings that change what the run computes
(--epochs may grow; --threads, --device and the loader options may differ).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .checkpoint import atomic_write_text
from .config import RUNTIME_FIELDS, TrainConfig, flag_of

RUN_FILES = ("config.json", "metrics.jsonl", "last.pt", "best.pt", "curves.png")
EXTENSIBLE = ("epochs",)  # settings a resumed run may change: a longer run
# Settings of how a run executes, not of what it computes, may differ on resume (the fields marked
# runtime in config.py: the CPU kernels give the same results for any number of threads, another
# device only float round-off).


@dataclass
class StartPlan:
    """How `Trainer.run` starts: from scratch, or from `checkpoint`."""

    checkpoint: Optional[Path] = None
    note: str = ""


def plan_start(out: Path, cfg: TrainConfig, resume: bool, overwrite: bool) -> StartPlan:
    """Decides how the run starts, without writing anything; raises when the folder must not be used."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not resume:
        if entries and not overwrite:
            shown = ", ".join(entries[:6]) + (" ..." if len(entries) > 6 else "")
            raise ValueError(
                f"--out {out} is not empty ({shown}): use another --out, --resume to continue the run in it, "
                "or --overwrite to replace it"
            )
        return StartPlan()
    if not out.exists():
        raise FileNotFoundError(f"--resume: {out} does not exist, so there is no run to continue; leave out --resume "
                                "to start a new run there")
    saved_file = out / "config.json"
    if not saved_file.is_file():
        if any(name in entries for name in ("last.pt", "metrics.jsonl")):
            raise ValueError(f"--resume: {out} has run files but no config.json; cannot tell what run it was")
        return StartPlan(note=f"--resume: no run in {out} yet; starting it from the beginning")
    try:
        saved = TrainConfig.from_dict(json.loads(saved_file.read_text()))
    except (ValueError, TypeError) as err:
        raise ValueError(f"--resume: {saved_file} is not a valid apl run configuration ({err})") from None
    changed = [k for k in cfg.differences(saved) if k not in EXTENSIBLE + RUNTIME_FIELDS]
    if changed:
        a, b = cfg.flat(), saved.flat()
        listing = ", ".join(f"{flag_of(k)} {a.get(k)!r} (the run has {b.get(k)!r})" for k in changed)
        raise ValueError(
            f"--resume: {out} holds a run with other settings: {listing}. Settings that change what the run computes "
            "cannot change on resume (--epochs may grow; --threads, --device, --workers may differ); use another "
            "--out for a new run"
        )
    last = out / "last.pt"
    if not last.is_file():
        return StartPlan(note=f"--resume: {out} has no checkpoint yet (killed before the first one); starting from the beginning")
    return StartPlan(checkpoint=last)


def clear_run_files(out: Path) -> None:
    """--overwrite: remove the previous run's files (and stale temporaries), nothing else."""
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for tmp in out.glob(".*.tmp-*"):
        tmp.unlink(missing_ok=True)


def write_config(out: Path, cfg: TrainConfig) -> None:
    atomic_write_text(out / "config.json", json.dumps(cfg.to_dict(), indent=1) + "\n")


class MetricsLog:
    """metrics.jsonl: step lines {"epoch", "step", "loss", "lr", ...} and epoch lines
    {"epoch", "train_loss", "eval_map", ...}; each line is flushed as it is written (`tail -f`
    works; a kill loses none)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f = None

    def keep_until(self, epoch: int, epoch_evaluated: bool) -> None:
        """Drops lines that a resume from a checkpoint after `epoch` will write again: steps of
        later epochs, and epoch lines from `epoch` on unless that epoch's evaluation is in the
        checkpoint. Rewritten atomically."""
        if not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill mid-write
                continue
            e = row.get("epoch", 0)
            is_step = "step" in row
            if e < epoch or (e == epoch and (is_step or epoch_evaluated)):
                kept.append(line)
        atomic_write_text(self.path, "".join(k + "\n" for k in kept))

    def write(self, row: dict) -> None:
        if self._f is None:
            self._f = open(self.path, "a")
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
