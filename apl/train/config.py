"""`TrainConfig`: everything that defines a training run's results, validated up front.

Options that do not change what a run computes (data-loader workers, prefetching, progress display)
are not part of it, so they may differ between a run and its resumption.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from ..losses import SPECS, check_options, spec_of
from ..losses.registry import canonical
from ..nn import BACKBONES, HEADS
from ..nn.backbones import RESNETS

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("cosine", "step", "none")
SAMPLERS = ("pk", "spread", "random")
WHITENING_INITS = ("pca",)
AMP_DTYPES = ("bf16", "fp16")

# The learning rate when --lr is not given, by backbone family (Adam, batches of 256, from scratch).
# The small CNNs' is the demo's base; the ResNets' was chosen on the validation split of the glyphs'
# training classes (experiments/tune_backbone_lr.py, experiments/results/backbone_lr.json): at 1e-3
# ResNet-101 diverged within a few steps.
DEFAULT_LR = {"small": 1e-3, "resnet": 1e-4}


def default_lr(backbone: str) -> float:
    """The learning rate a run of `backbone` gets when --lr is not given."""
    return DEFAULT_LR["resnet" if backbone in RESNETS else "small"]


# Fields that hold paths on disk (compared by what they point to, stored absolute), and the
# datasets that are names instead.
PATH_FIELDS = ("dataset", "eval_dataset", "root", "eval_root", "init")
# The datasets that come with apl (held in memory, grey): the one list of them.
GLYPHS = ("glyphs", "glyphs-val", "glyphs-lt")
BUILTIN_DATASETS = ("digits",) + GLYPHS


def _absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))  # symlinks kept: the path the user gave, made absolute


def same_path(a: Any, b: Any) -> bool:
    """Whether two path fields name the same file or folder (or are equal names)."""
    if a == b:
        return True
    if not isinstance(a, str) or not isinstance(b, str) or a in BUILTIN_DATASETS or b in BUILTIN_DATASETS:
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist: compare the absolute spellings
        return _absolute(a) == _absolute(b)


# Fields that only the built-in datasets read, with the datasets that read them.
_DATASET_FIELDS = {"train_classes": ("digits",), "imbalance": BUILTIN_DATASETS,
                   "glyphs_per_class": GLYPHS, "glyph_size": GLYPHS}


def _applies(name: str, dataset: str) -> bool:
    return name not in _DATASET_FIELDS or dataset in _DATASET_FIELDS[name]


def parse_ks(value: Any) -> tuple[int, ...]:
    """The k values of recall-at-k from "1,2,4,8,16" or a sequence; each an integer >= 1."""
    parts = [p.strip() for p in value.split(",") if p.strip()] if isinstance(value, str) else list(value)
    try:
        ks = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(f"--recall-k must be comma-separated integers such as 1,2,4,8,16, got {value!r}") from None
    if not ks or any(k < 1 for k in ks) or any(str(p).strip() != str(k) for p, k in zip(parts, ks)):
        raise ValueError(f"--recall-k must be comma-separated integers >= 1 such as 1,2,4,8,16, got {value!r}")
    return ks


def parse_scales(value: Any) -> tuple[float, ...]:
    """Scales for multi-scale descriptors from "1,0.707,0.5" or a sequence; each must be in (0, 4]."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        try:
            scales = tuple(float(p) for p in parts)
        except ValueError:
            raise ValueError(f"--scales must be comma-separated positive numbers such as 1,0.707,0.5, got {value!r}") from None
    else:
        scales = tuple(float(v) for v in value)
    if not scales:
        raise ValueError("--scales needs at least one scale, e.g. 1 or 1,0.707,0.5")
    bad = [s for s in scales if not (math.isfinite(s) and 0 < s <= 4)]
    if bad:
        raise ValueError(f"--scales must be in (0, 4], got {', '.join(str(s) for s in bad)} in {value!r}")
    if len(set(scales)) != len(scales):
        raise ValueError(f"--scales lists a scale twice: {value!r}")
    return scales


