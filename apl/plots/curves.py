"""Plots of runs: training loss and held-out metric per epoch, precision-recall curves, and the bars
of a parameter study. Drawn on bare matplotlib Figures (Agg), so the caller's backend is left alone."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence


def _figure(width: float, height: float, columns: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.subplots(1, columns)


def epochs_text(n: int) -> str:
    """"1 epoch", "12 epochs"."""
    return f"{n} epoch{'' if n == 1 else 's'}"


def plot_curves(histories: Mapping[str, list[dict]], path: Path, title: str = "", metric: str = "map",
                metric_label: str = "mAP"):
    """Training loss and the held-out `metric` ("eval_<metric>" of each epoch's row) against
    epochs, one line per run, each epoch a marked point (so that a run of one epoch shows).
    Returns the matplotlib Figure."""
    from matplotlib.ticker import MaxNLocator

    fig, (a, b) = _figure(10, 3.8, 2)
    for name, h in histories.items():
        epochs = [r["epoch"] for r in h]
        a.plot(epochs, [r["train_loss"] for r in h], marker="o", markersize=3, label=name)
        b.plot(epochs, [r[f"eval_{metric}"] for r in h], marker="o", markersize=3, label=name)
    a.set(xlabel="epoch", ylabel="training loss", title="training loss (each loss on its own scale)")
    b.set(xlabel="epoch", ylabel=metric_label, title=f"held-out {metric_label} (exact)")
    for ax in (a, b):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig


def plot_precision_recall(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: Path,
                          title: str = "held-out precision-recall") -> None:
    """Interpolated precision against recall, one line per name: {name: (recall, precision)}."""
    fig, ax = _figure(5, 4)
    for name, (r, p) in curves.items():
        ax.plot(r, p, label=name)
    ax.set(xlabel="recall", ylabel="interpolated precision", title=title, xlim=(0, 1), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_study(rows: Sequence[dict], what: str, path: Path, key: str = "setting", metric: str = "map",
               metric_label: str = "held-out mAP") -> None:
    """One bar per setting (`row[key]`): mean `metric` with its standard deviation over seeds."""
    fig, ax = _figure(6, 3.8)
    labels = [str(r[key]) for r in rows]
    values = [r[metric] for r in rows]
    ax.bar(labels, values, yerr=[r.get(metric + "_std") or 0 for r in rows], capsize=4, color="tab:blue")
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.3f}", ha="center", va="bottom")
    ax.set(ylabel=metric_label, title=what)
    ax.set_ylim(0, max(values) * 1.15 if values and max(values) > 0 else 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
