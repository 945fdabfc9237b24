"""`apl demo --study NAME`: the paper's parameter studies at the demo's scale (the glyphs, the demo's
network and budget, the AP loss with its tuned settings), one setting at a time, over seeds. Each
study writes one record per run (records.json: `records.RECORD_KEYS`), the table over seeds
(results.json, results.md), the paired differences between settings where a study asks for them,
curves.png and a bar plot. The batch-size study, which needs multistage backpropagation and a grid
of learning rates, is experiments/batch_size.py."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from ..plots.curves import plot_curves, plot_study
from .records import paired_differences, paired_table, record
from .runs import Log, over_seeds
from .settings import EPOCHS, SEEDS, config
from .tables import markdown, summary


@dataclass(frozen=True)
class Study:
    """What varies (`what`), the settings as (label, TrainConfig changes), what every setting shares
    (`common`), the seeds, and the pairs of settings whose difference over seeds is reported."""

    what: str
    settings: list[tuple[str, dict]]
    common: dict = field(default_factory=dict)
    seeds: tuple[int, ...] = SEEDS
    pairs: tuple[tuple[str, str], ...] = ()


# The long-tailed glyphs (200 down to 2 images per training class) at the demo's budget: 12 epochs of 9
# steps of 256 images (108 steps), as the demo on the balanced glyphs.
_LONG_TAIL = {"dataset": "glyphs-lt", "steps_per_epoch": 9}

STUDIES: dict[str, Study] = {
    "bins": Study("number of bins M", [(f"M={m}", {"num_bins": m}) for m in (5, 10, 20, 40)]),
    "tie-aware": Study("AP variant", [("AP_Q", {"loss": "ap"}), ("AP_T (tie-aware)", {"loss": "tie-aware"})]),
    "whitening": Study("PCA-whitening of the descriptors at test time",
                       [("off", {"whitening": False}), ("on", {"whitening": True})]),
    "memory": Study("cross-batch memory: each batch of 256 also ranked against the last N training descriptors",
                    [(f"N={n}", {"memory": n}) for n in (0, 256, 512, 1024)]),
    "head": Study("the BatchNorm before the whitening layer (apl/nn/head.py)",
                  [("plain (no BatchNorm)", {"head": "plain"}), ("batchnorm", {"head": "batchnorm"})]),
    "imbalance": Study(
        "class imbalance: training classes of 200 down to 2 images (glyphs-lt); uniform-random batches with and "
        "without the class-balanced query weights (eq. 12), and P x K batches",
        [("random batches, uniform weights", {"sampler": "random"}),
         ("random batches, class-balanced weights", {"sampler": "random", "class_balanced": True}),
         ("P x K batches", {"sampler": "pk"})],
        common=_LONG_TAIL, seeds=(0, 1, 2, 3, 4),
        pairs=(("random batches, class-balanced weights", "random batches, uniform weights"),
               ("P x K batches", "random batches, class-balanced weights"))),
}


def run_study(name: str, out: str | Path = "runs/study", epochs: int = EPOCHS, seeds: Optional[Sequence[int]] = None,
              log: Log = print) -> list[dict]:
    """One study of `STUDIES` in out/<name>: records.json (a record per run), results.json and
    results.md (a row per setting, mean ± std over seeds), paired.md (the differences of the study's
    pairs over seeds), curves.png (first seed) and study_<name>.png. Returns the rows."""
    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}; choose from {', '.join(STUDIES)}")
    study = STUDIES[name]
    out = Path(out) / name
    out.mkdir(parents=True, exist_ok=True)
    seeds = tuple(study.seeds if seeds is None else seeds)
    log(f"apl demo --study {name}: {study.what}; {epochs} epochs per run, seeds {list(seeds)}")
    rows, curves, records = [], {}, []
    for label, changes in study.settings:
        changes = {**study.common, **changes}
        cfg = config(changes.pop("loss", "ap"), epochs, seeds[0], **changes)
        safe = "".join(ch if ch.isalnum() or ch in "=-_" else "_" for ch in label)
        histories, times = over_seeds(cfg, out / safe, seeds, log)
        rows.append(summary("setting", label, [h[-1] for h in histories], times))
        records += [record(name, label, cfg, seed, h) for seed, h in zip(seeds, histories)]
        curves[label] = histories[0]
    (out / "records.json").write_text(json.dumps(records, indent=1))
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    table = markdown(rows, "setting")
    (out / "results.md").write_text(table + "\n")
    if study.pairs:
        diffs = [paired_differences(records, a, b) for a, b in study.pairs]
        (out / "paired.json").write_text(json.dumps(diffs, indent=1))
        (out / "paired.md").write_text(paired_table(diffs) + "\n")
        table += "\n\n" + paired_table(diffs)
    plot_curves(curves, out / "curves.png", f"study: {study.what}; seed {seeds[0]}", metric="map@r", metric_label="MAP@R")
    plot_study(rows, study.what, out / f"study_{name}.png", metric="map@r", metric_label="held-out MAP@R")
    log("\n" + table + f"\n\nwrote {out / 'records.json'}, {out / 'results.md'} and the plots in {out}")
    return rows
