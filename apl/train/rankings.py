"""Pictures of rankings: for a few queries, the query image and its top results, each result
framed by whether it is correct (green), wrong (red) or junk (grey, Revisited Oxford/Paris only).

A labelled held-out set (`save_rankings`): every image is a query against all the others (itself
excluded), as in `retrieval_metrics`; a result is correct when it has the query's class. Revisited
Oxford / Paris (`save_revisited_rankings`): the cropped queries against the database under one
protocol (easy / medium / hard); the protocol's positives are correct, its junk is shown in grey
(the metrics skip junk), the rest is wrong. Each row is titled with the query's class (or name)
and its AP (the exact AP, or the protocol's AP for Revisited), as `apl eval` computes them.

Queries are chosen by `choose_queries`: deterministic for a seed, spread over the classes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Hashable, Optional, Sequence

import numpy as np
import torch
from torch import nn

CORRECT, WRONG, JUNK = "correct", "wrong", "junk"
QUERY = "query"
FRAME_COLOURS = {CORRECT: "#1a9c3a", WRONG: "#d62728", JUNK: "#9a9a9a", QUERY: "#1f5fbf"}
_LEGEND = {QUERY: "query", CORRECT: "correct", WRONG: "wrong", JUNK: "junk (ignored by the protocol)"}
# Longest side of a picture in the figure: larger images are shrunk first (a 1024-pixel database
# image would only make the figure heavy).
DISPLAY_SIDE = 160


@dataclass
class Ranking:
    """One row of the picture: `query` (index of the query item), its `top` results (indices into
    the searched set, best first) with their frame `kinds`, the query's `ap` and a row `title`."""

    query: int
    results: list[int]
    kinds: list[str]
    ap: float
    title: str


# ----------------------------------------------------------------------------- pure logic


def result_kinds(query_label: Hashable, result_labels: Sequence[Hashable]) -> list[str]:
    """CORRECT for a result of the query's class, else WRONG."""
    return [CORRECT if label == query_label else WRONG for label in result_labels]


def revisited_result_kinds(results: Sequence[int], gnd_entry: dict, protocol: str = "medium") -> list[str]:
    """Frame kinds of database `results` for one Revisited query under `protocol`: CORRECT for
    the protocol's positives, JUNK for what it ignores (its junk list, plus the hard images for
    "easy" and the easy ones for "hard"), WRONG for the rest."""
    from ..evaluation.revisited import protocol_lists

    pos, junk = protocol_lists(gnd_entry, protocol)
    pos, junk = set(pos.tolist()), set(junk.tolist())
    return [CORRECT if i in pos else JUNK if i in junk else WRONG for i in (int(r) for r in results)]


