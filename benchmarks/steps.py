"""One forward + backward step per benchmarked method, shared by the CPU and CUDA benchmarks."""
from __future__ import annotations

from typing import Callable


def make_step(method: str, x, y, chunk: int) -> Callable[[], object]:
    """A closure that runs one step of `method` on embeddings x (requires grad) and labels y.

    "gemm": the lower bound, S = D D^T then a (B x B) @ (B x D) product (S stands for H: same
    shapes, same cost). "naive": the paper-style B x N x M formulation (naive_ap.py). Otherwise
    an apl backend ("cpu", "cuda", "torch"), with "_stream" appended for chunk_size=chunk, or "_ops"
    for the backend's two compiled ops called directly (what the loss costs beyond them is the module's).
    """
    if method == "gemm":
        xd = x.detach()

        def gemm():
            S = xd @ xd.t()
            return S @ xd

        return gemm
    if method == "gemm_kernel":  # the products the CPU kernel itself runs, without its per-score work
        from .kernel_products import kernel_products

        xd = x.detach()
        return lambda: kernel_products(xd)
    if method.endswith("_ops"):  # the two compiled ops alone: no unit-norm check, no autograd, no Python loss
        import torch

        import apl.ops.extension  # noqa: F401  (loads the compiled ops)

        xd, g = x.detach(), torch.ones(x.shape[0], dtype=x.dtype, device=x.device)

        def ops():
            _, _, coef, saved = torch.ops.apl.ap_self(xd, y, 20, -1.0, 1.0, 0, 0)
            return torch.ops.apl.ap_self_backward(g, xd, y, coef, saved, 20, -1.0, 1.0, 0)

        return ops
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
