"""The baselines are right: each PML loss the trainer uses, as `apl.train.losses.build_loss` builds it,
against its authors' code or the paper's equations written out here independently (values and
gradients), and PML's Smooth-AP defect (docs/pml_smoothap.md), the reason `--loss smoothap` is apl's."""
import math

import pytest
import torch

import apl
from benchmarks import peers
from helpers import peer
from apl.train.losses import SPECS, build_loss

pytest.importorskip("pytorch_metric_learning")


def _batch(B=24, D=8, C=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(B, D, generator=g, dtype=torch.float64), dim=1)
    return x, torch.randint(0, C, (B,), generator=g)


def _both(loss_pml, loss_ref, x, y, normalize=True):
    """Value and gradient of both; the definitions are on L2-normalised rows, which PML's distances
    (and the network) normalise, so the reference sees them normalised too."""
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    la, lb = loss_pml(a, y), loss_ref(torch.nn.functional.normalize(b, dim=1) if normalize else b, y)
    la.backward()
    lb.backward()
    return la, lb, a.grad, b.grad


def _dist(x):
    return torch.cdist(x, x)  # Euclidean, as PML's LpDistance on L2-normalised rows


# --- FastAP: the authors' code (kunhe/FastAP-metric-learning, pytorch/FastAP_loss.py) -----------

@pytest.mark.parametrize("num_bins", [10, 20])
@pytest.mark.parametrize("seed", [0, 1])
def test_fastap_equals_the_authors_code(num_bins, seed):
    """The same value; the same gradient direction. Their hand-written backward returns N / 2 times
    the derivative of their loss (it differentiates the sum of the APs with respect to the squared
    distances without the -2 x_j and the 1 / N of the mean): a learning-rate scale, nothing else.
    On the tangent of the unit sphere (the network normalises; PML's distance too) the two agree."""
    theirs = peer("kunhe/FastAP-metric-learning", "pytorch/FastAP_loss.py")
    x, y = _batch(seed=seed)
    with peers.as_torch_1_on_cpu():
        # their code works in float32 (torch.zeros, torch.linspace defaults)
        la, lb, ga, gb = _both(build_loss("fastap", num_bins=num_bins), theirs.FastAPLoss(num_bins), x.float(), y,
                               normalize=False)
    assert abs(la.item() - lb.item()) < 1e-5

    def tangent(g):
        g = g.double()
        return g - (g * x).sum(1, keepdim=True) * x

    torch.testing.assert_close(tangent(gb), tangent(ga) * (len(y) / 2), rtol=1e-3, atol=1e-5)


# --- multi-similarity: Wang et al., CVPR 2019, eq. (4) with the pair mining of eq. (5)-(6) -------

def _multi_similarity(x, y, alpha=2.0, beta=50.0, lam=0.5, eps=0.1):
    S = x @ x.t()
    B = len(y)
    losses = []
    for i in range(B):
        pos = [j for j in range(B) if j != i and y[j] == y[i]]
        neg = [j for j in range(B) if y[j] != y[i]]
        if not pos or not neg:
            continue
        # mining: a negative is kept when harder than the easiest positive (with eps), and vice versa
        hardest_pos, hardest_neg = min(S[i, j] for j in pos), max(S[i, j] for j in neg)
        neg_kept = [j for j in neg if S[i, j] + eps > hardest_pos]
        pos_kept = [j for j in pos if S[i, j] - eps < hardest_neg]
        if not pos_kept or not neg_kept:
            continue
        lp = torch.log1p(sum(torch.exp(-alpha * (S[i, j] - lam)) for j in pos_kept)) / alpha
        ln = torch.log1p(sum(torch.exp(beta * (S[i, j] - lam)) for j in neg_kept)) / beta
        losses.append(lp + ln)
    return torch.stack(losses).mean()


@pytest.mark.parametrize("seed, base", [(0, None), (1, None), (2, 1.0)])
def test_multi_similarity_equals_the_paper(seed, base):
    """Default base (lambda) 0.5 as the authors' code; --ms-base sets it (1.0: the paper's)."""
    x, y = _batch(seed=seed)
    ours = build_loss("multi-similarity", ms_base=base)
    la, lb, ga, gb = _both(ours, lambda x, y: _multi_similarity(x, y, lam=base or 0.5), x, y)
    assert abs(la.item() - lb.item()) < 1e-10
    torch.testing.assert_close(ga, gb, rtol=1e-7, atol=1e-10)


# --- triplet (Schroff et al., 2015; every margin-violating triplet, the mean over those) ---------

def _triplet(x, y, margin=0.4):
    d = _dist(x)
    terms = []
    for a in range(len(y)):
        for p in range(len(y)):
            if p == a or y[p] != y[a]:
                continue
            for n in range(len(y)):
                if y[n] != y[a]:
                    v = d[a, p] - d[a, n] + margin
                    if v > 0:
                        terms.append(v)
    return torch.stack(terms).mean()


# --- triplet with hard-negative mining, batch form (Hermans et al., 2017) ------------------------

def _triplet_hard(x, y, margin=0.2):
    """Each anchor with its farthest positive and its closest negative; the mean of the
    margin-violating terms (PML's reducer for the triplet loss averages its non-zero losses)."""
    d = _dist(x)
    terms = []
    for a in range(len(y)):
        pos = [j for j in range(len(y)) if j != a and y[j] == y[a]]
        neg = [j for j in range(len(y)) if y[j] != y[a]]
        if not pos or not neg:
            continue
        v = max(d[a, j] for j in pos) - min(d[a, j] for j in neg) + margin
        if v > 0:
            terms.append(v)
    return torch.stack(terms).mean()


