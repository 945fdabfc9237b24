"""MAP@R, R-precision and Recall@K (the metric-learning metrics of Musgrave et al., ECCV 2020):
hand-worked cases, brute-force NumPy definitions, and pytorch-metric-learning's AccuracyCalculator."""
import math

import numpy as np
import pytest
import torch

from apl.evaluation import at_r_per_query, hit_rate_at_k, map_at_r, mean_average_precision, precision_at_k, r_precision


def on_circle(degrees):
    """Unit 2-D descriptors at these angles (all within 180 degrees of each other): a query's
    ranking is by angular distance."""
    t = np.radians(np.asarray(degrees, dtype=np.float64))
    return torch.as_tensor(np.stack([np.cos(t), np.sin(t)], 1))


def ranking(emb: np.ndarray, i: int) -> np.ndarray:
    """The other items, best first; equal scores by increasing index."""
    others = np.flatnonzero(np.arange(len(emb)) != i)
    return others[np.argsort(-(emb[others] @ emb[i]), kind="stable")]


def field_reference(emb: np.ndarray, labels: np.ndarray, k: int):
    """MAP@R, R-precision and Recall@k (hit rate), written from their definitions one query at a time."""
    ap_r, r_prec, hit = [], [], []
    for i in range(len(emb)):
        order = ranking(emb, i)
        rel = labels[order] == labels[i]
        r = int(rel.sum())
        if r == 0:
            continue
        top = rel[:r]
        precisions = [top[: j + 1].sum() / (j + 1) for j in range(r) if top[j]]
        ap_r.append(sum(precisions) / r)
        r_prec.append(top.sum() / r)
        hit.append(float(rel[:k].any()))
    return np.mean(ap_r), np.mean(r_prec), np.mean(hit)


def random_set(n, d, classes, seed, dtype=np.float64):
    g = np.random.default_rng(seed)
    x = g.standard_normal((n, d))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(dtype)
    y = g.integers(0, classes, n)
    y[-1] = classes  # a class of one: that query has no positive
    return x, y


def min_score_gap(x: np.ndarray) -> float:
    """The smallest difference between two scores of the same query (in float64)."""
    s = x.astype(np.float64) @ x.astype(np.float64).T
    np.fill_diagonal(s, -np.inf)
    s = np.sort(s, axis=1)[:, 1:]  # drop the query itself (-inf)
    return float(np.diff(s, axis=1).min())


def tie_free_set(n, d, classes, seed, gap=2e-6):
    """A float32 random set in which no two items are nearly equally close to any query, so that
    float32 round-off (about 1e-7 here) cannot order them differently in two implementations."""
    for attempt in range(100):
        x, y = random_set(n, d, classes, seed=1000 * seed + attempt, dtype=np.float32)
        if min_score_gap(x) > gap:
            return x, y
    raise AssertionError("no tie-free set found")


# ----------------------------------------------------------------------------- hand-worked


def test_hand_worked_example():
    # angles a=0 b=10 c=30 d=65 e=110; classes 0 1 0 0 1
    emb = on_circle([0, 10, 30, 65, 110])
    labels = [0, 1, 0, 0, 1]
    # rankings (nearest first) and each query's R:
    #   a: b c d e   R=2  top 2 = b(-) c(+)   AP@R = (1/2)/2 = 1/4   R-prec 1/2
    #   b: a c d e   R=1  top 1 = a(-)        AP@R = 0               R-prec 0
    #   c: b a d e   R=2  top 2 = b(-) a(+)   AP@R = 1/4             R-prec 1/2
    #   d: c e b a   R=2  top 2 = c(+) e(-)   AP@R = (1/1)/2 = 1/2   R-prec 1/2
    #   e: d c b a   R=1  top 1 = d(-)        AP@R = 0               R-prec 0
    ap_r, r_prec = at_r_per_query(emb, labels)
    np.testing.assert_allclose(ap_r.numpy(), [1 / 4, 0, 1 / 4, 1 / 2, 0], atol=1e-12)
    np.testing.assert_allclose(r_prec.numpy(), [1 / 2, 0, 1 / 2, 1 / 2, 0], atol=1e-12)
    assert map_at_r(emb, labels) == pytest.approx((1 / 4 + 0 + 1 / 4 + 1 / 2 + 0) / 5, abs=1e-12)
    assert r_precision(emb, labels) == pytest.approx(1.5 / 5, abs=1e-12)
    # Recall@K of metric learning: is a positive within the top K?
    #   K=1: only d (c is its nearest);  K=2: a, c, d;  K=3: a, c, d, e (b's positive e is last)
    assert hit_rate_at_k(emb, labels, [1, 2, 3, 4]) == pytest.approx({1: 0.2, 2: 0.6, 3: 0.8, 4: 1.0}, abs=1e-12)


def test_positives_beyond_r_earn_nothing_unlike_ap():
    emb = torch.tensor([[3.0], [2.0], [1.0], [0.5]])
    labels = [0, 1, 0, 1]
    # q0 ranks 1(-) 2(+) 3(-): R=1, top 1 has no positive -> 0, while its AP is 1/2
    # q1 ranks 0(-) 2(-) 3(+): R=1 -> 0; q2 ranks 0(+) 1 3 -> 1; q3 ranks 0(-) 1(+) 2 -> 0
    assert map_at_r(emb, labels) == pytest.approx(0.25, abs=1e-12)
    assert r_precision(emb, labels) == pytest.approx(0.25, abs=1e-12)
    assert mean_average_precision(emb, labels) > 0.25


