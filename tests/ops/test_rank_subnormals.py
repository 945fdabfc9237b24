"""The rank kernels store no subnormal slopes: a saturated sigmoid's slope, stored as it is, is a
subnormal float, and one such operand slows x86 GEMMs in the backward by up to 90x. Entries below
the dtype's smallest normal number times 2^24 are stored as 0 (csrc/cpu/rank_cpu.cpp)."""
import pytest
import torch

import apl
from helpers import needs_cpu_kernel, random_labels, unit_rows

pytestmark = needs_cpu_kernel
RECALL = (1, 0.01, [1.0, 2.0, 4.0, 8.0, 16.0], [1.0, 1.0, 1.0, 1.0, 1.0])  # kind, tau, ks, k-temperatures


def _saved_slopes(x, y):
    return torch.ops.apl.rank_self(x, y, *RECALL, 0, 0)[2]


def test_saved_slopes_have_no_subnormal_floats():
    x, y = unit_rows(300, 8, torch.float64, seed=2), random_labels(300, 30, seed=2)
    exact = _saved_slopes(x, y)
    tiny = torch.finfo(torch.float32).tiny
    # the case is real: in double, many slopes lie where a float would be subnormal
    assert ((exact != 0) & (exact.abs() < tiny)).sum() > 100
    got = _saved_slopes(x.float(), y)
    floor = tiny * 2.0**24
    assert not ((got != 0) & (got.abs() < floor)).any()
    # only slopes below the floor became 0 (the float and double runs round the scores differently)
    flushed = (got == 0) & (exact != 0)
    assert flushed.sum() > 100 and exact[flushed].abs().max() < 2 * floor


@pytest.mark.parametrize("fn", [apl.smooth_ap_loss, apl.recall_at_k_loss])
def test_flushing_keeps_the_reference_gradient(fn):
    x, y = unit_rows(300, 8, torch.float32, seed=3), random_labels(300, 30, seed=3)
    grads = []
    for backend in ("cpu", "torch"):
        xr = x.clone().requires_grad_()
        fn(xr, y, backend=backend).backward()
        grads.append(xr.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=2e-5 * float(grads[1].abs().max()))
