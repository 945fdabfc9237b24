"""Pictures of rankings: for a few queries, the query image and its top results, each result
framed by whether it is correct (green), wrong (red) or junk (grey, Revisited Oxford/Paris only)."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ..evaluation.rankings import CORRECT, JUNK, WRONG, Ranking

QUERY = "query"
FRAME_COLOURS = {CORRECT: "#1a9c3a", WRONG: "#d62728", JUNK: "#9a9a9a", QUERY: "#1f5fbf"}
_LEGEND = {QUERY: "query", CORRECT: "correct", WRONG: "wrong", JUNK: "junk (ignored by the protocol)"}
# Longest side of a picture in the figure: larger images are shrunk first (a 1024-pixel database
# image would only make the figure heavy).
DISPLAY_SIDE = 160


def _normalizers(transform) -> list:
    """The `Normalize` steps of a transform (looking into `Compose`), in order."""
    from ..data.transforms import Compose, Normalize

    if isinstance(transform, Normalize):
        return [transform]
    if isinstance(transform, Compose):
        return [n for t in transform.transforms for n in _normalizers(t)]
    return []


def display_image(x: torch.Tensor, transform=None, max_side: int = DISPLAY_SIDE) -> np.ndarray:
    """An image tensor (C, H, W) as an array for `imshow`: the `Normalize` steps of `transform`
    undone (last first), clipped to [0, 1], shrunk to `max_side`, (H, W) for one channel or
    (H, W, 3)."""
    from ..data.transforms import ResizeMax

    x = x.detach().float().cpu()
    for norm in reversed(_normalizers(transform)):
        x = x * norm.std.to(x) + norm.mean.to(x)
    x = ResizeMax(max_side, upscale=False)(x.clamp(0, 1)).clamp(0, 1)
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


def draw_rankings(rankings: Sequence[Ranking], query_image: Callable[[int], np.ndarray],
                  result_image: Callable[[int], np.ndarray], path, title: str = "",
                  result_caption: Optional[Callable[[int], str]] = None, kinds_in_legend: Sequence[str] = (CORRECT, WRONG),
                  note: str = "each row: a query, then its results, nearest first") -> None:
    """Writes the figure to `path`: one row per ranking, the query then its results, each
    result framed in its kind's colour; `query_image(i)` / `result_image(i)` give the arrays to
    show (see `display_image`), `result_caption(i)` an optional short caption under each result
    (after its rank); `note` heads the legend of the frame colours."""
    # A bare Figure (no pyplot): renders with Agg and leaves the caller's matplotlib backend alone.
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, Rectangle

    if not rankings:
        raise ValueError("no rankings to draw")
    rows, cols = len(rankings), 1 + max(len(r.results) for r in rankings)
    # Fixed sizes in inches: a square cell per picture, room above it for the row title and below
    # it for the caption, the title on top and the legend at the bottom.
    cell, gap_w, gap_h, side, top_m, bottom_m = 1.1, 0.12, 0.5, 0.15, (0.55 if title else 0.15), 0.75
    width = cols * cell + (cols - 1) * gap_w + 2 * side
    height = rows * cell + rows * gap_h + top_m + bottom_m
    fig = Figure(figsize=(width, height))
    axes = fig.subplots(rows, cols, squeeze=False)
    fig.subplots_adjust(left=side / width, right=1 - side / width, bottom=bottom_m / height,
                        top=1 - (top_m + gap_h * 0.6) / height, wspace=gap_w / cell, hspace=gap_h / cell)
    for ax in axes.flat:
        ax.axis("off")

    def show(ax, img: np.ndarray, colour: str) -> None:
        grey = img.ndim == 2
        small = max(img.shape[:2]) < 48  # tiny images (the 8x8 digits) as crisp pixels
        ax.imshow(img, cmap="gray" if grey else None, vmin=0, vmax=1, interpolation="nearest" if small else "antialiased")
        h, w = img.shape[:2]
        ax.add_patch(Rectangle((-0.5, -0.5), w, h, fill=False, edgecolor=colour, linewidth=3.5, clip_on=False))
        # The same square box in every cell (the image centred in it): images of any shape are
        # drawn at one scale per cell and the grid stays regular.
        box = max(h, w)
        ax.set_xlim(-0.5 - (box - w) / 2, w - 0.5 + (box - w) / 2)
        ax.set_ylim(h - 0.5 + (box - h) / 2, -0.5 - (box - h) / 2)

    for r, ranking in enumerate(rankings):
        show(axes[r, 0], query_image(ranking.query), FRAME_COLOURS[QUERY])
        axes[r, 0].set_title(ranking.title, fontsize=8, loc="left", fontweight="bold")
        axes[r, 0].text(0.5, -0.06, "query", transform=axes[r, 0].transAxes, ha="center", va="top", fontsize=7)
        for c, (i, kind) in enumerate(zip(ranking.results, ranking.kinds), start=1):
            ax = axes[r, c]
            show(ax, result_image(i), FRAME_COLOURS[kind])
            caption = f"{c}" if result_caption is None else f"{c}: {result_caption(i)}"
            ax.text(0.5, -0.06, caption, transform=ax.transAxes, ha="center", va="top", fontsize=7)
    handles = [Patch(facecolor="none", edgecolor=FRAME_COLOURS[k], linewidth=2.5, label=_LEGEND[k])
               for k in (QUERY, *kinds_in_legend)]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=8,
               title=note, title_fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.12 / height, va="top")
    fig.savefig(path, dpi=100)
