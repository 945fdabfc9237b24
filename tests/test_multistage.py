"""Tests of apl.multistage_step against plain backpropagation."""
from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
import torch.nn.functional as F
from torch import nn

from helpers import listwise_loss
from apl.multistage import MultistageStep, multistage_step


def mlp(dropout: float = 0.0, bn: bool = False, dtype=torch.float64) -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(6, 16)]
    if bn:
        layers.append(nn.BatchNorm1d(16))
    layers += [nn.Tanh()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers += [nn.Linear(16, 5)]
    return nn.Sequential(*layers).to(dtype)


def data(batch: int = 12, dtype=torch.float64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 6, generator=g, dtype=dtype)
    y = torch.arange(batch) % 4
    return x, y


def grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters()]


def plain_step(model, x, y, loss_fn, chunk_size=None, autocast_dtype=None):
    """Reference: a graph through the whole batch (optionally forwarded chunk by chunk)."""
    chunks = [x] if chunk_size is None else x.split(chunk_size)
    outs = []
    for c in chunks:
        if autocast_dtype is None:
            outs.append(model(c))
        else:
            with torch.autocast("cpu", dtype=autocast_dtype):
                outs.append(model(c))
    d = torch.cat(outs).float() if autocast_dtype is not None else torch.cat(outs)
    loss = loss_fn(d, y)
    loss.backward()
    return loss.detach(), d.detach()


def assert_close_lists(a, b, atol, rtol=0.0):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, atol=atol, rtol=rtol)


@pytest.mark.parametrize("chunk_size", [1, 3, 5, 12, 50])
def test_grads_equal_plain_backprop_float64(chunk_size):
    torch.manual_seed(0)
    model = mlp()
    ref = copy.deepcopy(model)
    x, y = data(12)
    ref_loss, ref_d = plain_step(ref, x, y, listwise_loss)
    loss, d = multistage_step(model, x, y, listwise_loss, chunk_size)
    assert loss.shape == () and not loss.requires_grad and not d.requires_grad
    torch.testing.assert_close(loss, ref_loss, atol=1e-12, rtol=0)
    torch.testing.assert_close(d, ref_d, atol=1e-12, rtol=0)
    assert_close_lists(grads(model), grads(ref), atol=1e-10)


@settings(max_examples=15, deadline=None)
@given(batch=st.integers(5, 17), chunk_size=st.integers(1, 20), seed=st.integers(0, 2**16))
def test_grads_equal_plain_backprop_any_split(batch, chunk_size, seed):
    # batch >= 5: labels are arange % 4, so some query has a positive and the loss is defined
    torch.manual_seed(seed)
    model = mlp()
    ref = copy.deepcopy(model)
    x, y = data(batch, seed=seed)
    ref_loss, _ = plain_step(ref, x, y, listwise_loss)
    loss, _ = multistage_step(model, x, y, listwise_loss, chunk_size)
    torch.testing.assert_close(loss, ref_loss, atol=1e-12, rtol=0)
    assert_close_lists(grads(model), grads(ref), atol=1e-10)


def test_gradients_accumulate_and_class_wrapper():
    torch.manual_seed(1)
    model = mlp()
    ref = copy.deepcopy(model)
    x, y = data(10)
    plain_step(ref, x, y, listwise_loss)
    step = MultistageStep(model, listwise_loss, chunk_size=4, device="cpu")
    step(x, y)
    step(x, y)  # the step never zeroes .grad: that stays the caller's (optimizer.zero_grad)
    assert_close_lists(grads(model), [2 * g for g in grads(ref)], atol=1e-10)


