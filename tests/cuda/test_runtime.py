"""The CUDA kernels at run time, on a GPU (skipped cleanly without one, or when apl was built
without its CUDA kernels). What every device shares (parity with the reference in every dtype,
gradcheck, opcheck, torch.compile, edge cases) runs per device in tests/ops/; here only what is
CUDA's own: agreement with the CPU kernel on bitwise-equal scores (and, for the rank surrogates, on
rows long enough for the multi-tile scan and the spill kernel), the launch and bin limits, bitwise
determinism with many blocks contending, CUDA-graph capture of forward + backward, the current
stream, and a second device, for AP_Q, Smooth-AP and Recall@k.
"""
from __future__ import annotations

import pytest
import torch

import apl
from helpers import VARIANTS, exact_rows, needs_cpu_kernel, needs_cuda_kernel, random_labels, score_matrix, unit_rows

needs_cuda = needs_cuda_kernel
ALL_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _tols(dtype, vs_reference: bool = False):
    """(ap/loss atol, gradient atol relative to the largest gradient entry).

    Against the compiled CPU kernel on bitwise-equal scores only round-off of the final GEMMs and
    of ap_math.h differs; the pure-PyTorch reference accumulates its float32 histograms and
    coefficients in float32, hence the looser bound against it."""
    if dtype == torch.float64:
        return (1e-10, 1e-9)
    ap_tol, grad_tol = (1e-5, 1e-4) if vs_reference else (2e-6, 2e-5)
    low = {torch.float16: 4e-3, torch.bfloat16: 2e-2}  # one ulp of the gradient's own dtype
    return ap_tol, max(grad_tol, low.get(dtype, 0.0))


def _run_api(backend, x, y, rx=None, ry=None, **kw):
    x = x.detach().clone().requires_grad_()
    rx = None if rx is None else rx.detach().clone().requires_grad_()
    ap, has = apl.per_query_ap(x, y, rx, ry, backend=backend, **kw)
    loss = apl.ap_loss(x, y, rx, ry, backend=backend, **kw)
    grads = torch.autograd.grad(loss, [x] if rx is None else [x, rx])
    return ap.detach(), has, loss.detach(), [g.detach() for g in grads]


def _assert_results_close(got, want, dtype, vs_reference=False):
    atol, grel = _tols(dtype, vs_reference)
    dev = got[0].device
    torch.testing.assert_close(got[0].to(dev), want[0].to(dev), rtol=0, atol=atol)
    assert torch.equal(got[1].cpu(), want[1].cpu())
    torch.testing.assert_close(got[2].to(dev), want[2].to(dev), rtol=0, atol=atol)
    for g, w in zip(got[3], want[3]):
        g, w = g.double().cpu(), w.double().cpu()
        scale = max(w.abs().max().item(), 1e-30)
        torch.testing.assert_close(g, w, rtol=0, atol=grel * scale)
        assert torch.isfinite(g).all()


def _inputs(dtype, form, seed):
    if dtype == torch.float64:
        x, y = unit_rows(48, 7, seed=seed), random_labels(48, 6, seed=seed)
        rx, ry = unit_rows(37, 7, seed=seed + 1), random_labels(37, 6, seed=seed + 1)
    else:  # bitwise identical scores on both devices (helpers.exact_rows)
        x, y = exact_rows(48, seed=seed), random_labels(48, 6, seed=seed)
        rx, ry = exact_rows(37, seed=seed + 1), random_labels(37, 6, seed=seed + 1)
    x, rx = x.to(dtype), rx.to(dtype)
    if form == "self":
        return x, y, None, None
    return x, y, rx, ry


@needs_cuda
@needs_cpu_kernel
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("form", ["self", "ref"])
@pytest.mark.parametrize("chunk_size", [None, 5])
def test_cuda_kernel_agrees_with_the_cpu_kernel(dtype, variant, form, chunk_size):
    x, y, rx, ry = _inputs(dtype, form, seed=7)
    kw = dict(num_bins=20, variant=variant, chunk_size=chunk_size)
    cuda = lambda t: None if t is None else t.cuda()
    got = _run_api("cuda", cuda(x), cuda(y), cuda(rx), cuda(ry), **kw)
    cpu = _run_api("cpu", x, y, rx, ry, **kw)
    _assert_results_close(got, cpu, dtype)


