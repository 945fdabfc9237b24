"""torch.autograd.gradcheck in float64 for every variant, backend and device, and every form (self,
reference set, streaming, score matrix). Points are random, so no score sits on a bin centre (a kink)."""
import pytest
import torch
from torch.autograd import gradcheck

import apl
from helpers import BACKENDS, VARIANTS, random_labels, unit_rows

pytestmark = pytest.mark.parametrize("backend_on", BACKENDS)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("chunk_size", [None, 4])
def test_gradcheck_self(backend_on, variant, chunk_size):
    backend, device = backend_on
    x = unit_rows(12, 5, seed=20, device=device).requires_grad_()
    y = random_labels(12, 3, seed=20, device=device)
    w = torch.linspace(0.5, 2.0, 12, dtype=torch.float64, device=device)
    f = lambda e: apl.ap_loss(e, y, query_weights=w, num_bins=10, variant=variant, backend=backend, chunk_size=chunk_size)
    assert gradcheck(f, (x,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("chunk_size", [None, 3])
def test_gradcheck_reference_set(backend_on, variant, chunk_size):
    backend, device = backend_on
    q, ql = unit_rows(7, 4, seed=21, device=device).requires_grad_(), random_labels(7, 2, seed=21, device=device)
    x, xl = unit_rows(11, 4, seed=22, device=device).requires_grad_(), random_labels(11, 2, seed=22, device=device)
    f = lambda a, b: apl.per_query_ap(a, ql, b, xl, num_bins=9, variant=variant, backend=backend, chunk_size=chunk_size)[0]
    assert gradcheck(f, (q, x), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradcheck_score_form(backend_on, variant):
    backend, device = backend_on
    g = torch.Generator().manual_seed(23)
    s = (torch.rand(5, 17, generator=g, dtype=torch.float64) * 2.4 - 1.2).to(device).requires_grad_()
    rel = (torch.rand(5, 17, generator=g) < 0.4).to(device)
    f = lambda t: apl.quantized_ap(t, rel, num_bins=6, variant=variant, backend=backend)
    assert gradcheck(f, (s,), eps=1e-6, atol=1e-7)