# --- triplet with semi-hard negatives, batch form (Xuan et al., 2020) -----------------------------

def _triplet_semihard(x, y, margin=0.2):
    """Each anchor with its closest positive and the closest negative farther than that positive
    (anchors without one are left out); the mean of the margin-violating terms."""
    d = _dist(x)
    terms = []
    for a in range(len(y)):
        pos = [j for j in range(len(y)) if j != a and y[j] == y[a]]
        if not pos:
            continue
        dp = min(d[a, j] for j in pos)
        farther = [d[a, j] for j in range(len(y)) if y[j] != y[a] and d[a, j] > dp]
        if not farther:
            continue
        v = dp - min(farther) + margin
        if v > 0:
            terms.append(v)
    return torch.stack(terms).mean()


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name, definition", [("triplet", _triplet), ("triplet-hard", _triplet_hard),
                                              ("triplet-semihard", _triplet_semihard)])
def test_triplet_losses_equal_their_definitions(name, definition, seed):
    x, y = _batch(B=16, seed=seed)
    margin = SPECS[name].defaults["triplet_margin"]
    la, lb, ga, gb = _both(build_loss(name), lambda e, t: definition(e, t, margin), x, y)
    assert abs(la.item() - lb.item()) < 1e-10
    torch.testing.assert_close(ga, gb, rtol=1e-6, atol=1e-9)


def test_triplet_semihard_skips_anchors_whose_negatives_are_all_closer():
    """Two tight classes far apart give no violating triplet; then anchor 0 moves among the other
    class: all its negatives are closer than its positive, so it is no anchor of a mined triplet,
    while anchor 1 (whose positive moved away) now violates the margin."""
    x = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [0.14, 0.99]],
                                                   dtype=torch.float64), dim=1)
    y = torch.tensor([0, 0, 1, 1])
    loss = build_loss("triplet-semihard", triplet_margin=0.1)
    assert loss(x, y).item() == 0.0
    x[0] = torch.nn.functional.normalize(torch.tensor([0.1, 0.995], dtype=torch.float64), dim=0)
    anchors, positives, _, negatives = loss.miner(x, y)
    assert 0 not in anchors.tolist() and 1 in anchors.tolist()
    assert loss(x, y).item() == pytest.approx(_triplet_semihard(x, y, 0.1).item(), abs=1e-12) and loss(x, y).item() > 0


# --- contrastive: the hinge form of PML and Musgrave et al. (ECCV 2020) -------------------------

def _contrastive(x, y, neg_margin=0.5):
    """Positives pulled to distance 0 and negatives pushed beyond the margin, each term the mean of
    its non-zero losses (Hadsell et al., 2006, square both terms; the metric-learning benchmarks
    use this hinge form)."""
    d = _dist(x)
    eye = torch.eye(len(y), dtype=torch.bool)
    same = (y[:, None] == y[None, :]) & ~eye
    diff = y[:, None] != y[None, :]
    pos = d[same]
    neg = torch.relu(neg_margin - d[diff])
    mean_nonzero = lambda v: v[v > 0].mean() if bool((v > 0).any()) else v.sum() * 0  # noqa: E731
    return mean_nonzero(pos) + mean_nonzero(neg)


@pytest.mark.parametrize("seed", [0, 1])
def test_contrastive_equals_the_definition(seed):
    x, y = _batch(seed=seed)
    margin = SPECS["contrastive"].defaults["contrastive_margin"]
    la, lb, ga, gb = _both(build_loss("contrastive"), lambda e, t: _contrastive(e, t, margin), x, y)
    assert abs(la.item() - lb.item()) < 1e-10
    torch.testing.assert_close(ga, gb, rtol=1e-6, atol=1e-9)


# --- PML 2.9.0's SmoothAPLoss: right only when classes per batch == images per class ------------

@pytest.mark.parametrize("P,K", [(5, 5), (8, 4), (5, 50)])
def test_pml_smoothap_is_wrong_unless_p_equals_k(P, K):
    """docs/pml_smoothap.md: PML groups a class-sorted batch as (K, P) instead of (P, K)."""
    import pytorch_metric_learning

    if pytorch_metric_learning.__version__ != "2.9.0":  # 2.8 has no SmoothAPLoss
        pytest.skip(f"the defect is documented for PML 2.9.0, this is {pytorch_metric_learning.__version__}")
    from pytorch_metric_learning.losses import SmoothAPLoss
    g = torch.Generator().manual_seed(P * K)
    y = torch.arange(P).repeat_interleave(K)
    centres = torch.randn(P, 16, generator=g, dtype=torch.float64)  # images cluster by class, as after training
    x = torch.nn.functional.normalize(centres[y] + 0.8 * torch.randn(P * K, 16, generator=g, dtype=torch.float64), dim=1)
    pml = SmoothAPLoss(temperature=0.01)(x, y).item()
    authors = apl.smooth_ap_loss(x, y, temperature=0.01, include_query=True).item()  # = their code (test_authors_code)
    if P == K:
        assert math.isclose(pml, authors, abs_tol=1e-6)
    else:
        assert abs(pml - authors) > 0.05
