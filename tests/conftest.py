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
