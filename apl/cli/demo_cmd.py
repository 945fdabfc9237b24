"""`apl demo`: the losses on unseen character classes, or one of the paper's studies."""
from __future__ import annotations

import argparse

from .common import HelpFormatter


DEMO = """\
Trains the same network with apl's AP loss, FastAP (the strongest other listwise loss of the full
table) and the triplet loss (the best pair/triplet baseline), three seeds each, on 149 classes of
characters drawn by matplotlib's fonts (generated in seconds and cached: nothing is downloaded),
and ranks 150 classes it never saw. --all trains every loss (apl's AP_Q, tie-aware AP, Smooth-AP
and Recall@k, and pytorch-metric-learning's triplet, contrastive, multi-similarity and FastAP).
Same batches and budget for every loss, each loss's own settings chosen on a validation split of
the training classes (apl/demo/settings.py). Prints and writes the table (MAP@R, mAP, R-precision,
P@1, Recall@10 as mean ± std over the seeds, with the untrained network's row and the cost of a
loss step), curves.png, pr_curves.png and ranks.png. How long each takes on 2 CPU cores: the
README. --study runs one of the paper's parameter studies instead.
"""


def _demo_loss(value: str) -> str:
    """A loss of the demo's table, other spellings accepted ("tie_aware")."""
    from ..demo.settings import LOSSES
    from ..train.losses import cli_name

    name = cli_name(value)
    if name not in LOSSES:
        raise argparse.ArgumentTypeError(f"unknown loss {value!r}; choose from {', '.join(LOSSES)}")
    return name


def add(sub) -> None:
    from ..demo.settings import DEFAULT_LOSSES, EPOCHS, LOSSES, SEEDS
    from ..demo.studies import STUDIES

    d = sub.add_parser("demo", help="every loss on 150 unseen character classes, against the untrained network",
                       description=DEMO, formatter_class=HelpFormatter)
    d.add_argument("--study", choices=sorted(STUDIES), default=None,
                   help="run one of the paper's parameter studies instead (the batch-size study, hours long, is "
                        "python -m experiments.batch_size)")
    d.add_argument("--epochs", type=int, default=EPOCHS, help="epochs per run")
    d.add_argument("--seeds", type=int, nargs="+", default=None,
                   help=f"one run per seed; the table gives mean ± std (default {' '.join(map(str, SEEDS))}; a study's own, "
                        "e.g. 0-4 for imbalance)")
    d.add_argument("--losses", nargs="+", type=_demo_loss, default=None,
                   help=f"the losses of the table; default {', '.join(DEFAULT_LOSSES)}: the AP loss, "
                        "the strongest other listwise loss and the best pair/triplet baseline of the full table")
    d.add_argument("--all", action="store_true", help=f"every loss: {', '.join(LOSSES)} (the README's full table)")
    d.add_argument("--glyphs-per-class", type=int, default=16, help="images generated per character class")
    d.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    d.add_argument("--out", default="runs/demo", help="output folder (results.json, table, plots)")
    d.set_defaults(func=run_demo)


def run_demo(a: argparse.Namespace) -> int:
    from ..demo import run_demo as demo, run_study
    from ..demo.settings import DEFAULT_LOSSES, LOSSES, SEEDS

    # every argument before any work
    if a.all and a.losses:
        raise ValueError("--all and --losses exclude each other (--all is every loss)")
    if a.study and (a.all or a.losses):
        raise ValueError(f"--study {a.study} trains the AP loss only; --losses and --all apply to the demo's table")
    for name, value, low in (("--epochs", a.epochs, 1), ("--glyphs-per-class", a.glyphs_per_class, 2),
                             ("--threads", 1 if a.threads is None else a.threads, 1)):
        if value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value}")
    losses = tuple(LOSSES if a.all else a.losses or DEFAULT_LOSSES)
    if len(set(losses)) != len(losses):
        raise ValueError(f"--losses names a loss twice: {' '.join(a.losses)}")
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    if a.study:
        run_study(a.study, a.out, epochs=a.epochs, seeds=a.seeds)
    else:
        demo(a.out, epochs=a.epochs, seeds=tuple(a.seeds or SEEDS), losses=losses, glyphs_per_class=a.glyphs_per_class)
    return 0
