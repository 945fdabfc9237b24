"""`apl train`, the training program, one job per module:

- `config`: `TrainConfig`, everything that defines a run;
- `data`: datasets, per-sample augmentation seeds, loaders with workers;
- `launch`: one process or several under torchrun;
- `optim`: optimizer and learning-rate schedule;
- `loop`: `Trainer`, the loop (its steps are `apl.multistage` steps when `chunk_size` is set);
- `checkpoint`: atomic saves and safe loading; `run_folder`: the run folder and metrics log;
- `weights`: `--init` from a state dict on disk.

The multistage step is `apl.multistage`, extraction and the held-out metrics `apl.evaluation`;
their names are also re-exported here, where earlier versions had them.
"""
from ..evaluation.extraction import describe, evaluate, extract
from ..evaluation.metrics import precision_recall_curve
from ..evaluation.summary import retrieval_metrics
from ..evaluation.report import (FIELD_METRICS, HELD_OUT_METRICS, format_metrics, mean_over_seeds, metric_cell,
                                 metric_label, metrics_table)
from ..multistage import MultistageStep, multistage_step
from ..plots.curves import plot_curves
from .checkpoint import NotAnAplCheckpointError, atomic_save, load_checkpoint, load_model
from .config import TrainConfig, parse_scales
from .loop import Trainer
from .weights import load_init_weights

__all__ = [
    "FIELD_METRICS", "HELD_OUT_METRICS", "format_metrics", "mean_over_seeds", "metric_cell", "metric_label", "metrics_table",
    "MultistageStep", "NotAnAplCheckpointError", "TrainConfig", "Trainer", "atomic_save", "describe", "evaluate",
    "extract", "load_checkpoint", "load_init_weights", "load_model", "multistage_step", "parse_scales",
    "plot_curves", "precision_recall_curve", "retrieval_metrics",
]
