"""The rank surrogates' compiled kernel against their PyTorch reference on the same device (each
test runs once per device present): Smooth-AP and Recall@k, every query mode, self retrieval and
reference sets (with and without the queries among them), streaming, and the edge cases: ties,
one class, no positive, raw dot products beyond [-1, 1], a temperature so small that the kernel
takes its exp-per-pair path, query weights, half-precision inputs."""
import pytest
import torch

import apl
from helpers import KERNELS, LOW_DTYPES, exact_rows, random_labels, unit_rows

pytestmark = pytest.mark.parametrize("kernel", KERNELS)
TOL = {torch.float32: 2e-5, torch.float64: 1e-10}
LOSSES = {"smooth_ap": (apl.per_query_smooth_ap, apl.smooth_ap_loss),
          "recall_at_k": (apl.per_query_recall_at_k, apl.recall_at_k_loss)}


def run(name, backend, x, y, rx=None, ry=None, weights=None, **kw):
    per_query, loss_fn = LOSSES[name]
    x = x.detach().clone().requires_grad_()
    rx = None if rx is None else rx.detach().clone().requires_grad_()
    value, has = per_query(x, y, rx, ry, backend=backend, **{k: v for k, v in kw.items() if k != "class_balanced"})
    loss = loss_fn(x, y, rx, ry, query_weights=weights, backend=backend, **kw)
    grads = torch.autograd.grad(loss, [x] if rx is None else [x, rx])
    return value.detach(), has, loss.detach(), grads


def assert_same(kernel, name, x, y, rx=None, ry=None, weights=None, chunks=(None, 3), tol=None, **kw):
    backend, device = kernel
    x, y = x.to(device), y.to(device)
    rx, ry = (None if rx is None else rx.to(device)), (None if ry is None else ry.to(device))
    weights = None if weights is None else weights.to(device)
    tol = TOL[x.dtype] if tol is None else tol
    for chunk in chunks:
        want = run(name, "torch", x, y, rx, ry, weights, chunk_size=chunk, **kw)
        got = run(name, backend, x, y, rx, ry, weights, chunk_size=chunk, **kw)
        torch.testing.assert_close(got[0], want[0], rtol=0, atol=tol)
        assert torch.equal(got[1], want[1])
        torch.testing.assert_close(got[2], want[2], rtol=0, atol=tol)
        for g, w in zip(got[3], want[3]):
            scale = max(w.abs().max().item(), 1.0)
            torch.testing.assert_close(g, w, rtol=0, atol=tol * scale)
            assert torch.isfinite(g).all()
    return want


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("include_query", [False, True])
@pytest.mark.parametrize("B,D,C", [(48, 8, 6), (33, 5, 3)])
def test_random_batches(kernel, name, dtype, include_query, B, D, C):
    assert_same(kernel, name, unit_rows(B, D, dtype, seed=B), random_labels(B, C, seed=D), temperature=0.05,
                include_query=include_query)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("include_query", [False, True])
def test_reference_sets(kernel, name, include_query):
    q, ql = unit_rows(12, 6, seed=1), random_labels(12, 4, seed=1)
    x, xl = unit_rows(40, 6, seed=2), random_labels(40, 4, seed=2)
    if not include_query:  # a separate database
        assert_same(kernel, name, q, ql, x, xl, temperature=0.05)
    # the queries among the items (a cross-batch memory): each query's own row treated by the mode
    assert_same(kernel, name, q, ql, torch.cat([q, x]), torch.cat([ql, xl]), temperature=0.05,
                ref_includes_queries=True, include_query=include_query)


@pytest.mark.parametrize("name", LOSSES)
def test_ties_one_class_and_no_positive(kernel, name):
    base = unit_rows(6, 4, seed=3)
    assert_same(kernel, name, base.repeat(4, 1), torch.arange(24) % 3, temperature=0.05)  # every score many times
    x = unit_rows(20, 5, seed=4)
    assert_same(kernel, name, x, torch.zeros(20, dtype=torch.long), temperature=0.05)  # every item a positive
    value, has, loss, grads = assert_same(kernel, name, x, torch.arange(20), temperature=0.05)  # no positive
    assert not has.any() and loss.item() == 0 and (grads[0] == 0).all() and (value == 0).all()


