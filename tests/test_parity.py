"""Compiled CPU kernel against the PyTorch reference: float32 within 1e-5, float64 within 1e-10,
on random batches and on the edge cases of the design (ties, scores on bin centres and range
edges, scores outside the range, singletons, one class, no positive, weights, reference sets)."""
import math

import pytest
import torch

import apl
from conftest import VARIANTS, needs_cpu_kernel, random_labels, unit_rows

pytestmark = needs_cpu_kernel

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def run(backend, x, y, rx=None, ry=None, weights=None, **kw):
    """(per-query AP, loss, d loss / d inputs) of one backend."""
    x = x.detach().clone().requires_grad_()
    rx = None if rx is None else rx.detach().clone().requires_grad_()
    ap, has = apl.per_query_ap(x, y, rx, ry, backend=backend, **{k: v for k, v in kw.items() if k != "class_balanced"})
    loss = apl.ap_loss(x, y, rx, ry, query_weights=weights, backend=backend, **kw)
    inputs = [x] if rx is None else [x, rx]
    grads = torch.autograd.grad(loss, inputs)
    return ap.detach(), has, loss.detach(), grads


def assert_same(x, y, rx=None, ry=None, weights=None, **kw):
    tol = TOL[x.dtype]
    # Same blocks on both sides: a blocked GEMM may round a score differently by one ulp, which
    # matters where the gradient jumps (a score of exactly 1.0 vs the range edge).
    for chunk in (None, 3):
        want = run("torch", x, y, rx, ry, weights, chunk_size=chunk, **kw)
        got = run("cpu", x, y, rx, ry, weights, chunk_size=chunk, **kw)
        torch.testing.assert_close(got[0], want[0], rtol=0, atol=tol)
        assert torch.equal(got[1], want[1])
        torch.testing.assert_close(got[2], want[2], rtol=0, atol=tol)
        for g, w in zip(got[3], want[3]):
            torch.testing.assert_close(g, w, rtol=0, atol=tol)
        assert torch.isfinite(got[2]) and all(torch.isfinite(g).all() for g in got[3])
    return want


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("B,D,C", [(64, 16, 8), (33, 5, 3), (128, 32, 40)])
def test_random_batches(dtype, variant, B, D, C):
    assert_same(unit_rows(B, D, dtype, seed=B), random_labels(B, C, seed=D), variant=variant)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("variant", VARIANTS)
def test_reference_set_of_another_size(dtype, variant):
    q, ql = unit_rows(20, 8, dtype, seed=1), random_labels(20, 4, seed=1)
    x, xl = unit_rows(57, 8, dtype, seed=2), random_labels(57, 4, seed=2)
    assert_same(q, ql, x, xl, variant=variant)


@pytest.mark.parametrize("variant", VARIANTS)
def test_ties_from_duplicate_embeddings(variant):
    base = unit_rows(6, 4, seed=3)
    x = base.repeat(4, 1)  # every score appears many times
    y = torch.arange(24) % 3
    assert_same(x, y, variant=variant)


def axis_embeddings(dtype):
    """Scores exactly 1, 0.5, 0, -0.5, -1: on the bin centres of M = 5 over [-1, 1]."""
    c = math.sqrt(3) / 2
    rows = [[1, 0], [0, 1], [-1, 0], [0, -1], [0.5, c], [-0.5, -c], [1, 0], [0, 1]]
    return torch.tensor(rows, dtype=dtype), torch.tensor([0, 1, 0, 1, 2, 2, 1, 0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("num_bins", [5, 9, 20])
def test_scores_on_bin_centres_and_range_edges(dtype, variant, num_bins):
    x, y = axis_embeddings(dtype)
    assert_same(x, y, num_bins=num_bins, variant=variant)


@pytest.mark.parametrize("variant", VARIANTS)
def test_score_form_exactly_on_centres_edges_and_outside(variant):
    M = 5
    centres = [1.0, 0.5, 0.0, -0.5, -1.0]
    row = torch.tensor(centres + [1.0000001, -1.2, 3.0, -7.0, 0.25, 0.75, -0.25], dtype=torch.float64)
    scores = torch.stack([row, row.flip(0), row * 0.5])
    rel = torch.zeros_like(scores, dtype=torch.bool)
    rel[:, ::3] = True
    got, want = [], []
    for backend, out in (("cpu", got), ("torch", want)):
        s = scores.clone().requires_grad_()
        ap = apl.quantized_ap(s, rel, num_bins=M, variant=variant, backend=backend)
        out += [ap.detach(), torch.autograd.grad(ap.sum(), s)[0]]
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(got[1], want[1], rtol=0, atol=1e-10)
    outside = (scores <= -1) | (scores >= 1)
    assert (got[1][outside] == 0).all()  # zero gradient outside (lo, hi) and on its edges


@pytest.mark.parametrize("variant", VARIANTS)
def test_scores_outside_a_narrow_range(variant):
    assert_same(unit_rows(40, 3, seed=7), random_labels(40, 4, seed=7), score_range=(-0.2, 0.3), variant=variant)


def test_singletons_one_class_and_no_positive():
    x = unit_rows(30, 6, seed=8)
    singletons = torch.cat([torch.arange(20), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])])
    assert_same(x, singletons)
    assert_same(x, torch.zeros(30, dtype=torch.long))
    ap, has, loss, grads = assert_same(x, torch.arange(30))  # no positive anywhere
    assert not has.any() and loss.item() == 0 and (grads[0] == 0).all()


