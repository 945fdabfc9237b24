"""Loading of the compiled extension. Never raises: a missing or broken build is recorded with its
reason, and the "auto" backend then falls back to the pure-PyTorch reference."""
from __future__ import annotations

import torch

_C = None
_LOAD_ERROR: str | None = None

try:  # importing the module runs TORCH_LIBRARY, which defines torch.ops.apl.*
    from . import _C  # type: ignore[attr-defined, no-redef]
except Exception as exc:  # ImportError, undefined symbols after a torch upgrade, ...
    _LOAD_ERROR = f"{type(exc).__name__}: {exc}"


def _has_kernel(dispatch_key: str) -> bool:
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key("apl::ap_self", dispatch_key)
    except Exception:
        return False


def cpu_status() -> tuple[bool, str]:
    """Whether the compiled CPU kernels can be used, and why not."""
    if _C is None:
        return False, (
            f"the compiled extension apl._C could not be loaded ({_LOAD_ERROR}); "
            "reinstall with `pip install --no-build-isolation -e .`"
        )
    if not _has_kernel("CPU"):
        return False, "apl._C loaded but registered no CPU kernel for apl::ap_self"
    return True, "compiled CPU kernels (apl._C)"


def cuda_status() -> tuple[bool, str]:
    """Whether the compiled CUDA kernels can be used, and why not."""
    if _C is None:
        return False, f"the compiled extension apl._C could not be loaded ({_LOAD_ERROR})"
    if not getattr(_C, "with_cuda", False):
        return False, (
            "apl._C was built without CUDA (torch without CUDA, no nvcc, or APL_CPU_ONLY=1 "
            "at build time)"
        )
    if not torch.cuda.is_available():
        return False, "apl._C has CUDA kernels but torch sees no CUDA device"
    if not _has_kernel("CUDA"):
        return False, "apl._C registered no CUDA kernel for apl::ap_self"
    return True, "compiled CUDA kernels (apl._C)"
