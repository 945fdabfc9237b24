"""`TrainConfig`: everything that defines a training run, in five groups, validated up front.

    data       what is trained on and evaluated, and how batches are drawn
    model      the network
    loss       the loss and its options (each option has one meaning: apl/train/losses.py)
    optimiser  the optimisation and its budget
    run        seed, evaluation, and the runtime options

Every field carries its own description (`dataclasses.field(metadata=...)`: group, help, flag,
choices): `apl train`'s options are built from them (apl/cli/train_cmd.py), and config.json
stores the fields by group. Runtime options (`runtime=True`: device, threads) do not change what a
run computes and may differ on resume; data-loader workers, prefetching and progress display are
not part of the configuration at all.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, Optional

from ..nn import BACKBONES, HEADS
from ..nn.backbones import RESNETS
from .losses import LOSSES, OPTIONS, SPECS, check_options, spec_of

GROUPS = ("data", "model", "loss", "optimiser", "run")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("cosine", "step", "none")
SAMPLERS = ("pk", "spread", "random")
WHITENING_INITS = ("pca",)
AMP_DTYPES = ("bf16", "fp16")

# The datasets that come with apl (held in memory, grey): the one list of them.
GLYPHS = ("glyphs", "glyphs-val", "glyphs-lt")
BUILTIN_DATASETS = ("digits",) + GLYPHS
DATASETS_HELP = ("'digits' (bundled, 5 classes), 'glyphs' (generated characters: 149 classes, evaluated on 150 unseen "
                 "ones), 'glyphs-val' (its tuning split), 'glyphs-lt' (its training classes long-tailed: 200 down to 2 "
                 "images), an image-list file ('relative/path label' lines) or a folder of class folders")

# The learning rate when --lr is not given, by backbone family (Adam, batches of 256, from scratch).
# The small CNNs' is the demo's base. The ResNets' is a safe start, not a tuned value: from scratch
# at 1e-3 ResNet-101 diverged within a few steps and at 1e-4 it trained (by hand, on a folder of RGB
# images); experiments/tune_backbone_lr.py chooses it on the glyphs' validation split (not run yet).
DEFAULT_LR = {"small": 1e-3, "resnet": 1e-4}

# Fields that only the built-in datasets read, with the datasets that read them.
_DATASET_FIELDS = {"train_classes": ("digits",), "imbalance": BUILTIN_DATASETS,
                   "glyphs_per_class": GLYPHS, "glyph_size": GLYPHS}
# Fields that hold paths on disk (compared by what they point to, stored absolute).
PATH_FIELDS = ("dataset", "eval_dataset", "root", "eval_root", "init")


def default_lr(backbone: str) -> float:
    """The learning rate a run of `backbone` gets when --lr is not given."""
    return DEFAULT_LR["resnet" if backbone in RESNETS else "small"]


def _opt(default: Any, group: str, help: str, *, choices=None, type=None, cli: bool = True, runtime: bool = False,
         flag: Optional[str] = None, metavar: Optional[str] = None):
    """A field with its description. `cli=False`: not a command-line option (set through the API)."""
    meta = {"group": group, "help": help, "choices": choices, "type": type, "cli": cli, "runtime": runtime,
            "flag": flag, "metavar": metavar}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: default.copy(), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _loss_defaults(option: str) -> str:
    """"(default 20 for ap, 10 for fastap)": each loss's default of `option`."""
    parts = [f"{SPECS[n].defaults[option]!s} for {n}" for n in LOSSES if option in SPECS[n].defaults]
    return "default " + ", ".join(parts)


