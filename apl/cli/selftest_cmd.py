"""`apl selftest`: the compiled kernels against the pure-PyTorch reference on every device present
(or on the one asked for), one line per backend."""
from __future__ import annotations

import argparse

import torch

from .common import HelpFormatter


def add(sub) -> None:
    p = sub.add_parser("selftest", help="check the compiled kernels against the reference", formatter_class=HelpFormatter,
                       description="Runs the compiled kernels and the pure-PyTorch reference on the same small batches "
                                   "(every variant, streaming, reference sets, score matrices; float32 and float64) and "
                                   "compares AP, loss and gradients. Exit status 1 when a kernel disagrees, or when the "
                                   "device asked for with --device has no working kernels.")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: every device present)")
    p.set_defaults(func=run)


def _device(spec: str) -> torch.device:
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device must be cpu, cuda or cuda:N, got {spec!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu, cuda or cuda:N (apl has kernels for these only), got {spec!r}")
    if device.type == "cuda" and device.index is not None and torch.cuda.is_available() \
            and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {spec}: there are only {torch.cuda.device_count()} CUDA devices")
    return device


def run(a: argparse.Namespace) -> int:
    from ..ops.selftest import selftest

    wanted = None if a.device is None else _device(a.device)
    try:
        results = selftest(wanted)
    except Exception as exc:  # noqa: BLE001  (a crash of the check is a failure to report, not a traceback)
        print(f"apl selftest: FAILED  raised {type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}")
        return 1
    status = 0
    for name, r in results.items():
        if not r.get("available", True):
            asked = wanted is not None and wanted.type == name
            print(f"apl selftest: {name:4s}: not available ({r['reason']})")
            status |= 1 if asked else 0  # a script that asks for a device expects it to work
            continue
        word = "ok" if r["ok"] else "FAILED"
        status |= 0 if r["ok"] else 1
        print(f"apl selftest: {name:4s}: {word}  max error {r['max_error']:.2e}  {r['time']:.2f} s  {r['reason']}")
    return status
