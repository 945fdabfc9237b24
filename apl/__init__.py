"""apl: the listwise average-precision loss for image retrieval (Revaud et al., ICCV 2019),
with fused CPU/CUDA kernels and a pure-PyTorch reference.

Subpackages: `apl.train` (multistage step), `apl.distributed` (global-batch all-gather),
`apl.nn` (RetrievalNet, GeM, whitening), `apl.data` (image lists, samplers, bundled digits),
`apl.evaluation` (exact mAP, Revisited Oxford/Paris protocol, whitening, query expansion),
`apl.memory` (cross-batch memory), `apl.losses` (training losses by name), `apl.pml` (the AP loss
as a pytorch-metric-learning loss; imported on demand).
"""
from . import _ops  # noqa: F401  (registers fake kernels and autograd for torch.ops.apl)
from . import data, distributed, evaluation, memory, nn, train
from .backends import BackendStatus, available_backends
from .functional import ap_loss, per_query_ap, quantized_ap
from .loss import APLoss
from .selftest import selftest

__version__ = "0.1.0"

__all__ = [
    "APLoss",
    "ap_loss",
    "per_query_ap",
    "quantized_ap",
    "available_backends",
    "BackendStatus",
    "selftest",
    "data",
    "distributed",
    "evaluation",
    "memory",
    "nn",
    "train",
]
