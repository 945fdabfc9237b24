"""`apl show`: a picture of a checkpoint's rankings (the query, then its top results framed green
when correct, red when wrong, grey when junk for Revisited Oxford/Paris), on the data `apl eval`
would evaluate (same dataset options)."""
from __future__ import annotations

import argparse
from pathlib import Path
from collections import Counter

from .common import HelpFormatter
from .eval_cmd import _common, _setup, _workers, channels


def add(sub) -> None:
    s = sub.add_parser("show", help="draw the top results of a few queries", formatter_class=HelpFormatter,
                       description="Draws, for a few queries of the held-out set (default: the checkpoint's own), the query and its "
                                   "top results, each framed green (same class), red (another class) or, with --revisited, grey "
                                   "(junk, ignored by the protocol). Each row is titled with the query's class and AP.")
    _common(s)
    s.add_argument("--out", default="ranks.png", help="the PNG to write")
    s.add_argument("--queries", type=int, default=8, help="number of queries (rows), spread over the classes")
    s.add_argument("--top", type=int, default=10, help="results shown per query, nearest first")
    s.add_argument("--seed", type=int, default=0, help="which queries are drawn (the same seed draws the same queries)")
    s.add_argument("--revisited", default=None, help="a ROxford5k / RParis6k folder (gnd_*.pkl and jpg/): cropped queries against the database")
    s.add_argument("--protocol", choices=["easy", "medium", "hard"], default="medium",
                   help="with --revisited: which images are correct and which are junk")
    s.set_defaults(func=run_show)


def _check(a: argparse.Namespace) -> None:
    for name in ("queries", "top"):
        v = getattr(a, name)
        if v < 1:
            raise ValueError(f"--{name} must be an integer >= 1, got {v}")
    folder = Path(a.out).resolve().parent
    if not folder.is_dir():
        raise FileNotFoundError(f"--out {a.out}: the folder {folder} does not exist")


def run_show(a: argparse.Namespace) -> int:
    from ..evaluation.rankings import check_counts
    from ..plots.show import save_rankings, save_revisited_rankings

    _check(a)  # before the checkpoint is read
    model, cfg, scales = _setup(a)
    workers = _workers(a, cfg)
    names = ("--queries", "--top")
    if a.revisited:
        from ..data import load_revisited
        from ..evaluation.revisited import protocol_lists
        ds = load_revisited(a.revisited)
        eligible = sum(protocol_lists(g, a.protocol)[0].size > 0 for g in ds.gnd)
        check_counts(a.queries, a.top, len(ds.imlist), eligible, names, ds.name,
                     f"queries with a positive under the {a.protocol} protocol")
        rows = save_revisited_rankings(model, ds, a.out, a.queries, a.top, a.seed, image_size=a.image_size or 1024,
                                       scales=scales, protocol=a.protocol, workers=workers, prefetch=a.prefetch)
        what = f"{ds.name} (Revisited, {a.revisited}, {a.protocol} protocol)"
    else:
        from ..train.data import build_held_out

        eval_set = build_held_out(cfg, channels(model))
        sizes = Counter(eval_set.targets)
        eligible = sum(n for n in sizes.values() if n > 1)  # images with another of their class
        what = f"{cfg.dataset} (held-out classes)" if cfg.eval_dataset is None else cfg.eval_dataset
        check_counts(a.queries, a.top, len(eval_set), eligible, names,
                     "the held-out set" if cfg.eval_dataset is None else what, "images with another image of their class")
        rows = save_rankings(model, eval_set, a.out, a.queries, a.top, a.seed, scales=scales, workers=workers, prefetch=a.prefetch)
    correct = sum(k == "correct" for r in rows for k in r.kinds)
    total = sum(len(r.kinds) for r in rows)
    print(f"drew {len(rows)} queries of {what} with their top {a.top} results ({correct} of {total} correct); wrote {a.out}")
    return 0
