"""Loss benchmark: forward + backward time and peak memory above the inputs, against B.

    python -m benchmarks.bench_loss                 # CPU table at the default sizes
    python -m benchmarks.bench_loss --quick         # small sizes, for a smoke run
    python -m benchmarks.bench_loss --device cuda   # the CUDA rows (benchmarks/bench_loss_cuda.py)

Methods (self-retrieval, every image a query against the others, M = 20, float32):
  gemm        the GEMM lower bound: S = D D^T and (B x B) @ D, the two products any
              implementation needs, timed in the same run
  gemm_kernel the products the fused CPU kernel itself runs in self retrieval (S's block rows on and
              above the diagonal, H's tiles there multiplied twice), without its per-score work:
              the floor of its design on this BLAS (benchmarks/kernel_products.py)
  cpu_ops     the fused kernel's two ops called directly (torch.ops.apl.ap_self and its backward)
  cpu         the fused compiled kernel through the loss module (apl.APLoss, backend="cpu"): the ops,
              the unit-norm check and autograd
  cpu_stream  the same, streaming blocks of --chunk queries (nothing of size B x B kept)
  torch       the pure-PyTorch reference (apl.reference)
  naive       the paper-style formulation materialising the B x N x M soft assignment
Each measurement runs in fresh processes (harness.run_worker): times are the median of the repeats
with the allocator's defaults; peak memory is the growth of the resident set over the inputs in one
step, in another process with glibc told to return large blocks to the OS (Linux VmHWM after
resetting it through /proc/self/clear_refs), so CPU numbers include every allocator. Results go to
JSON and PNG under --out, and a markdown table to stdout.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .harness import machine, run_worker, time_and_peak
from .steps import make_step

HERE = Path(__file__).resolve().parent
METHODS = ("gemm", "gemm_kernel", "cpu_ops", "cpu", "cpu_stream", "torch", "naive")


def worker(method: str, B: int, D: int, repeats: int, chunk: int) -> dict:
    import torch

    torch.manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(B, D), dim=1).requires_grad_()
    y = torch.randint(0, max(1, B // 8), (B,))
    return {"method": method, "B": B, "D": D, **time_and_peak(make_step(method, x, y, chunk), repeats)}


def measure(method: str, B: int, D: int, repeats: int, chunk: int, timeout: float) -> dict:
    return run_worker("benchmarks.bench_loss", ["--worker", method, str(B), str(D), "--repeats", str(repeats),
                                                "--chunk", str(chunk)], timeout, method=method, B=B, D=D)


def table(rows: list[dict]) -> str:
    by = {(r["method"], r["B"], r["D"]): r for r in rows}
    shapes = sorted({(r["B"], r["D"]) for r in rows}, key=lambda s: (s[1], s[0]))
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    head = "| B | D | " + " | ".join(f"{m} s (x gemm)" for m in methods) + " | " + " | ".join(f"{m} MB" for m in methods) + " | naive / cpu |"
    lines = [head, "|" + "---|" * (2 + 2 * len(methods) + 1)]
    for B, D in shapes:
        g = by.get(("gemm", B, D), {}).get("time_s")
        cells = []
        for m in methods:
            r = by.get((m, B, D), {})
            if "time_s" not in r:
                cells.append(r.get("error", "-")[:30])
            else:
                ratio = f" ({r['time_s'] / g:.2f}x)" if g else ""
                cells.append(f"{r['time_s']:.3f}{ratio}")
        mems = []
        for m in methods:
            r = by.get((m, B, D), {})
            mems.append("-" if r.get("peak_mb") is None else f"{r['peak_mb']:.0f}")
        naive, cpu = by.get(("naive", B, D), {}).get("time_s"), by.get(("cpu", B, D), {}).get("time_s")
        speed = f"{naive / cpu:.0f}x" if naive and cpu else "-"
        lines.append(f"| {B} | {D} | " + " | ".join(cells) + " | " + " | ".join(mems) + f" | {speed} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    D0 = min(r["D"] for r in rows)
    for m in METHODS:
        pts = sorted((r["B"], r["time_s"], r.get("peak_mb")) for r in rows if r["method"] == m and r["D"] == D0 and "time_s" in r)
        if not pts:
            continue
        ax_t.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=m)
        mem = [(p[0], p[2]) for p in pts if p[2] is not None]
        if mem:
            ax_m.plot([p[0] for p in mem], [max(p[1], 0.1) for p in mem], "o-", label=m)
    for ax, ylabel in ((ax_t, "forward + backward (s)"), (ax_m, "peak memory above inputs (MB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(f"batch size B (D = {D0}, M = 20)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_loss", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--sizes", default="512,1024,2048,4096", help="comma-separated batch sizes (D = --dim)")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--extra", default="4096x2048", help="extra BxD rows, comma-separated ('' for none)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--chunk", type=int, default=512, help="query block of the streaming mode")
    p.add_argument("--timeout", type=float, default=600, help="seconds per measurement")
    p.add_argument("--quick", action="store_true", help="B in {256, 512}, no extra row: a smoke run")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--worker", nargs=3, metavar=("METHOD", "B", "D"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a.worker[0], int(a.worker[1]), int(a.worker[2]), a.repeats, a.chunk)))
        return 0
    if a.device == "cuda":
        from . import bench_loss_cuda

        return bench_loss_cuda.main(["--out", a.out])
    sizes = [256, 512] if a.quick else [int(s) for s in a.sizes.split(",") if s]
    shapes = [(B, a.dim) for B in sizes]
    if a.extra and not a.quick:
        shapes += [tuple(int(v) for v in e.split("x")) for e in a.extra.split(",")]
    methods = [m for m in a.methods.split(",") if m]
    for m in methods:
        if m not in METHODS:
            p.error(f"unknown method {m!r}; choose from {METHODS}")
    rows = []
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = lambda it, **_: it
    jobs = [(m, B, D) for B, D in shapes for m in methods]
    for m, B, D in tqdm(jobs, desc="bench_loss", unit="run"):
        rows.append(measure(m, B, D, a.repeats, a.chunk, a.timeout))
    info = machine()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "bench_loss_cpu_quick" if a.quick else "bench_loss_cpu"
    (out / f"{stem}.json").write_text(json.dumps({"machine": info, "chunk": a.chunk, "rows": rows}, indent=1))
    title = f"apl loss, CPU: {info['cpu']} ({info['threads']} threads), torch {info['torch']}"
    plot(rows, out / f"{stem}.png", title)
    print(f"\n{title}\n")
    print(table(rows))
    print(f"\nwrote {out / (stem + '.json')} and {out / (stem + '.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
