"""apl.evaluation: exact metrics against hand-worked cases and plain NumPy definitions."""
import math

import numpy as np
import pytest
import torch

from apl.evaluation import (
    PCAWhitening,
    alpha_database_augmentation,
    alpha_query_expansion,
    average_precisions,
    hit_rate_at_k,
    knn,
    mean_average_precision,
    pairwise_scores,
    precision_at_k,
    recall_at_k,
    revisited_map,
    trapezoidal_ap,
)

# ----------------------------------------------------------------------------- NumPy references


def ap_reference(scores: np.ndarray, relevant: np.ndarray) -> float:
    """Threshold AP: sum over distinct scores t (high to low) of precision(t) * new recall at t."""
    total = relevant.sum()
    ap, seen_pos = 0.0, 0
    for t in np.unique(scores)[::-1]:
        at_or_above = scores >= t
        new_pos = relevant[scores == t].sum()
        seen_pos += new_pos
        ap += new_pos / total * seen_pos / at_or_above.sum()
    return ap


def map_reference(emb: np.ndarray, labels: np.ndarray) -> float:
    aps = []
    for i in range(len(emb)):
        others = np.arange(len(emb)) != i
        rel = labels[others] == labels[i]
        if rel.any():
            aps.append(ap_reference(emb[others] @ emb[i], rel))
    return float(np.mean(aps))


def plain_ap(scores: np.ndarray, relevant: np.ndarray) -> float:
    """Textbook AP of a ranking without ties: mean over positives of precision at their rank."""
    ranked = relevant[np.argsort(-scores, kind="stable")]
    hits = np.cumsum(ranked)
    return float((hits / np.arange(1, len(ranked) + 1))[ranked].mean())


def topk_reference(emb, labels, k):
    prec, rec = [], []
    for i in range(len(emb)):
        others = np.flatnonzero(np.arange(len(emb)) != i)
        s = emb[others] @ emb[i]
        top = others[np.argsort(-s, kind="stable")[:k]]  # ties: lower index first
        npos = (labels[others] == labels[i]).sum()
        if npos:
            hits = (labels[top] == labels[i]).sum()
            prec.append(hits / k)
            rec.append(hits / npos)
    return np.mean(prec), np.mean(rec)


def revisited_reference(scores, gnd, protocol, kappas):
    """The benchmark's definitions, followed literally on an explicit ranked list per query."""
    aps, prs = [], []
    for q, entry in enumerate(gnd):
        easy, hard, junk = set(entry["easy"]), set(entry["hard"]), set(entry["junk"])
        pos, bad = {"easy": (easy, junk | hard), "medium": (easy | hard, junk), "hard": (hard, junk | easy)}[protocol]
        if not pos:
            continue
        ranking = [i for i in np.argsort(-scores[q], kind="stable") if i not in bad or i in pos]
        r = [j for j, i in enumerate(ranking) if i in pos]
        ap = 0.0
        for j, rank in enumerate(r):
            p0 = 1.0 if rank == 0 else j / rank
            ap += (p0 + (j + 1) / (rank + 1)) / 2 / len(pos)
        aps.append(ap)
        one = np.array(r) + 1
        prs.append([np.sum(one <= min(one.max(), k)) / min(one.max(), k) for k in kappas])
    return np.mean(aps), np.mean(prs, axis=0)


def unit(n, d, seed):
    g = np.random.default_rng(seed)
    x = g.standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ----------------------------------------------------------------------------- mean_average_precision


