"""`apl demo --study NAME`: the paper's parameter studies at the demo's scale (the glyphs, the demo's
network and budget, the AP loss with its tuned settings), one setting at a time, over seeds.
The batch-size study, which needs multistage backpropagation and isolated processes, is
apl/demo/batch_study.py."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from ..plots.curves import plot_curves, plot_study
from .runs import Log, over_seeds
from .settings import EPOCHS, SEEDS, config
from .tables import markdown, summary

# name -> (what varies, [(label, config changes)])
STUDIES: dict[str, tuple[str, list[tuple[str, dict]]]] = {
    "bins": ("number of bins M", [(f"M={m}", {"num_bins": m}) for m in (5, 10, 20, 40)]),
    "tie-aware": ("AP variant", [("AP_Q", {"loss": "ap"}), ("AP_T (tie-aware)", {"loss": "tie-aware"})]),
    "whitening": ("PCA-whitening of the descriptors at test time", [("off", {"whitening": False}), ("on", {"whitening": True})]),
    "memory": ("cross-batch memory: each batch of 256 also ranked against the last N training descriptors",
               [(f"N={n}", {"memory": n}) for n in (0, 256, 512, 1024)]),
    "head": ("the BatchNorm before the whitening layer (apl/nn/head.py)",
             [("plain (no BatchNorm)", {"head": "plain"}), ("batchnorm", {"head": "batchnorm"})]),
}


def run_study(name: str, out: str | Path = "runs/study", epochs: int = EPOCHS, seeds: Sequence[int] = SEEDS,
              log: Log = print) -> list[dict]:
    """One study of `STUDIES`: a row per setting (mean ± std over seeds), results.json, results.md,
    curves.png (first seed) and study_<name>.png in out/<name>."""
    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}; choose from {', '.join(STUDIES)} (and 'batch')")
    what, settings = STUDIES[name]
    out = Path(out) / name
    out.mkdir(parents=True, exist_ok=True)
    seeds = tuple(seeds)
    log(f"apl demo --study {name}: {what}; glyphs, {epochs} epochs per run, seeds {list(seeds)}")
    rows, curves = [], {}
    for label, changes in settings:
        cfg = config(changes.get("loss", "ap"), epochs, seeds[0], **{k: v for k, v in changes.items() if k != "loss"})
        safe = "".join(ch if ch.isalnum() or ch in "=-_" else "_" for ch in label)
        histories, times = over_seeds(cfg, out / safe, seeds, log)
        rows.append(summary("setting", label, [h[-1] for h in histories], times))
        curves[label] = histories[0]
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    table = markdown(rows, "setting")
    (out / "results.md").write_text(table + "\n")
    plot_curves(curves, out / "curves.png", f"study: {what}; seed {seeds[0]}", metric="map@r", metric_label="MAP@R")
    plot_study(rows, what, out / f"study_{name}.png", metric="map@r", metric_label="held-out MAP@R")
    log("\n" + table + f"\n\nwrote {out / 'results.json'}, {out / 'results.md'} and the plots in {out}")
    return rows
