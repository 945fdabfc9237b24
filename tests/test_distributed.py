"""Global-batch training across two gloo processes on CPU, against one process on the whole batch."""
from __future__ import annotations

import os
import socket
import time
import traceback
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

from apl.distributed import GlobalBatchLoss, all_gather_embeddings
from apl.multistage import multistage_step
from apl.nn import RetrievalNet, SmallCNN
from apl.train.step import TrainStep
from helpers import listwise_loss

WORLD = 2
# A safety net against a hang, not a speed test: a normal run takes a few seconds, but a loaded CI
# machine can be many times slower (APL_TEST_TIMEOUT_SCALE multiplies it further).
TIMEOUT_S = 300.0 * float(os.environ.get("APL_TEST_TIMEOUT_SCALE", "1"))
# Local batch sizes: unequal across ranks on purpose (the gather pads), but the same number of
# chunks (2) with MS_CHUNK, as DDP needs.
PLAIN_SIZES = (5, 3)
MS_SIZES = (5, 4)
MS_CHUNK = 3


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 5)).double()


def make_bn_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Linear(16, 5)).double()
    model[1].running_mean.uniform_(-0.5, 0.5)
    model[1].running_var.uniform_(0.5, 2.0)
    return model


STEP_SIZES = (4, 4)  # apl.train.step: the same number of chunks of 2 on both ranks


def make_retrieval_net() -> nn.Module:
    torch.manual_seed(0)
    return RetrievalNet(SmallCNN(1, widths=(4, 8)), dim=5).double()


def step_batch():
    g = torch.Generator().manual_seed(2)
    n = sum(STEP_SIZES)
    return torch.rand(n, 1, 8, 8, generator=g, dtype=torch.float64), torch.arange(n) % 3


def global_batch(sizes):
    g = torch.Generator().manual_seed(1)
    n = sum(sizes)
    return torch.randn(n, 6, generator=g, dtype=torch.float64), torch.arange(n) % 3