def choose_queries(groups: Sequence[Hashable], count: int, seed: int = 0,
                   eligible: Optional[Sequence[bool]] = None) -> list[int]:
    """`count` item indices spread over the groups (classes): the groups in a seeded random
    order, one item of each in turn (a seeded random member), then a second round, and so on.
    Only `eligible` items are chosen (default: all). Deterministic for a given seed."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be an int >= 1, got {count!r}")
    ok = [True] * len(groups) if eligible is None else [bool(e) for e in eligible]
    if len(ok) != len(groups):
        raise ValueError(f"eligible has {len(ok)} entries but there are {len(groups)} items")
    available = sum(ok)
    if count > available:
        raise ValueError(f"cannot choose {count} queries among {available} eligible items")
    rng = np.random.default_rng(seed)
    members: dict = {}
    for i, (g, e) in enumerate(zip(groups, ok)):
        if e:
            members.setdefault(g, []).append(i)
    keys = list(members)
    order = [keys[j] for j in rng.permutation(len(keys))]
    shuffled = {g: [members[g][j] for j in rng.permutation(len(members[g]))] for g in order}
    chosen: list[int] = []
    round_ = 0
    while len(chosen) < count:
        for g in order:
            if round_ < len(shuffled[g]) and len(chosen) < count:
                chosen.append(shuffled[g][round_])
        round_ += 1
    return chosen


def check_counts(queries: int, top: int, items: int, candidates: int, names: tuple[str, str] = ("queries", "top"),
                 what: str = "the held-out set", candidates_are: str = "") -> None:
    """Errors naming the option: `queries` in [1, candidates], `top` in [1, items - 1] (`items`:
    the searched set; `candidates`: the items that can be queries, described by `candidates_are`)."""
    qname, tname = names
    for name, v in ((qname, queries), (tname, top)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if top >= items:
        raise ValueError(f"{tname} must be smaller than the number of images searched ({items} in {what}), got {top}")
    if queries > candidates:
        why = f" ({candidates_are})" if candidates_are else ""
        raise ValueError(f"{qname} {queries} is more than the {candidates} possible queries of {what}{why}")


_WITH_POSITIVE = "images with another image of their class"


def rank_labelled(descriptors: torch.Tensor, labels: Sequence[int], queries: Sequence[int], top: int,
                  class_names: Optional[Sequence[str]] = None) -> list[Ranking]:
    """Rankings of `queries` (indices) against all other items of a labelled set."""
    from .. import evaluation

    y = torch.as_tensor(list(labels))
    aps = evaluation.average_precisions(descriptors, y)
    names = class_names if class_names is not None else [str(c) for c in range(int(y.max()) + 1)]
    rows = []
    for q in queries:
        _, idx = evaluation.knn(descriptors[q : q + 1], descriptors, top, exclude_self=True, self_offset=q)
        results = idx[0].tolist()
        kinds = result_kinds(int(y[q]), [int(y[i]) for i in results])
        ap = float(aps[q])
        rows.append(Ranking(q, results, kinds, ap, f"class {names[int(y[q])]}  ·  AP {ap:.3f}"))
    return rows


def rank_revisited(query_desc: torch.Tensor, db_desc: torch.Tensor, gnd: Sequence[dict], queries: Sequence[int],
                   top: int, protocol: str = "medium", query_names: Optional[Sequence[str]] = None) -> list[Ranking]:
    """Rankings of Revisited `queries` (indices of the query list) against the database; ties
    are ordered by database index, as in `evaluation.revisited_map`."""
    from .. import evaluation

    chosen = list(queries)
    scores = query_desc[chosen] @ db_desc.t()
    per_query = evaluation.revisited_average_precisions(scores, [gnd[q] for q in chosen])
    aps = per_query[protocol][0]
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :top].tolist()
    rows = []
    for r, q in enumerate(chosen):
        name = query_names[q] if query_names is not None else f"query {q}"
        rows.append(Ranking(q, order[r], revisited_result_kinds(order[r], gnd[q], protocol), float(aps[r]),
                            f"{name}  ·  AP {aps[r]:.3f} ({protocol})"))
    return rows


# ----------------------------------------------------------------------------- drawing


def _normalizers(transform) -> list:
    """The `Normalize` steps of a transform (looking into `Compose`), in order."""
    from ..data import Compose, Normalize

    if isinstance(transform, Normalize):
        return [transform]
    if isinstance(transform, Compose):
        return [n for t in transform.transforms for n in _normalizers(t)]
    return []


def display_image(x: torch.Tensor, transform=None, max_side: int = DISPLAY_SIDE) -> np.ndarray:
    """An image tensor (C, H, W) as an array for `imshow`: the `Normalize` steps of `transform`
    undone (last first), clipped to [0, 1], shrunk to `max_side`, (H, W) for one channel or
    (H, W, 3)."""
    from ..data import ResizeMax

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


# ----------------------------------------------------------------------------- end to end


def _class_names(dataset, num_classes: int) -> list[str]:
    classes = getattr(dataset, "classes", None)
    if classes is not None and len(classes) == num_classes:
        return [str(c) for c in classes]
    return [str(c) for c in range(num_classes)]


@torch.no_grad()
def save_rankings(model: nn.Module, dataset, path, queries: int = 8, top: int = 10, seed: int = 0,
                  scales: Sequence[float] = (1.0,), workers: int = 0, prefetch: int = 2, title: Optional[str] = None,
                  descriptors: Optional[torch.Tensor] = None) -> list[Ranking]:
    """Draws `queries` queries of a labelled `dataset` ((image, class index) items with
    `targets`, e.g. a held-out set) and their `top` results to `path` (a PNG); returns the rows.

    Only images with another image of their class can be queries. `descriptors` (N, D) skips the
    extraction when already computed with `model`.
    """
    from .extraction import extract

    labels = [int(t) for t in dataset.targets]
    counts = np.bincount(labels) if labels else np.zeros(0, dtype=int)
    eligible = [counts[t] > 1 for t in labels]
    check_counts(queries, top, len(labels), sum(eligible), candidates_are=_WITH_POSITIVE)
    if descriptors is None:
        descriptors, _ = extract(model, dataset, scales=scales, workers=workers, prefetch=prefetch)
    d = descriptors.detach().float().cpu()
    chosen = choose_queries(labels, queries, seed, eligible)
    names = _class_names(dataset, len(counts))
    rows = rank_labelled(d, labels, chosen, top, names)
    transform = getattr(dataset, "transform", None)

    def image(i: int) -> np.ndarray:
        return display_image(dataset[i][0], transform)

    if title is None:
        title = f"top-{top} results of {queries} held-out queries, each searched among the other {len(labels) - 1} images"
    draw_rankings(rows, image, image, path, title, result_caption=lambda i: names[labels[i]][:10],
                  note="each row: a query, then its results, nearest first (under each: rank: class)")
    return rows


def _landmark(name: str) -> str:
    """The landmark of a Revisited query name ("all_souls_000013" -> "all_souls"), to spread the
    chosen queries over landmarks."""
    head, _, tail = name.rpartition("_")
    return head if head and tail.isdigit() else name


@torch.no_grad()
def save_revisited_rankings(model: nn.Module, dataset, path, queries: int = 8, top: int = 10, seed: int = 0,
                            image_size: int = 1024, scales: Sequence[float] = (1.0,), protocol: str = "medium",
                            workers: int = 0, prefetch: int = 2) -> list[Ranking]:
    """The same picture for a Revisited Oxford / Paris `dataset` (`apl.data.RevisitedDataset`):
    cropped queries against the database, junk framed in grey under `protocol`."""
    from ..data import RevisitedImages, eval_transform
    from ..evaluation.revisited import PROTOCOLS, protocol_lists
    from .extraction import extract

    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    eligible = [protocol_lists(g, protocol)[0].size > 0 for g in dataset.gnd]
    check_counts(queries, top, len(dataset.imlist), sum(eligible), what=dataset.name,
                 candidates_are=f"queries with a positive under the {protocol} protocol")
    tf = eval_transform(image_size)
    kw = dict(scales=scales, workers=workers, prefetch=prefetch)
    q, _ = extract(model, RevisitedImages(dataset, queries=True, transform=tf), **kw)
    db, _ = extract(model, RevisitedImages(dataset, queries=False, transform=tf), **kw)
    chosen = choose_queries([_landmark(n) for n in dataset.qimlist], queries, seed, eligible)
    rows = rank_revisited(q.float().cpu(), db.float().cpu(), dataset.gnd, chosen, top, protocol, dataset.qimlist)
    originals = (RevisitedImages(dataset, queries=True), RevisitedImages(dataset, queries=False))
    title = f"{dataset.name}: top-{top} database images of {queries} cropped queries ({protocol} protocol)"
    draw_rankings(rows, lambda i: display_image(originals[0][i][0]), lambda i: display_image(originals[1][i][0]), path,
                  title, kinds_in_legend=(CORRECT, WRONG, JUNK),
                  note="each row: a cropped query, then its database results, nearest first (under each: rank)")
    return rows
