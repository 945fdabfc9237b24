"""Self retrieval from half a GEMM (csrc/gram.h): from B = 512 the CPU ops multiply only the blocks of
S = D D^T on and above the diagonal and mirror the rest. The losses and gradients stay those of the
reference, S is exactly symmetric, and nothing depends on the thread count."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import apl
from helpers import needs_cpu_kernel, random_labels, unit_rows

pytestmark = needs_cpu_kernel
B = 600  # above the threshold, and a multiple of neither the 256-row blocks nor the 64-wide tiles
LOSSES = {"ap": apl.ap_loss, "smooth_ap": apl.smooth_ap_loss, "recall_at_k": apl.recall_at_k_loss}


def _loss_and_grad(fn, x, y, backend):
    x = x.clone().requires_grad_()
    loss = fn(x, y, backend=backend)
    return loss.detach(), torch.autograd.grad(loss, [x])[0]


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_half_gemm_self_retrieval_equals_the_reference(name, dtype, tol):
    x, y = unit_rows(B, 32, dtype, seed=5), random_labels(B, 60, seed=5)
    got, want = _loss_and_grad(LOSSES[name], x, y, "cpu"), _loss_and_grad(LOSSES[name], x, y, "torch")
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=tol)
    torch.testing.assert_close(got[1], want[1], rtol=0, atol=tol * max(1.0, float(want[1].abs().max())))


@pytest.mark.parametrize("name", LOSSES)
def test_half_gemm_self_retrieval_equals_the_full_product(name):
    """The self path (half a GEMM, mirrored) against the reference-set path (a full GEMM) on the same
    batch: query i is item i of the reference set."""
    x, y = unit_rows(B, 32, torch.float64, seed=6), random_labels(B, 60, seed=6)
    own = LOSSES[name](x, y, backend="cpu")
    full = LOSSES[name](x, y, x, y, backend="cpu", ref_includes_queries=True)
    torch.testing.assert_close(own, full, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", LOSSES)
def test_results_do_not_depend_on_the_thread_count(name):
    x, y = unit_rows(B, 32, torch.float32, seed=7), random_labels(B, 60, seed=7)
    before = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            outs.append(_loss_and_grad(LOSSES[name], x, y, "cpu"))
    finally:
        torch.set_num_threads(before)
    for loss, grad in outs[1:]:
        assert torch.equal(loss, outs[0][0]) and torch.equal(grad, outs[0][1])


def test_the_saved_scores_are_exactly_symmetric():
    """The scores strategy keeps S for backward (what devices without the unit-gradient kernels run;
    forced here with APL_SCORES_STRATEGY=1, read once per process)."""
    code = (
        "import torch, apl\n"
        "from helpers import unit_rows, random_labels\n"
        f"x, y = unit_rows({B}, 32, torch.float32, seed=8), random_labels({B}, 60, seed=8)\n"
        "S = torch.ops.apl.ap_self(x, y, 20, -1.0, 1.0, 0, 0)[3]\n"
        "assert torch.equal(S, S.t()), 'S is not exactly symmetric'\n"
        "torch.testing.assert_close(S, x @ x.t(), rtol=0, atol=1e-5)\n"
        "print('ok')\n"
    )
    path = os.pathsep.join(p for p in (str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, APL_SCORES_STRATEGY="1", PYTHONPATH=path)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
