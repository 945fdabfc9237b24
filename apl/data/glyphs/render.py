"""FreeType drawing of one glyph, its placement on a canvas at 4x the target size, and composition
of placed glyphs into float images (layout described in `apl.data.glyphs`)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from matplotlib import ft2font
from matplotlib.ft2font import FT2Font

UPSAMPLE = 4
"""Glyphs are drawn at this multiple of the target size, then area-averaged down."""

CHUNK = 256
"""Images composed (and distorted) per batch: bounds memory (256 x 128 x 128 floats = 16 MiB)."""

_EM = 0.6  # font size (em) as a fraction of the image side
_BASELINE = 0.5 + 0.26 * _EM  # baseline row, from the top, as a fraction of the side
_SAFE = 0.15  # undistorted ink is kept this far (fraction of the side) from every edge

Placed = tuple
"""A placed glyph: (bitmap uint8 (h, w) cropped to the ink, row, col of its top-left corner on the canvas)."""


def _draw(font: FT2Font, char: str, em: float) -> tuple[np.ndarray, float]:
    """(bitmap (h, w) uint8 cropped to the ink, height of its top above the baseline) at `em` pixels."""
    font.set_size(em, 72)  # at 72 dpi the size is in pixels
    font.set_text(char, 0.0, flags=ft2font.LoadFlags.NO_HINTING)
    # the bitmap spans the outline's bounding box: its first row is `height - descent` above the baseline
    top = (font.get_width_height()[1] - font.get_descent()) / 64.0
    font.draw_glyphs_to_bitmap(antialiased=True)
    image = np.asarray(font.get_image())
    rows = np.flatnonzero(image.any(axis=1))
    if rows.size == 0:
        return np.zeros((0, 0), np.uint8), 0.0
    cols = np.flatnonzero(image.any(axis=0))
    # ink rows below the bitmap's first one lower the top accordingly
    return image[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1], top - rows[0]


def _place(font: FT2Font, char: str, side: int) -> Placed:
    """The undistorted glyph laid out on a side x side canvas (see `apl.data.glyphs`)."""
    em = _EM * side
    bitmap, top = _draw(font, char, em)
    safe = (1.0 - 2.0 * _SAFE) * side
    h, w = bitmap.shape
    if h > safe or w > safe:  # too large for the layout: draw smaller, never larger
        bitmap, top = _draw(font, char, em * 0.98 * min(safe / h, safe / w))
        h, w = bitmap.shape
    lo, hi = round(_SAFE * side), round((1.0 - _SAFE) * side)
    row = min(max(round(_BASELINE * side - top), lo), max(hi - h, lo))  # keep the ink in the safe area
    col = max((side - w) // 2, 0)
    return bitmap[:side - row, :side - col], row, col


def place_all(fonts: list[FT2Font], chars: Sequence[str], side: int) -> dict[tuple[int, int], Placed]:
    """{(face index, char index): placed glyph on a side x side canvas} for each face that has the char."""
    out = {}
    for f, font in enumerate(fonts):
        for i, c in enumerate(chars):
            if font.get_char_index(ord(c)) != 0:
                out[f, i] = _place(font, c, side)
    return out


def compose(placed: Sequence[Placed], side: int) -> torch.Tensor:
    """The placed glyphs as float32 images (B, 1, side, side) in [0, 1]."""
    canvas = np.zeros((len(placed), 1, side, side), np.float32)
    for k, (bitmap, row, col) in enumerate(placed):
        h, w = bitmap.shape
        canvas[k, 0, row:row + h, col:col + w] = bitmap
    return torch.from_numpy(canvas).mul_(1.0 / 255.0)