def test_separated_classes_score_one_whatever_their_sizes():
    emb = on_circle([0, 1, 2, 3, 60, 61, 120])
    labels = [0, 0, 0, 0, 1, 1, 2]  # sizes 4, 2 and a class of one (left out)
    assert map_at_r(emb, labels) == 1.0 and r_precision(emb, labels) == 1.0


def test_classes_of_one_are_left_out_and_none_left_is_nan():
    x, y = random_set(40, 4, 5, seed=3)
    y[:3] = [100, 101, 102]  # three more classes of one
    keep = y[:, None] == y[None, :]
    assert (keep.sum(1) == 1).sum() == 4
    want = field_reference(x, y, 5)
    assert map_at_r(x, y) == pytest.approx(want[0], abs=1e-12)
    assert r_precision(x, y) == pytest.approx(want[1], abs=1e-12)
    assert math.isnan(map_at_r(torch.eye(3), [0, 1, 2])) and math.isnan(r_precision(torch.eye(3), [0, 1, 2]))
    ap_r, r_prec = at_r_per_query(x, y)
    singles = torch.as_tensor(keep.sum(1) == 1)
    assert bool(ap_r[singles].isnan().all() and r_prec[singles].isnan().all() and not ap_r[~singles].isnan().any())


def test_ties_are_ordered_by_index():
    # every score is 0: each query ranks the others by index
    labels = [0, 1, 0, 1]
    # q0: 1(-) 2(+) 3, R=1 -> 0; q1: 0(-) 2 3(+) -> 0; q2: 0(+) -> 1; q3: 0(-) -> 0
    assert map_at_r(torch.eye(4), labels) == pytest.approx(0.25)
    assert r_precision(torch.eye(4), labels) == pytest.approx(0.25)


# ----------------------------------------------------------------------------- brute force


@pytest.mark.parametrize("chunk_size", [None, 1, 7])
@pytest.mark.parametrize("k", [2, 5, 17])
def test_match_brute_force_definitions(chunk_size, k):
    x, y = random_set(60, 5, 6, seed=k)
    want_ap_r, want_rp, want_hit = field_reference(x, y, k)
    assert map_at_r(x, y, chunk_size) == pytest.approx(want_ap_r, abs=1e-12)
    assert r_precision(x, y, chunk_size) == pytest.approx(want_rp, abs=1e-12)
    assert hit_rate_at_k(x, y, k, chunk_size) == pytest.approx(want_hit, abs=1e-12)


def test_k_larger_than_the_other_items_names_k():
    x, y = random_set(6, 3, 2, seed=0)
    for bad in (6, 0, [1, 9]):
        with pytest.raises(ValueError, match=r"k must be in \[1, 5\] \(the number of other items\), got"):
            hit_rate_at_k(x, y, bad)
    assert hit_rate_at_k(x, y, 5) == 1.0  # the whole list always holds the positives


@pytest.mark.parametrize("fn", [map_at_r, r_precision])
def test_bad_input(fn):
    with pytest.raises(ValueError, match="need at least 2 descriptors"):
        fn(torch.ones(1, 3), [0])
    with pytest.raises(ValueError, match="labels must be a 1-D sequence of 3 labels"):
        fn(torch.eye(3), [0, 1])
    with pytest.raises(ValueError, match="embeddings contains NaN"):
        fn(torch.tensor([[1.0], [float("nan")]]), [0, 0])


# ----------------------------------------------------------------------------- pytorch-metric-learning


@pytest.mark.parametrize("seed", [0, 1])
def test_match_pytorch_metric_learning(seed):
    pml = pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning.distances import DotProductSimilarity
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    assert pml.__version__
    # PML works in float32: give both the same float32 descriptors, far enough from ties.
    x, y = tie_free_set(80, 8, 6, seed)
    calc = AccuracyCalculator(
        include=("mean_average_precision_at_r", "r_precision", "precision_at_1", "mean_average_precision"),
        k=None,  # the whole list: needed for the full mAP, and >= every R for MAP@R
        knn_func=CustomKNN(DotProductSimilarity()), device=torch.device("cpu"),
    )
    # query = reference: PML sets ref_includes_query, drops each query from its own neighbours and
    # leaves out queries whose class has no other member, which is our convention.
    got = calc.get_accuracy(torch.from_numpy(x), torch.from_numpy(y))
    assert map_at_r(x, y) == pytest.approx(got["mean_average_precision_at_r"], abs=1e-6)
    assert r_precision(x, y) == pytest.approx(got["r_precision"], abs=1e-6)
    assert hit_rate_at_k(x, y, 1) == pytest.approx(got["precision_at_1"], abs=1e-6)
    assert precision_at_k(x, y, 1) == pytest.approx(got["precision_at_1"], abs=1e-6)
    assert mean_average_precision(x, y) == pytest.approx(got["mean_average_precision"], abs=1e-6)
    # the comparison is not vacuous: the values are far from trivial
    assert 0.05 < got["mean_average_precision_at_r"] < 0.9
