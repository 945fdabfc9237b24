"""The public entry points compile with torch.compile(fullgraph=True) on every backend and device
(the backend is resolved once while tracing; the reference's data checks become in-graph
assertions), and give the eager values and gradients."""
import importlib.util

import pytest
import torch

import apl
from helpers import BACKENDS as PAIRS, needs_cuda, random_labels, unit_rows

# Every (backend, device) pair, and "auto" on each device.
BACKENDS = PAIRS + [pytest.param(("auto", "cpu"), id="auto-cpu"),
                    pytest.param(("auto", "cuda"), marks=needs_cuda, id="auto-cuda")]
COMPILERS = ["aot_eager", "inductor"]


def _compiled(fn, compiler):
    torch._dynamo.reset()
    return torch.compile(fn, fullgraph=True, backend=compiler)


@pytest.mark.parametrize("compiler", COMPILERS)
@pytest.mark.parametrize("chunk_size", [None, 8])
@pytest.mark.parametrize("backend_on", BACKENDS)
def test_aploss_fullgraph(backend_on, chunk_size, compiler):
    backend, device = backend_on
    if compiler == "inductor" and device == "cuda" and importlib.util.find_spec("triton") is None:
        pytest.skip("inductor on CUDA needs triton")
    x, y = unit_rows(24, 6, torch.float32, seed=40, device=device), random_labels(24, 4, seed=40, device=device)
    w = torch.rand(24, generator=torch.Generator().manual_seed(1)).to(device)
    loss = apl.APLoss(backend=backend, chunk_size=chunk_size, class_balanced=True)

    def step(e):
        return loss(e * 3.0, y, query_weights=w)  # normalize=True inside the graph

    xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
    le, lc = step(xe), _compiled(step, compiler)(xc)
    le.backward()
    lc.backward()
    torch.testing.assert_close(lc, le, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(xc.grad, xe.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("backend_on", BACKENDS)
def test_per_query_ap_and_reference_set_fullgraph(backend_on):
    backend, device = backend_on
    q, ql = unit_rows(10, 5, torch.float32, seed=41, device=device), random_labels(10, 3, seed=41, device=device)
    x, xl = unit_rows(30, 5, torch.float32, seed=42, device=device), random_labels(30, 3, seed=42, device=device)

    def f(a):
        ap, has_pos = apl.per_query_ap(a, ql, x, xl, backend=backend, variant="tie_aware")
        return (ap * has_pos).sum()

    ae, ac = q.clone().requires_grad_(), q.clone().requires_grad_()
    le, lc = f(ae), _compiled(f, "aot_eager")(ac)
    le.backward()
    lc.backward()
    torch.testing.assert_close(lc, le)
    torch.testing.assert_close(ac.grad, ae.grad)


@pytest.mark.parametrize("backend_on", BACKENDS)
def test_quantized_ap_fullgraph(backend_on):
    backend, device = backend_on
    g = torch.Generator().manual_seed(43)
    s = (torch.rand(6, 40, generator=g) * 2 - 1).to(device)
    rel = (torch.rand(6, 40, generator=g) < 0.3).float().to(device)  # 0/1 floats: checked inside the graph

    def f(scores):
        return apl.quantized_ap(scores, rel, backend=backend).sum()

    se, sc = s.clone().requires_grad_(), s.clone().requires_grad_()
    le, lc = f(se), _compiled(f, "aot_eager")(sc)
    le.backward()
    lc.backward()
    torch.testing.assert_close(lc, le)
    torch.testing.assert_close(sc.grad, se.grad)


def test_reference_still_stops_on_nan_under_compile():
    """The reference's NaN check is an in-graph assertion when compiled: no NaN loss, ever."""
    x, y = unit_rows(8, 3, torch.float32, seed=44), random_labels(8, 2, seed=44)
    x[3, 1] = float("nan")
    f = _compiled(lambda e: apl.ap_loss(e, y, backend="torch"), "aot_eager")
    with pytest.raises(RuntimeError, match="embeddings contain NaN or Inf values"):
        f(x)
    w = torch.tensor([1.0] * 7 + [-1.0])
    g = _compiled(lambda e: apl.ap_loss(e, y, query_weights=w, backend="torch"), "aot_eager")
    with pytest.raises(RuntimeError, match="query_weights must be finite and >= 0"):
        g(unit_rows(8, 3, torch.float32, seed=44))


def test_bad_input_message_survives_compile():
    """Under fullgraph=True Dynamo turns the TypeError into `Unsupported: Observed exception`; the
    docs (docs/api.md) tell users the original message is in its text: keep it there."""
    f = _compiled(lambda e, y: apl.ap_loss(e, y), "aot_eager")
    with pytest.raises(Exception, match="labels must be an integer tensor"):
        f(unit_rows(8, 3, torch.float32, seed=1), torch.zeros(8))


@pytest.mark.parametrize("name", ["smooth_ap", "recall_at_k"])
@pytest.mark.parametrize("chunk_size", [None, 8])
@pytest.mark.parametrize("backend_on", BACKENDS)
def test_rank_losses_fullgraph(backend_on, chunk_size, name):
    backend, device = backend_on
    x, y = unit_rows(24, 6, torch.float32, seed=45, device=device), random_labels(24, 4, seed=45, device=device)
    loss = (apl.SmoothAPLoss if name == "smooth_ap" else apl.RecallAtKLoss)(backend=backend, chunk_size=chunk_size,
                                                                          temperature=0.05)

    def step(e):
        return loss(e * 3.0, y)

    xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
    le, lc = step(xe), _compiled(step, "aot_eager")(xc)
    le.backward()
    lc.backward()
    torch.testing.assert_close(lc, le, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(xc.grad, xe.grad, rtol=1e-4, atol=1e-6)
