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


def _common(p: argparse.ArgumentParser, revisited: bool = True) -> None:
    """The options of the commands that read a checkpoint (`revisited`: the command has --revisited)."""
    p.add_argument("checkpoint", help="an apl checkpoint (a run's last.pt or best.pt)")
    add_data_options(p)
    p.add_argument("--image-size", type=int, default=None,
                   help="longest side of the images read from files (default: the checkpoint's training size"
                        + ("; 1024 with --revisited" if revisited else "") + "); refused for the built-in datasets, "
                        "which are described at their own size")
    p.add_argument("--scales", default="1", help="multi-scale descriptors, e.g. 1,0.707,0.5 (L2-normalised mean over scales)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
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
    _common(x, revisited=False)
    x.add_argument("output", help="descriptor file (.npy is added when missing)")
    x.add_argument("--split", choices=["train", "eval"], default="eval", help="which set of the dataset to describe")
    x.set_defaults(func=run_extract)


def data_config(cfg, a: argparse.Namespace):
    """The checkpoint's configuration `cfg` with the data options the user gave: the data named is
    the data used. --dataset replaces the checkpoint's dataset (and its held-out set), --eval-dataset
    the held-out set alone (also of a built-in dataset); an option that would have no effect on the
    data it applies to is refused, naming it."""
    from ..train.config import BUILTIN_DATASETS

    changes: dict = {}
    if a.dataset is not None:
        changes.update(dataset=a.dataset, root=a.root, eval_dataset=a.eval_dataset, eval_root=a.eval_root)
        if a.dataset not in BUILTIN_DATASETS and a.eval_dataset is None:
            raise ValueError("--eval-dataset is needed with an image-list or folder --dataset (the set to evaluate)")
    else:
        if a.eval_dataset is not None:
            changes.update(eval_dataset=a.eval_dataset, eval_root=a.eval_root)
        if a.root is not None:
            if cfg.dataset in BUILTIN_DATASETS:
                raise ValueError(f"--root {a.root}: the checkpoint was trained on the built-in {cfg.dataset!r}, which reads "
                                 "no files; --root goes with an image-list --dataset")
            changes["root"] = a.root
        if a.eval_root is not None and a.eval_dataset is None:
            if cfg.eval_dataset is None:
                raise ValueError(f"--eval-root {a.eval_root}: there is no held-out image list for it to apply to (the "
                                 f"checkpoint's held-out set is the built-in {cfg.dataset!r}'s); give --eval-dataset")
            changes["eval_root"] = a.eval_root
    cfg = dataclasses.replace(cfg, **changes)
    if a.image_size is not None and not getattr(a, "revisited", None):  # Revisited images take it themselves
        split = getattr(a, "split", "eval")
        reads_files = cfg.eval_dataset is not None if split == "eval" else cfg.dataset not in BUILTIN_DATASETS
        if not reads_files:
            raise ValueError(f"--image-size {a.image_size}: the built-in {cfg.dataset!r} images are described at the size "
                             "they come in; --image-size applies to image files (an image-list or folder dataset)")
        cfg = dataclasses.replace(cfg, image_size=a.image_size)
    return cfg


def _setup(a: argparse.Namespace):
    """(model on its device, config of the data asked for, scales), every argument checked before
    anything is read or computed."""
    from ..train import load_model, parse_scales
    from ..train.config import BUILTIN_DATASETS
    from ..train.launch import resolve_device

    if a.workers is not None and a.workers < 0:
        raise ValueError(f"--workers must be an integer >= 0, got {a.workers}")
    if a.image_size is not None and a.image_size < 1:
        raise ValueError(f"--image-size must be >= 1, got {a.image_size}")
    if a.threads is not None and a.threads < 1:
        raise ValueError(f"--threads must be an integer >= 1, got {a.threads}")
    if getattr(a, "revisited", None):
        if a.eval_dataset is not None:
            raise ValueError("--eval-dataset does not apply with --revisited (its queries and database are evaluated)")
        if a.dataset is not None and not getattr(a, "whitening", False):
            raise ValueError("--dataset does not apply with --revisited unless --whitening learns on its training images")
        if not Path(a.revisited).is_dir():
            raise FileNotFoundError(f"--revisited {a.revisited}: no such folder (a ROxford5k / RParis6k folder with "
                                    "gnd_*.pkl and jpg/)")
    scales = parse_scales(a.scales)
    if a.threads is not None:
        import torch

        torch.set_num_threads(a.threads)
    model, cfg = load_model(a.checkpoint)
    cfg = data_config(cfg, a)
    files = [f for f in (cfg.eval_dataset, None if cfg.dataset in BUILTIN_DATASETS else cfg.dataset) if f]
    if channels(model) == 1 and files:
        print(f"notice: the network takes grey images (it was trained on grey ones): the images of "
              f"{' and '.join(dict.fromkeys(files))} are read as grey")
    model = model.to(resolve_device(a.device))
    return model, cfg, scales


def channels(model) -> int:
    """The image channels the network takes (1: grey, 3: RGB)."""
    return getattr(model.features.backbone, "in_channels", 3)


def _size(cfg, split: str = "eval") -> str:
    """The size the images of `split` are described at."""
    if split == "eval" and cfg.eval_dataset is not None:
        return f"longest side {cfg.image_size}"
    if cfg.dataset == "digits":
        return "8x8 (digits, native size)"
    if cfg.dataset.startswith("glyphs"):
        return f"{cfg.glyph_size}x{cfg.glyph_size} (glyphs, generated)"
    return f"longest side {cfg.image_size}"


def _workers(a, cfg) -> int:
    from ..train.data import default_workers

    return default_workers(cfg) if a.workers is None else a.workers


def run_eval(a: argparse.Namespace) -> int:
    from ..evaluation.report import metrics_table
    from ..evaluation.extraction import evaluate
    from ..train.data import build_datasets, build_held_out

    model, cfg, scales = _setup(a)
    workers = _workers(a, cfg)
    ch = channels(model)
    # the training images only for a whitening: learned on them, applied to what is evaluated
    train_set = build_datasets(cfg, augment=False, channels=ch)[0] if a.whitening else None
    if a.revisited:
        size = a.image_size or 1024
        metrics, info = _revisited(model, a.revisited, size, scales, workers, a.prefetch, train_set)
        lines = ["| protocol | mAP | mP@1 | mP@5 | mP@10 |", "|---|---|---|---|---|"]
        for proto, m in metrics.items():
            lines.append(f"| {proto} | {m['map']:.4f} | " + " | ".join(f"{m['mp'][k]:.4f}" for k in (1, 5, 10)) + " |")
    else:
        eval_set = build_held_out(cfg, ch)
        metrics = evaluate(model, eval_set, train_set, a.whitening, scales=scales, workers=workers, prefetch=a.prefetch)
        name = f"{cfg.dataset} (held-out classes)" if cfg.eval_dataset is None else cfg.eval_dataset
        info = {"dataset": name, "images": len(eval_set), "queries": len(eval_set), "image_size": _size(cfg),
                "scales": list(scales), "checkpoint": str(a.checkpoint)}
        lines = metrics_table(metrics)
    info["whitening"] = f"PCA, learned on the training images of {cfg.dataset}" if a.whitening else None
    print(f"evaluated {info['dataset']}: {info['images']} images, {info['queries']} queries, image size {info['image_size']}, "
          f"scales {','.join(f'{s:g}' for s in scales)}" + (f", {info['whitening']}" if a.whitening else ""))
    print("\n".join(lines))
    if a.json:
        Path(a.json).write_text(json.dumps({**info, "metrics": metrics}, indent=1, default=str))
        print(f"wrote {a.json}")
    return 0


def _revisited(model, root: str, image_size: int, scales, workers: int, prefetch: int, whitening_set=None):
    """The Revisited Oxford / Paris protocol: cropped queries against the full database, both
    read by the batched loader at their own shapes; PCA-whitened when `whitening_set` is given."""
    from .. import evaluation
    from ..data import RevisitedImages, eval_transform, load_revisited
    from ..evaluation.extraction import extract
    from ..evaluation.whitening import PCAWhitening

    ds = load_revisited(root)
    tf = eval_transform(image_size)
    kw = dict(scales=scales, workers=workers, prefetch=prefetch, progress=True)
    q, _ = extract(model, RevisitedImages(ds, queries=True, transform=tf), **kw)
    db, _ = extract(model, RevisitedImages(ds, queries=False, transform=tf), **kw)
    if whitening_set is not None:
        white = PCAWhitening.fit(extract(model, whitening_set, **kw)[0])
        q, db = white.transform(q), white.transform(db)
    info = {"dataset": f"{ds.name} (Revisited, {root})", "images": len(ds.imlist), "queries": len(ds.qimlist),
            "image_size": f"longest side {image_size}", "scales": list(scales)}
    return evaluation.revisited_map(q @ db.t(), ds.gnd), info


def _names(dataset) -> tuple[list[str], list[str]]:
    """(path, class name) of each item, for the index file next to the descriptors."""
    if hasattr(dataset, "paths"):
        return [str(dataset.path(i)) for i in range(len(dataset))], [str(dataset.labels[i]) for i in range(len(dataset))]
    kind = type(dataset).__name__.removesuffix("Dataset").lower()  # digits, glyph
    return [f"{kind}[{i}]" for i in range(len(dataset))], [str(t) for t in dataset.targets]


def _check_output(output: str) -> None:
    """The output folder exists and is writable: checked before anything is extracted."""
    import os

    from ..evaluation.descriptor_files import descriptor_paths

    folder = descriptor_paths(output)[0].resolve().parent
    if not folder.is_dir():
        raise FileNotFoundError(f"output {output}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"output {output}: the folder {folder} is not writable")


def run_extract(a: argparse.Namespace) -> int:
    from ..evaluation.descriptor_files import save_descriptors
    from ..evaluation.extraction import extract
    from ..train.data import build_datasets, build_held_out

    _check_output(a.output)  # before the checkpoint is read and anything is extracted
    model, cfg, scales = _setup(a)
    ch = channels(model)
    # the evaluation transform, always; the training images only when asked for
    dataset = build_datasets(cfg, augment=False, channels=ch)[0] if a.split == "train" else build_held_out(cfg, ch)
    d, y = extract(model, dataset, progress=True, scales=scales, workers=_workers(a, cfg), prefetch=a.prefetch)
    paths, classes = _names(dataset)
    out, labels_file, index_file = save_descriptors(a.output, d.cpu().numpy(), y.cpu().numpy(), paths, classes)
    name = cfg.dataset if a.split == "train" or cfg.eval_dataset is None else cfg.eval_dataset
    print(f"described {name} ({a.split} split): {d.shape[0]} images, image size {_size(cfg, a.split)}, "
          f"scales {','.join(f'{s:g}' for s in scales)}")
    print(f"wrote {d.shape[0]} descriptors of dimension {d.shape[1]} to {out}, labels to {labels_file}, paths and classes "
          f"to {index_file} (tabs, newlines and backslashes in names escaped: apl.evaluation.load_descriptors reads them)")
    return 0
