"""The generated set (`GlyphSet`, `make_glyphs`), its split into train / unseen classes, and torch datasets of it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from .characters import kept_characters, open_fonts
from .classes import class_names, merge_classes
from .distort import distorted_images
from .render import UPSAMPLE, place_all


@dataclass(frozen=True, eq=False)
class GlyphSet:
    """A generated glyph data set.

    images: uint8 (N, 1, size, size), 0-255, ink bright on a dark background;
    labels: int64 (N,), class ids, `per_class` consecutive images per class, classes in order;
    class_names: the characters of each class, joined;
    train_classes / unseen_classes: sorted class ids of the two halves (see `split_classes`).
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    train_classes: tuple[int, ...]
    unseen_classes: tuple[int, ...]
    size: int
    per_class: int
    seed: int

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)


def split_classes(num_classes: int, seed: int = 0) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(train_ids, unseen_ids): the class ids 0..num_classes-1 split in two halves (train gets the
    smaller half when num_classes is odd) by a permutation seeded with `seed` only.

    Both are sorted. The split does not depend on the image seed of `make_glyphs`.
    """
    if num_classes < 2:
        raise ValueError(f"need at least 2 classes to split, got {num_classes}")
    order = torch.randperm(num_classes, generator=torch.Generator().manual_seed(seed)).tolist()
    half = num_classes // 2
    return tuple(sorted(order[:half])), tuple(sorted(order[half:]))


def validation_split(
    class_ids: Sequence[int], fraction: float = 0.25, seed: int = 0,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(fit_ids, validation_ids): `class_ids` split by class for hyper-parameter tuning.

    Typically applied to `GlyphSet.train_classes`, so that tuning never looks at the unseen
    classes. round(fraction * len) classes (at least 1) go to validation, chosen by a
    permutation seeded with `seed`; both parts are sorted and non-empty.
    """
    ids = sorted({int(c) for c in class_ids})
    if len(ids) < 2:
        raise ValueError(f"need at least 2 classes to split, got {len(ids)}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    n_val = min(max(1, round(fraction * len(ids))), len(ids) - 1)
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed)).tolist()
    val = sorted(ids[i] for i in order[:n_val])
    fit = sorted(ids[i] for i in order[n_val:])
    return tuple(fit), tuple(val)


class GlyphDataset(torch.utils.data.Dataset):
    """Glyphs as a dataset of (transform(image (1, S, S) float in [0, 1]), label) pairs; `targets`
    lists the labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Optional[Callable] = None) -> None:
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        self.images = images
        self.labels = labels
        self.targets = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = self.images[index]
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if self.transform is not None:
            x = self.transform(x)
        return x, self.targets[index]


def glyph_subset(glyphs: GlyphSet, class_ids: Sequence[int], transform: Optional[Callable] = None) -> GlyphDataset:
    """The images of the classes `class_ids` (labels unchanged) as a `GlyphDataset`."""
    ids = sorted({int(c) for c in class_ids})
    if any(c < 0 or c >= glyphs.num_classes for c in ids):
        raise ValueError(f"class ids must be in 0..{glyphs.num_classes - 1}, got {list(class_ids)}")
    keep = torch.isin(glyphs.labels, torch.tensor(ids, dtype=torch.int64))
    return GlyphDataset(glyphs.images[keep], glyphs.labels[keep], transform)


def long_tail_sizes(num_classes: int, largest: int = 200, smallest: int = 2, seed: int = 0) -> list[int]:
    """Images per class following a power law: the class of rank r (0-based, in an order seeded with
    `seed`) gets round(largest * (r + 1) ** -a) images, a chosen so that the last gets `smallest`.
    Listed by class index (0..num_classes-1), not by rank."""
    if num_classes < 2 or not 1 <= smallest <= largest:
        raise ValueError(f"need num_classes >= 2 and 1 <= smallest <= largest, got {num_classes}, {smallest}, {largest}")
    a = np.log(largest / smallest) / np.log(num_classes)
    by_rank = [max(smallest, int(round(largest * (r + 1) ** -a))) for r in range(num_classes)]
    order = torch.randperm(num_classes, generator=torch.Generator().manual_seed(seed)).tolist()
    sizes = [0] * num_classes
    for r, c in enumerate(order):
        sizes[c] = by_rank[r]
    return sizes


def long_tail_subset(glyphs: GlyphSet, class_ids: Sequence[int], largest: int = 200, smallest: int = 2, seed: int = 0,
                     transform: Optional[Callable] = None) -> GlyphDataset:
    """The classes `class_ids` with power-law sizes (`long_tail_sizes`): class c keeps its first
    n_c images (the same images a smaller balanced set has). `glyphs.per_class` must be at least
    `largest`."""
    if glyphs.per_class < largest:
        raise ValueError(f"a long tail up to {largest} images per class needs glyphs of per_class >= {largest}, "
                         f"got {glyphs.per_class}")
    ids = sorted({int(c) for c in class_ids})
    sizes = long_tail_sizes(len(ids), largest, smallest, seed)
    rank = torch.arange(len(glyphs.labels)) % glyphs.per_class  # position of each image within its class
    keep = torch.zeros(len(glyphs.labels), dtype=torch.bool)
    for c, n in zip(ids, sizes):
        keep |= (glyphs.labels == c) & (rank < n)
    return GlyphDataset(glyphs.images[keep], glyphs.labels[keep], transform)


def split_glyphs(
    glyphs: GlyphSet, transform: Optional[Callable] = None, eval_transform: Optional[Callable] = None,
) -> tuple[GlyphDataset, GlyphDataset]:
    """(train, unseen) datasets: the images of `glyphs.train_classes`, and those of the unseen
    classes, never seen in training. For a validation split of the training classes, use
    `validation_split(glyphs.train_classes)` and `glyph_subset`."""
    return (
        glyph_subset(glyphs, glyphs.train_classes, transform),
        glyph_subset(glyphs, glyphs.unseen_classes, eval_transform),
    )


def check_params(size: int, per_class: int, seed: int) -> None:
    """Raise TypeError / ValueError unless size >= 8, per_class >= 1 and all three are ints."""
    for name, value in (("size", size), ("per_class", per_class), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if size < 8:
        raise ValueError(f"size must be at least 8, got {size}")
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")


def make_glyphs(size: int = 32, per_class: int = 16, seed: int = 0) -> GlyphSet:
    """Generate the glyph set (no cache; see `load_glyphs`): `per_class` images of size x size per
    class, distorted as `apl.data.glyphs` says, deterministic given (size, per_class, seed)."""
    check_params(size, per_class, seed)
    size, per_class, seed = int(size), int(per_class), int(seed)
    fonts = open_fonts()
    chars = kept_characters(fonts)
    side = size * UPSAMPLE
    placed = place_all(fonts, chars, side)
    groups = merge_classes(fonts, chars, placed, side)
    # per class, the (face, char) drawn: in each face having one of its characters, the first
    sources = [
        [
            (f, next(i for i in group if (f, i) in placed))
            for f in range(len(fonts)) if any((f, i) in placed for i in group)
        ]
        for group in groups
    ]
    num_classes = len(groups)
    labels = torch.arange(num_classes, dtype=torch.int64).repeat_interleave(per_class)
    images = distorted_images(placed, sources, per_class, size, seed)
    train, unseen = split_classes(num_classes)
    return GlyphSet(
        images=images, labels=labels, class_names=class_names(chars, groups),
        train_classes=train, unseen_classes=unseen, size=size, per_class=per_class, seed=seed,
    )
