"""`apl demo` and `apl check-images`."""
from __future__ import annotations

import argparse
import sys

from .common import HelpFormatter


DEMO = """\
Trains the same network with every loss (apl's AP_Q, tie-aware AP, Smooth-AP and Recall@k, and
pytorch-metric-learning's triplet, contrastive, multi-similarity and FastAP) on 149 classes of
characters drawn by matplotlib's fonts (generated in seconds and cached: nothing is downloaded),
and ranks 150 classes it never saw. Same batches and budget for every loss, each loss's own
settings chosen on a validation split of the training classes (apl/demo/settings.py). Prints and
writes the table (MAP@R, mAP, R-precision, P@1, Recall@10 as mean ± std over the seeds, with the
untrained network's row and the cost of a loss step), curves.png, pr_curves.png and ranks.png.
About 15 minutes on 2 CPU cores. --study runs one of the paper's parameter studies instead.
"""


def add_demo(sub) -> None:
    from ..demo.settings import EPOCHS, LOSSES, SEEDS
    from ..demo.studies import STUDIES

    d = sub.add_parser("demo", help="every loss on 150 unseen character classes, against the untrained network",
                       description=DEMO, formatter_class=HelpFormatter)
    d.add_argument("--study", choices=sorted([*STUDIES, "batch"]), default=None,
                   help="run one of the paper's parameter studies instead (batch: B = 64 ... 4096 through multistage)")
    d.add_argument("--epochs", type=int, default=EPOCHS, help="epochs per run")
    d.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="one run per seed; the table gives mean ± std")
    d.add_argument("--losses", nargs="+", default=list(LOSSES), help="the losses of the table (or of --study batch)")
    d.add_argument("--glyphs-per-class", type=int, default=16, help="images generated per character class")
    d.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    d.add_argument("--out", default="runs/demo", help="output folder (results.json, table, plots)")
    d.set_defaults(func=run_demo)


def run_demo(a: argparse.Namespace) -> int:
    from ..demo import run_batch_study, run_demo as demo, run_study

    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    for name, value, low in (("--epochs", a.epochs, 1), ("--glyphs-per-class", a.glyphs_per_class, 2)):
        if value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value}")
    if a.study == "batch":
        run_batch_study(a.out, losses=a.losses)
    elif a.study:
        run_study(a.study, a.out, epochs=a.epochs, seeds=tuple(a.seeds))
    else:
        demo(a.out, epochs=a.epochs, seeds=tuple(a.seeds), losses=tuple(a.losses), glyphs_per_class=a.glyphs_per_class)
    return 0


CHECK_IMAGES = """\
Run it on the training and held-out sets before a long run. It decodes every image and prints every
missing or corrupt file (with its list line) and every class folder without images, then a
'warning:' line per image whose conversion changes it (16-bit or float pixels read with 8 bits,
transparency dropped, CMYK), and a 'skipped:' line per file or folder a folder scan left out (not
an image by its extension, hidden, outside the class folders); a line of counts goes to stderr.
Exits with 1 if there is any missing or corrupt file or empty class folder; warnings and skipped
files alone give 0.
"""


def add_check_images(sub) -> None:
    c = sub.add_parser("check-images", help="decode every image of a list or folder in parallel; print the bad ones",
                       formatter_class=HelpFormatter, description=CHECK_IMAGES)
    c.add_argument("images", help="an image-list file or a folder of class folders")
    c.add_argument("--root", default=None, help="folder the list's paths are relative to (default: the list file's folder)")
    c.add_argument("--workers", type=int, default=None, help="decoding processes (default: one per CPU core)")
    c.set_defaults(func=run_check_images)


def run_check_images(a: argparse.Namespace) -> int:
    from ..data.check import check_dataset

    report = check_dataset(a.images, root=a.root, workers=a.workers, progress=sys.stderr.isatty())
    for msg in report.problems:
        print(msg)
    for msg in report.warnings:
        print(f"warning: {msg}")
    for msg in report.skipped:
        print(f"skipped: {msg}")
    print(report.summary(), file=sys.stderr)
    return 1 if report.problems else 0
