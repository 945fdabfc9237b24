"""Finding every problem of a dataset before a long run, decoding in parallel: missing and corrupt
images and empty class folders (problems), images in unusual modes whose conversion changes them
(warnings: 16-bit, float, transparency, CMYK; see `apl.data.modes`), and what was skipped."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import torch

from .folders import scan_class_folders
from .image_list import ImageList, decode_image

PathLike = Union[str, os.PathLike]


def _plural(n: int, word: str, many: Optional[str] = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"


@dataclass
class CheckReport:
    """What `check_images` / `check_dataset` found. `bad` (missing or undecodable files, in list
    order) and `empty_classes` are problems; `warnings` and `skipped` are not."""

    checked: int = 0
    bad: list[str] = field(default_factory=list)
    missing: int = 0
    empty_classes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """Every problem: the bad files, then the empty class folders."""
        empty = [f"empty class folder: {f} (no image files, not even in sub-folders)" for f in self.empty_classes]
        return self.bad + empty

    def summary(self) -> str:
        """One line of counts, e.g. "18 images checked, 2 bad (1 missing, 1 unreadable), 1 warning,
        0 skipped" (empty class folders counted only when there are some)."""
        kinds = ((self.missing, "missing"), (len(self.bad) - self.missing, "unreadable"))
        detail = ", ".join(f"{n} {kind}" for n, kind in kinds if n)
        parts = [f"{_plural(self.checked, 'image')} checked", f"{len(self.bad)} bad" + (f" ({detail})" if detail else "")]
        if self.empty_classes:
            parts.append(_plural(len(self.empty_classes), "empty class folder"))
        parts += [_plural(len(self.warnings), "warning"), f"{len(self.skipped)} skipped"]
        return ", ".join(parts)


class _Decode(torch.utils.data.Dataset):
    """Item i: (kind, message) with kind "missing", "corrupt", "warning" or "" (nothing to say)."""

    def __init__(self, images: ImageList) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[str, str]:
        source = self.images.sources[i] if self.images.sources is not None else None
        path = self.images.path(i)
        try:
            _, note = decode_image(path, self.images.mode, source)
        except FileNotFoundError as err:
            return "missing", str(err)
        except ValueError as err:  # CorruptImageError is a ValueError
            return "corrupt", str(err)
        if note:
            return "warning", f"{path}" + (f" ({source})" if source else "") + f": {note}"
        return "", ""


def check_images(images: ImageList, workers: Optional[int] = None, progress: bool = False) -> CheckReport:
    """Decodes every image of `images` (with `workers` processes; default: one per CPU core) and
    reports every missing, undecodable or unusual one (in list order) and `images.skipped`."""
    workers = max(0, (os.cpu_count() or 1)) if workers is None else workers
    if workers < 0:
        raise ValueError(f"--workers must be >= 0, got {workers}")
    loader = torch.utils.data.DataLoader(_Decode(images), batch_size=16, num_workers=workers, collate_fn=list,
                                         generator=torch.Generator())
    if progress:
        from tqdm import tqdm

        loader = tqdm(loader, desc="decode", unit="batch", leave=False)
    report = CheckReport(checked=len(images), skipped=[str(s) for s in images.skipped])
    for batch in loader:
        for kind, message in batch:
            if kind == "warning":
                report.warnings.append(message)
            elif kind:
                report.bad.append(message)
                report.missing += kind == "missing"
    return report


def check_dataset(path: PathLike, root: Optional[PathLike] = None, mode: str = "RGB", workers: Optional[int] = None,
                  progress: bool = False) -> CheckReport:
    """`check_images` of a folder of class folders (then also its empty class folders, which do not
    stop the check) or of an image-list file (paths relative to `root`, default: its folder)."""
    path = Path(path)
    if path.is_dir():
        scan = scan_class_folders(path)
        if not scan.paths:  # every class folder empty: nothing to decode
            report = CheckReport(skipped=[str(s) for s in scan.skipped])
        else:
            images = ImageList(path, scan.paths, scan.labels, mode=mode, skipped=scan.skipped)
            report = check_images(images, workers, progress)
        report.empty_classes = [str(path / c) for c in scan.empty_classes]
        return report
    if path.is_file():
        return check_images(ImageList.from_list_file(path, root=root, mode=mode), workers, progress)
    raise FileNotFoundError(f"not found: {path} (expected an image-list file or a folder of class folders)")


def find_bad_images(images: ImageList, workers: Optional[int] = None, progress: bool = False) -> list[str]:
    """Decodes every image of `images` (with `workers` processes; default: one per CPU core) and
    returns one message per missing or undecodable file, in list order (`check_images` says more)."""
    return check_images(images, workers, progress).bad
