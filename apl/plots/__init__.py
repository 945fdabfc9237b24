"""Pictures (PNG, matplotlib): training and precision-recall curves, study bars (`curves`), and
rankings of a few queries with framed results (`rankings`), and those rankings for a model end to
end (`show`: extract, rank, draw). Needs the extra apl[train] (matplotlib)."""
from ..extras import require as _require

_require("train", "apl.plots")
from .curves import plot_curves, plot_precision_recall, plot_study

__all__ = ["plot_curves", "plot_precision_recall", "plot_study"]
