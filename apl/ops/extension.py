"""Loading of the compiled extension `apl._C`. Never raises: a missing or broken build is recorded
with its reason, and the "auto" backend then falls back to the pure-PyTorch reference.

Importing `apl._C` runs its TORCH_LIBRARY blocks, which define torch.ops.apl.* and register the
kernels of each device it was built for; what it holds is then asked of the dispatcher.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

_C = None
_LOAD_ERROR: str | None = None

try:
    from .. import _C  # type: ignore[attr-defined, no-redef]
except Exception as exc:  # ImportError, undefined symbols after a torch upgrade, ...
    _LOAD_ERROR = f"{type(exc).__name__}: {exc}"


def build_info() -> dict:
    """What setup.py recorded about the build (apl/_build.json): torch release, whether the CUDA
    kernels were built and why not. Empty when the file is missing (a build from before it)."""
    try:
        return json.loads((Path(__file__).resolve().parent.parent / "_build.json").read_text())
    except (OSError, ValueError):
        return {}


def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether the dispatcher holds a kernel of `apl::<op>` for `dispatch_key` ("CPU", "CUDA")."""
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(f"apl::{op}", dispatch_key)
    except Exception:
        return False


def cpu_status() -> tuple[bool, str]:
    """Whether the compiled CPU kernels can be used, and why not."""
    if _C is None:
        built = build_info().get("torch")
        other = f"; it was built against torch {built}, this is torch {torch.__version__}" if built and built != torch.__version__ else ""
        return False, (
            f"the compiled extension apl._C could not be loaded ({_LOAD_ERROR}){other}; "
            "rebuild it with `bash install.sh` or `pip install --no-build-isolation -e .`"
        )
    if not has_kernel("ap_self", "CPU"):
        return False, "apl._C loaded but registered no CPU kernel for apl::ap_self"
    return True, "compiled CPU kernels (apl._C)"


def cuda_status() -> tuple[bool, str]:
    """Whether the compiled CUDA kernels can be used, and why not."""
    if _C is None:
        return False, f"the compiled extension apl._C could not be loaded ({_LOAD_ERROR})"
    if not has_kernel("ap_self", "CUDA"):
        why = build_info().get("why_no_cuda_kernels")
        return False, (f"apl._C was built without its CUDA kernels ({why})" if why else
                       "apl._C was built without CUDA (torch without CUDA, no CUDA toolkit, or APL_CPU_ONLY=1 at build time)")
    if not torch.cuda.is_available():
        return False, "apl._C has CUDA kernels but torch sees no CUDA device"
    return True, "compiled CUDA kernels (apl._C)"