def test_map_hand_worked_example():
    # 1-D descriptors, so each score is a product of two of these numbers.
    emb = torch.tensor([[3.0], [2.0], [1.0], [-1.0]])
    labels = ["a", "b", "a", "a"]
    # query 0 ranks 1, 2, 3 -> positives at 2, 3: (1/2 + 2/3) / 2 = 7/12
    # query 1 has no positive -> left out; query 2 ranks 0, 1, 3 -> (1 + 2/3) / 2 = 5/6
    # query 3 scores -3, -2, -1 -> ranks 2, 1, 0 -> (1 + 2/3) / 2 = 5/6
    aps = average_precisions(emb, labels)
    assert math.isnan(aps[1])
    np.testing.assert_allclose(aps[[0, 2, 3]].numpy(), [7 / 12, 5 / 6, 5 / 6], rtol=1e-12)
    assert mean_average_precision(emb, labels) == pytest.approx(0.75, abs=1e-12)


@pytest.mark.parametrize("chunk_size", [None, 1, 7])
def test_map_matches_numpy_reference(chunk_size):
    emb = unit(60, 5, seed=0)
    labels = np.random.default_rng(1).integers(0, 6, 60)
    got = mean_average_precision(torch.from_numpy(emb), labels, chunk_size=chunk_size)
    assert got == pytest.approx(map_reference(emb, labels), abs=1e-12)
    # no ties here, so it is also the textbook AP of the ranking
    textbook = np.mean([
        plain_ap(np.delete(emb @ emb[i], i), np.delete(labels == labels[i], i))
        for i in range(60) if (labels == labels[i]).sum() > 1
    ])
    assert got == pytest.approx(textbook, abs=1e-12)


def test_map_ties_are_order_independent_and_follow_the_threshold_rule():
    # integer descriptors: the scores are exact, so tied scores are bitwise equal
    g = np.random.default_rng(3)
    emb = g.integers(-2, 3, size=(40, 3)).astype(np.float64)
    labels = g.integers(0, 4, 40)
    got = mean_average_precision(emb, labels)
    assert got == pytest.approx(map_reference(emb, labels), abs=1e-12)
    perm = g.permutation(40)
    assert mean_average_precision(emb[perm], labels[perm]) == pytest.approx(got, abs=1e-12)


def test_map_tie_group_gets_precision_at_its_end():
    # query 0 (score 1 with items 1, 2, 3; 0 with item 4): a tie group of 3 holding 2 positives
    emb = torch.tensor([[1.0], [1.0], [1.0], [1.0], [0.0]])
    labels = [0, 0, 1, 0, 1]
    assert average_precisions(emb, labels)[0].item() == pytest.approx(2 / 3)


def test_map_without_any_positive_is_nan_and_labels_may_be_strings():
    assert math.isnan(mean_average_precision(torch.eye(3), ["x", "y", "z"]))
    a = mean_average_precision(torch.eye(4), ["x", "x", "y", "y"])
    b = mean_average_precision(torch.eye(4), [5, 5, 9, 9])
    assert a == b


@pytest.mark.parametrize(
    "emb, labels, match",
    [
        (torch.zeros(4), [0, 0, 1, 1], "2-D"),
        (torch.zeros(4, 2), [0, 0, 1], "4 labels"),
        (torch.tensor([[0.0], [float("nan")]]), [0, 0], "NaN"),
        (torch.zeros(1, 2), [0], "at least 2"),
    ],
)
def test_map_bad_input(emb, labels, match):
    with pytest.raises(ValueError, match=match):
        mean_average_precision(emb, labels)


# ----------------------------------------------------------------------------- precision / recall at k


def test_precision_at_k_hand_worked_with_ties_by_index():
    emb = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    # query 0 scores 0 against both 1 and 2 (a tie): item 1 comes first.
    # labels 0 1 0: q0 top-1 = item 1 (neg) -> 0; q1 has no positive; q2 top-1 = item 1 (score 1, neg) -> 0
    assert precision_at_k(emb, [0, 1, 0], 1) == 0.0
    # labels 0 0 1: q0 top-1 = item 1 (pos) -> 1; q1 top-1 = item 2 (neg) -> 0; q2 has no positive
    assert precision_at_k(emb, [0, 0, 1], 1) == 0.5
    assert recall_at_k(emb, [0, 1, 0], 2) == 1.0


