"""The descriptor head (apl/nn/head.py) checked on data other than the demo's: does the AP loss
train from scratch with it, and not without it?

For each dataset and head ("plain": GeM -> whitening -> L2, the earlier network; "batchnorm": a
BatchNorm before the whitening, today's default), the untrained network's mean pairwise cosine on
the held-out images (1.0: every image maps to one descriptor, a single tie for AP_Q) in eval mode and
on a training batch in training mode (what the loss sees at the first step), its held-out
MAP@R, and the MAP@R after training with the AP loss (M = 20), over 3 seeds. Datasets:
- glyphs: the demo's (149 training classes of generated characters, 150 unseen);
- digits: the bundled UCI digits, 8 x 8 grey (digits 0-4 trained, 5-9 unseen);
- digit folder: the same handwriting as RGB PNGs of mixed sizes read from class folders, with
  random resized crops, through the image-folder path (experiments/digit_folders.py).

    python -m experiments.head_check        # writes experiments/results/head_check.json (~10 min, 2 cores)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from apl.demo.settings import config as demo_config
from apl.evaluation.extraction import extract
from apl.evaluation.summary import retrieval_metrics
from apl.train import TrainConfig, Trainer
from apl.train.model import build_model
from apl.train.data import build_datasets, in_channels

from .digit_folders import write_digit_folders

RESULTS = Path(__file__).resolve().parent / "results"
SEEDS = (0, 1, 2)


def configs(folder: Path) -> dict[str, TrainConfig]:
    small = dict(loss="ap", dim=64, sampler="pk", epochs=8, lr=1e-3)
    return {
        "glyphs": demo_config("ap"),
        "digits": TrainConfig(dataset="digits", batch_size=250, images_per_class=50, **small),
        "digit folder": TrainConfig(dataset=str(folder / "train"), eval_dataset=str(folder / "eval"), image_size=32,
                                    batch_size=100, images_per_class=20, **small),
    }


@torch.no_grad()
def untrained(cfg: TrainConfig, seed: int) -> dict:
    held_out = build_datasets(cfg, augment=False)[1]
    torch.manual_seed(seed)
    model = build_model(cfg, in_channels(cfg))
    d, y = extract(model.eval(), held_out)
    # What the loss sees at the first step: a training batch (training transform: one image size)
    # through the model in training mode. The BatchNorm head standardises with the batch's
    # statistics; in eval mode an untrained head's running statistics are the identity, so the eval
    # descriptors are as collapsed as without it.
    loader = torch.utils.data.DataLoader(build_datasets(cfg)[0], batch_size=cfg.batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    first = model.train()(next(iter(loader))[0])
    return {"mean_cosine": _mean_cosine(d), "first_step_mean_cosine": _mean_cosine(first),
            "map@r": retrieval_metrics(d, y)["map@r"]}


def _mean_cosine(d: torch.Tensor) -> float:
    off = (d @ d.T)[~torch.eye(len(d), dtype=torch.bool)]
    return float(off.mean())


def trained(cfg: TrainConfig, seed: int, work: Path) -> float:
    out = work / f"{cfg.dataset.replace('/', '_')}-{cfg.head}-{seed}"
    history = Trainer(dataclasses.replace(cfg, seed=seed), out, log=lambda m: None, progress=False,
                      overwrite=True).run()
    return history[-1]["eval_map@r"]


def _stats(values: list[float]) -> dict:
    return {"mean": round(statistics.fmean(values), 4), "std": round(statistics.stdev(values), 4),
            "values": [round(v, 4) for v in values]}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(RESULTS / "head_check.json"))
    p.add_argument("--datasets", nargs="+", default=["glyphs", "digits", "digit folder"])
    a = p.parse_args(argv)
    rows, t0 = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_digit_folders(work / "folder" / "train", range(5))
        write_digit_folders(work / "folder" / "eval", range(5, 10), seed=1)
        for name, base in configs(work / "folder").items():
            if name not in a.datasets:
                continue
            for head in ("plain", "batchnorm"):
                cfg = dataclasses.replace(base, head=head)
                before = [untrained(cfg, s) for s in SEEDS]
                after = [trained(cfg, s, work) for s in SEEDS]
                row = {"dataset": name, "head": head,
                       "untrained_mean_cosine": _stats([b["mean_cosine"] for b in before]),
                       "first_step_mean_cosine": _stats([b["first_step_mean_cosine"] for b in before]),
                       "untrained_map@r": _stats([b["map@r"] for b in before]), "ap_map@r": _stats(after)}
                rows.append(row)
                print(f"{name:13s} {head:9s} untrained cosine {row['untrained_mean_cosine']['mean']:.3f} (eval), "
                      f"{row['first_step_mean_cosine']['mean']:.3f} (first step)  "
                      f"MAP@R untrained {row['untrained_map@r']['mean']:.4f} -> ap {row['ap_map@r']['mean']:.4f} "
                      f"± {row['ap_map@r']['std']:.4f}", flush=True)
    report = {"seeds": SEEDS, "rows": rows, "minutes": round((time.perf_counter() - t0) / 60, 1),
              "torch": torch.__version__, "threads": torch.get_num_threads()}
    Path(a.out).write_text(json.dumps(report, indent=1))
    return rows


if __name__ == "__main__":
    main()