@dataclass
class TrainConfig:
    """Everything that defines a run; saved with every checkpoint and in the run's config.json.

    `dataset` is a built-in dataset ("digits": the bundled UCI digits, trained on `train_classes`
    and evaluated on the others; "glyphs": generated characters, half of the classes to train on,
    the other half held out; "glyphs-val": the tuning split, a quarter of the glyphs' training
    classes held out; "glyphs-lt": the glyphs' training classes with long-tailed sizes), an
    image-list file (lines "relative/path label") or a folder of class folders; for the last two
    `eval_dataset` names the held-out set in the same form, and it replaces a built-in dataset's
    held-out classes when given. Paths in a list file are relative to `root` (training list) and
    `eval_root` (held-out list); each defaults to the folder of its list file. Every field's meaning
    is its `help` (`dataclasses.fields(TrainConfig)`, or `apl train --help`).
    """

    # --- data -------------------------------------------------------------------------------
    dataset: str = _opt("digits", "data", "training images: " + DATASETS_HELP)
    eval_dataset: Optional[str] = _opt(None, "data", "held-out images (list file or folder), evaluated after every "
                                                     "epoch; required with an image-list or folder --dataset")
    root: Optional[str] = _opt(None, "data", "folder the --dataset list's paths are relative to (default: the list "
                                             "file's folder)")
    eval_root: Optional[str] = _opt(None, "data", "folder the --eval-dataset list's paths are relative to (default: "
                                                  "that list file's folder)")
    train_classes: tuple = _opt((0, 1, 2, 3, 4), "data", "digits only: the classes trained on", cli=False)
    imbalance: float = _opt(0.0, "data", "built-in datasets: class k of the training set keeps (1 - imbalance)^k of "
                                         "its images", cli=False)
    glyphs_per_class: int = _opt(16, "data", "the glyphs datasets: images generated per class (held-out classes of "
                                             "glyphs-lt too)", type=int)
    glyph_size: int = _opt(32, "data", "the glyphs datasets: image side in pixels", type=int)
    image_size: int = _opt(64, "data", "image files, training: a random region of 0.35 to 1 of the image's area, width "
                                       "/ height 3/4 to 4/3, resized to a square of this side (then flip and colour "
                                       "jitter); evaluation: the longest side resized to this size", type=int)
    batch_size: int = _opt(256, "data", "global batch size (all processes together)", type=int)
    sampler: str = _opt("pk", "data", "pk: batch-size / images-per-class random classes (every class when there are "
                                      "fewer), the batch split evenly over them, so every query has positives (classes "
                                      "with fewer images give all they have, classes of one image are never drawn); "
                                      "spread: the batch spread over all classes; random: images drawn uniformly from "
                                      "the whole set, whatever their class (the paper's on Landmarks-clean). No image "
                                      "is ever twice in a batch", choices=SAMPLERS)
    images_per_class: int = _opt(8, "data", "--sampler pk: images of each class in a batch (K >= 2), at least", type=int)

    # --- model ------------------------------------------------------------------------------
    backbone: str = _opt("small_cnn", "model", "network before GeM pooling (ResNets need torchvision)",
                         choices=BACKBONES)
    dim: Optional[int] = _opt(64, "model", "descriptor dimension (output of the whitening layer)", type=int)
    head: str = _opt("batchnorm", "model", "batchnorm: a BatchNorm (no affine) standardises the pooled features over "
                                           "the batch before the whitening, so that the descriptors of an untrained "
                                           "network are spread (docs/training.md); plain: without it", choices=HEADS)
    whitening_init: Optional[str] = _opt(None, "model", "pca: before training, start the head from the pooled "
                                                        "features of training images (BatchNorm statistics and a "
                                                        "PCA-whitening; the paper's start with a pretrained backbone)",
                                         choices=WHITENING_INITS)
    init: Optional[str] = _opt(None, "model", "start from a local state dict (whole model or backbone, e.g. ImageNet "
                                              "ResNet weights)")

    # --- loss -------------------------------------------------------------------------------
    loss: str = _opt("ap", "loss", "training loss: " + "; ".join(f"{s.name}: {s.summary}" for s in SPECS.values()),
                     metavar="LOSS")
    num_bins: Optional[int] = _opt(None, "loss", "histogram bins of ap, tie-aware and fastap (" +
                                   _loss_defaults("num_bins") + ")", type=int, flag="--bins")
    class_balanced: bool = _opt(False, "loss", "apl's losses: weigh queries by 1 / (images of their class in the "
                                               "batch), so that every class of the batch weighs the same (the paper's "
                                               "eq. 12); with --sampler pk or spread the classes of a batch have about "
                                               "the same count, so it matters with --sampler random on imbalanced "
                                               "classes")
    triplet_margin: Optional[float] = _opt(None, "loss", "the triplet losses: the margin between the positive's "
                                                         "and the negative's distance (" +
                                           _loss_defaults("triplet_margin") + ")", type=float)
    contrastive_margin: Optional[float] = _opt(None, "loss", "contrastive: the distance beyond which a negative pair "
                                                             "costs nothing (" + _loss_defaults("contrastive_margin") +
                                               ")", type=float)
    ms_base: Optional[float] = _opt(None, "loss", "multi-similarity: the base similarity lambda (" +
                                    _loss_defaults("ms_base") + "; the authors' code 0.5, their paper 1)", type=float)
    rank_temperature: Optional[float] = _opt(None, "loss", "smoothap and recall-at-k: the temperature of the sigmoid "
                                                           "that approximates a rank (" +
                                             _loss_defaults("rank_temperature") + ")", type=float)
    recall_k: Optional[tuple] = _opt(None, "loss", "recall-at-k: the k values, e.g. 1,2,4,8,16 (default: " +
                                     ",".join(map(str, SPECS["recall-at-k"].defaults["recall_k"])) + ")")
    k_temperature: Optional[float] = _opt(None, "loss", "recall-at-k: the temperature of the sigmoid of each k (" +
                                          _loss_defaults("k_temperature") + ")", type=float)
    memory: int = _opt(0, "loss", "apl's losses: cross-batch memory of the last N descriptors, ranked with each batch "
                                  "(0: off)", type=int)

    # --- optimiser --------------------------------------------------------------------------
    optimizer: str = _opt("adam", "optimiser", "adam is AdamW", choices=OPTIMIZERS)
    lr: Optional[float] = _opt(None, "optimiser", f"base learning rate (default: {DEFAULT_LR['small']:g} for the small "
                                                  f"CNNs, {DEFAULT_LR['resnet']:g} for the ResNets, ResNet-101 diverged from "
                                                  "scratch at 1e-3)", type=float)
    weight_decay: float = _opt(1e-4, "optimiser", "weight decay", type=float)
    schedule: str = _opt("cosine", "optimiser", "learning-rate schedule over all steps of the run", choices=SCHEDULES)
    epochs: int = _opt(20, "optimiser", "epochs in all; with --resume, a larger value extends the run", type=int)
    steps_per_epoch: Optional[int] = _opt(None, "optimiser", "batches per epoch (default: about one pass over the "
                                                             "training images)", type=int)
    chunk_size: Optional[int] = _opt(None, "optimiser", "multistage backprop: images per recomputed chunk (memory of "
                                                        "one chunk, any batch size)", type=int)
    amp: Optional[str] = _opt(None, "optimiser", "mixed precision for the forward passes (the loss stays float32); "
                                                 "fp16 uses a gradient scaler", choices=AMP_DTYPES)

    # --- run --------------------------------------------------------------------------------
    seed: int = _opt(0, "run", "seed of the initialisation, batches and augmentation", type=int)
    whitening: bool = _opt(False, "run", "evaluate with a PCA-whitening learned on the training images' descriptors")
    scales: tuple = _opt((1.0,), "run", "scales of the held-out descriptors, e.g. 1,0.707,0.5 (L2-normalised mean over "
                                        "scales)")
    device: str = _opt("auto", "run", "auto (CUDA when available), cpu, cuda, cuda:N (under torchrun: cuda:LOCAL_RANK)",
                       runtime=True)
    threads: Optional[int] = _opt(None, "run", "CPU threads per process (default: torch's choice)", type=int,
                                  runtime=True)
    extra: dict = _opt({}, "run", "free-form notes stored with the run", cli=False)

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
        if isinstance(self.memory, bool) or not isinstance(self.memory, int) or self.memory < 0:
            raise ValueError(f"--memory must be an integer >= 0 (0: no cross-batch memory), got {self.memory!r}")
        check_options(self.loss, self.loss_options())
        if self.recall_k is not None:
            self.recall_k = parse_ks(self.recall_k)
        for name in ("triplet_margin", "contrastive_margin", "ms_base", "rank_temperature", "k_temperature"):
            value = getattr(self, name)  # before anything is written
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
                raise ValueError(f"{flag_of(name)} must be a positive number, got {value!r}")
        if self.num_bins is not None and (isinstance(self.num_bins, bool) or not isinstance(self.num_bins, int) or self.num_bins < 2):
            raise ValueError(f"--bins must be an integer >= 2, got {self.num_bins!r}")
        for name, low in (("batch_size", 2), ("epochs", 1), ("images_per_class", 2), ("image_size", 1),
                          ("glyphs_per_class", 2), ("glyph_size", 8)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{flag_of(name)} must be an integer >= {low}, got {value!r}")
        for name in ("chunk_size", "steps_per_epoch", "threads", "dim"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{flag_of(name)} must be a positive integer, got {value!r}")
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

    def loss_options(self) -> dict:
        """The loss options of this run (`apl.train.losses.OPTIONS`), as `build_loss` takes them."""
        return {name: getattr(self, name) for name in OPTIONS}

    def flat(self) -> dict:
        """Field -> value as plain data (lists, not tuples), without the fields that do not apply to
        this run's dataset (the digits' classes in a run on an image folder)."""
        d = {k: v for k, v in dataclasses.asdict(self).items() if _applies(k, self.dataset)}
        for name in ("train_classes", "scales", "recall_k"):
            if d.get(name) is not None:
                d[name] = list(d[name])
        return d

    def to_dict(self) -> dict:
        """The configuration by group, as stored in config.json and in checkpoints."""
        flat = self.flat()
        return {g: {f.name: flat[f.name] for f in dataclasses.fields(self) if f.metadata["group"] == g and f.name in flat}
                for g in GROUPS}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """From `to_dict` output (a field left out gets its default)."""
        if not isinstance(d, dict) or not set(d) <= set(GROUPS) or not all(isinstance(v, dict) for v in d.values()):
            raise ValueError("not a run configuration of this apl: it stores its fields by group "
                             f"({', '.join(GROUPS)}); an earlier development version wrote them flat")
        fields = {f.name: f.metadata["group"] for f in dataclasses.fields(cls)}
        flat = {}
        for group, values in d.items():
            unknown = sorted(k for k in values if fields.get(k) != group)
            if unknown:
                raise ValueError(f"unknown {group} fields {unknown} (written by a newer apl?)")
            flat.update(values)
        for name in ("train_classes", "scales", "recall_k"):
            if flat.get(name) is not None:
                flat[name] = tuple(flat[name])
        cfg = cls(**flat)
        if cfg.lr is None:  # the default a run of this backbone gets, as validate() sets it
            cfg.lr = default_lr(cfg.backbone)
        return cfg

    def differences(self, other: "TrainConfig") -> list[str]:
        """Names of the fields whose values differ from `other`'s; paths compare by what they point to
        (a relative and an absolute spelling of one folder are the same)."""
        a, b = self.flat(), other.flat()
        names = list(a) + [k for k in b if k not in a]
        return [k for k in names if a.get(k) != b.get(k) and not (k in PATH_FIELDS and same_path(a.get(k), b.get(k)))]

    def resolved(self) -> "TrainConfig":
        """The same run with its paths absolute (what a run folder stores), so that it can be
        evaluated and resumed from any working directory. The built-in datasets are names, not paths."""
        changes = {k: _absolute(getattr(self, k)) for k in PATH_FIELDS
                   if getattr(self, k) is not None and not (k == "dataset" and self.dataset in BUILTIN_DATASETS)}
        return dataclasses.replace(self, **changes)


RUNTIME_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.metadata["runtime"])


def flag_of(name: str) -> str:
    """The command-line flag of a field ("num_bins" -> "--bins")."""
    meta = {f.name: f.metadata for f in dataclasses.fields(TrainConfig)}[name]
    return meta["flag"] or "--" + name.replace("_", "-")


def _applies(name: str, dataset: str) -> bool:
    return name not in _DATASET_FIELDS or dataset in _DATASET_FIELDS[name]


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
