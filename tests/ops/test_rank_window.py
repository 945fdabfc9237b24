"""The CPU rank kernel's saturation window (csrc/cpu/rank_cpu.cpp): rows sorted once, items more
than 40 temperatures above a positive counted, those below skipped. It must equal the all-pairs
sums to double rounding, on every path the kernel has (shared exponentials or an exp per pair;
the query left out, counted as an item, or as an item and a positive; reference sets; streaming)
and on rows whose scores all lie within one window. APL_RANK_WINDOW forces either path."""
import pytest
import torch

import apl
from helpers import needs_cpu_kernel, random_labels, unit_rows

pytestmark = needs_cpu_kernel
LOSSES = {"smooth_ap": (apl.per_query_smooth_ap, apl.smooth_ap_loss),
          "recall_at_k": (apl.per_query_recall_at_k, apl.recall_at_k_loss)}


def _run(monkeypatch, window, name, x, y, rx=None, ry=None, **kw):
    monkeypatch.setenv("APL_RANK_WINDOW", window)
    per_query, loss_fn = LOSSES[name]
    x = x.detach().clone().requires_grad_()
    rx = None if rx is None else rx.detach().clone().requires_grad_()
    value, has = per_query(x, y, rx, ry, backend="cpu", **kw)
    loss = loss_fn(x, y, rx, ry, backend="cpu", **kw)
    grads = torch.autograd.grad(loss, [x] if rx is None else [x, rx])
    return value.detach(), has, loss.detach(), grads


def _same(monkeypatch, name, x, y, rx=None, ry=None, windows=("always", "never"), **kw):
    a = _run(monkeypatch, windows[0], name, x, y, rx, ry, **kw)
    b = _run(monkeypatch, windows[1], name, x, y, rx, ry, **kw)
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=1e-13)
    assert torch.equal(a[1], b[1])
    torch.testing.assert_close(a[2], b[2], rtol=0, atol=1e-13)
    for g, h in zip(a[3], b[3]):
        torch.testing.assert_close(g, h, rtol=0, atol=1e-12 * max(h.abs().max().item(), 1.0))
    return a


def _spread(n, seed):
    """Unit vectors in 3 dimensions: cosine scores over all of [-1, 1], i.e. 200 temperatures of
    0.01, so that most items of a row lie outside a positive's window."""
    return unit_rows(n, 3, torch.float64, seed=seed)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("include_query", [False, True])
def test_window_equals_all_pairs(monkeypatch, name, include_query):
    x, y = _spread(160, 1), random_labels(160, 3, seed=1)
    _same(monkeypatch, name, x, y, temperature=0.01, include_query=include_query)
    _same(monkeypatch, name, x, y, temperature=0.01, include_query=include_query, chunk_size=50)


@pytest.mark.parametrize("name", LOSSES)
def test_window_with_reference_sets_and_memory(monkeypatch, name):
    q, ql = _spread(30, 2), random_labels(30, 2, seed=2)
    x, xl = _spread(150, 3), random_labels(150, 2, seed=3)
    _same(monkeypatch, name, q, ql, x, xl, temperature=0.01)
    _same(monkeypatch, name, q, ql, torch.cat([q, x]), torch.cat([ql, xl]), temperature=0.01,
          ref_includes_queries=True)


@pytest.mark.parametrize("name", LOSSES)
def test_window_on_every_pair_path(monkeypatch, name):
    x, y = _spread(120, 4), random_labels(120, 2, seed=4)
    _same(monkeypatch, name, x, y, temperature=1.0)  # every item within one window of every positive
    raw = 3.0 * torch.randn(120, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    _same(monkeypatch, name, raw, y, temperature=0.005)  # spread beyond 700 tau: an exp per pair
    ties = _spread(10, 6).repeat(12, 1)  # many items at exactly the same score, on window edges too
    _same(monkeypatch, name, ties, torch.arange(120) % 2, temperature=0.01)


@pytest.mark.parametrize("name", LOSSES)
def test_automatic_choice_equals_all_pairs(monkeypatch, name):
    """Rows with 32 positives or more and spread scores take the window by default."""
    x, y = _spread(200, 7), torch.arange(200) % 3  # 66 positives per query
    _same(monkeypatch, name, x, y, windows=("auto", "never"), temperature=0.01)
    assert _run(monkeypatch, "", name, x, y, temperature=0.01)[2].item() > 0  # empty: the default


def test_window_against_the_oracle(monkeypatch):
    """An independent check: the windowed kernel against the NumPy oracle, not only against itself."""
    from oracle_rank import per_query

    x, y = _spread(70, 8), random_labels(70, 2, seed=8)
    got = _run(monkeypatch, "always", "smooth_ap", x, y, temperature=0.01)[0]
    want, _ = per_query(x.numpy(), y.numpy(), loss="smooth_ap", temperature=0.01)
    torch.testing.assert_close(got, torch.as_tensor(want), rtol=0, atol=1e-12)


def test_bad_setting_is_named(monkeypatch):
    x, y = _spread(8, 9), random_labels(8, 2, seed=9)
    with pytest.raises(RuntimeError, match="APL_RANK_WINDOW must be auto, always or never, got 'sometimes'"):
        _run(monkeypatch, "sometimes", "smooth_ap", x, y)
