"""PCA-whitening learned on a set of descriptors, with a tunable power.

fit:        mean m, covariance C = U diag(lambda) U^T (eigenvalues in decreasing order)
transform:  x -> normalise((x - m) @ U[:, :dim] diag(lambda[:dim] ** -power))

power = 0.5 is full whitening; the AP-loss paper's code uses 0.25, a softer whitening that keeps
some of the weight of the strong directions. power = 0 is plain PCA (a rotation / projection).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from .search import as_matrix

DEFAULT_POWER = 0.25
# Rows per block of the covariance accumulation: keeps the float64 copy of a big set small.
_FIT_CHUNK = 65536


@dataclass
class PCAWhitening:
    """A learned PCA-whitening: `mean` (D,), `projection` (D, dim), all `eigenvalues` (D,)."""

    mean: torch.Tensor
    projection: torch.Tensor
    eigenvalues: torch.Tensor
    power: float

    @property
    def in_dim(self) -> int:
        return self.projection.shape[0]

    @property
    def out_dim(self) -> int:
        return self.projection.shape[1]

    @classmethod
    @torch.no_grad()
    def fit(
        cls, descriptors, dim: Optional[int] = None, power: float = DEFAULT_POWER, eps: float = 1e-6
    ) -> "PCAWhitening":
        """Learn the whitening on `descriptors` (N, D), keeping `dim` components (default D).

        Eigenvalues below `eps` x the largest are raised to that floor, so directions with (almost)
        no variance, e.g. when N <= D, are not blown up. Each eigenvector's sign is fixed (its
        largest-magnitude entry is positive) so that the result does not depend on the solver.
        """
        x = as_matrix(descriptors, "descriptors")
        n, d = x.shape
        if n < 2:
            raise ValueError(f"need at least 2 descriptors to learn a whitening, got {n}")
        dim = d if dim is None else dim
        if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= d:
            raise ValueError(f"dim must be an int in [1, {d}] (the descriptor dimension), got {dim!r}")
        if not power >= 0:
            raise ValueError(f"power must be >= 0, got {power!r}")
        # Accumulate in float64, centred on a first estimate of the mean to limit cancellation.
        shift = x[: min(n, _FIT_CHUNK)].to(torch.float64).mean(0)
        total = torch.zeros(d, dtype=torch.float64, device=x.device)
        gram = torch.zeros(d, d, dtype=torch.float64, device=x.device)
        for start in range(0, n, _FIT_CHUNK):
            block = x[start : start + _FIT_CHUNK].to(torch.float64) - shift
            total += block.sum(0)
            gram += block.T @ block
        delta = total / n
        cov = gram / n - torch.outer(delta, delta)
        eigenvalues, vectors = torch.linalg.eigh(cov)
        eigenvalues, vectors = eigenvalues.flip(0), vectors.flip(1)
        signs = torch.sign(vectors.gather(0, vectors.abs().argmax(0, keepdim=True)))
        vectors = vectors * signs
        floor = eps * eigenvalues[0].clamp(min=torch.finfo(torch.float64).tiny)
        lam = eigenvalues.clamp(min=floor)
        projection = vectors[:, :dim] * lam[:dim].pow(-power)
        dtype = x.dtype
        return cls(
            mean=(shift + delta).to(dtype),
            projection=projection.to(dtype),
            eigenvalues=eigenvalues.to(dtype),
            power=float(power),
        )

    def transform(self, descriptors, normalize: bool = True) -> torch.Tensor:
        """Whiten `descriptors` (N, D) to (N, dim); L2-normalised unless `normalize` is False."""
        x = as_matrix(descriptors, "descriptors")
        if x.shape[1] != self.in_dim:
            raise ValueError(f"descriptors have dimension {x.shape[1]}, the whitening expects {self.in_dim}")
        mean = self.mean.to(device=x.device, dtype=x.dtype)
        y = (x - mean) @ self.projection.to(device=x.device, dtype=x.dtype)
        return F.normalize(y, dim=1) if normalize else y

    __call__ = transform

    def state_dict(self) -> dict:
        return {"mean": self.mean, "projection": self.projection, "eigenvalues": self.eigenvalues, "power": self.power}

    @classmethod
    def from_state_dict(cls, state: dict) -> "PCAWhitening":
        return cls(**state)
