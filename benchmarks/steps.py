"""One forward + backward step per benchmarked method, shared by the CPU and CUDA benchmarks."""
from __future__ import annotations

from typing import Callable


def make_step(method: str, x, y, chunk: int) -> Callable[[], object]:
    """A closure that runs one step of `method` on embeddings x (requires grad) and labels y.

    "gemm": the lower bound, S = D D^T then a (B x B) @ (B x D) product (S stands for H: same
    shapes, same cost). "naive": the paper-style B x N x M formulation (naive_ap.py). Otherwise
    an apl backend ("cpu", "cuda", "torch"), with "_stream" appended for chunk_size=chunk.
    """
    if method == "gemm":
        xd = x.detach()

        def gemm():
            S = xd @ xd.t()
            return S @ xd

        return gemm
    if method == "naive":
        from .naive_ap import naive_ap_loss

        loss_fn = lambda e, l: naive_ap_loss(e, l, num_bins=20)  # noqa: E731
    else:
        import apl

        backend, _, stream = method.partition("_")
        if backend not in ("cpu", "cuda", "torch") or stream not in ("", "stream"):
            raise ValueError(f"unknown benchmark method {method!r}")
        loss_fn = apl.APLoss(num_bins=20, backend=backend, chunk_size=chunk if stream else None)

    def step():
        loss = loss_fn(x, y)
        loss.backward()
        x.grad = None

    return step
