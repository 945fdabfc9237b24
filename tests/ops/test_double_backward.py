"""Double backward (a gradient penalty, `torch.autograd.grad(..., create_graph=True)` then backward):
every backend gives a gradient that autograd can differentiate again. The compiled backward kernels
are not differentiable, so under create_graph the ops compute their gradient with the reference;
gradgradcheck in float64 checks the second derivatives against finite differences, and every
backend's penalty gradient equals the reference's."""
from __future__ import annotations

import pytest
import torch

import apl
from helpers import BACKENDS, random_labels, unit_rows

TEMPERATURE = 0.3  # a wide sigmoid: smooth enough for finite differences of second order


def _losses(backend):
    return {
        "ap_self": lambda x, y, r, ry: apl.ap_loss(x, y, backend=backend),
        "ap_ref": lambda x, y, r, ry: apl.ap_loss(x, y, r, ry, backend=backend),
        "tie_aware": lambda x, y, r, ry: apl.ap_loss(x, y, backend=backend, variant="tie_aware"),
        "smooth_ap_self": lambda x, y, r, ry: apl.smooth_ap_loss(x, y, backend=backend, temperature=TEMPERATURE),
        "smooth_ap_ref": lambda x, y, r, ry: apl.smooth_ap_loss(x, y, r, ry, backend=backend, temperature=TEMPERATURE),
        "recall_at_k": lambda x, y, r, ry: apl.recall_at_k_loss(x, y, backend=backend, temperature=TEMPERATURE,
                                                               k=(1, 2), k_temperature=0.5),
    }


NAMES = list(_losses("torch"))


def _inputs(device, seed=0):
    x = unit_rows(8, 3, seed=seed, device=device)
    r = unit_rows(10, 3, seed=seed + 1, device=device)
    return x, random_labels(8, 3, seed=seed, device=device), r, random_labels(10, 3, seed=seed + 1, device=device)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("backend_device", BACKENDS)
def test_gradgradcheck(backend_device, name):
    backend, device = backend_device
    fn = _losses(backend)[name]
    x, y, r, ry = _inputs(device)
    x.requires_grad_(True)
    r.requires_grad_(True)
    uses_ref = name.endswith("_ref")
    f = (lambda a, b: fn(a, y, b, ry)) if uses_ref else (lambda a: fn(a, y, None, None))
    args = (x, r) if uses_ref else (x,)
    assert torch.autograd.gradgradcheck(f, args, eps=1e-6, atol=1e-5, rtol=1e-4, nondet_tol=1e-12)


def test_scores_op_double_backward():
    s = (torch.rand(4, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 2 - 1).requires_grad_()
    rel = torch.rand(4, 9, generator=torch.Generator().manual_seed(4)) > 0.5
    for backend in ("torch", "cpu") if apl.available_backends()["cpu"].available else ("torch",):
        from apl.ops import core

        f = lambda z: core.scores_ap(z, rel, num_bins=10, score_range=(-1.0, 1.0), variant="ap_q", backend=backend).sum()
        assert torch.autograd.gradgradcheck(f, (s,), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("backend_device", BACKENDS)
def test_gradient_penalty_matches_the_reference(backend_device, name):
    """loss + ||d loss / d x||^2, backpropagated: the same parameter gradient on every backend."""
    backend, device = backend_device

    def penalty_grad(b):
        x, y, r, ry = _inputs(device, seed=5)
        x.requires_grad_(True)
        loss = _losses(b)[name](x, y, r, ry)
        (g,) = torch.autograd.grad(loss, x, create_graph=True)
        total = loss + (g * g).sum()
        total.backward()
        return x.grad

    torch.testing.assert_close(penalty_grad(backend), penalty_grad("torch"), rtol=1e-9, atol=1e-10)
