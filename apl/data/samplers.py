"""Batch samplers for listwise training; pass one as `DataLoader(dataset, batch_sampler=...)`.

- `ClassBalancedBatchSampler`: P classes x K images (the default of `apl train`, `--sampler pk`);
- `ClassSpreadBatchSampler`: B images spread over all classes (`--sampler spread`);
- `RandomBatchSampler`: B images drawn uniformly from the whole set, whatever their class (the
  paper's batches on Landmarks-clean, `--sampler random`).

No sampler puts an image twice in a batch: a duplicate would be a trivial positive (score 1 with
itself), which the ranking losses would reward. All are deterministic under a seed: the batches of
an epoch depend only on (seed, epoch). Call `set_epoch(e)` before each epoch (as with
DistributedSampler) to get new batches, and to resume an interrupted run exactly. Labels are any
hashable values (ints, strings), one per dataset item.
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


def _check_count(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


class _EpochSampler(torch.utils.data.Sampler):
    def __init__(self, labels: Sequence, num_batches: int, seed: int) -> None:
        # tolist() turns tensor / NumPy labels into Python ints, which sort numerically
        labels = labels.tolist() if hasattr(labels, "tolist") else list(labels)
        self.classes = _group_by_class(labels)
        self.sizes = [int(c.numel()) for c in self.classes]
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

    def _draw(self, counts: dict[int, int], g: torch.Generator) -> list[torch.Tensor]:
        """`counts[c]` distinct images of each class c (in the dict's order)."""
        return [self.classes[c][torch.randperm(self.sizes[c], generator=g)[:k]] for c, k in counts.items()]

    def describe(self) -> str:
        """One line on what the sampler does with this data (said once when training starts)."""
        return ""


def _top_up(counts: dict[int, int], sizes: list[int], remaining: int) -> int:
    """Adds images to the classes already in a batch, in order, up to their sizes; returns what is
    still missing."""
    for c in counts:
        add = min(sizes[c] - counts[c], remaining)
        counts[c] += add
        remaining -= add
        if remaining == 0:
            break
    return remaining


class ClassBalancedBatchSampler(_EpochSampler):
    """Batches of P random classes x K random images of each, every image at most once per batch.

    Args:
        labels: one class label per dataset item.
        classes_per_batch: P, the classes drawn for a batch.
        samples_per_class: K >= 2, the images of each (two at least: a lone image has no positive).
        num_batches: batches per epoch (default: about one pass over the data, len(labels) // batch).
        seed: batches depend only on (seed, epoch).
        batch_size: the exact number of images of a batch (default P * K), split as evenly as possible
            over the P classes (K or K + 1 each when the batch is not a multiple of P).

    A class with fewer images than its share gives all of them (one fewer if that would leave a single
    slot in the batch), and the batch is filled from more classes (K images each, or all they have),
    then from spare images of the classes already in it. No class is left with a single image in a
    batch unless pairs cannot fill it (an odd batch of classes of two). Classes with a single image
    are never drawn: they cannot form a positive pair. `describe()` says how many classes are short
    of K.
    """

    def __init__(
        self, labels: Sequence, classes_per_batch: int, samples_per_class: int,
        num_batches: Optional[int] = None, seed: int = 0, batch_size: Optional[int] = None,
    ) -> None:
        _check_count("classes_per_batch", classes_per_batch, 1)
        _check_count("samples_per_class", samples_per_class, 2)
        if batch_size is not None:
            _check_count("batch_size", batch_size, 2)
            if batch_size < classes_per_batch:
                raise ValueError(f"batch_size must be at least classes_per_batch ({classes_per_batch}), got {batch_size}")
        self.batch_size = classes_per_batch * samples_per_class if batch_size is None else batch_size
        default = max(1, len(labels) // self.batch_size)
        super().__init__(labels, default if num_batches is None else num_batches, seed)
        self.eligible = [c for c, n in enumerate(self.sizes) if n >= 2]
        if len(self.eligible) < 2:
            raise ValueError(f"the labels need at least 2 classes of 2 or more images (a positive pair and a negative), "
                             f"got {len(self.eligible)} of {len(self.classes)} classes")
        if classes_per_batch > len(self.eligible):
            raise ValueError(f"classes_per_batch={classes_per_batch} but the labels have only {len(self.eligible)} classes "
                             "with two or more images")
        self.capacity = sum(self.sizes[c] for c in self.eligible)
        if self.batch_size > self.capacity:
            raise ValueError(f"batch_size={self.batch_size} but the classes with two or more images hold only "
                             f"{self.capacity} images (no image is drawn twice in a batch)")
        self.classes_per_batch = classes_per_batch
        self.samples_per_class = samples_per_class

    def counts(self) -> list[int]:
        """The share of each of the P classes of a batch (in the order they are drawn), before
        classes smaller than their share hand the rest on."""
        base, extra = divmod(self.batch_size, self.classes_per_batch)
        return [base + (1 if i < extra else 0) for i in range(self.classes_per_batch)]

    def batch_counts(self, g: torch.Generator) -> dict[int, int]:
        """Class -> images of one batch, drawn from `g`."""
        shares = self.counts()
        order = [self.eligible[int(i)] for i in torch.randperm(len(self.eligible), generator=g)]
        counts: dict[int, int] = {}
        remaining = self.batch_size
        for j, c in enumerate(order):
            want = shares[j] if j < len(shares) else self.samples_per_class
            take = min(want, self.sizes[c], remaining)
            if remaining - take == 1:  # never leave one slot: an image alone in its class has no positive
                if take < self.sizes[c]:
                    take += 1  # this class fills it
                elif take > 2:
                    take -= 1  # two slots for the next class
                else:
                    continue  # a class of two would leave one slot: the next class may fit
            counts[c] = take
            remaining -= take
            if remaining == 0:
                break
        remaining = _top_up(counts, self.sizes, remaining)
        for c in order:  # only when pairs cannot fill the batch (an odd batch of classes of two)
            if remaining == 0:
                break
            if c not in counts:
                counts[c] = min(self.sizes[c], remaining)
                remaining -= counts[c]
        return counts

    def __iter__(self) -> Iterator[list[int]]:
        g = self._generator()
        for _ in range(self.num_batches):
            yield torch.cat(self._draw(self.batch_counts(g), g)).tolist()

    def describe(self) -> str:
        k = self.samples_per_class
        short = [n for n in self.sizes if 2 <= n < k]
        lone = sum(n == 1 for n in self.sizes)
        parts = [f"P x K batches: {len(self.eligible)} classes with two or more images"]
        if short:
            parts.append(f"{len(short)} of them have fewer than K = {k} images ({min(short)}-{max(short)}): they give all "
                         "their images to a batch, which is filled from more classes")
        if lone:
            parts.append(f"{lone} class{'es' if lone > 1 else ''} with a single image {'are' if lone > 1 else 'is'} "
                         "never drawn (no positive pair)")
        return "; ".join(parts)


class ClassSpreadBatchSampler(_EpochSampler):
    """B random images spread over all classes, every image at most once per batch.

    Each batch takes floor(B / C) images from every one of the C classes and one more from
    B mod C random classes, so every class is in every batch when B >= C (with B < C, B random
    classes give one image each). A class smaller than its share gives all its images, and the
    rest goes to random classes with images to spare. This spreads the batch over the classes as
    the AP-loss paper's sampling of random images from each class does.
    """

    def __init__(self, labels: Sequence, batch_size: int, num_batches: Optional[int] = None, seed: int = 0) -> None:
        _check_count("batch_size", batch_size, 1)
        default = max(1, len(labels) // batch_size)
        super().__init__(labels, default if num_batches is None else num_batches, seed)
        if batch_size > len(labels):
            raise ValueError(f"batch_size={batch_size} but there are only {len(labels)} images (no image is drawn twice "
                             "in a batch)")
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[int]]:
        g = self._generator()
        c = len(self.classes)
        base, extra = divmod(self.batch_size, c)
        for _ in range(self.num_batches):
            share = torch.full((c,), base, dtype=torch.long)
            share[torch.randperm(c, generator=g)[:extra]] += 1
            counts = {i: min(int(k), self.sizes[i]) for i, k in enumerate(share.tolist()) if k > 0}
            remaining = self.batch_size - sum(counts.values())
            # Small classes gave all they have: spare images of random classes fill the batch.
            for i in (torch.randperm(c, generator=g).tolist() if remaining else ()):
                add = min(self.sizes[i] - counts.get(i, 0), remaining)
                if add > 0:
                    counts[i] = counts.get(i, 0) + add
                    remaining -= add
                if remaining == 0:
                    break
            batch = torch.cat(self._draw(counts, g))
            yield batch[torch.randperm(batch.numel(), generator=g)].tolist()

    def describe(self) -> str:
        lone = sum(n == 1 for n in self.sizes)
        return (f"spread batches: {self.batch_size} images over {len(self.classes)} classes"
                + (f"; {lone} class{'es' if lone > 1 else ''} with a single image give{'' if lone > 1 else 's'} queries "
                   "without a positive" if lone else ""))


class RandomBatchSampler(_EpochSampler):
    """B images drawn uniformly from the whole set, whatever their class (the paper's sampling on
    Landmarks-clean, whose classes range from a few images to hundreds).

    Each epoch is a new random order of all images, cut into consecutive batches, so no image is
    twice in a batch and none twice in an epoch of at most len(labels) // B batches (more batches
    continue with a new order). A batch then holds the classes in proportion to their sizes, and
    its queries of a class alone in it have no positive (left out of the loss); the class-balanced
    query weights (`class_balanced=True`) give every class of the batch the same weight.
    """

    def __init__(self, labels: Sequence, batch_size: int, num_batches: Optional[int] = None, seed: int = 0) -> None:
        _check_count("batch_size", batch_size, 1)
        n = len(labels)
        super().__init__(labels, max(1, n // batch_size) if num_batches is None else num_batches, seed)
        if batch_size > n:
            raise ValueError(f"batch_size={batch_size} but there are only {n} images (no image is drawn twice in a batch)")
        self.batch_size = batch_size
        self.n = n

    def __iter__(self) -> Iterator[list[int]]:
        g = self._generator()
        per_order = self.n // self.batch_size
        order = None
        for b in range(self.num_batches):
            if b % per_order == 0:
                order = torch.randperm(self.n, generator=g)
            lo = (b % per_order) * self.batch_size
            yield order[lo:lo + self.batch_size].tolist()

    def describe(self) -> str:
        return (f"uniform random batches: {self.batch_size} of {self.n} images, whatever their class "
                f"({len(self.classes)} classes of {min(self.sizes)}-{max(self.sizes)} images)")
