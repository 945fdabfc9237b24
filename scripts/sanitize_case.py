"""A small case that runs every CUDA kernel of apl once per shape class, for compute-sanitizer.

    compute-sanitizer --tool memcheck  python scripts/sanitize_case.py
    compute-sanitizer --tool racecheck python scripts/sanitize_case.py

Covers: forward with labels (self with its exclusion, streaming offsets, reference set, an empty
database), forward with a mask, the row backward (labels, mask, long rows split over several
blocks), the symmetric tile kernel (B not a multiple of 32, one partial tile, B = 1), float32 and
float64, M = 2, 20 and the largest M (shared memory at its limit), the non-finite flag; and the
rank-surrogate kernel (Smooth-AP and Recall@k: self with streaming, a reference set, the query
counted as in the authors' code, rows with more positives than shared memory holds). Results are
compared with the compiled CPU kernel (when built) so that a silent wrong answer also fails.
Prints "SANITIZE CASE OK" and exits 0 on success.
"""
from __future__ import annotations

import sys

import torch

import apl

MAX_M = 3056  # csrc/cuda/ap_kernels.cuh max_num_bins()


def unit(n, d, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1).to(dtype)


def labels(n, c, seed):
    return torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(seed + 7))


def close(a, b, what, tol):
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    err = (a - b).abs().max().item() if a.numel() else 0.0
    scale = max(b.abs().max().item(), 1.0) if b.numel() else 1.0
    if not err <= tol * scale:
        raise AssertionError(f"{what}: max |cuda - cpu| = {err:.3e} (tol {tol * scale:.1e})")


def main() -> int:
    ok, why = apl.available_backends()["cuda"]
    if not ok:
        print(f"sanitize_case: CUDA kernels unavailable: {why}")
        return 2
    cpu_ok = apl.available_backends()["cpu"].available
    ops = torch.ops.apl
    n_checked = 0
    for dtype, tol in ((torch.float32, 1e-4), (torch.float64, 1e-9)):
        for M in (2, 20, MAX_M):
            for B, D, chunk in ((70, 8, 0), (70, 8, 33), (1 + 32, 5, 0), (2, 3, 0)):
                x, y = unit(B, D, dtype, B + M), labels(B, 4, B)
                outs = {}
                for dev in ("cuda",) + (("cpu",) if cpu_ok else ()):
                    xd, yd = x.to(dev).requires_grad_(), y.to(dev)
                    ap, npos = apl.per_query_ap(xd, yd, num_bins=M, backend=dev, chunk_size=chunk or None)
                    (g,) = torch.autograd.grad((ap * torch.linspace(0.5, 1.5, B, device=dev, dtype=ap.dtype)).sum(), [xd])
                    outs[dev] = (ap, npos, g)
                if cpu_ok:
                    for i, what in enumerate(("ap", "has_pos", "grad")):
                        close(outs["cuda"][i].float() if i == 1 else outs["cuda"][i], outs["cpu"][i].float() if i == 1 else outs["cpu"][i], f"self {dtype} M={M} B={B} chunk={chunk} {what}", tol)
                n_checked += 1
            # reference set, and a long row split over several backward blocks
            q, ql = unit(3, 6, dtype, 1), labels(3, 3, 1)
            for N in (0, 5000):
                X, XL = unit(N, 6, dtype, 2), labels(N, 3, 2)
                for chunk in (0, 2):
                    res = {}
                    for dev in ("cuda",) + (("cpu",) if cpu_ok else ()):
                        qd, Xd = q.to(dev).requires_grad_(), X.to(dev).requires_grad_()
                        ap, npos, coef, S = ops.ap_ref(qd, ql.to(dev), Xd, XL.to(dev), M, -1.0, 1.0, 0, chunk)
                        gq, gx = ops.ap_ref_backward(torch.ones_like(ap), qd.detach(), ql.to(dev), Xd.detach(), XL.to(dev), coef, S, M, -1.0, 1.0, chunk)
                        res[dev] = (ap, coef, gq, gx)
                    if cpu_ok:
                        for i, what in enumerate(("ap", "coef", "dQ", "dX")):
                            close(res["cuda"][i], res["cpu"][i], f"ref {dtype} M={M} N={N} chunk={chunk} {what}", tol)
                    n_checked += 1
            # mask form, including scores outside the range and on the edges
            s = (torch.rand(5, 300, generator=torch.Generator().manual_seed(M), dtype=torch.float64) * 2.4 - 1.2).to(dtype)
            s[0, :3] = torch.tensor([-1.0, 1.0, 0.0], dtype=dtype)
            rel = torch.rand(5, 300, generator=torch.Generator().manual_seed(M + 1)) < 0.3
            res = {}
            for variant in (0, 1, 2):
                for dev in ("cuda",) + (("cpu",) if cpu_ok else ()):
                    ap, npos, coef = ops.ap_scores(s.to(dev), rel.to(dev), M, -1.0, 1.0, variant)
                    G = ops.ap_scores_backward(torch.full_like(ap, 0.5), s.to(dev), rel.to(dev), coef, M, -1.0, 1.0)
                    res[dev] = (ap, coef, G)
                if cpu_ok:
                    for i, what in enumerate(("ap", "coef", "G")):
                        close(res["cuda"][i], res["cpu"][i], f"mask {dtype} M={M} variant={variant} {what}", tol)
                n_checked += 1
    n_checked += rank_cases("cuda", "cpu" if cpu_ok else None)
    # the non-finite flag (and the error raised from it)
    x = unit(40, 4, torch.float32, 3).cuda()
    x[5, 0] = float("nan")
    try:
        ops.ap_self(x, labels(40, 3, 3).cuda(), 20, -1.0, 1.0, 0, 0)
    except (ValueError, RuntimeError) as exc:
        if "NaN" not in str(exc):
            raise
    else:
        raise AssertionError("a NaN embedding was not reported")
    torch.cuda.synchronize()
    print(f"SANITIZE CASE OK ({n_checked} cases{', checked against the CPU kernel' if cpu_ok else ''})")
    return 0


