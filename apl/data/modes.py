"""Pillow image modes: scaling any decoded image to [0, 1], converting it to "L" or "RGB", and the
note `apl check-images` prints for modes whose conversion changes or loses something.

Pillow's own `convert` clips the high-bit-depth modes to 0..255 (a 16-bit PNG comes out almost all
white), so those are scaled here first:

- "I;16", "I;16B", "I;16L", "I;16N" (16-bit greyscale): divided by 65535;
- "I" (32-bit signed integers; Pillow also opens some 16-bit files in this mode): negative values
  count as 0; an image whose values all fit in 0..65535 is 16-bit data and is divided by 65535,
  any other is divided by its own largest value (there is no common scale beyond 16 bits);
- "F" (32-bit floats): taken as they are, clamped to [0, 1] (NaN counts as 0).

Every other mode is 8 bits per channel and goes through Pillow's `convert`.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from PIL import Image

# Modes whose values are not 0..255; their pixels are scaled by `unit_array`.
HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_16_BIT_MAX = 65535
# Modes converted without losing anything but colour (to "L") or bit depth of a bilevel image.
_PLAIN_MODES = ("1", "L", "P", "RGB")


def has_transparency(image: Image.Image) -> bool:
    """Whether `image` carries an alpha channel or a transparent palette entry / colour."""
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return True
    return "transparency" in image.info


def unit_array(image: Image.Image) -> np.ndarray:
    """The pixels of a single-channel high-bit-depth image ("I;16*", "I", "F") as float32 (H, W)
    in [0, 1], scaled by the rules of this module's docstring."""
    if image.mode not in HIGH_DEPTH_MODES:
        raise ValueError(f"unit_array: expected one of the modes {', '.join(HIGH_DEPTH_MODES)}, got {image.mode!r}")
    arr = np.asarray(image)
    if image.mode == "F":
        return np.clip(np.nan_to_num(arr.astype(np.float32), nan=0.0), 0.0, 1.0)
    arr = np.maximum(arr.astype(np.float64), 0.0)  # int64-safe: "I" holds signed 32-bit values
    top = float(arr.max()) if arr.size else 0.0
    scale = _16_BIT_MAX if image.mode != "I" or top <= _16_BIT_MAX else top
    return (arr / scale).astype(np.float32)


def convert_image(image: Image.Image, mode: str) -> Image.Image:
    """`image` converted to the 8-bit `mode` ("L" or "RGB"); high-bit-depth images are scaled to
    [0, 1] first (`unit_array`) and then rounded to 8 bits, instead of being clipped by Pillow."""
    if image.mode not in HIGH_DEPTH_MODES:
        return image.convert(mode)
    grey = Image.fromarray(np.rint(unit_array(image) * 255).astype(np.uint8))  # 2-D uint8: "L"
    return grey.convert(mode)


def conversion_note(image: Image.Image, mode: str) -> Optional[str]:
    """What converting `image` to `mode` changes beyond the usual (colour to grey, palette to
    colours), in words; None for the plain 8-bit modes."""
    m = image.mode
    if m.startswith("I;16"):
        return f"16-bit greyscale (mode {m}): scaled to [0, 1] by 65535 and read with 8 bits"
    if m == "I":
        low, high = image.getextrema()
        if low >= 0 and high <= _16_BIT_MAX:
            return "32-bit integer greyscale (mode I) holding 16-bit values: scaled by 65535 and read with 8 bits"
        clip = ", negative values read as 0" if low < 0 else ""
        return f"32-bit integer greyscale (mode I), values {low}..{high}: scaled by its own maximum{clip}"
    if m == "F":
        low, high = image.getextrema()
        clamp = f", values {low:g}..{high:g} clamped to [0, 1]" if low < 0 or high > 1 else ""
        return f"32-bit float greyscale (mode F): read with 8 bits{clamp}"
    if has_transparency(image):
        return f"transparency (mode {m}) dropped: transparent pixels show their stored colour"
    if m == "CMYK":
        return f"CMYK converted to {mode} by Pillow's plain formula (no colour profile): colours are approximate"
    if m not in _PLAIN_MODES:
        return f"mode {m} converted to {mode}"
    return None
