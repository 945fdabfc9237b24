"""apl's losses as modules, one per file (the trainer's table of losses by name, apl's and the
baselines, is `apl.train.losses`).

- `base`: `ListwiseLoss`, what the loss modules share;
- `ap`: `APLoss`, apl's listwise AP loss (1 - mAP_Q, or a tie-aware AP);
- `smooth_ap`, `recall_at_k`: `SmoothAPLoss`, `RecallAtKLoss`, the rank surrogates on apl's kernels.
"""
from .ap import APLoss
from .base import ListwiseLoss
from .recall_at_k import RecallAtKLoss
from .smooth_ap import SmoothAPLoss

__all__ = ["APLoss", "ListwiseLoss", "RecallAtKLoss", "SmoothAPLoss"]
