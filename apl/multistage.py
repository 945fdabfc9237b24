"""Multistage backpropagation: a loss over a batch far larger than what fits with activations.

The AP loss couples all images of a batch, so the batch cannot be split into independent
mini-batches. But the loss only needs the B x D descriptors, and the gradient of the loss with
respect to the descriptors is cheap to hold. Hence three stages (Revaud et al., ICCV 2019, sec. 4.3):

1. descriptors of the whole batch, chunk by chunk, without a graph (only B x D is kept);
2. the loss and its gradient with respect to the descriptors;
3. for each chunk, the forward again with a graph, and a backward of that chunk's gradient rows.

Peak memory is the activations of one chunk plus B x D descriptors, whatever B is; the extra cost
is one more forward pass.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Optional, Union

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

__all__ = ["multistage_step", "MultistageStep"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _check_args(model, inputs, labels, loss_fn, chunk_size) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(descriptors, labels), got {type(loss_fn).__name__}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise TypeError(f"chunk_size must be an int, got {type(chunk_size).__name__}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}")
    if inputs.dim() < 1 or inputs.shape[0] < 1:
        raise ValueError(f"inputs must have a non-empty batch dimension, got shape {tuple(inputs.shape)}")
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dim() < 1 or labels.shape[0] != inputs.shape[0]:
        raise ValueError(
            f"labels must have one entry per input: inputs has batch size {inputs.shape[0]}, "
            f"labels has shape {tuple(labels.shape)}"
        )


def _check_output(out: Any, n: int) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"model output must be a torch.Tensor of descriptors, got {type(out).__name__}")
    if out.dim() != 2 or out.shape[0] != n:
        raise ValueError(
            f"model output must be 2-D (batch, dim) descriptors with one row per input; "
            f"got shape {tuple(out.shape)} for a chunk of {n} inputs"
        )
    if not out.is_floating_point():
        raise TypeError(f"model output must be floating point, got {out.dtype}")
    return out


class _RngStates:
    """CPU and CUDA generator states, so stage 3 replays stage 1's random numbers exactly."""

    def __init__(self) -> None:
        self.cpu = torch.get_rng_state()
        # Only touch CUDA if something already initialised it (no context creation on CPU runs).
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)


class _BatchStats:
    """Whole-batch mean and variance of a BatchNorm's input, merged over chunks (Chan et al.).

    The per-chunk statistics come from the BatchNorm's own kernel, at no extra cost: for each
    stage-1 forward its running buffers are swapped for scratch tensors and its momentum set to 1,
    so that the "update" writes the chunk's mean and unbiased variance there. In train mode the
    running buffers do not enter the output, so the forward is unchanged.
    """

    def __init__(self, module: _BatchNorm) -> None:
        # Running buffers as they were before this step's first forward through the module (after
        # any buffer broadcast DDP did in that forward).
        self.before = {k: v.clone() for k, v in module.named_buffers(recurse=False)}
        # Zeros, not empty: the update computes 0 * old + 1 * new, and 0 * NaN garbage is NaN.
        self.scratch = (torch.zeros_like(module.running_mean), torch.zeros_like(module.running_var))
        self.saved: Optional[tuple] = None
        self.n = 0
        self.mean: Optional[torch.Tensor] = None
        self.m2: Optional[torch.Tensor] = None

    def swap_in(self, module: _BatchNorm) -> None:
        self.saved = (module.running_mean, module.running_var, module.momentum)
        module.running_mean, module.running_var = self.scratch
        module.momentum = 1.0

    def swap_out(self, module: _BatchNorm) -> None:
        if self.saved is not None:
            module.running_mean, module.running_var, module.momentum = self.saved
            self.saved = None

    def add(self, x: torch.Tensor) -> None:
        n = x.numel() // x.shape[1]
        # Copies: the scratch tensors are overwritten by the next chunk.
        mean = self.scratch[0].to(torch.float64, copy=True)
        m2 = self.scratch[1].to(torch.float64, copy=True) * max(n - 1, 0)
        if self.mean is None:
            self.n, self.mean, self.m2 = n, mean, m2
            return
        total = self.n + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta * delta * (self.n * n / total)
        self.n = total

    @torch.no_grad()
    def apply(self, module: _BatchNorm) -> None:
        """Set the running statistics to one update with the whole batch, as F.batch_norm does."""
        for k, v in module.named_buffers(recurse=False):
            if k in self.before:
                v.copy_(self.before[k])
        if self.mean is None:
            return
        if module.num_batches_tracked is not None:
            module.num_batches_tracked.add_(1)
        if module.momentum is None:  # cumulative moving average
            factor = 1.0 / float(module.num_batches_tracked)
        else:
            factor = module.momentum
        var = self.m2 / max(self.n - 1, 1)  # running_var is the unbiased variance
        module.running_mean.mul_(1 - factor).add_(self.mean.to(module.running_mean.dtype), alpha=factor)
        module.running_var.mul_(1 - factor).add_(var.to(module.running_var.dtype), alpha=factor)


