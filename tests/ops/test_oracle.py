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


# --- the rank surrogates against tests/oracle_rank.py -------------------------------------------

RANK = {"smooth_ap": (apl.per_query_smooth_ap, apl.smooth_ap_loss, "item_and_positive"),
        "recall_at_k": (apl.per_query_recall_at_k, apl.recall_at_k_loss, "item_only")}


@pytest.mark.parametrize("name", RANK)
@pytest.mark.parametrize("include_query", [False, True])
def test_rank_surrogates_match_oracle(backend_on, name, include_query):
    import oracle_rank

    backend, device = backend_on
    per_query, _, mode = RANK[name]
    x, y = unit_rows(25, 5, seed=11), random_labels(25, 4, seed=11)
    kw = dict(k=(1, 2, 4), k_temperature=(1.0, 0.5, 1.0)) if name == "recall_at_k" else {}
    value, has = per_query(x.to(device), y.to(device), temperature=0.05, include_query=include_query,
                           backend=backend, **kw)
    want, npos = oracle_rank.per_query(x.numpy(), y.numpy(), loss="smooth_ap" if name == "smooth_ap" else "recall",
                                       temperature=0.05, ks=kw.get("k", ()), k_temps=kw.get("k_temperature"),
                                       mode=mode if include_query else "excluded")
    np.testing.assert_allclose(np_(value), want, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(np_(has), npos > 0)


@pytest.mark.parametrize("name", RANK)
def test_rank_surrogates_on_a_reference_set_match_oracle(backend_on, name):
    import oracle_rank

    backend, device = backend_on
    per_query = RANK[name][0]
    q, ql = unit_rows(7, 5, seed=12), random_labels(7, 3, seed=12)
    x, xl = unit_rows(19, 5, seed=13), random_labels(19, 3, seed=13)
    value, _ = per_query(q.to(device), ql.to(device), x.to(device), xl.to(device), temperature=0.1, backend=backend)
    want, _ = oracle_rank.per_query(q.numpy(), ql.numpy(), x.numpy(), xl.numpy(), temperature=0.1,
                                    loss="smooth_ap" if name == "smooth_ap" else "recall")
    np.testing.assert_allclose(np_(value), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", RANK)
def test_rank_gradient_matches_oracle_finite_differences(backend_on, name):
    import oracle_rank

    backend, device = backend_on
    loss_fn = RANK[name][1]
    x, y = unit_rows(9, 3, seed=14), random_labels(9, 3, seed=14)
    xr = x.clone().to(device).requires_grad_()
    loss = loss_fn(xr, y.to(device), temperature=0.2, backend=backend)
    (grad,) = torch.autograd.grad(loss, xr)
    f = lambda e: oracle_rank.loss(e, y.numpy(), loss="smooth_ap" if name == "smooth_ap" else "recall", temperature=0.2)
    assert loss.item() == pytest.approx(f(x.numpy().copy()), abs=1e-12)
    np.testing.assert_allclose(np_(grad), oracle_rank.numerical_grad(f, x.numpy().copy()), rtol=1e-5, atol=1e-8)