@pytest.mark.parametrize("k", [1, 3, 10])
def test_precision_recall_match_reference(k):
    emb = unit(50, 4, seed=5)
    labels = np.random.default_rng(6).integers(0, 5, 50)
    p_ref, r_ref = topk_reference(emb, labels, k)
    assert precision_at_k(emb, labels, k) == pytest.approx(p_ref, abs=1e-12)
    assert precision_at_k(emb, labels, k, chunk_size=7) == pytest.approx(p_ref, abs=1e-12)
    assert recall_at_k(emb, labels, k) == pytest.approx(r_ref, abs=1e-12)
    both = precision_at_k(emb, labels, [k, 1])
    assert both[k] == pytest.approx(p_ref, abs=1e-12) and set(both) == {k, 1}


def test_hit_rate_and_recall_differ_as_defined():
    emb = torch.tensor([[1.0], [0.9], [0.5], [0.1]])
    labels = [0, 1, 0, 0]
    # rankings: q0 -> 1 2 3 (positives 2, 3); q1 no positive; q2 -> 0 1 3 (pos 0, 3); q3 -> 0 1 2 (pos 0, 2)
    assert recall_at_k(emb, labels, 2) == pytest.approx(0.5)  # one of two positives each
    assert hit_rate_at_k(emb, labels, 2) == pytest.approx(1.0)
    assert hit_rate_at_k(emb, labels, 1) == pytest.approx(2 / 3)
    assert recall_at_k(emb, labels, [1, 3]) == pytest.approx({1: 1 / 3, 3: 1.0})


def test_k_out_of_range():
    with pytest.raises(ValueError, match="k must be in"):
        precision_at_k(torch.eye(3), [0, 0, 1], 3)


# ----------------------------------------------------------------------------- revisited_map


def _ranked_scores(order, n):
    """Scores giving database `order` (best first)."""
    s = np.zeros(n)
    s[np.asarray(order)] = np.arange(n, 0, -1)
    return s


def test_revisited_hand_worked_example():
    order = [3, 0, 5, 1, 7, 2, 4, 6]
    scores = np.stack([_ranked_scores(order, 8), _ranked_scores(order, 8)])
    gnd = [
        {"easy": [0, 2], "hard": [1], "junk": [5], "bbx": [0, 0, 1, 1]},
        {"easy": [4], "hard": [], "junk": []},  # no hard positive: left out of "hard"
    ]
    r = revisited_map(scores, gnd)
    # query 0, easy: junk {5, 1}; list 3 0 7 2 4 6 -> positives at ranks 1, 3
    easy0 = ((0 / 1 + 1 / 2) / 2 + (1 / 3 + 2 / 4) / 2) / 2
    # medium: junk {5}; list 3 0 1 7 2 4 6 -> ranks 1, 2, 4
    med0 = ((0 + 1 / 2) / 2 + (1 / 2 + 2 / 3) / 2 + (2 / 4 + 3 / 5) / 2) / 3
    # hard: junk {5, 0, 2}; list 3 1 7 4 6 -> rank 1
    hard0 = (0 + 1 / 2) / 2
    # query 1: item 4 at rank 6 (no junk)
    q1 = (0 / 6 + 1 / 7) / 2
    assert r["easy"]["map"] == pytest.approx((easy0 + q1) / 2)
    assert r["medium"]["map"] == pytest.approx((med0 + q1) / 2)
    assert r["hard"]["map"] == pytest.approx(hard0)
    # mP@k, 1-based ranks: easy q0 {2, 4}, q1 {7}; medium q0 {2, 3, 5}; hard q0 {2}
    assert r["easy"]["mp"] == pytest.approx({1: 0.0, 5: (2 / 4 + 0) / 2, 10: (2 / 4 + 1 / 7) / 2})
    assert r["medium"]["mp"] == pytest.approx({1: 0.0, 5: (3 / 5 + 0) / 2, 10: (3 / 5 + 1 / 7) / 2})
    assert r["hard"]["mp"] == pytest.approx({1: 0.0, 5: 1 / 2, 10: 1 / 2})
    assert set(r) == {"easy", "medium", "hard"} and all(isinstance(v["map"], float) for v in r.values())


