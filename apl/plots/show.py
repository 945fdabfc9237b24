"""Ranking pictures of a model end to end (`apl show`, the demo): extract the descriptors, choose
queries, rank, draw. The ranking logic is `apl.evaluation.rankings`, the drawing `apl.plots.rankings`."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..evaluation.extraction import extract
from ..evaluation.rankings import CORRECT, JUNK, WRONG, Ranking, check_counts, choose_queries, rank_labelled, rank_revisited
from ..evaluation.revisited import PROTOCOLS, protocol_lists
from .rankings import display_image, draw_rankings

_WITH_POSITIVE = "images with another image of their class"


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
    if title is None:
        title = f"top-{top} results of {queries} held-out queries, each searched among the other {len(labels) - 1} images"

    def image(i: int) -> np.ndarray:
        return display_image(dataset[i][0], transform)

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
