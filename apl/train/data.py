"""The data side of a run: datasets from a config, batches whose augmentation is a pure function of
(seed, epoch, step, slot), and the loaders that read them with worker processes.

Why per-sample seeds: a transform that draws from one generator in the main process gives other
crops as soon as images are read by workers (each has its own copy) or a run is resumed mid-way.
Here each image of a batch gets its own seed, derived from where it sits in the global batch, and
its transform runs under that seed; so the crops do not depend on the number of workers, on the
number of processes the global batch is split over, or on interruptions.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import torch

from ..data import (ClassBalancedBatchSampler, ClassSpreadBatchSampler, CorruptImageError, ImageList, RandomBatchSampler,
                    split_digits)
from ..data import eval_transform, train_transform
from ..data.loaders import loader_options
from .config import BUILTIN_DATASETS as BUILTIN, GLYPHS, TrainConfig

# --dataset glyphs-lt: the training classes' sizes follow a power law between these two
LONG_TAIL = (200, 2)


def in_channels(cfg: TrainConfig) -> int:
    """Image channels of the run's data: 1 for the built-in grey datasets, else 3 (RGB)."""
    return 1 if cfg.dataset in BUILTIN else 3


def default_workers(cfg: TrainConfig) -> int:
    """Loader workers when none are asked for: 0 for the in-memory built-in datasets (nothing to
    decode), else one per CPU core but one, at most 8."""
    if cfg.dataset in BUILTIN:
        return 0
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def check_workers(workers: Optional[int], prefetch: int) -> None:
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise ValueError(f"--workers must be an integer >= 0, got {workers!r}")
    if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 1:
        raise ValueError(f"--prefetch must be an integer >= 1, got {prefetch!r}")


def _open_images(spec: str, root: Optional[str], transform, option: str, channels: int = 3) -> ImageList:
    """An image list or class folders, decoded as RGB, or as grey for a network of one channel."""
    if spec in BUILTIN:
        raise ValueError(f"{option} {spec}: the built-in datasets come with their own held-out classes; name them with "
                         f"--dataset {spec} (an --eval-dataset is an image-list file or a folder of class folders)")
    path = Path(spec)
    mode = "L" if channels == 1 else "RGB"
    if path.is_dir():
        return ImageList.from_folders(path, transform=transform, mode=mode)
    if path.is_file():
        return ImageList.from_list_file(path, root=root, transform=transform, mode=mode)
    raise FileNotFoundError(f"{option}: not found: {spec} (expected {', '.join(map(repr, BUILTIN))}, an image-list file or "
                            "a folder of class folders)")


def _imbalanced(dataset, imbalance: float, seed: int):
    """The k-th class (in label order) keeps a (1 - imbalance)^k share of its images."""
    g = torch.Generator().manual_seed(seed)
    keep = []
    for k, c in enumerate(sorted(set(dataset.targets))):
        idx = (dataset.labels == c).nonzero().flatten()
        n = max(2, round(len(idx) * (1 - imbalance) ** k))
        keep.append(idx[torch.randperm(len(idx), generator=g)[:n]])
    kept = torch.cat(keep).sort().values
    kept_set = type(dataset)(dataset.images[kept], dataset.labels[kept], dataset.transform)
    if hasattr(dataset, "classes"):
        kept_set.classes = dataset.classes
    return kept_set


