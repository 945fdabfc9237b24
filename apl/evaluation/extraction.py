"""Descriptors of a dataset (batched, with loader workers, images at their own shape, optionally
multi-scale, optionally sharded over the ranks of a distributed run) and held-out evaluation.

Images of different shapes cannot be stacked, so a loader batch is a list of images; within it,
images of equal shape are stacked and go through the network together (datasets of one shape,
like the digits or resized crops, then run in full batches; mixed shapes run in smaller groups).

Multi-scale descriptor (the paper's evaluation): the image is resized by each scale s (bilinear,
antialiased when shrinking), each copy is described (an L2-normalised descriptor), and the
descriptor is the L2-normalised mean of those. With the single scale 1 it is the network's output.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..distributed import all_gather_embeddings
from .summary import retrieval_metrics
from .whitening import PCAWhitening


def _collate(items):
    return [x for x, _ in items], torch.as_tensor([int(y) for _, y in items], dtype=torch.long)


def _rescale(x: torch.Tensor, s: float) -> torch.Tensor:
    if s == 1:
        return x
    h, w = x.shape[-2:]
    size = (max(1, round(h * s)), max(1, round(w * s)))
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=s < 1)


def describe(model: nn.Module, images: torch.Tensor, scales: Sequence[float] = (1.0,)) -> torch.Tensor:
    """(n, D) descriptors of a stack of images (n, C, H, W), averaged over `scales` (see module doc)."""
    if tuple(scales) == (1.0,):
        return model(images)
    total = None
    for s in scales:
        d = model(_rescale(images, s)).float()
        total = d if total is None else total + d
    return F.normalize(total, dim=1)


def describe_images(model: nn.Module, images: list, scales: Sequence[float] = (1.0,),
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """(n, D) descriptors of a list of images (C, H, W) of any shapes, in their order: images of one
    shape go through `model` together."""
    by_shape: dict[tuple, list[int]] = {}
    for i, x in enumerate(images):
        by_shape.setdefault(tuple(x.shape), []).append(i)
    out: Optional[torch.Tensor] = None
    for positions in by_shape.values():
        x = torch.stack([images[i] for i in positions]).to(device, non_blocking=True)
        d = describe(model, x, scales)
        if out is None:
            out = d.new_empty((len(images), d.shape[1]))
        out[torch.as_tensor(positions, device=d.device)] = d
    assert out is not None
    return out


def _check_channels(model: nn.Module, dataset) -> None:
    want = getattr(getattr(model, "module", model), "in_channels", None)
    if want is None or len(dataset) == 0:
        return
    got = dataset[0][0].shape[0]
    if got != want:
        kind = {1: "1-channel (greyscale, e.g. the bundled digits)", 3: "3-channel (RGB)"}
        raise ValueError(
            f"the model takes {kind.get(want, f'{want}-channel')} images but this dataset has "
            f"{kind.get(got, f'{got}-channel')} images: evaluate a checkpoint on data like its training data"
        )


@torch.no_grad()
def extract(
    model: nn.Module,
    dataset,
    batch_size: int = 64,
    progress: bool = False,
    scales: Sequence[float] = (1.0,),
    workers: int = 0,
    prefetch: int = 2,
    distributed: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Descriptors (N, D) and labels (N,) of `dataset` in eval mode, on the model's device.

    Items are (image (C, H, W), label); images may differ in shape. With `distributed` (inside an
    initialised process group) every rank describes every W-th image and all ranks get the whole
    result, in dataset order.
    """
    from ..data.loaders import loader_options  # apl.data needs apl[train]; the metrics above do not

    _check_channels(model, dataset)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed and dist.is_initialized() else (0, 1)
    indices = list(range(rank, len(dataset), world))
    subset = torch.utils.data.Subset(dataset, indices)
    # Own generator: creating a loader must not draw from the global RNG (it would shift training).
    loader = torch.utils.data.DataLoader(
        subset, batch_size=batch_size, shuffle=False, collate_fn=_collate,
        generator=torch.Generator(), **loader_options(workers, prefetch, device),
    )
    if progress:
        from tqdm import tqdm

        loader = tqdm(loader, desc="extract", unit="batch", leave=False)
    descs, labels = [], []
    try:
        for images, y in loader:
            descs.append(describe_images(model, images, scales, device))
            labels.append(y.to(device))
    finally:
        model.train(was_training)
    if descs:
        d, y = torch.cat(descs), torch.cat(labels)
    else:
        d = torch.empty((0, getattr(model, "out_dim", 0)), device=device)
        y = torch.empty((0,), dtype=torch.long, device=device)
    if world > 1:
        d, y = all_gather_embeddings(d, y)
        order = torch.cat([torch.arange(r, len(dataset), world) for r in range(world)]).to(d.device)
        d = d.new_empty(d.shape).index_copy_(0, order, d)
        y = y.new_empty(y.shape).index_copy_(0, order.to(y.device), y)
    return d, y


def evaluate(
    model: nn.Module,
    eval_set,
    whitening_set=None,
    whitening: bool = False,
    scales: Sequence[float] = (1.0,),
    workers: int = 0,
    prefetch: int = 2,
    distributed: bool = False,
) -> dict:
    """Exact retrieval metrics on the held-out set; with `whitening`, a PCA-whitening learned on the
    descriptors of `whitening_set` (training images through the evaluation transform, so the result
    is deterministic) is applied first (the paper's post-processing)."""
    kw = dict(scales=scales, workers=workers, prefetch=prefetch, distributed=distributed)
    d, y = extract(model, eval_set, **kw)
    if whitening:
        if whitening_set is None:
            raise ValueError("whitening=True needs whitening_set (the training images)")
        dt, _ = extract(model, whitening_set, **kw)
        d = PCAWhitening.fit(dt).transform(d)
    return retrieval_metrics(d, y)
