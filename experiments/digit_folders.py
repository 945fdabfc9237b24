"""The bundled UCI digits written as an image folder: RGB PNGs of mixed sizes (24-40 pixels a side),
tinted and noisy, one folder per digit. Real handwriting read through the image-folder path
(Pillow, random resized crops, RGB network input): the "other data" that the demo's glyphs are
checked against (experiments/head_check.py, tests/losses/test_baselines_folder.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from apl.data import load_digits


def write_digit_folders(root: str | Path, classes: Iterable[int], per_class: int = 40, seed: int = 0) -> Path:
    """root/digit<c>/<i>.png for the first `per_class` images of each digit in `classes`."""
    root = Path(root)
    images, labels = load_digits()
    rng = np.random.default_rng(seed)
    for c in classes:
        folder = root / f"digit{c}"
        folder.mkdir(parents=True)
        picks = (labels == c).nonzero().flatten()[:per_class]
        for i, k in enumerate(picks.tolist()):
            x = images[k, 0].numpy()
            x = (x - x.min()) / max(1e-6, float(x.max() - x.min()))
            size = (24 + 8 * (i % 3), 24 + 8 * ((i // 3) % 3))
            grey = np.asarray(Image.fromarray((x * 255).astype(np.uint8)).resize(size, Image.BILINEAR), dtype=np.float64)
            tint = rng.uniform(0.6, 1.0, 3)
            rgb = grey[..., None] * tint + rng.normal(0, 12, grey.shape + (3,))
            Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return root
