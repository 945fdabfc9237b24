"""Training a RetrievalNet end to end: data, loss, optional multistage steps, evaluation on
held-out classes, a checkpoint every epoch with exact resume, JSON-lines metrics and curves."""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from . import evaluation
from .data import ClassBalancedBatchSampler, ClassSpreadBatchSampler, ImageList, split_digits
from .data import eval_transform, train_transform
from .losses import LOSSES, build_loss
from .nn import BACKBONES, RetrievalNet
from .train import multistage_step

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("cosine", "step", "none")
SAMPLERS = ("spread", "pk")


@dataclass
class TrainConfig:
    """Everything that defines a run; saved with every checkpoint.

    `dataset` is "digits" (the bundled UCI digits: train on `train_classes`, evaluate on the
    others), an image-list file (lines "relative/path label"), or a folder of class folders;
    for the last two `eval_dataset` names the held-out set in the same form.
    """

    dataset: str = "digits"
    eval_dataset: Optional[str] = None
    root: Optional[str] = None
    train_classes: tuple = (0, 1, 2, 3, 4)
    imbalance: float = 0.0  # digits only: class k of the training set keeps (1 - imbalance)^k of its images
    image_size: int = 64
    backbone: str = "small_cnn"
    dim: Optional[int] = 64
    loss: str = "ap"
    num_bins: int = 20
    class_balanced: bool = False
    margin: Optional[float] = None
    batch_size: int = 256
    sampler: str = "spread"
    images_per_class: int = 8
    chunk_size: Optional[int] = None
    epochs: int = 20
    steps_per_epoch: Optional[int] = None
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    whitening: bool = False
    seed: int = 0
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    threads: Optional[int] = None
    extra: dict = field(default_factory=dict)

    def validate(self) -> "TrainConfig":
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose from {', '.join(LOSSES)}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; choose from {', '.join(BACKBONES)}")
        for name, value, allowed in (("optimizer", self.optimizer, OPTIMIZERS), ("schedule", self.schedule, SCHEDULES), ("sampler", self.sampler, SAMPLERS)):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; choose from {', '.join(allowed)}")
        for name in ("batch_size", "epochs", "num_bins", "images_per_class"):
            if getattr(self, name) < (2 if name in ("batch_size", "num_bins") else 1):
                raise ValueError(f"{name} must be >= {2 if name in ('batch_size', 'num_bins') else 1}, got {getattr(self, name)}")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if not 0 <= self.imbalance < 1:
            raise ValueError(f"imbalance must be in [0, 1), got {self.imbalance}")
        if self.dataset != "digits" and self.eval_dataset is None:
            raise ValueError("eval_dataset is required with an image list or folder (the held-out set)")
        return self

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        if "train_classes" in d:
            d["train_classes"] = tuple(d["train_classes"])
        return cls(**d)


def _open_images(spec: str, root: Optional[str], transform, mode: str) -> ImageList:
    path = Path(spec)
    if path.is_dir():
        return ImageList.from_folders(path, transform=transform, mode=mode)
    if path.is_file():
        return ImageList.from_list_file(path, root=root, transform=transform, mode=mode)
    raise FileNotFoundError(f"dataset not found: {spec} (expected 'digits', an image-list file or a folder)")


def build_datasets(cfg: TrainConfig, generator: Optional[torch.Generator] = None):
    """(train, eval, in_channels)."""
    if cfg.dataset == "digits":
        train, held_out = split_digits(cfg.train_classes)
        if cfg.imbalance:
            train = _imbalanced(train, cfg.imbalance, cfg.seed)
        return train, held_out, 1
    train = _open_images(cfg.dataset, cfg.root, train_transform(cfg.image_size, cfg.image_size, generator=generator), "RGB")
    held_out = _open_images(cfg.eval_dataset, cfg.root, eval_transform(cfg.image_size), "RGB")
    return train, held_out, 3


def _imbalanced(dataset, imbalance: float, seed: int):
    """The k-th class (in label order) keeps a (1 - imbalance)^k share of its images."""
    from .data import DigitsDataset

    g = torch.Generator().manual_seed(seed)
    keep = []
    for k, c in enumerate(sorted(set(dataset.targets))):
        idx = (dataset.labels == c).nonzero().flatten()
        n = max(2, round(len(idx) * (1 - imbalance) ** k))
        keep.append(idx[torch.randperm(len(idx), generator=g)[:n]])
    keep = torch.cat(keep).sort().values
    return DigitsDataset(dataset.images[keep], dataset.labels[keep], dataset.transform)


def build_model(cfg: TrainConfig, in_channels: int) -> RetrievalNet:
    return RetrievalNet(cfg.backbone, dim=cfg.dim, in_channels=in_channels)