def test_dropout_matches_chunked_forward_under_same_rng():
    torch.manual_seed(2)
    model = mlp(dropout=0.5)
    ref = copy.deepcopy(model)
    x, y = data(11)

    torch.manual_seed(123)
    ref_loss, ref_d = plain_step(ref, x, y, listwise_loss, chunk_size=4)
    ref_next = torch.rand(3)

    torch.manual_seed(123)
    loss, d = multistage_step(model, x, y, listwise_loss, 4)
    # The RNG ends where the chunked plain forward leaves it (stage 3 replays, then restores).
    torch.testing.assert_close(torch.rand(3), ref_next, atol=0, rtol=0)
    torch.testing.assert_close(loss, ref_loss, atol=1e-12, rtol=0)
    torch.testing.assert_close(d, ref_d, atol=1e-12, rtol=0)
    assert_close_lists(grads(model), grads(ref), atol=1e-10)

    # Dropout really is active: another random state gives other gradients.
    other = copy.deepcopy(ref)
    other.zero_grad()
    torch.manual_seed(7)
    plain_step(other, x, y, listwise_loss, chunk_size=4)
    assert not torch.allclose(grads(other)[0], grads(ref)[0])


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm_running_stats_single_update(momentum):
    torch.manual_seed(3)
    model = mlp(bn=True)
    bn = model[1]
    bn.momentum = momentum
    bn.running_mean.normal_()  # start away from (0, 1) so the blend with old values is visible
    bn.running_var.uniform_(0.5, 2.0)
    whole = copy.deepcopy(model)
    chunked = copy.deepcopy(model)
    x, y = data(12)
    mean0, var0 = bn.running_mean.clone(), bn.running_var.clone()

    multistage_step(model, x, y, listwise_loss, 5)  # chunks 5, 5, 2

    # Expected: one update with the whole-batch mean and unbiased variance of the BN input.
    with torch.no_grad():
        h = model[0](x)
    f = 0.1 if momentum is not None else 1.0  # cumulative average: 1 / num_batches_tracked
    torch.testing.assert_close(bn.running_mean, (1 - f) * mean0 + f * h.mean(0), atol=1e-12, rtol=0)
    torch.testing.assert_close(bn.running_var, (1 - f) * var0 + f * h.var(0, unbiased=True), atol=1e-12, rtol=0)
    assert int(bn.num_batches_tracked) == 1
    # ... which is what a plain forward of the whole batch gives.
    whole(x)
    torch.testing.assert_close(bn.running_mean, whole[1].running_mean, atol=1e-12, rtol=0)
    torch.testing.assert_close(bn.running_var, whole[1].running_var, atol=1e-12, rtol=0)

    # Gradients: each chunk normalised with its own statistics, as in a chunked plain forward.
    plain_step(chunked, x, y, listwise_loss, chunk_size=5)
    assert_close_lists(grads(model), grads(chunked), atol=1e-10)
    assert bn.training


def test_batchnorm2d_conv_running_stats():
    torch.manual_seed(4)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    ).double()
    whole = copy.deepcopy(net)
    x = torch.randn(9, 3, 5, 5, dtype=torch.float64)
    y = torch.arange(9) % 3
    multistage_step(net, x, y, listwise_loss, 4)
    whole(x)
    torch.testing.assert_close(net[1].running_mean, whole[1].running_mean, atol=1e-12, rtol=0)
    torch.testing.assert_close(net[1].running_var, whole[1].running_var, atol=1e-12, rtol=0)
    assert int(net[1].num_batches_tracked) == 1


def test_freeze_bn_equals_whole_batch_in_eval_mode():
    torch.manual_seed(5)
    model = mlp(bn=True)
    model[1].running_mean.normal_()
    ref = copy.deepcopy(model)
    ref[1].eval()
    x, y = data(12)
    stats0 = (model[1].running_mean.clone(), model[1].running_var.clone())
    plain_step(ref, x, y, listwise_loss)
    loss, _ = multistage_step(model, x, y, listwise_loss, 5, freeze_bn=True)
    assert model[1].training  # mode restored
    torch.testing.assert_close(model[1].running_mean, stats0[0], atol=0, rtol=0)
    torch.testing.assert_close(model[1].running_var, stats0[1], atol=0, rtol=0)
    assert int(model[1].num_batches_tracked) == 0
    assert model[1].weight.grad is not None and model[1].weight.grad.abs().sum() > 0
    assert_close_lists(grads(model), grads(ref), atol=1e-10)