def rank_cases(dev: str, against: str | None, many_positives: bool = True) -> int:
    """The rank surrogates on backend `dev`, values and gradients compared with backend `against`
    (the many-positives case, the spill path, only with `many_positives`)."""
    n = 0
    for dtype, tol in ((torch.float32, 1e-4), (torch.float64, 1e-9)):
        for name in ("smooth_ap", "recall_at_k"):
            per_query = getattr(apl.functional, f"per_query_{name}")
            # (B, classes, chunk, include_query, database size): small classes, streaming, the
            # authors' convention, a reference set, and 540 positives in a batch of 600 (beyond the
            # 480 that the kernel keeps in shared memory: its spill path)
            cases = [(70, 9, None, False, 0), (70, 9, 33, True, 0), (40, 4, None, False, 300)]
            for B, C, chunk, inc, N in cases + ([(600, 0, None, False, 0)] if many_positives else []):
                x, y = unit(B, 8, dtype, B + N), labels(B, C, B) if C else (torch.arange(B) % 10 != 0).long()
                X, XL = (unit(N, 8, dtype, N), labels(N, C, N)) if N else (None, None)
                out = {}
                for backend in (dev,) + ((against,) if against else ()):
                    xd = x.to(backend if backend != "torch" else "cpu").requires_grad_()
                    ref = (X.to(xd.device), XL.to(xd.device)) if N else (None, None)
                    v, has_pos = per_query(xd, y.to(xd.device), *ref, include_query=inc, backend=backend,
                                           chunk_size=chunk)
                    weights = torch.linspace(0.5, 1.5, B, device=xd.device, dtype=v.dtype)
                    (g,) = torch.autograd.grad((v * weights).sum(), [xd])
                    out[backend] = (v, has_pos.float(), g)
                if against:
                    for i, what in enumerate(("value", "has_pos", "grad")):
                        close(out[dev][i], out[against][i], f"{name} {dtype} B={B} chunk={chunk} N={N} {what}", tol)
                n += 1
    return n


if __name__ == "__main__":
    sys.exit(main())
