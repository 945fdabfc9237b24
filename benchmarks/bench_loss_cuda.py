"""Loss benchmark on a CUDA GPU: forward + backward time and peak memory against B and D, and the
largest B that fits for each method.

    python -m benchmarks.bench_loss_cuda                  # full run, results under benchmarks/results
    python -m benchmarks.bench_loss_cuda --quick          # small sizes: a smoke run (about a minute)
    python -m benchmarks.bench_loss_cuda --out DIR --no-bisect
    python -m benchmarks.bench_loss --device cuda         # the same, through the CPU benchmark's CLI

Methods (self retrieval: every image is a query against the other B - 1, M = 20, float32):
  gemm         the two products any implementation needs, S = D D^T then (B x B) @ D, timed in
               the same run: the lower bound the fused kernels are measured against
  cuda         apl's fused kernels (backend="cuda"): S by cuBLAS, one binning kernel, one kernel
               writing H = G + G^T, one GEMM H @ D
  cuda_stream  the same, streaming blocks of --chunk queries (nothing of size B x B is kept;
               S is recomputed block by block in backward)
  torch        apl's pure-PyTorch reference (backend="torch")
  naive        the paper-style formulation materialising the (B, M, N) soft assignment
               (benchmarks/naive_ap.py)
Time: CUDA events around one forward + backward, after warm-up; the median of the repeats.
Memory: torch.cuda.max_memory_allocated() during the timed steps minus what the inputs held
before (the caching allocator's peak, so it counts every tensor the step allocates).
Largest B: for each method and D, the B at which one forward + backward still runs, by doubling
then bisection (to within --bisect-tol), capped at --bisect-max; OOM is any allocation failure.
Matmuls run in full float32 unless --tf32 (torch's default: TF32 off).

Writes bench_loss_cuda.json and bench_loss_cuda.png under --out (the suffix _quick for --quick),
and prints a markdown table and the issue's targets. Exits 0 with a message when there is no CUDA.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

from . import harness
from .steps import make_step
METHODS = ("gemm", "cuda", "cuda_stream", "torch", "naive")


def _is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    msg = str(exc)
    return isinstance(exc, RuntimeError) and any(
        k in msg for k in ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "cudaErrorMemoryAllocation")
    )


def _free() -> None:
    import torch

    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()


def _inputs(B: int, D: int, seed: int = 0):
    import torch

    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(B, D, device="cuda", generator=g)
    x = torch.nn.functional.normalize(x, dim=1).requires_grad_()
    y = torch.randint(0, max(1, B // 8), (B,), device="cuda", generator=g)  # about 8 per class
    return x, y


def measure(method: str, B: int, D: int, warmup: int, repeats: int, chunk: int, slow_s: float = 8.0) -> dict:
    """One (method, B, D) row: median time of `repeats` steps after `warmup`, peak memory."""
    import torch

    row = {"method": method, "B": B, "D": D}
    x = y = step = None
    try:
        _free()
        x, y = _inputs(B, D)
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        step = make_step(method, x, y, chunk)
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        first = time.perf_counter() - t0
        if repeats == 0:  # a probe: the one step above is the measurement
            row.update(time_ms=first * 1e3, times_ms=[first * 1e3], repeats=0,
                       peak_mb=(torch.cuda.max_memory_allocated() - base) / 2**20)
            return row
        n_warm, n_rep = (0, 1) if first > slow_s else (max(0, warmup - 1), repeats)
        for _ in range(n_warm):
            step()
        torch.cuda.synchronize()
        times = []
        for _ in range(n_rep):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        row.update(
            time_ms=statistics.median(times),
            times_ms=times,
            repeats=len(times),
            peak_mb=(torch.cuda.max_memory_allocated() - base) / 2**20,
        )
    except Exception as exc:  # noqa: BLE001
        row["error"] = "OOM" if _is_oom(exc) else f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    finally:
        del x, y, step
        _free()
    return row


def fits(method: str, B: int, D: int, chunk: int) -> tuple[bool, str]:
    """Whether one forward + backward at B runs (False on any allocation failure)."""
    r = measure(method, B, D, warmup=0, repeats=0, chunk=chunk)
    if "error" in r:
        return False, r["error"]
    return True, f"{r['time_ms']:.0f} ms (wall, first step), {r['peak_mb']:.0f} MiB"


def largest_b(method: str, D: int, chunk: int, start: int, cap: int, tol: float, deadline: float,
              max_step_s: float = float("inf")) -> dict:
    """Largest B (a multiple of 256) that fits, by doubling from `start` then bisection."""
    q = 256
    rnd = lambda b: max(q, int(b) // q * q)
    lo, hi, log = 0, None, []
    lo_ms = None
    b = rnd(start)
    while True:  # doubling
        if time.monotonic() > deadline:
            return {"method": method, "D": D, "largest_B": lo or None, "note": "time budget spent", "probes": log}
        if lo and lo_ms is not None and lo_ms / 1e3 * (b / lo) ** 2 > max_step_s:
            return {"method": method, "D": D, "largest_B": lo,
                    "note": f">= {lo}: B={b} not tried (about {lo_ms / 1e3 * (b / lo) ** 2:.1f} s per step predicted)", "probes": log}
        ok, info = fits(method, b, D, chunk)
        log.append((b, ok, info))
        if not ok:
            if not info.startswith("OOM"):
                return {"method": method, "D": D, "largest_B": lo or None, "note": f"failed at B={b}: {info}", "probes": log}
            hi = b
            break
        lo = b
        lo_ms = float(info.split(" ms")[0])
        if b >= cap:
            return {"method": method, "D": D, "largest_B": lo, "note": f">= {cap} (cap, --bisect-max)", "probes": log}
        b = min(cap, rnd(b * 2))
    if lo == 0:  # even `start` failed: go down
        b = hi
        while b > q:
            b = rnd(b // 2)
            ok, info = fits(method, b, D, chunk)
            log.append((b, ok, info))
            if ok:
                lo = b
                break
            hi = b
        if lo == 0:
            return {"method": method, "D": D, "largest_B": None, "note": f"nothing fits down to B={q}", "probes": log}
    while hi - lo > q and hi / lo > 1 + tol:  # bisection
        if time.monotonic() > deadline:
            return {"method": method, "D": D, "largest_B": lo, "note": f"time budget spent (< {hi})", "probes": log}
        mid = rnd((lo + hi) // 2)
        if mid in (lo, hi):
            break
        ok, info = fits(method, mid, D, chunk)
        log.append((mid, ok, info))
        lo, hi = (mid, hi) if ok else (lo, mid)
    return {"method": method, "D": D, "largest_B": lo, "note": f"fails at {hi}", "probes": log}


def machine() -> dict:
    import apl

    return {**harness.machine(gpu=True), "apl_backends": {k: v.available for k, v in apl.available_backends().items()}}


def table(rows: list[dict]) -> str:
    by = {(r["method"], r["B"], r["D"]): r for r in rows}
    shapes = sorted({(r["B"], r["D"]) for r in rows}, key=lambda s: (s[1], s[0]))
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    head = "| B | D | " + " | ".join(f"{m} ms (x gemm)" for m in methods) + " | " + " | ".join(f"{m} MiB" for m in methods) + " |"
    lines = [head, "|" + "---|" * (2 + 2 * len(methods))]
    for B, D in shapes:
        g = by.get(("gemm", B, D), {}).get("time_ms")
        cells, mems = [], []
        for m in methods:
            r = by.get((m, B, D), {})
            if "time_ms" in r:
                ratio = f" ({r['time_ms'] / g:.2f}x)" if g else ""
                cells.append(f"{r['time_ms']:.2f}{ratio}")
                mems.append(f"{r['peak_mb']:.0f}")
            else:
                cells.append(r.get("error", "-")[:24])
                mems.append("-")
        lines.append(f"| {B} | {D} | " + " | ".join(cells) + " | " + " | ".join(mems) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], largest: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = sorted({r["D"] for r in rows})
    fig, axes = plt.subplots(len(dims), 2, figsize=(12, 4.2 * len(dims)), squeeze=False)
    for (ax_t, ax_m), D in zip(axes, dims):
        for m in METHODS:
            pts = sorted((r["B"], r["time_ms"], r["peak_mb"]) for r in rows if r["method"] == m and r["D"] == D and "time_ms" in r)
            if not pts:
                continue
            big = [l for l in largest if l["method"] == m and l["D"] == D and l.get("largest_B")]
            label = m + (f" (max B {'>= ' if big[0]['note'].startswith('>=') else ''}{big[0]['largest_B']})" if big else "")
            ax_t.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label)
            ax_m.plot([p[0] for p in pts], [max(p[2], 0.01) for p in pts], "o-", label=m)
        for ax, ylabel in ((ax_t, "forward + backward (ms)"), (ax_m, "peak memory above inputs (MiB)")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel(f"batch size B (D = {D}, M = 20, float32)")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def targets(rows: list[dict], stream_rows: list[dict]) -> list[str]:
    """The issue's targets, read off the rows."""
    by = {(r["method"], r["B"], r["D"]): r for r in rows}
    out = []
    c, g = by.get(("cuda", 4096, 2048), {}), by.get(("gemm", 4096, 2048), {})
    if "time_ms" in c and "time_ms" in g:
        ratio = c["time_ms"] / g["time_ms"]
        out.append(f"B=4096 D=2048 cuda / two-GEMM bound = {ratio:.2f}x (target <= 1.3x): {'MET' if ratio <= 1.3 else 'MISSED'}")
    else:
        out.append("B=4096 D=2048 ratio: not measured")
    for D in sorted({r["D"] for r in rows}):
        r = by.get(("cuda", 65536, D))
        if r is not None:
            out.append(f"B=65536 D={D} default mode: " + (f"ran, {r['time_ms']:.0f} ms, {r['peak_mb']:.0f} MiB" if "time_ms" in r else f"FAILED ({r.get('error')})"))
    for r in stream_rows:
        out.append(f"B={r['B']} D={r['D']} streaming (chunk {r.get('chunk')}): " + (f"ran, {r['time_ms']:.0f} ms, {r['peak_mb']:.0f} MiB" if "time_ms" in r else f"FAILED ({r.get('error')})"))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1024,4096,16384,65536", help="comma-separated batch sizes")
    p.add_argument("--dims", default="512,2048", help="comma-separated embedding dims")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--chunk", type=int, default=4096, help="query block of the streaming mode")
    p.add_argument("--stream-target", default="262144x512", help="BxD rows run in streaming mode only ('' for none)")
    p.add_argument("--bisect", action=argparse.BooleanOptionalAction, default=True, help="search the largest B per method")
    p.add_argument("--bisect-max", type=int, default=262144, help="largest B tried by the search")
    p.add_argument("--bisect-tol", type=float, default=0.03, help="relative precision of the largest B")
    p.add_argument("--time-budget", type=float, default=420.0, help="seconds after which the search stops")
    p.add_argument("--skip-table", action="store_true",
                   help="only the largest-B search (written as bench_loss_cuda_largest.*): lets a "
                        "caller with a per-command time limit split the run in two")
    p.add_argument("--max-step-s", type=float, default=30.0,
                   help="skip a row whose step is predicted (from the previous size, as B^2) to take longer")
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls (default: full float32)")
    p.add_argument("--quick", action="store_true", help="B in {1024, 2048}, D = 256, small search: a smoke run")
    p.add_argument("--out", default=str(HERE / "results"))
    a = p.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print(f"bench_loss_cuda: skipped, torch {torch.__version__} sees no CUDA device (no CUDA rows written)")
        return 0
    import apl

    ok, why = apl.available_backends()["cuda"]
    if not ok:
        print(f"bench_loss_cuda: note, apl's CUDA kernels are unavailable ({why}): the cuda rows will fail")
    torch.backends.cuda.matmul.allow_tf32 = bool(a.tf32)
    torch.backends.cudnn.allow_tf32 = bool(a.tf32)

    if a.quick:
        sizes, dims, stream_targets = [1024, 2048], [256], [(8192, 256)]
        a.bisect_max, a.time_budget, a.repeats, a.chunk = min(a.bisect_max, 16384), min(a.time_budget, 60.0), 3, 512
    else:
        sizes = [int(s) for s in a.sizes.split(",") if s]
        dims = [int(d) for d in a.dims.split(",") if d]
        stream_targets = [tuple(int(v) for v in e.split("x")) for e in a.stream_target.split(",") if e]
    methods = [m for m in a.methods.split(",") if m]
    for m in methods:
        if m not in METHODS:
            p.error(f"unknown method {m!r}; choose from {METHODS}")

    info = machine()
    print(f"bench_loss_cuda: {info['gpu']} ({info.get('nvidia_smi', '')}), torch {info['torch']} (CUDA {info['torch_cuda']}), TF32 {'on' if a.tf32 else 'off'}", flush=True)
    t_start = time.monotonic()
    rows = []
    last_ok: dict[tuple[str, int], tuple[int, float]] = {}  # (method, D) -> (B, ms) of the last row that ran

    def predicted_s(m: str, B: int, D: int) -> float:
        """Seconds per step extrapolated from the last size that ran (time grows as B^2)."""
        if (m, D) not in last_ok:
            return 0.0
        b0, ms = last_ok[(m, D)]
        return ms / 1e3 * (B / b0) ** 2

    if a.skip_table:
        stream_targets = []
        a.bisect = True
    for D in ([] if a.skip_table else dims):
        for B in sizes:
            for m in methods:
                pred = predicted_s(m, B, D)
                if pred > a.max_step_s:
                    r = {"method": m, "B": B, "D": D, "error": f"skipped: about {pred:.1f} s per step predicted"}
                else:
                    r = measure(m, B, D, a.warmup, a.repeats, a.chunk)
                    if "time_ms" in r:
                        last_ok[(m, D)] = (B, r["time_ms"])
                if m == "cuda_stream":
                    r["chunk"] = a.chunk
                rows.append(r)
                print(f"  {m:12s} B={B:6d} D={D:5d}: " + (f"{r['time_ms']:10.2f} ms {r['peak_mb']:10.0f} MiB" if "time_ms" in r else r["error"]), flush=True)

    stream_rows = []
    for B, D in stream_targets:
        r = measure("cuda_stream", B, D, warmup=1, repeats=2, chunk=a.chunk)
        r["chunk"] = a.chunk
        stream_rows.append(r)
        print(f"  cuda_stream  B={B:6d} D={D:5d} (target): " + (f"{r['time_ms']:10.2f} ms {r['peak_mb']:10.0f} MiB" if "time_ms" in r else r["error"]), flush=True)

    largest = []
    if a.bisect:
        deadline = time.monotonic() + a.time_budget
        for D in dims:
            for m in methods:
                ok_rows = [r["B"] for r in rows if r["method"] == m and r["D"] == D and "time_ms" in r]
                start = max(ok_rows) if ok_rows else min(sizes)
                res = largest_b(m, D, a.chunk, start, a.bisect_max, a.bisect_tol, deadline, a.max_step_s)
                largest.append(res)
                print(f"  largest B {m:12s} D={D:5d}: {res['largest_B']} ({res['note']})", flush=True)

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "bench_loss_cuda" + ("_quick" if a.quick else "") + ("_largest" if a.skip_table else "")
    goals = targets(rows, stream_rows)
    doc = {
        "machine": info,
        "settings": {"sizes": sizes, "dims": dims, "methods": methods, "warmup": a.warmup, "repeats": a.repeats,
                     "chunk": a.chunk, "num_bins": 20, "dtype": "float32", "tf32": bool(a.tf32),
                     "bisect_max": a.bisect_max, "bisect_tol": a.bisect_tol},
        "rows": rows,
        "streaming_targets": stream_rows,
        "largest_B": largest,
        "targets": goals,
        "wall_s": time.monotonic() - t_start,
    }
    (out / f"{stem}.json").write_text(json.dumps(doc, indent=1))
    title = f"apl loss on {info['gpu']} (driver {info.get('driver')}), torch {info['torch']}, float32{' TF32' if a.tf32 else ''}"
    try:
        if rows:
            plot(rows, largest, out / f"{stem}.png", title)
    except Exception as exc:  # noqa: BLE001  (no matplotlib: the JSON still holds everything)
        print(f"bench_loss_cuda: no plot ({type(exc).__name__}: {exc})")
    print(f"\n{title}\n")
    print(table(rows))
    if largest:
        print("\n| method | D | largest B | note |\n|---|---|---|---|")
        for l in largest:
            print(f"| {l['method']} | {l['D']} | {l['largest_B']} | {l['note']} |")
    print("\nTargets:")
    for g in goals:
        print(f"  {g}")
    print(f"\nwrote {out / (stem + '.json')}" + (f" and {out / (stem + '.png')}" if rows else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
