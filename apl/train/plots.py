"""Plots of a run: training loss and held-out mAP per epoch, and precision-recall curves."""
from __future__ import annotations

import math
from pathlib import Path

import torch


def plot_curves(histories: dict[str, list[dict]], path: Path, title: str = "") -> None:
    """Training loss and held-out mAP against epochs, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, h in histories.items():
        epochs = [r["epoch"] for r in h]
        a.plot(epochs, [r["train_loss"] for r in h], label=name)
        b.plot(epochs, [r["eval_map"] for r in h], label=name)
    a.set(xlabel="epoch", ylabel="training loss", title="training loss (each loss on its own scale)")
    b.set(xlabel="epoch", ylabel="mAP", title="held-out mAP (exact)")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def precision_recall_curve(descriptors: torch.Tensor, labels: torch.Tensor, levels: int = 21) -> tuple[list, list]:
    """Mean interpolated precision at recall levels 0, 0.05, ..., 1 over the queries (each item a
    query against the others), for plotting."""
    s = descriptors @ descriptors.t()
    s.fill_diagonal_(-math.inf)
    order = s.argsort(1, descending=True)[:, :-1]
    rel = (labels[order] == labels[:, None]).double()
    npos = rel.sum(1)
    keep = npos > 0
    rel, npos = rel[keep], npos[keep]
    hits = rel.cumsum(1)
    precision = hits / torch.arange(1, rel.shape[1] + 1, dtype=torch.float64)
    recall = hits / npos[:, None]
    # interpolated precision: best precision at any recall >= r
    best = precision.flip(1).cummax(1).values.flip(1)
    grid = torch.linspace(0, 1, levels, dtype=torch.float64)
    out = []
    for r in grid:
        idx = (recall >= r - 1e-12).double().argmax(1)
        out.append(float(best.gather(1, idx[:, None]).mean()))
    return grid.tolist(), out
