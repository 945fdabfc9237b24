"""What a run trains and evaluates on, in words, for `apl train` to print when it starts: images and
classes of each split, what a folder scan skipped, classes with a single image (never a query with
a positive), and the held-out images that are also training images.

Works with any dataset that has `targets` (a class per item): `ImageList` (files; classes named by
`classes`) and the in-memory `DigitsDataset` and `GlyphDataset` (an `images` tensor; classes named
by `classes` when the trainer sets it, else by their label). Nothing here reads an image file.
"""
from __future__ import annotations

import hashlib
import os
import statistics
from collections import Counter
from typing import Hashable, Optional

# Names listed in a line before "and N more".
_SHOW = 5


def _targets(dataset, argument: str) -> list[int]:
    targets = getattr(dataset, "targets", None)
    if targets is None:
        raise TypeError(
            f"{argument} must be a dataset with `targets` (one class per item), got {type(dataset).__name__}"
        )
    return [int(t) for t in targets]


def _class_name(dataset, target: int) -> str:
    classes = getattr(dataset, "classes", None)
    if classes is not None and 0 <= target < len(classes):
        return str(classes[target])
    return str(target)


def _plural(n: int, word: str, many: Optional[str] = None) -> str:
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def _listing(names: list[str]) -> str:
    more = f" and {len(names) - _SHOW} more" if len(names) > _SHOW else ""
    return ", ".join(names[:_SHOW]) + more


def single_image_classes(dataset) -> list[str]:
    """Names of the classes of `dataset` that have exactly one image, in class order."""
    counts = Counter(_targets(dataset, "dataset"))
    return [_class_name(dataset, t) for t in sorted(counts) if counts[t] == 1]


def describe_split(name: str, dataset) -> str:
    """One line on the split `dataset` called `name`, e.g. "training set: 1,204 images, 50 classes
    (2 to 40 images per class, median 24); 1 class with a single image (never a query with a
    positive): cat; 3 skipped (2 not an image file by its extension, 1 hidden)"."""
    targets = _targets(dataset, "dataset")
    counts = Counter(targets)
    parts = [f"{name}: {_plural(len(targets), 'image')}, {_plural(len(counts), 'class', 'classes')}"]
    if counts:
        sizes = sorted(counts.values())
        spread = (f"{sizes[0]:,} images per class" if sizes[0] == sizes[-1]
                  else f"{sizes[0]:,} to {sizes[-1]:,} images per class, median {statistics.median(sizes):g}")
        parts[0] += f" ({spread})"
    single = single_image_classes(dataset)
    if single:
        parts.append(f"{_plural(len(single), 'class', 'classes')} with a single image (never a query with a positive): "
                     + _listing(single))
    skipped = list(getattr(dataset, "skipped", None) or [])
    if skipped:
        reasons = Counter(getattr(s, "reason", "other") for s in skipped)
        parts.append(f"{len(skipped):,} skipped (" + ", ".join(f"{n:,} {r}" for r, n in reasons.most_common()) + ")")
    return "; ".join(parts)


def _keys(dataset) -> tuple[Optional[str], Optional[list[Hashable]]]:
    """("files", normalised absolute paths) of a file dataset, ("images", pixel hashes) of an
    in-memory one, (None, None) when there is nothing to compare."""
    root, paths = getattr(dataset, "root", None), getattr(dataset, "paths", None)
    if root is not None and paths is not None:
        # String operations only (no resolve() per file): fast for millions of files; links
        # inside the two trees are not followed.
        base = os.path.realpath(root)
        return "files", [os.path.normpath(os.path.join(base, p)) for p in paths]
    images = getattr(dataset, "images", None)
    if images is not None and hasattr(images, "shape") and hasattr(images, "numpy"):
        head = f"{images.dtype}{tuple(images.shape[1:])}".encode()
        return "images", [hashlib.blake2b(head + x.contiguous().numpy().tobytes(), digest_size=16).digest()
                          for x in images]
    return None, None


def _shared(train, held_out) -> tuple[Optional[str], Optional[int]]:
    kind, train_keys = _keys(train)
    held_kind, held_keys = _keys(held_out)
    if kind is None or kind != held_kind:
        return None, None
    seen = set(train_keys)
    return kind, sum(k in seen for k in held_keys)


def shared_items(train, held_out) -> Optional[int]:
    """How many items of `held_out` are also in `train`: the same file (file datasets) or the same
    pixels (in-memory datasets); None when the two cannot be compared."""
    return _shared(train, held_out)[1]


def compare_splits(train, held_out) -> list[str]:
    """Warnings about the pair of splits, each one line (none when all is well): held-out images
    that are also training images, held-out classes with a single image (queries without a
    positive, left out of the scores), and a training set without any class of two images."""
    warnings = []
    train_targets, held_targets = _targets(train, "train"), _targets(held_out, "held_out")
    kind, shared = _shared(train, held_out)
    if shared:
        files = kind == "files"
        if shared == len(held_targets) == len(train_targets):
            same = f"{len(held_targets):,} files" if files else f"{len(held_targets):,} images, pixel for pixel"
            warnings.append(f"the held-out set is the training set (the same {same}): its scores measure recall of "
                            "training images, not retrieval of unseen ones")
        else:
            verb = "is" if shared == 1 else "are"
            warnings.append(f"{shared:,} of the held-out set's {len(held_targets):,} images {verb} also in the "
                            f"training set (the same {'files' if files else 'pixels'}): their scores are optimistic")
    held_counts = Counter(held_targets)
    single = sum(n == 1 for n in held_counts.values())
    if held_counts and single == len(held_counts):
        warnings.append("every held-out class has a single image: no held-out query has a positive, so the held-out "
                        "scores are undefined")
    elif single:
        warnings.append(f"{_plural(single, 'held-out class', 'held-out classes')} with a single image: those queries "
                        "have no positive and are left out of the scores (they stay in the gallery)")
    if train_targets and all(n == 1 for n in Counter(train_targets).values()):
        warnings.append("every training class has a single image: no training query has a positive to learn from")
    return warnings
