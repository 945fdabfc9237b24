"""Self-test of the compiled kernels against the pure-PyTorch reference, on the same device.

`selftest()` runs every compiled backend present (the CPU kernel; the CUDA kernel on each visible
GPU) on small random batches and compares loss, per-query AP (or Smooth-AP / Recall@k) and
gradients with the reference.
`quick_check(device)` is its small version, which `backend="auto"` runs once per device and process
before it trusts the CUDA kernels (apl/ops/dispatch.py; APL_SKIP_SELFTEST=1 skips it).
It calls the loss core (apl/ops/core.py) with each backend named, so it neither chooses a backend
nor warns.

The inputs are chosen so that any GEMM computes the scores exactly (embedding entries are
multiples of 1/8 in 16 dimensions, so every score is a multiple of 1/64): the kernel and the
reference then bin identical scores, and a difference means a wrong kernel, not round-off.
"""
from __future__ import annotations

import time
from typing import Iterator, Optional, Sequence

import torch

from . import core, extension
from .variants import QUERY_EXCLUDED, QUERY_ITEM_AND_POSITIVE, QUERY_ITEM_ONLY, RANK_KINDS

__all__ = ["selftest", "check_backend", "quick_check"]

# Largest error tolerated, relative to 1 for AP and loss and to the largest reference gradient
# entry for gradients. The float32 reference accumulates its histograms in float32 while the
# kernels accumulate in double, hence the looser float32 bound.
TOLERANCE = {torch.float32: 5e-4, torch.float64: 1e-9}
DEFAULT_SIZES = (24, 61)
AUTO_SIZES = (12,)
DIM = 16
# The long row: a few queries against a reference set that starts with them (self_offset 0) and
# holds one class of LONG_CLASS in LONG_N items, so that the CUDA rank kernel scans many tiles of its
# 256 threads and spills the rows with more positives than its shared-memory table holds (480).
LONG_N, LONG_CLASS, LONG_QUERIES = 600, 540, 4
SMALL_TEMPERATURE = 1e-3  # score spread / temperature > 700: the exponential-per-pair path
_VARIANTS = ("ap_q", "tie_aware", "tie_aware_simplified")


def _grid_rows(n: int, g: torch.Generator, dtype: torch.dtype, device) -> torch.Tensor:
    """Rows with entries in {-1/4, -1/8, 0, 1/8, 1/4}: dot products are exact multiples of 1/64
    in [-1, 1] in any dtype and any GEMM order, with many ties."""
    x = torch.randint(-2, 3, (n, DIM), generator=g).to(torch.float64) / 8
    return x.to(device=device, dtype=dtype)


