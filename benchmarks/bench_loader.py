"""Training throughput (images per second) of `apl train` on an image folder with 0 and more
data-loader workers, and extraction of mixed-shape images grouped by shape vs one at a time.

The images are JPEGs of several sizes and aspect ratios written into a temporary folder (so the
decode and resize costs are real). Every configuration trains the same run (same seed, same
batches and crops: the results do not depend on the number of workers), and its second epoch is
timed (the first includes starting the workers). CPU numbers vary with the machine's load: compare
them within one run.

    python -m benchmarks.bench_loader                   # writes benchmarks/results/bench_loader.json
    python -m benchmarks.bench_loader --workers 0 1 2 4 --images 768 --image-size 160
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from apl.data import ImageList, eval_transform
from apl.nn import RetrievalNet
from apl.evaluation import extract
from apl.train import TrainConfig, Trainer

RESULTS = Path(__file__).resolve().parent / "results"

SHAPES = [(480, 640), (640, 480), (512, 512), (360, 640), (600, 400)]


def write_images(root: Path, n: int, classes: int = 16, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for i in range(n):
        c = i % classes
        h, w = SHAPES[i % len(SHAPES)]
        folder = root / f"c{c:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        base = np.linspace(0, 255, w)[None, :, None] * (c + 1) / classes
        img = np.clip(base + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i:05d}.jpg", quality=90)
    return root


def train_rate(folder: Path, out: Path, workers: int, image_size: int, batch: int, threads: int) -> dict:
    cfg = TrainConfig(dataset=str(folder), eval_dataset=str(folder), image_size=image_size, batch_size=batch, epochs=2,
                      dim=64, threads=threads, seed=0)
    hist = Trainer(cfg, out, log=lambda m: None, progress=False, workers=workers, overwrite=True).run()
    return {"workers": workers, "images_per_s": hist[1]["images_per_s"], "epoch_s": hist[1]["time_s"],
            "train_loss": hist[1]["train_loss"]}


def loader_rate(folder: Path, workers: int, image_size: int, batch: int) -> float:
    """Images per second of the training loader alone (decode, resize, crop, flip, jitter)."""
    from apl.data import ClassSpreadBatchSampler, train_transform
    from apl.train.data import SeededBatches, train_loader

    ds = ImageList.from_folders(folder, transform=train_transform(image_size))
    batches = SeededBatches(ClassSpreadBatchSampler(ds.targets, batch, seed=0), seed=0)
    loader = train_loader(ds, batches, workers, 2, torch.device("cpu"))
    for _ in loader:  # first pass starts the workers
        pass
    t0 = time.perf_counter()
    n = sum(x.shape[0] for x, _ in loader)
    return n / (time.perf_counter() - t0)


def extraction_times(folder: Path, image_size: int, threads: int, repeats: int = 2) -> dict:
    torch.set_num_threads(threads)
    ds = ImageList.from_folders(folder, transform=eval_transform(image_size))
    model = RetrievalNet("small_cnn", dim=64, in_channels=3).eval()
    out = {}
    for name, batch in (("grouped_by_shape_batch_64", 64), ("one_at_a_time", 1)):
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            extract(model, ds, batch_size=batch)
            best = min(best, time.perf_counter() - t0)
        out[name] = {"seconds": best, "images_per_s": len(ds) / best}
    out["speedup_grouped"] = out["one_at_a_time"]["seconds"] / out["grouped_by_shape_batch_64"]["seconds"]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--images", type=int, default=384)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the training process")
    p.add_argument("--out", default=str(RESULTS / "bench_loader.json"))
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_images(Path(tmp) / "images", a.images)
        rows = []
        for w in a.workers:
            rows.append(train_rate(folder, Path(tmp) / f"run{w}", w, a.image_size, a.batch_size, a.threads))
            rows[-1]["loader_only_images_per_s"] = loader_rate(folder, w, a.image_size, a.batch_size)
            print(f"workers={w}: training {rows[-1]['images_per_s']:.1f} images/s (epoch {rows[-1]['epoch_s']:.1f}s), "
                  f"loader alone {rows[-1]['loader_only_images_per_s']:.1f} images/s", flush=True)
        ext = extraction_times(folder, a.image_size, a.threads)
    base = rows[0]["images_per_s"]
    for r in rows:
        r["speedup_vs_first"] = r["images_per_s"] / base
        r["loader_speedup_vs_first"] = r["loader_only_images_per_s"] / rows[0]["loader_only_images_per_s"]
    same = len({r["train_loss"] for r in rows}) == 1
    result = {"machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                          "torch": torch.__version__},
              "settings": {"images": a.images, "shapes": SHAPES, "image_size": a.image_size, "batch_size": a.batch_size,
                           "threads": a.threads, "backbone": "small_cnn"},
              "training": rows, "same_loss_for_every_worker_count": same, "extraction_mixed_shapes": ext}
    Path(a.out).write_text(json.dumps(result, indent=1))
    print(f"extraction of {a.images} mixed-shape images: grouped {ext['grouped_by_shape_batch_64']['images_per_s']:.1f} img/s, "
          f"one at a time {ext['one_at_a_time']['images_per_s']:.1f} img/s; same loss for every worker count: {same}")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