def test_class_balanced_and_user_weights():
    x, y = unit_rows(50, 8, seed=9), random_labels(50, 5, seed=9)
    w = torch.rand(50, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    assert_same(x, y, class_balanced=True)
    assert_same(x, y, weights=w)
    assert_same(x, y, weights=w, class_balanced=True, variant="tie_aware")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_accumulate_in_float32(dtype):
    x, y = unit_rows(32, 8, dtype, seed=10), random_labels(32, 4, seed=10)
    ap_h, _ = apl.per_query_ap(x, y, backend="cpu")
    ap_f, _ = apl.per_query_ap(x.float(), y, backend="cpu")
    assert ap_h.dtype == torch.float32
    torch.testing.assert_close(ap_h, ap_f, rtol=0, atol=1e-6)
    xr = x.clone().requires_grad_()
    apl.ap_loss(xr, y, backend="cpu").backward()
    assert xr.grad.dtype == dtype and torch.isfinite(xr.grad.float()).all()


def test_streaming_equals_default_bitwise_in_forward():
    x, y = unit_rows(70, 12, torch.float32, seed=11), random_labels(70, 6, seed=11)
    full, _ = apl.per_query_ap(x, y, backend="cpu")
    for chunk in (1, 16, 69, 70, 500):
        part, _ = apl.per_query_ap(x, y, backend="cpu", chunk_size=chunk)
        torch.testing.assert_close(part, full, rtol=0, atol=1e-6)


def test_scores_strategy_matches_the_reference():
    """Devices without the unit-gradient kernels (CUDA today) keep the scores for backward;
    APL_SCORES_STRATEGY=1 runs that path on CPU, in a fresh process (the switch is read once)."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, torch, apl\n"
        "sys.path.insert(0, %r)\n"
        "from conftest import unit_rows, random_labels\n"
        "for dt, tol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):\n"
        "    x, y = unit_rows(37, 6, dt, seed=1), random_labels(37, 4, seed=1)\n"
        "    q, ql = unit_rows(9, 6, dt, seed=2), random_labels(9, 4, seed=2)\n"
        "    for args in ((x, y), (q, ql, x, y)):\n"
        "        outs = []\n"
        "        for be in ('cpu', 'torch'):\n"
        "            ins = [a.clone().requires_grad_() if a.is_floating_point() else a for a in args]\n"
        "            loss = apl.ap_loss(*ins, backend=be, variant='tie_aware')\n"
        "            outs.append([loss] + list(torch.autograd.grad(loss, [a for a in ins if a.requires_grad])))\n"
        "        for a, b in zip(*outs):\n"
        "            torch.testing.assert_close(a, b, rtol=0, atol=tol)\n"
        "saved = torch.ops.apl.ap_self(x, y, 20, -1.0, 1.0, 0, 0)[3]\n"
        "torch.testing.assert_close(saved, x @ x.t())  # the scores strategy is the one running\n"
        "print('ok')\n"
    ) % str(Path(__file__).parent)
    x, y = unit_rows(37, 6, torch.float32, seed=1), random_labels(37, 4, seed=1)
    saved = torch.ops.apl.ap_self(x, y, 20, -1.0, 1.0, 0, 0)[3]  # this process: U = dAP/dS
    assert saved.diagonal().abs().max() == 0 and not torch.allclose(saved, x @ x.t())
    env = dict(__import__("os").environ, APL_SCORES_STRATEGY="1")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


@pytest.mark.parametrize("chunk", [None, 7])
def test_cpu_kernel_is_deterministic_run_to_run(chunk):
    x, y = unit_rows(300, 16, torch.float32, seed=12), random_labels(300, 20, seed=12)
    results = []
    for _ in range(3):
        xr = x.clone().requires_grad_()
        loss = apl.ap_loss(xr, y, backend="cpu", chunk_size=chunk, variant="tie_aware")
        loss.backward()
        results.append((loss.detach(), xr.grad))
    for loss, grad in results[1:]:
        assert torch.equal(loss, results[0][0]) and torch.equal(grad, results[0][1])


def test_row_kernels_do_not_depend_on_the_thread_count():
    """Rows are independent and each row's histogram lanes are summed in a fixed order, so the
    kernels' own outputs (AP, coefficients, dAP/dS, dL/dS) are bitwise the same however rows are
    split between threads. (The GEMMs around them are MKL's, whose rounding may depend on it.)"""
    x, y = unit_rows(300, 16, torch.float32, seed=12), random_labels(300, 20, seed=12)
    s = x[:40] @ x.t()
    rel = y[:40, None] == y[None, :]
    threads = torch.get_num_threads()
    outs = []
    try:
        for n in (1, max(2, threads)):
            torch.set_num_threads(n)
            fwd = torch.ops.apl.ap_self(x, y, 20, -1.0, 1.0, 1, 0)
            ap, npos, coef = torch.ops.apl.ap_scores(s, rel, 20, -1.0, 1.0, 0)
            g = torch.ops.apl.ap_scores_backward(torch.linspace(-1, 1, 40), s, rel, coef, 20, -1.0, 1.0)
            outs.append(list(fwd) + [ap, coef, g])
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*outs):
        assert torch.equal(a, b)
