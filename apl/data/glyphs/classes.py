"""Visual classes: look-alike characters merged automatically (union-find over blurred renders)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.ft2font import FT2Font

from .characters import kept_characters, open_fonts
from .render import CHUNK, UPSAMPLE, Placed, compose, place_all

MERGE_SIZE = 32
"""Side of the undistorted renders compared to merge look-alike characters (fixed, so that the
classes are the same for every image size)."""

MERGE_BLUR = 1.0
"""Standard deviation (in MERGE_SIZE pixels) of the Gaussian blur applied before comparing."""

MERGE_THRESHOLD = 0.2
"""Two characters are merged when, in every face that has both (at least one), the largest
absolute pixel difference of their undistorted MERGE_SIZE renders, blurred by MERGE_BLUR, is at
most this (pixels in [0, 1]); classes are the connected groups (union-find).

Why this measure: the faces draw some homoglyphs slightly differently (STIX's Cyrillic is a few
percent wider than its Latin), which spreads small differences along every edge; the blur
averages those out (a sub-pixel shift gives adjacent differences of opposite signs), while a
stroke, bar, dot or tail present in one glyph only stays a concentrated blob. A mean absolute
difference cannot separate the two: the worst face of Latin y / Cyrillic у differs more than
A / Λ (one crossbar) or a smiling / frowning face.

Why 0.2 (measured with matplotlib 3.11, FreeType 2.14, see `merge_report()`): within the merged
Latin / Greek / Cyrillic homoglyph groups every pair is at most 0.15 apart (x / х and y / у, Γ / Г
in STIX; most pairs are below 0.1, those sharing an outline 0), while the closest pairs left apart
are micro sign / mu (0.28, their tails differ in DejaVu Serif), then − / ~, = / ≃, + / ÷, n / п
(0.33 to 0.35); 0.2 sits in that gap with margin on both sides."""

_MERGE_SIDE = MERGE_SIZE * UPSAMPLE  # canvas side of the renders that are averaged down to MERGE_SIZE


def _merge_images(placed: dict[tuple[int, int], Placed], side: int) -> dict[tuple[int, int], torch.Tensor]:
    """{(face, char): the undistorted glyph at MERGE_SIZE, blurred (sigma MERGE_BLUR), (S, S)}."""
    keys = list(placed)
    radius = int(np.ceil(3 * MERGE_BLUR))
    g = torch.exp(-torch.arange(-radius, radius + 1, dtype=torch.float32) ** 2 / (2 * MERGE_BLUR ** 2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :])[None, None]
    out = {}
    for start in range(0, len(keys), CHUNK):
        chunk = keys[start:start + CHUNK]
        x = F.adaptive_avg_pool2d(compose([placed[k] for k in chunk], side), MERGE_SIZE)  # area average
        x = F.conv2d(F.pad(x, (radius,) * 4), kernel)[:, 0]
        out.update(zip(chunk, x))
    return out


def _merge_distances(
    images: dict[tuple[int, int], torch.Tensor], n_chars: int, n_faces: int, limit: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(worst, common) for every pair of characters: `common` counts the faces having both, and
    `worst` is the largest, over those faces, of the peak |blurred difference| (exact where at most
    `limit`; elsewhere a lower bound above `limit`)."""
    worst = torch.zeros(n_chars, n_chars)
    common = torch.zeros(n_chars, n_chars, dtype=torch.int64)
    faces = []
    for f in range(n_faces):
        idx = torch.tensor([i for i in range(n_chars) if (f, i) in images], dtype=torch.int64)
        if len(idx) == 0:
            continue
        x = torch.stack([images[f, i] for i in idx.tolist()])
        # lower bound: the peak of |a - b| is at least the peak of its 4 x 4 block means
        coarse = F.avg_pool2d(x.unsqueeze(1), 4).flatten(1)
        sub = idx[:, None], idx[None, :]
        worst[sub] = torch.maximum(worst[sub], torch.cdist(coarse, coarse, p=float("inf")))
        common[sub] += 1
        faces.append((idx, x))
    candidates = (worst <= limit) & (common > 0)
    candidates.fill_diagonal_(False)
    exact = torch.zeros(n_chars, n_chars)
    for idx, x in faces:
        pairs = torch.nonzero(candidates[idx[:, None], idx[None, :]])  # positions within this face
        if len(pairs) == 0:
            continue
        peak = (x[pairs[:, 0]] - x[pairs[:, 1]]).abs().flatten(1).amax(1)
        a, b = idx[pairs[:, 0]], idx[pairs[:, 1]]
        exact[a, b] = torch.maximum(exact[a, b], peak)
    return torch.where(candidates, exact, worst), common


def _union_find(chars: Sequence[str], worst: torch.Tensor, common: torch.Tensor) -> list[list[int]]:
    """Union-find of the characters whose renders are close in every face having both."""
    parent = list(range(len(chars)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    close = torch.triu((worst <= MERGE_THRESHOLD) & (common > 0), diagonal=1)
    for i, j in torch.nonzero(close).tolist():
        ri, rj = root(i), root(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)  # the root stays the group's first character
    groups: dict[int, list[int]] = {}
    for i in range(len(chars)):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


def merge_classes(
    fonts: list[FT2Font], chars: Sequence[str], placed: dict[tuple[int, int], Placed], side: int,
) -> list[list[int]]:
    """The classes, as lists of indices into `chars` in order, each ordered by its first character.

    `placed` is `place_all(fonts, chars, side)`; it is reused when `side` is the merge canvas (a
    32-pixel set places its glyphs once), otherwise the merge renders are placed here.
    """
    merge_placed = placed if side == _MERGE_SIDE else place_all(fonts, chars, _MERGE_SIDE)
    worst, common = _merge_distances(_merge_images(merge_placed, _MERGE_SIDE), len(chars), len(fonts), MERGE_THRESHOLD)
    return _union_find(chars, worst, common)


def class_names(chars: Sequence[str], groups: Sequence[Sequence[int]]) -> list[str]:
    """Each class's name: its characters joined, e.g. "AΑА"."""
    return ["".join(chars[i] for i in g) for g in groups]


def merge_report(limit: float = 0.5) -> tuple[list[str], list[tuple[float, str, str]]]:
    """(names of the classes with more than one character, the character pairs left apart whose
    distance is at most `limit`, as (distance, char, char), closest first): to check
    `MERGE_THRESHOLD` (the distances are those compared with it)."""
    fonts = open_fonts()
    chars = kept_characters(fonts)
    images = _merge_images(place_all(fonts, chars, _MERGE_SIDE), _MERGE_SIDE)
    worst, common = _merge_distances(images, len(chars), len(fonts), max(limit, MERGE_THRESHOLD))
    groups = _union_find(chars, worst, common)
    label = {i: k for k, g in enumerate(groups) for i in g}
    near = sorted(
        (float(worst[i, j]), chars[i], chars[j])
        for i, j in torch.nonzero(torch.triu((worst <= limit) & (common > 0), diagonal=1)).tolist()
        if label[i] != label[j]
    )
    return [name for name, g in zip(class_names(chars, groups), groups) if len(g) > 1], near
