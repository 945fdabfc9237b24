"""The batch checks of the loss (apl/ops/health.py): one warning per process when the scores of a
batch fall within one bin (one big tie) or when most queries have no positive; quiet on healthy
batches; run on the first calls only (then one in a hundred)."""
import warnings

import pytest
import torch

import apl
from apl.ops import health
from helpers import random_labels, unit_rows


def _tied(n=40, d=8):
    g = torch.Generator().manual_seed(0)
    return torch.nn.functional.normalize(torch.ones(n, d) + 1e-3 * torch.randn(n, d, generator=g), dim=1)


def test_one_big_tie_warns_once():
    y = torch.arange(40) % 5
    with pytest.warns(UserWarning, match=r"98% of the scores of this batch lie between .* within one of the 20 bins"):
        apl.ap_loss(_tied(), y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apl.ap_loss(_tied(), y)  # said once


def test_bins_follow_the_loss_settings():
    """Scores spread over about 0.03: within one bin of M = 20 over (-1, 1), not of M = 100."""
    g = torch.Generator().manual_seed(1)
    base = torch.nn.functional.normalize(torch.ones(40, 8), dim=1)
    x = torch.nn.functional.normalize(base + 0.04 * torch.randn(40, 8, generator=g), dim=1)
    lo, hi = health.score_span(x, None)
    assert 0.02 < hi - lo < 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apl.ap_loss(x, torch.arange(40) % 4, num_bins=100)
    with pytest.warns(UserWarning, match="within one of the 20 bins"):
        apl.ap_loss(x, torch.arange(40) % 4, num_bins=20)


def test_spread_batches_are_quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for seed in range(3):
            apl.ap_loss(unit_rows(64, 16, seed=seed), random_labels(64, 4, seed=seed))


def test_most_queries_without_a_positive_warns():
    x = unit_rows(40, 8, seed=2)
    y = torch.cat([torch.arange(20), torch.arange(20, 30).repeat(2)])  # 20 of 40 have a positive: quiet
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apl.ap_loss(x, y)
    with pytest.warns(UserWarning, match=r"90% of the queries of this batch have no positive"):
        apl.ap_loss(x, torch.cat([torch.arange(38), torch.tensor([0, 1])]))


def test_checked_on_the_first_calls_then_one_in_a_hundred():
    x, y = unit_rows(20, 4, seed=3), random_labels(20, 3, seed=3)
    calls = []
    real = health.check_scores
    health.check_scores = lambda *a, **k: calls.append(1)
    try:
        for _ in range(250):
            apl.ap_loss(x, y)
    finally:
        health.check_scores = real
    assert len(calls) == health.FIRST + 2  # calls 1-5, 100 and 200


def test_the_reference_set_and_the_memory_are_checked_too():
    q = _tied(10)
    with pytest.warns(UserWarning, match="one big tie"):
        apl.ap_loss(q, torch.arange(10) % 2, _tied(30), torch.arange(30) % 2)
