"""Which implementations of the loss work in this install, and how "auto" picks one."""
from __future__ import annotations

import warnings
from typing import NamedTuple

import torch

from . import _ext


class BackendStatus(NamedTuple):
    available: bool
    reason: str


def available_backends() -> dict[str, BackendStatus]:
    """Status of each backend: "torch" (pure-PyTorch reference, always there), "cpu" and "cuda"
    (the compiled kernels). Each entry says whether it works here and, if not, why."""
    return {
        "torch": BackendStatus(True, "pure-PyTorch reference (apl.reference)"),
        "cpu": BackendStatus(*_ext.cpu_status()),
        "cuda": BackendStatus(*_ext.cuda_status()),
    }


_warned: set[str] = set()


def resolve(backend: str, device: torch.device) -> str:
    """The backend that will run for tensors on `device`: "torch", "cpu" or "cuda".

    "auto" takes the compiled kernel for the device when it works, else the reference, with one
    warning (per reason) that says why. An explicit compiled backend that cannot run is an error.
    """
    if backend == "torch":
        return "torch"
    kind = "cuda" if device.type == "cuda" else ("cpu" if device.type == "cpu" else None)
    if backend in ("cpu", "cuda"):
        if kind != backend:
            raise ValueError(f"backend={backend!r} cannot run on tensors on {device}")
        ok, reason = available_backends()[backend]
        if not ok:
            raise RuntimeError(f"backend={backend!r} is not available: {reason}")
        return backend
    # auto
    if kind is None:
        reason = f"apl has no compiled kernel for device type {device.type!r}"
    else:
        ok, reason = available_backends()[kind]
        if ok:  # the small self-test, once per device and process (apl/selftest.py)
            from .selftest import AUTO_CHECKED, auto_check

            if kind in AUTO_CHECKED:
                ok, reason = auto_check(device)
        if ok:
            return kind
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"apl: using the pure-PyTorch reference backend: {reason}", RuntimeWarning, stacklevel=3)
    return "torch"


@torch.compiler.assume_constant_result
def _resolve_constant(backend: str, device_type: str, device_index: int) -> str:
    return resolve(backend, torch.device(device_type, device_index) if device_index >= 0 else torch.device(device_type))


def resolve_for(backend: str, device: torch.device) -> str:
    """`resolve`, also inside torch.compile(fullgraph=True): there the availability queries (which
    return Python values) cannot be traced, so the compiler runs the resolution once while tracing
    and keeps its result as a constant of the graph."""
    if torch.compiler.is_compiling():
        return _resolve_constant(backend, device.type, -1 if device.index is None else device.index)
    return resolve(backend, device)

