"""Which GPU architectures setup.py builds the CUDA kernels for (a pure function, tested without
a GPU). Loaded by setup.py from its path: it imports nothing, not even torch.

- APL_CUDA_ARCH or TORCH_CUDA_ARCH_LIST set: used as given.
- A GPU visible at build time: its architecture(s), with +PTX on the highest.
- Otherwise DEFAULT_ARCHS (those the installed nvcc supports: Blackwell needs CUDA >= 12.8),
  with +PTX on the highest, so that a newer GPU can JIT-compile the kernels from PTX.
"""
from __future__ import annotations

from typing import Iterable, Optional

# Turing (T4) to Hopper; Blackwell (sm_100, sm_120) from CUDA 12.8 on.
DEFAULT_ARCHS = ("7.5", "8.0", "8.6", "8.9", "9.0")
BLACKWELL_ARCHS = ("10.0", "12.0")


def _key(arch: str) -> tuple[int, int]:
    major, minor = arch.split(".")
    return int(major), int(minor)


def cuda_arch_list(visible: Iterable[tuple[int, int]] = (), nvcc_version: Optional[tuple[int, int]] = None,
                   override: Optional[str] = None) -> str:
    """The TORCH_CUDA_ARCH_LIST value to build with, e.g. "7.5;8.0;8.6;8.9;9.0+PTX".

    Args:
        visible: compute capabilities (major, minor) of the GPUs visible at build time.
        nvcc_version: (major, minor) of the nvcc that builds; None when unknown.
        override: APL_CUDA_ARCH or TORCH_CUDA_ARCH_LIST when set (returned unchanged).
    """
    if override:
        return override
    archs = sorted({f"{major}.{minor}" for major, minor in visible}, key=_key)
    if not archs:
        archs = list(DEFAULT_ARCHS)
        if nvcc_version is not None and nvcc_version >= (12, 8):
            archs += BLACKWELL_ARCHS
    archs[-1] += "+PTX"
    return ";".join(archs)


def parse_nvcc_version(text: str) -> Optional[tuple[int, int]]:
    """(major, minor) from `nvcc --version` output ("... release 13.0, V13.0.88")."""
    import re

    m = re.search(r"release (\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None
