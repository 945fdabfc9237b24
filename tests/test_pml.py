"""apl as a pytorch-metric-learning loss (issue 9, item 2)."""
import pytest
import torch

import apl
from helpers import random_labels, unit_rows

pml = pytest.importorskip("pytorch_metric_learning")
from apl.pml import APLoss as PMLAPLoss, CrossBatchMemory  # noqa: E402
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu  # noqa: E402


def _raw(n, d, seed):
    return unit_rows(n, d, torch.float64, seed=seed) * torch.linspace(0.5, 3, n, dtype=torch.float64)[:, None]


@pytest.mark.parametrize("variant", ["ap_q", "tie_aware"])
def test_equals_ap_loss_in_float64(variant):
    x, y = _raw(30, 5, 90), random_labels(30, 4, seed=90)
    r, ry = _raw(25, 5, 91), random_labels(25, 4, seed=91)
    f = PMLAPLoss(num_bins=15, variant=variant, class_balanced=True)
    kw = dict(num_bins=15, variant=variant, class_balanced=True, normalize=True)
    assert abs(f(x, y).item() - apl.ap_loss(x, y, **kw).item()) < 1e-9
    assert abs(f(x, y, ref_emb=r, ref_labels=ry).item() - apl.ap_loss(x, y, r, ry, **kw).item()) < 1e-9


def test_indices_tuple_is_used():
    x, y = _raw(24, 5, 92), random_labels(24, 3, seed=92)
    want = apl.ap_loss(x, y, normalize=True).item()
    pairs = lmu.get_all_pairs_indices(y)  # every pair except (i, i): self retrieval
    assert abs(PMLAPLoss()(x, y, pairs).item() - want) < 1e-9
    triplets = lmu.get_all_triplets_indices(y)  # converted to pairs
    assert abs(PMLAPLoss()(x, y, triplets).item() - want) < 1e-9
    # a restricted set of pairs: only the listed items are ranked
    a1, p, a2, n = pairs
    keep = n % 2 == 0
    restricted = PMLAPLoss()(x, y, (a1, p, a2[keep], n[keep])).item()
    assert abs(restricted - want) > 1e-4
    with pytest.raises(ValueError, match=r"pairs \(a1, p, a2, n\) or triplets \(a, p, n\), got 2 tensors"):
        PMLAPLoss()(x, y, (a1, p))


def test_inside_cross_batch_memory_gradients_finite():
    loss_fn = CrossBatchMemory(PMLAPLoss(), 8, memory_size=128)
    g = torch.Generator().manual_seed(3)
    for _ in range(4):
        e = torch.randn(32, 8, generator=g).requires_grad_()
        loss = loss_fn(e, torch.randint(0, 6, (32,), generator=g))
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(e.grad).all() and e.grad.abs().sum() > 0


def test_refusals():
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.reducers import SumReducer

    with pytest.raises(ValueError, match="takes no reducer"):
        PMLAPLoss(reducer=SumReducer())
    with pytest.raises(ValueError, match="takes no distance"):
        PMLAPLoss(distance=LpDistance())
    with pytest.raises(ValueError, match="num_bins must be"):
        PMLAPLoss(num_bins=1)
