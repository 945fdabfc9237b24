"""Small PNG datasets written on the fly for the training and CLI tests."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image


def write_class_folders(root: Path, classes: int = 3, per_class: int = 6,
                        sizes: Sequence[tuple[int, int]] = ((12, 12),), seed: int = 0) -> Path:
    """root/class<c>/<i>.png: images of each class are noisy copies of a class pattern; image i
    gets height x width sizes[i % len(sizes)] (so mixed shapes and aspect ratios when several)."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
        colour = rng.integers(0, 255, 3)
        for i in range(per_class):
            h, w = sizes[i % len(sizes)]
            stripes = (np.arange(w)[None, :, None] // max(1, w // (c + 2))) % 2
            img = colour * (0.5 + 0.5 * stripes) + rng.integers(-20, 20, (h, w, 3))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / f"class{c}" / f"{i}.png")
    return root
