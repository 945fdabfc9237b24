"""apl's losses as pytorch-metric-learning losses (apl.pml): the same values as apl's functions,
indices_tuple honoured, usable inside PML's cross-batch memory."""
import pytest
import torch

import apl
from helpers import random_labels, unit_rows

pml = pytest.importorskip("pytorch_metric_learning")
from apl.pml import APLoss as PMLAPLoss, CrossBatchMemory, RecallAtKLoss, SmoothAPLoss  # noqa: E402
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


RANK = [(SmoothAPLoss, apl.smooth_ap_loss, dict(temperature=0.05)),
        (RecallAtKLoss, apl.recall_at_k_loss, dict(k=(1, 4), temperature=0.05))]
MODULES = {SmoothAPLoss: apl.SmoothAPLoss, RecallAtKLoss: apl.RecallAtKLoss}


@pytest.mark.parametrize("cls,fn,kw", RANK)
def test_rank_surrogates_equal_their_functions(cls, fn, kw):
    x, y = _raw(30, 5, 93), random_labels(30, 4, seed=93)
    r, ry = _raw(25, 5, 94), random_labels(25, 4, seed=94)
    f = cls(class_balanced=True, **kw)
    assert abs(f(x, y).item() - fn(x, y, normalize=True, class_balanced=True, **kw).item()) < 1e-9
    assert abs(f(x, y, ref_emb=r, ref_labels=ry).item() - fn(x, y, r, ry, normalize=True, class_balanced=True, **kw).item()) < 1e-9
    pairs = lmu.get_all_pairs_indices(y)  # every pair but (i, i): the same as self retrieval
    assert abs(f(x, y, pairs).item() - fn(x, y, normalize=True, class_balanced=True, **kw).item()) < 1e-9


@pytest.mark.parametrize("cls,fn,kw", RANK)
def test_rank_surrogates_inside_pml_cross_batch_memory(cls, fn, kw):
    """Before the memory is full, PML's memory with apl.pml equals apl.memory (each query against the
    batch and the earlier items, its own copy left out)."""
    from apl.memory import with_memory

    pml_memory = CrossBatchMemory(cls(**kw), 6, memory_size=100)
    ours = with_memory(MODULES[cls](**kw), size=100, dim=6)
    for i in range(4):
        e = unit_rows(16, 6, torch.float64, seed=95 + i).float().requires_grad_()
        y = random_labels(16, 3, seed=95 + i)
        a = pml_memory(e, y)
        torch.testing.assert_close(a, ours(e.detach(), y), rtol=0, atol=1e-5)
        a.backward()
        assert torch.isfinite(e.grad).all() and e.grad.abs().sum() > 0


def test_errors_name_pmls_arguments():
    """PML's reference set is `ref_emb`: a message names it so, not apl's `ref_embeddings`."""
    x, y = torch.randn(6, 4), torch.arange(6) % 3
    with pytest.raises(ValueError, match=r"^ref_emb must have dim 4 like embeddings, got 3$"):
        PMLAPLoss()(x, y, ref_emb=torch.randn(5, 3), ref_labels=torch.arange(5))
    with pytest.raises(ValueError, match=r"^ref_emb must have dim 4 like embeddings, got 2$"):
        SmoothAPLoss()(x, y, ref_emb=torch.randn(5, 2), ref_labels=torch.arange(5))