def _snapshot_buffers(module: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(b, b.detach().clone()) for b in module.buffers()]


@torch.no_grad()
def _restore_buffers(saved: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    # In place, so that references held elsewhere (DDP's buffer list) stay valid.
    for buf, value in saved:
        buf.copy_(value)


def _chunk_count_agrees(n_chunks: int, model: DistributedDataParallel) -> bool:
    """Whether all ranks run the same number of chunks (else DDP's collectives would hang)."""
    group = model.process_group
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == dist.Backend.NCCL else "cpu"
    t = torch.tensor([n_chunks, -n_chunks], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return int(t[0]) == -int(t[1])


class _BatchNormTracking:
    """The BatchNorms of a multistage step: frozen when asked, their modes restored at the end; those
    that update running statistics gather the whole batch's statistics of their inputs in stage 1
    (forward hooks) and get a single update at the end, as one forward of the batch would give."""

    def __init__(self, inner: nn.Module, freeze: bool) -> None:
        self.norms = [m for m in inner.modules() if isinstance(m, _BatchNorm)]
        self.modes = [m.training for m in self.norms]
        if freeze:
            for m in self.norms:
                m.eval()
        self.stats: dict[_BatchNorm, _BatchStats] = {}
        tracked = [
            m for m in self.norms
            if m.training and m.track_running_stats and m.running_mean is not None
            and not isinstance(m, nn.SyncBatchNorm)
        ]
        self.hooks = [m.register_forward_pre_hook(self._before) for m in tracked]
        self.hooks += [m.register_forward_hook(self._after) for m in tracked]

    def _before(self, module: _BatchNorm, args: tuple) -> None:
        if module not in self.stats:
            self.stats[module] = _BatchStats(module)
        self.stats[module].swap_in(module)

    def _after(self, module: _BatchNorm, args: tuple, output: Any) -> None:
        self.stats[module].swap_out(module)
        self.stats[module].add(args[0])

    def stop_gathering(self) -> None:
        for h in self.hooks:
            h.remove()
        self.hooks = []

    def write_running_stats(self) -> None:
        for m, s in self.stats.items():
            s.apply(m)

    def close(self) -> None:
        self.stop_gathering()
        for m, st in self.stats.items():  # a forward that raised may have left scratch buffers in place
            st.swap_out(m)
        for m, mode in zip(self.norms, self.modes):
            m.train(mode)


def _descriptors(model: nn.Module, chunk: Callable[[int], torch.Tensor], starts: list[int], batch: int,
                 autocast: Any) -> tuple[torch.Tensor, list[_RngStates]]:
    """Stage 1: the descriptors of the whole batch, chunk by chunk, without a graph; the RNG states
    before each chunk, so that stage 3 recomputes the same dropout masks."""
    descriptors: Optional[torch.Tensor] = None
    rng_states: list[_RngStates] = []
    with torch.no_grad():
        for start in starts:
            rng_states.append(_RngStates())
            x = chunk(start)
            with autocast:
                out = _check_output(model(x), x.shape[0])
            if descriptors is None:
                # Low-precision autocast outputs are kept in float32 for the loss.
                dtype = out.dtype if out.dtype in (torch.float32, torch.float64) else torch.float32
                descriptors = out.new_empty((batch, out.shape[1]), dtype=dtype)
            elif out.shape[1] != descriptors.shape[1]:
                raise ValueError(
                    f"model output width changed between chunks: {descriptors.shape[1]} then {out.shape[1]}"
                )
            descriptors[start : start + x.shape[0]] = out
    assert descriptors is not None
    return descriptors, rng_states


def _loss_and_gradient(loss_fn: Callable, descriptors: torch.Tensor, labels: torch.Tensor, scaler: Any,
                       dev_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 2: the loss and its gradient with respect to the descriptors. Parameters of loss_fn itself
    (a batch-coupled head run on the whole batch, a learned temperature) get their gradients here,
    once per step."""
    desc = descriptors.detach().requires_grad_(True)
    # Autocast off even inside a caller's autocast region: histogram-based losses need float32.
    with torch.enable_grad(), torch.autocast(device_type=dev_type, enabled=False):
        loss = loss_fn(desc, labels)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ValueError(f"loss_fn must return a scalar tensor, got {shape}")
        loss = loss.reshape(())
        if loss.requires_grad:
            (scaler.scale(loss) if scaler is not None else loss).backward()
    # A loss constant in the descriptors (e.g. no positive pair): zero gradients, but stage 3 still
    # runs its backward so that DDP ranks stay in step.
    grad = desc.grad if desc.grad is not None else torch.zeros_like(desc)
    return loss, grad


def _recompute_and_backward(model: nn.Module, chunk: Callable[[int], torch.Tensor], starts: list[int],
                            grad: torch.Tensor, rng_states: list[_RngStates], ddp: bool, autocast: Any) -> None:
    """Stage 3: each chunk recomputed with its graph and its rows of the gradient backpropagated; DDP
    all-reduces once, after the last chunk."""
    with torch.enable_grad():
        for i, start in enumerate(starts):
            rng_states[i].restore()
            last = i == len(starts) - 1
            with model.no_sync() if ddp and not last else contextlib.nullcontext():
                x = chunk(start)
                with autocast:
                    out = _check_output(model(x), x.shape[0])
                out.backward(grad[start : start + x.shape[0]].to(out.dtype))


def multistage_step(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    loss_fn: LossFn,
    chunk_size: int,
    *,
    scaler: Optional["torch.amp.GradScaler"] = None,
    freeze_bn: bool = False,
    amp_dtype: Optional[torch.dtype] = None,
    device: Union[torch.device, str, None] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One multistage forward/backward over a batch, accumulating parameter gradients.

    Args:
        model: maps a chunk of inputs (n, ...) to descriptors (n, D). May be wrapped in
            DistributedDataParallel: gradients are then synchronised once, with the last chunk.
        inputs: (B, ...) the whole batch. May stay on the CPU with `device` set, so that only one
            chunk at a time sits on the accelerator.
        labels: (B, ...) passed to `loss_fn` with the descriptors.
        loss_fn: `loss_fn(descriptors, labels) -> scalar`, e.g. `apl.APLoss()`, or
            `apl.distributed.GlobalBatchLoss(apl.APLoss())` for the global batch of all ranks. It may
            hold parameters of its own, e.g. the batch-coupled head of a network whose `model` is
            the per-image part (`apl.train.step.HeadLoss`): they get their gradients in stage 2.
        chunk_size: inputs per forward pass (the last chunk may be smaller).
        scaler: optional `torch.amp.GradScaler`; the gradient of the scaled loss is backpropagated,
            so call `scaler.step(optimizer)` and `scaler.update()` afterwards as usual.
        freeze_bn: run every BatchNorm in eval mode for this step (running statistics used and left
            unchanged; affine parameters still get gradients). Modes are restored afterwards.
        amp_dtype: if set (torch.float16, torch.bfloat16), stages 1 and 3 run under
            `torch.autocast`. The loss (stage 2) always runs with autocast disabled, on float32
            (or float64) descriptors.
        device: if set, each chunk (and the labels) is moved there before use.

    Returns:
        `(loss, descriptors)`: the unscaled loss (0-dim, detached) and the (B, D) descriptors of
        stage 1 (detached; float32 when the model outputs a lower precision under autocast).

    Equivalences (gradients accumulate into `.grad`; the optimizer step is the caller's):
      * no BatchNorm in train mode: the gradients and loss are those of plain backprop of
        `loss_fn(torch.cat([model(x) for x in chunks]), labels)`, with random layers (dropout)
        drawing the same numbers (the RNG is saved per chunk in stage 1 and replayed in stage 3,
        and left where that chunked plain forward would leave it). With no randomness either,
        that is plain backprop on the whole batch.
      * BatchNorm in train mode: each chunk is normalised with its own statistics (ghost batch
        norm, ghost batch = chunk), so the gradients are those of the chunked plain forward above;
        the running statistics get exactly one update per step, with the mean and unbiased
        variance of the whole batch, as a plain forward of the whole batch would give.
        (SyncBatchNorm is not special-cased: its running statistics get the per-chunk updates of
        stage 1.)
      * freeze_bn=True: BatchNorm is a fixed per-channel affine map, so the step equals plain
        backprop on the whole batch with BatchNorm in eval mode, for any chunk size.
    Other buffers a forward pass updates in place are updated by stage 1 only.
    """
    _check_args(model, inputs, labels, loss_fn, chunk_size)
    if device is not None:
        device = torch.device(device)
        labels = labels.to(device)
    batch = inputs.shape[0]
    starts = list(range(0, batch, chunk_size))
    ddp = isinstance(model, DistributedDataParallel)
    inner = model.module if ddp else model
    if ddp and dist.is_initialized() and not _chunk_count_agrees(len(starts), model):
        # Each DDP forward broadcasts buffers and the last backward all-reduces: a different
        # number of chunks on some rank would deadlock, so fail on every rank instead.
        raise ValueError(
            f"chunk_size={chunk_size} gives {len(starts)} chunks for this rank's batch of {batch}, "
            "but another rank has a different number of chunks; under DistributedDataParallel all "
            "ranks must run the same number of chunks"
        )

    def chunk(start: int) -> torch.Tensor:
        x = inputs[start : start + chunk_size]
        return x.to(device, non_blocking=True) if device is not None else x

    dev_type = (device if device is not None else inputs.device).type
    autocast = (
        torch.autocast(device_type=dev_type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    )
    norms = _BatchNormTracking(inner, freeze_bn)
    after_stage1: Optional[_RngStates] = None
    try:
        descriptors, rng_states = _descriptors(model, chunk, starts, batch, autocast)
        norms.stop_gathering()
        after_stage1 = _RngStates()
        buffers_after_stage1 = _snapshot_buffers(inner)
        loss, grad = _loss_and_gradient(loss_fn, descriptors, labels, scaler, dev_type)
        _recompute_and_backward(model, chunk, starts, grad, rng_states, ddp, autocast)
        _restore_buffers(buffers_after_stage1)
        norms.write_running_stats()
    finally:
        norms.close()
        if after_stage1 is not None:
            after_stage1.restore()
    return loss.detach(), descriptors


class MultistageStep:
    """`multistage_step` with its settings bound, for a training loop.

    Example::

        step = MultistageStep(model, apl.APLoss(), chunk_size=64, freeze_bn=True)
        for images, labels in loader:
            optimizer.zero_grad(set_to_none=True)
            loss, _ = step(images, labels)
            optimizer.step()
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        chunk_size: int,
        *,
        scaler: Optional["torch.amp.GradScaler"] = None,
        freeze_bn: bool = False,
        amp_dtype: Optional[torch.dtype] = None,
        device: Union[torch.device, str, None] = None,
    ) -> None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
            raise TypeError(f"chunk_size must be an int, got {type(chunk_size).__name__}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.model = model
        self.loss_fn = loss_fn
        self.chunk_size = chunk_size
        self.scaler = scaler
        self.freeze_bn = freeze_bn
        self.amp_dtype = amp_dtype
        self.device = device

    def __call__(self, inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return multistage_step(
            self.model, inputs, labels, self.loss_fn, self.chunk_size,
            scaler=self.scaler, freeze_bn=self.freeze_bn, amp_dtype=self.amp_dtype, device=self.device,
        )
