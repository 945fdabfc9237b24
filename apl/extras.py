"""The optional dependencies, grouped as pip extras (pyproject.toml), and one clear line when one
is missing.

The core install (torch and numpy) runs the losses, `apl.ops`, the functional API, multistage,
`apl.distributed`, `apl.memory` and the evaluation metrics. The rest needs an extra:
- `train`: Pillow (images), matplotlib (the generated glyphs, plots), tqdm (progress), for
  `apl.data`, `apl.plots`, `apl.train`, `apl.demo` and the `apl` commands other than `selftest`;
- `pml`: pytorch-metric-learning, for `apl.pml` and the baseline losses of the trainer.
"""
from __future__ import annotations

import importlib.util

# extra -> (module to import, distribution to install)
EXTRAS: dict[str, tuple[tuple[str, str], ...]] = {
    "train": (("PIL", "pillow"), ("matplotlib", "matplotlib"), ("tqdm", "tqdm")),
    "pml": (("pytorch_metric_learning", "pytorch-metric-learning"),),
}


class MissingExtraError(ImportError):
    """A part of apl was used whose optional dependencies (a pip extra) are not installed."""


def missing(extra: str) -> list[str]:
    """The distributions of `extra` that are not importable here (without importing them)."""
    return [dist for module, dist in EXTRAS[extra] if importlib.util.find_spec(module) is None]


def require(extra: str, what: str) -> None:
    """Raises MissingExtraError, naming the extra and how to install it, when `what` (e.g.
    "apl.data") cannot run because a package of `extra` is missing."""
    absent = missing(extra)
    if absent:
        raise MissingExtraError(
            f"{what} needs the extra apl[{extra}] ({', '.join(absent)} not installed): from apl's source folder, "
            f"pip install --no-build-isolation -e '.[{extra}]' (or bash install.sh, which installs every extra "
            "the commands need)")
