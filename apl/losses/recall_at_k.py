"""`RecallAtKLoss`: the Recall@k surrogate (Patel, Tolias & Matas, CVPR 2022) as an nn.Module."""
from __future__ import annotations

from typing import Optional, Sequence, Union

from ..functional import recall_at_k_loss
from ..functional.rank import RECALL_K, RECALL_K_TEMPERATURE, RECALL_TEMPERATURE, KTemperature
from ..ops import validation as V
from .base import ListwiseLoss


class RecallAtKLoss(ListwiseLoss):
    """1 - mean Recall@k surrogate (averaged over `k`) over a batch where every image is a query.

    Args:
        k: the k values (the paper trains with 1, 2, 4, 8, 16).
        temperature: tau_1 of the rank's sigmoid (0.01); k_temperature: tau_2 of each k (1).
        include_query: rank each query among its own items as the authors' code does (see
            `apl.per_query_recall_at_k`); the paper's definition leaves it out (default).
        class_balanced, backend, chunk_size, normalize: as in `ListwiseLoss`.
    SiMix (the paper's similarity mixup) is not part of it.
    """

    function = staticmethod(recall_at_k_loss)

    def __init__(self, k: Union[int, Sequence[int]] = RECALL_K, temperature: float = RECALL_TEMPERATURE,
                 k_temperature: KTemperature = RECALL_K_TEMPERATURE, include_query: bool = False,
                 class_balanced: bool = False, backend: str = "auto", chunk_size: Optional[int] = None,
                 normalize: bool = True) -> None:
        super().__init__(class_balanced, backend, chunk_size, normalize)
        ks, temps = V.check_ks(k, k_temperature)
        self.k = tuple(int(v) for v in ks)
        self.k_temperature = temps
        self.temperature = V.check_temperature(temperature)
        self.include_query = V.check_include_query(include_query, -1, False)

    def options(self) -> dict:
        return {"k": self.k, "temperature": self.temperature, "k_temperature": self.k_temperature,
                "include_query": self.include_query}
