"""Property tests over random shapes and settings (hypothesis)."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import apl
from helpers import compiled_cpu, random_labels, unit_rows

BACKENDS = ["torch", "cpu"] if compiled_cpu() else ["torch"]
case = st.fixed_dictionaries(
    {
        "B": st.integers(2, 40),
        "N": st.one_of(st.none(), st.integers(1, 40)),
        "D": st.integers(1, 9),
        "C": st.integers(1, 6),
        "M": st.integers(2, 30),
        "lo": st.floats(-1.5, 0.5),
        "width": st.floats(0.05, 2.5),
        "variant": st.sampled_from(["ap_q", "tie_aware", "tie_aware_simplified"]),
        "chunk": st.one_of(st.none(), st.integers(1, 50)),
        "seed": st.integers(0, 10_000),
    }
)


def evaluate(c, backend):
    x = unit_rows(c["B"], c["D"], seed=c["seed"]).requires_grad_()
    y = random_labels(c["B"], c["C"], seed=c["seed"])
    rx = ry = None
    if c["N"] is not None:
        rx = unit_rows(c["N"], c["D"], seed=c["seed"] + 1).requires_grad_()
        ry = random_labels(c["N"], c["C"], seed=c["seed"] + 1)
    kw = dict(num_bins=c["M"], score_range=(c["lo"], c["lo"] + c["width"]), variant=c["variant"], backend=backend, chunk_size=c["chunk"])
    ap, has = apl.per_query_ap(x, y, rx, ry, **kw)
    loss = apl.ap_loss(x, y, rx, ry, **kw)
    grads = torch.autograd.grad(loss, [x] if rx is None else [x, rx])
    return ap, has, loss, grads


@settings(max_examples=60, deadline=None)
@given(case)
def test_backends_agree_and_stay_finite(c):
    results = [evaluate(c, b) for b in BACKENDS]
    ap, has, loss, grads = results[0]
    # AP lies in [0, 1] for AP_Q; every value is finite and queries without positive get 0.
    assert torch.isfinite(ap).all() and torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads)
    assert (ap[~has] == 0).all()
    if c["variant"] == "ap_q":
        assert (ap >= -1e-12).all() and (ap <= 1 + 1e-12).all()
    assert 0.0 <= loss.item() <= 1.0 + 1e-12 or c["variant"] != "ap_q"
    for other in results[1:]:
        torch.testing.assert_close(other[0], ap, rtol=0, atol=1e-10)
        torch.testing.assert_close(other[2], loss, rtol=0, atol=1e-10)
        for g, h in zip(other[3], grads):
            torch.testing.assert_close(g, h, rtol=0, atol=1e-10)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 30), st.integers(2, 25), st.integers(0, 1000))
def test_perfect_separation_gives_ap_one(B, M, seed):
    """Positives all at score 1, negatives all at -1: every bin is pure, AP_Q = 1."""
    g = torch.Generator().manual_seed(seed)
    rel = torch.rand(B, 12, generator=g) < 0.5
    rel[:, 0] = True
    scores = torch.where(rel, 1.0, -1.0).double()
    for backend in BACKENDS:
        ap = apl.quantized_ap(scores, rel, num_bins=M, backend=backend)
        torch.testing.assert_close(ap, torch.ones(B, dtype=torch.float64))
