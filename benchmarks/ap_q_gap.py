"""How far the quantized AP (what the loss optimises, and what 1 - loss reports) is from the exact
AP (what retrieval is judged by), against the number of bins M.

Clustered unit vectors: each class a random unit centre, each image its centre plus Gaussian noise
of the given spread, L2-normalised (the smaller the spread, the better the ranking). Every image is
a query against the others, as in the loss. Reported per setting, over 20 draws: the mean of
(exact mAP - mAP_Q), and the largest single-query |AP - AP_Q|.

    python -m benchmarks.ap_q_gap          # writes benchmarks/results/ap_q_gap.json (seconds)
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

import apl
from apl.evaluation import average_precisions

RESULTS = Path(__file__).resolve().parent / "results"
BINS = (10, 20, 40, 100)
# (classes, images per class, dimension): the setting of the report that asked, and a batch of the
# demo's shape.
SHAPES = ((5, 10, 16), (32, 8, 64))
SPREADS = (0.5, 1.0, 2.0)
DRAWS = 20


def clustered(classes: int, per_class: int, dim: int, spread: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(classes, dim, generator=g, dtype=torch.float64), dim=1)
    labels = torch.arange(classes).repeat_interleave(per_class)
    x = centres[labels] + spread / dim ** 0.5 * torch.randn(len(labels), dim, generator=g, dtype=torch.float64)
    return torch.nn.functional.normalize(x, dim=1), labels


def gap(classes: int, per_class: int, dim: int, spread: float, num_bins: int, variant: str = "ap_q") -> dict:
    diffs, worst, exact_maps = [], 0.0, []
    for seed in range(DRAWS):
        x, y = clustered(classes, per_class, dim, spread, seed)
        exact = average_precisions(x, y)
        quant, has_pos = apl.per_query_ap(x, y, num_bins=num_bins, variant=variant, backend="torch")
        diffs.append(float(exact[has_pos].mean() - quant[has_pos].mean()))
        worst = max(worst, float((exact[has_pos] - quant[has_pos]).abs().max()))
        exact_maps.append(float(exact[has_pos].mean()))
    return {"classes": classes, "per_class": per_class, "dim": dim, "spread": spread, "num_bins": num_bins,
            "variant": variant, "exact_map": round(statistics.fmean(exact_maps), 4),
            "mean_gap": round(statistics.fmean(diffs), 4), "max_query_gap": round(worst, 4)}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(RESULTS / "ap_q_gap.json"))
    a = p.parse_args(argv)
    rows = [gap(c, k, d, s, m) for c, k, d in SHAPES for s in SPREADS for m in BINS]
    print("| classes x images, D | spread | exact mAP | " + " | ".join(f"M={m}" for m in BINS) + " |")
    print("|---|---|---|" + "---|" * len(BINS))
    for c, k, d in SHAPES:
        for s in SPREADS:
            cells = [r for r in rows if (r["classes"], r["spread"]) == (c, s)]
            print(f"| {c} x {k}, {d} | {s} | {cells[0]['exact_map']:.3f} | "
                  + " | ".join(f"{r['mean_gap']:+.3f} (max {r['max_query_gap']:.2f})" for r in cells) + " |")
    Path(a.out).write_text(json.dumps({"draws": DRAWS, "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
