"""The bundled default dataset: the UCI hand-written digits (1,797 8x8 images, 10 classes).

Shipped inside the package (digits.npz, attribution in DIGITS.md), so nothing is downloaded.
For retrieval, train on some digit classes and evaluate on the held-out ones (`split_digits`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

DIGITS_FILE = Path(__file__).with_name("digits.npz")
NUM_DIGITS = 1797
DEFAULT_TRAIN_CLASSES = (0, 1, 2, 3, 4)


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """(images (1797, 1, 8, 8) float32 in [0, 1], labels (1797,) int64 digits 0-9)."""
    if not DIGITS_FILE.is_file():
        raise FileNotFoundError(f"bundled digits file missing: {DIGITS_FILE} (broken installation?)")
    with np.load(DIGITS_FILE) as data:
        images, labels = data["images"], data["labels"]
    # pixels are counts of "on" cells in 4x4 blocks: 0..16
    x = torch.from_numpy(images.astype(np.float32) / 16.0).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


class DigitsDataset(torch.utils.data.Dataset):
    """Digits as a dataset of (transform(image (1, 8, 8)), label) pairs; `targets` lists the labels."""

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
        if self.transform is not None:
            x = self.transform(x)
        return x, self.targets[index]


def split_digits(
    train_classes: Sequence[int] = DEFAULT_TRAIN_CLASSES, transform: Optional[Callable] = None,
    eval_transform: Optional[Callable] = None,
) -> tuple[DigitsDataset, DigitsDataset]:
    """(train, evaluation) datasets: the digits of `train_classes`, and those of all other classes.

    The evaluation classes are never seen in training, as in retrieval of unseen instances.
    """
    chosen = sorted({int(c) for c in train_classes})
    if not chosen or any(c < 0 or c > 9 for c in chosen) or len(chosen) == 10:
        raise ValueError(f"train_classes must be a non-empty proper subset of 0..9, got {list(train_classes)}")
    images, labels = load_digits()
    in_train = torch.isin(labels, torch.tensor(chosen))
    return (
        DigitsDataset(images[in_train], labels[in_train], transform),
        DigitsDataset(images[~in_train], labels[~in_train], eval_transform),
    )
