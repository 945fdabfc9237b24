"""A learned linear whitening of pooled descriptors, optionally started from PCA-whitening."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn


class Whitening(nn.Linear):
    """y = (x - m) P, as a linear layer (in_dim -> out_dim) trained with the network.

    `init_from_pca` sets it to a PCA-whitening learned on descriptors (anything with `mean` (D,)
    and `projection` (D, dim) tensors, such as `apl.evaluation.PCAWhitening`): weight = P^T and
    bias = -m P, the usual warm start for the whitening layer of retrieval networks.
    """

    def __init__(self, in_dim: int, out_dim: Optional[int] = None, bias: bool = True) -> None:
        super().__init__(in_dim, in_dim if out_dim is None else out_dim, bias=bias)

    @torch.no_grad()
    def init_from_pca(self, pca) -> "Whitening":
        mean = torch.as_tensor(pca.mean, dtype=torch.float64).reshape(-1)
        proj = torch.as_tensor(pca.projection, dtype=torch.float64)
        if proj.shape != (self.in_features, self.out_features) or mean.shape[0] != self.in_features:
            raise ValueError(
                f"PCA-whitening maps {mean.shape[0]} -> {proj.shape[-1]} dimensions, "
                f"this layer {self.in_features} -> {self.out_features}"
            )
        if self.bias is None:
            raise ValueError("init_from_pca needs a layer with a bias (to subtract the mean)")
        self.weight.copy_(proj.T.to(self.weight))
        self.bias.copy_((-mean @ proj).to(self.bias))
        return self
