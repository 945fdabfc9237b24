"""What the loss means: reductions, weights, no-positive batches, backends and the module."""

import pytest
import torch

import apl
from helpers import CPU_BACKENDS, random_labels, unit_rows


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_no_positive_gives_zero_loss_attached_to_graph(backend):
    x = unit_rows(8, 4).requires_grad_()
    loss = apl.ap_loss(x, torch.arange(8), backend=backend)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert (x.grad == 0).all()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_queries_without_positive_are_left_out_of_the_mean(backend):
    x, y = unit_rows(10, 4, seed=1), torch.tensor([0, 0, 0, 1, 1, 2, 3, 4, 5, 6])
    ap, has = apl.per_query_ap(x, y, backend=backend)
    assert has.tolist() == [True] * 5 + [False] * 5
    assert (ap[5:] == 0).all()
    loss = apl.ap_loss(x, y, backend=backend)
    torch.testing.assert_close(loss, 1 - ap[:5].mean())


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_class_balanced_weights_equalise_classes(backend):
    x, y = unit_rows(12, 5, seed=2), torch.tensor([0] * 8 + [1] * 4)
    ap, _ = apl.per_query_ap(x, y, backend=backend)
    want = 1 - (ap[:8].mean() + ap[8:].mean()) / 2
    torch.testing.assert_close(apl.ap_loss(x, y, class_balanced=True, backend=backend), want)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_user_weights_and_zero_weights(backend):
    x, y = unit_rows(12, 5, seed=3), random_labels(12, 2, seed=3)
    ap, has = apl.per_query_ap(x, y, backend=backend)
    w = torch.arange(12, dtype=torch.float64)
    want = 1 - (w * ap * has).sum() / (w * has).sum()
    torch.testing.assert_close(apl.ap_loss(x, y, query_weights=w, backend=backend), want)
    xr = x.clone().requires_grad_()
    zero = apl.ap_loss(xr, y, query_weights=torch.zeros(12), backend=backend)
    zero.backward()
    assert zero.item() == 0 and (xr.grad == 0).all()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_module_equals_function(backend):
    x, y = unit_rows(16, 6, seed=4), random_labels(16, 3, seed=4)
    m = apl.APLoss(num_bins=15, score_range=(-0.5, 1.0), variant="tie_aware_simplified", class_balanced=True, backend=backend, chunk_size=5)
    f = apl.ap_loss(x, y, num_bins=15, score_range=(-0.5, 1.0), variant="tie_aware_simplified", class_balanced=True, backend=backend, chunk_size=5)
    torch.testing.assert_close(m(x, y), f)
    assert "num_bins=15" in repr(m)


def test_training_lowers_the_loss():
    """A few SGD steps on the embeddings themselves must raise the mAP."""
    x = unit_rows(40, 8, torch.float32, seed=5)
    y = random_labels(40, 4, seed=5)
    w = torch.nn.Parameter(torch.eye(8))
    opt = torch.optim.SGD([w], lr=2.0)
    loss_fn = apl.APLoss()
    losses = []
    for _ in range(30):
        e = torch.nn.functional.normalize(x @ w, dim=1)
        loss = loss_fn(e, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05
