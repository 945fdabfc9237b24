"""`apl eval` and `apl extract`: descriptors of a checkpoint's network on a dataset.

Both say what they evaluated (dataset, images, queries, image size, scales) on the terminal and in
the files they write, so a number can never be mistaken for another dataset's.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from .common import HelpFormatter, add_data_options, add_loader_options


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="an apl checkpoint (a run's last.pt or best.pt)")
    add_data_options(p, training=False)
    p.add_argument("--image-size", type=int, default=None,
                   help="longest side of the images (default: the checkpoint's training size; 1024 with --revisited; "
                        "the built-in datasets keep their size)")
    p.add_argument("--scales", default="1", help="multi-scale descriptors, e.g. 1,0.707,0.5 (L2-normalised mean over scales)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    add_loader_options(p)


def add(sub) -> None:
    e = sub.add_parser("eval", help="evaluate a checkpoint", formatter_class=HelpFormatter,
                       description="Retrieval metrics of a checkpoint: every image of the held-out set a query against the others "
                                   "(default: the checkpoint's own held-out set), or the Revisited Oxford/Paris protocol.")
    _common(e)
    e.add_argument("--revisited", default=None, help="a ROxford5k / RParis6k folder (gnd_*.pkl and jpg/): cropped queries against the database")
    e.add_argument("--whitening", action="store_true", help="PCA-whitening learned on the training images' descriptors (evaluation transform)")
    e.add_argument("--json", default=None, help="also write the metrics and what was evaluated to this JSON file")
    e.set_defaults(func=run_eval)

    x = sub.add_parser("extract", help="descriptors of a dataset to .npy", formatter_class=HelpFormatter,
                       description="Writes OUTPUT.npy (descriptors, one row per image), OUTPUT.labels.npy (class indices) and "
                                   "OUTPUT.index.tsv (row, image path, class name), always with the evaluation transform.")
    _common(x)
    x.add_argument("output", help="descriptor file (.npy is added when missing)")
    x.add_argument("--split", choices=["train", "eval"], default="eval", help="which set of the dataset to describe")
    x.set_defaults(func=run_extract)


def _setup(a: argparse.Namespace):
    """(model on its device, config for the data asked for, scales, description of the data)."""
    from ..train import load_model, parse_scales
    from ..train.launch import resolve_device

    if a.workers is not None and a.workers < 0:
        raise ValueError(f"--workers must be an integer >= 0, got {a.workers}")
    if a.image_size is not None and a.image_size < 1:
        raise ValueError(f"--image-size must be >= 1, got {a.image_size}")
    scales = parse_scales(a.scales)
    model, cfg = load_model(a.checkpoint)
    model = model.to(resolve_device(a.device))
    changes: dict = {}
    if a.dataset is not None:
        changes.update(dataset=a.dataset, root=a.root, eval_dataset=a.eval_dataset)
    elif a.eval_dataset is not None:
        changes.update(eval_dataset=a.eval_dataset)
    if a.root is not None:
        changes["root"] = a.root
    if a.eval_root is not None:
        changes["eval_root"] = a.eval_root
    if a.image_size is not None:
        changes["image_size"] = a.image_size
    cfg = dataclasses.replace(cfg, **changes)
    if cfg.dataset not in ("digits", "glyphs", "glyphs-val") and cfg.eval_dataset is None:
        raise ValueError("--eval-dataset is needed with an image-list or folder --dataset (the set to evaluate)")
    return model, cfg, scales


def _size(cfg) -> str:
    if cfg.dataset == "digits":
        return "8x8 (digits, native size)"
    if cfg.dataset in ("glyphs", "glyphs-val"):
        return f"{cfg.glyph_size}x{cfg.glyph_size} (glyphs, generated)"
    return f"longest side {cfg.image_size}"


def _workers(a, cfg) -> int:
    from ..train.data import default_workers

    return default_workers(cfg) if a.workers is None else a.workers


def run_eval(a: argparse.Namespace) -> int:
    from ..evaluation.extraction import evaluate
    from ..train.data import build_datasets, build_held_out
    from ..evaluation.report import metrics_table

    model, cfg, scales = _setup(a)
    workers = _workers(a, cfg)
    if a.revisited:
        size = a.image_size or 1024
        metrics, info = _revisited(model, a.revisited, size, scales, workers, a.prefetch)
        lines = ["| protocol | mAP | mP@1 | mP@5 | mP@10 |", "|---|---|---|---|---|"]
        for proto, m in metrics.items():
            lines.append(f"| {proto} | {m['map']:.4f} | " + " | ".join(f"{m['mp'][k]:.4f}" for k in (1, 5, 10)) + " |")
    else:
        # the training images only for a whitening: a run evaluates wherever its training set went
        train_set, eval_set = (build_datasets(cfg, augment=False)[:2] if a.whitening else (None, build_held_out(cfg)))
        metrics = evaluate(model, eval_set, train_set, a.whitening, scales=scales, workers=workers, prefetch=a.prefetch)
        name = f"{cfg.dataset} (held-out classes)" if cfg.eval_dataset is None else cfg.eval_dataset
        info = {"dataset": name, "images": len(eval_set), "queries": len(eval_set), "image_size": _size(cfg),
                "scales": list(scales), "whitening": bool(a.whitening), "checkpoint": str(a.checkpoint)}
        lines = metrics_table(metrics)
    print(f"evaluated {info['dataset']}: {info['images']} images, {info['queries']} queries, image size {info['image_size']}, "
          f"scales {','.join(f'{s:g}' for s in scales)}" + (", PCA-whitened" if info.get("whitening") else ""))
    print("\n".join(lines))
    if a.json:
        Path(a.json).write_text(json.dumps({**info, "metrics": metrics}, indent=1, default=str))
        print(f"wrote {a.json}")
    return 0


def _revisited(model, root: str, image_size: int, scales, workers: int, prefetch: int) -> tuple[dict, dict]:
    """The Revisited Oxford / Paris protocol: cropped queries against the full database, both
    read by the batched loader at their own shapes."""
    from .. import evaluation
    from ..data import RevisitedImages, eval_transform, load_revisited
    from ..evaluation.extraction import extract

    if not Path(root).is_dir():
        raise FileNotFoundError(f"--revisited {root}: no such folder (a ROxford5k / RParis6k folder with gnd_*.pkl and jpg/)")
    ds = load_revisited(root)
    tf = eval_transform(image_size)
    kw = dict(scales=scales, workers=workers, prefetch=prefetch, progress=True)
    q, _ = extract(model, RevisitedImages(ds, queries=True, transform=tf), **kw)
    db, _ = extract(model, RevisitedImages(ds, queries=False, transform=tf), **kw)
    info = {"dataset": f"{ds.name} (Revisited, {root})", "images": len(ds.imlist), "queries": len(ds.qimlist),
            "image_size": f"longest side {image_size}", "scales": list(scales)}
    return evaluation.revisited_map(q @ db.t(), ds.gnd), info


def _names(dataset) -> tuple[list[str], list[str]]:
    """(path, class name) of each item, for the index file next to the descriptors."""
    if hasattr(dataset, "paths"):
        return [str(dataset.path(i)) for i in range(len(dataset))], [str(dataset.labels[i]) for i in range(len(dataset))]
    kind = type(dataset).__name__.removesuffix("Dataset").lower()  # digits, glyph
    return [f"{kind}[{i}]" for i in range(len(dataset))], [str(t) for t in dataset.targets]


def run_extract(a: argparse.Namespace) -> int:
    import numpy as np

    from ..evaluation.extraction import extract
    from ..train.data import build_datasets, build_held_out

    model, cfg, scales = _setup(a)
    # the evaluation transform, always; the training images only when asked for
    dataset = build_datasets(cfg, augment=False)[0] if a.split == "train" else build_held_out(cfg)
    d, y = extract(model, dataset, progress=True, scales=scales, workers=_workers(a, cfg), prefetch=a.prefetch)
    out = Path(a.output)
    if out.suffix != ".npy":
        out = out.with_name(out.name + ".npy")
    stem = out.with_suffix("")
    labels_file, index_file = Path(f"{stem}.labels.npy"), Path(f"{stem}.index.tsv")
    np.save(out, d.cpu().numpy())
    np.save(labels_file, y.cpu().numpy())
    paths, classes = _names(dataset)
    index_file.write_text("row\tpath\tclass\n" + "".join(f"{i}\t{p}\t{c}\n" for i, (p, c) in enumerate(zip(paths, classes))))
    name = cfg.dataset if a.split == "train" or cfg.eval_dataset is None else cfg.eval_dataset
    print(f"described {name} ({a.split} split): {d.shape[0]} images, image size {_size(cfg)}, "
          f"scales {','.join(f'{s:g}' for s in scales)}")
    print(f"wrote {d.shape[0]} descriptors of dimension {d.shape[1]} to {out}, labels to {labels_file}, paths and classes to {index_file}")
    return 0
