"""The registered ops pass torch.library.opcheck (schema, fake kernels, autograd registration,
AOT dispatch) and run under torch.compile."""
import pytest
import torch

import apl
from conftest import needs_cpu_kernel, random_labels, unit_rows

pytestmark = needs_cpu_kernel


def samples():
    x, y = unit_rows(10, 4, seed=30), random_labels(10, 3, seed=30)
    q, ql = unit_rows(6, 4, seed=31), random_labels(6, 3, seed=31)
    s = torch.rand(5, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(32)) * 2 - 1
    rel = s > 0.2
    for dtype in (torch.float64, torch.float32):
        for chunk in (0, 3):
            for variant in (0, 1, 2):
                yield "ap_self", (x.to(dtype).requires_grad_(), y, 8, -1.0, 1.0, variant, chunk)
                yield "ap_ref", (q.to(dtype).requires_grad_(), ql, x.to(dtype).requires_grad_(), y, 8, -1.0, 1.0, variant, chunk)
        yield "ap_scores", (s.to(dtype).requires_grad_(), rel, 7, -1.0, 1.0, 0)


@pytest.mark.parametrize("name,args", list(samples()))
def test_opcheck(name, args):
    torch.library.opcheck(getattr(torch.ops.apl, name).default, args)


def test_backward_ops_opcheck():
    x, y = unit_rows(8, 3, seed=33), random_labels(8, 2, seed=33)
    ap, npos, coef, scores = torch.ops.apl.ap_self(x, y, 6, -1.0, 1.0, 0, 0)
    g = torch.full_like(ap, -0.125)
    torch.library.opcheck(torch.ops.apl.ap_self_backward.default, (g, x, y, coef, scores, 6, -1.0, 1.0, 0))


@pytest.mark.parametrize("backend", ["inductor", "aot_eager"])
def test_torch_compile_matches_eager(backend):
    x, y = unit_rows(24, 6, torch.float32, seed=34), random_labels(24, 4, seed=34)
    loss_fn = apl.APLoss(backend="cpu")

    def step(e):
        return loss_fn(e, y)

    compiled = torch.compile(step, backend=backend)
    xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
    le, lc = step(xe), compiled(xc)
    le.backward()
    lc.backward()
    torch.testing.assert_close(lc, le)
    torch.testing.assert_close(xc.grad, xe.grad)
