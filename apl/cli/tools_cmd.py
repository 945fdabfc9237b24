"""`apl demo` and `apl check-images`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import HelpFormatter


def add_demo(sub) -> None:
    from ..demo import DEMO_EPOCHS, DEMO_SEEDS, STUDIES

    d = sub.add_parser("demo", help="AP vs baseline losses on the bundled digits (or a parameter study)", formatter_class=HelpFormatter)
    d.add_argument("--study", choices=sorted(STUDIES), default=None, help="run one of the paper's parameter studies instead")
    d.add_argument("--epochs", type=int, default=DEMO_EPOCHS, help="epochs per run")
    d.add_argument("--seeds", type=int, nargs="+", default=list(DEMO_SEEDS), help="one run per seed; the table gives mean ± std")
    d.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    d.add_argument("--out", default="runs/demo", help="output folder (results.json, table, plots)")
    d.set_defaults(func=run_demo)


def run_demo(a: argparse.Namespace) -> int:
    from ..demo import run_demo as demo, run_study

    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    if a.study:
        run_study(a.study, a.out, epochs=a.epochs, seeds=tuple(a.seeds))
    else:
        demo(a.out, epochs=a.epochs, seeds=tuple(a.seeds))
    return 0


def add_check_images(sub) -> None:
    c = sub.add_parser("check-images", help="decode every image of a list or folder in parallel; print the bad ones",
                       formatter_class=HelpFormatter,
                       description="Run it on the training and held-out sets before a long run: it prints every missing or "
                                   "corrupt file (with its list line) and exits with 1 if there is any.")
    c.add_argument("images", help="an image-list file or a folder of class folders")
    c.add_argument("--root", default=None, help="folder the list's paths are relative to (default: the list file's folder)")
    c.add_argument("--workers", type=int, default=None, help="decoding processes (default: one per CPU core)")
    c.set_defaults(func=run_check_images)


def run_check_images(a: argparse.Namespace) -> int:
    from ..data import ImageList, find_bad_images

    path = Path(a.images)
    if path.is_dir():
        images = ImageList.from_folders(path)
    elif path.is_file():
        images = ImageList.from_list_file(path, root=a.root)
    else:
        raise FileNotFoundError(f"not found: {path} (expected an image-list file or a folder of class folders)")
    bad = find_bad_images(images, a.workers, progress=sys.stderr.isatty())
    for msg in bad:
        print(msg)
    print(f"{len(images)} images checked, {len(bad)} bad", file=sys.stderr)
    return 1 if bad else 0