class CountingLayer(nn.Module):
    """Updates a buffer in forward, as a stateful layer would."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

    def forward(self, x):
        self.calls.add_(1)
        return x


def test_other_buffers_updated_by_stage1_only():
    model = nn.Sequential(CountingLayer(), nn.Linear(6, 3)).double()
    x, y = data(10)
    multistage_step(model, x, y, listwise_loss, 4)  # 3 chunks
    assert int(model[0].calls) == 3


def test_grad_scaler_scales_parameter_grads():
    torch.manual_seed(6)
    model = mlp(dtype=torch.float32)
    ref = copy.deepcopy(model)
    x, y = data(12, dtype=torch.float32)
    ref_loss, _ = plain_step(ref, x, y, listwise_loss)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    loss, _ = multistage_step(model, x, y, listwise_loss, 5, scaler=scaler)
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=1e-6)  # the unscaled loss
    assert_close_lists(grads(model), [1024.0 * g for g in grads(ref)], atol=1e-5, rtol=1e-5)


def test_autocast_bf16_matches_chunked_autocast_forward():
    torch.manual_seed(7)
    model = mlp(dtype=torch.float32)
    ref = copy.deepcopy(model)
    x, y = data(12, dtype=torch.float32)
    ref_loss, ref_d = plain_step(ref, x, y, listwise_loss, chunk_size=5, autocast_dtype=torch.bfloat16)
    loss, d = multistage_step(model, x, y, listwise_loss, 5, amp_dtype=torch.bfloat16)
    assert d.dtype == torch.float32
    torch.testing.assert_close(d, ref_d, atol=0, rtol=0)
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=1e-6)
    assert_close_lists(grads(model), grads(ref), atol=1e-5, rtol=1e-4)


def test_loss_constant_in_descriptors_gives_zero_grads():
    model = mlp()
    x, y = data(6)
    loss, _ = multistage_step(model, x, y, lambda d, l: torch.zeros((), dtype=d.dtype), 4)
    assert float(loss) == 0.0
    assert all(float(g.abs().sum()) == 0.0 for g in grads(model))


def test_aploss_backend_torch():
    apl = pytest.importorskip("apl")
    if not hasattr(apl, "APLoss"):
        pytest.skip("apl.APLoss not available yet")
    loss_fn = apl.APLoss(backend="torch")
    torch.manual_seed(8)
    wrapped = nn.Sequential(mlp(), Normalize())  # the AP loss expects L2-normalised rows
    ref = copy.deepcopy(wrapped)
    x, y = data(16)
    ref_loss, _ = plain_step(ref, x, y, loss_fn)
    loss, _ = multistage_step(wrapped, x, y, loss_fn, 5)
    torch.testing.assert_close(loss, ref_loss, atol=1e-12, rtol=0)
    assert_close_lists(grads(wrapped), grads(ref), atol=1e-10)


class Normalize(nn.Module):
    def forward(self, x):
        return F.normalize(x, dim=1)


class Flat(nn.Module):
    def forward(self, x):
        return x.unsqueeze(1)


@pytest.mark.parametrize("chunk_size, exc, match", [
    (0, ValueError, "chunk_size must be >= 1, got 0"),
    (-3, ValueError, "chunk_size must be >= 1, got -3"),
    (2.0, TypeError, "chunk_size must be an int"),
    (True, TypeError, "chunk_size must be an int"),
])
def test_bad_chunk_size(chunk_size, exc, match):
    x, y = data(6)
    with pytest.raises(exc, match=match):
        multistage_step(mlp(), x, y, listwise_loss, chunk_size)
    with pytest.raises(exc, match=match):
        MultistageStep(mlp(), listwise_loss, chunk_size)


def test_model_output_not_2d():
    x, y = data(6)
    model = nn.Sequential(mlp(), Flat())
    with pytest.raises(ValueError, match=r"model output must be 2-D \(batch, dim\).*\(4, 1, 5\)"):
        multistage_step(model, x, y, listwise_loss, 4)


def test_model_output_not_tensor():
    x, y = data(6)

    class Dict(nn.Module):
        def forward(self, x):
            return {"d": x}

    with pytest.raises(TypeError, match="model output must be a torch.Tensor"):
        multistage_step(Dict(), x, y, listwise_loss, 4)


def test_labels_of_another_length():
    x, y = data(6)
    with pytest.raises(ValueError, match=r"labels must have one entry per input: inputs has batch size 6, labels has shape \(5,\)"):
        multistage_step(mlp(), x, y[:5], listwise_loss, 4)
    with pytest.raises(TypeError, match="labels must be a torch.Tensor"):
        multistage_step(mlp(), x, [0, 1, 2, 3, 4, 5], listwise_loss, 4)


def test_loss_not_scalar():
    x, y = data(6)
    with pytest.raises(ValueError, match=r"loss_fn must return a scalar tensor, got \(6,\)"):
        multistage_step(mlp(), x, y, lambda d, l: d.sum(1), 4)


def test_error_restores_batchnorm_mode():
    # A failing loss must not leave BatchNorm frozen.
    model = mlp(bn=True)
    x, y = data(6)
    with pytest.raises(ValueError):
        multistage_step(model, x, y, lambda d, l: d.sum(1), 4, freeze_bn=True)
    assert model[1].training
