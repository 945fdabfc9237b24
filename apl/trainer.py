"""Compatibility module: the trainer now lives in `apl.train` (one module per job); these names
are re-exported from there."""
from .train.checkpoint import build_model, load_model
from .train.config import OPTIMIZERS, SAMPLERS, SCHEDULES, TrainConfig
from .train.data import build_datasets
from .train.extraction import evaluate, extract
from .train.launch import resolve_device
from .train.loop import Trainer
from .train.plots import plot_curves, precision_recall_curve

__all__ = [
    "OPTIMIZERS", "SAMPLERS", "SCHEDULES", "TrainConfig", "Trainer", "build_datasets", "build_model", "evaluate",
    "extract", "load_model", "plot_curves", "precision_recall_curve", "resolve_device",
]