def _glyphs(cfg: TrainConfig):
    """The generated glyphs (apl.data.glyphs): "glyphs" trains on the training classes and holds out
    the unseen ones; "glyphs-val" splits the training classes into a fitting part and a validation
    part (a quarter of them), for tuning without ever looking at the unseen classes."""
    from ..data.glyphs import glyph_subset, load_glyphs, long_tail_subset, validation_split

    per_class = max(cfg.glyphs_per_class, LONG_TAIL[0]) if cfg.dataset == "glyphs-lt" else cfg.glyphs_per_class
    glyphs = load_glyphs(size=cfg.glyph_size, per_class=per_class, seed=0)
    train_ids, held_out_ids = glyphs.train_classes, glyphs.unseen_classes
    if cfg.dataset == "glyphs-val":
        train_ids, held_out_ids = validation_split(glyphs.train_classes)
    if cfg.dataset == "glyphs-lt":
        # the unseen classes as in "glyphs" (their first glyphs_per_class images: the same images)
        n = cfg.glyphs_per_class
        train = long_tail_subset(glyphs, train_ids, *LONG_TAIL)
        held_out = long_tail_subset(glyphs, held_out_ids, n, n)
    else:
        train, held_out = glyph_subset(glyphs, train_ids), glyph_subset(glyphs, held_out_ids)
    train.classes = held_out.classes = list(glyphs.class_names)
    return train, held_out


def build_datasets(cfg: TrainConfig, augment: bool = True, channels: Optional[int] = None):
    """(train, held_out, in_channels). The training set uses the training transform (random crops,
    flips, colour jitter) when `augment`, else the evaluation transform (whitening, extraction).
    The built-in datasets are used as they are (the glyphs are distorted when generated), and their
    held-out classes are the held-out set unless `cfg.eval_dataset` names another one. `channels`:
    those of the network the images go to (default: the run's, `in_channels(cfg)`); image files are
    decoded as grey for one channel."""
    channels = in_channels(cfg) if channels is None else channels
    if cfg.dataset == "digits":
        train, held_out = split_digits(cfg.train_classes)
        if cfg.imbalance:
            train = _imbalanced(train, cfg.imbalance, cfg.seed)
    elif cfg.dataset in GLYPHS:
        train, held_out = _glyphs(cfg)
        if cfg.imbalance:
            train = _imbalanced(train, cfg.imbalance, cfg.seed)
    else:
        tf = train_transform(cfg.image_size) if augment else eval_transform(cfg.image_size)
        train = _open_images(cfg.dataset, cfg.root, tf, "--dataset", channels)
        held_out = None
    if cfg.eval_dataset is not None:
        held_out = _open_images(cfg.eval_dataset, cfg.eval_root, eval_transform(cfg.image_size), "--eval-dataset", channels)
    return train, held_out, in_channels(cfg)


def build_held_out(cfg: TrainConfig, channels: Optional[int] = None):
    """The held-out set alone, with the evaluation transform: `cfg.eval_dataset` when it names one,
    else the built-in dataset's held-out classes. What `apl eval` needs unless it learns a whitening
    on the training images."""
    channels = in_channels(cfg) if channels is None else channels
    if cfg.eval_dataset is not None:
        return _open_images(cfg.eval_dataset, cfg.eval_root, eval_transform(cfg.image_size), "--eval-dataset", channels)
    return build_datasets(cfg, augment=False, channels=channels)[1]


def check_data(train, held_out, show: int = 20) -> None:
    """Every listed file of both sets exists; raises one FileNotFoundError naming all that do not."""
    problems = []
    for name, ds in (("training set", train), ("held-out set", held_out)):
        if isinstance(ds, ImageList):
            problems += [f"{name}: {m}" for m in ds.missing_files()]
    if problems:
        more = f"\n  ... and {len(problems) - show} more" if len(problems) > show else ""
        raise FileNotFoundError(
            f"{len(problems)} listed image files not found (check --root / --eval-root):\n  "
            + "\n  ".join(problems[:show]) + more
        )


