"""Every backend on every device against the independent NumPy oracle (tests/oracle.py): values and
gradients."""
import numpy as np
import pytest
import torch

import apl
import oracle
from helpers import BACKENDS, VARIANTS, random_labels, unit_rows

pytestmark = pytest.mark.parametrize("backend_on", BACKENDS)


def np_(t):
    return t.detach().cpu().numpy()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("num_bins,score_range", [(20, (-1.0, 1.0)), (7, (-0.3, 0.8))])
def test_self_retrieval_matches_oracle(backend_on, variant, num_bins, score_range):
    backend, device = backend_on
    x, y = unit_rows(30, 6, seed=1), random_labels(30, 4, seed=1)
    ap, has = apl.per_query_ap(x.to(device), y.to(device), num_bins=num_bins, score_range=score_range, variant=variant, backend=backend)
    want_ap, want_has = oracle.per_query_ap(x.numpy(), y.numpy(), M=num_bins, score_range=score_range, variant=variant)
    np.testing.assert_allclose(np_(ap), want_ap, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(np_(has), want_has)


@pytest.mark.parametrize("variant", VARIANTS)
def test_reference_set_matches_oracle(backend_on, variant):
    backend, device = backend_on
    q, ql = unit_rows(9, 5, seed=2), random_labels(9, 3, seed=2)
    x, xl = unit_rows(23, 5, seed=3), random_labels(23, 3, seed=3)
    ap, has = apl.per_query_ap(q.to(device), ql.to(device), x.to(device), xl.to(device), variant=variant, backend=backend)
    want_ap, want_has = oracle.per_query_ap(q.numpy(), ql.numpy(), x.numpy(), xl.numpy(), variant=variant)
    np.testing.assert_allclose(np_(ap), want_ap, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(np_(has), want_has)


@pytest.mark.parametrize("variant", VARIANTS)
def test_score_form_matches_oracle(backend_on, variant):
    backend, device = backend_on
    g = torch.Generator().manual_seed(4)
    scores = torch.rand(6, 40, generator=g, dtype=torch.float64) * 2.6 - 1.3  # some outside [-1, 1]
    rel = torch.rand(6, 40, generator=g) < 0.3
    rel[3] = False  # a row without a relevant item
    ap = apl.quantized_ap(scores.to(device), rel.to(device), variant=variant, backend=backend)
    want = oracle.score_form_ap(scores.numpy(), rel.numpy(), variant=variant)
    np.testing.assert_allclose(np_(ap), want, rtol=0, atol=1e-12)
    assert ap[3] == 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradient_matches_oracle_finite_differences(backend_on, variant):
    backend, device = backend_on
    x, y = unit_rows(10, 4, seed=5), random_labels(10, 3, seed=5)
    w = torch.rand(10, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    xr = x.clone().to(device).requires_grad_()
    loss = apl.ap_loss(xr, y.to(device), query_weights=w.to(device), num_bins=8, variant=variant, backend=backend)
    (grad,) = torch.autograd.grad(loss, xr)
    f = lambda e: oracle.loss(e, y.numpy(), weights=w.numpy(), M=8, variant=variant)
    assert loss.item() == pytest.approx(f(x.numpy().copy()), abs=1e-12)
    want = oracle.numerical_grad(f, x.numpy().copy())
    np.testing.assert_allclose(np_(grad), want, rtol=1e-5, atol=1e-7)
