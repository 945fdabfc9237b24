"""apl's Smooth-AP and Recall@k against their authors' code, run here on the layouts that code
accepts (classes in contiguous groups of equal size): values and gradients agree with
`include_query=True`, the authors' convention (benchmarks/peers.py says where their code comes from;
skipped when it is not available). The papers' definition (the query left out) is checked against
the independent oracle in tests/ops/test_oracle.py."""
import pytest
import torch

import apl
from benchmarks import peers
from helpers import peer

LAYOUTS = [(8, 4), (4, 8), (5, 5), (3, 10)]  # (classes, images per class)


def _batch(P, K, D=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(P * K, D, generator=g, dtype=torch.float64), dim=1)
    return x, torch.arange(P).repeat_interleave(K)  # contiguous groups, as their code needs


@pytest.mark.parametrize("P,K", LAYOUTS)
@pytest.mark.parametrize("temperature", [0.01, 0.1])
def test_smooth_ap_equals_the_authors_code(P, K, temperature):
    theirs = peer("Andrew-Brown1/Smooth_AP", "src/Smooth_AP_loss.py")
    x, y = _batch(P, K, seed=P)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    with peers.as_torch_1_on_cpu():
        want = theirs.SmoothAP(temperature, P * K, P, x.shape[1])(a)
    got = apl.smooth_ap_loss(b, y, temperature=temperature, include_query=True, backend="cpu")
    want.sum().backward()
    got.backward()
    # their code sums the APs in float32 (torch.zeros(1)), hence 1e-6
    assert abs(got.item() - want.item()) < 1e-6
    torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6)
    # and the paper's definition is another number: the query is not among its own items there
    assert abs(apl.smooth_ap_loss(x, y, temperature=temperature).item() - want.item()) > 1e-4


@pytest.mark.parametrize("P,K", LAYOUTS)
@pytest.mark.parametrize("k", [(1, 2, 4), (1, 2, 4, 8, 16)])
def test_recall_at_k_equals_the_authors_code(P, K, k):
    theirs = peer("yash0307/RecallatK_surrogate", "src/losses.py")
    x, y = _batch(P, K, seed=10 + P)
    k = tuple(v for v in k if v <= P * K)
    temps = [1.0] * len(k)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    loss_fn = theirs.RecallatK(0.01, P * K, P, x.shape[1], list(k), temps, 0)
    with peers.as_torch_1_on_cpu():
        want = sum(loss_fn(a, q) for q in range(P * K))  # their training loop sums the per-query terms
    got = apl.recall_at_k_loss(b, y, k=k, temperature=0.01, k_temperature=1.0, include_query=True, backend="cpu")
    want.backward()
    got.backward()
    assert abs(got.item() - want.item()) < 1e-9
    torch.testing.assert_close(b.grad, a.grad, rtol=1e-6, atol=1e-9)
