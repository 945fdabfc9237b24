"""Every bad input gives a clear error that names the argument (one test per message)."""
import math

import pytest
import torch

import apl
from helpers import needs_cpu_kernel, unit_rows

X = unit_rows(6, 3)
Y = torch.tensor([0, 0, 1, 1, 2, 2])


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(embeddings=X[0]), ValueError, r"embeddings must be 2-D"),
        (dict(embeddings=X.long()), TypeError, r"embeddings must be a floating-point tensor"),
        (dict(embeddings=X.tolist()), TypeError, r"embeddings must be a torch.Tensor"),
        (dict(labels=Y[:, None]), ValueError, r"labels must be 1-D"),
        (dict(labels=Y.float()), TypeError, r"labels must be an integer tensor"),
        (dict(labels=Y.bool()), TypeError, r"labels must be an integer tensor"),
        (dict(labels=Y[:5]), ValueError, r"labels must have length 6 \(the rows of embeddings\), got 5"),
        (dict(labels=[0, 0, 1, 1, 2, 2]), TypeError, r"labels must be a torch.Tensor"),
        (dict(num_bins=1), ValueError, r"num_bins must be >= 2, got 1"),
        (dict(num_bins=2.5), TypeError, r"num_bins must be an int"),
        (dict(score_range=(1.0, -1.0)), ValueError, r"score_range must have lo < hi, got \(1.0, -1.0\)"),
        (dict(score_range=(0.5, 0.5)), ValueError, r"score_range must have lo < hi"),
        (dict(score_range=(-math.inf, 1.0)), ValueError, r"score_range must be finite"),
        (dict(score_range="ab"), TypeError, r"score_range must be a pair of numbers"),
        (dict(variant="ap"), ValueError, r"variant must be one of .* got 'ap'"),
        (dict(backend="gpu"), ValueError, r"backend must be one of .* got 'gpu'"),
        (dict(chunk_size=0), ValueError, r"chunk_size must be >= 1 \(or None\), got 0"),
        (dict(chunk_size=2.0), TypeError, r"chunk_size must be None or an int"),
        (dict(ref_embeddings=X), ValueError, r"ref_embeddings was given without ref_labels"),
        (dict(ref_labels=Y), ValueError, r"ref_labels was given without ref_embeddings"),
        (dict(ref_embeddings=unit_rows(4, 5), ref_labels=Y[:4]), ValueError, r"ref_embeddings must have dim 3"),
        (dict(ref_embeddings=X.float(), ref_labels=Y), TypeError, r"ref_embeddings must have the dtype of embeddings"),
        (dict(ref_embeddings=X, ref_labels=Y[:4]), ValueError, r"ref_labels must have length 6"),
        (dict(embeddings=X[:1], labels=Y[:1]), ValueError, r"embeddings must have at least 2 rows when no reference set"),
        (dict(embeddings=X.new_empty(0, 3), labels=Y[:0]), ValueError, r"embeddings must have at least 2 rows"),
        (dict(ref_embeddings=X.new_empty(0, 3), ref_labels=Y[:0]), ValueError, r"ref_embeddings must have at least one row"),
        (dict(query_weights=torch.ones(5)), ValueError, r"query_weights must have shape \(6,\)"),
        (dict(query_weights=-torch.ones(6)), ValueError, r"query_weights must be finite and >= 0"),
        (dict(query_weights=torch.full((6,), math.nan)), ValueError, r"query_weights must be finite and >= 0"),
        (dict(query_weights=[1.0] * 6), TypeError, r"query_weights must be a torch.Tensor"),
    ],
)
@pytest.mark.parametrize("backend", ["torch", pytest.param("cpu", marks=needs_cpu_kernel)])
def test_bad_arguments(kwargs, exc, match, backend):
    args = dict(embeddings=X, labels=Y, backend=backend)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        apl.ap_loss(**args)


@pytest.mark.parametrize("backend", ["torch", pytest.param("cpu", marks=needs_cpu_kernel)])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("where", ["embeddings", "ref_embeddings"])
def test_non_finite_embeddings(backend, bad, where):
    x = X.clone()
    ref = None if where == "embeddings" else X.clone()
    (x if ref is None else ref)[2, 1] = bad
    with pytest.raises(ValueError, match=r"(ref_)?embeddings .*contain.* NaN or Inf"):
        apl.ap_loss(x, Y, ref, None if ref is None else Y, backend=backend)


@pytest.mark.parametrize("backend", ["torch", pytest.param("cpu", marks=needs_cpu_kernel)])
def test_non_finite_scores(backend):
    s = torch.zeros(2, 3)
    s[1, 2] = math.nan
    with pytest.raises(ValueError, match=r"scores contain.* NaN or Inf"):
        apl.quantized_ap(s, torch.ones(2, 3, dtype=torch.bool), backend=backend)


