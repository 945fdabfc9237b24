"""RetrievalNet: image -> compact, L2-normalised global descriptor, in two parts.

    features (per image):  backbone -> GeM -> L2                    `net.features(images)`
    head (per batch):      BatchNorm (no affine) -> whitening -> L2  `net.head(pooled)`

The head couples the images of a training batch through its BatchNorm (apl/nn/head.py says why it
is there), so a training step that splits the batch (multistage backpropagation, torchrun) runs the
features per chunk or per rank and the head on the whole batch: see `apl.train.step`. In eval mode
`net(images)` depends on each image only.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn as nn

from .backbones import build_backbone
from .head import HEADS, DescriptorHead
from .pooling import GeM, L2Norm

# Keys of the flat layout of earlier versions -> keys of this one (their checkpoints still load).
_OLD_PREFIXES = (("backbone.", "features.backbone."), ("pool.", "features.pool."), ("whiten.", "head.whiten."))


class PooledFeatures(nn.Module):
    """backbone -> GeM -> L2: the per-image part of RetrievalNet, (B, C, H, W) -> (B, out_channels)."""

    def __init__(self, backbone: nn.Module, p: float = 3.0, learn_p: bool = True) -> None:
        super().__init__()
        channels = getattr(backbone, "out_channels", None)
        if not isinstance(channels, int):
            raise ValueError("backbone must have an int attribute `out_channels` (its feature-map channels)")
        self.backbone = backbone
        self.pool = GeM(p=p, learn_p=learn_p)
        self.norm = L2Norm()
        self.out_channels = channels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.norm(self.pool(self.backbone(images)))


class RetrievalNet(nn.Module):
    """features (backbone -> GeM -> L2) then head ([BatchNorm] -> whitening -> L2).

    Args:
        backbone: a module with an `out_channels` attribute, or a name for `build_backbone`
            (then `in_channels` and `pretrained` go there).
        dim: descriptor dimension (None keeps the backbone's width and drops the whitening layer).
        p, learn_p: GeM's power and whether it is trained.
        head: "batchnorm" (the BatchNorm before the whitening, default) or "plain" (without it, the
            network of earlier versions).
    The output (B, dim) has unit-norm rows.
    """

    def __init__(
        self,
        backbone: Union[nn.Module, str],
        dim: Optional[int] = None,
        p: float = 3.0,
        learn_p: bool = True,
        in_channels: int = 3,
        pretrained: bool = False,
        head: str = "batchnorm",
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, got {head!r}")
        if isinstance(backbone, str):
            backbone = build_backbone(backbone, in_channels=in_channels, pretrained=pretrained)
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
            raise ValueError(f"dim must be a positive int or None, got {dim!r}")
        self.features = PooledFeatures(backbone, p=p, learn_p=learn_p)
        self.head = DescriptorHead(self.features.out_channels, dim, center=head == "batchnorm")
        self.head_kind = head
        self.out_dim = self.head.out_dim
        self.in_channels = getattr(backbone, "in_channels", in_channels)
        self._register_load_state_dict_pre_hook(_rename_old_keys)

    @property
    def backbone(self) -> nn.Module:
        return self.features.backbone

    @property
    def whiten(self) -> Optional[nn.Module]:
        return self.head.whiten

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised GeM descriptors before the head, (B, out_channels)."""
        return self.features(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

    def init_whitening(self, pca) -> "RetrievalNet":
        """Start the whitening layer from a PCA-whitening learned on what enters it (the `pooled`
        descriptors, standardised by the BatchNorm's running statistics when the head has one)."""
        if self.head.whiten is None:
            raise ValueError("this RetrievalNet has no whitening layer (built with dim=None)")
        self.head.whiten.init_from_pca(pca)
        return self


def _rename_old_keys(state_dict, prefix, *_args) -> None:
    """State dicts of the flat RetrievalNet of earlier versions ("backbone.*", "pool.p",
    "whiten.*") load into this one."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rest = key[len(prefix):]
        for old, new in _OLD_PREFIXES:
            if rest.startswith(old):
                state_dict[prefix + new + rest[len(old):]] = state_dict.pop(key)
                break
