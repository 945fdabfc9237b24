"""`apl train`, the training program, one job per module:

- `config`: `TrainConfig`, everything that defines a run, in groups, each field with its description;
- `losses`: the losses by name, their options and defaults; `baselines`: the PML losses among them;
- `data`: datasets, samplers, per-sample augmentation seeds, loaders with workers;
- `model`: the network of a run, built or loaded from a checkpoint; `weights`: `--init`, `--whitening-init`;
- `launch`: one process or several under torchrun; `optim`: optimizer and learning-rate schedule;
- `step`: one training step (features per chunk and rank, head and loss on the global batch);
- `loop`: `Trainer` (prepare, start, fit: train an epoch, save, evaluate); `state`: `TrainState`, what
  a checkpoint holds; `checkpoint`: atomic saves and safe loading; `run_folder`: the run folder and
  metrics log;
- guards: `divergence` (non-finite steps stop the run), `scaler_watch` (fp16 skipped steps); `amp`:
  mixed precision; `progress`: the display of an epoch.

Needs the extra apl[train]. The multistage step is `apl.multistage`, extraction and the held-out
metrics `apl.evaluation`.
"""
from ..extras import require as _require

_require("train", "apl.train")
from .checkpoint import NotAnAplCheckpointError, atomic_save, load_checkpoint  # noqa: E402
from .config import TrainConfig, parse_scales  # noqa: E402
from .loop import Trainer  # noqa: E402
from .model import build_model, load_model  # noqa: E402
from .weights import load_init_weights  # noqa: E402

__all__ = ["NotAnAplCheckpointError", "TrainConfig", "Trainer", "atomic_save", "build_model", "load_checkpoint",
           "load_init_weights", "load_model", "parse_scales"]