@pytest.mark.parametrize(
    "relevance,exc,match",
    [
        (torch.ones(2, 4, dtype=torch.bool), ValueError, r"relevance must have the shape of scores \(2, 3\), got \(2, 4\)"),
        (torch.full((2, 3), 2), ValueError, r"relevance must hold only 0 and 1"),
        ([[1, 0, 0], [0, 1, 0]], TypeError, r"relevance must be a torch.Tensor"),
    ],
)
def test_bad_relevance(relevance, exc, match):
    with pytest.raises(exc, match=match):
        apl.quantized_ap(torch.zeros(2, 3), relevance)


def test_relevance_as_zero_one_integers_is_accepted():
    s = torch.tensor([[0.9, 0.1, -0.5]])
    a = apl.quantized_ap(s, torch.tensor([[1, 0, 1]]))
    b = apl.quantized_ap(s, torch.tensor([[True, False, True]]))
    assert torch.equal(a, b)


def test_scores_must_be_2d():
    with pytest.raises(ValueError, match=r"scores must be 2-D"):
        apl.quantized_ap(torch.zeros(3), torch.zeros(3, dtype=torch.bool))


@needs_cpu_kernel
def test_explicit_backend_on_wrong_device_is_refused():
    with pytest.raises(ValueError, match=r"backend='cuda' cannot run on tensors on cpu"):
        apl.ap_loss(X, Y, backend="cuda")


def test_module_validates_at_construction():
    with pytest.raises(ValueError, match=r"num_bins must be >= 2"):
        apl.APLoss(num_bins=0)
    with pytest.raises(ValueError, match=r"variant must be one of"):
        apl.APLoss(variant="tie")
    with pytest.raises(ValueError, match=r"backend must be one of"):
        apl.APLoss(backend="tpu")
    with pytest.raises(ValueError, match=r"chunk_size must be >= 1"):
        apl.APLoss(chunk_size=-3)


@needs_cpu_kernel
def test_direct_op_calls_are_checked():
    with pytest.raises(ValueError, match=r"num_bins must be >= 2"):
        torch.ops.apl.ap_self(X, Y, 1, -1.0, 1.0, 0, 0)
    with pytest.raises(ValueError, match=r"labels must have shape"):
        torch.ops.apl.ap_self(X, Y[:3], 5, -1.0, 1.0, 0, 0)
    with pytest.raises(TypeError, match=r"labels must be int64"):
        torch.ops.apl.ap_self(X, Y.int(), 5, -1.0, 1.0, 0, 0)
    with pytest.raises(TypeError, match=r"relevance must be bool"):
        torch.ops.apl.ap_scores(X, torch.ones_like(X), 5, -1.0, 1.0, 0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(labels=Y.to("meta")), r"labels is on meta but embeddings is on cpu"),
        (dict(ref_embeddings=X.to("meta"), ref_labels=Y), r"ref_embeddings is on meta but embeddings is on cpu"),
        (dict(ref_embeddings=X, ref_labels=Y.to("meta")), r"ref_labels is on meta but embeddings is on cpu"),
        (dict(query_weights=torch.ones(6, device="meta")), r"query_weights is on meta but embeddings is on cpu"),
    ],
)
def test_device_mismatch_names_the_tensor(kwargs, match):
    """Tensors on different devices (the meta device stands in for a second device)."""
    args = dict(embeddings=X, labels=Y)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        apl.ap_loss(**args)


def test_relevance_on_another_device():
    with pytest.raises(ValueError, match=r"relevance is on meta but scores is on cpu"):
        apl.quantized_ap(torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool, device="meta"))


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(k=()), ValueError, r"k must hold at least one value"),
        (dict(k=tuple(range(1, 34))), ValueError, r"k must hold at most 32 values \(the CUDA kernel's limit, kept on every backend\), got 33"),
        (dict(k=(1, 0)), ValueError, r"every k must be an int >= 1, got 0"),
        (dict(k=1.5), TypeError, r"k must be an int or a sequence of ints, got float"),
        (dict(k=(1, 2), k_temperature=(1.0,)), ValueError, r"k_temperature must be one number or one per k \(2\), got 1"),
        (dict(k=(1, 2), k_temperature=(1.0, -1.0)), ValueError, r"k_temperature must be finite and > 0, got -1.0"),
    ],
)
def test_recall_k_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        apl.recall_at_k_loss(X, Y, **kwargs)


def test_thirty_two_k_values_run():
    assert torch.isfinite(apl.recall_at_k_loss(X, Y, k=tuple(range(1, 33))))
