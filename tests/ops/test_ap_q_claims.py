"""What the docs claim about AP_Q against the exact AP, each claim checked, and the claim that was
wrong kept as its counter-example.

AP_Q gives every positive of a bin the precision at the end of the bin. So for a single query it
is *not* a pessimistic estimate of the exact AP (the docs once said it was): it is above the exact
AP when a bin's positives are ranked behind its negatives, below when they are ranked ahead."""
from __future__ import annotations

import pytest
import torch

import apl
from apl.evaluation import average_precisions


def _ap_q_and_exact(scores, labels, num_bins=20):
    s = torch.tensor([scores], dtype=torch.float64)
    rel = torch.tensor([labels], dtype=torch.bool)
    ap_q = float(apl.quantized_ap(s, rel, num_bins=num_bins)[0])
    order = s[0].argsort(descending=True)
    hits = rel[0][order].double()
    exact = float((hits.cumsum(0) / torch.arange(1, len(hits) + 1) * hits).sum() / hits.sum())
    return ap_q, exact


def test_a_query_whose_ap_q_is_above_its_exact_ap():
    """The counter-example to "AP_Q is pessimistic": three positives just behind two negatives, all
    five scores within one bin of width 2/19."""
    ap_q, exact = _ap_q_and_exact([0.5673, 0.5744, 0.5696, 0.6344, 0.5758], [1, 1, 1, 0, 0])
    assert exact == pytest.approx((1 / 3 + 2 / 4 + 3 / 5) / 3)  # 0.478: ranks 3, 4, 5
    assert ap_q == pytest.approx(0.585, abs=1e-3)
    assert ap_q > exact + 0.1


def test_a_query_whose_ap_q_is_below_its_exact_ap():
    """The mirror case: the positives just ahead of the negatives in the same bin."""
    ap_q, exact = _ap_q_and_exact([0.6344, 0.5758, 0.5673, 0.5744, 0.5696], [1, 1, 0, 0, 1])
    assert exact == pytest.approx((1 + 1 + 3 / 4) / 3)  # ranks 1, 2, 4
    assert ap_q < exact - 0.1


def test_the_exact_ap_of_the_counter_example_is_what_evaluation_reports():
    x_scores = [0.5673, 0.5744, 0.5696, 0.6344, 0.5758]
    _, exact = _ap_q_and_exact(x_scores, [1, 1, 1, 0, 0])
    # the same ranking through apl.evaluation: row 0 is the query, its dot products with the other
    # rows are the scores above
    rows = [[1.0, 0.0]] + [[s, (1 - s * s) ** 0.5] for s in x_scores]
    emb = torch.tensor(rows, dtype=torch.float64)
    aps = average_precisions(emb, torch.tensor([0, 0, 0, 0, 1, 1]))
    assert float(aps[0]) == pytest.approx(exact, abs=1e-12)


@pytest.mark.parametrize("shape", [(5, 10, 16), (32, 8, 64)])
@pytest.mark.parametrize("spread", [1.0, 4.0, None])
def test_batch_map_q_is_below_the_exact_map_on_measured_data(shape, spread):
    """What docs/ap_q.md states, and only that: on the batches experiments/ap_q_gap.py measures (clustered
    unit vectors, with real ranking errors), the batch's mAP_Q was below its exact mAP in every batch
    (a measurement on these data, not a bound), while single queries were above theirs."""
    from experiments.ap_q_gap import DRAWS, clustered, compare

    row = compare((clustered(*shape, spread, seed) for seed in range(DRAWS)), num_bins=20)
    assert row["batches_below"] == 1.0 and row["min_batch_gap"] > 0
    assert 0 <= row["queries_above"] < 0.5


def test_a_nearly_perfect_batch_can_have_its_map_q_above_the_exact_map():
    """The counter-example docs/ap_q.md gives for batches: well separated classes (spread 0.5), M = 40,
    draw 11: one query has an error, its AP_Q is above its exact AP, and nothing offsets it."""
    from experiments.ap_q_gap import clustered

    x, y = clustered(5, 10, 16, 0.5, seed=11)
    exact = average_precisions(x, y).double()
    quant, _ = apl.per_query_ap(x, y, num_bins=40, backend="torch")
    gap = float(exact.mean() - quant.double().mean())
    assert -1e-4 < gap < 0 and float(exact.mean()) < 1
    assert int((quant.double() > exact + 1e-12).sum()) == 1

