"""ImageList: labelled images from a list file (the Landmarks-clean form) or per-class folders.

List file: one image per line, "<relative path> <label>" (whitespace or a comma between them; the
path may itself contain spaces, the label is the last field). Labels are ints or strings; blank
lines and lines starting with "#" are skipped. Classes are the distinct labels, sorted (numerically
when all are ints), and `targets` holds each image's class index 0..C-1.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch
from PIL import Image, UnidentifiedImageError

from .folders import IMAGE_EXTENSIONS, Skipped, scan_class_folders
from .modes import conversion_note, convert_image
from .transforms import to_tensor

PathLike = Union[str, os.PathLike]
_LINE = re.compile(r"^(.*\S)[\s,]+(\S+)$")


class CorruptImageError(ValueError):
    """An image file exists but Pillow cannot decode it."""


def open_image(path: PathLike, source: Optional[str] = None) -> Image.Image:
    """Open and decode an image with Pillow, in the mode of the file; errors name the file (and `source`)."""
    where = f" ({source})" if source else ""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path}{where}")
    try:
        with Image.open(path) as img:
            img.load()  # decode now, so a truncated file fails here and not later
            return img
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise CorruptImageError(f"corrupt or unreadable image: {path}{where}: {err}") from err


def decode_image(path: PathLike, mode: str = "RGB", source: Optional[str] = None) -> tuple[Image.Image, Optional[str]]:
    """(the image converted to `mode`, what the conversion changed beyond the usual or None): see
    `read_image` and `apl.data.modes.conversion_note`."""
    img = open_image(path, source)
    try:
        return convert_image(img, mode), conversion_note(img, mode)
    except ValueError as err:  # a mode Pillow cannot convert
        where = f" ({source})" if source else ""
        raise CorruptImageError(f"corrupt or unreadable image: {path}{where}: {err}") from err


def read_image(path: PathLike, mode: str = "RGB", source: Optional[str] = None) -> Image.Image:
    """Open and decode an image with Pillow, converted to `mode`; errors name the file (and `source`).

    16-bit, 32-bit integer and float images are scaled to [0, 1] (`apl.data.modes`) and then read
    with 8 bits, instead of being clipped at 255 by Pillow.
    """
    return decode_image(path, mode, source)[0]


def _parse_label(text: str) -> Union[int, str]:
    try:
        return int(text)
    except ValueError:
        return text


def read_image_list(list_file: PathLike, suffix: str = "") -> tuple[list[str], list, list[int]]:
    """(relative paths + `suffix`, labels, line numbers) of a list file."""
    list_file = Path(list_file)
    if not list_file.is_file():
        raise FileNotFoundError(f"image list not found: {list_file}")
    paths, labels, lines = [], [], []
    with open(list_file, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                # utf-8-sig on the first line: a byte-order mark (written by some Windows editors) is not
                # part of the first path
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8").strip()
            except UnicodeDecodeError:
                raise ValueError(f"{list_file}, line {lineno}: not UTF-8 text (is this an image list?)") from None
            if not line or line.startswith("#"):
                continue
            m = _LINE.match(line)
            if m is None:
                raise ValueError(
                    f"{list_file}, line {lineno}: malformed line {line!r}; expected '<relative image path> <label>'"
                )
            paths.append(m.group(1) + suffix)
            labels.append(_parse_label(m.group(2)))
            lines.append(lineno)
    if not paths:
        raise ValueError(f"image list {list_file} has no images")
    return paths, labels, lines


def _sorted_classes(labels: Sequence) -> list:
    unique = set(labels)
    if all(isinstance(v, int) for v in unique):
        return sorted(unique)
    return sorted(unique, key=str)


class ImageList(torch.utils.data.Dataset):
    """Images `root/paths[i]` with labels; item i is (transform(image tensor), class index).

    Images are read with Pillow in `mode` ("RGB" or "L") and turned into float (C, H, W) tensors in
    [0, 1] before `transform`. Files are only opened when an item is read; `check_files` checks
    them all up front. `skipped` lists what `from_folders` left out (files that are not images,
    hidden ones), each with its reason; it is empty for a list file.
    """

    def __init__(
        self,
        root: PathLike,
        paths: Sequence[str],
        labels: Sequence,
        transform: Optional[Callable] = None,
        mode: str = "RGB",
        sources: Optional[Sequence[str]] = None,
        skipped: Sequence[Skipped] = (),
    ) -> None:
        if len(paths) != len(labels):
            raise ValueError(f"got {len(paths)} paths but {len(labels)} labels")
        if not paths:
            raise ValueError("an ImageList needs at least one image")
        if mode not in ("RGB", "L"):
            raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
        self.root = Path(root)
        self.paths = list(paths)
        self.labels = list(labels)
        self.classes = _sorted_classes(self.labels)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.targets = [self.class_to_idx[v] for v in self.labels]
        self.transform = transform
        self.mode = mode
        self.sources = list(sources) if sources is not None else None
        self.skipped = list(skipped)

    @classmethod
    def from_list_file(
        cls,
        list_file: PathLike,
        root: Optional[PathLike] = None,
        transform: Optional[Callable] = None,
        mode: str = "RGB",
        suffix: str = "",
    ) -> "ImageList":
        """From a list file; paths are relative to `root` (default: the list file's folder)."""
        paths, labels, lines = read_image_list(list_file, suffix)
        root = Path(list_file).parent if root is None else root
        sources = [f"{list_file}, line {n}" for n in lines]
        return cls(root, paths, labels, transform, mode, sources)

    @classmethod
    def from_folders(
        cls,
        root: PathLike,
        transform: Optional[Callable] = None,
        mode: str = "RGB",
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
    ) -> "ImageList":
        """From `root/<class name>/.../<image>`: one folder per class, named by its label; images
        may sit in sub-folders of it (`apl.data.folders` says the order and what is skipped, and
        the skipped files are in `skipped`). Raises when a class folder holds no image."""
        scan = scan_class_folders(root, extensions)
        if scan.empty_classes:
            exts = ", ".join(e.lower() for e in extensions)
            folders = [str(Path(root) / c) for c in scan.empty_classes]
            what = (f"folder {folders[0]} has" if len(folders) == 1
                    else f"{len(folders)} folders have")
            listing = "" if len(folders) == 1 else ":\n  " + "\n  ".join(folders)
            raise ValueError(f"empty class: {what} no image files ({exts}), not even in sub-folders{listing}")
        labels = [_parse_label(c) for c in scan.labels]
        return cls(root, scan.paths, labels, transform, mode, skipped=scan.skipped)

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, index: int) -> Path:
        return self.root / self.paths[index]

    def load(self, index: int) -> Image.Image:
        """The Pillow image of item `index` (before any transform)."""
        source = self.sources[index] if self.sources is not None else None
        return read_image(self.path(index), self.mode, source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = to_tensor(self.load(index))
        if self.transform is not None:
            x = self.transform(x)
        return x, self.targets[index]

    def missing_files(self) -> list[str]:
        """Every listed image that does not exist, as "path (list file, line n)" strings."""
        out = []
        for i in range(len(self)):
            if not self.path(i).is_file():
                where = f" ({self.sources[i]})" if self.sources is not None else ""
                out.append(f"{self.path(i)}{where}")
        return out

    def check_files(self, show: int = 20) -> None:
        """Raise FileNotFoundError listing every listed image that does not exist (the first
        `show` of them by name, and how many in all)."""
        missing = self.missing_files()
        if missing:
            more = f"\n  ... and {len(missing) - show} more" if len(missing) > show else ""
            raise FileNotFoundError(
                f"{len(missing)} of {len(self)} listed image files not found:\n  " + "\n  ".join(missing[:show]) + more
            )
