"""The on-disk cache of generated sets: directory, file name (key), atomic write and checked read."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Optional, Union

import matplotlib
import numpy as np
import torch
from matplotlib import ft2font

from .dataset import GlyphSet, check_params, make_glyphs

FORMAT_VERSION = 1
"""Version of the generated data and of its cache file; bump it when the images change (any change
to the characters, rendering, classes or distortions)."""


def default_cache_dir() -> Path:
    """$APL_CACHE_DIR, else $XDG_CACHE_HOME/apl, else ~/.cache/apl."""
    if os.environ.get("APL_CACHE_DIR"):
        return Path(os.environ["APL_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "apl"
    return Path.home() / ".cache" / "apl"


def _cache_key(size: int, per_class: int, seed: int) -> str:
    key = {
        "format": FORMAT_VERSION, "size": size, "per_class": per_class, "seed": seed,
        "matplotlib": matplotlib.__version__, "freetype": ft2font.__freetype_version__,
        "torch": torch.__version__.split("+")[0],  # the distortions are computed by torch
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def glyphs_cache_path(
    size: int = 32, per_class: int = 16, seed: int = 0, cache_dir: Union[str, os.PathLike, None] = None,
) -> Path:
    """Where `load_glyphs` keeps the set for these parameters."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / f"glyphs-s{size}-n{per_class}-seed{seed}-{_cache_key(size, per_class, seed)}.npz"


def _write(glyphs: GlyphSet, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # write a temporary file and rename it, so that readers never see a partial file
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(
                f, format=np.int64(FORMAT_VERSION), images=glyphs.images.numpy(), labels=glyphs.labels.numpy(),
                class_names=np.array(glyphs.class_names, dtype=np.str_),
                train_classes=np.array(glyphs.train_classes, dtype=np.int64),
                unseen_classes=np.array(glyphs.unseen_classes, dtype=np.int64),
                params=np.array([glyphs.size, glyphs.per_class, glyphs.seed], dtype=np.int64),
            )
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _read(path: Path, size: int, per_class: int, seed: int) -> Optional[GlyphSet]:
    """The cached set, or None when the file is missing, unreadable or inconsistent."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if int(data["format"]) != FORMAT_VERSION or data["params"].tolist() != [size, per_class, seed]:
                return None
            images, labels = data["images"], data["labels"]
            names = [str(s) for s in data["class_names"].tolist()]
            train, unseen = tuple(data["train_classes"].tolist()), tuple(data["unseen_classes"].tolist())
    except Exception:  # noqa: BLE001  (whatever a damaged file raises, it is regenerated)
        return None
    n = len(names) * per_class
    if (
        images.dtype != np.uint8 or images.shape != (n, 1, size, size) or labels.dtype != np.int64
        or labels.shape != (n,) or sorted(train + unseen) != list(range(len(names)))
    ):
        return None
    return GlyphSet(
        images=torch.from_numpy(images), labels=torch.from_numpy(labels), class_names=names,
        train_classes=train, unseen_classes=unseen, size=size, per_class=per_class, seed=seed,
    )


def load_glyphs(
    size: int = 32, per_class: int = 16, seed: int = 0, cache_dir: Union[str, os.PathLike, None] = None,
) -> GlyphSet:
    """`make_glyphs(size, per_class, seed)`, cached as an .npz file in `cache_dir` (default:
    `default_cache_dir()`), named from the parameters, `FORMAT_VERSION` and the matplotlib,
    FreeType and torch versions. The file is written atomically; a corrupt or inconsistent file
    is regenerated; a cache that cannot be written only warns."""
    check_params(size, per_class, seed)
    path = glyphs_cache_path(size, per_class, seed, cache_dir)
    if path.is_file():
        cached = _read(path, int(size), int(per_class), int(seed))
        if cached is not None:
            return cached
    glyphs = make_glyphs(size, per_class, seed)
    try:
        _write(glyphs, path)
    except OSError as e:
        warnings.warn(f"could not write the glyph cache {path}: {e}", RuntimeWarning, stacklevel=2)
    return glyphs
