"""Image transforms written with torch ops on (C, H, W) float tensors in [0, 1] (no torchvision).

Random transforms draw from torch's global generator (seeded per DataLoader worker by torch), or
from `generator` when one is given.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

Size = Union[int, Sequence[int]]


def to_tensor(image: Image.Image) -> torch.Tensor:
    """A Pillow image as a float (C, H, W) tensor in [0, 1] (C = 1 for "L", 3 for "RGB")."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.dtype != np.uint8:
        raise ValueError(f"expected an 8-bit image (mode L or RGB), got mode {image.mode!r}")
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
    max_side: int, crop: int, flip: bool = True, jitter: float = 0.2, generator: Optional[torch.Generator] = None
) -> Compose:
    """Resize to `max_side`, random `crop` x `crop` crop, optional flip and colour jitter."""
    steps: list[Callable] = [ResizeMax(max_side), RandomCrop(crop, generator)]
    if flip:
        steps.append(RandomHorizontalFlip(0.5, generator))
    if jitter:
        steps.append(ColorJitter(jitter, jitter, jitter, generator))
    return Compose(steps)


def eval_transform(max_side: int) -> Compose:
    """Resize to `max_side` only (evaluation images keep their aspect ratio)."""
    return Compose([ResizeMax(max_side)])
