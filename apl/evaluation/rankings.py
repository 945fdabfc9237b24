"""Rankings of a few queries, the content of the ranking pictures (`apl show`): each query's top
results, each framed by whether it is correct, wrong or junk (Revisited Oxford/Paris only).

A labelled held-out set: every image is a query against all the others (itself excluded), as in
`retrieval_metrics`; a result is correct when it has the query's class. Revisited Oxford / Paris:
the cropped queries against the database under one protocol (easy / medium / hard); the protocol's
positives are correct, its junk is junk (the metrics skip it), the rest is wrong. Each row carries
the query's AP (the exact AP, or the protocol's AP for Revisited), as `apl eval` computes them.

Queries are chosen by `choose_queries`: deterministic for a seed, spread over the classes.
Drawing is `apl.plots.rankings`; `apl.plots.show` runs a model end to end.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Optional, Sequence

import numpy as np
import torch

from .metrics import average_precisions
from .revisited import protocol_lists, revisited_average_precisions
from .search import knn

CORRECT, WRONG, JUNK = "correct", "wrong", "junk"

@dataclass
class Ranking:
    """One row of the picture: `query` (index of the query item), its `top` results (indices into
    the searched set, best first) with their frame `kinds`, the query's `ap` and a row `title`."""

    query: int
    results: list[int]
    kinds: list[str]
    ap: float
    title: str



def result_kinds(query_label: Hashable, result_labels: Sequence[Hashable]) -> list[str]:
    """CORRECT for a result of the query's class, else WRONG."""
    return [CORRECT if label == query_label else WRONG for label in result_labels]


def revisited_result_kinds(results: Sequence[int], gnd_entry: dict, protocol: str = "medium") -> list[str]:
    """Frame kinds of database `results` for one Revisited query under `protocol`: CORRECT for
    the protocol's positives, JUNK for what it ignores (its junk list, plus the hard images for
    "easy" and the easy ones for "hard"), WRONG for the rest."""
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


def rank_labelled(descriptors: torch.Tensor, labels: Sequence[int], queries: Sequence[int], top: int,
                  class_names: Optional[Sequence[str]] = None) -> list[Ranking]:
    """Rankings of `queries` (indices) against all other items of a labelled set."""
    y = torch.as_tensor(list(labels))
    aps = average_precisions(descriptors, y)
    names = class_names if class_names is not None else [str(c) for c in range(int(y.max()) + 1)]
    rows = []
    for q in queries:
        _, idx = knn(descriptors[q : q + 1], descriptors, top, exclude_self=True, self_offset=q)
        results = idx[0].tolist()
        kinds = result_kinds(int(y[q]), [int(y[i]) for i in results])
        ap = float(aps[q])
        rows.append(Ranking(q, results, kinds, ap, f"class {names[int(y[q])]}  ·  AP {ap:.3f}"))
    return rows


def rank_revisited(query_desc: torch.Tensor, db_desc: torch.Tensor, gnd: Sequence[dict], queries: Sequence[int],
                   top: int, protocol: str = "medium", query_names: Optional[Sequence[str]] = None) -> list[Ranking]:
    """Rankings of Revisited `queries` (indices of the query list) against the database; ties
    are ordered by database index, as in `revisited_map`."""
    chosen = list(queries)
    scores = query_desc[chosen] @ db_desc.t()
    per_query = revisited_average_precisions(scores, [gnd[q] for q in chosen])
    aps = per_query[protocol][0]
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :top].tolist()
    rows = []
    for r, q in enumerate(chosen):
        name = query_names[q] if query_names is not None else f"query {q}"
        rows.append(Ranking(q, order[r], revisited_result_kinds(order[r], gnd[q], protocol), float(aps[r]),
                            f"{name}  ·  AP {aps[r]:.3f} ({protocol})"))
    return rows
