"""What the CPU benchmarks share: each measurement of a forward + backward step in fresh processes
(median time over repeats with the allocator's defaults; peak memory above the inputs in another, with
large blocks returned at once), under an address-space limit, and the machine's description."""
from __future__ import annotations

import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable


def status_kb(field: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS: resident now, VmHWM: peak resident)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> bool:
    """Resets VmHWM to the current resident set (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# Which half of a measurement this process makes (set by run_worker; unset: both, in one process).
MEASURE_ENV = "APL_BENCH_MEASURE"
# glibc told to map every block of 128 KiB or more and return it when freed, and to trim the heap:
# the resident set then follows the live tensors (by default glibc's mmap threshold adapts upwards
# and freed blocks stay cached). It must hold from the process's start: switched on later, the
# heap's scattered free chunks are touched again by small allocations and counted.
STRICT_ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


def time_and_peak(step: Callable[[], object], repeats: int) -> dict:
    """Median seconds of `step` over `repeats` and the growth of the resident set's peak over what
    was there in one step (Linux VmHWM after resetting it), each after one warm-up step (thread
    pools, allocator buffers). Under run_worker the two come from two fresh processes: the times
    with the allocator's defaults, as a training loop runs, the peak with STRICT_ALLOCATOR (timing
    under it would charge each method a page fault per 4 KiB of every large temporary, which a loop
    under the defaults mostly reuses)."""
    import torch

    measure = os.environ.get(MEASURE_ENV, "both")
    t0 = time.perf_counter()
    step()
    warm = time.perf_counter() - t0
    out = {"threads": torch.get_num_threads()}
    if measure in ("time", "both"):
        times = []
        for _ in range(1 if warm > 5 else repeats):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        out.update(time_s=statistics.median(times), repeats=len(times))
    if measure in ("memory", "both"):
        gc.collect()
        exact = reset_peak()
        base = status_kb("VmRSS")
        step()
        out["peak_mb"] = (status_kb("VmHWM") - base) / 1024 if exact else None
    if measure != "both":
        out["timing_allocator"] = "default"
    return out


def limit_memory(gb: float) -> None:
    """Caps this process's address space: an allocation beyond it is a MemoryError, not a killed
    machine."""
    limit = int(gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def run_worker(module: str, args: list[str], timeout: float, memory: bool = True, **keys) -> dict:
    """`python -m module *args` in a fresh process; its last stdout line (JSON), or {"error": why}
    with `keys` in both. With `memory` (a worker that calls time_and_peak), twice: the times with
    the allocator's defaults, then the peak in another fresh process with STRICT_ALLOCATOR."""
    out = _run(module, args, timeout, dict(os.environ, **({MEASURE_ENV: "time"} if memory else {})), keys)
    if memory and "error" not in out:
        mem = _run(module, args, timeout, dict(os.environ, **STRICT_ALLOCATOR, **{MEASURE_ENV: "memory"}), keys)
        out["peak_mb"] = mem.get("peak_mb")
    return out


def _run(module: str, args: list[str], timeout: float, env: dict, keys: dict) -> dict:
    try:
        out = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout,
                             env=env)
    except subprocess.TimeoutExpired:
        return {**keys, "error": f"timeout after {timeout:.0f}s"}
    if out.returncode != 0:
        err = out.stderr.strip()
        last = err.splitlines()[-1] if err else f"exit {out.returncode}"
        if "MemoryError" in err or "not enough memory" in err or "DefaultCPUAllocator" in err:
            last = "out of memory (" + last[-120:] + ")"
        return {**keys, "error": last}
    return {**keys, **json.loads(out.stdout.strip().splitlines()[-1])}


def machine(gpu: bool = False) -> dict:
    """The machine a result was measured on: CPU, cores, torch, threads, Python, torch's huge-page
    allocation switch, and with `gpu` the
    CUDA device (name, memory, SMs, capability, driver, TF32)."""
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "python": platform.python_version(),
            # torch's switch that puts every large CPU allocation on transparent huge pages
            "thp_mem_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE", "0")}
    if gpu and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    sm_count=props.multi_processor_count, capability=f"{props.major}.{props.minor}",
                    torch_cuda=torch.version.cuda, tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,power.limit",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
            info["nvidia_smi"] = out.stdout.strip()
            info["driver"] = out.stdout.strip().split(",")[1].strip() if out.returncode == 0 else None
        except Exception as exc:  # noqa: BLE001  (no nvidia-smi: the rest still describes the GPU)
            info["nvidia_smi"] = f"unavailable: {exc}"
    return info
