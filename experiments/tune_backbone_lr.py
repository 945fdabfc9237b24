"""The default learning rate of the ResNet backbones (apl/train/config.py DEFAULT_LR), chosen on the
validation split of the glyphs' training classes, never on the unseen ones.

Why: `apl train --backbone resnet101` from scratch at the small CNNs' default (1e-3) produced NaN
descriptors within a few steps. Each ResNet here trains from scratch on "glyphs-val" (three
quarters of the glyphs' training classes; grey images repeated over the three channels) with the
demo's batches and budget (P x K 32 x 8, 12 epochs, Adam, cosine) and the AP loss at its demo
setting but for the learning rate, and is scored by the MAP@R of the held-out quarter. A run that
diverges scores 0 and says at which step. The best rate of each backbone (mean over the seeds) is
reported; DEFAULT_LR["resnet"] is the largest rate that is best or within 0.01 of the best for every
backbone measured (a default must not diverge on the deeper ones).

    python -m experiments.tune_backbone_lr                        # resnet18, resnet50 (~45 min, 2 cores)
    python -m experiments.tune_backbone_lr --backbones resnet101 --learning-rates 0.001 0.0001 --seeds 0
Results: experiments/results/backbone_lr.json (runs of earlier calls on other backbones are kept).
Needs torchvision.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from apl.demo.settings import EPOCHS, config
from apl.train import Trainer
from apl.train.divergence import TrainingDiverged

RESULTS = Path(__file__).resolve().parent / "results" / "backbone_lr.json"


def score(backbone: str, lr: float, seed: int, epochs: int, work: Path) -> dict:
    cfg = config("ap", epochs, seed, dataset="glyphs-val", backbone=backbone, lr=lr)
    t0 = time.perf_counter()
    try:
        history = Trainer(cfg, work / f"{backbone}-{lr}-{seed}", log=lambda m: None, progress=False,
                          overwrite=True).run()
    except TrainingDiverged as err:
        return {"backbone": backbone, "lr": lr, "seed": seed, "map@r": 0.0, "diverged": str(err),
                "seconds": round(time.perf_counter() - t0)}
    return {"backbone": backbone, "lr": lr, "seed": seed, "map@r": history[-1]["eval_map@r"],
            "map": history[-1]["eval_map"], "seconds": round(time.perf_counter() - t0)}


def summarise(runs: list[dict]) -> dict:
    """backbone -> {lr: mean MAP@R over seeds}, and the best rate of each."""
    out = {}
    for backbone in sorted({r["backbone"] for r in runs}):
        by_lr = {}
        for lr in sorted({r["lr"] for r in runs if r["backbone"] == backbone}):
            by_lr[lr] = statistics.fmean(r["map@r"] for r in runs if r["backbone"] == backbone and r["lr"] == lr)
        out[backbone] = {"mean_map@r_by_lr": {str(k): round(v, 4) for k, v in by_lr.items()},
                         "best_lr": max(by_lr, key=by_lr.get)}
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", nargs="+", default=["resnet18", "resnet50"])
    p.add_argument("--learning-rates", type=float, nargs="+", default=[3e-3, 1e-3, 3e-4, 1e-4, 3e-5])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=EPOCHS)
    p.add_argument("--out", default=str(RESULTS))
    a = p.parse_args(argv)
    out = Path(a.out)
    old = json.loads(out.read_text())["runs"] if out.exists() else []
    runs = [r for r in old if r["backbone"] not in a.backbones]
    with tempfile.TemporaryDirectory() as tmp:
        for backbone in a.backbones:
            for lr in a.learning_rates:
                for seed in a.seeds:
                    r = score(backbone, lr, seed, a.epochs, Path(tmp))
                    runs.append(r)
                    print(f"{backbone:10s} lr {lr:g} seed {seed}: MAP@R {r['map@r']:.4f} ({r['seconds']} s)"
                          + (" diverged" if "diverged" in r else ""), flush=True)
                    report = {"protocol": __doc__.split("\n\n")[1].replace("\n", " "), "epochs": a.epochs,
                              "torch": torch.__version__, "threads": torch.get_num_threads(), "runs": runs,
                              "summary": summarise(runs)}
                    out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report["summary"], indent=1))
    return report


if __name__ == "__main__":
    main()
