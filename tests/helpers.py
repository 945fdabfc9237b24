"""What the tests share: inputs, and the devices and backends each loss test runs on.

Every loss test is written once and runs on every device present, pytorch_scatter style:
`BACKENDS` lists each (backend, device) pair: the reference ("torch") and the compiled kernels of
each device; `KERNELS` only the compiled ones (compared with the reference on the same device).
A pair whose device or kernels are missing is skipped with the reason.
"""
from __future__ import annotations

import pytest
import torch

import apl

VARIANTS = ["ap_q", "tie_aware", "tie_aware_simplified"]
DTYPES = [torch.float32, torch.float64]
LOW_DTYPES = [torch.float16, torch.bfloat16]


def _why_not(backend: str) -> str | None:
    status = apl.available_backends()[backend]
    return None if status.available else status.reason


def _cuda_missing() -> str | None:
    if not torch.cuda.is_available():
        return f"no CUDA device (torch {torch.__version__}, torch.version.cuda={torch.version.cuda})"
    return None


def compiled_cpu() -> bool:
    return _why_not("cpu") is None


needs_cpu_kernel = pytest.mark.skipif(not compiled_cpu(), reason=f"compiled CPU kernels: {_why_not('cpu')}")
needs_cuda = pytest.mark.skipif(_cuda_missing() is not None, reason=str(_cuda_missing()))
needs_cuda_kernel = pytest.mark.skipif(_why_not("cuda") is not None, reason=f"CUDA kernels: {_why_not('cuda')}")

# (backend, device) pairs; ids "torch-cpu", "cpu-cpu", "torch-cuda", "cuda-cuda".
KERNELS = [pytest.param(("cpu", "cpu"), marks=needs_cpu_kernel, id="cpu"),
           pytest.param(("cuda", "cuda"), marks=needs_cuda_kernel, id="cuda")]
BACKENDS = [pytest.param(("torch", "cpu"), id="torch-cpu"), KERNELS[0],
            pytest.param(("torch", "cuda"), marks=needs_cuda, id="torch-cuda"), KERNELS[1]]
# The backends on the CPU alone, by name (tests whose point is not the device).
CPU_BACKENDS = ["torch", pytest.param("cpu", marks=needs_cpu_kernel)]


def unit_rows(n: int, d: int, dtype=torch.float64, seed: int = 0, device="cpu") -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    return torch.nn.functional.normalize(x, dim=1).to(device=device, dtype=dtype)


def random_labels(n: int, classes: int, seed: int = 0, device="cpu") -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1000)
    return torch.randint(0, classes, (n,), generator=g).to(device)


def exact_rows(n: int, d: int = 16, seed: int = 0, dtype=torch.float64, device="cpu") -> torch.Tensor:
    """Rows with entries in {-1/4, 0, 1/4} and d = 16: every dot product is a multiple of 1/16,
    computed exactly by any GEMM (cuBLAS, MKL, TF32, any order) and in every dtype, so that every
    backend and device bins the same scores. Norms are <= 1, no score sits on an interior bin centre
    (those are not multiples of 1/16 for M = 20), and many scores tie."""
    assert d == 16
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-1, 2, (n, d), generator=g).to(torch.float64) / 4
    return x.to(device=device, dtype=dtype).contiguous()


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


def score_matrix(dtype=torch.float64, seed: int = 0, B: int = 9, N: int = 57, M: int = 20, device="cpu"):
    """A (B, N) score matrix with the edge cases of the binning, and a relevance mask: scores on
    every bin centre (row 0), on and beyond the range edges (row 1), one big tie (row 2), a row
    without a relevant item (row 3), random scores in (-1.2, 1.2) elsewhere."""
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(B, N, generator=g, dtype=torch.float64) * 2.4 - 1.2
    lo, hi = -1.0, 1.0
    centres = torch.tensor([hi - m * (hi - lo) / (M - 1) for m in range(M)], dtype=torch.float64)
    s[0, :M] = centres
    s[1, :4] = torch.tensor([-1.0, 1.0, -1.5, 1.5], dtype=torch.float64)
    s[2, :] = 0.3
    rel = torch.rand(B, N, generator=g) < 0.3
    rel[3] = False
    return s.to(device=device, dtype=dtype), rel.to(device)


def peer(repo: str, path: str):
    """Another project's loss code (benchmarks/peers.py), or skip the test when it is not available."""
    from benchmarks import peers

    try:
        return peers.load(repo, path)
    except LookupError as err:
        pytest.skip(str(err))
