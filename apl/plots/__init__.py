"""Pictures (PNG, matplotlib): training and precision-recall curves, study bars (`curves`), and
rankings of a few queries with framed results (`rankings`)."""
from .curves import plot_curves, plot_precision_recall, plot_study

__all__ = ["plot_curves", "plot_precision_recall", "plot_study"]
