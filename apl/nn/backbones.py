"""Backbones: networks from an image batch (B, C, H, W) to feature maps (B, out_channels, h, w).

- "small_cnn": a compact CNN that trains on a couple of CPU cores; fine on 8x8 or 32x32 images.
- "tiny_cnn": the same with half the widths (a quarter of the compute): the demo's network.
- "resnet18" ... "resnet152": torchvision ResNets without their pooling and classifier. torchvision
  is optional: it is imported only when such a backbone is built, and weights are downloaded only
  with `pretrained=True`.
"""
from __future__ import annotations

import importlib
from typing import Sequence

import torch
import torch.nn as nn

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
SMALL_CNN = "small_cnn"
# Stage widths of the small CNNs by name.
SMALL_CNNS = {SMALL_CNN: (32, 64, 128), "tiny_cnn": (16, 32, 64)}
BACKBONES = tuple(SMALL_CNNS) + RESNETS


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'group', 'batch' or 'none', got {kind!r}")


class SmallCNN(nn.Module):
    """Stages of two 3x3 conv + norm + ReLU, with a 2x2 max-pool between stages (8x8 -> 2x2).

    No normalisation layer by default: a descriptor then does not depend on the rest of the batch,
    so the multistage backward (which recomputes one image at a time) sees the same network as the
    forward pass over the whole batch, and it is the fastest on CPU. `norm="batch"` (descriptors
    depend on the batch in training mode) and `norm="group"` (batch-independent, but much slower on
    CPU in current PyTorch) are available.
    """

    def __init__(self, in_channels: int = 3, widths: Sequence[int] = (32, 64, 128), norm: str = "none") -> None:
        super().__init__()
        if in_channels < 1 or not widths:
            raise ValueError(f"need in_channels >= 1 and at least one stage, got {in_channels}, {widths}")
        layers: list[nn.Module] = []
        prev = in_channels
        for i, width in enumerate(widths):
            if i > 0:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            for _ in range(2):
                layers += [nn.Conv2d(prev, width, 3, padding=1, bias=norm == "none"), _norm(norm, width), nn.ReLU(inplace=True)]
                prev = width
        self.features = nn.Sequential(*layers)
        self.in_channels = in_channels
        self.out_channels = prev

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class ResNetBackbone(nn.Module):
    """A torchvision ResNet up to its last residual stage (stride 32).

    With `freeze_batchnorm` (default) the BatchNorm layers keep their statistics and stay in eval
    mode, so a descriptor does not depend on its batch (same reason as in `SmallCNN`).
    With `in_channels=1` grey images are accepted and repeated over the three input channels (the
    network, and pretrained weights, stay those of RGB images).
    """

    def __init__(self, name: str = "resnet50", pretrained: bool = False, freeze_batchnorm: bool = True,
                 in_channels: int = 3) -> None:
        super().__init__()
        if name not in RESNETS:
            raise ValueError(f"unknown ResNet {name!r}; available: {', '.join(RESNETS)}")
        if in_channels not in (1, 3):
            raise ValueError(f"backbone {name!r} takes RGB (3-channel) or grey (1-channel) images, got in_channels={in_channels}")
        try:
            models = importlib.import_module("torchvision.models")
        except ImportError as err:
            raise ImportError(
                f"backbone {name!r} needs torchvision, which is not installed (pip install torchvision); "
                f"the built-in {' and '.join(map(repr, SMALL_CNNS))} backbones need nothing else"
            ) from err
        # weights=None never downloads; "DEFAULT" (ImageNet) only when asked for
        net = getattr(models, name)(weights="DEFAULT" if pretrained else None)
        self.features = nn.Sequential(
            net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4
        )
        self.out_channels = net.fc.in_features
        self.in_channels = in_channels
        self.freeze_batchnorm = freeze_batchnorm
        if freeze_batchnorm:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.requires_grad_(False)
                    m.bias.requires_grad_(False)
            self.train(self.training)

    def train(self, mode: bool = True) -> "ResNetBackbone":
        super().train(mode)
        if self.freeze_batchnorm:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_channels == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.features(x)


def build_backbone(name: str, in_channels: int = 3, pretrained: bool = False, **kwargs) -> nn.Module:
    """A backbone by name (see `BACKBONES`); extra keyword arguments go to its constructor.

    ResNets take RGB input, or grey input repeated over the three channels (`in_channels=1`);
    `pretrained` applies to them (the small CNN has no weights to load).
    """
    if name in SMALL_CNNS:
        if pretrained:
            raise ValueError(f"{name!r} has no pretrained weights")
        return SmallCNN(in_channels=in_channels, **{"widths": SMALL_CNNS[name], **kwargs})
    if name in RESNETS:
        return ResNetBackbone(name, pretrained=pretrained, in_channels=in_channels, **kwargs)
    raise ValueError(f"unknown backbone {name!r}; available: {', '.join(BACKBONES)}")