def _sampler(cfg: TrainConfig, labels):
    if cfg.sampler == "pk":
        return ClassBalancedBatchSampler(labels, max(1, cfg.batch_size // cfg.images_per_class), cfg.images_per_class,
                                         num_batches=cfg.steps_per_epoch, seed=cfg.seed)
    return ClassSpreadBatchSampler(labels, cfg.batch_size, num_batches=cfg.steps_per_epoch, seed=cfg.seed)


def _optimizer(cfg: TrainConfig, model: nn.Module, steps: int):
    if cfg.optimizer == "adam":
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    if cfg.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    elif cfg.schedule == "step":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, steps // 3), gamma=0.1)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    return opt, sched


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.no_grad()
def extract(model: nn.Module, dataset, batch_size: int = 256, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Descriptors (N, dim) and labels (N,) of a dataset, in eval mode, in batches, on the model's
    device."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    descs, labels = [], []
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    if progress:
        from tqdm import tqdm

        loader = tqdm(loader, desc="extract", unit="batch", leave=False)
    for x, y in loader:
        descs.append(model(x.to(device)))
        labels.append(torch.as_tensor(y).to(device))
    model.train(was_training)
    return torch.cat(descs), torch.cat(labels)


def evaluate(model: nn.Module, eval_set, train_set=None, whitening: bool = False) -> dict:
    """Exact retrieval metrics on the held-out set; with `whitening`, a PCA-whitening learned on
    the training descriptors is applied first (the paper's post-processing)."""
    d, y = extract(model, eval_set)
    if whitening:
        dt, _ = extract(model, train_set)
        d = evaluation.PCAWhitening.fit(dt).transform(d)
    out = {"map": evaluation.mean_average_precision(d, y)}
    out.update({f"p@{k}": v for k, v in evaluation.precision_at_k(d, y, [1, 10]).items()})
    return out


def _rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Runs `cfg` in `out`: metrics.jsonl (one line per step and per epoch), checkpoint.pt after
    every epoch (model, optimizer, schedule, random states, history), curves.png at the end.
    `resume=True` continues from out/checkpoint.pt exactly as if never interrupted."""

    def __init__(self, cfg: TrainConfig, out: str | Path, log: Callable[[str], None] = print, progress: bool = True) -> None:
        self.cfg = cfg.validate()
        self.out = Path(out)
        self.log = log
        self.progress = progress

    def run(self, resume: bool = False, stop_after: Optional[int] = None) -> list[dict]:
        """Trains; returns the per-epoch history. `stop_after` ends early after that many epochs
        of this call (used to test interruption)."""
        cfg = self.cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.out.mkdir(parents=True, exist_ok=True)
        ckpt_path = self.out / "checkpoint.pt"
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)  # augmentation randomness
        train_set, eval_set, in_ch = build_datasets(cfg, gen)
        device = resolve_device(cfg.device)
        model = build_model(cfg, in_ch).to(device)
        loss_fn = build_loss(cfg.loss, num_bins=cfg.num_bins, class_balanced=cfg.class_balanced, margin=cfg.margin)
        sampler = _sampler(cfg, train_set.targets)
        steps_total = cfg.epochs * len(sampler)
        opt, sched = _optimizer(cfg, model, steps_total)
        history: list[dict] = []
        start = 0
        if resume:
            if not ckpt_path.is_file():
                raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
            ck = torch.load(ckpt_path, weights_only=False, map_location="cpu")  # RNG states must be CPU tensors
            if ck["config"] != dataclasses.asdict(cfg):
                raise ValueError(f"--resume: {ckpt_path} was written with another configuration")
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["schedule"])
            _set_rng_state(ck["rng"])
            gen.set_state(ck["gen"])
            history, start = ck["history"], ck["epoch"]
            self.log(f"resumed from {ckpt_path} after epoch {start}")
        else:
            (self.out / "metrics.jsonl").write_text("")
        (self.out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
        loader = torch.utils.data.DataLoader(train_set, batch_sampler=sampler)
        metrics = (self.out / "metrics.jsonl").open("a")
        try:
            for epoch in range(start, cfg.epochs):
                if stop_after is not None and epoch - start >= stop_after:
                    break
                sampler.set_epoch(epoch)
                model.train()
                t0, losses = time.perf_counter(), []
                batches = loader
                if self.progress:
                    from tqdm import tqdm

                    batches = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False)
                for step, (x, y) in enumerate(batches):
                    y = torch.as_tensor(y).to(device)
                    opt.zero_grad(set_to_none=True)
                    if cfg.chunk_size:  # images stay where they are; chunks move to the device
                        loss, _ = multistage_step(model, x, y, loss_fn, cfg.chunk_size, device=device)
                    else:
                        loss = loss_fn(model(x.to(device)), y)
                        loss.backward()
                    opt.step()
                    sched.step()
                    losses.append(float(loss.detach()))
                    metrics.write(json.dumps({"epoch": epoch + 1, "step": step + 1, "loss": losses[-1], "lr": sched.get_last_lr()[0]}) + "\n")
                row = {"epoch": epoch + 1, "train_loss": sum(losses) / len(losses), "time_s": time.perf_counter() - t0}
                row.update({f"eval_{k}": v for k, v in evaluate(model, eval_set, train_set, cfg.whitening).items()})
                history.append(row)
                metrics.write(json.dumps(row) + "\n")
                metrics.flush()
                self.log(f"epoch {row['epoch']:3d}  loss {row['train_loss']:.4f}  held-out mAP {row['eval_map']:.4f}  P@1 {row['eval_p@1']:.4f}  ({row['time_s']:.1f}s)")
                torch.save({"config": dataclasses.asdict(cfg), "epoch": epoch + 1, "model": model.state_dict(),
                            "optimizer": opt.state_dict(), "schedule": sched.state_dict(), "rng": _rng_state(),
                            "gen": gen.get_state(), "history": history}, ckpt_path)
        finally:
            metrics.close()
        self.model = model
        if history:
            plot_curves({cfg.loss: history}, self.out / "curves.png")
        return history


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


def load_model(checkpoint: str | Path) -> tuple[RetrievalNet, TrainConfig]:
    """The model and configuration stored in a checkpoint written by `Trainer`."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ck = torch.load(path, weights_only=False, map_location="cpu")
    cfg = TrainConfig.from_dict(ck["config"])
    model = build_model(cfg, 1 if cfg.dataset == "digits" else 3)
    model.load_state_dict(ck["model"])
    model.eval()
    return model, cfg


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
