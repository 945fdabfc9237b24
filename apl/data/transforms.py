"""Image transforms written with torch ops on (C, H, W) float tensors in [0, 1] (no torchvision).

Random transforms draw from torch's global generator (seeded per DataLoader worker by torch), or
from `generator` when one is given.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .modes import HIGH_DEPTH_MODES, unit_array

Size = Union[int, Sequence[int]]


def to_tensor(image: Image.Image) -> torch.Tensor:
    """A Pillow image as a float (C, H, W) tensor in [0, 1]: C = 3 for "RGB", 1 for "L" and for the
    high-bit-depth greyscale modes ("I;16", "I", "F"), scaled as `apl.data.modes` says (16-bit by
    65535, not clipped at 255)."""
    if image.mode in HIGH_DEPTH_MODES:
        return torch.from_numpy(unit_array(image))[None]
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.dtype != np.uint8:
        raise ValueError(
            f"to_tensor: expected an 8-bit image (mode L or RGB) or one of the modes {', '.join(HIGH_DEPTH_MODES)}, "
            f"got mode {image.mode!r}"
        )
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def _check_image(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise ValueError(f"expected a (C, H, W) tensor, got {type(x).__name__} of shape {getattr(x, 'shape', None)}")


def _pair(size: Size) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    return int(h), int(w)


def _uniform(lo: float, hi: float, generator: Optional[torch.Generator]) -> float:
    return float(lo + (hi - lo) * torch.rand((), generator=generator))


class Compose:
    """Applies transforms in order."""

    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x


class ResizeMax:
    """Rescales so that the longer side is `max_side` (aspect ratio kept); bilinear, antialiased.

    With `upscale=False`, images already within `max_side` are left as they are.
    """

    def __init__(self, max_side: int, upscale: bool = True) -> None:
        if max_side < 1:
            raise ValueError(f"max_side must be >= 1, got {max_side}")
        self.max_side = max_side
        self.upscale = upscale

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(x)
        h, w = x.shape[1:]
        longest = max(h, w)
        if longest == self.max_side or (longest < self.max_side and not self.upscale):
            return x
        scale = self.max_side / longest
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=scale < 1)[0]


class Resize:
    """Rescales to exactly `size` (h, w) (or size x size); bilinear, antialiased when shrinking."""

    def __init__(self, size: Size) -> None:
        self.size = _pair(size)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(x)
        shrink = self.size[0] < x.shape[1] or self.size[1] < x.shape[2]
        return F.interpolate(x[None], size=self.size, mode="bilinear", align_corners=False, antialias=shrink)[0]


class RandomCrop:
    """A random `size` crop; a smaller image is first zero-padded (centred) up to `size`."""

    def __init__(self, size: Size, generator: Optional[torch.Generator] = None) -> None:
        self.size = _pair(size)
        self.generator = generator

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(x)
        th, tw = self.size
        h, w = x.shape[1:]
        if h < th or w < tw:
            ph, pw = max(0, th - h), max(0, tw - w)
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
            h, w = x.shape[1:]
        top = int(torch.randint(0, h - th + 1, (), generator=self.generator))
        left = int(torch.randint(0, w - tw + 1, (), generator=self.generator))
        return x[:, top : top + th, left : left + tw]


# The area fractions and aspect ratios (width / height) of the training crops.
TRAIN_SCALE = (0.35, 1.0)
TRAIN_RATIO = (3 / 4, 4 / 3)


class RandomResizedCrop:
    """A random region of the image, resized to `size` (bilinear, antialiased when shrinking).

    The region covers a fraction of the image's area drawn uniformly from `scale` and has an aspect
    ratio (width / height) drawn log-uniformly from `ratio` (so that 3/4 and 4/3 are as likely),
    at a uniformly random place. A draw that does not fit in the image is retried, `attempts`
    times at most; then the largest centred region whose aspect ratio is within `ratio` is taken.
    The region is never padded, so no black border is ever added.
    """

    def __init__(
        self, size: Size, scale: tuple[float, float] = TRAIN_SCALE, ratio: tuple[float, float] = TRAIN_RATIO,
        attempts: int = 10, generator: Optional[torch.Generator] = None,
    ) -> None:
        self.size = _pair(size)
        if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high <= 1 (area fractions), got {scale!r}")
        if len(ratio) != 2 or not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must be (low, high) with 0 < low <= high (width / height), got {ratio!r}")
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {attempts}")
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.attempts = attempts
        self.generator = generator

    def region(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, left, height, width) of a random region of a `height` x `width` image."""
        g = self.generator
        area = height * width
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(self.attempts):
            target = area * _uniform(*self.scale, g)
            aspect = math.exp(_uniform(log_lo, log_hi, g))
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, (), generator=g))
                left = int(torch.randint(0, width - w + 1, (), generator=g))
                return top, left, h, w
        # Fallback (a very elongated image): the whole image, narrowed to the nearest allowed ratio.
        h, w = height, width
        if width / height < self.ratio[0]:
            h = max(1, min(height, round(width / self.ratio[0])))
        elif width / height > self.ratio[1]:
            w = max(1, min(width, round(height * self.ratio[1])))
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(x)
        top, left, h, w = self.region(*x.shape[1:])
        x = x[:, top : top + h, left : left + w]
        shrink = self.size[0] < h or self.size[1] < w
        return F.interpolate(x[None], size=self.size, mode="bilinear", align_corners=False, antialias=shrink)[0]


