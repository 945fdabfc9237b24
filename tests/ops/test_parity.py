"""Every compiled kernel against the PyTorch reference on the same device: float32 within 1e-5,
float64 within 1e-10, float16 / bfloat16 (accumulated in float32) within an ulp of the gradient's
dtype, on random batches and on the edge cases of the design (ties, scores on bin centres and range
edges, scores outside the range, singletons, one class, no positive, weights, reference sets,
streaming, other bin counts). Each test runs once per device present (helpers.KERNELS)."""

import pytest
import torch

import apl
from helpers import KERNELS, LOW_DTYPES, VARIANTS, exact_rows, random_labels, score_matrix, unit_rows

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
pytestmark = pytest.mark.parametrize("kernel", KERNELS)


def on(device, *tensors):
    return [None if t is None else t.to(device) for t in tensors]


def run(backend, x, y, rx=None, ry=None, weights=None, **kw):
    """(per-query AP, loss, d loss / d inputs) of one backend."""
    x = x.detach().clone().requires_grad_()
    rx = None if rx is None else rx.detach().clone().requires_grad_()
    ap, has = apl.per_query_ap(x, y, rx, ry, backend=backend, **{k: v for k, v in kw.items() if k != "class_balanced"})
    loss = apl.ap_loss(x, y, rx, ry, query_weights=weights, backend=backend, **kw)
    inputs = [x] if rx is None else [x, rx]
    grads = torch.autograd.grad(loss, inputs)
    return ap.detach(), has, loss.detach(), grads


def assert_same(kernel, x, y, rx=None, ry=None, weights=None, chunks=(None, 3), **kw):
    backend, device = kernel
    x, y, rx, ry, weights = on(device, x, y, rx, ry, weights)
    tol = TOL[x.dtype]
    # Same blocks on both sides: a blocked GEMM may round a score differently by one ulp, which
    # matters where the gradient jumps (a score of exactly 1.0 vs the range edge).
    for chunk in chunks:
        want = run("torch", x, y, rx, ry, weights, chunk_size=chunk, **kw)
        got = run(backend, x, y, rx, ry, weights, chunk_size=chunk, **kw)
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
def test_random_batches(kernel, dtype, variant, B, D, C):
    assert_same(kernel, unit_rows(B, D, dtype, seed=B), random_labels(B, C, seed=D), variant=variant)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("variant", VARIANTS)
def test_reference_set_of_another_size(kernel, dtype, variant):
    q, ql = unit_rows(20, 8, dtype, seed=1), random_labels(20, 4, seed=1)
    x, xl = unit_rows(57, 8, dtype, seed=2), random_labels(57, 4, seed=2)
    assert_same(kernel, q, ql, x, xl, variant=variant)


@pytest.mark.parametrize("variant", VARIANTS)
def test_ties_from_duplicate_embeddings(kernel, variant):
    base = unit_rows(6, 4, seed=3)
    x = base.repeat(4, 1)  # every score appears many times
    y = torch.arange(24) % 3
    assert_same(kernel, x, y, variant=variant)


def axis_embeddings(dtype):
    """Scores exactly 1, 0.5, 0, -0.5, -1: on the bin centres of M = 5 over [-1, 1], and on the range
    edges. Unit rows of four entries +-1/2, so that every dot product is a sum of four +-1/4: exact in
    any order of summation and with or without FMA (a 2-D row with sqrt(3)/2 gave scores one ulp
    apart under two BLAS builds, which moved a score across the edge where the gradient jumps)."""
    signs = [[1, 1, 1, 1], [1, 1, -1, -1], [1, -1, 1, -1], [-1, -1, -1, -1], [1, 1, 1, -1], [-1, 1, -1, -1],
             [1, 1, 1, 1], [1, -1, -1, 1]]
    return torch.tensor(signs, dtype=dtype) / 2, torch.tensor([0, 1, 0, 1, 2, 2, 1, 0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("num_bins", [5, 9, 20])
def test_scores_on_bin_centres_and_range_edges(kernel, dtype, variant, num_bins):
    x, y = axis_embeddings(dtype)
    assert_same(kernel, x, y, num_bins=num_bins, variant=variant)


@pytest.mark.parametrize("variant", VARIANTS)
def test_score_form_exactly_on_centres_edges_and_outside(kernel, variant):
    backend, device = kernel
    M = 5
    centres = [1.0, 0.5, 0.0, -0.5, -1.0]
    row = torch.tensor(centres + [1.0000001, -1.2, 3.0, -7.0, 0.25, 0.75, -0.25], dtype=torch.float64)
    scores = torch.stack([row, row.flip(0), row * 0.5]).to(device)
    rel = torch.zeros_like(scores, dtype=torch.bool)
    rel[:, ::3] = True
    got, want = [], []
    for be, out in ((backend, got), ("torch", want)):
        s = scores.clone().requires_grad_()
        ap = apl.quantized_ap(s, rel, num_bins=M, variant=variant, backend=be)
        out += [ap.detach(), torch.autograd.grad(ap.sum(), s)[0]]
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(got[1], want[1], rtol=0, atol=1e-10)
    outside = (scores <= -1) | (scores >= 1)
    assert (got[1][outside] == 0).all()  # zero gradient outside (lo, hi) and on its edges


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64] + LOW_DTYPES, ids=str)
@pytest.mark.parametrize("variant", VARIANTS)
def test_score_form_edge_cases_in_every_dtype(kernel, dtype, variant):
    backend, device = kernel
    s, rel = score_matrix(dtype, seed=11, device=device)

    def grads(be):
        t = s.clone().requires_grad_()
        ap = apl.quantized_ap(t, rel, num_bins=20, variant=variant, backend=be)
        w = torch.linspace(0.5, 1.5, ap.shape[0], device=device, dtype=ap.dtype)
        (gs,) = torch.autograd.grad((ap * w).sum(), [t])
        return ap.detach(), gs.detach()

    ap_k, g_k = grads(backend)
    ap_r, g_r = grads("torch")
    assert ap_k.dtype == (torch.float64 if dtype == torch.float64 else torch.float32) and g_k.dtype == dtype
    atol, grel = _low_tols(dtype)
    torch.testing.assert_close(ap_k, ap_r, rtol=0, atol=atol)
    scale = g_r.double().abs().max().item()
    torch.testing.assert_close(g_k.double(), g_r.double(), rtol=0, atol=grel * scale)