@needs_cuda
@needs_cpu_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("variant", VARIANTS)
def test_row_kernels_match_cpu_kernel_on_same_scores(dtype, variant):
    """Same scores on both devices, ops called directly: the per-row AP, counts and coefficients
    agree to double round-off (FMA contraction in ap_math.h is the only allowed difference), and
    the score gradient takes the same bin everywhere."""
    s, rel = score_matrix(dtype, seed=12, B=33, N=300)
    outs = {}
    for dev in ("cpu", "cuda"):
        ap, npos, coef = torch.ops.apl.ap_scores(s.to(dev), rel.to(dev), 20, -1.0, 1.0, VARIANTS.index(variant))
        grad_ap = torch.linspace(-1, 1, s.shape[0], dtype=torch.float64, device=dev)
        G = torch.ops.apl.ap_scores_backward(grad_ap, s.to(dev), rel.to(dev), coef, 20, -1.0, 1.0)
        outs[dev] = [t.cpu() for t in (ap, npos, coef, G)]
    (ap0, n0, c0, g0), (ap1, n1, c1, g1) = outs["cpu"], outs["cuda"]
    assert torch.equal(n0, n1)
    torch.testing.assert_close(ap1, ap0, rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=0)
    torch.testing.assert_close(c1, c0, rtol=1e-10, atol=1e-13)
    # slopes are differences of adjacent coefficients: allow their round-off relative to max |G|
    g_tol = 1e-6 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(g1, g0, rtol=g_tol, atol=g_tol * 1e-2 * g0.abs().max().item())
    edge = ~((s > -1) & (s < 1))  # on or outside the range edges: zero gradient on both
    assert torch.equal(g1[edge], torch.zeros_like(g1[edge])) and torch.equal(g0[edge], g1[edge])


@needs_cuda
def test_launch_limits_raise_value_error():
    """Sizes past a launch's limits raise a ValueError naming the limit, before any allocation
    (empty or narrow tensors: nothing large is needed to reach them)."""
    s = torch.empty(2**31, 0, device="cuda")
    with pytest.raises(ValueError, match=r"at most 2147483647 query rows per launch"):
        torch.ops.apl.ap_scores(s, torch.empty(2**31, 0, dtype=torch.bool, device="cuda"), 20, -1.0, 1.0, 0)
    B = 65535 * 32 + 1
    x, y = torch.zeros(B, 1, device="cuda"), torch.zeros(B, dtype=torch.int64, device="cuda")
    with pytest.raises(ValueError, match=r"B <= 2097120 .*got B = 2097121; pass chunk_size"):
        torch.ops.apl.ap_self(x, y, 20, -1.0, 1.0, 0, 0)


@needs_cuda
def test_bin_limit():
    x, y = unit_rows(12, 4, seed=9).cuda(), random_labels(12, 3, seed=9).cuda()
    big = 3056  # the largest M the CUDA kernels handle (csrc/cuda/ap_kernels.cuh)
    _assert_results_close(_run_api("cuda", x, y, num_bins=big), _run_api("torch", x, y, num_bins=big),
                          torch.float64, vs_reference=True)
    with pytest.raises((ValueError, RuntimeError), match="num_bins"):
        torch.ops.apl.ap_self(x, y, big + 1, -1.0, 1.0, 0, 0)


# --- the rank surrogates' long rows ----------------------------------------------------------

RANK_LOSSES = {"smooth_ap": apl.smooth_ap_loss, "recall_at_k": apl.recall_at_k_loss}


def _long_rows(dtype):
    """The emulator's long-row shape (tests/cuda/test_emulator_rank.py): 4 queries against N = 2600
    items with 5, 1300, 1295 and 0 positives (the two long rows hold more positives than the
    kernel's shared-memory table, so they take the spill kernel, in several tiles), and 300 items
    tied on every row. Below float64, rows whose scores every GEMM computes exactly (helpers.exact_rows),
    so that both devices rank the same scores."""
    n = 2600
    if dtype == torch.float64:
        q, x = unit_rows(4, 8, dtype, seed=41), unit_rows(n, 8, dtype, seed=42)
    else:
        q, x = exact_rows(4, seed=41, dtype=dtype), exact_rows(n, seed=42, dtype=dtype)
    x[2000:2300] = x[2000]
    xl = torch.full((n,), 2, dtype=torch.int64)
    xl[:5], xl[5:1305] = 0, 1
    xl = xl[torch.randperm(n, generator=torch.Generator().manual_seed(43))]
    return q, torch.tensor([0, 1, 2, 3]), x, xl


