"""How every loss's hyper-parameters were chosen: on a validation split of the *training* classes,
with the demo's budget, never on the unseen classes.

The demo (apl/demo/settings.py) trains on the glyphs' 149 training classes and ranks the 150
unseen ones. Here each candidate setting trains on three quarters of the training classes and is
scored by the MAP@R of the remaining quarter (the "glyphs-val" dataset: apl.data.glyphs
validation_split), with the demo's network, batches and epochs. Each loss gets the same grid of
learning rates and three to six values of its own option, one seed each; one seed is noisy at this
budget (neighbouring settings can differ by 0.1 MAP@R), so the best five settings of each loss are
trained again with two more seeds and the best mean over the three seeds wins. It becomes the
loss's entry of apl/demo/settings.py TUNED (copied by hand; tests/demo/test_demo.py checks that
they agree).

How the demo's settings were found, in two stages (2 cores):
1. the full grid at a short budget (4 epochs, 28 steps): each loss's own option and a first learning
   rate; experiments/results/tune_losses_4_epochs.json (~1.5 hours)
       python -m experiments.tune_losses --epochs 4 --out experiments/results/tune_losses_4_epochs.json
2. at the demo's budget (12 epochs), each loss's option kept from stage 1 and the learning rate tuned
   again (the best rate depends on the budget: at 4 epochs the large rates won, and their runs were a
   lottery on the unseen classes); experiments/results/tune_losses.json (~40 minutes)
       python -m experiments.tune_losses --options-from experiments/results/tune_losses_4_epochs.json \
           --learning-rates 0.0005 0.001 0.002 0.004 0.008 0.016 0.032 0.064 --top 2
Either takes --grid-from OLD.json to reuse the runs of an earlier (or interrupted) grid.
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from apl.demo.settings import EPOCHS, LOSSES, config
from apl.train import Trainer
from apl.train.divergence import TrainingDiverged

RESULTS = Path(__file__).resolve().parent / "results"

# Grids wide enough that no loss's best setting lies on their edge (a first pass with learning rates
# up to 4e-3, margins of contrastive up to 0.7, bins from 10 and temperatures up to 0.03 chose
# edges, a second with learning rates up to 8e-3 and temperatures up to 0.1 again, the next ones
# learning rates up to 1.6e-2, 3.2e-2 and 6.4e-2, a temperature of 0.01, 40 bins and margins of 1.1
# and 1.3; these extend them, and were not extended further). At this budget (28 steps) the best
# learning rates are large.
LEARNING_RATES = (1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2, 6.4e-2, 1.28e-1)
OPTION = {
    "ap": ("num_bins", (5, 10, 20, 40, 80)),
    "tie-aware": ("num_bins", (5, 10, 20, 40, 80)),
    "fastap": ("num_bins", (5, 10, 20, 40, 80)),
    "smoothap": ("rank_temperature", (0.003, 0.01, 0.03, 0.1, 0.3)),
    "recall-at-k": ("rank_temperature", (0.003, 0.01, 0.03, 0.1, 0.3)),
    "triplet": ("triplet_margin", (0.1, 0.2, 0.4, 0.8)),
    "contrastive": ("contrastive_margin", (0.5, 0.7, 0.9, 1.1, 1.3, 1.5, 1.7)),
    "multi-similarity": ("ms_base", (0.25, 0.5, 0.75, 1.0)),  # its base lambda (authors' code 0.5, paper 1)
}


def score(loss: str, changes: dict, seed: int, epochs: int, work: Path) -> dict:
    """Validation metrics of one run; a run whose training diverges (the loss refuses NaN or Inf
    descriptors) scores 0, with the reason."""
    cfg = config(loss, epochs, seed, dataset="glyphs-val", **changes)
    out = work / f"{loss}-{'-'.join(f'{k}{v}' for k, v in changes.items())}-seed{seed}"
    try:
        history = Trainer(cfg, out, log=lambda m: None, progress=False, overwrite=True).run()
    except TrainingDiverged as err:
        return {"map@r": 0.0, "map": 0.0, "p@1": 0.0, "diverged": str(err)}
    return {k: history[-1][f"eval_{k}"] for k in ("map@r", "map", "p@1")}


def _mean(scores: list[dict]) -> float:
    return statistics.fmean(s["map@r"] for s in scores)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=EPOCHS)
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of the grid")
    p.add_argument("--top", type=int, default=5, help="settings of each loss trained again with --confirm-seeds")
    p.add_argument("--confirm-seeds", type=int, nargs="*", default=[1, 2])
    p.add_argument("--grid-from", nargs="+", default=[],
                   help="results JSONs whose runs to reuse (same epochs and seeds; the first file that has a run wins)")
    p.add_argument("--losses", nargs="+", default=list(LOSSES))
    p.add_argument("--learning-rates", type=float, nargs="+", default=list(LEARNING_RATES))
    p.add_argument("--options-from", default=None,
                   help="a results JSON whose chosen option of each loss (bins, rank temperature, margin, base) is kept fixed")
    p.add_argument("--out", default=str(RESULTS / "tune_losses.json"))
    a = p.parse_args(argv)
    results, chosen = [], {}
    reused = [r for f in a.grid_from for r in json.loads(Path(f).read_text())["results"]]
    fixed = json.loads(Path(a.options_from).read_text())["chosen"] if a.options_from else {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for loss in a.losses:
            option, values = OPTION[loss]
            if loss in fixed:
                values = (fixed[loss][option],)
            grid = []
            for lr, value in itertools.product(a.learning_rates, values):
                changes = {"lr": lr, **({option: value} if option else {})}
                old = [r for r in reused if r["loss"] == loss and all(r.get(k) == v for k, v in changes.items())]
                scores = old[0]["validation"] if old else [score(loss, changes, s, a.epochs, Path(tmp)) for s in a.seeds]
                row = {"loss": loss, **changes, "validation": scores, "mean_map@r": _mean(scores)}
                if old and "confirmation" in old[0]:
                    row["confirmation"] = old[0]["confirmation"]
                grid.append(row)
                print(f"{loss:16s} {changes}  validation MAP@R {row['mean_map@r']:.4f}", flush=True)
            for row in sorted(grid, key=lambda r: -r["mean_map@r"])[:a.top]:
                changes = {k: row[k] for k in ("lr", option) if k}
                if "confirmation" not in row:
                    row["confirmation"] = [score(loss, changes, s, a.epochs, Path(tmp)) for s in a.confirm_seeds]
                row["confirmed_map@r"] = _mean(row["validation"] + row["confirmation"])
                print(f"{loss:16s} {changes}  over seeds {a.seeds + a.confirm_seeds}: "
                      f"{row['confirmed_map@r']:.4f}", flush=True)
            best = max((r for r in grid if "confirmed_map@r" in r), key=lambda r: r["confirmed_map@r"])
            chosen[loss] = {**{k: best[k] for k in ("lr", option) if k},
                            "validation_map@r": round(best["confirmed_map@r"], 4)}
            results += grid
            # after each loss, so that an interrupted run loses at most one loss (--grid-from resumes)
            _write(a, results, chosen, t0, complete=False)
    return _write(a, results, chosen, t0, complete=True)


def _write(a, results: list, chosen: dict, t0: float, complete: bool) -> dict:
    report = {"protocol": "train on 3/4 of the glyphs' training classes, score the MAP@R of the other 1/4 "
                          "(glyphs-val); the unseen classes are not used; the best settings of the grid "
                          "(one seed) trained again with more seeds, best mean wins",
              "complete": complete, "runs_reused_from": a.grid_from, "epochs": a.epochs, "seeds": a.seeds, "top": a.top,
              "confirm_seeds": a.confirm_seeds, "learning_rates": a.learning_rates, "options_from": a.options_from, "results": results,
              "chosen": chosen, "minutes": round((time.perf_counter() - t0) / 60, 1), "torch": torch.__version__,
              "threads": torch.get_num_threads()}
    Path(a.out).write_text(json.dumps(report, indent=1))
    if complete:
        print(json.dumps(chosen, indent=1))
    return report


if __name__ == "__main__":
    main()
