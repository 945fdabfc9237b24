"""apl.train.step: the features run per chunk, the batch-coupled head and the loss once on the whole
batch, so multistage backpropagation computes exactly the step of a plain one, BatchNorm
statistics included (torchrun: tests/test_distributed.py)."""
import copy

import pytest
import torch

import apl
from apl.nn import RetrievalNet
from apl.train.step import HeadLoss, TrainStep


def _model():
    torch.manual_seed(0)
    return RetrievalNet("tiny_cnn", dim=16, in_channels=1).double()


def _batch(n=24):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 12, 12, generator=g, dtype=torch.float64), torch.arange(n) % 6


@pytest.mark.parametrize("chunk_size", [1, 5, 24])
def test_multistage_step_equals_the_plain_step(chunk_size):
    x, y = _batch()
    plain, chunked = _model(), _model()
    loss = apl.APLoss(backend="torch")
    a = TrainStep(plain, loss, torch.device("cpu"))(x, y)
    b = TrainStep(chunked, loss, torch.device("cpu"), chunk_size=chunk_size)(x, y)
    torch.testing.assert_close(b, a, rtol=0, atol=1e-12)
    for (name, p), q in zip(plain.named_parameters(), chunked.parameters()):
        assert p.grad is not None and q.grad is not None, name
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-9, atol=1e-12, msg=name)
    for (name, p), q in zip(plain.named_buffers(), chunked.buffers()):
        torch.testing.assert_close(q, p, rtol=1e-12, atol=1e-12, msg=name)  # one BatchNorm update, whole batch
    assert int(chunked.head.center.num_batches_tracked) == 1


def test_the_head_sees_the_whole_batch_not_a_chunk():
    """Control: normalising each chunk on its own (BatchNorm inside the chunked model) would give
    another loss, which is what the split avoids."""
    x, y = _batch()
    model = _model()
    whole = apl.APLoss(backend="torch")(model(x), y)
    per_chunk = apl.APLoss(backend="torch")(torch.cat([model(x[i:i + 6]) for i in range(0, 24, 6)]), y)
    assert not torch.allclose(whole, per_chunk, atol=1e-6)
    step = TrainStep(copy.deepcopy(model), apl.APLoss(backend="torch"), torch.device("cpu"), chunk_size=6)
    torch.testing.assert_close(step(x, y), whole.detach(), rtol=0, atol=1e-12)


def test_head_loss_keeps_the_last_descriptors():
    x, y = _batch(8)
    model = _model()
    hl = HeadLoss(model.head, apl.APLoss(backend="torch"))
    loss = hl(model.features(x), y)
    assert hl.last_descriptors.shape == (8, 16) and not hl.last_descriptors.requires_grad
    torch.testing.assert_close(loss, apl.APLoss(backend="torch")(hl.last_descriptors, y))


def test_bf16_features_and_float32_head():
    x, y = _batch(16)
    model = RetrievalNet("tiny_cnn", dim=8, in_channels=1)
    seen = {}

    def loss(d, labels):
        seen["dtype"] = d.dtype
        return apl.APLoss(backend="torch")(d, labels)

    step = TrainStep(model, loss, torch.device("cpu"), amp_dtype=torch.bfloat16)
    out = step(x.float(), y)
    assert seen["dtype"] == torch.float32 and torch.isfinite(out)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
