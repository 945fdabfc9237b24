"""Embeddings that are not unit-norm. `APLoss` normalises by default (half precision in float32); the
functional API warns once per process, loss family and argument when rows are far from unit norm,
saying why it matters to that loss, and the warning points at the user's line."""
import warnings

import pytest
import torch

import apl
from apl.ops import notices
from helpers import random_labels, unit_rows


@pytest.fixture
def fresh_warning():
    notices.reset()  # conftest does it for every test too; kept to say what these tests rely on


def test_aploss_normalizes_by_default():
    x, y = unit_rows(20, 4, seed=50), random_labels(20, 3, seed=50)
    raw = x * 10.0
    assert apl.APLoss().normalize is True
    torch.testing.assert_close(apl.APLoss(backend="torch")(raw, y), apl.ap_loss(x, y, backend="torch"))
    # raw norm-10 rows without normalisation: most scores beyond 1, the loss is another number
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = apl.APLoss(backend="torch", normalize=False)(raw, y)
    assert not torch.allclose(other, apl.ap_loss(x, y, backend="torch"))
    assert "normalize=True" in repr(apl.APLoss())


def test_normalize_gradient_is_that_of_the_normalised_loss():
    x, y = unit_rows(12, 3, seed=51), random_labels(12, 3, seed=51)
    raw = (x * torch.linspace(0.5, 4, 12)[:, None]).requires_grad_()
    torch.autograd.gradcheck(lambda e: apl.ap_loss(e, y, backend="torch", normalize=True), (raw,))
    r2 = raw.detach().clone().requires_grad_()
    apl.ap_loss(r2, y, backend="torch", normalize=True).backward()
    r3 = raw.detach().clone().requires_grad_()
    apl.ap_loss(torch.nn.functional.normalize(r3, dim=1), y, backend="torch").backward()
    torch.testing.assert_close(r2.grad, r3.grad)


def test_warns_once_for_rows_far_from_unit_norm(fresh_warning):
    x, y = unit_rows(16, 4, seed=52), random_labels(16, 3, seed=52)
    with pytest.warns(UserWarning, match=r"rows of embeddings are not L2-normalised \(norms from 10 to 10\).*normalize=True"):
        apl.ap_loss(x * 10, y, backend="torch")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apl.ap_loss(x * 10, y, backend="torch")  # once per process
        apl.per_query_ap(x * 10, y, backend="torch")


@pytest.mark.parametrize("scale", [1.0, 1.01, 0.97])
def test_no_warning_for_unit_rows(fresh_warning, scale):
    x, y = unit_rows(16, 4, seed=53), random_labels(16, 3, seed=53)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apl.ap_loss(x * scale, y, backend="torch")
        apl.ap_loss(x.to(torch.bfloat16), y, backend="torch")
        apl.ap_loss(x * 10, y, backend="torch", score_range=(-10.0, 10.0))  # raw dot products on purpose
        apl.ap_loss(x * 10, y, backend="torch", normalize=True)
    assert not notices.given("norm:")


def test_reference_set_rows_are_checked_too(fresh_warning):
    q, x, y = unit_rows(4, 3, seed=54), unit_rows(9, 3, seed=55), random_labels(9, 2, seed=55)
    with pytest.warns(UserWarning, match="rows of ref_embeddings are not L2-normalised"):
        apl.ap_loss(q, y[:4], x * 0.2, y, backend="torch")


def test_nonfinite_rows_raise_rather_than_warn(fresh_warning):
    x, y = unit_rows(6, 3, seed=56), random_labels(6, 2, seed=56)
    x[0, 0] = float("inf")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="NaN or Inf"):
            apl.ap_loss(x, y, backend="torch")


def test_quantized_ap_names_the_shape_it_expects():
    with pytest.raises(ValueError, match=r"scores must be 2-D \(B, N: one row of scores per query\), got shape \(5,\)"):
        apl.quantized_ap(torch.rand(5), torch.ones(5, dtype=torch.bool))


def test_rank_losses_warn_about_their_temperature_not_bins(fresh_warning):
    x, y = unit_rows(16, 4, seed=57), random_labels(16, 3, seed=57)
    with pytest.warns(UserWarning) as got:
        apl.smooth_ap_loss(x * 10, y, backend="torch")
    text = str(got[0].message)
    assert "Smooth-AP compares scores through sigmoids of width `temperature`" in text
    assert "bins" not in text and "score_range" not in text
    with pytest.warns(UserWarning, match="the Recall@k surrogate compares scores through sigmoids"):
        apl.recall_at_k_loss(x * 10, y, backend="torch")


def test_one_case_does_not_hide_another(fresh_warning):
    """Once per (loss family, argument): the AP loss's warning about the embeddings does not silence
    the rank loss's, nor the one about a reference set."""
    q, x, y = unit_rows(6, 3, seed=58), unit_rows(12, 3, seed=59), random_labels(12, 3, seed=59)
    with pytest.warns(UserWarning, match="rows of embeddings .* the AP loss bins"):
        apl.ap_loss(x * 5, y, backend="torch")
    with pytest.warns(UserWarning, match="rows of embeddings .* Smooth-AP"):
        apl.smooth_ap_loss(x * 5, y, backend="torch")
    with pytest.warns(UserWarning, match="rows of ref_embeddings .* the AP loss bins"):
        apl.ap_loss(q, y[:6], x * 5, y, backend="torch")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apl.ap_loss(x * 5, y, backend="torch")  # the same case again: silent


def test_warnings_point_at_the_users_line(fresh_warning):
    x, y = unit_rows(16, 4, seed=60), random_labels(16, 3, seed=60)
    with pytest.warns(UserWarning) as got:
        apl.ap_loss(x * 10, y, backend="torch")
    assert got[0].filename == __file__
    with pytest.warns(UserWarning) as got:  # through nn.Module.__call__ and the module's forward
        apl.SmoothAPLoss(normalize=False, backend="torch")(x * 10, y)
    assert got[0].filename == __file__
    with pytest.warns(UserWarning, match="have no positive") as got:  # a batch check, deeper in apl
        apl.ap_loss(x, torch.arange(16), backend="torch")
    assert got[0].filename == __file__


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_rows_are_normalised_in_float32(dtype):
    from apl.functional.inputs import unit_rows as normalise

    g = torch.Generator().manual_seed(61)
    x = (torch.randn(64, 32, generator=g) * 3).to(dtype)
    once = torch.nn.functional.normalize(x.float(), dim=1).to(dtype)  # one rounding, at the end
    assert torch.equal(normalise(x), once)
    own = torch.nn.functional.normalize(x, dim=1)  # norm and division rounded in the half dtype
    exact = torch.nn.functional.normalize(x.double(), dim=1)
    assert (normalise(x).double() - exact).abs().max() <= (own.double() - exact).abs().max()
    y = random_labels(64, 8, seed=61)
    loss = apl.ap_loss(x, y, backend="torch", normalize=True)
    assert loss.dtype == torch.float32  # half inputs: the loss is computed in float32
    torch.testing.assert_close(loss, apl.ap_loss(once, y, backend="torch"), rtol=0, atol=0)
