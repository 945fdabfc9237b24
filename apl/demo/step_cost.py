"""Cost of one loss step alone: forward + backward of a loss on a batch of descriptors (no
network), median time and peak memory above the inputs. Each measurement runs in a fresh Python
process, so that the peak of one loss is not hidden by memory another one freed.

    python -m apl.demo.step_cost '{"loss": "ap", "batch": 250, "dim": 32, "classes": 5}'

CPU only (on CUDA, use torch.cuda.max_memory_allocated instead); peak memory is the growth of the
resident set (VmHWM after resetting it through /proc/self/clear_refs, Linux only; None elsewhere).
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(loss: str, batch: int, dim: int, classes: int, repeats: int = 15, options: Optional[dict] = None) -> dict:
    """Median seconds and peak MB of forward + backward of `loss` on a (batch, dim) batch with
    `classes` classes of equal size (in this process)."""
    import gc

    import torch

    from ..train.losses import build_loss

    torch.manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(batch, dim), dim=1).requires_grad_()
    y = torch.arange(batch) % classes
    fn = build_loss(loss, **(options or {}))

    def step():
        x.grad = None
        fn(x, y).backward()

    step()  # warm-up: thread pools, lazy initialisation
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        base = _status_kb("VmRSS")
    except OSError:
        base = None
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak = None if base is None else max(0, _status_kb("VmHWM") - base) / 1024
    return {"loss": loss, "batch": batch, "dim": dim, "time_ms": statistics.median(times) * 1e3, "peak_mb": peak,
            "repeats": repeats, "threads": torch.get_num_threads()}


def measure_in_subprocess(loss: str, batch: int, dim: int, classes: int, repeats: int = 15,
                          options: Optional[dict] = None, threads: Optional[int] = None) -> dict:
    """`measure` in a fresh interpreter (same Python, same apl)."""
    args = dict(loss=loss, batch=batch, dim=dim, classes=classes, repeats=repeats, options=options or {}, threads=threads)
    root = str(Path(__file__).resolve().parents[2])
    env = None
    import os

    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-m", "apl.demo.step_cost", json.dumps(args)], capture_output=True, text=True,
                         env=env, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"measuring the loss step of {loss!r} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    a = json.loads(sys.argv[1])
    threads = a.pop("threads", None)
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    print(json.dumps(measure(**a)))
