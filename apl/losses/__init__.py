"""The losses as modules, one per file, and the losses by name for training and comparison.

- `base`: `ListwiseLoss`, what the loss modules share;
- `ap`: `APLoss`, apl's listwise AP loss (1 - mAP_Q, or a tie-aware AP);
- `smooth_ap`, `recall_at_k`: `SmoothAPLoss`, `RecallAtKLoss`, the rank surrogates on apl's kernels;
- `registry`: `build_loss(name, ...)`, `SPECS` (what each loss is and which options it takes);
- `baselines`: pytorch-metric-learning's losses behind the same call, `loss(embeddings, labels)`.
"""
from .ap import APLoss
from .base import ListwiseLoss
from .recall_at_k import RecallAtKLoss
from .smooth_ap import SmoothAPLoss
from .baselines import PMLLoss
from .registry import FLAGS, LOSSES, SPECS, LossSpec, build_loss, check_options, spec_of

__all__ = ["APLoss", "ListwiseLoss", "RecallAtKLoss", "SmoothAPLoss", "FLAGS", "LOSSES", "SPECS", "LossSpec", "PMLLoss", "build_loss", "check_options", "spec_of"]