def _rank_results(name, backend, device, dtype, temperature):
    """Per-query values, which queries have a positive, the loss and its gradients (queries,
    items) of `name` on the long rows, on `device` through `backend`, returned on the CPU."""
    q, ql, x, xl = (t.to(device) for t in _long_rows(dtype))
    q, x = q.requires_grad_(), x.requires_grad_()
    per_query = apl.per_query_smooth_ap if name == "smooth_ap" else apl.per_query_recall_at_k
    value, has = per_query(q, ql, x, xl, backend=backend, temperature=temperature)
    loss = RANK_LOSSES[name](q, ql, x, xl, backend=backend, temperature=temperature)
    return [t.detach().cpu() for t in (value, has, loss, *torch.autograd.grad(loss, [q, x]))]


def _assert_rank_close(got, want, dtype):
    """Both kernels accumulate in double; what differs is the order of the sums and of the final
    GEMMs: double round-off in float64, float32 round-off relative to the largest entry below."""
    rtol, atol = (1e-12, 1e-12) if dtype == torch.float64 else (1e-5, 1e-6)
    assert got[1].tolist() == [True, True, True, False] and torch.equal(got[1], want[1])
    for g, w in zip(got[:1] + got[2:], want[:1] + want[2:]):
        torch.testing.assert_close(g, w, rtol=rtol, atol=atol * max(w.abs().max().item(), 1.0))
        assert torch.isfinite(g).all()


@needs_cuda
@needs_cpu_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", RANK_LOSSES)
@pytest.mark.parametrize("temperature", [0.01, 1e-3], ids=["tau-0.01", "exp-per-pair"])
@pytest.mark.filterwarnings("ignore:apl. rows of .* are not L2-normalised")  # exact_rows: on purpose
def test_rank_long_rows_agree_with_the_cpu_kernel(dtype, name, temperature):
    _assert_rank_close(_rank_results(name, "cuda", "cuda", dtype, temperature),
                       _rank_results(name, "cpu", "cpu", dtype, temperature), dtype)


# --- determinism, CUDA graphs, devices ----------------------------------------------------------

# The batch losses whose CUDA path these tests run (each one's own kernel: AP_Q's, the rank kernel).
LOSS_FNS = {"ap": apl.ap_loss, "smooth_ap": apl.smooth_ap_loss, "recall_at_k": apl.recall_at_k_loss}


def _fwd_bwd(x, y, loss="ap", **kw):
    x = x.detach().clone().requires_grad_()
    value = LOSS_FNS[loss](x, y, backend="cuda", **kw)
    (g,) = torch.autograd.grad(value, [x])
    return value.detach(), g


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("chunk_size", [None, 300])
def test_bitwise_deterministic(dtype, chunk_size):
    # Large enough that many warps and blocks contend for the same bins.
    x, y = unit_rows(1024, 64, dtype, seed=40).cuda(), random_labels(1024, 50, seed=40).cuda()
    runs = [_fwd_bwd(x, y, chunk_size=chunk_size) for _ in range(3)]
    for loss, g in runs[1:]:
        assert torch.equal(loss, runs[0][0])
        assert torch.equal(g, runs[0][1])
    outs = [torch.ops.apl.ap_self(x, y, 20, -1.0, 1.0, v, 0) for v in (0, 1, 2) for _ in range(2)]
    for a, b in zip(outs[::2], outs[1::2]):
        for ta, tb in zip(a, b):
            assert torch.equal(ta, tb)
    # score form, one long row per query
    s = (torch.rand(64, 50000, device="cuda") * 2 - 1).to(dtype)
    rel = torch.rand(64, 50000, device="cuda") < 0.05
    r1 = torch.ops.apl.ap_scores(s, rel, 20, -1.0, 1.0, 0)
    r2 = torch.ops.apl.ap_scores(s, rel, 20, -1.0, 1.0, 0)
    for ta, tb in zip(r1, r2):
        assert torch.equal(ta, tb)


