"""Global pooling and normalisation of convolutional feature maps."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class GeM(nn.Module):
    """Generalised-mean pooling (Radenovic et al.): (mean over H, W of x^p)^(1/p), (B, C, H, W) -> (B, C).

    p = 1 is average pooling and p -> inf max pooling. With `learn_p`, p is a parameter trained with
    the network. Activations are clamped to `eps` first, since x^p needs x > 0 for fractional p.

    Computed in float32 (or float64) even under autocast: in float16, x^3 of small activations
    underflows to 0 and the gradient of the 1/p root is then infinite. Each map is divided by its
    largest value before the power and multiplied by it after (the mean is homogeneous of degree
    1), so that x^p cannot overflow: otherwise activations above about 3e8 (a network trained at too
    high a rate) overflow float32 with p = 4.5 and the descriptor comes out NaN.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learn_p: bool = True) -> None:
        super().__init__()
        if not p > 0:
            raise ValueError(f"GeM power p must be > 0, got {p!r}")
        value = torch.tensor(float(p))
        if learn_p:
            self.p = nn.Parameter(value)
        else:
            self.register_buffer("p", value)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"GeM expects (B, C, H, W) feature maps, got shape {tuple(x.shape)}")
        dtype = torch.promote_types(x.dtype, torch.float32)
        with torch.autocast(x.device.type, enabled=False):
            x = x.to(dtype)
            p = self.p.to(dtype)
            x = x.clamp(min=self.eps)
            # the scale is a constant to autograd: since the mean is homogeneous, the gradient through
            # x / scale times scale is the whole gradient
            scale = x.detach().amax(dim=(2, 3), keepdim=True)
            return (x / scale).pow(p).mean(dim=(2, 3)).pow(1.0 / p) * scale.flatten(2).squeeze(2)

    def extra_repr(self) -> str:
        return f"p={float(self.p.detach()):.4g}, eps={self.eps}, learn_p={isinstance(self.p, nn.Parameter)}"


class L2Norm(nn.Module):
    """Scales each row (the last dimension) to unit L2 norm."""

    def __init__(self, eps: float = 1e-12) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, p=2, dim=-1, eps=self.eps)
