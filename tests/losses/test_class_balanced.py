"""Class-balanced query weights (the paper's eq. 12) on the batches where they matter: drawn uniformly
from a long-tailed set (apl.data.RandomBatchSampler), a batch holds its classes in proportion to
their sizes, and the weights 1 / (images of the query's class in the batch) make every class of the
batch weigh the same in the loss."""
from __future__ import annotations

import statistics
from collections import Counter

import pytest
import torch

import apl
from apl.data import ClassBalancedBatchSampler, RandomBatchSampler
from apl.ops.core import class_balanced_weights

LONG_TAIL = [c for c in range(40) for _ in range(max(2, int(200 / (c + 1) ** 1.2)))]  # 200 down to 2 images


def _random_batch(seed=0, size=128):
    batch = next(iter(RandomBatchSampler(LONG_TAIL, batch_size=size, seed=seed)))
    return torch.tensor([LONG_TAIL[i] for i in batch])


def test_weights_on_a_uniform_batch_are_not_uniform():
    y = _random_batch()
    w = class_balanced_weights(y)
    counts = Counter(y.tolist())
    assert max(counts.values()) >= 4 * min(counts.values())  # the batch is imbalanced
    assert w.max() >= 4 * w.min()
    for c, n in counts.items():  # eq. 12: each class's queries share a total weight of one
        torch.testing.assert_close(w[y == c], torch.full((n,), 1.0 / n))
        torch.testing.assert_close(w[y == c].sum(), torch.tensor(1.0))


def test_weights_on_a_pk_batch_are_uniform():
    """Control: P x K batches give every class K images, so the weights are all 1 / K."""
    batch = next(iter(ClassBalancedBatchSampler(LONG_TAIL, classes_per_batch=16, samples_per_class=2, seed=0)))
    w = class_balanced_weights(torch.tensor([LONG_TAIL[i] for i in batch]))
    assert torch.all(w == 0.5)


@pytest.mark.parametrize("seed", [0, 1])
def test_class_balanced_loss_is_the_mean_over_classes_of_their_mean_ap(seed):
    """1 - (1 / C) sum_c mean_{i in c} AP_Q(i), over the C classes of the batch that have a positive
    (a class alone in the batch has none: its query is left out), computed here from per_query_ap."""
    y = _random_batch(seed)
    emb = torch.randn(len(y), 16, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    ap, has_pos = apl.per_query_ap(emb, y, normalize=True)
    per_class = [statistics.fmean(ap[(y == c)].tolist()) for c in sorted(set(y.tolist())) if int((y == c).sum()) > 1]
    expected = 1.0 - statistics.fmean(per_class)
    loss = apl.ap_loss(emb, y, class_balanced=True, normalize=True)
    assert abs(float(loss) - expected) < 1e-12
    uniform = apl.ap_loss(emb, y, normalize=True)
    assert abs(float(uniform) - float(loss)) > 1e-3  # the weights change the loss on such a batch
    assert bool(has_pos[[int((y == c).sum()) > 1 for c in y.tolist()]].all())
