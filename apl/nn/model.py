"""RetrievalNet: image -> compact, L2-normalised global descriptor."""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn as nn

from .backbones import build_backbone
from .pooling import GeM, L2Norm
from .whitening import Whitening


class RetrievalNet(nn.Module):
    """backbone -> GeM -> L2 -> whitening (linear, out_channels -> dim) -> L2.

    `backbone` is a module with an `out_channels` attribute or a name for `build_backbone`
    (then `in_channels` and `pretrained` go there). `dim=None` keeps the backbone's width and
    drops the whitening layer. The output (B, dim) has unit-norm rows.
    """

    def __init__(
        self,
        backbone: Union[nn.Module, str],
        dim: Optional[int] = None,
        p: float = 3.0,
        learn_p: bool = True,
        in_channels: int = 3,
        pretrained: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(backbone, str):
            backbone = build_backbone(backbone, in_channels=in_channels, pretrained=pretrained)
        channels = getattr(backbone, "out_channels", None)
        if not isinstance(channels, int):
            raise ValueError("backbone must have an int attribute `out_channels` (its feature-map channels)")
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
            raise ValueError(f"dim must be a positive int or None, got {dim!r}")
        self.backbone = backbone
        self.pool = GeM(p=p, learn_p=learn_p)
        self.norm = L2Norm()
        self.whiten = Whitening(channels, dim) if dim is not None else None
        self.out_dim = channels if dim is None else dim
        self.in_channels = getattr(backbone, "in_channels", in_channels)

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised GeM descriptors before the whitening, (B, out_channels)."""
        return self.norm(self.pool(self.backbone(images)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.pooled(images)
        if self.whiten is not None:
            x = self.norm(self.whiten(x))
        return x

    def init_whitening(self, pca) -> "RetrievalNet":
        """Start the whitening layer from a PCA-whitening learned on `pooled` descriptors."""
        if self.whiten is None:
            raise ValueError("this RetrievalNet has no whitening layer (built with dim=None)")
        self.whiten.init_from_pca(pca)
        return self
