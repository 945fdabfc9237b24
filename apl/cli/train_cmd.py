"""`apl train`: one process, or several with `torchrun --nproc_per_node=N -m apl train ...`."""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from ..losses import LOSSES, SPECS
from ..losses.registry import canonical
from ..nn import BACKBONES, HEADS
from ..train.config import DEFAULT_LR, AMP_DTYPES, OPTIMIZERS, SAMPLERS, SCHEDULES, WHITENING_INITS, TrainConfig
from .common import HelpFormatter, add_data_options, add_loader_options, after_command, explicit_options

DESCRIPTION = """\
Trains a retrieval network with the AP loss (or a baseline) and evaluates it on held-out classes
after every epoch. Writes --out/config.json, metrics.jsonl, last.pt, best.pt and curves.png.

Several processes: torchrun --nproc_per_node=N -m apl train ... (nccl on CUDA, gloo on CPU);
--batch-size is the global batch, split evenly over the processes, and every image is ranked
against the images of all processes.

Roots: paths in the --dataset list are relative to --root, those in the --eval-dataset list to
--eval-root; each defaults to the folder of its own list file.
"""

_PARSER: dict = {}


def add(sub) -> None:
    d = TrainConfig()
    p = sub.add_parser("train", help="train a retrieval network", description=DESCRIPTION, formatter_class=HelpFormatter)
    add_data_options(p, train_default=d.dataset)
    p.add_argument("--image-size", type=int, default=d.image_size, help="training: a random region of 0.35 to 1 of the image's area, width / height 3/4 to 4/3, resized to a "
                        "square of this side (then flip and colour jitter); evaluation: the longest side resized to this size")
    p.add_argument("--backbone", default=d.backbone, choices=BACKBONES, help="network before GeM pooling (ResNets need torchvision)")
    p.add_argument("--dim", type=int, default=d.dim, help="descriptor dimension (output of the whitening layer)")
    p.add_argument("--head", default=d.head, choices=HEADS,
                   help="batchnorm: a BatchNorm (no affine) standardises the pooled features over the batch before the "
                        "whitening, so that the descriptors of an untrained network are spread (docs/training.md); plain: "
                        "without it, the network of earlier versions")
    p.add_argument("--whitening-init", default=None, choices=WHITENING_INITS,
                   help="pca: before training, start the head from the pooled features of training images (BatchNorm "
                        "statistics and a PCA-whitening; the paper's start with a pretrained backbone)")
    p.add_argument("--glyphs-per-class", type=int, default=d.glyphs_per_class,
                   help="--dataset glyphs / glyphs-val: images generated per class")
    p.add_argument("--glyph-size", type=int, default=d.glyph_size, help="--dataset glyphs / glyphs-val: image side in pixels")
    p.add_argument("--init", default=None, help="start from a local state dict (whole model or backbone, e.g. ImageNet ResNet weights)")
    p.add_argument("--loss", default=d.loss, type=_loss_name, metavar="LOSS",
                   help="training loss: " + "; ".join(f"{s.name}: {s.summary}" for s in SPECS.values()))
    p.add_argument("--bins", type=int, default=None, dest="num_bins",
                   help=f"histogram bins of ap / tie-aware (default {SPECS['ap'].defaults['num_bins']}) and fastap "
                        f"(default {SPECS['fastap'].defaults['num_bins']})")
    p.add_argument("--class-balanced", action="store_true",
                   help="apl's losses: weigh queries by 1 / (images of their class in the batch), so that every class of "
                        "the batch weighs the same (the paper's eq. 12); with --sampler pk or spread the classes of a batch "
                        "have about the same count, so it matters with --sampler random on imbalanced classes")
    p.add_argument("--margin", type=float, default=None,
                   help=f"margin of triplet (default {SPECS['triplet'].defaults['margin']}), contrastive "
                        f"(negative margin, default {SPECS['contrastive'].defaults['margin']}) and multi-similarity "
                        f"(its base lambda, default {SPECS['multi-similarity'].defaults['margin']})")
    p.add_argument("--temperature", type=float, default=None,
                   help=f"sigmoid temperature of smoothap (default {SPECS['smoothap'].defaults['temperature']}) and of the "
                        f"ranks of recall-at-k (default {SPECS['recall-at-k'].defaults['temperature']})")
    p.add_argument("--recall-k", default=None,
                   help="recall-at-k: the k values, e.g. 1,2,4,8,16 (default: "
                        f"{','.join(map(str, SPECS['recall-at-k'].defaults['recall_k']))})")
    p.add_argument("--k-temperature", type=float, default=None,
                   help=f"recall-at-k: the temperature of each k (default {SPECS['recall-at-k'].defaults['k_temperature']})")
    p.add_argument("--memory", type=int, default=0,
                   help="apl's losses (ap, tie-aware, smoothap, recall-at-k): cross-batch memory of the last N "
                        "descriptors, ranked with each batch (0: off)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch size (all processes together)")
    p.add_argument("--sampler", default=d.sampler, choices=SAMPLERS,
                   help="pk: batch-size / images-per-class random classes (every class when there are fewer), the batch "
                        "split evenly over them, so every query has positives (classes with fewer images give all they "
                        "have, classes of one image are never drawn); spread: the batch spread over all classes; random: "
                        "images drawn uniformly from the whole set, whatever their class (the paper's on Landmarks-clean). "
                        "No image is ever twice in a batch")
    p.add_argument("--images-per-class", type=int, default=d.images_per_class,
                   help="--sampler pk: images of each class in a batch (K >= 2), at least")
    p.add_argument("--chunk-size", type=int, default=None, help="multistage backprop: images per recomputed chunk (memory of one chunk, any batch size)")
    p.add_argument("--amp", default=None, choices=AMP_DTYPES, help="mixed precision for the forward passes (the loss stays float32); fp16 uses a gradient scaler")
    p.add_argument("--epochs", type=int, default=d.epochs, help="epochs in all; with --resume, a larger value extends the run")
    p.add_argument("--steps-per-epoch", type=int, default=None, help="batches per epoch (default: about one pass over the training images)")
    p.add_argument("--optimizer", default=d.optimizer, choices=OPTIMIZERS, help="adam is AdamW")
    p.add_argument("--lr", type=float, default=None,
                   help=f"base learning rate (default: {DEFAULT_LR['small']:g} for the small CNNs, {DEFAULT_LR['resnet']:g} "
                        "for the ResNets, which diverge from scratch at larger rates)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="weight decay")
    p.add_argument("--schedule", default=d.schedule, choices=SCHEDULES, help="learning-rate schedule over all steps of the run")
    p.add_argument("--whitening", action="store_true", help="evaluate with a PCA-whitening learned on the training images' descriptors")
    p.add_argument("--scales", default="1", help="scales of the held-out descriptors, e.g. 1,0.707,0.5 (L2-normalised mean over scales)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the initialisation, batches and augmentation")
    p.add_argument("--device", default=d.device, help="auto (CUDA when available), cpu, cuda, cuda:N (under torchrun: cuda:LOCAL_RANK)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per process (default: torch's choice)")
    add_loader_options(p)
    p.add_argument("--out", default="runs/train", help="run folder")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from last.pt (or start it if it has no checkpoint yet); of the settings "
                        "that change what the run computes only --epochs may change (to grow the run); --threads, "
                        "--device, --workers, --prefetch and --quiet may differ")
    p.add_argument("--overwrite", action="store_true", help="replace the run files in a non-empty --out")
    p.add_argument("--quiet", action="store_true", help="no per-step progress lines")
    p.add_argument("--check-images", action="store_true",
                   help="decode every image of both sets before training and stop with the list of bad ones (else a "
                        "bad image stops the run when it is read)")
    p.set_defaults(func=run)
    _PARSER["train"] = p


