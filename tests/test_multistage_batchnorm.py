"""Multistage backpropagation on BatchNorm networks shaped like the paper's (residual blocks with
BatchNorm after every convolution), in float64 and in training mode.

With BatchNorm in training mode a descriptor depends on the images it is normalised with, so the
step multistage computes is plain backpropagation through the same chunked forward (each chunk
normalised with its own statistics), with the running statistics updated once, from the whole
batch. With the batch in one chunk it is plain backpropagation on the whole batch. The trainer's
ResNets keep their BatchNorm frozen (eval mode): then any chunking equals the whole batch."""
from __future__ import annotations

import copy
import importlib.util

import pytest
import torch
from torch import nn

import apl
from apl.multistage import multistage_step

from test_multistage import assert_close_lists, grads, plain_step


class Block(nn.Module):
    """conv-BN-ReLU-conv-BN plus a shortcut (1x1 conv + BN when the shape changes), then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                                  nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.short = (nn.Identity() if stride == 1 and cin == cout else
                      nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x):
        return torch.relu(self.body(x) + self.short(x))


def small_resnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                        Block(8, 8, 1), Block(8, 16, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 6))
    for m in net.modules():  # running statistics away from (0, 1), so that a wrong update shows
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias, std=0.1)
    return net.double()


def _data(n: int = 14):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 8, 8, generator=g, dtype=torch.float64), torch.arange(n) % 4


def _loss(d, y):
    return apl.APLoss(backend="torch")(d, y)


def _bn_buffers(model):
    return [b.detach().clone() for n, b in model.named_buffers() if "running" in n]


@pytest.mark.parametrize("chunk_size", [3, 5, 14])
def test_train_mode_equals_plain_backprop_through_the_same_chunks(chunk_size):
    x, y = _data()
    model = small_resnet()
    ref = copy.deepcopy(model)
    whole = copy.deepcopy(model)
    loss, d = multistage_step(model, x, y, _loss, chunk_size)
    ref_loss, ref_d = plain_step(ref, x, y, _loss, chunk_size=chunk_size)
    torch.testing.assert_close(loss, ref_loss, atol=1e-12, rtol=0)
    torch.testing.assert_close(d, ref_d, atol=1e-12, rtol=0)
    assert_close_lists(grads(model), grads(ref), atol=1e-10)
    assert all(g.abs().sum() > 0 for g in grads(model))  # every layer, BatchNorm affines included, learns
    # Running statistics: one update from the whole batch, as a forward of the whole batch gives
    # (each BatchNorm's input is that of the chunked forward, so compare where it is exact: the first).
    whole(x)
    torch.testing.assert_close(model[1].running_mean, whole[1].running_mean, atol=1e-12, rtol=0)
    torch.testing.assert_close(model[1].running_var, whole[1].running_var, atol=1e-12, rtol=0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert int(m.num_batches_tracked) == 1 and m.training


def test_one_chunk_is_plain_backprop_on_the_whole_batch():
    x, y = _data()
    model, ref = small_resnet(), small_resnet()
    multistage_step(model, x, y, _loss, 64)
    plain_step(ref, x, y, _loss)
    assert_close_lists(grads(model), grads(ref), atol=1e-10)
    assert_close_lists(_bn_buffers(model), _bn_buffers(ref), atol=1e-12)


def test_chunks_differ_from_the_whole_batch_in_train_mode():
    """Control: the chunked statistics really change the step (so the tests above can fail)."""
    x, y = _data()
    a, b = small_resnet(), small_resnet()
    multistage_step(a, x, y, _loss, 5)
    plain_step(b, x, y, _loss)
    assert not torch.allclose(grads(a)[0], grads(b)[0], atol=1e-8)


@pytest.mark.parametrize("chunk_size", [3, 5])
def test_frozen_batchnorm_equals_the_whole_batch(chunk_size):
    x, y = _data()
    model = small_resnet()
    ref = copy.deepcopy(model).eval()
    before = _bn_buffers(model)
    multistage_step(model, x, y, _loss, chunk_size, freeze_bn=True)
    plain_step(ref, x, y, _loss)
    assert_close_lists(grads(model), grads(ref), atol=1e-10)
    assert_close_lists(_bn_buffers(model), before, atol=0)


needs_torchvision = pytest.mark.skipif(importlib.util.find_spec("torchvision") is None,
                                       reason="torchvision is not installed (the ResNet backbones need it)")


@needs_torchvision
@pytest.mark.parametrize("freeze", [True, False])
def test_trainer_step_on_a_torchvision_resnet(freeze):
    """The trainer's step (apl.train.step: features per chunk, head and loss on the whole batch) on
    RetrievalNet(resnet18): frozen BatchNorm (the trainer's default) equals the whole batch; BatchNorm
    in training mode equals the same chunks forwarded with a graph."""
    from apl.nn import RetrievalNet
    from apl.nn.backbones import ResNetBackbone
    from apl.train.step import TrainStep

    def net():
        torch.manual_seed(0)
        return RetrievalNet(ResNetBackbone("resnet18", freeze_batchnorm=freeze), dim=8).double()

    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(8, 3, 32, 32, generator=g, dtype=torch.float64), torch.arange(8) % 4
    chunked, plain = net(), net()
    loss_fn = apl.APLoss(backend="torch")
    TrainStep(chunked, loss_fn, torch.device("cpu"), chunk_size=3)(x, y)
    if freeze:
        TrainStep(plain, loss_fn, torch.device("cpu"))(x, y)
    else:  # the reference: the same chunks with a graph, the head on the whole batch
        pooled = torch.cat([plain.features(c) for c in x.split(3)])
        loss_fn(plain.head(pooled), y).backward()
    for (name, p), q in zip(plain.named_parameters(), chunked.parameters()):
        if p.grad is None:
            assert q.grad is None, name
            continue
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-7, atol=1e-10, msg=name)