class CenterCrop:
    """The central `size` crop (zero-padded first if the image is smaller)."""

    def __init__(self, size: Size) -> None:
        self.size = _pair(size)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(x)
        th, tw = self.size
        h, w = x.shape[1:]
        ph, pw = max(0, th - h), max(0, tw - w)
        if ph or pw:
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
            h, w = x.shape[1:]
        top, left = (h - th) // 2, (w - tw) // 2
        return x[:, top : top + th, left : left + tw]


class RandomHorizontalFlip:
    """Mirrors the image left-right with probability `p`."""

    def __init__(self, p: float = 0.5, generator: Optional[torch.Generator] = None) -> None:
        if not 0 <= p <= 1:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = p
        self.generator = generator

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(x)
        return x.flip(-1) if float(torch.rand((), generator=self.generator)) < self.p else x


class ColorJitter:
    """Random brightness, contrast and saturation factors, each drawn from [1 - v, 1 + v].

    Brightness scales the pixels, contrast blends with the mean grey level, saturation with the
    greyscale image (RGB only); the order is fixed and the result clamped to [0, 1].
    """

    def __init__(
        self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0,
        generator: Optional[torch.Generator] = None,
    ) -> None:
        for name, v in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if not 0 <= v <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation
        self.generator = generator

    @staticmethod
    def _grey(x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != 3:
            return x.mean(0, keepdim=True)
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device)
        return (x * weights[:, None, None]).sum(0, keepdim=True)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(x)
        g = self.generator
        if self.brightness:
            x = x * _uniform(1 - self.brightness, 1 + self.brightness, g)
        if self.contrast:
            f = _uniform(1 - self.contrast, 1 + self.contrast, g)
            x = f * x + (1 - f) * self._grey(x).mean()
        if self.saturation and x.shape[0] == 3:
            f = _uniform(1 - self.saturation, 1 + self.saturation, g)
            x = f * x + (1 - f) * self._grey(x)
        return x.clamp(0, 1)


class Normalize:
    """(x - mean) / std per channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]
        if bool((self.std <= 0).any()):
            raise ValueError(f"std must be positive, got {std}")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(x)
        if x.shape[0] != self.mean.shape[0]:
            raise ValueError(f"Normalize has {self.mean.shape[0]} channels, the image {x.shape[0]}")
        return (x - self.mean.to(x)) / self.std.to(x)


def train_transform(
    size: int, flip: bool = True, jitter: float = 0.2,
    generator: Optional[torch.Generator] = None, scale: tuple[float, float] = TRAIN_SCALE,
    ratio: tuple[float, float] = TRAIN_RATIO,
) -> Compose:
    """Random resized crop to `size` x `size`, then (with `flip`) a horizontal flip with probability
    1/2 and colour jitter of strength `jitter` (brightness, contrast, saturation; 0 for none).

    The crop covers 35% to 100% of the image's area (`scale`), with a width / height ratio from 3/4
    to 4/3 (`ratio`, log-uniform), anywhere in the image, and is resized with antialiased bilinear
    interpolation; it is taken from the whole image (never padded), so training sees no border
    that evaluation (`eval_transform`) does not. Random numbers come from `generator`, or torch's
    default generator, so a sample seeded with `torch.manual_seed` gets the same crop every time.
    """
    steps: list[Callable] = [RandomResizedCrop(size, scale, ratio, generator=generator)]
    if flip:
        steps.append(RandomHorizontalFlip(0.5, generator))
    if jitter:
        steps.append(ColorJitter(jitter, jitter, jitter, generator))
    return Compose(steps)


def eval_transform(max_side: int) -> Compose:
    """Resize to `max_side` only (evaluation images keep their aspect ratio)."""
    return Compose([ResizeMax(max_side)])