def test_revisited_matches_literal_reference_on_random_data():
    g = np.random.default_rng(11)
    nq, n = 6, 40
    scores = g.standard_normal((nq, n))
    gnd = []
    for _ in range(nq):
        perm = g.permutation(n)
        a, b, c = g.integers(0, 5, 3)
        gnd.append({"easy": perm[:a], "hard": perm[a : a + b], "junk": perm[a + b : a + b + c]})
    r = revisited_map(torch.from_numpy(scores), gnd, kappas=(1, 3, 10), chunk_size=4)
    for protocol in ("easy", "medium", "hard"):
        ref_map, ref_mp = revisited_reference(scores, gnd, protocol, (1, 3, 10))
        assert r[protocol]["map"] == pytest.approx(ref_map, abs=1e-12)
        assert list(r[protocol]["mp"].values()) == pytest.approx(list(ref_mp), abs=1e-12)


def test_revisited_ties_rank_lower_index_first_and_all_junk_removed():
    scores = np.zeros((1, 5))  # all tied: ranking 0 1 2 3 4
    gnd = [{"easy": [3], "hard": [], "junk": [0, 1, 2]}]
    r = revisited_map(scores, gnd, kappas=(1,))
    assert r["easy"]["map"] == pytest.approx(1.0)  # 3 moves to the top once the junk is removed
    assert r["easy"]["mp"][1] == 1.0
    assert math.isnan(r["hard"]["map"]) and math.isnan(r["hard"]["mp"][1])


def test_trapezoidal_ap_perfect_and_last():
    assert trapezoidal_ap(np.array([0, 1, 2]), 3) == pytest.approx(1.0)
    assert trapezoidal_ap(np.array([9]), 1) == pytest.approx((0 + 1 / 10) / 2)


@pytest.mark.parametrize(
    "gnd, err, match",
    [
        ([{"easy": [0], "hard": []}], ValueError, "2 queries"),
        ([{"easy": [0], "hard": []}, {"easy": [9], "hard": []}], IndexError, r"gnd\[1\]\['easy'\]"),
        ([{"easy": [0], "hard": []}, {"easy": [1]}], KeyError, "'hard'"),
    ],
)
def test_revisited_bad_gnd(gnd, err, match):
    with pytest.raises(err, match=match):
        revisited_map(np.zeros((2, 4)), gnd)


# ----------------------------------------------------------------------------- chunked search


@pytest.mark.parametrize("chunk_size", [1, 3, 1000])
def test_pairwise_scores_and_knn_chunked(chunk_size):
    q, db = torch.randn(5, 4), torch.randn(23, 4)
    torch.testing.assert_close(pairwise_scores(q, db, chunk_size=chunk_size), q @ db.T)
    s, i = knn(q, db, 4, chunk_size=chunk_size)
    ref = torch.sort(q @ db.T, dim=1, descending=True, stable=True)
    torch.testing.assert_close(s, ref.values[:, :4])
    assert torch.equal(i, ref.indices[:, :4])


