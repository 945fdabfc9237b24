"""`apl check-images`: every image of a list or folder decoded, the bad ones listed."""
from __future__ import annotations

import argparse
import sys

from .common import HelpFormatter


CHECK_IMAGES = """\
Run it on the training and held-out sets before a long run. It decodes every image and prints every
missing or corrupt file (with its list line) and every class folder without images, then a
'warning:' line per image whose conversion changes it (16-bit or float pixels read with 8 bits,
transparency dropped, CMYK), and a 'skipped:' line per file or folder a folder scan left out (not
an image by its extension, hidden, outside the class folders); a line of counts goes to stderr.
Exits with 1 if there is any missing or corrupt file or empty class folder; warnings and skipped
files alone give 0.
"""


def add(sub) -> None:
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