@pytest.mark.parametrize("name", LOSSES)
def test_raw_dot_products_and_a_tiny_temperature(kernel, name):
    """Scores spread over many temperatures: unnormalised rows (dot products up to ~9) with the
    default 0.01, and unit rows with 1e-4: beyond 700 temperatures the kernel computes one exp per
    pair instead of sharing them."""
    x, y = unit_rows(30, 4, seed=5) * 3.0, random_labels(30, 3, seed=5)
    with pytest.warns(UserWarning, match="not L2-normalised"):
        assert_same(kernel, name, x, y, chunks=(None,), temperature=0.01)
    assert_same(kernel, name, unit_rows(30, 4, seed=6), y, temperature=1e-4)


@pytest.mark.parametrize("name", LOSSES)
def test_recall_k_values_and_weights(kernel, name):
    x, y = unit_rows(40, 6, seed=7), random_labels(40, 5, seed=7)
    w = torch.rand(40, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    kw = dict(k=(1, 3, 50), k_temperature=(1.0, 0.5, 2.0)) if name == "recall_at_k" else {}
    assert_same(kernel, name, x, y, weights=w, temperature=0.1, **kw)
    assert_same(kernel, name, x, y, weights=w, class_balanced=True, temperature=0.1, **kw)


@pytest.mark.filterwarnings("ignore:apl. rows of")  # exact_rows are not unit-norm, on purpose
@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("dtype", LOW_DTYPES, ids=str)
def test_half_inputs_accumulate_in_float32(kernel, name, dtype):
    backend, device = kernel
    x, y = exact_rows(40, seed=8, dtype=dtype, device=device), random_labels(40, 5, seed=8, device=device)
    got, want = run(name, backend, x, y, temperature=0.05), run(name, "torch", x, y, temperature=0.05)
    assert got[0].dtype == torch.float32 and got[3][0].dtype == dtype
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=1e-5)
    scale = want[3][0].double().abs().max().item()
    torch.testing.assert_close(got[3][0].double(), want[3][0].double(), rtol=0,
                               atol={torch.float16: 4e-3, torch.bfloat16: 2e-2}[dtype] * scale)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_embeddings_raise(kernel, name, bad):
    backend, device = kernel
    x, y = unit_rows(12, 4, torch.float32, seed=9), random_labels(12, 3, seed=9)
    x[3, 1] = bad
    for chunk in (None, 5):
        with pytest.raises(ValueError, match="NaN or Inf"):
            LOSSES[name][1](x.to(device), y.to(device), backend=backend, chunk_size=chunk)


@pytest.mark.parametrize("name", LOSSES)
def test_deterministic_run_to_run(kernel, name):
    backend, device = kernel
    x, y = unit_rows(200, 16, torch.float32, seed=10, device=device), random_labels(200, 20, seed=10, device=device)
    runs = []
    for _ in range(3):
        xr = x.clone().requires_grad_()
        loss = LOSSES[name][1](xr, y, backend=backend)
        loss.backward()
        runs.append((loss.detach(), xr.grad))
    for loss, grad in runs[1:]:
        assert torch.equal(loss, runs[0][0]) and torch.equal(grad, runs[0][1])


@pytest.mark.parametrize("name", LOSSES)
def test_shared_exponentials_neither_overflow_nor_underflow(kernel, name):
    """Two cases of the one-exp-per-item path: scores hundreds of temperatures below the row's top
    (their exponentials' product underflows) and a query's own column, left out, far above its items
    (its exponential would overflow)."""
    g = torch.Generator().manual_seed(11)
    x = torch.nn.functional.normalize(torch.randn(30, 2, generator=g, dtype=torch.float64), dim=1)
    assert_same(kernel, name, x, random_labels(30, 3, seed=11), temperature=0.004, chunks=(None,))
    q = torch.tensor([[3.0, 0.0], [0.1, 0.5], [0.2, -0.4], [0.0, 0.3]], dtype=torch.float64)
    with pytest.warns(UserWarning, match="not L2-normalised"):
        assert_same(kernel, name, q, torch.tensor([0, 0, 1, 0]), temperature=0.01, chunks=(None,))


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rows_on_both_sides_of_the_item_major_limit(kernel, name, dtype):
    """The CPU kernel runs rows with at most 64 positives item-major (every item once against all
    positives) and rows with more positive by positive: queries with 4, 63, 64, 65 and 130
    positives, scores within one saturation window (no window path), against the reference."""
    sizes = [5, 64, 65, 66, 131]
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])
    x = unit_rows(len(y), 24, dtype, seed=17)
    assert_same(kernel, name, x, y, temperature=0.05, chunks=(None, 100))
