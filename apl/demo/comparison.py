"""`apl demo`: every loss of apl.losses, trained alike, ranking 150 character classes the network
never saw (the generated glyphs: apl.data.glyphs), against the untrained network.

Same network, batches and budget for every loss; each loss's own hyper-parameters and learning rate
chosen on a validation split of the training classes (apl/demo/settings.py). Three seeds; the table
gives MAP@R (the main metric), mAP, R-precision, P@1 and Recall@10 as mean ± standard deviation,
and the cost of one loss step alone (forward + backward on a batch of descriptors, one thread, a
fresh process: median time and peak memory).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

from ..evaluation.extraction import extract
from ..evaluation.metrics import precision_recall_curve
from ..plots.curves import plot_curves, plot_precision_recall
from ..train.model import load_model
from ..train.data import build_datasets
from .runs import Log, machine, over_seeds, untrained
from .settings import EPOCHS, LOSSES, SEEDS, base_config, config
from .step_cost import measure_in_subprocess
from .tables import markdown, summary

COST_COLUMNS = (("step_ms", "loss step (ms, 1 thread)", "{:.1f}"), ("peak_mb", "loss peak memory (MB)", "{:.1f}"))


def run_demo(out: str | Path = "runs/demo", epochs: int = EPOCHS, seeds: Sequence[int] = SEEDS,
             losses: Sequence[str] = LOSSES, log: Log = print, glyphs_per_class: int = 16,
             measure_cost: bool = True) -> list[dict]:
    """Trains the demo's network with each loss of `losses`, once per seed, and writes to `out`:
    results.json, results.md (the table), curves.png (training loss and held-out MAP@R per epoch,
    first seed), pr_curves.png (held-out precision-recall, first seed) and ranks.png (the top
    results of a few unseen queries, first loss, first seed). Returns the table's rows."""
    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = tuple(seeds)
    base = base_config(epochs, seeds[0])
    base.glyphs_per_class = glyphs_per_class
    train_set, held_out, _ = build_datasets(base)
    log(f"apl demo: {len(set(train_set.targets))} training classes of generated characters, "
        f"{len(set(held_out.targets))} unseen classes ranked ({len(held_out)} images); {epochs} epochs per run, "
        f"seeds {list(seeds)}")
    rows = [untrained(base, seeds)]
    log(f"  untrained network: held-out MAP@R {rows[0]['map@r']:.4f} (what training must beat)")
    curves, pr = {}, {}
    for loss in losses:
        cfg = config(loss, epochs, seeds[0], glyphs_per_class=glyphs_per_class)
        histories, times = over_seeds(cfg, out / loss, seeds, log)
        row = summary("loss", loss, [h[-1] for h in histories], times)
        if measure_cost:
            options = {k: v for k, v in cfg.loss_options().items() if k not in ("memory", "class_balanced") and v is not None}
            cost = measure_in_subprocess(loss, cfg.batch_size, cfg.dim, cfg.batch_size // cfg.images_per_class,
                                         options=options, threads=1)
            row.update(step_ms=cost["time_ms"], peak_mb=cost["peak_mb"])
        rows.append(row)
        curves[loss] = histories[0]
        kept = out / loss / f"seed{seeds[0]}" / "last.pt"
        if not kept.exists():  # diverged in its first epoch: nothing to rank with
            continue
        model, _ = load_model(kept)
        d, y = extract(model, held_out)
        pr[loss] = precision_recall_curve(d, y)
        if loss == losses[0]:
            from ..plots.show import save_rankings

            save_rankings(model, held_out, out / "ranks.png", descriptors=d,
                          title=f"{loss} loss, seed {seeds[0]}: top 10 of 8 unseen queries (green: same character, red: another)")
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    table = markdown(rows, "loss", COST_COLUMNS if measure_cost else ())
    (out / "results.md").write_text(table + "\n")
    plot_curves(curves, out / "curves.png", f"glyphs: held-out retrieval of unseen classes; seed {seeds[0]}",
                metric="map@r", metric_label="MAP@R")
    plot_precision_recall(pr, out / "pr_curves.png", f"held-out precision-recall (seed {seeds[0]} only)")
    seconds = time.perf_counter() - t_start
    (out / "run.json").write_text(json.dumps({"losses": list(losses), "seeds": list(seeds), "epochs": epochs,
                                              "glyphs_per_class": glyphs_per_class, "seconds": round(seconds, 1),
                                              "machine": machine()}, indent=1))
    log("\n" + table + f"\n\nwrote {out / 'results.json'}, {out / 'results.md'} and the plots in {out} "
        f"({seconds / 60:.1f} minutes)")
    return rows
