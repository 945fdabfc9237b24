"""The network of a run: built from its configuration, or loaded from a checkpoint of `apl train`."""
from __future__ import annotations

import os
from typing import Union

from ..nn import RetrievalNet
from .checkpoint import NotAnAplCheckpointError, load_checkpoint
from .config import TrainConfig
from .data import in_channels

PathLike = Union[str, os.PathLike]


def build_model(cfg: TrainConfig, channels: int) -> RetrievalNet:
    """The untrained network of `cfg` for images of `channels` channels."""
    return RetrievalNet(cfg.backbone, dim=cfg.dim, in_channels=channels, head=cfg.head)


def load_model(checkpoint: PathLike) -> tuple[RetrievalNet, TrainConfig]:
    """The model (eval mode, CPU) and configuration stored in a checkpoint written by `apl train`."""
    ck = load_checkpoint(checkpoint)
    try:
        cfg = TrainConfig.from_dict(ck["config"])
        model = build_model(cfg, in_channels(cfg))
        model.load_state_dict(ck["model"])
    except (TypeError, ValueError, RuntimeError, KeyError) as err:
        first = str(err).strip().splitlines()[0]
        raise NotAnAplCheckpointError(f"not an apl checkpoint: {checkpoint} (its model does not load: {first})") from None
    model.eval()
    return model, cfg
