"""Mixed precision of a run (--amp): the autocast dtype of each name, and what to tell a user who
asks for it on a CPU that has no native arithmetic in that dtype.

On such a CPU (no AVX512-BF16 / AMX for bfloat16, no AVX512-FP16 / AMX-FP16 for float16) torch
emulates the half-precision operations, and autocast runs the network slower than float32, not
faster: benchmarks/bench_amp_cpu.py measures the factor for the demo's network (its results in
benchmarks/results/amp_cpu.json).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}
# CPU flags (as in /proc/cpuinfo) that give native arithmetic in each dtype
NATIVE_FLAGS = {"bf16": ("avx512_bf16", "amx_bf16"), "fp16": ("avx512_fp16", "amx_fp16")}


def cpu_flags() -> Optional[set[str]]:
    """The CPU's feature flags (Linux), None where they cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def cpu_note(amp: str, flags: Optional[set[str]] = None) -> Optional[str]:
    """A line for a run with `--amp amp` on the CPU, or None when there is nothing to say."""
    flags = cpu_flags() if flags is None else flags
    overflow = " float16 also overflows easily (the gradient scaler skips those steps)." if amp == "fp16" else ""
    if flags is not None and any(f in flags for f in NATIVE_FLAGS[amp]):
        return f"--amp {amp} on the CPU:{overflow}" if overflow else None
    what = "this CPU has" if flags is not None else "this CPU may have"
    return (f"--amp {amp} on the CPU: {what} no native {AMP[amp]} arithmetic ({' or '.join(NATIVE_FLAGS[amp])}), so "
            f"autocast runs slower than float32, several times slower for small networks (benchmarks/bench_amp_cpu.py)."
            f"{overflow} Leave out --amp on this machine.")
