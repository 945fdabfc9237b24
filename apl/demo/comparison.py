"""`apl demo`: the AP losses against pytorch-metric-learning's baselines on the bundled digits, and
the paper's parameter studies at this scale. Same network, optimizer, batches and epochs for every
run; training on digits 0-4, retrieval evaluated on the unseen digits 5-9."""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable

from ..evaluation.extraction import extract
from ..evaluation.summary import retrieval_metrics
from ..evaluation.metrics import precision_recall_curve
from ..plots.curves import plot_curves, plot_precision_recall, plot_study
from ..train.checkpoint import build_model, load_model
from ..train.config import TrainConfig
from ..train.loop import Trainer

# name -> (what varies, [(label, config changes)])
STUDIES: dict[str, tuple[str, list[tuple[str, dict]]]] = {
    "bins": ("number of bins M", [(f"M={m}", {"num_bins": m}) for m in (5, 10, 20, 40)]),
    "batch": ("batch size B", [(f"B={b}", {"batch_size": b}) for b in (32, 64, 128, 256, 512)]),
    "tie-aware": ("AP variant", [("AP_Q", {"loss": "ap"}), ("AP_T (tie-aware)", {"loss": "tie-aware"})]),
    "class-balanced": (
        "query weights on an imbalanced training set (class k keeps 0.6^k of its images)",
        [("uniform", {"class_balanced": False, "imbalance": 0.4}), ("class-balanced", {"class_balanced": True, "imbalance": 0.4})],
    ),
    "whitening": ("PCA-whitening of the descriptors at test time", [("off", {"whitening": False}), ("on", {"whitening": True})]),
    "memory": ("cross-batch memory: each batch of 256 also ranked against the last N training descriptors",
               [(f"N={n}", {"memory": n}) for n in (0, 256, 512, 768)]),
}

# Every loss of apl.losses, in the order of the table.
DEMO_LOSSES = ("ap", "tie-aware", "triplet", "contrastive", "multi-similarity", "fastap", "smoothap")
DEMO_EPOCHS, DEMO_SEEDS = 8, (0, 1, 2)


def base_config(epochs: int, seed: int = 0) -> TrainConfig:
    return TrainConfig(dataset="digits", backbone="small_cnn", dim=32, batch_size=256, epochs=epochs, lr=1e-3, seed=seed)


def comparison_config(epochs: int, seed: int = 0) -> TrainConfig:
    """The loss comparison's setting: P x K batches (5 training classes x 50 images), which every
    loss gets alike and Smooth-AP needs (equal class counts)."""
    return dataclasses.replace(base_config(epochs, seed), batch_size=250, sampler="pk", images_per_class=50)


def _run(cfg: TrainConfig, out: Path, log: Callable[[str], None]) -> tuple[list[dict], float, Trainer]:
    t0 = time.perf_counter()
    trainer = Trainer(cfg, out, log=lambda m: None, progress=False, overwrite=True)  # the demo owns its folders
    history = trainer.run()
    elapsed = time.perf_counter() - t0
    last = history[-1]
    log(f"  {out.parent.name + '/' + out.name:28s} held-out mAP {last['eval_map']:.4f}  P@1 {last['eval_p@1']:.4f}  ({elapsed:.0f}s)")
    return history, elapsed, trainer


# Held-out metrics shown in the tables (those the evaluation reports; see retrieval_metrics).
TABLE_METRICS = (("map", "mAP"), ("map@r", "MAP@R"), ("r-precision", "R-prec."), ("p@1", "P@1"), ("recall@10", "Recall@10"))


def _table(rows: list[dict], key: str) -> str:
    metrics = [(m, title) for m, title in TABLE_METRICS if all(m in r for r in rows)]
    cost = any("step_ms" in r for r in rows)
    head = [key] + [f"held-out {t}" for _, t in metrics] + (["loss step (ms)", "loss peak memory (MB)"] if cost else []) \
        + ["train time per run (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{r[m]:.4f} ± {r[m + '_std']:.4f}" if r.get(m + "_std") is not None else f"{r[m]:.4f}" for m, _ in metrics]
        if cost:
            cells += ["-" if r.get("step_ms") is None else f"{r['step_ms']:.1f}",
                      "-" if r.get("peak_mb") is None else f"{r['peak_mb']:.1f}"]
        lines.append(f"| {r[key]} | " + " | ".join(cells) + f" | {r['time_s']:.0f} |")
    return "\n".join(lines)


def _summary(key: str, name: str, finals: list[dict], times: list[float]) -> dict:
    """Mean (and standard deviation over seeds) of the last epoch's held-out metrics."""
    import statistics

    row = {key: name, "seeds": len(finals), "time_s": sum(times) / len(times), "runs": finals}
    for m, _ in TABLE_METRICS:
        if all(f"eval_{m}" in f for f in finals):
            values = [f[f"eval_{m}"] for f in finals]
            row[m] = statistics.fmean(values)
            row[m + "_std"] = statistics.stdev(values) if len(values) > 1 else None
    return row