@dataclass
class TrainConfig:
    """Everything that defines a run; saved with every checkpoint.

    `dataset` is "digits" (the bundled UCI digits: train on `train_classes`, evaluate on the
    others), "glyphs" (generated characters, apl.data.glyphs: train on half of the classes, evaluate
    on the other half), "glyphs-val" (the tuning split: a quarter of the glyphs' training classes
    held out, the unseen classes never used), "glyphs-lt" (the glyphs' training classes with
    long-tailed sizes, 200 down to 2 images, evaluated on the same unseen classes), an image-list file (lines "relative/path label"),
    or a folder of class folders;
    for the last two `eval_dataset` names the held-out set in the same form. Paths in a list file
    are relative to `root` (training list) and `eval_root` (held-out list); each defaults to the
    folder of its list file.
    """

    dataset: str = "digits"
    eval_dataset: Optional[str] = None
    root: Optional[str] = None
    eval_root: Optional[str] = None
    train_classes: tuple = (0, 1, 2, 3, 4)
    imbalance: float = 0.0  # built-in datasets: class k of the training set keeps (1 - imbalance)^k of its images
    glyphs_per_class: int = 16  # glyphs only: images generated per class
    glyph_size: int = 32  # glyphs only: image side in pixels
    image_size: int = 64
    backbone: str = "small_cnn"
    dim: Optional[int] = 64
    head: str = "batchnorm"  # "batchnorm" (BatchNorm before the whitening) or "plain" (runs of earlier versions)
    whitening_init: Optional[str] = None  # "pca": start the head from the training images' pooled features
    init: Optional[str] = None  # local state dict (backbone or whole model) to start from
    loss: str = "ap"
    num_bins: Optional[int] = None  # None: the loss's own default (20 for the AP losses)
    class_balanced: bool = False
    margin: Optional[float] = None
    temperature: Optional[float] = None
    recall_k: Optional[tuple] = None  # recall-at-k: the k values (None: 1, 2, 4, 8, 16)
    k_temperature: Optional[float] = None  # recall-at-k: the temperature of each k
    memory: int = 0  # cross-batch memory: descriptors of the last N images ranked with each batch (AP losses)
    batch_size: int = 256
    sampler: str = "pk"
    images_per_class: int = 8
    chunk_size: Optional[int] = None
    amp: Optional[str] = None  # "bf16" or "fp16": forward passes under autocast; the loss stays float32
    epochs: int = 20
    steps_per_epoch: Optional[int] = None
    optimizer: str = "adam"
    lr: Optional[float] = None  # None: default_lr(backbone)
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    whitening: bool = False
    scales: tuple = (1.0,)
    seed: int = 0
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    threads: Optional[int] = None
    extra: dict = field(default_factory=dict)

    def validate(self) -> "TrainConfig":
        """Checks every field; returns self. Errors name the option as on the command line."""
        spec_of(self.loss)  # unknown names listed
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; choose from {', '.join(BACKBONES)}")
        for name, value, allowed in (("optimizer", self.optimizer, OPTIMIZERS), ("schedule", self.schedule, SCHEDULES),
                                     ("sampler", self.sampler, SAMPLERS), ("head", self.head, HEADS)):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; choose from {', '.join(allowed)}")
        if self.whitening_init is not None and self.whitening_init not in WHITENING_INITS:
            raise ValueError(f"--whitening-init must be {' or '.join(WHITENING_INITS)}, got {self.whitening_init!r}")
        if self.whitening_init is not None and self.dim is None:
            raise ValueError("--whitening-init needs a whitening layer: set --dim")
        if self.amp is not None and self.amp not in AMP_DTYPES:
            raise ValueError(f"--amp must be one of {', '.join(AMP_DTYPES)}, got {self.amp!r}")
        self.loss = canonical(self.loss)
        if isinstance(self.memory, bool) or not isinstance(self.memory, int) or self.memory < 0:
            raise ValueError(f"--memory must be an integer >= 0 (0: no cross-batch memory), got {self.memory!r}")
        check_options(self.loss, {"num_bins": self.num_bins, "margin": self.margin, "temperature": self.temperature,
                                  "class_balanced": self.class_balanced, "memory": self.memory,
                                  "recall_k": self.recall_k, "k_temperature": self.k_temperature})
        if self.recall_k is not None:
            self.recall_k = parse_ks(self.recall_k)
        for name in ("margin", "temperature", "k_temperature"):  # before anything is written
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
                raise ValueError(f"--{name.replace('_', '-')} must be a positive number, got {value!r}")
        if self.num_bins is not None and (isinstance(self.num_bins, bool) or not isinstance(self.num_bins, int) or self.num_bins < 2):
            raise ValueError(f"--bins must be an integer >= 2, got {self.num_bins!r}")
        for name, low in (("batch_size", 2), ("epochs", 1), ("images_per_class", 2), ("image_size", 1),
                          ("glyphs_per_class", 2), ("glyph_size", 8)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"--{name.replace('_', '-')} must be an integer >= {low}, got {value!r}")
        for name in ("chunk_size", "steps_per_epoch", "threads", "dim"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if self.lr is None:
            self.lr = default_lr(self.backbone)
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"--lr must be a positive number, got {self.lr!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"--weight-decay must be >= 0, got {self.weight_decay!r}")
        if not 0 <= self.imbalance < 1:
            raise ValueError(f"imbalance must be in [0, 1), got {self.imbalance}")
        self.scales = parse_scales(self.scales)
        if self.dataset not in BUILTIN_DATASETS and self.eval_dataset is None:
            raise ValueError("--eval-dataset is required with an image list or folder (the held-out set)")
        return self

    def to_dict(self) -> dict:
        """Plain data (lists, not tuples) as stored in config.json and checkpoints, without the fields
        that do not apply to this run's dataset (the digits' classes in a run on an image folder)."""
        d = {k: v for k, v in dataclasses.asdict(self).items() if _applies(k, self.dataset)}
        if "train_classes" in d:
            d["train_classes"] = list(d["train_classes"])
        d["scales"] = list(d["scales"])
        if d["recall_k"] is not None:
            d["recall_k"] = list(d["recall_k"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """From `to_dict` output (older files without the newer fields get their defaults)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown configuration fields {unknown} (written by a newer apl?)")
        d = dict(d)
        # Runs of earlier versions: their network had no BatchNorm in the head, their default
        # sampler was "spread" (a stored value always wins over these).
        d.setdefault("head", "plain")
        d.setdefault("sampler", "spread")
        # Before the loss registry every run stored num_bins=20, whatever its loss.
        if d.get("num_bins") == 20 and d.get("loss") in SPECS and "num_bins" not in SPECS[d["loss"]].options:
            d["num_bins"] = None
        for name in ("train_classes", "scales", "recall_k"):
            if d.get(name) is not None:
                d[name] = tuple(d[name])
        cfg = cls(**d)
        if cfg.lr is None:  # the default a run of this backbone gets, as validate() sets it
            cfg.lr = default_lr(cfg.backbone)
        return cfg

    def differences(self, other: "TrainConfig") -> list[str]:
        """Names of the fields whose values differ from `other`'s; paths compare by what they point to
        (a relative and an absolute spelling of one folder are the same)."""
        a, b = self.to_dict(), other.to_dict()
        names = list(a) + [k for k in b if k not in a]
        return [k for k in names if a.get(k) != b.get(k) and not (k in PATH_FIELDS and same_path(a.get(k), b.get(k)))]

    def resolved(self) -> "TrainConfig":
        """The same run with its paths absolute (what a run folder stores), so that it can be
        evaluated and resumed from any working directory. The built-in datasets are names, not paths."""
        changes = {k: _absolute(getattr(self, k)) for k in PATH_FIELDS
                   if getattr(self, k) is not None and not (k == "dataset" and self.dataset in BUILTIN_DATASETS)}
        return dataclasses.replace(self, **changes)
