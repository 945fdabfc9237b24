"""Training: the multistage step that makes very large AP-loss batches fit in memory, and the
`apl train` machinery, one job per module:

- `config`: `TrainConfig`, everything that defines a run;
- `data`: datasets, per-sample augmentation seeds, loaders with workers;
- `launch`: one process or several under torchrun;
- `optim`: optimizer and learning-rate schedule;
- `loop`: `Trainer`, the loop;
- `extraction`: descriptors (any image shape, multi-scale, sharded) and held-out evaluation;
- `checkpoint`: atomic saves and safe loading; `run_folder`: the run folder and metrics log;
- `weights`: `--init` from a state dict on disk; `plots`: curves;
- `report`: names and formatting of the held-out metrics.
"""
from .checkpoint import NotAnAplCheckpointError, atomic_save, load_checkpoint, load_model
from .config import TrainConfig, parse_scales
from .extraction import describe, evaluate, extract, retrieval_metrics
from .loop import Trainer
from .multistage import MultistageStep, multistage_step
from .plots import plot_curves, precision_recall_curve
from .report import (FIELD_METRICS, HELD_OUT_METRICS, format_metrics, mean_over_seeds, metric_cell, metric_label,
                     metrics_table)
from .weights import load_init_weights

__all__ = [
    "FIELD_METRICS", "HELD_OUT_METRICS", "format_metrics", "mean_over_seeds", "metric_cell", "metric_label", "metrics_table",
    "MultistageStep", "NotAnAplCheckpointError", "TrainConfig", "Trainer", "atomic_save", "describe", "evaluate",
    "extract", "load_checkpoint", "load_init_weights", "load_model", "multistage_step", "parse_scales",
    "plot_curves", "precision_recall_curve", "retrieval_metrics",
]
