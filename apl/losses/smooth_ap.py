"""`SmoothAPLoss`: Smooth-AP (Brown, Xie, Kalogeiton & Zisserman, ECCV 2020) as an nn.Module."""
from __future__ import annotations

from typing import Optional

from ..functional import smooth_ap_loss
from ..functional.rank import SMOOTH_AP_TEMPERATURE
from ..ops import validation as V
from .base import ListwiseLoss


class SmoothAPLoss(ListwiseLoss):
    """1 - mean Smooth-AP over a batch where every image is a query, any number of images per class.

    Args:
        temperature: tau of the sigmoid that approximates the ranking (the paper's 0.01).
        include_query: rank each query among its own items as the authors' code does (see
            `apl.per_query_smooth_ap`); the paper's definition leaves it out (default).
        class_balanced, backend, chunk_size, normalize: as in `ListwiseLoss`.
    """

    function = staticmethod(smooth_ap_loss)

    def __init__(self, temperature: float = SMOOTH_AP_TEMPERATURE, include_query: bool = False,
                 class_balanced: bool = False, backend: str = "auto", chunk_size: Optional[int] = None,
                 normalize: bool = True) -> None:
        super().__init__(class_balanced, backend, chunk_size, normalize)
        self.temperature = V.check_temperature(temperature)
        self.include_query = V.check_include_query(include_query, -1, False)

    def options(self) -> dict:
        return {"temperature": self.temperature, "include_query": self.include_query}
