"""Batch samplers for listwise training; pass one as `DataLoader(dataset, batch_sampler=...)`.

Both are deterministic under a seed: the batches of an epoch depend only on (seed, epoch). Call
`set_epoch(e)` before each epoch (as with DistributedSampler) to get new batches, and to resume an
interrupted run exactly. Labels are any hashable values (ints, strings), one per dataset item.
"""
from __future__ import annotations

from typing import Iterator, Optional, Sequence

import torch


def _group_by_class(labels: Sequence) -> list[torch.Tensor]:
    groups: dict = {}
    for i, y in enumerate(labels):
        groups.setdefault(y, []).append(i)
    if not groups:
        raise ValueError("labels is empty")
    keys = sorted(groups, key=lambda k: (not isinstance(k, int), str(k) if not isinstance(k, int) else k))
    return [torch.tensor(groups[k], dtype=torch.long) for k in keys]


def _draw(members: torch.Tensor, count: int, g: torch.Generator) -> torch.Tensor:
    """`count` members, without replacement as far as the class allows, then with replacement."""
    n = members.numel()
    take = torch.randperm(n, generator=g)[: min(n, count)]
    if count > n:
        take = torch.cat([take, torch.randint(0, n, (count - n,), generator=g)])
    return members[take]


class _EpochSampler(torch.utils.data.Sampler):
    def __init__(self, labels: Sequence, num_batches: int, seed: int) -> None:
        # tolist() turns tensor / NumPy labels into Python ints, which sort numerically
        labels = labels.tolist() if hasattr(labels, "tolist") else list(labels)
        self.classes = _group_by_class(labels)
        if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
            raise ValueError(f"num_batches must be a positive int, got {num_batches!r}")
        self.num_batches = num_batches
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_batches

    def _generator(self) -> torch.Generator:
        # One stream per (seed, epoch); the large odd multiplier keeps nearby pairs apart.
        return torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) % (2**63))


class ClassBalancedBatchSampler(_EpochSampler):
    """Batches of P random classes x K random images of each (P * K indices per batch).

    Images of a class are drawn without replacement when it has at least K, else some repeat.
    With `batch_size`, a batch holds exactly that many images, split as evenly as possible over
    the P classes (K or K + 1 each, more for the first classes drawn): what `apl train` uses when the
    batch is not a multiple of K or has more room than the classes times K.
    `num_batches` defaults to about one pass over the data (len(labels) // batch, at least 1).
    """

    def __init__(
        self, labels: Sequence, classes_per_batch: int, samples_per_class: int,
        num_batches: Optional[int] = None, seed: int = 0, batch_size: Optional[int] = None,
    ) -> None:
        n = len(labels)
        if classes_per_batch < 1 or samples_per_class < 1:
            raise ValueError(f"classes_per_batch and samples_per_class must be >= 1, got {classes_per_batch}, {samples_per_class}")
        if batch_size is not None and not classes_per_batch <= batch_size:
            raise ValueError(f"batch_size must be at least classes_per_batch ({classes_per_batch}), got {batch_size}")
        self.batch_size = classes_per_batch * samples_per_class if batch_size is None else batch_size
        default = max(1, n // self.batch_size)
        super().__init__(labels, default if num_batches is None else num_batches, seed)
        if classes_per_batch > len(self.classes):
            raise ValueError(f"classes_per_batch={classes_per_batch} but the labels have only {len(self.classes)} classes")
        self.classes_per_batch = classes_per_batch
        self.samples_per_class = samples_per_class

    def counts(self) -> list[int]:
        """Images of each of the P classes of a batch (in the order they are drawn)."""
        base, extra = divmod(self.batch_size, self.classes_per_batch)
        return [base + (1 if i < extra else 0) for i in range(self.classes_per_batch)]

    def __iter__(self) -> Iterator[list[int]]:
        g = self._generator()
        counts = self.counts()
        for _ in range(self.num_batches):
            chosen = torch.randperm(len(self.classes), generator=g)[: self.classes_per_batch]
            batch = [_draw(self.classes[int(c)], k, g) for c, k in zip(chosen, counts)]
            yield torch.cat(batch).tolist()


class ClassSpreadBatchSampler(_EpochSampler):
    """The paper's batches: B random images spread over all classes.

    Each batch takes floor(B / C) images from every one of the C classes and one more from
    B mod C random classes, so every class is in every batch when B >= C (with B < C, B random
    classes give one image each). Within a class, images are drawn without replacement as far as
    it allows. This matches the AP-loss paper's sampling of random images from each class, which
    gives every query many positives and negatives in one large batch.
    """

    def __init__(self, labels: Sequence, batch_size: int, num_batches: Optional[int] = None, seed: int = 0) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        default = max(1, len(labels) // batch_size)
        super().__init__(labels, default if num_batches is None else num_batches, seed)
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[int]]:
        g = self._generator()
        c = len(self.classes)
        base, extra = divmod(self.batch_size, c)
        for _ in range(self.num_batches):
            counts = torch.full((c,), base, dtype=torch.long)
            counts[torch.randperm(c, generator=g)[:extra]] += 1
            batch = [_draw(members, int(k), g) for members, k in zip(self.classes, counts) if k > 0]
            order = torch.randperm(self.batch_size, generator=g)
            yield torch.cat(batch)[order].tolist()