@needs_cuda
@pytest.mark.parametrize("loss", ["smooth_ap", "recall_at_k"])
@pytest.mark.parametrize("chunk_size", [None, 300])
def test_rank_bitwise_deterministic(loss, chunk_size):
    x, y = unit_rows(1024, 64, torch.float32, seed=40).cuda(), random_labels(1024, 50, seed=40).cuda()
    runs = [_fwd_bwd(x, y, loss, chunk_size=chunk_size) for _ in range(3)]
    for value, g in runs[1:]:
        assert torch.equal(value, runs[0][0]) and torch.equal(g, runs[0][1])


@needs_cuda
@pytest.mark.parametrize("loss", list(LOSS_FNS))
@pytest.mark.parametrize("chunk_size", [None, 24])
@pytest.mark.parametrize("form", ["self", "ref"])
def test_cuda_graph_capture_forward_backward(loss, chunk_size, form):
    B, D = 96, 32
    y = random_labels(B, 8, seed=41).cuda()
    static_x = unit_rows(B, D, torch.float32, seed=41).cuda().requires_grad_()
    static_r = unit_rows(70, D, torch.float32, seed=42).cuda().requires_grad_() if form == "ref" else None
    ry = random_labels(70, 8, seed=42).cuda() if form == "ref" else None
    params = [static_x] if static_r is None else [static_x, static_r]

    fn = LOSS_FNS[loss]

    def step():
        value = fn(static_x, y, static_r, ry, backend="cuda", chunk_size=chunk_size)
        value.backward()
        return value

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture, as torch.cuda.graphs requires
        for _ in range(3):
            for p in params:
                p.grad = None
            step()
    torch.cuda.current_stream().wait_stream(side)
    for p in params:
        p.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = step()

    for seed in (43, 44):
        new = [unit_rows(p.shape[0], D, torch.float32, seed=seed + i).cuda() for i, p in enumerate(params)]
        with torch.no_grad():
            for p, n in zip(params, new):
                p.copy_(n)
        graph.replay()
        torch.cuda.synchronize()
        eager = [n.clone().requires_grad_() for n in new]
        value = fn(eager[0], y, eager[1] if form == "ref" else None, ry, backend="cuda", chunk_size=chunk_size)
        value.backward()
        torch.testing.assert_close(static_loss, value.detach(), rtol=0, atol=1e-6)
        for p, e in zip(params, eager):
            torch.testing.assert_close(p.grad, e.grad, rtol=1e-5, atol=1e-7)


@needs_cuda
@pytest.mark.parametrize("loss", list(LOSS_FNS))
def test_current_stream_is_used(loss):
    x, y = unit_rows(256, 32, torch.float32, seed=45).cuda(), random_labels(256, 10, seed=45).cuda()
    want = _fwd_bwd(x, y, loss)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        got = _fwd_bwd(x, y, loss)
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@needs_cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_second_device():
    x, y = unit_rows(40, 8, torch.float32, seed=46), random_labels(40, 4, seed=46)
    a = _run_api("cuda", x.to("cuda:0"), y.to("cuda:0"))
    b = _run_api("cuda", x.to("cuda:1"), y.to("cuda:1"))
    assert b[0].device == torch.device("cuda:1")
    _assert_results_close(b, a, torch.float32)


@needs_cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
@pytest.mark.parametrize("loss", ["smooth_ap", "recall_at_k"])
def test_rank_second_device(loss):
    """The rank kernel launches on its inputs' device (the op's device guard), not the current one."""
    x, y = unit_rows(40, 8, torch.float32, seed=46), random_labels(40, 4, seed=46)
    a = _fwd_bwd(x.to("cuda:0"), y.to("cuda:0"), loss)
    with torch.cuda.device(0):
        b = _fwd_bwd(x.to("cuda:1"), y.to("cuda:1"), loss)
    assert b[0].device == torch.device("cuda:1") and b[1].device == torch.device("cuda:1")
    assert torch.equal(a[0].cpu(), b[0].cpu()) and torch.equal(a[1].cpu(), b[1].cpu())
