"""What --amp costs on the CPU: one training step of the demo's network (tiny_cnn, GeM, the head;
batch 256 of 32 x 32 grey images; the features under autocast, the head and AP loss in float32,
as apl.train.step runs them) in float32, bfloat16 and float16, timed in the same process, reported
as a ratio to float32. On a CPU without native half-precision arithmetic (AVX512-BF16/FP16, AMX)
the half-precision steps are slower, which the trainer's --amp note says (apl/train/amp.py).

    python -m benchmarks.bench_amp_cpu        # benchmarks/results/amp_cpu.json (about a minute)
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import apl
from apl.nn import RetrievalNet
from apl.train.amp import AMP, NATIVE_FLAGS, cpu_flags
from apl.train.step import TrainStep

from .harness import machine

RESULTS = Path(__file__).resolve().parent / "results"


def step_seconds(amp, batch: int, repeats: int) -> float:
    torch.manual_seed(0)
    net = RetrievalNet("tiny_cnn", dim=64, in_channels=1)
    step = TrainStep(net, apl.APLoss(), torch.device("cpu"), amp_dtype=AMP.get(amp))
    x = torch.rand(batch, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.arange(batch) % (batch // 8)
    step(x, y)  # warm-up
    times = []
    for _ in range(repeats):
        net.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        step(x, y)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(RESULTS / "amp_cpu.json"))
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    flags = cpu_flags() or set()
    base = step_seconds(None, a.batch, a.repeats)
    rows = [{"amp": "none (float32)", "step_s": round(base, 4), "ratio_to_float32": 1.0}]
    for amp in AMP:
        t = step_seconds(amp, a.batch, a.repeats)
        rows.append({"amp": amp, "step_s": round(t, 4), "ratio_to_float32": round(t / base, 2),
                     "native": any(f in flags for f in NATIVE_FLAGS[amp])})
    report = {"what": __doc__.splitlines()[0], "batch": a.batch, "repeats": a.repeats, "machine": machine(), "rows": rows}
    Path(a.out).write_text(json.dumps(report, indent=1))
    print("| --amp | step (s) | x float32 | native on this CPU |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['amp']} | {r['step_s']:.3f} | {r['ratio_to_float32']:.2f} | {r.get('native', '-')} |")
    return report


if __name__ == "__main__":
    main()