def test_knn_ties_lower_index_whatever_the_chunking_and_exclude_self():
    db = torch.tensor([[1.0], [1.0], [1.0], [1.0], [2.0]])
    for chunk in (1, 2, 5):
        _, i = knn(torch.tensor([[1.0]]), db, 3, chunk_size=chunk)
        assert i.tolist() == [[4, 0, 1]]
        _, i = knn(db, db, 2, chunk_size=chunk, exclude_self=True)
        assert i[4].tolist() == [0, 1] and i[0].tolist() == [4, 1]
        # a block of the database as queries: query r is item self_offset + r
        _, i = knn(db[3:5], db, 2, chunk_size=chunk, exclude_self=True, self_offset=3)
        assert i.tolist() == [[4, 0], [0, 1]]
    with pytest.raises(ValueError, match="must be database items"):
        knn(db[3:5], db, 2, exclude_self=True, self_offset=4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_scores_on_gpu_with_database_on_cpu():
    q, db = torch.randn(3, 8, device="cuda"), torch.randn(100, 8)
    s = pairwise_scores(q, db, chunk_size=16)
    assert s.is_cuda
    torch.testing.assert_close(s.cpu(), q.cpu() @ db.T, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- whitening, QE, DBA


def test_pca_whitening_full_power_gives_identity_covariance():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 6, generator=g, dtype=torch.float64) @ torch.randn(6, 6, generator=g, dtype=torch.float64) + 3
    w = PCAWhitening.fit(x, power=0.5)
    y = w.transform(x, normalize=False)
    torch.testing.assert_close(y.mean(0), torch.zeros(6, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(y.T @ y / 500, torch.eye(6, dtype=torch.float64), atol=1e-9, rtol=0)


def test_pca_whitening_power_dim_and_normalisation():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 8, generator=g, dtype=torch.float64) * torch.arange(1, 9, dtype=torch.float64)
    w = PCAWhitening.fit(x, dim=3)  # default power 0.25
    assert w.power == 0.25 and w.out_dim == 3 and w.in_dim == 8
    y = w.transform(x, normalize=False)
    # variance along component i is lambda_i^(1 - 2 * 0.25)
    torch.testing.assert_close(y.var(0, unbiased=False), w.eigenvalues[:3].sqrt(), rtol=1e-9, atol=0)
    assert torch.all(w.eigenvalues[:-1] >= w.eigenvalues[1:])
    torch.testing.assert_close(w.transform(x).norm(dim=1), torch.ones(300, dtype=torch.float64))
    # power 0: a pure rotation, which keeps distances between centred points
    r = PCAWhitening.fit(x, power=0).transform(x, normalize=False)
    torch.testing.assert_close(torch.cdist(r, r), torch.cdist(x, x), atol=1e-5, rtol=1e-9)
    w2 = PCAWhitening.from_state_dict(w.state_dict())
    torch.testing.assert_close(w2(x), w(x))
    with pytest.raises(ValueError, match="dim must be"):
        PCAWhitening.fit(x, dim=9)
    with pytest.raises(ValueError, match="dimension 5, the whitening expects 8"):
        w.transform(torch.zeros(2, 5))


def test_alpha_query_expansion_by_hand():
    db = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]]), dim=1)
    q = torch.tensor([[0.6, 0.8]])
    # nearest two: [0.8, 0.6] (score 0.96) and [0, 1] (0.8)
    expect = q + 0.96**3 * db[1] + 0.8**3 * db[2]
    got = alpha_query_expansion(q, db, k=2, alpha=3.0)
    torch.testing.assert_close(got, expect / expect.norm())
    # negative scores get no weight: with k = 4, [-1, 0] (score -0.6) adds nothing
    expect4 = expect + 0.6**3 * db[0]
    torch.testing.assert_close(alpha_query_expansion(q, db, k=4, alpha=3.0), expect4 / expect4.norm())


def test_alpha_database_augmentation_excludes_self():
    db = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]), dim=1)
    got = alpha_database_augmentation(db, k=1, alpha=1.0)
    expect = torch.stack([db[0] + 0.8 * db[1], db[1] + 0.8 * db[0], db[2] + 0.6 * db[1]])
    torch.testing.assert_close(got, torch.nn.functional.normalize(expect, dim=1))
    with pytest.raises(ValueError, match="k must be"):
        alpha_database_augmentation(db, k=3)


def test_bad_chunk_size():
    with pytest.raises(ValueError, match="chunk_size must be a positive int, got 0"):
        mean_average_precision(torch.eye(3), [0, 0, 1], chunk_size=0)
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        revisited_map(np.zeros((1, 3)), [{"easy": [0], "hard": []}], chunk_size=-1)