def _low_tols(dtype):
    """(AP atol, gradient atol relative to the largest entry) against the reference, which
    accumulates float32 histograms in float32; a low-precision gradient is rounded to its dtype."""
    if dtype == torch.float64:
        return 1e-10, 1e-9
    return 1e-5, {torch.float16: 4e-3, torch.bfloat16: 2e-2}.get(dtype, 1e-4)


@pytest.mark.filterwarnings("ignore:apl. rows of")  # exact_rows are not unit-norm, on purpose
@pytest.mark.parametrize("dtype", LOW_DTYPES, ids=str)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("form", ["self", "ref"])
@pytest.mark.parametrize("chunk_size", [None, 5])
def test_half_inputs_accumulate_in_float32(kernel, dtype, variant, form, chunk_size):
    """float16 / bfloat16 embeddings: scores exact in any dtype (helpers.exact_rows), AP in float32,
    the gradient in the input dtype, within one of its ulps of the reference."""
    backend, device = kernel
    x, y = exact_rows(48, seed=7, dtype=dtype, device=device), random_labels(48, 6, seed=7, device=device)
    rx, ry = (None, None) if form == "self" else (exact_rows(37, seed=8, dtype=dtype, device=device),
                                                  random_labels(37, 6, seed=8, device=device))
    kw = dict(num_bins=20, variant=variant, chunk_size=chunk_size)
    got, want = run(backend, x, y, rx, ry, **kw), run("torch", x, y, rx, ry, **kw)
    assert got[0].dtype == torch.float32 and all(g.dtype == dtype for g in got[3])
    atol, grel = _low_tols(dtype)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=atol)
    assert torch.equal(got[1], want[1])
    torch.testing.assert_close(got[2], want[2], rtol=0, atol=atol)
    for g, w in zip(got[3], want[3]):
        scale = max(w.double().abs().max().item(), 1e-30)
        torch.testing.assert_close(g.double(), w.double(), rtol=0, atol=grel * scale)
        assert torch.isfinite(g.double()).all()


@pytest.mark.parametrize("variant", VARIANTS)
def test_scores_outside_a_narrow_range(kernel, variant):
    assert_same(kernel, unit_rows(40, 3, seed=7), random_labels(40, 4, seed=7), score_range=(-0.2, 0.3), variant=variant)


@pytest.mark.parametrize("M", [2, 3, 64, 257])
def test_other_bin_counts(kernel, M):
    x, y = unit_rows(30, 6, seed=10), random_labels(30, 3, seed=10)
    for variant in VARIANTS:
        assert_same(kernel, x, y, num_bins=M, variant=variant, chunks=(None,))


def test_singletons_one_class_and_no_positive(kernel):
    x = unit_rows(30, 6, seed=8)
    singletons = torch.cat([torch.arange(20), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])])
    assert_same(kernel, x, singletons)
    assert_same(kernel, x, torch.zeros(30, dtype=torch.long))
    ap, has, loss, grads = assert_same(kernel, x, torch.arange(30))  # no positive anywhere
    assert not has.any() and loss.item() == 0 and (grads[0] == 0).all()


def test_class_balanced_and_user_weights(kernel):
    x, y = unit_rows(50, 8, seed=9), random_labels(50, 5, seed=9)
    w = torch.rand(50, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    assert_same(kernel, x, y, class_balanced=True)
    assert_same(kernel, x, y, weights=w)
    assert_same(kernel, x, y, weights=w, class_balanced=True, variant="tie_aware")


def test_streaming_equals_default(kernel):
    backend, device = kernel
    x, y = unit_rows(70, 12, torch.float32, seed=11, device=device), random_labels(70, 6, seed=11, device=device)
    full = run(backend, x, y)
    for chunk in (1, 16, 69, 70, 500):
        part = run(backend, x, y, chunk_size=chunk)
        torch.testing.assert_close(part[0], full[0], rtol=0, atol=1e-6)
        torch.testing.assert_close(part[2], full[2], rtol=0, atol=1e-6)
        torch.testing.assert_close(part[3][0], full[3][0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("chunk_size", [None, 5])
def test_non_finite_embeddings_raise(kernel, bad, chunk_size):
    backend, device = kernel
    x, y = unit_rows(12, 4, torch.float32, seed=8), random_labels(12, 3, seed=8)
    x[3, 1] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        apl.ap_loss(x.to(device), y.to(device), backend=backend, chunk_size=chunk_size)


@pytest.mark.parametrize("chunk", [None, 7])
def test_deterministic_run_to_run(kernel, chunk):
    backend, device = kernel
    x, y = unit_rows(300, 16, torch.float32, seed=12, device=device), random_labels(300, 20, seed=12, device=device)
    results = []
    for _ in range(3):
        xr = x.clone().requires_grad_()
        loss = apl.ap_loss(xr, y, backend=backend, chunk_size=chunk, variant="tie_aware")
        loss.backward()
        results.append((loss.detach(), xr.grad))
    for loss, grad in results[1:]:
        assert torch.equal(loss, results[0][0]) and torch.equal(grad, results[0][1])
