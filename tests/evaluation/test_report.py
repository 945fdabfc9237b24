"""The held-out metrics of the trainer and `apl eval` (retrieval_metrics) and their formatting."""
import math

import pytest
import torch

from apl import evaluation
from apl.evaluation.report import (FIELD_METRICS, HELD_OUT_METRICS, format_metrics, mean_over_seeds, metric_cell,
                                   metric_label, metrics_table)
from apl.evaluation.summary import retrieval_metrics


def _set(n=30, d=4, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    return x, torch.randint(0, classes, (n,), generator=g)


def test_retrieval_metrics_are_the_evaluation_functions():
    x, y = _set()
    m = retrieval_metrics(x, y)
    assert tuple(m) == ("map", "map@r", "r-precision", "p@1", "p@10", "recall@1", "recall@10")
    assert set(m) == set(HELD_OUT_METRICS) and set(FIELD_METRICS) <= set(m)
    assert m["map@r"] == evaluation.map_at_r(x, y) and m["r-precision"] == evaluation.r_precision(x, y)
    assert m["recall@10"] == evaluation.hit_rate_at_k(x, y, 10) and m["p@10"] == evaluation.precision_at_k(x, y, 10)
    assert m["recall@1"] == m["p@1"]  # both: is the nearest other item a positive
    assert m["recall@10"] >= m["recall@1"] and all(isinstance(v, float) and 0 <= v <= 1 for v in m.values())


def test_tiny_set_reports_only_k_below_its_size():
    x, y = _set(n=6, classes=2)
    m = retrieval_metrics(x, y)
    assert "p@10" not in m and "recall@10" not in m and "recall@1" in m and "map@r" in m


def test_labels_and_one_line():
    assert [metric_label(k) for k in HELD_OUT_METRICS] == ["mAP", "MAP@R", "R-precision", "P@1", "P@10", "Recall@1", "Recall@10"]
    assert metric_label("eval_map@r") == "MAP@R" and metric_label("other") == "other"
    row = {"eval_map": 0.5, "eval_map@r": 0.25, "eval_recall@1": 1.0, "train_loss": 3.0}
    assert format_metrics(row, prefix="eval_") == "mAP 0.5000  MAP@R 0.2500  Recall@1 1.0000"
    assert format_metrics(row, keys=["map@r"], prefix="eval_", digits=2) == "MAP@R 0.25"


def test_table_keeps_the_known_order_then_the_rest():
    lines = metrics_table({"recall@1": 0.5, "map": 0.25, "extra": 1.0})
    assert lines == ["| metric | value |", "|---|---|", "| mAP | 0.2500 |", "| Recall@1 | 0.5000 |", "| extra | 1.0000 |"]


def test_mean_over_seeds_and_cells():
    finals = [{"eval_map": 0.5, "eval_map@r": 0.2}, {"eval_map": 0.7, "eval_map@r": 0.4, "eval_p@10": 0.1}]
    row = mean_over_seeds(finals)
    assert row["map"] == pytest.approx(0.6) and row["map_std"] == pytest.approx(math.sqrt(0.02))
    assert "p@10" not in row  # not in every seed's row
    assert metric_cell(row, "map@r") == "0.3000 ± 0.1414" and metric_cell(row, "p@10") == "-"
    one = mean_over_seeds(finals[:1])
    assert one["map_std"] is None and metric_cell(one, "map") == "0.5000"
    assert metric_cell({"map": float("nan")}, "map") == "nan"
