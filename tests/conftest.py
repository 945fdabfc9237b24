import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # for `import oracle`

import apl  # noqa: E402

VARIANTS = ["ap_q", "tie_aware", "tie_aware_simplified"]


def compiled_cpu() -> bool:
    return apl.available_backends()["cpu"].available


needs_cpu_kernel = pytest.mark.skipif(not compiled_cpu(), reason="compiled CPU kernels not built")
CPU_BACKENDS = ["torch", pytest.param("cpu", marks=needs_cpu_kernel)]


def unit_rows(n: int, d: int, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    return torch.nn.functional.normalize(x, dim=1).to(dtype)


def random_labels(n: int, classes: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1000)
    return torch.randint(0, classes, (n,), generator=g)


def listwise_loss(d: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """A small pure-torch loss that couples every pair of the batch (as the AP loss does), so that
    a loss computed per chunk or per rank would differ from the whole-batch one."""
    d = torch.nn.functional.normalize(d, dim=1)
    s = d @ d.t() / 0.3
    eye = torch.eye(len(d), dtype=torch.bool, device=d.device)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    s = s.masked_fill(eye, float("-inf"))
    has_pos = pos.any(1)
    all_lse = torch.logsumexp(s, dim=1)
    pos_lse = torch.logsumexp(s.masked_fill(~pos, float("-inf")), dim=1)
    return (all_lse - pos_lse)[has_pos].mean()
