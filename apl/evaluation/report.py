"""Names and formatting of the held-out metrics that `retrieval_metrics` returns, for the terminal,
tables (`apl eval`, the demo) and logs.

Keys (also those of `apl eval --json`, and of metrics.jsonl with an "eval_" prefix):

    map          exact mAP                          map@r        MAP@R (Musgrave et al., 2020)
    r-precision  R-precision                        p@K          precision at K
    recall@K     Recall@K of metric-learning papers: the share of queries with a positive in the top K
                 (`apl.evaluation.hit_rate_at_k`; not the information-retrieval recall)

The @K metrics exist only for K < number of held-out images.
"""
from __future__ import annotations

import statistics
from typing import Iterable, Mapping, Optional, Sequence

# Every key `retrieval_metrics` can return, in the order tables show them.
HELD_OUT_METRICS = ("map", "map@r", "r-precision", "p@1", "p@10", "recall@1", "recall@10")
# The metrics of the metric-learning literature, for a table that already shows map / p@K.
FIELD_METRICS = ("map@r", "r-precision", "recall@1", "recall@10")

_LABELS = {"map": "mAP", "map@r": "MAP@R", "r-precision": "R-precision"}


def metric_label(key: str) -> str:
    """Display name of a metric key ("map@r" -> "MAP@R", "eval_p@10" -> "P@10", "recall@1" -> "Recall@1")."""
    name = key[len("eval_"):] if key.startswith("eval_") else key
    if name in _LABELS:
        return _LABELS[name]
    for prefix, label in (("p@", "P@"), ("recall@", "Recall@")):
        if name.startswith(prefix):
            return label + name[len(prefix):]
    return name


def _present(metrics: Mapping, keys: Optional[Iterable[str]], prefix: str) -> list[str]:
    keys = HELD_OUT_METRICS if keys is None else keys
    return [k for k in keys if prefix + k in metrics]


def format_metrics(metrics: Mapping, keys: Optional[Sequence[str]] = None, prefix: str = "", digits: int = 4) -> str:
    """One line, e.g. "mAP 0.8123  MAP@R 0.7012  ...", of the `keys` (default: all of
    `HELD_OUT_METRICS`) found in `metrics` under `prefix` + key; missing ones are skipped."""
    return "  ".join(f"{metric_label(k)} {metrics[prefix + k]:.{digits}f}" for k in _present(metrics, keys, prefix))


def metrics_table(metrics: Mapping, digits: int = 4) -> list[str]:
    """A two-column Markdown table (metric, value) of `metrics`: the known metrics first in the
    order of `HELD_OUT_METRICS`, then any others."""
    keys = _present(metrics, None, "") + [k for k in metrics if k not in HELD_OUT_METRICS]
    return ["| metric | value |", "|---|---|"] + [f"| {metric_label(k)} | {metrics[k]:.{digits}f} |" for k in keys]


def mean_over_seeds(finals: Sequence[Mapping], keys: Sequence[str] = HELD_OUT_METRICS, prefix: str = "eval_") -> dict:
    """{key: mean, key + "_std": standard deviation (None for one seed)} over the rows `finals`
    (e.g. the last epoch of each seed's history), for the keys every row has."""
    out: dict = {}
    for k in keys:
        if not finals or any(prefix + k not in f for f in finals):
            continue
        values = [float(f[prefix + k]) for f in finals]
        out[k] = statistics.fmean(values)
        out[k + "_std"] = statistics.stdev(values) if len(values) > 1 else None
    return out


def metric_cell(row: Mapping, key: str, digits: int = 4) -> str:
    """A table cell: "0.8123 ± 0.0100" when `row` has key + "_std" (not None), else "0.8123";
    "-" when the metric is missing (an @K metric of a set of K images or fewer)."""
    value = row.get(key)
    if value is None:
        return "-"
    std = row.get(key + "_std")
    return f"{value:.{digits}f} ± {std:.{digits}f}" if std is not None else f"{value:.{digits}f}"