def _labels(n: int, g: torch.Generator, device) -> torch.Tensor:
    y = torch.randint(0, max(2, n // 4), (n,), generator=g)
    y[0] = 10**6  # a query without a positive
    return y.to(device)


def _score_matrix(B: int, N: int, M: int, g: torch.Generator, dtype, device):
    """Scores on bin centres, on and beyond the range edges, and tied, with a relevance mask."""
    lo, hi = -1.0, 1.0
    delta = (hi - lo) / (M - 1)
    s = torch.rand(B, N, generator=g, dtype=torch.float64) * 2.4 - 1.2
    centres = hi - delta * torch.randint(0, M, (B, N), generator=g).to(torch.float64)
    s = torch.where(torch.rand(B, N, generator=g) < 0.3, centres, s)
    s[:, :3] = torch.tensor([1.0, -1.0, 0.25], dtype=torch.float64)
    s[1, :] = 0.375  # one big tie
    rel = torch.rand(B, N, generator=g) < 0.3
    rel[2] = False
    return s.to(device=device, dtype=dtype), rel.to(device)


def _cases(B: int, quick: bool) -> Iterator[tuple[str, dict]]:
    """(name, arguments) of each comparison for batch size B."""
    stream = max(1, B // 3)
    variants = _VARIANTS[:1] if quick else _VARIANTS
    for v in variants:
        yield f"self/{v}", dict(form="self", variant=v, num_bins=20)
    yield "self/streaming", dict(form="self", variant="tie_aware", num_bins=20, chunk_size=stream)
    yield "self/bin-centres", dict(form="self", variant="ap_q", num_bins=17)
    for v in variants:
        yield f"reference-set/{v}", dict(form="ref", variant=v, num_bins=20)
    yield "reference-set/streaming", dict(form="ref", variant="tie_aware_simplified", num_bins=20,
                                          chunk_size=stream)
    yield "reference-set/includes-queries", dict(form="long", variant="ap_q", num_bins=20)
    for v in variants:
        yield f"scores/{v}", dict(form="scores", variant=v, num_bins=17)
    for kind in RANK_KINDS:  # the rank surrogates: every query mode, streaming, a reference set
        yield f"{kind}/self", dict(form="rank", kind=kind, mode=QUERY_EXCLUDED)
        yield f"{kind}/small-temperature", dict(form="rank", kind=kind, mode=QUERY_EXCLUDED,
                                                temperature=SMALL_TEMPERATURE)
        yield f"{kind}/long-row", dict(form="rank-long", kind=kind, mode=QUERY_EXCLUDED)
        if not quick:
            mode = QUERY_ITEM_AND_POSITIVE if kind == "smooth_ap" else QUERY_ITEM_ONLY
            yield f"{kind}/self-included", dict(form="rank", kind=kind, mode=mode)
            yield f"{kind}/streaming", dict(form="rank", kind=kind, mode=QUERY_EXCLUDED, chunk_size=stream)
            yield f"{kind}/reference-set", dict(form="rank-ref", kind=kind, mode=QUERY_EXCLUDED)


def _run_case(backend: str, inputs: dict, case: dict) -> list[torch.Tensor]:
    """[per-query AP, loss, gradients...] of one backend on one case."""
    if case["form"].startswith("rank"):
        return _run_rank_case(backend, inputs, case)
    kw = dict(num_bins=case["num_bins"], score_range=(-1.0, 1.0), variant=case["variant"], backend=backend)
    if case["form"] == "scores":
        s = inputs["s"].detach().clone().requires_grad_()
        ap = core.scores_ap(s, inputs["rel"], **kw)
        w = torch.linspace(0.5, 1.5, ap.shape[0], dtype=ap.dtype, device=ap.device)
        loss = 1 - (ap * w).mean()
        (gs,) = torch.autograd.grad(loss, [s])
        return [ap.detach(), loss.detach(), gs]
    kw["chunk_size"] = case.get("chunk_size") or 0
    if case["form"] == "long":
        x, y, rx, ry = _long_row(inputs)
        leaves = [x, rx]
        kw["self_offset"] = 0
    else:
        x, y = inputs["x"].detach().clone().requires_grad_(), inputs["y"]
        leaves = [x]
        rx = ry = None
        if case["form"] == "ref":
            rx = inputs["rx"].detach().clone().requires_grad_()
            ry = inputs["ry"]
            leaves.append(rx)
    ap, npos = core.per_query(x, y, rx, ry, **kw)
    loss = core.weighted_loss(ap, npos > 0)
    grads = torch.autograd.grad(loss, leaves)
    return [ap.detach(), loss.detach(), *grads]


def _run_rank_case(backend: str, inputs: dict, case: dict) -> list[torch.Tensor]:
    """[per-query value, loss, gradients...] of one backend on a rank-surrogate case."""
    x, y = inputs["x"].detach().clone().requires_grad_(), inputs["y"]
    leaves, rx, ry, offset = [x], None, None, -1
    if case["form"] == "rank-ref":
        rx = inputs["rx"].detach().clone().requires_grad_()
        ry = inputs["ry"]
        leaves.append(rx)
    elif case["form"] == "rank-long":
        x, y, rx, ry = _long_row(inputs)
        leaves, offset = [x, rx], 0
    value, npos = core.rank_per_query(x, y, rx, ry, kind=RANK_KINDS[case["kind"]],
                                      temperature=case.get("temperature", 0.05), ks=(1.0, 2.0, 4.0),
                                      k_temperatures=(1.0, 0.5, 1.0), query_mode=case["mode"], backend=backend,
                                      chunk_size=case.get("chunk_size") or 0, self_offset=offset)
    loss = core.weighted_loss(value, npos > 0)
    return [value.detach(), loss.detach(), *torch.autograd.grad(loss, leaves)]


def _compare(got: list[torch.Tensor], want: list[torch.Tensor]) -> float:
    err = 0.0
    for k, (a, b) in enumerate(zip(got, want)):
        a, b = a.double(), b.double()
        if not torch.isfinite(a).all():
            return float("inf")
        diff = (a - b).abs().max().item() if a.numel() else 0.0
        scale = max(b.abs().max().item(), 1e-12) if k >= 2 else 1.0  # gradients: relative
        err = max(err, diff / scale)
    return err


def _long_row(inputs: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(queries, labels, reference set, labels): the reference set starts with the queries."""
    rx = inputs["long_x"].detach().clone().requires_grad_()
    return rx[:LONG_QUERIES], inputs["long_y"][:LONG_QUERIES], rx, inputs["long_y"]


def _inputs(B: int, dtype, device, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    s, rel = _score_matrix(B, B + 7, 17, g, dtype, device)
    long_y = torch.randint(0, 8, (LONG_N,), generator=g)
    long_y[torch.randperm(LONG_N, generator=g)[:LONG_CLASS]] = 8
    long_y[:LONG_QUERIES] = torch.tensor([8, 8, 8, 10**6])  # the big class, and a query without a positive
    return dict(x=_grid_rows(B, g, dtype, device), y=_labels(B, g, device),
                rx=_grid_rows(B + 5, g, dtype, device), ry=_labels(B + 5, g, device), s=s, rel=rel,
                long_x=_grid_rows(LONG_N, g, dtype, device), long_y=long_y.to(device))



def check_backend(kind: str, device: torch.device, sizes: Sequence[int] = DEFAULT_SIZES,
                  quick: bool = False) -> dict:
    """Compare backend `kind` ("cpu" or "cuda") with the reference on `device`.

    Returns {"ok", "max_error", "reason", "time"}; a raised exception (a failed launch, for
    example) is a failure whose reason names it.
    """
    t0 = time.perf_counter()
    worst, failures, name = 0.0, [], "setup"
    dtypes = (torch.float32, torch.float64)
    try:
        for B in sizes:
            for dtype in dtypes:
                inputs = _inputs(B, dtype, device, seed=B)
                for name, case in _cases(B, quick):
                    err = _compare(_run_case(kind, inputs, case), _run_case("torch", inputs, case))
                    worst = max(worst, err)
                    if not err <= TOLERANCE[dtype]:
                        failures.append(f"{name} B={B} {str(dtype).replace('torch.', '')}: "
                                        f"error {err:.3g} > {TOLERANCE[dtype]:g}")
        name = "last launches"
        if device.type == "cuda":  # an asynchronous fault surfaces here: inside the try
            torch.cuda.synchronize(device)
    except Exception as exc:  # noqa: BLE001  (any failure of the kernel is the finding)
        failures.append(f"{name} raised {type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}")
        worst = float("inf")
        if not context_alive(device):
            failures.insert(0, f"{STICKY} (the first failing case: {name})")
    reason = "; ".join(failures[:3]) + (f" (and {len(failures) - 3} more)" if len(failures) > 3 else "")
    return dict(ok=not failures, max_error=worst, reason=reason or f"matches the reference on {device}",
                time=time.perf_counter() - t0, sticky=bool(failures) and failures[0].startswith(STICKY))


# A fault such as an illegal address leaves the CUDA context unusable: every later CUDA call of the
# process fails, the reference backend's too, so falling back cannot help.
STICKY = ("the CUDA context is unusable after this error, so no backend can run on this GPU in this process: "
          "restart it, with backend='torch' to avoid the compiled kernels, and report `apl selftest`'s output")


def context_alive(device: torch.device) -> bool:
    """Whether work still runs on `device` after an error (False: a sticky CUDA error)."""
    if device.type != "cuda":
        return True
    try:
        torch.ones(1, device=device).add_(1)
        torch.cuda.synchronize(device)
        return True
    except Exception:  # noqa: BLE001  (any failure means the context is gone)
        return False


def _unavailable(reason: str) -> dict:
    return dict(ok=False, max_error=float("nan"), reason=reason, time=0.0, available=False)


def selftest(device: Optional[str | torch.device] = None, sizes: Sequence[int] = DEFAULT_SIZES) -> dict:
    """Check every compiled backend present against the pure-PyTorch reference.

    Args:
        device: None for all (the CPU kernel and the CUDA kernel on every visible GPU), or one
            device ("cpu", "cuda", "cuda:1").
        sizes: batch sizes of the random batches.

    Returns:
        {"cpu": r, "cuda": r}; each r has "ok" (bool), "max_error" (float: AP and loss errors,
        gradient errors relative to the largest reference gradient), "reason" (what failed, or
        why the backend is not available), "time" (seconds) and "available" (bool). For CUDA
        with several GPUs, "devices" holds one such entry per GPU.
    """
    want = None if device is None else torch.device(device)
    out: dict[str, dict] = {}
    ok, why = extension.cpu_status()
    if want is not None and want.type != "cpu":
        out["cpu"] = _unavailable("not requested")
    elif not ok:
        out["cpu"] = _unavailable(why)
    else:
        out["cpu"] = dict(check_backend("cpu", torch.device("cpu"), sizes), available=True)
    ok, why = extension.cuda_status()
    if want is not None and want.type != "cuda":
        out["cuda"] = _unavailable("not requested")
    elif not ok:
        out["cuda"] = _unavailable(why)
    else:
        if want is not None and want.index is not None:
            devs = [want]
        else:
            devs = [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
        per = {str(d): check_backend("cuda", d, sizes) for d in devs}
        bad = [f"{d}: {r['reason']}" for d, r in per.items() if not r["ok"]]
        out["cuda"] = dict(ok=not bad, max_error=max(r["max_error"] for r in per.values()),
                           reason="; ".join(bad) or f"matches the reference on {', '.join(per)}",
                           time=sum(r["time"] for r in per.values()), available=True, devices=per)
    return out


def quick_check(device: torch.device) -> dict:
    """The small self-test that `backend="auto"` runs once per device before trusting the kernels."""
    kind = "cuda" if device.type == "cuda" else "cpu"
    return check_backend(kind, device, AUTO_SIZES, quick=True)
