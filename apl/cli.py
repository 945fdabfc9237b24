"""The `apl` command (also `python -m apl`): demo, train, eval, extract, bench."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Optional

from .losses import LOSSES
from .nn import BACKBONES


def _train_args(p: argparse.ArgumentParser) -> None:
    from .trainer import OPTIMIZERS, SAMPLERS, SCHEDULES, TrainConfig

    d = TrainConfig()
    p.add_argument("--dataset", default=d.dataset, help="'digits' (bundled), an image-list file, or a folder of class folders")
    p.add_argument("--eval-dataset", default=None, help="held-out set (list file or folder) for image data")
    p.add_argument("--root", default=None, help="image root for a list file (default: its folder)")
    p.add_argument("--image-size", type=int, default=d.image_size, help="max side / crop for image data")
    p.add_argument("--backbone", default=d.backbone, choices=BACKBONES)
    p.add_argument("--dim", type=int, default=d.dim, help="descriptor dimension (whitening layer output)")
    p.add_argument("--loss", default=d.loss, choices=LOSSES)
    p.add_argument("--bins", type=int, default=d.num_bins, dest="num_bins", help="number of histogram bins M")
    p.add_argument("--class-balanced", action="store_true", help="weigh queries by 1 / class size")
    p.add_argument("--margin", type=float, default=None, help="margin of the triplet / contrastive loss")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--sampler", default=d.sampler, choices=SAMPLERS, help="spread: B images over all classes (paper); pk: P classes x K images")
    p.add_argument("--chunk-size", type=int, default=None, help="multistage backprop: images per recomputed chunk")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--steps-per-epoch", type=int, default=None)
    p.add_argument("--optimizer", default=d.optimizer, choices=OPTIMIZERS)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--schedule", default=d.schedule, choices=SCHEDULES)
    p.add_argument("--whitening", action="store_true", help="evaluate with PCA-whitening learned on the training descriptors")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, help="auto (CUDA when available), cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=None)


def _config(a: argparse.Namespace):
    from .trainer import TrainConfig

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(a).items() if k in names})


def cmd_train(a: argparse.Namespace) -> int:
    from .trainer import TrainConfig, Trainer

    out = Path(a.out)
    if a.resume:
        saved = out / "config.json"
        if not saved.is_file():
            raise FileNotFoundError(f"--resume: no run to resume in {out} (config.json missing)")
        cfg = TrainConfig.from_dict(json.loads(saved.read_text()))
    else:
        cfg = _config(a)
    history = Trainer(cfg, out).run(resume=a.resume)
    if history:
        print(f"final held-out mAP {history[-1]['eval_map']:.4f}; metrics in {out / 'metrics.jsonl'}, curves in {out / 'curves.png'}")
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from .trainer import build_datasets, evaluate, load_model

    model, cfg = load_model(a.checkpoint)
    if a.revisited:
        metrics = _revisited(model, a.revisited, a.image_size)
        lines = ["| protocol | mAP | mP@1 | mP@5 | mP@10 |", "|---|---|---|---|---|"]
        for proto, m in metrics.items():
            lines.append(f"| {proto} | {m['map']:.4f} | " + " | ".join(f"{m['mp'][k]:.4f}" for k in (1, 5, 10)) + " |")
    else:
        if a.dataset:
            cfg = dataclasses.replace(cfg, dataset=a.dataset, eval_dataset=a.eval_dataset or cfg.eval_dataset)
        train_set, eval_set, _ = build_datasets(cfg)
        metrics = evaluate(model, eval_set, train_set, a.whitening or cfg.whitening)
        lines = ["| metric | value |", "|---|---|"] + [f"| {k} | {v:.4f} |" for k, v in metrics.items()]
    print("\n".join(lines))
    if a.json:
        Path(a.json).write_text(json.dumps(metrics, indent=1, default=str))
        print(f"wrote {a.json}")
    return 0


def _revisited(model, root: str, image_size: int) -> dict:
    """The Revisited Oxford / Paris protocol: cropped queries against the full database."""
    import torch
    from tqdm import tqdm

    from . import evaluation
    from .data import crop_query, eval_transform, load_revisited, read_image, to_tensor

    ds = load_revisited(root)
    tf = eval_transform(image_size)

    @torch.no_grad()
    def describe(path, box=None):
        img = read_image(path)
        if box is not None:
            img = crop_query(img, box)
        return model(tf(to_tensor(img))[None])

    q = torch.cat([describe(ds.query_path(i), ds.query_box(i)) for i in tqdm(range(len(ds.qimlist)), desc="queries")])
    db = torch.cat([describe(ds.image_path(i)) for i in tqdm(range(len(ds.imlist)), desc="database")])
    return evaluation.revisited_map(q @ db.t(), ds.gnd)


def cmd_extract(a: argparse.Namespace) -> int:
    import numpy as np

    from .trainer import build_datasets, extract, load_model

    model, cfg = load_model(a.checkpoint)
    if a.dataset:
        cfg = dataclasses.replace(cfg, dataset=a.dataset, eval_dataset=a.eval_dataset or a.dataset)
    train_set, eval_set, _ = build_datasets(cfg)
    d, y = extract(model, train_set if a.split == "train" else eval_set, progress=True)
    np.save(a.output, d.numpy())
    np.save(Path(a.output).with_suffix(".labels.npy"), y.numpy())
    print(f"wrote {d.shape[0]} descriptors of dimension {d.shape[1]} to {a.output}")
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from .demo import run_demo, run_study

    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    if a.study:
        run_study(a.study, a.out, epochs=a.epochs, seeds=tuple(a.seeds))
    else:
        run_demo(a.out, epochs=a.epochs, seeds=tuple(a.seeds))
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_loss.py"
    if not script.is_file():
        raise FileNotFoundError(f"apl bench runs {script}, which is only in a source checkout of apl")
    import runpy

    argv, sys.argv = sys.argv, [str(script)] + a.rest
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as done:  # the script ends with sys.exit(main())
        return int(done.code or 0)
    finally:
        sys.argv = argv
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .demo import STUDIES

    p = argparse.ArgumentParser(prog="apl", description="Train and evaluate image retrieval with the listwise AP loss.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="AP vs triplet vs contrastive on the bundled digits (or a parameter study)")
    d.add_argument("--study", choices=sorted(STUDIES), default=None)
    d.add_argument("--epochs", type=int, default=15)
    d.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="one run per seed; the table gives mean ± std")
    d.add_argument("--threads", type=int, default=None)
    d.add_argument("--out", default="runs/demo")
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("train", help="train a retrieval network")
    _train_args(t)
    t.add_argument("--out", default="runs/train", help="run folder: checkpoint.pt, metrics.jsonl, curves.png")
    t.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint")
    e.add_argument("checkpoint")
    e.add_argument("--dataset", default=None, help="override the checkpoint's dataset")
    e.add_argument("--eval-dataset", default=None)
    e.add_argument("--revisited", default=None, help="a ROxford5k / RParis6k folder (gnd_*.pkl and jpg/)")
    e.add_argument("--image-size", type=int, default=1024)
    e.add_argument("--whitening", action="store_true")
    e.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    e.set_defaults(func=cmd_eval)

    x = sub.add_parser("extract", help="descriptors of a dataset to .npy")
    x.add_argument("checkpoint")
    x.add_argument("output", help="descriptors .npy (labels go next to it as .labels.npy)")
    x.add_argument("--dataset", default=None)
    x.add_argument("--eval-dataset", default=None)
    x.add_argument("--split", choices=["train", "eval"], default="eval")
    x.set_defaults(func=cmd_extract)

    # Arguments after `apl bench` (--help included) go to benchmarks/bench_loss.py unchanged.
    b = sub.add_parser("bench", help="the loss benchmark (benchmarks/bench_loss.py; arguments pass through)", add_help=False)
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    a, rest = parser.parse_known_args(argv)
    if rest and a.command != "bench":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    a.rest = rest
    try:
        return a.func(a)
    except (ValueError, FileNotFoundError, TypeError) as exc:
        print(f"apl {a.command}: error: {exc}", file=sys.stderr)
        return 2
