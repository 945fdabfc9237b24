"""Which implementation of the loss runs: each backend says why it cannot run on a device (as
xformers' op dispatch asks each op), and "auto" takes the first one that can.

- "torch": the pure-PyTorch reference (apl/ops/reference.py), always there.
- "cpu", "cuda": the compiled kernels of apl._C for that device type. A device type in
  `SELF_CHECKED` is trusted by "auto" only after a small self-test against the reference has
  passed on that device, once per device and process (apl/ops/selftest.py; APL_SKIP_SELFTEST=1
  skips it). An explicit backend is used as asked, without the self-test.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, NamedTuple, Optional

import torch

from . import extension, notices, selftest


# Device types whose compiled kernels "auto" self-checks before use (tests add "cpu").
SELF_CHECKED: tuple[str, ...] = ("cuda",)
_self_checks: dict[str, tuple[bool, str]] = {}


class BackendStatus(NamedTuple):
    available: bool
    reason: str


def available_backends() -> dict[str, BackendStatus]:
    """Status of each backend: "torch" (pure-PyTorch reference, always there), "cpu" and "cuda"
    (the compiled kernels). Each entry says whether it works here and, if not, why."""
    return {
        "torch": BackendStatus(True, "pure-PyTorch reference (apl.ops.reference)"),
        "cpu": BackendStatus(*extension.cpu_status()),
        "cuda": BackendStatus(*extension.cuda_status()),
    }


def why_not(backend: str, device: torch.device) -> Optional[str]:
    """None when `backend` ("torch", "cpu" or "cuda") can run on tensors on `device`, else why not."""
    if backend == "torch":
        return None
    if device.type != backend:
        return f"backend={backend!r} cannot run on tensors on {device}"
    ok, reason = available_backends()[backend]
    return None if ok else f"backend={backend!r} is not available: {reason}"


def self_check(device: torch.device, check: Optional[Callable[[torch.device], dict]] = None) -> tuple[bool, str]:
    """Whether "auto" may use the compiled kernels on `device`: the small self-test, run once per
    device and process (cached). Returns (ok, reason); a failure's reason tells the user to run
    `apl selftest`."""
    if os.environ.get("APL_SKIP_SELFTEST", "0") not in ("", "0"):
        return True, "self-test skipped (APL_SKIP_SELFTEST)"
    key = str(device)
    if key not in _self_checks:
        # Also while torch.compile traces: this runs in Python at trace time (resolve_for keeps the
        # result as a constant of the graph), on real tensors, so a compiled graph never bakes in
        # kernels that were not checked; a check that cannot run there fails, and "auto" falls back.
        try:
            r = (check or selftest.quick_check)(device)
            ok, why, sticky = bool(r["ok"]), str(r["reason"]), bool(r.get("sticky"))
        except Exception as exc:  # noqa: BLE001  (any failure is the finding)
            ok, why, sticky = False, f"raised {type(exc).__name__}: {exc}", False
        if sticky:
            raise RuntimeError(f"apl: the compiled {device.type.upper()} kernels failed apl's self-test on {device}: {why}")
        if not ok:
            why = (f"the compiled {device.type.upper()} kernels failed apl's self-test on {device} ({why}); "
                   "run `apl selftest` and report its output to the apl maintainers")
        _self_checks[key] = (ok, why)
    return _self_checks[key]


def forget_self_checks() -> None:
    """Run the self-check again at the next "auto" choice (for tests)."""
    _self_checks.clear()


def resolve(backend: str, device: torch.device) -> str:
    """The backend that runs for tensors on `device`: "torch", "cpu" or "cuda".

    "auto" takes the compiled kernels of the device when they can run (and passed the self-check),
    else the reference, with one warning per reason that says why. An explicit backend that cannot
    run is an error.
    """
    if backend != "auto":
        reason = why_not(backend, device)
        if reason is not None:
            raise (ValueError if "cannot run on" in reason else RuntimeError)(reason)
        return backend
    if device.type in ("cpu", "cuda"):
        reason = why_not(device.type, device)
        if reason is None and device.type in SELF_CHECKED:
            ok, why = self_check(device)
            reason = None if ok else why
        if reason is None:
            return device.type
        reason = reason.split(": ", 1)[1] if reason.startswith("backend=") else reason
    else:
        reason = f"apl has no compiled kernel for device type {device.type!r}"
    notices.warn_once(f"fallback: {reason}", f"apl: using the pure-PyTorch reference backend: {reason}",
                      RuntimeWarning)
    return "torch"


def _resolve_constant(backend: str, device_type: str, device_index: int) -> str:
    return resolve(backend, torch.device(device_type, device_index) if device_index >= 0 else torch.device(device_type))


# What torch.compiler.assume_constant_result does, without importing torch._dynamo (about a second,
# which would double the time of `import apl`). tests/ops/test_compile.py fails if torch changes it.
if "torch._dynamo" in sys.modules:
    torch.compiler.assume_constant_result(_resolve_constant)
else:
    _resolve_constant._dynamo_marked_constant = True  # type: ignore[attr-defined]


def resolve_for(backend: str, device: torch.device) -> str:
    """`resolve`, also inside torch.compile(fullgraph=True): there the availability queries (which
    return Python values) cannot be traced, so the compiler runs the resolution once while tracing
    and keeps its result as a constant of the graph."""
    if torch.compiler.is_compiling():
        return _resolve_constant(backend, device.type, -1 if device.index is None else device.index)
    return resolve(backend, device)
