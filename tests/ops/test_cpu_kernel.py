"""The CPU kernel's own strategies: the ones it runs by default (packed upper scores for self
retrieval, the unit gradient for reference sets) against the scores path other devices run (forced
with APL_SCORES_STRATEGY=1), and row kernels whose outputs do not depend on the number of threads."""
import subprocess
import sys
from pathlib import Path

import torch

from helpers import needs_cpu_kernel, random_labels, unit_rows

pytestmark = needs_cpu_kernel


def test_scores_strategy_matches_the_reference():
    """Devices without the packed and unit-gradient kernels (CUDA today) keep the scores for backward;
    APL_SCORES_STRATEGY=1 runs that path on CPU, in a fresh process (the switch is read once)."""
    code = (
        "import torch, apl\n"
        "from helpers import unit_rows, random_labels\n"
        "for dt, tol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):\n"
        "    x, y = unit_rows(37, 6, dt, seed=1), random_labels(37, 4, seed=1)\n"
        "    q, ql = unit_rows(9, 6, dt, seed=2), random_labels(9, 4, seed=2)\n"
        "    for args in ((x, y), (q, ql, x, y)):\n"
        "        outs = []\n"
        "        for be in ('cpu', 'torch'):\n"
        "            ins = [a.clone().requires_grad_() if a.is_floating_point() else a for a in args]\n"
        "            loss = apl.ap_loss(*ins, backend=be, variant='tie_aware')\n"
        "            outs.append([loss] + list(torch.autograd.grad(loss, [a for a in ins if a.requires_grad])))\n"
        "        for a, b in zip(*outs):\n"
        "            torch.testing.assert_close(a, b, rtol=0, atol=tol)\n"
        "saved = torch.ops.apl.ap_self(x, y, 20, -1.0, 1.0, 0, 0)[3]\n"
        "torch.testing.assert_close(saved, x @ x.t())  # the scores strategy is the one running\n"
        "print('ok')\n"
    )
    x, y = unit_rows(37, 6, torch.float32, seed=1), random_labels(37, 4, seed=1)
    saved = torch.ops.apl.ap_self(x, y, 20, -1.0, 1.0, 0, 0)[3]  # this process: packed upper scores
    assert saved.dim() == 1
    saved = torch.ops.apl.ap_ref(x, y, x, y, 20, -1.0, 1.0, 0, 0)[3]  # and U = dAP/dS for a reference set
    assert not torch.allclose(saved, x @ x.t())
    env = dict(__import__("os").environ, APL_SCORES_STRATEGY="1", PYTHONPATH=str(Path(__file__).parents[1]))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_row_kernels_do_not_depend_on_the_thread_count():
    """Rows are independent and each row's histogram lanes are summed in a fixed order, so the
    kernels' own outputs (AP, coefficients, dAP/dS, dL/dS) are bitwise the same however rows are
    split between threads. (The GEMMs around them are MKL's, whose rounding may depend on it.)"""
    x, y = unit_rows(300, 16, torch.float32, seed=12), random_labels(300, 20, seed=12)
    s = x[:40] @ x.t()
    rel = y[:40, None] == y[None, :]
    threads = torch.get_num_threads()
    outs = []
    try:
        for n in (1, max(2, threads)):
            torch.set_num_threads(n)
            fwd = torch.ops.apl.ap_self(x, y, 20, -1.0, 1.0, 1, 0)
            ap, npos, coef = torch.ops.apl.ap_scores(s, rel, 20, -1.0, 1.0, 0)
            g = torch.ops.apl.ap_scores_backward(torch.linspace(-1, 1, 40), s, rel, coef, 20, -1.0, 1.0)
            outs.append(list(fwd) + [ap, coef, g])
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*outs):
        assert torch.equal(a, b)
