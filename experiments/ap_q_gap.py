"""How far the quantized AP (what the loss optimises, and what 1 - loss reports) is from the exact AP
(what retrieval is judged by), and in which direction, against the number of bins M.

AP_Q counts the items of a bin as tied: each positive of a bin gets the precision at the end of the
bin. That is below the exact precision of a positive ranked ahead of the bin's negatives, and above
it for a positive ranked behind them, so for a single query AP_Q is neither a lower nor an upper
bound of the exact AP (tests/ops/test_ap_q_claims.py has a query of each kind). What this measures
is the direction for whole batches, every image a query against the others as in the loss:

- synthetic clustered unit vectors: each class a random unit centre, each image its centre plus
  Gaussian noise of the given spread, L2-normalised (spread "none": no class structure at all);
- descriptors of the demo's network on P x K batches of the glyphs (32 classes x 8 images), untrained
  and after training with the AP loss at the demo's setting (seed 0).

Per setting: the mean of (exact mAP - mAP_Q) over the batches, the share of batches where mAP_Q is
below (and above) the exact mAP, the smallest difference, the share of queries whose AP_Q is above their
exact AP, and the largest single-query |AP - AP_Q|.

    python -m experiments.ap_q_gap        # experiments/results/ap_q_gap.json (about 2 minutes, 2 cores)
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Optional

import torch

import apl
from apl.evaluation import average_precisions

RESULTS = Path(__file__).resolve().parent / "results"
BINS = (10, 20, 40, 100)
# (classes, images per class, dimension): the setting of the report that asked, and a batch of the
# demo's shape.
SHAPES = ((5, 10, 16), (32, 8, 64))
SPREADS = (0.5, 1.0, 2.0, 4.0, None)  # None: no class structure (random unit vectors)
DRAWS = 20


def clustered(classes: int, per_class: int, dim: int, spread: Optional[float], seed: int):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(per_class)
    noise = torch.randn(len(labels), dim, generator=g, dtype=torch.float64)
    if spread is None:
        return torch.nn.functional.normalize(noise, dim=1), labels
    centres = torch.nn.functional.normalize(torch.randn(classes, dim, generator=g, dtype=torch.float64), dim=1)
    x = centres[labels] + spread / dim ** 0.5 * noise
    return torch.nn.functional.normalize(x, dim=1), labels


def compare(batches, num_bins: int, variant: str = "ap_q") -> dict:
    """The gap statistics over an iterable of (descriptors, labels) batches."""
    gaps, above, queries, worst, exact_maps = [], 0, 0, 0.0, []
    for x, y in batches:
        exact = average_precisions(x, y)
        quant, has_pos = apl.per_query_ap(x, y, num_bins=num_bins, variant=variant, backend="torch")
        e, q = exact[has_pos].double(), quant[has_pos].double()
        gaps.append(float(e.mean() - q.mean()))
        above += int((q > e + 1e-12).sum())
        queries += int(has_pos.sum())
        worst = max(worst, float((e - q).abs().max()))
        exact_maps.append(float(e.mean()))
    return {"num_bins": num_bins, "variant": variant, "batches": len(gaps),
            "exact_map": round(statistics.fmean(exact_maps), 4),
            "mean_gap": round(statistics.fmean(gaps), 4),
            "batches_below": round(sum(g > 0 for g in gaps) / len(gaps), 4),
            "batches_above": round(sum(g < 0 for g in gaps) / len(gaps), 4),
            # three significant digits: a batch just above the exact mAP must not print as 0
            "min_batch_gap": float(f"{min(gaps):.3g}"),
            "queries_above": round(above / queries, 4),
            "max_query_gap": round(worst, 4)}


def gap(classes: int, per_class: int, dim: int, spread: Optional[float], num_bins: int, variant: str = "ap_q") -> dict:
    """The statistics on `DRAWS` clustered batches of one shape and spread."""
    row = compare((clustered(classes, per_class, dim, spread, seed) for seed in range(DRAWS)), num_bins, variant)
    return {"data": "clustered", "classes": classes, "per_class": per_class, "dim": dim,
            "spread": "none" if spread is None else spread, **row}


def network_batches(trained: bool, batches: int = DRAWS, seed: int = 0):
    """Descriptors of the demo's network (untrained, or trained with the AP loss at the demo's setting)
    on P x K batches of the glyphs' training classes and of the unseen ones."""
    from apl.data import ClassBalancedBatchSampler
    from apl.demo.settings import config
    from apl.evaluation import extract
    from apl.train import Trainer, load_model
    from apl.train.model import build_model
    from apl.train.data import build_datasets, in_channels

    cfg = config("ap", seed=seed)
    train_set, held_out, _ = build_datasets(cfg, augment=False)
    if trained:
        with tempfile.TemporaryDirectory() as tmp:
            Trainer(cfg, tmp, log=lambda m: None, progress=False).run()
            model, _ = load_model(Path(tmp) / "last.pt")
    else:
        torch.manual_seed(seed)
        model = build_model(cfg, in_channels(cfg)).eval()
    out = {}
    for name, ds in (("training classes", train_set), ("unseen classes", held_out)):
        d, y = extract(model, ds)
        sampler = ClassBalancedBatchSampler(y.tolist(), 32, 8, num_batches=batches, seed=seed)
        out[name] = [(d[b].double(), y[b]) for b in sampler]
    return out


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(RESULTS / "ap_q_gap.json"))
    p.add_argument("--no-network", action="store_true", help="the synthetic batches only (seconds)")
    a = p.parse_args(argv)
    rows = [gap(c, k, d, s, m) for c, k, d in SHAPES for s in SPREADS for m in BINS]
    if not a.no_network:
        for trained in (False, True):
            for split, batches in network_batches(trained).items():
                for m in BINS:
                    rows.append({"data": f"demo network, {'trained (ap)' if trained else 'untrained'}", "split": split,
                                 **compare(batches, m)})
    print("| data | exact mAP | M | mean exact - AP_Q | batches with AP_Q below / above | smallest batch gap | "
          "queries with AP_Q above | largest query gap |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        what = (f"{r['classes']} x {r['per_class']}, D {r['dim']}, spread {r['spread']}" if r["data"] == "clustered"
                else f"{r['data']}, {r['split']}")
        print(f"| {what} | {r['exact_map']:.3f} | {r['num_bins']} | {r['mean_gap']:+.4f} | {r['batches_below']:.0%} | "
              f"{r['min_batch_gap']:+.2g} | {r['queries_above']:.0%} | {r['max_query_gap']:.3f} |")
    Path(a.out).write_text(json.dumps({"draws": DRAWS, "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