def build_sampler(cfg: TrainConfig, labels: Sequence, batch_size: Optional[int] = None):
    """The global-batch sampler: the same batches on every rank (same seed and epoch).

    "pk" (default): B // K random classes (at least 2; every class when there are fewer), the batch
    split evenly over them, so each class gets K = --images-per-class images or more and every query
    has positives (classes with fewer images give all they have, classes of one image are left out).
    "spread": B images spread over all classes (with many classes and few images each, most queries
    of a batch then have no positive: the trainer warns). "random": B images drawn uniformly from the
    whole set, whatever their class (the paper's sampling on Landmarks-clean).
    """
    batch = cfg.batch_size if batch_size is None else batch_size
    if cfg.sampler == "pk":
        eligible = sum(n >= 2 for n in Counter(labels).values())
        p = min(eligible, batch, max(2, batch // cfg.images_per_class))  # two classes at least: negatives
        return ClassBalancedBatchSampler(labels, p, cfg.images_per_class, num_batches=cfg.steps_per_epoch, seed=cfg.seed,
                                         batch_size=batch)
    if cfg.sampler == "random":
        return RandomBatchSampler(labels, batch, num_batches=cfg.steps_per_epoch, seed=cfg.seed)
    return ClassSpreadBatchSampler(labels, batch, num_batches=cfg.steps_per_epoch, seed=cfg.seed)


def batch_capacity(cfg: TrainConfig, labels: Sequence) -> int:
    """The largest batch the sampler can fill without drawing an image twice: every image, or for
    "pk" every image of a class with two or more."""
    if cfg.sampler == "pk":
        return sum(n for n in Counter(labels).values() if n >= 2)
    return len(labels)


def sample_seed(seed: int, epoch: int, step: int, slot: int) -> int:
    """The augmentation seed of the image at `slot` of the global batch `step` of `epoch`."""
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + step * 0x94D049BB133111EB + slot) % (2**64)
    x ^= x >> 31  # splitmix-style mixing so that neighbouring (step, slot) give unrelated streams
    x = (x * 0xD6E8FEB86659FD93) % (2**64)
    return int(x ^ (x >> 32)) % (2**63)


class SeededBatches(torch.utils.data.Sampler):
    """This rank's share of each global batch of `sampler`, as (index, augmentation seed) pairs.

    Rank r of W takes slots [r * B / W, (r + 1) * B / W) of every global batch of B images.
    """

    def __init__(self, sampler, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.sampler, self.seed, self.rank, self.world_size = sampler, int(seed), rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step, batch in enumerate(self.sampler):
            share = len(batch) // self.world_size
            lo = self.rank * share
            yield [(batch[s], sample_seed(self.seed, self.epoch, step, s)) for s in range(lo, lo + share)]


@dataclass(frozen=True)
class UnreadableImage:
    """An image file that could not be read, carried to the main process as data (an exception
    raised in a loader worker reaches it only as the text of a traceback): `reason` names the file."""

    reason: str


class SeededDataset(torch.utils.data.Dataset):
    """Item (index, seed) is dataset[index] with the transform's random numbers drawn under `seed`;
    an image that cannot be read is an `UnreadableImage` (with -1 as its label)."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        try:
            with torch.random.fork_rng(devices=[]):
                # The CPU generator only (the transforms run on CPU): torch.manual_seed would also
                # queue a seed for every accelerator, recording a stack trace per sample (slow).
                torch.random.default_generator.manual_seed(seed)
                return self.dataset[index]
        except (CorruptImageError, FileNotFoundError) as err:
            return UnreadableImage(str(err)), -1


def collate(items: list):
    """torch's default collation; a batch that holds an unreadable image is that `UnreadableImage`."""
    for x, _ in items:
        if isinstance(x, UnreadableImage):
            return x
    return torch.utils.data.default_collate(items)


def train_loader(dataset, batches: SeededBatches, workers: int, prefetch: int, device: torch.device):
    # Own generator: a loader draws its workers' base seed when an epoch starts, and that must not
    # come from the global RNG (with 0 workers it would be drawn every epoch, with persistent
    # workers once, so the model's random numbers would depend on the number of workers).
    return torch.utils.data.DataLoader(SeededDataset(dataset), batch_sampler=batches, generator=torch.Generator(),
                                       collate_fn=collate, **loader_options(workers, prefetch, device))
