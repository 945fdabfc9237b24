"""Rank-surrogate benchmark: forward + backward of Smooth-AP and Recall@k, time and peak memory above
the inputs, against B, with the implementations of PML and of the papers' authors in the same run.

    python -m benchmarks.bench_rank                    # the CPU table (writes benchmarks/results/bench_rank_cpu.*)
    python -m benchmarks.bench_rank --quick            # small sizes: a smoke run
    python -m benchmarks.bench_rank --rounds 5 --sizes 1024,2048,4096 --methods gemm,smoothap,recall \
        --layouts "classes of 8" --stem bench_rank_cpu_rounds   # the spread of the ratios over 5 runs

Methods (self retrieval, every image a query against the others, D = 512, float32):
  gemm             the two matrix products any implementation needs (S = D D^T, then (B x B) @ D)
  smoothap         apl.smooth_ap_loss, compiled CPU kernel
  smoothap_stream  the same, streaming blocks of --chunk queries (nothing of size B x B kept)
  recall           apl.recall_at_k_loss (k = 1, 2, 4, 8, 16), compiled CPU kernel
  recall_stream    the same, streaming
  pml_smoothap     pytorch-metric-learning's SmoothAPLoss (B x B x B tensors; wrong unless P == K,
                   docs/pml_smoothap.md, but its cost is what counts here)
  authors_smoothap the Smooth-AP authors' code (B x B x B tensors)
  authors_recall   the Recall@k authors' code: a Python loop over the queries, as their training
                   loop runs it
The authors' code comes from APL_PEER_REPOS (benchmarks/peers.py); without it their rows say so.
Layouts: "classes of 8" (B / 8 classes of 8 images) and "classes of 64" (many positives per query), of
random unit vectors (every score within about 0.2 of 0: what an untrained network gives); and
"clustered classes of 64": each image its class's centre plus noise, so that positives score
about 0.55 and negatives about 0, with overlapping tails (what a trained network gives; where
apl's CPU kernel skips the saturated sigmoids, docs/rank_losses.md).
Each measurement runs in a fresh process under a --memory-gb address-space limit, so a method that
cannot hold a size fails with "out of memory" instead of taking the machine down; --timeout bounds
its time. Ratios to gemm are of the same run (the machine is shared and noisy). With --rounds K the
whole selection runs K times over (rows carry their "round"), so that each ratio has a spread: the
load of a shared machine moves between the processes of one ratio.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .harness import limit_memory, machine, run_worker, time_and_peak

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("gemm", "smoothap", "smoothap_stream", "recall", "recall_stream", "pml_smoothap", "authors_smoothap",
           "authors_recall")
SIZES = (256, 512, 1024, 2048, 4096, 8192, 16384)
# Beyond this, only the streaming rows and the GEMMs run (the others need B x B tensors or worse).
STREAM_ONLY_FROM = 8192
# name -> (images per class, clustered)
LAYOUTS = {"classes of 8": (8, False), "classes of 64": (64, False), "clustered classes of 64": (64, True)}


def make_step(method: str, x, y, chunk: int):
    import torch

    import apl

    xd = x.detach()
    if method == "gemm":
        return lambda: (xd @ xd.t()) @ xd
    if method.startswith(("smoothap", "recall")):
        fn = apl.smooth_ap_loss if method.startswith("smoothap") else apl.recall_at_k_loss
        kw = dict(backend="cpu", chunk_size=chunk if method.endswith("_stream") else None)
        loss = lambda: fn(x, y, **kw)  # noqa: E731
    elif method == "pml_smoothap":
        from pytorch_metric_learning.losses import SmoothAPLoss

        order = torch.sort(y, stable=True).indices  # PML needs the classes in contiguous groups
        pml = SmoothAPLoss(temperature=0.01)
        loss = lambda: pml(x[order], y[order])  # noqa: E731
    else:
        from . import peers

        order = torch.sort(y, stable=True).indices
        B, P = len(y), int(y.max()) + 1
        if method == "authors_smoothap":
            theirs = peers.load("Andrew-Brown1/Smooth_AP", "src/Smooth_AP_loss.py").SmoothAP(0.01, B, P, x.shape[1])
            loss = lambda: theirs(x[order])  # noqa: E731
        else:
            ks = [1, 2, 4, 8, 16]
            theirs = peers.load("yash0307/RecallatK_surrogate", "src/losses.py").RecallatK(0.01, B, P, x.shape[1], ks,
                                                                                         [1] * len(ks), 0)
            loss = lambda: sum(theirs(x[order], q) for q in range(B))  # noqa: E731

    def step():
        from . import peers

        with peers.as_torch_1_on_cpu():
            value = loss()
        value.backward()
        x.grad = None

    return step


def inputs(B: int, D: int, per_class: int, clustered: bool):
    """(embeddings, labels) of a layout: random unit vectors, or class centres plus noise (same-class
    cosine about 0.6, other classes about 0)."""
    import torch

    torch.manual_seed(0)
    y = (torch.arange(B) // per_class)[torch.randperm(B)]
    if not clustered:
        return torch.nn.functional.normalize(torch.randn(B, D), dim=1).requires_grad_(), y
    # Centre plus noise; the noise lives in 16 shared directions, so that scores spread (same class
    # about 0.55 +- 0.1, other classes about 0 +- 0.1) and the classes' tails overlap.
    centres = torch.nn.functional.normalize(torch.randn(int(y.max()) + 1, D), dim=1)
    basis = torch.linalg.qr(torch.randn(D, 16)).Q.t()
    noise = torch.nn.functional.normalize(torch.randn(B, 16), dim=1) @ basis
    return torch.nn.functional.normalize(centres[y] + 0.9 * noise, dim=1).requires_grad_(), y


def worker(method: str, B: int, D: int, per_class: int, clustered: bool, repeats: int, chunk: int,
           memory_gb: float) -> dict:
    limit_memory(memory_gb)
    x, y = inputs(B, D, per_class, clustered)
    return {"method": method, "B": B, "D": D, "per_class": per_class, "clustered": clustered,
            **time_and_peak(make_step(method, x, y, chunk), repeats)}


def table(rows: list[dict], methods, per_class: int, clustered: bool) -> str:
    mine = [r for r in rows if r["per_class"] == per_class and r.get("clustered", False) == clustered]
    by = {(r["method"], r["B"]): r for r in mine}
    sizes = sorted({r["B"] for r in mine})
    head = "| B | " + " | ".join(f"{m}: s (x gemm), MB" for m in methods) + " |"
    lines = [head, "|" + "---|" * (1 + len(methods))]
    for B in sizes:
        g = by.get(("gemm", B), {}).get("time_s")
        cells = []
        for m in methods:
            r = by.get((m, B))
            if r is None:
                cells.append("-")
            elif "time_s" not in r:
                cells.append(r["error"][:40])
            else:
                ratio = f" ({r['time_s'] / g:.2f}x)" if g else ""
                mem = "" if r.get("peak_mb") is None else f", {r['peak_mb']:.0f} MB"
                cells.append(f"{r['time_s']:.3f}{ratio}{mem}")
        lines.append(f"| {B} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_rank", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated batch sizes")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--chunk", type=int, default=512, help="query block of the streaming rows")
    p.add_argument("--timeout", type=float, default=300, help="seconds per measurement")
    p.add_argument("--memory-gb", type=float, default=16.0, help="address-space limit of each measurement")
    p.add_argument("--quick", action="store_true", help="B in {256, 512}, classes of 8 only: a smoke run")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--rounds", type=int, default=1, help="run the whole selection this many times over")
    p.add_argument("--stem", default=None, help="name of the JSON (default bench_rank_cpu, or _quick)")
    p.add_argument("--layouts", default=",".join(LAYOUTS), help="comma-separated layout names (no layout name has a comma)")
    p.add_argument("--worker", nargs=5, metavar=("METHOD", "B", "D", "PER_CLASS", "CLUSTERED"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        m, B, D, k, c = a.worker
        print(json.dumps(worker(m, int(B), int(D), int(k), c == "1", a.repeats, a.chunk, a.memory_gb)))
        return 0
    sizes = [256, 512] if a.quick else [int(s) for s in a.sizes.split(",") if s]
    methods = [m for m in a.methods.split(",") if m]
    for m in methods:
        if m not in METHODS:
            p.error(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
    names = ["classes of 8"] if a.quick else [n for n in a.layouts.split(",") if n]
    for n in names:
        if n not in LAYOUTS:
            p.error(f"unknown layout {n!r}; choose from {', '.join(LAYOUTS)}")
    layouts = {n: LAYOUTS[n] for n in names}
    rows = []
    for rnd, (name, (per_class, clustered)) in ((i, l) for i in range(a.rounds) for l in layouts.items()):
        for B in sizes:
            for m in methods:
                keys = dict(method=m, B=B, D=a.dim, per_class=per_class, clustered=clustered)
                if a.rounds > 1:
                    keys["round"] = rnd
                if B >= STREAM_ONLY_FROM and m not in ("gemm", "smoothap_stream", "recall_stream"):
                    rows.append({**keys, "error": f"not run (B x B tensors or more at B >= {STREAM_ONLY_FROM})"})
                    continue
                args = ["--worker", m, str(B), str(a.dim), str(per_class), str(int(clustered)), "--repeats", str(a.repeats),
                        "--chunk", str(a.chunk), "--memory-gb", str(a.memory_gb)]
                r = run_worker("benchmarks.bench_rank", args, a.timeout, **keys)
                rows.append(r)
                print(f"{name:14s} B={B:<6d} {m:17s} " + (f"{r['time_s']:.3f} s" if "time_s" in r else r["error"]),
                      flush=True)
    info = machine()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = a.stem or ("bench_rank_cpu_quick" if a.quick else "bench_rank_cpu")
    (out / f"{stem}.json").write_text(json.dumps({"machine": info, "chunk": a.chunk, "memory_gb": a.memory_gb,
                                                  "rounds": a.rounds, "rows": rows}, indent=1))
    for rnd, (name, (per_class, clustered)) in ((i, l) for i in range(a.rounds) for l in layouts.items()):
        print(f"\n{name}" + (f", round {rnd}" if a.rounds > 1 else "")
              + f" (CPU: {info['cpu']}, {info['threads']} threads, torch {info['torch']})\n")
        print(table([r for r in rows if r.get("round", 0) == rnd], methods, per_class, clustered))
    print(f"\nwrote {out / (stem + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
