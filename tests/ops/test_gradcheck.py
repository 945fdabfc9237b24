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


@pytest.mark.parametrize("name", ["smooth_ap", "recall_at_k"])
@pytest.mark.parametrize("include_query", [False, True])
@pytest.mark.parametrize("chunk_size", [None, 4])
def test_gradcheck_rank_surrogates(backend_on, name, include_query, chunk_size):
    backend, device = backend_on
    x = unit_rows(11, 4, seed=24, device=device).requires_grad_()
    y = random_labels(11, 3, seed=24, device=device)
    w = torch.linspace(0.5, 2.0, 11, dtype=torch.float64, device=device)
    fn = apl.smooth_ap_loss if name == "smooth_ap" else apl.recall_at_k_loss
    kw = dict(k=(1, 2, 4), k_temperature=0.7) if name == "recall_at_k" else {}
    f = lambda e: fn(e, y, query_weights=w, temperature=0.1, include_query=include_query, backend=backend,
                     chunk_size=chunk_size, **kw)
    assert gradcheck(f, (x,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["smooth_ap", "recall_at_k"])
@pytest.mark.parametrize("memory", [False, True])
def test_gradcheck_rank_reference_set(backend_on, name, memory):
    backend, device = backend_on
    q, ql = unit_rows(6, 4, seed=25, device=device).requires_grad_(), random_labels(6, 2, seed=25, device=device)
    x, xl = unit_rows(10, 4, seed=26, device=device).requires_grad_(), random_labels(10, 2, seed=26, device=device)
    per_query = apl.per_query_smooth_ap if name == "smooth_ap" else apl.per_query_recall_at_k
    if memory:  # the queries first, then the other items: each query's own row left out
        f = lambda a, b: per_query(a, ql, torch.cat([a, b]), torch.cat([ql, xl]), temperature=0.1, backend=backend,
                                   ref_includes_queries=True)[0]
    else:
        f = lambda a, b: per_query(a, ql, b, xl, temperature=0.1, backend=backend, chunk_size=4)[0]
    assert gradcheck(f, (q, x), eps=1e-6, atol=1e-7)
