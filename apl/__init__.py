"""apl: the listwise average-precision loss for image retrieval (Revaud et al., ICCV 2019), and
the rank surrogates Smooth-AP and Recall@k, with fused CPU/CUDA kernels and pure-PyTorch references.

`import apl` loads the loss only (`apl.ops` and the public functions and modules). Everything else
is a subpackage loaded on first use: `apl.nn` (RetrievalNet, GeM, whitening), `apl.data` (image
lists, samplers, bundled datasets), `apl.evaluation` (exact metrics, Revisited Oxford/Paris,
extraction), `apl.multistage` (the multistage step), `apl.distributed` (global-batch all-gather),
`apl.memory` (cross-batch memory), `apl.pml` (apl's losses as pytorch-metric-learning losses),
`apl.train` (the `apl train` program), `apl.demo`, `apl.plots`, `apl.cli`.
"""
from __future__ import annotations

import importlib
from typing import Any

from . import ops  # noqa: F401  (registers the fake kernels and autograd of torch.ops.apl)
from .functional import (ap_loss, per_query_ap, per_query_recall_at_k, per_query_smooth_ap, quantized_ap,
                         recall_at_k_loss, smooth_ap_loss)
from .losses import APLoss, RecallAtKLoss, SmoothAPLoss
from .ops.dispatch import BackendStatus, available_backends
from .ops.selftest import selftest

__version__ = "0.1.0"

_SUBMODULES = ("cli", "data", "demo", "distributed", "evaluation", "losses", "memory", "multistage", "nn", "plots",
               "pml", "train")

__all__ = ["APLoss", "ap_loss", "per_query_ap", "quantized_ap", "SmoothAPLoss", "smooth_ap_loss", "per_query_smooth_ap",
           "RecallAtKLoss", "recall_at_k_loss", "per_query_recall_at_k", "available_backends", "BackendStatus",
           "selftest", "multistage_step", *_SUBMODULES]


def __getattr__(name: str) -> Any:
    # Subpackages on first use (PEP 562): a bug or a missing optional package in the trainer
    # cannot break `import apl`, and the loss imports in a fraction of the time.
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name == "multistage_step":
        return importlib.import_module(".multistage", __name__).multistage_step
    raise AttributeError(f"module 'apl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
