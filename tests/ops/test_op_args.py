"""Direct calls of every torch.ops.apl op with each bad argument: the op itself (csrc/ap_ops.cpp
check_args, shared by every op body on every device) raises a clear error naming the argument,
instead of reading out of bounds in a kernel (torch.ops.apl.* is public). Also: non-finite
scores are detected per element (a row sum of finite float64 scores may overflow)."""
from __future__ import annotations

import pytest
import torch

from helpers import needs_cpu_kernel, random_labels, unit_rows

pytestmark = needs_cpu_kernel

B, N, D, M = 6, 9, 4, 8


def _valid(device="cpu"):
    """Valid arguments of every op, as dicts in schema order."""
    x, y = unit_rows(B, D, seed=1), random_labels(B, 3, seed=1)
    r, ry = unit_rows(N, D, seed=2), random_labels(N, 3, seed=2)
    s = torch.rand(B, N, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    rel = s > 0
    _, _, coef_self, saved_self = torch.ops.apl.ap_self(x, y, M, -1.0, 1.0, 0, 0)
    _, _, coef_ref, saved_ref = torch.ops.apl.ap_ref(x, y, r, ry, M, -1.0, 1.0, 0, 0)
    _, _, coef_s = torch.ops.apl.ap_scores(s, rel, M, -1.0, 1.0, 0)
    g = torch.linspace(0.5, 1.5, B, dtype=torch.float64)
    common = dict(num_bins=M, lo=-1.0, hi=1.0)
    ops = {
        "ap_self": dict(embeddings=x, labels=y, **common, variant=0, chunk_size=0),
        "ap_self_backward": dict(grad_ap=g, embeddings=x, labels=y, coef=coef_self, scores=saved_self, **common,
                                 chunk_size=0),
        "ap_ref": dict(queries=x, query_labels=y, refs=r, ref_labels=ry, **common, variant=0, chunk_size=0),
        "ap_ref_backward": dict(grad_ap=g, queries=x, query_labels=y, refs=r, ref_labels=ry, coef=coef_ref,
                                scores=saved_ref, **common, chunk_size=0),
        "ap_scores": dict(scores=s, relevance=rel, **common, variant=0),
        "ap_scores_backward": dict(grad_ap=g, scores=s, relevance=rel, coef=coef_s, **common),
    }
    rank = dict(kind=1, temperature=0.05, ks=[1.0, 4.0], k_temperatures=[1.0, 0.5], query_mode=0)
    _, _, u_self = torch.ops.apl.rank_self(x, y, *rank.values(), 0)
    _, _, u_ref = torch.ops.apl.rank_ref(x, y, r, ry, *rank.values(), 0)
    ops.update({
        "rank_self": dict(embeddings=x, labels=y, **rank, chunk_size=0),
        "rank_self_backward": dict(grad_value=g, embeddings=x, labels=y, saved=u_self, **rank, chunk_size=0),
        "rank_ref": dict(queries=x, query_labels=y, refs=r, ref_labels=ry, **rank, chunk_size=0),
        "rank_ref_backward": dict(grad_value=g, queries=x, query_labels=y, refs=r, ref_labels=ry, saved=u_ref, **rank,
                                  chunk_size=0),
    })
    return {k: {n: (v.to(device) if isinstance(v, torch.Tensor) else v) for n, v in a.items()} for k, a in ops.items()}


# (argument, bad value maker (from the valid value), exception, message regex)
_BAD = [
    ("num_bins", lambda v: 1, ValueError, r"num_bins must be >= 2 and <= \d+, got 1"),
    ("num_bins", lambda v: -3, ValueError, r"num_bins must be >= 2 and <= \d+, got -3"),
    ("num_bins", lambda v: 1 << 40, ValueError, r"num_bins must be >= 2 and <= \d+, got 1099511627776"),
    ("lo", lambda v: 1.0, ValueError, r"score_range must be finite with lo < hi, got \(1, 1\)"),
    ("hi", lambda v: float("nan"), ValueError, r"score_range must be finite with lo < hi"),
    ("variant", lambda v: 3, ValueError, r"unknown variant id 3"),
    ("embeddings", lambda v: v[0], ValueError, r"embeddings must be 2-D, got 1-D"),
    ("embeddings", lambda v: v.long(), TypeError, r"embeddings must be floating point, got Long"),
    ("queries", lambda v: v[None], ValueError, r"queries must be 2-D, got 3-D"),
    ("scores", lambda v: v.bool(), TypeError, r"scores must be floating point, got Bool"),
    ("labels", lambda v: v[:-1], ValueError, rf"labels must have shape \({B}\), got \[{B - 1}\]"),
    ("labels", lambda v: v.int(), TypeError, r"labels must be int64, got Int"),
    ("query_labels", lambda v: v[:-1], ValueError, rf"query_labels must have shape \({B}\)"),
    ("ref_labels", lambda v: v[:-2], ValueError, rf"ref_labels must have shape \({N}\), got \[{N - 2}\]"),
    ("ref_labels", lambda v: v.float(), TypeError, r"ref_labels must be int64"),
    ("refs", lambda v: v[:, :-1], ValueError, rf"refs must have {D} columns like queries, got {D - 1}"),
    ("refs", lambda v: v[0], ValueError, r"refs must be 2-D"),
    ("refs", lambda v: v.long(), TypeError, r"refs must be floating point"),
    ("relevance", lambda v: v[:, :-1], ValueError, r"relevance must have the shape of scores"),
    ("relevance", lambda v: v.long(), TypeError, r"relevance must be bool, got Long"),
    ("grad_ap", lambda v: v[:-1], ValueError, rf"grad_ap must have shape \({B}\), got \[{B - 1}\]"),
    ("grad_ap", lambda v: v[None], ValueError, rf"grad_ap must have shape \({B}\)"),
    ("grad_ap", lambda v: v.long(), TypeError, r"grad_ap must be floating point"),
    ("coef", lambda v: v[:, :, :-1], ValueError, rf"coef must have shape \({B}, 2, {M}\)"),
    ("coef", lambda v: v[:-1], ValueError, rf"coef must have shape \({B}, 2, {M}\)"),
    ("coef", lambda v: v.float(), TypeError, r"coef must be float64, got Float"),
    # a (B, N) tensor, or on CPU the 1-D packed upper scores of ap_self (csrc/packed_upper.h)
    ("scores@saved", lambda v: v[..., :-1], ValueError,
     r"scores must be the \((6, \d+|\d+,)\) (tensor|packed upper scores) saved by the forward"),
    ("scores@saved", lambda v: v.float(), TypeError, r"scores must be Double \(the forward's compute dtype\)"),
    # the rank ops: their loss and parameters; their backward's U is checked as "scores" (the saved tensor)
    ("kind", lambda v: 2, ValueError, r"unknown loss kind 2 \(0: Smooth-AP, 1: Recall@k\)"),
    ("temperature", lambda v: 0.0, ValueError, r"temperature must be finite and > 0, got 0"),
    ("temperature", lambda v: float("inf"), ValueError, r"temperature must be finite and > 0, got inf"),
    ("query_mode", lambda v: 3, ValueError, r"unknown query mode 3"),
    ("ks", lambda v: [], ValueError, r"ks and k_temperatures must be non-empty and of equal length, got 0 and 2"),
    ("ks", lambda v: [0.5, 2.0], ValueError, r"every k must be >= 1, got 0.5"),
    ("k_temperatures", lambda v: [1.0], ValueError, r"ks and k_temperatures must be non-empty and of equal length, got 2 and 1"),
    ("k_temperatures", lambda v: [1.0, -2.0], ValueError, r"every k temperature must be finite and > 0, got -2"),
    ("grad_value", lambda v: v[:-1], ValueError, rf"grad_value must have shape \({B}\), got \[{B - 1}\]"),
    ("grad_value", lambda v: v.long(), TypeError, r"grad_value must be floating point"),
    ("saved", lambda v: v[:, :-1], ValueError, r"saved must be the \(6, \d+\) tensor saved by the forward"),
    ("saved", lambda v: v.float(), TypeError, r"saved must be Double"),
]


def _cases():
    ops = _valid()
    for op, args in ops.items():
        for arg, make, exc, msg in _BAD:
            name = arg.split("@")[0]
            if name not in args:
                continue
            saved = arg.endswith("@saved")
            if saved and op not in ("ap_self_backward", "ap_ref_backward"):
                continue  # only these two take the forward's saved scores
            if not saved and name == "scores" and op not in ("ap_scores", "ap_scores_backward"):
                continue  # there, scores is the input matrix
            yield pytest.param(op, name, make, exc, msg, id=f"{op}-{arg}-{msg[:24]}")


@pytest.mark.parametrize("op,name,make,exc,msg", list(_cases()))
def test_each_op_rejects_each_bad_argument(op, name, make, exc, msg):
    args = _valid()[op]
    args[name] = make(args[name])
    with pytest.raises(exc, match=rf"apl: {op}: {msg}"):
        getattr(torch.ops.apl, op)(*args.values())


def test_every_op_is_covered():
    """Each op meets num_bins, the range and each of its tensors at least once above."""
    covered = {(c.values[0], c.values[1]) for c in _cases()}
    for op, args in _valid().items():
        for name in args:
            if name == "chunk_size":
                continue
            assert (op, name) in covered, f"no bad-argument case for {op}({name})"


def test_streaming_backward_ignores_the_saved_scores():
    args = _valid()["ap_self_backward"]
    want = torch.ops.apl.ap_self_backward(*args.values())
    args.update(chunk_size=2, scores=torch.empty(0, dtype=torch.float64))
    torch.testing.assert_close(torch.ops.apl.ap_self_backward(*args.values()), want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device for a device mismatch")
def test_device_mismatch_is_rejected():
    for op, args in _valid().items():
        for name, v in args.items():
            if isinstance(v, torch.Tensor) and name not in ("embeddings", "queries", "scores"):
                bad = dict(args)
                bad[name] = v.cuda()
                with pytest.raises((ValueError, RuntimeError), match=rf"{name} is on cuda"):
                    getattr(torch.ops.apl, op)(*bad.values())


# --- non-finite detection, per element ----------------------------------------------------------


@pytest.mark.parametrize("form", ["scores", "self", "ref"])
def test_large_finite_scores_do_not_raise(form):
    """Two float64 scores of 1e308 are finite: a row sum overflows, a per-element test does not."""
    if form == "scores":
        s = torch.tensor([[1e308, 1e308, 0.5, -0.25]], dtype=torch.float64)
        ap, npos, coef = torch.ops.apl.ap_scores(s, s > 0, 20, -1.0, 1.0, 0)
    else:
        x = torch.tensor([[1e154, 0.0]] * 3 + [[0.6, 0.8], [0.0, 1.0]], dtype=torch.float64)
        y = torch.tensor([0, 0, 0, 1, 1])
        if form == "self":
            ap, npos, coef, _ = torch.ops.apl.ap_self(x, y, 20, -1.0, 1.0, 0, 0)
        else:
            ap, npos, coef, _ = torch.ops.apl.ap_ref(x, y, x, y, 20, -1.0, 1.0, 0, 0)
    assert torch.isfinite(ap).all() and torch.isfinite(coef).all()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("col", [0, 5, 257])  # first block, lanes, a later block
def test_each_non_finite_score_is_detected(bad, dtype, col):
    s = torch.rand(3, 300, dtype=torch.float64, generator=torch.Generator().manual_seed(col)).to(dtype)
    s[1, col] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        torch.ops.apl.ap_scores(s, s > 0.5, 20, -1.0, 1.0, 0)
    # the query's own (excluded) score counts too, as on CUDA
    x = unit_rows(5, 3, dtype, seed=col)
    x[2, 0] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        torch.ops.apl.ap_self(x, random_labels(5, 2), 20, -1.0, 1.0, 0, 0)
