"""Cross-batch memory: loss-step time against the memory size N at B = 256, D = 512.

Each step is forward + backward of the loss on a batch of B descriptors ranked against the batch
plus a memory filled with N past descriptors (then the batch is enqueued), for
- apl: `apl.memory.with_memory(apl.APLoss(), ...)` (the fused kernel, `ref_includes_queries`);
- apl in PML: `apl.pml.APLoss` inside `apl.pml.CrossBatchMemory` (PML's memory; the pairs PML
  passes are ranked by apl's pure-PyTorch reference);
- PML's `CrossBatchMemory` around PML losses it supports (contrastive, multi-similarity).
PML's FastAP cannot run in a cross-batch memory: PML's CrossBatchMemory refuses it (FastAPLoss is
not on its list, and FastAPLoss itself refuses reference embeddings); the JSON records the error.
The bound is the two matrix products any such loss needs (scores forward, gradient backward),
timed in the same run: CPU times are reported as ratios to it (shared machines are noisy).

    python -m benchmarks.bench_memory        # writes benchmarks/results/bench_memory.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import apl
from apl.memory import CrossBatchMemory, with_memory

RESULTS = Path(__file__).resolve().parent / "results"


def _median_time(step, repeats: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def methods(B: int, D: int, N: int, g: torch.Generator):
    x = torch.nn.functional.normalize(torch.randn(B, D, generator=g), dim=1)
    y = torch.randint(0, 64, (B,), generator=g)
    past = torch.nn.functional.normalize(torch.randn(max(N, 1), D, generator=g), dim=1)[:N]
    past_y = torch.randint(0, 64, (N,), generator=g)

    def run(loss_fn):
        e = x.clone().requires_grad_()
        loss_fn(e, y).backward()

    def gemm():
        e = x.clone().requires_grad_()
        refs = torch.cat([e, past])
        s = e @ refs.t()
        s.backward(torch.ones_like(s))

    yield "two-GEMM bound", gemm

    def apl_memory():
        mem = CrossBatchMemory(N + B, D)  # room for the batch: the memory keeps all N past items
        mem.enqueue(past, past_y)
        loss_fn = with_memory(apl.APLoss(), mem)
        return lambda: run(loss_fn)

    yield "apl (fused kernel)", apl_memory()
    try:
        from pytorch_metric_learning import losses as pml

        from apl.pml import APLoss as PMLAPLoss, CrossBatchMemory as PMLMemory
    except ImportError:
        return

    def pml_memory(loss):
        cbm = (PMLMemory if isinstance(loss, PMLAPLoss) else pml.CrossBatchMemory)(loss, D, memory_size=N + B)
        if N:
            cbm.add_to_memory(past, past_y, N)
        def step():
            cbm.queue_idx = N % (N + B)  # the same memory content at every repeat
            cbm.has_been_filled = False
            run(lambda e, labels: cbm(e, labels))
        return step

    yield "apl.pml.APLoss in PML memory (reference)", pml_memory(PMLAPLoss())
    yield "PML contrastive in PML memory", pml_memory(pml.ContrastiveLoss())
    yield "PML multi-similarity in PML memory", pml_memory(pml.MultiSimilarityLoss())


def fastap_in_memory_error() -> str:
    try:
        from pytorch_metric_learning import losses as pml

        pml.CrossBatchMemory(pml.FastAPLoss(), 8, memory_size=16)
    except Exception as err:  # noqa: BLE001  (recording PML's refusal is the point)
        return f"{type(err).__name__}: {err}"
    return "accepted"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--memory", type=int, nargs="+", default=[0, 1024, 4096, 16384, 65536])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--skip-slow", type=float, default=20.0, help="stop a method once one step takes longer (s)")
    p.add_argument("--out", default=str(RESULTS / "bench_memory.json"))
    a = p.parse_args(argv)
    rows, slow = [], set()
    for N in a.memory:
        g = torch.Generator().manual_seed(N)
        bound = None
        for name, step in methods(a.batch, a.dim, N, g):
            if name in slow:
                rows.append({"method": name, "N": N, "time_s": None, "note": f"skipped: slower than {a.skip_slow} s at a smaller N"})
                continue
            t = _median_time(step, a.repeats if N < 16384 else max(1, a.repeats // 2))
            bound = t if bound is None else bound
            rows.append({"method": name, "N": N, "time_s": t, "ratio_to_bound": t / bound})
            print(f"N={N:6d}  {name:42s} {t * 1e3:9.1f} ms  x{t / bound:6.1f} the two-GEMM bound", flush=True)
            if t > a.skip_slow:
                slow.add(name)
    result = {"B": a.batch, "D": a.dim, "device": "cpu", "machine": platform.processor() or platform.machine(),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "rows": rows,
              "pml_fastap_in_cross_batch_memory": fastap_in_memory_error()}
    Path(a.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