def local_slice(sizes, rank):
    start = sum(sizes[:rank])
    return slice(start, start + sizes[rank])


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=TIMEOUT_S)
    )
    res: dict = {}
    try:
        # 1. Plain training: DDP + loss over the gathered global batch.
        x, y = global_batch(PLAIN_SIZES)
        sl = local_slice(PLAIN_SIZES, rank)
        model = nn.parallel.DistributedDataParallel(make_model())
        d = model(x[sl])
        all_d, all_y = all_gather_embeddings(d, y[sl])
        res["gathered"] = all_d.detach()
        res["gathered_labels"] = all_y
        loss = listwise_loss(all_d, all_y)
        loss.backward()
        res["plain_loss"] = loss.detach()
        res["plain_grads"] = [p.grad.clone() for p in model.parameters()]

        # 2. Multistage under DDP, loss over the global batch.
        x, y = global_batch(MS_SIZES)
        sl = local_slice(MS_SIZES, rank)
        model = nn.parallel.DistributedDataParallel(make_model())
        syncs = {"calls": 0}

        def counting_allreduce(state, bucket):
            state["calls"] += 1
            return default_hooks.allreduce_hook(None, bucket)

        model.register_comm_hook(syncs, counting_allreduce)
        loss, _ = multistage_step(model, x[sl], y[sl], GlobalBatchLoss(listwise_loss), MS_CHUNK)
        res["ms_loss"] = loss
        res["ms_grads"] = [p.grad.clone() for p in model.parameters()]
        res["ms_syncs"] = syncs["calls"]

        # 2b. The same with frozen BatchNorm (eval mode, affine parameters trained).
        model = nn.parallel.DistributedDataParallel(make_bn_model())
        loss, _ = multistage_step(model, x[sl], y[sl], GlobalBatchLoss(listwise_loss), MS_CHUNK, freeze_bn=True)
        res["frozen_bn_loss"] = loss
        res["frozen_bn_grads"] = [p.grad.clone() for p in model.parameters()]

        # 3. Backward scaling of the gather with a different loss per rank: rank r's rows receive
        #    the sum over ranks k of dL_k/dD_r, with L_k = (k + 1) * sum(D_all * w).
        e = torch.randn(PLAIN_SIZES[rank], 4, dtype=torch.float64, requires_grad=True)
        w = torch.linspace(-1, 1, 4, dtype=torch.float64)
        all_e, _ = all_gather_embeddings(e, torch.zeros(PLAIN_SIZES[rank]))
        ((rank + 1) * (all_e * w).sum()).backward()
        res["gather_grad"] = e.grad.clone()

        # 3b. apl.train.step: the features under DDP, the BatchNorm head and the loss on the
        #     gathered global batch, plain and multistage.
        x, y = step_batch()
        sl = local_slice(STEP_SIZES, rank)
        for chunk in (None, 2):
            net = make_retrieval_net()
            res[f"step_loss_{chunk}"] = TrainStep(net, listwise_loss, torch.device("cpu"), distributed=True,
                                                  chunk_size=chunk)(x[sl], y[sl])
            res[f"step_grads_{chunk}"] = [p.grad.clone() for p in net.parameters()]
            res[f"step_buffers_{chunk}"] = [b.clone() for b in net.buffers()]

        # 4. A different number of chunks on the two ranks: a clear error on both, not a hang.
        x, y = global_batch(PLAIN_SIZES)
        sl = local_slice(PLAIN_SIZES, rank)
        try:
            multistage_step(model, x[sl], y[sl], GlobalBatchLoss(listwise_loss), MS_CHUNK)
            res["mismatch_error"] = None
        except ValueError as exc:
            res["mismatch_error"] = str(exc)
    except Exception:  # report to the parent rather than dying silently
        res["error"] = traceback.format_exc()
    finally:
        torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    out_dir = str(tmp_path_factory.mktemp("dist"))
    ctx = mp.start_processes(_worker, args=(_free_port(), out_dir), nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not ctx.join(timeout=max(0.1, deadline - time.monotonic())):
            if time.monotonic() > deadline:
                pytest.fail(f"distributed workers did not finish within {TIMEOUT_S:.0f} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    out = [torch.load(os.path.join(out_dir, f"rank{r}.pt")) for r in range(WORLD)]
    errors = [f"rank {r} failed:\n{o['error']}" for r, o in enumerate(out) if "error" in o]
    assert not errors, "\n".join(errors)
    return out


def single_process(sizes, model=None):
    model = make_model() if model is None else model
    x, y = global_batch(sizes)
    loss = listwise_loss(model(x), y)
    loss.backward()
    return loss.detach(), [p.grad for p in model.parameters()]


def test_all_gather_rows_in_rank_order(results):
    x, y = global_batch(PLAIN_SIZES)
    expected = make_model()(x).detach()
    for o in results:
        torch.testing.assert_close(o["gathered"], expected, atol=1e-12, rtol=0)
        torch.testing.assert_close(o["gathered_labels"], y, atol=0, rtol=0)


def test_plain_ddp_global_loss_equals_single_process(results):
    ref_loss, ref_grads = single_process(PLAIN_SIZES)
    for o in results:
        torch.testing.assert_close(o["plain_loss"], ref_loss, atol=1e-6, rtol=0)
        for g, r in zip(o["plain_grads"], ref_grads):
            torch.testing.assert_close(g, r, atol=1e-6, rtol=0)


def test_multistage_ddp_equals_single_process(results):
    ref_loss, ref_grads = single_process(MS_SIZES)
    for o in results:
        torch.testing.assert_close(o["ms_loss"], ref_loss, atol=1e-6, rtol=0)
        for g, r in zip(o["ms_grads"], ref_grads):
            torch.testing.assert_close(g, r, atol=1e-6, rtol=0)


def test_multistage_ddp_frozen_bn_equals_single_process_eval_bn(results):
    model = make_bn_model()
    model[1].eval()
    ref_loss, ref_grads = single_process(MS_SIZES, model)
    assert ref_grads[2].abs().sum() > 0  # the BatchNorm weight is trained
    for o in results:
        torch.testing.assert_close(o["frozen_bn_loss"], ref_loss, atol=1e-6, rtol=0)
        for g, r in zip(o["frozen_bn_grads"], ref_grads):
            torch.testing.assert_close(g, r, atol=1e-6, rtol=0)


def test_multistage_ddp_syncs_gradients_once(results):
    # The tiny model fits one DDP bucket: one all-reduce per step, from the last chunk only.
    for o in results:
        assert o["ms_syncs"] == 1


def test_gather_backward_sums_over_ranks(results):
    w = torch.linspace(-1, 1, 4, dtype=torch.float64)
    total = sum(k + 1 for k in range(WORLD))
    for r, o in enumerate(results):
        expected = (total * w).expand(PLAIN_SIZES[r], 4)
        torch.testing.assert_close(o["gather_grad"], expected, atol=1e-12, rtol=0)


def test_chunk_count_mismatch_is_an_error_on_every_rank(results):
    for o in results:
        assert o["mismatch_error"] is not None
        assert "all ranks must run the same number of chunks" in o["mismatch_error"]


def test_single_process_gather_is_identity():
    e = torch.randn(3, 2, requires_grad=True)
    y = torch.arange(3)
    all_e, all_y = all_gather_embeddings(e, y)
    assert all_e is e and all_y is y


def test_gather_bad_input():
    with pytest.raises(ValueError, match=r"embeddings must be 2-D \(batch, dim\), got shape \(3,\)"):
        all_gather_embeddings(torch.randn(3), torch.arange(3))
    with pytest.raises(ValueError, match=r"labels must have one entry per row of embeddings \(3\), got shape \(2,\)"):
        all_gather_embeddings(torch.randn(3, 2), torch.arange(2))
    with pytest.raises(TypeError, match="labels must be a torch.Tensor"):
        all_gather_embeddings(torch.randn(3, 2), [0, 1, 2])


@pytest.mark.parametrize("chunk", [None, 2])
def test_train_step_with_batchnorm_head_equals_single_process(results, chunk):
    """The BatchNorm of the head sees the global batch on every rank: two ranks compute the step of
    one process on the whole batch (loss, every gradient, the running statistics)."""
    net = make_retrieval_net()
    x, y = step_batch()
    want_loss = TrainStep(net, listwise_loss, torch.device("cpu"))(x, y)
    for r in results:
        torch.testing.assert_close(r[f"step_loss_{chunk}"], want_loss, rtol=1e-12, atol=1e-12)
        for got, p in zip(r[f"step_grads_{chunk}"], net.parameters()):
            torch.testing.assert_close(got, p.grad, rtol=1e-9, atol=1e-12)
        for got, b in zip(r[f"step_buffers_{chunk}"], net.buffers()):
            torch.testing.assert_close(got, b, rtol=1e-12, atol=1e-12)
