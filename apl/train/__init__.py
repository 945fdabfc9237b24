"""`apl train`, the training program, one job per module:

- `config`: `TrainConfig`, everything that defines a run;
- `data`: datasets, per-sample augmentation seeds, loaders with workers;
- `launch`: one process or several under torchrun;
- `optim`: optimizer and learning-rate schedule;
- `loop`: `Trainer`, the loop (its steps are `apl.multistage` steps when `chunk_size` is set);
- `checkpoint`: atomic saves and safe loading; `run_folder`: the run folder and metrics log;
- `weights`: `--init` from a state dict on disk.

Needs the extra apl[train]. The multistage step is `apl.multistage`, extraction and the held-out
metrics `apl.evaluation`.
"""
from ..extras import require as _require

_require("train", "apl.train")
from .checkpoint import NotAnAplCheckpointError, atomic_save, load_checkpoint, load_model  # noqa: E402
from .config import TrainConfig, parse_scales  # noqa: E402
from .loop import Trainer  # noqa: E402
from .weights import load_init_weights  # noqa: E402

__all__ = ["NotAnAplCheckpointError", "TrainConfig", "Trainer", "atomic_save", "load_checkpoint", "load_init_weights",
           "load_model", "parse_scales"]