def _untrained_row(cfg: TrainConfig, seeds: tuple) -> dict:
    """The held-out metrics of the network as initialised by each seed, before any training: on
    these small images a random CNN already ranks digits well, and a loss must beat that."""
    import torch

    from ..data import split_digits

    held_out = split_digits(cfg.train_classes)[1]
    finals = []
    for seed in seeds:
        torch.manual_seed(seed)  # the trainer's initialisation for this seed
        d, y = extract(build_model(cfg, 1).eval(), held_out)
        finals.append({f"eval_{k}": v for k, v in retrieval_metrics(d, y).items()})
    return _summary("loss", "untrained network", finals, [0.0] * len(seeds))


def _runs(cfg: TrainConfig, out: Path, seeds: tuple, log: Callable[[str], None]):
    """Trains cfg once per seed; returns (per-seed histories, per-seed times, last trainer)."""
    histories, times, trainer = [], [], None
    for seed in seeds:
        history, elapsed, trainer = _run(dataclasses.replace(cfg, seed=seed), out / f"seed{seed}", log)
        histories.append(history)
        times.append(elapsed)
    return histories, times, trainer


def run_demo(out: str | Path = "runs/demo", epochs: int = DEMO_EPOCHS, seeds: tuple = DEMO_SEEDS,
             log: Callable[[str], None] = print, losses: tuple = DEMO_LOSSES) -> list[dict]:
    """Trains the same network with each loss of `losses`, once per seed, and measures each loss
    step alone (forward + backward on a batch of descriptors: median time, peak memory); writes
    results.json, results.md, curves.png (training curves, first seed), pr_curves.png (held-out
    precision-recall, first seed) and ranks.png (rankings of the first loss, first seed)."""
    from ..data import split_digits
    from .step_cost import measure_in_subprocess

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log(f"apl demo: digits 0-4 for training, unseen digits 5-9 for retrieval; {epochs} epochs per run, seeds {list(seeds)}")
    rows, curves, pr = [_untrained_row(comparison_config(epochs), seeds)], {}, {}
    log(f"  untrained network: held-out mAP {rows[0]['map']:.4f} (what training must beat)")
    for loss in losses:
        cfg = dataclasses.replace(comparison_config(epochs, seeds[0]), loss=loss)
        histories, times, _ = _runs(cfg, out / loss, seeds, log)
        row = _summary("loss", loss, [h[-1] for h in histories], times)
        cost = measure_in_subprocess(loss, cfg.batch_size, cfg.dim, cfg.batch_size // cfg.images_per_class)
        row.update(step_ms=cost["time_ms"], peak_mb=cost["peak_mb"])
        rows.append(row)
        curves[loss] = histories[0]
        model, _ = load_model(out / loss / f"seed{seeds[0]}" / "last.pt")
        held_out = split_digits(cfg.train_classes)[1]
        d, y = extract(model, held_out)
        pr[loss] = precision_recall_curve(d, y)
        if loss == losses[0]:
            from ..evaluation.show import save_rankings

            save_rankings(model, held_out, out / "ranks.png", descriptors=d,
                          title=f"{loss} loss, seed {seeds[0]}: top 10 of 8 held-out queries (green: same digit, red: another)")
    _save(out, rows, "loss", curves, title=f"digits: held-out retrieval (unseen classes 5-9); curves of seed {seeds[0]} only")
    plot_precision_recall(pr, out / "pr_curves.png", f"held-out precision-recall (seed {seeds[0]} only)")
    return rows


def run_study(name: str, out: str | Path = "runs/study", epochs: int = DEMO_EPOCHS, seeds: tuple = DEMO_SEEDS,
              log: Callable[[str], None] = print) -> list[dict]:
    """One of the paper's parameter studies (see STUDIES) at the scale of the digits."""
    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}; choose from {', '.join(STUDIES)}")
    what, settings = STUDIES[name]
    out = Path(out) / name
    out.mkdir(parents=True, exist_ok=True)
    log(f"apl demo --study {name}: {what}; AP loss, {epochs} epochs per run, seeds {list(seeds)}")
    rows, curves = [], {}
    for label, changes in settings:
        cfg = dataclasses.replace(base_config(epochs, seeds[0]), **changes)
        safe = "".join(ch if ch.isalnum() or ch in "=-_" else "_" for ch in label)
        histories, times, _ = _runs(cfg, out / safe, seeds, log)
        rows.append(_summary("setting", label, [h[-1] for h in histories], times))
        curves[label] = histories[0]
    _save(out, rows, "setting", curves, title=f"study: {what}; curves of seed {seeds[0]} only")
    plot_study(rows, what, out / f"study_{name}.png")
    return rows


def _save(out: Path, rows: list[dict], key: str, histories: dict, title: str) -> None:
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    table = _table(rows, key)
    (out / "results.md").write_text(table + "\n")
    plot_curves(histories, out / "curves.png", title)
    print("\n" + table + f"\n\nwrote {out / 'results.json'}, {out / 'results.md'} and the plots in {out}")
