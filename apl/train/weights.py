"""Where a run's starting weights come from: `--init PATH` (weights on disk; nothing is
downloaded) and `--whitening-init pca` (the head started from the training images' features).

The file holds a state dict (or a dict with one under "state_dict" / "model", as training scripts
often save) of either the whole `RetrievalNet` or its backbone. Keys are matched after removing a
"module." prefix (DistributedDataParallel) and, for a backbone, a torchvision ResNet's classifier
("fc.*") is ignored and its stage names are mapped onto `ResNetBackbone.features`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from torch import nn

_RESNET_STAGES = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def _state_dict_of(obj, path: Path) -> dict:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
        if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            return {k.removeprefix("module."): v for k, v in obj.items()}
    raise ValueError(f"--init {path}: not a state dict (a mapping of parameter names to tensors)")


def _torchvision_to_features(sd: dict) -> dict:
    """torchvision ResNet keys ("layer1.0.conv1.weight") -> ResNetBackbone keys ("features.4.0.conv1.weight")."""
    out = {}
    for k, v in sd.items():
        head, _, rest = k.partition(".")
        if head in _RESNET_STAGES:
            out[f"features.{_RESNET_STAGES.index(head)}.{rest}"] = v
        elif head != "fc":  # the ImageNet classifier has no place in a retrieval network
            out[k] = v
    return out


def _renamed(sd: dict) -> dict:
    """Keys of the flat RetrievalNet of earlier versions in today's layout (as its state-dict hook
    does when loading)."""
    from ..nn.model import _OLD_PREFIXES

    out = {}
    for k, v in sd.items():
        for old, new in _OLD_PREFIXES:
            if k.startswith(old):
                k = new + k[len(old):]
                break
        out[k] = v
    return out


def _mismatch(target: nn.Module, sd: dict) -> tuple[list, list, list]:
    own = target.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = sorted(f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(own) & set(sd) if sd[k].shape != own[k].shape)
    return missing, unexpected, shapes


def _listing(items: list, n: int = 8) -> str:
    return ", ".join(items[:n]) + (f" ... ({len(items)} in all)" if len(items) > n else "")


def load_init_weights(model: nn.Module, path: str | Path) -> str:
    """Loads the file into `model` (the whole network) or `model.backbone`; returns which.
    A file that fits neither raises a ValueError listing the mismatched keys."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--init: no such file: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (any unreadable file gets the same clear message)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"--init {path}: cannot read it as a torch state dict ({first})") from None
    sd = _state_dict_of(obj, path)
    attempts = [("model", model, sd)]
    if any(k.startswith(("backbone.", "pool.", "whiten.")) for k in sd):  # a RetrievalNet of earlier versions
        attempts.append(("model", model, _renamed(sd)))
    backbone = getattr(model, "backbone", None)
    if backbone is not None:
        attempts.append(("backbone", backbone, sd))
        for prefix in ("backbone.", "features.backbone."):
            attempts.append(("backbone", backbone, {k.removeprefix(prefix): v for k, v in sd.items()}))
        attempts.append(("backbone", backbone, _torchvision_to_features(sd)))
    best = None
    for name, target, candidate in attempts:
        missing, unexpected, shapes = _mismatch(target, candidate)
        if not (missing or unexpected or shapes):
            target.load_state_dict(candidate)
            return name
        score = len(missing) + len(unexpected) + len(shapes)
        if best is None or score < best[0]:
            best = (score, name, missing, unexpected, shapes)
    _, name, missing, unexpected, shapes = best
    parts = []
    if missing:
        parts.append(f"missing in the file: {_listing(missing)}")
    if unexpected:
        parts.append(f"not in the {name}: {_listing(unexpected)}")
    if shapes:
        parts.append(f"shape mismatch: {_listing(shapes, 4)}")
    raise ValueError(
        f"--init {path}: its keys match neither the whole model nor its backbone (closest: the {name}; "
        + "; ".join(parts) + "). Check --backbone and --dim."
    )


@torch.no_grad()
def init_head_from_features(model: nn.Module, dataset, images: int = 2048, seed: int = 0, batch: int = 256) -> int:
    """`--whitening-init pca`: the head of `model` (a `RetrievalNet`) started from the pooled
    features of up to `images` training images (a seeded choice, read with the evaluation
    transform): BatchNorm statistics and a PCA-whitening of the standardised features (the paper's
    start of the whitening layer). Returns the number of images used."""
    from ..evaluation.whitening import DEFAULT_POWER, PCAWhitening

    n = min(images, len(dataset))
    chosen = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pooled = []
    for i in range(0, n, batch):
        x = torch.stack([dataset[j][0] for j in chosen[i:i + batch]]).to(device)
        pooled.append(model.features(x).double().cpu())
    model.head.init_from_pca(torch.cat(pooled), lambda x, dim: PCAWhitening.fit(x, dim, power=DEFAULT_POWER))
    model.train(was_training)
    return n
