"""`apl train`: one process, or several with `torchrun --nproc_per_node=N -m apl train ...`.

The options that define a run are built from `TrainConfig`'s own field descriptions (group, help,
flag, choices: apl/train/config.py), one argparse group per configuration group; only the options
of how the command runs (workers, the run folder, resume) are written here.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Optional

from ..train.config import GROUPS, TrainConfig, flag_of
from ..train.losses import LOSSES, cli_name
from .common import HelpFormatter, add_loader_options, after_command, explicit_options

DESCRIPTION = """\
Trains a retrieval network with the AP loss (or a baseline) and evaluates it on held-out classes
after every epoch. Writes --out/config.json, metrics.jsonl, last.pt, best.pt and curves.png.

Several processes: torchrun --nproc_per_node=N -m apl train ... (nccl on CUDA, gloo on CPU);
--batch-size is the global batch, split evenly over the processes, and every image is ranked
against the images of all processes.

Roots: paths in the --dataset list are relative to --root, those in the --eval-dataset list to
--eval-root; each defaults to the folder of its own list file.
"""

_PARSER: dict = {}
_TITLES = {"data": "data and batches", "model": "model", "loss": "loss (each option applies to the losses it names)",
           "optimiser": "optimisation and budget", "run": "seed, evaluation, runtime"}


def _loss_name(value: str) -> str:
    """A loss of the table, other spellings accepted ("tie_aware" for "tie-aware")."""
    name = cli_name(value)
    if name not in LOSSES:
        raise argparse.ArgumentTypeError(f"unknown loss {value!r}; choose from {', '.join(LOSSES)}")
    return name


def _add_field(group, f: dataclasses.Field) -> None:
    meta = f.metadata
    kw: dict = {"dest": f.name, "help": meta["help"]}
    if f.type in ("bool", bool):
        kw["action"] = "store_true"
    else:
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.name == "scales":
            default = ",".join(f"{s:g}" for s in default)
        kw["default"] = default
        if meta["choices"]:
            kw["choices"] = meta["choices"]
        if f.name == "loss":
            kw["type"] = _loss_name
        elif meta["type"] is not None:
            kw["type"] = meta["type"]
        if meta["metavar"]:
            kw["metavar"] = meta["metavar"]
    group.add_argument(flag_of(f.name), **kw)


def add(sub) -> None:
    p = sub.add_parser("train", help="train a retrieval network", description=DESCRIPTION, formatter_class=HelpFormatter)
    fields = [f for f in dataclasses.fields(TrainConfig) if f.metadata["cli"]]
    for g in GROUPS:
        group = p.add_argument_group(_TITLES[g])
        for f in fields:
            if f.metadata["group"] == g:
                _add_field(group, f)
    command = p.add_argument_group("the command")
    add_loader_options(command)
    command.add_argument("--out", default="runs/train", help="run folder")
    command.add_argument("--resume", action="store_true",
                         help="continue the run in --out from last.pt (or start it if it has no checkpoint yet); of the "
                              "settings that change what the run computes only --epochs may change (to grow the run); "
                              "--threads, --device, --workers, --prefetch and --quiet may differ")
    command.add_argument("--overwrite", action="store_true", help="replace the run files in a non-empty --out")
    command.add_argument("--quiet", action="store_true", help="no per-step progress lines")
    command.add_argument("--check-images", action="store_true",
                         help="decode every image of both sets before training and stop with the list of bad ones (else "
                              "a bad image stops the run when it is read)")
    p.set_defaults(func=run)
    _PARSER["train"] = p


def _config(a: argparse.Namespace, only: Optional[set] = None) -> dict:
    names = {f.name for f in dataclasses.fields(TrainConfig) if f.metadata["cli"]}
    return {k: v for k, v in vars(a).items() if k in names and (only is None or k in only)}


def run(a: argparse.Namespace) -> int:
    from ..train import Trainer

    if a.resume and a.overwrite:
        raise ValueError("--resume and --overwrite exclude each other: --resume continues the run in --out, --overwrite replaces it")
    out = Path(a.out)
    saved = out / "config.json"
    if a.resume and saved.is_file():
        # The run's own settings, with the options given now on top (the trainer refuses any change that
        # changes what the run computes, but a longer --epochs).
        given = explicit_options(_PARSER["train"], after_command(a.argv, "train"))
        try:
            base = TrainConfig.from_dict(json.loads(saved.read_text()))
        except (ValueError, TypeError) as err:
            raise ValueError(f"--resume: {saved} is not a valid apl run configuration ({err})") from None
        cfg = dataclasses.replace(base, **_config(a, given))
    else:
        cfg = TrainConfig(**_config(a))
    trainer = Trainer(cfg, out, progress=not a.quiet, workers=a.workers, prefetch=a.prefetch, overwrite=a.overwrite,
                      check_images=a.check_images)
    history = trainer.run(resume=a.resume)
    if history and trainer.is_main:
        best = max(history, key=lambda r: r["eval_map"])
        print(f"final held-out mAP {history[-1]['eval_map']:.4f} (best {best['eval_map']:.4f} at epoch {best['epoch']}); "
              f"checkpoints {out / 'last.pt'} and {out / 'best.pt'}, metrics {out / 'metrics.jsonl'}, curves {out / 'curves.png'}")
    return 0
