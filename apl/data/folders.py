"""Walking a folder of class folders, `root/<class>/.../<image>`: the class is the top-level folder
(as in torchvision's ImageFolder), images may sit in sub-folders of it at any depth.

Everything that is not taken is recorded with its reason instead of being printed: files that are
not images by extension, hidden files and folders (name starting with "."), files directly in
`root`, image names that are not regular files (broken links), and folder links that lead back to
a folder being walked (a loop; other links are followed).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple, Sequence, Union

PathLike = Union[str, os.PathLike]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

# The reasons of `Skipped.reason`.
NOT_IMAGE = "not an image file by its extension"
HIDDEN = "hidden"
OUTSIDE = "not in a class folder"
LINK_LOOP = "folder link loop"
NOT_FILE = "not a regular file (a broken link?)"


class Skipped(NamedTuple):
    """A file or folder left out: its path relative to the root, and why (one of this module's reasons)."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path} ({self.reason})"


class FolderScan(NamedTuple):
    """The images found (relative paths, in order) with their class names, the class folders that
    hold no image (relative paths), and what was skipped."""

    paths: list[str]
    labels: list[str]
    empty_classes: list[str]
    skipped: list[Skipped]


def _entries(folder: PathLike) -> list[os.DirEntry]:
    # os.scandir knows each entry's type without a stat call per file (millions of files).
    with os.scandir(folder) as it:
        return sorted(it, key=lambda e: e.name)


def _walk(folder: str, rel: str, exts: tuple[str, ...], ancestors: frozenset[str],
          images: list[str], skipped: list[Skipped]) -> None:
    """Adds the images under `folder` (`rel` from the root) to `images`, depth first, by name."""
    for entry in _entries(folder):
        path = os.path.join(rel, entry.name)
        if entry.name.startswith("."):
            skipped.append(Skipped(path, HIDDEN))
        elif entry.is_dir():
            real = os.path.realpath(entry.path)
            if real in ancestors:
                skipped.append(Skipped(path, LINK_LOOP))
            else:
                _walk(entry.path, path, exts, ancestors | {real}, images, skipped)
        elif os.path.splitext(entry.name)[1].lower() in exts:
            if entry.is_file():
                images.append(path)
            else:
                skipped.append(Skipped(path, NOT_FILE))
        else:
            skipped.append(Skipped(path, NOT_IMAGE))


def scan_class_folders(root: PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> FolderScan:
    """The images of `root/<class>/...`, classes in name order and each class's images sorted by
    name folder by folder (a deterministic order); raises when `root` is missing or has no class
    folder, but not for empty classes (see `FolderScan.empty_classes`)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    exts = tuple(e.lower() for e in extensions)
    paths: list[str] = []
    labels: list[str] = []
    empty: list[str] = []
    skipped: list[Skipped] = []
    classes = 0
    for entry in _entries(root):
        if entry.name.startswith("."):
            skipped.append(Skipped(entry.name, HIDDEN))
        elif not entry.is_dir():
            skipped.append(Skipped(entry.name, OUTSIDE))
        else:
            classes += 1
            found: list[str] = []
            ancestors = frozenset({os.path.realpath(root), os.path.realpath(entry.path)})
            _walk(entry.path, entry.name, exts, ancestors, found, skipped)
            if not found:
                empty.append(entry.name)
            paths += found
            labels += [entry.name] * len(found)
    if not classes:
        raise ValueError(f"no class sub-folders in {root} (expected root/<class>/<image>)")
    return FolderScan(paths, labels, empty, skipped)
