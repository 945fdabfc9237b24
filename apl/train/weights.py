"""Where a run's starting weights come from: `--init PATH` (weights on disk; nothing is
downloaded) and `--whitening-init pca` (the head started from the training images' features).

The file holds a state dict (or a dict with one under "state_dict" / "model", as training scripts
often save) of either the whole `RetrievalNet` or its backbone. Keys are matched after removing a
"module." prefix (DistributedDataParallel) and, for a backbone, a torchvision ResNet's classifier
("fc.*") is ignored and its stage names are mapped onto `ResNetBackbone.features`.
"""
from __future__ import annotations

import pickle
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


def _torchvision_name(k: str) -> str | None:
    """A torchvision ResNet key ("layer1.0.conv1.weight") as a ResNetBackbone key
    ("features.4.0.conv1.weight"); None for the ImageNet classifier, which has no place here."""
    head, _, rest = k.partition(".")
    if head in _RESNET_STAGES:
        return f"features.{_RESNET_STAGES.index(head)}.{rest}"
    return None if head == "fc" else k


def _old_layout_name(k: str) -> str:
    """A key of the flat RetrievalNet of earlier versions in today's layout (as its state-dict hook
    does when loading)."""
    from ..nn.model import _OLD_PREFIXES

    for old, new in _OLD_PREFIXES:
        if k.startswith(old):
            return new + k[len(old):]
    return k


def _renaming(sd: dict, rename) -> dict:
    """{new name: file name} for every key `rename` keeps."""
    return {new: k for k in sd if (new := rename(k)) is not None}


def _mismatch(target: nn.Module, sd: dict, names: dict) -> tuple[list, list, list]:
    """What keeps `sd` (keys renamed by `names`: new -> file key) from loading into `target`,
    reported with the file's own key names."""
    own = target.state_dict()
    missing = sorted(set(own) - set(names))
    unexpected = sorted(names[k] for k in set(names) - set(own))
    shapes = sorted(f"{names[k]}: file {tuple(sd[names[k]].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(own) & set(names) if sd[names[k]].shape != own[k].shape)
    return missing, unexpected, shapes


def _format(path: Path) -> str | None:
    """Why the file cannot be a torch.save file, from its first bytes (a zip archive since torch 1.6,
    a pickle before); None when it can."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return None
    if not head:
        return "the file is empty"
    try:
        first = head.decode("utf-8").strip().splitlines()[0][:60] if head.strip() else ""
        return f"it is a text file (it starts with {first!r})"
    except UnicodeDecodeError:
        return f"it is neither a zip archive nor a pickle (it starts with bytes {head[:8].hex(' ')})"


def _read(path: Path):
    why = _format(path)
    if why:
        raise ValueError(f"--init {path}: not a weights file written by torch.save: {why}; save the weights with "
                         "torch.save(model.state_dict(), PATH)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower():  # torch's advice to pass weights_only=False is not ours to give
            raise ValueError(
                f"--init {path}: it holds Python objects, not only tensors (a whole pickled model?), and "
                "apl loads weights files without running their code; save `model.state_dict()` instead"
            ) from None
        raise ValueError(f"--init {path}: cannot read it as a torch state dict ({_first_line(err)})") from None
    except Exception as err:  # noqa: BLE001  (any unreadable file gets the same clear message)
        raise ValueError(f"--init {path}: cannot read it as a torch state dict ({_first_line(err)})") from None


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _listing(items: list, n: int = 8) -> str:
    return ", ".join(items[:n]) + (f" ... ({len(items)} in all)" if len(items) > n else "")


def load_init_weights(model: nn.Module, path: str | Path) -> str:
    """Loads the file into `model` (the whole network) or `model.backbone`; returns which.
    A file that fits neither raises a ValueError listing the mismatched keys."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"--init {path}: a folder, not a weights file (a state dict saved with torch.save)")
    if not path.is_file():
        raise FileNotFoundError(f"--init: no such file: {path}")
    sd = _state_dict_of(_read(path), path)
    attempts = [("model", model, _renaming(sd, lambda k: k))]
    if any(k.startswith(("backbone.", "pool.", "whiten.")) for k in sd):  # a RetrievalNet of earlier versions
        attempts.append(("model", model, _renaming(sd, _old_layout_name)))
    backbone = getattr(model, "backbone", None)
    if backbone is not None:
        attempts.append(("backbone", backbone, _renaming(sd, lambda k: k)))
        for prefix in ("backbone.", "features.backbone."):
            attempts.append(("backbone", backbone, _renaming(sd, lambda k, p=prefix: k.removeprefix(p))))
        attempts.append(("backbone", backbone, _renaming(sd, _torchvision_name)))
    best = None
    for name, target, names in attempts:
        missing, unexpected, shapes = _mismatch(target, sd, names)
        if not (missing or unexpected or shapes):
            target.load_state_dict({new: sd[k] for new, k in names.items()})
            return name
        score = len(missing) + len(unexpected) + len(shapes)
        if best is None or score < best[0]:
            best = (score, name, missing, unexpected, shapes)
    _, name, missing, unexpected, shapes = best
    if not (missing or unexpected):
        raise ValueError(f"--init {path}: its keys match the {name}, but {len(shapes)} tensor shape(s) differ: "
                         f"{_listing(shapes, 4)}. Check --backbone and --dim.")
    parts = []
    if missing:
        parts.append(f"missing in the file: {_listing(missing)}")
    if unexpected:
        parts.append(f"in the file but not in the {name}: {_listing(unexpected)}")
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
    from ..evaluation.extraction import describe_images
    from ..evaluation.whitening import DEFAULT_POWER, PCAWhitening

    n = min(images, len(dataset))
    chosen = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pooled = []
    for i in range(0, n, batch):
        images = [dataset[j][0] for j in chosen[i:i + batch]]  # any shapes (image folders are not resized to one)
        pooled.append(describe_images(model.features, images, device=device).double().cpu())
    model.head.init_from_pca(torch.cat(pooled), lambda x, dim: PCAWhitening.fit(x, dim, power=DEFAULT_POWER))
    model.train(was_training)
    return n