def _loss_name(value: str) -> str:
    """A loss of the registry, other spellings accepted ("tie_aware" for "tie-aware")."""
    name = canonical(value)
    if name not in LOSSES:
        raise argparse.ArgumentTypeError(f"unknown loss {value!r}; choose from {', '.join(LOSSES)}")
    return name


def _config(a: argparse.Namespace, only=None) -> dict:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in vars(a).items() if k in names and (only is None or k in only)}


def run(a: argparse.Namespace) -> int:
    from ..train import Trainer

    if a.resume and a.overwrite:
        raise ValueError("--resume and --overwrite exclude each other: --resume continues the run in --out, --overwrite replaces it")
    out = Path(a.out)
    saved = out / "config.json"
    if a.resume and saved.is_file():
        # The run's own settings, with the options given now on top (the trainer refuses any change but --epochs).
        given = explicit_options(_PARSER["train"], after_command(a.argv, "train"))
        try:
            base = TrainConfig.from_dict(json.loads(saved.read_text()))
        except (ValueError, TypeError) as err:
            raise ValueError(f"--resume: {saved} is not a valid apl run configuration ({err})") from None
        cfg = dataclasses.replace(base, **_config(a, given))
    else:
        cfg = TrainConfig(**_config(a))
    trainer = Trainer(cfg, out, progress=not a.quiet, workers=a.workers, prefetch=a.prefetch, overwrite=a.overwrite,
                      check_images=a.check_images)
    history = trainer.run(resume=a.resume)
    if history and trainer.is_main:
        best = max(history, key=lambda r: r["eval_map"])
        print(f"final held-out mAP {history[-1]['eval_map']:.4f} (best {best['eval_map']:.4f} at epoch {best['epoch']}); "
              f"checkpoints {out / 'last.pt'} and {out / 'best.pt'}, metrics {out / 'metrics.jsonl'}, curves {out / 'curves.png'}")
    return 0
