"""The random distortions (torch), drawn per image from a generator seeded by (seed, class, index)."""
from __future__ import annotations

import hashlib
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .render import CHUNK, UPSAMPLE, Placed, compose

# distortion ranges (documented in `apl.data.glyphs`)
_ROTATION_DEG = 10.0
_SHEAR = 0.15
_SCALE = (0.9, 1.1)
_TRANSLATION = 0.08
_BLUR_SIGMA = 0.7
_NOISE_STD = 0.04
_MIN_PEAK = 0.1  # auto-contrast gains at most 1 / _MIN_PEAK


def _image_seed(seed: int, class_id: int, index: int) -> int:
    # a hash, not seed + offsets, so that images of nearby seeds and classes are unrelated
    digest = hashlib.blake2b(f"apl.glyphs:{seed}:{class_id}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _rank_filter(x: torch.Tensor, k: int, op: Callable) -> torch.Tensor:
    """Grey-scale k x k max (op=torch.maximum) or min (op=torch.minimum) filter of (B, 1, H, W),
    separable, by shifts (several times faster than max_pool2d); borders padded with 0."""
    r = k // 2
    h, w = x.shape[-2:]
    y = F.pad(x, (r, r, 0, 0))
    out = y[..., 0:w].clone()
    for i in range(1, k):
        op(out, y[..., i:i + w], out=out)
    y = F.pad(out, (0, 0, r, r))
    out = y[..., 0:h, :].clone()
    for i in range(1, k):
        op(out, y[..., i:i + h, :], out=out)
    return out


def _affine_grid(theta: torch.Tensor, side: int) -> torch.Tensor:
    """`F.affine_grid(theta, (B, 1, side, side), align_corners=False)`, computed by broadcasting
    (equal up to rounding, about 3x faster on CPU)."""
    b = theta.shape[0]
    lin = (2.0 * torch.arange(side, dtype=theta.dtype) + 1.0) / side - 1.0
    gx, gy = lin.view(1, 1, side), lin.view(1, side, 1)
    return torch.stack([
        theta[:, k, 0].view(b, 1, 1) * gx + theta[:, k, 1].view(b, 1, 1) * gy + theta[:, k, 2].view(b, 1, 1)
        for k in range(2)
    ], dim=-1)


def _distort(base: torch.Tensor, params: torch.Tensor, noise: torch.Tensor, size: int) -> torch.Tensor:
    """Distorted images (B, 1, size, size) in [0, 1] from 4x renders (B, 1, 4s, 4s), uniform draws
    `params` (B, 8) in [0, 1) and standard normal `noise` (B, 1, size, size)."""
    b = base.shape[0]
    u = params.to(base.dtype)
    # stroke thickness: blend towards an erosion (t < 0) or a dilation (t > 0)
    t = 2.0 * u[:, 0] - 1.0
    x = base.clone()
    for which, k, op in ((t < 0, 3, torch.minimum), (t > 0, 5, torch.maximum)):
        if bool(which.any()):
            y = base[which]
            x[which] = y + t[which].abs().view(-1, 1, 1, 1) * (_rank_filter(y, k, op) - y)
    # affine: output point q = scale * R(angle) * Shear * p + shift, so sample at p = M^-1 (q - shift)
    angle = torch.deg2rad((2.0 * u[:, 1] - 1.0) * _ROTATION_DEG)
    shear = (2.0 * u[:, 2] - 1.0) * _SHEAR
    scale = _SCALE[0] + (_SCALE[1] - _SCALE[0]) * u[:, 3]
    shift = (2.0 * u[:, 4:6] - 1.0) * (2.0 * _TRANSLATION)  # normalised coordinates span 2
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    shr = torch.eye(2, dtype=base.dtype).repeat(b, 1, 1)
    shr[:, 0, 1] = shear
    inverse = torch.linalg.inv(scale.view(b, 1, 1) * (rot @ shr))
    theta = torch.cat([inverse, -(inverse @ shift.unsqueeze(-1))], dim=2)
    grid = _affine_grid(theta, base.shape[-1])
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # down to the target size by area averaging
    x = F.avg_pool2d(x, UPSAMPLE)
    # blur: per-image 3x3 Gaussian (sigma 0 leaves the image unchanged)
    sigma = _BLUR_SIGMA * u[:, 6]
    d2 = torch.tensor([[2.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.0, 1.0, 2.0]], dtype=base.dtype)
    kernel = torch.exp(-d2 / (2.0 * sigma.view(b, 1, 1).clamp_min(1e-3) ** 2))
    kernel = (kernel / kernel.sum((1, 2), keepdim=True)).unsqueeze(1)
    x = F.conv2d(F.pad(x.transpose(0, 1), (1, 1, 1, 1)), kernel, groups=b).transpose(0, 1)
    # auto-contrast: the brightest pixel to 1 (thin strokes dimmed by erosion and blur stay visible)
    x = x / x.amax((1, 2, 3), keepdim=True).clamp_min(_MIN_PEAK)
    # noise
    std = _NOISE_STD * u[:, 7]
    x = x + std.view(b, 1, 1, 1) * noise
    return x.clamp(0.0, 1.0)


def distorted_images(
    placed: dict[tuple[int, int], Placed], sources: Sequence[Sequence[tuple[int, int]]],
    per_class: int, size: int, seed: int,
) -> torch.Tensor:
    """uint8 images (len(sources) * per_class, 1, size, size), class by class: image k of class c
    is the glyph `placed[sources[c][k % len(sources[c])]]` (placed at 4x size), distorted with a
    generator seeded from (seed, c, k)."""
    side = size * UPSAMPLE
    n = len(sources) * per_class
    images = torch.empty(n, 1, size, size, dtype=torch.uint8)
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        base, params, noise = [], [], []
        for j in range(start, stop):
            c, k = divmod(j, per_class)
            base.append(placed[sources[c][k % len(sources[c])]])
            g = torch.Generator().manual_seed(_image_seed(seed, c, k))
            params.append(torch.rand(8, generator=g))
            noise.append(torch.randn(1, size, size, generator=g))
        x = _distort(compose(base, side), torch.stack(params), torch.stack(noise), size)
        images[start:stop] = (x * 255.0).round_().to(torch.uint8)
    return images
