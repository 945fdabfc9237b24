"""Revisited Oxford / Paris (ROxford5k, RParis6k): ground-truth reader, query cropping, downloader.

Layout (the one the benchmark's tools create)::

    <root>/<name>/gnd_<name>.pkl     # name = "roxford5k" or "rparis6k"
    <root>/<name>/jpg/<image>.jpg

The pickle holds "imlist" (database image names, no extension), "qimlist" (query image names) and
"gnd": per query a dict with "easy", "hard", "junk" (0-based database indices) and "bbx" (the query
region x1, y1, x2, y2 in pixels). Queries are evaluated on their box only (`crop_query`).
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from PIL import Image

PathLike = Union[str, os.PathLike]
REVISITED_DATASETS = ("roxford5k", "rparis6k")
_GND_URL = "http://cmp.felk.cvut.cz/cnnimageretrieval/data/test/{name}/gnd_{name}.pkl"
_IMAGE_URLS = {
    "roxford5k": ["https://www.robots.ox.ac.uk/~vgg/data/oxbuildings/oxbuild_images.tgz"],
    "rparis6k": [
        "https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/paris_1.tgz",
        "https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/paris_2.tgz",
    ],
}


@dataclass
class RevisitedDataset:
    """The ground truth of a Revisited Oxford / Paris dataset and where its images are."""

    name: str
    image_dir: Path
    imlist: list[str]
    qimlist: list[str]
    gnd: list[dict] = field(repr=False)
    ext: str = ".jpg"

    def image_path(self, i: int) -> Path:
        return self.image_dir / (self.imlist[i] + self.ext)

    def query_path(self, i: int) -> Path:
        return self.image_dir / (self.qimlist[i] + self.ext)

    def query_box(self, i: int) -> tuple[float, float, float, float]:
        return tuple(float(v) for v in self.gnd[i]["bbx"])


def load_revisited(root: PathLike, name: Optional[str] = None) -> RevisitedDataset:
    """Read `gnd_<name>.pkl` from `root/<name>/` (or from `root` itself, or `root` may be the pickle)."""
    root = Path(root)
    if root.is_file():
        gnd_file = root
        name = name or root.stem.replace("gnd_", "")
    else:
        if name is None:
            found = [n for n in REVISITED_DATASETS if (root / f"gnd_{n}.pkl").is_file() or (root / n / f"gnd_{n}.pkl").is_file()]
            if len(found) != 1:
                raise FileNotFoundError(f"no single gnd_<name>.pkl under {root}; pass name= one of {REVISITED_DATASETS}")
            name = found[0]
        candidates = [root / name / f"gnd_{name}.pkl", root / f"gnd_{name}.pkl"]
        gnd_file = next((c for c in candidates if c.is_file()), None)
        if gnd_file is None:
            raise FileNotFoundError(f"ground truth not found: {candidates[0]} (or {candidates[1]})")
    try:
        with open(gnd_file, "rb") as f:
            cfg = pickle.load(f)
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError) as err:
        raise ValueError(f"cannot read ground-truth pickle {gnd_file}: {err}") from err
    missing = [k for k in ("imlist", "qimlist", "gnd") if not isinstance(cfg, dict) or k not in cfg]
    if missing:
        raise ValueError(f"{gnd_file} is not a Revisited Oxford/Paris ground truth: missing {missing}")
    if len(cfg["gnd"]) != len(cfg["qimlist"]):
        raise ValueError(f"{gnd_file}: {len(cfg['gnd'])} gnd entries but {len(cfg['qimlist'])} queries")
    for q, entry in enumerate(cfg["gnd"]):
        absent = [k for k in ("easy", "hard", "junk", "bbx") if k not in entry]
        if absent:
            raise ValueError(f"{gnd_file}: gnd[{q}] lacks {absent}")
    return RevisitedDataset(
        name=name,
        image_dir=gnd_file.parent / "jpg",
        imlist=list(cfg["imlist"]),
        qimlist=list(cfg["qimlist"]),
        gnd=list(cfg["gnd"]),
    )


def crop_query(image: Union[Image.Image, torch.Tensor], box: Sequence[float]):
    """The query region `box` = (x1, y1, x2, y2) of a Pillow image or a (C, H, W) tensor.

    Fractional coordinates are rounded outwards and the box is clipped to the image.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (x2 > x1 and y2 > y1):
        raise ValueError(f"query box must have x2 > x1 and y2 > y1, got {tuple(box)}")
    if isinstance(image, Image.Image):
        w, h = image.size
    else:
        h, w = image.shape[-2:]
    left, top = max(0, int(x1)), max(0, int(y1))
    right, bottom = min(w, -int(-x2 // 1)), min(h, -int(-y2 // 1))
    if right <= left or bottom <= top:
        raise ValueError(f"query box {tuple(box)} lies outside the {w}x{h} image")
    if isinstance(image, Image.Image):
        return image.crop((left, top, right, bottom))
    return image[..., top:bottom, left:right]


class RevisitedImages(torch.utils.data.Dataset):
    """The query crops (`queries=True`) or the database images of a Revisited dataset, as
    (transform(image (3, H, W)), index) items, for batched extraction with loader workers."""

    def __init__(self, dataset: RevisitedDataset, queries: bool, transform=None) -> None:
        self.dataset, self.queries, self.transform = dataset, queries, transform

    def __len__(self) -> int:
        return len(self.dataset.qimlist if self.queries else self.dataset.imlist)

    def path(self, i: int) -> Path:
        return self.dataset.query_path(i) if self.queries else self.dataset.image_path(i)

    def __getitem__(self, i: int):
        from .image_list import read_image
        from .transforms import to_tensor

        img = read_image(self.path(i))
        if self.queries:
            img = crop_query(img, self.dataset.query_box(i))
        x = to_tensor(img)
        return (self.transform(x) if self.transform is not None else x), i


def download_revisited(root: PathLike, name: str, images: bool = True) -> Path:
    """Download the ground truth (and, with `images`, the photos) of `name` into `root/<name>/`.

    Needs internet access and about 2 GB per dataset; nothing in apl calls this implicitly.
    Existing files are kept. Returns the dataset folder.
    """
    import tarfile
    import urllib.request

    if name not in REVISITED_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(REVISITED_DATASETS)}")
    folder = Path(root) / name
    image_dir = folder / "jpg"
    image_dir.mkdir(parents=True, exist_ok=True)
    gnd_file = folder / f"gnd_{name}.pkl"
    if not gnd_file.is_file():
        urllib.request.urlretrieve(_GND_URL.format(name=name), gnd_file)
    if images and not any(image_dir.glob("*.jpg")):
        for url in _IMAGE_URLS[name]:
            archive = folder / url.rsplit("/", 1)[1]
            if not archive.is_file():
                urllib.request.urlretrieve(url, archive)
            with tarfile.open(archive) as tar:
                # flatten the archive's sub-folders into jpg/, refusing anything but plain files
                for member in tar.getmembers():
                    if member.isfile() and member.name.lower().endswith(".jpg"):
                        member.name = os.path.basename(member.name)
                        # the "data" filter (where this Python has it) also refuses odd permissions
                        extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                        tar.extract(member, image_dir, **extra)
            archive.unlink()
    return folder
