"""The demo's setting: one network, batch and budget for every loss, and each loss's own
hyper-parameters as chosen on the tuning split of the training classes.

Data: the generated glyphs (apl.data.glyphs): 149 training classes and 150 unseen ones, 16 images of
32 x 32 pixels per class. Network: tiny_cnn -> GeM -> BatchNorm -> whitening to 64 dimensions.
Batches: 32 classes x 8 images. Budget: 12 epochs of the training classes (108 steps), Adam with a cosine
schedule. What differs between losses is only what `TUNED` holds: the learning rate and the loss's
own option, chosen by experiments/tune_losses.py on the "glyphs-val" split (a quarter of the
*training* classes held out; the unseen classes never looked at), same budget, best MAP@R of the
validation classes. Its results are experiments/results/tune_losses.json, from which `TUNED` is
copied (a test checks that the two agree).
"""
from __future__ import annotations

import dataclasses

from ..train.config import TrainConfig

EPOCHS = 12
SEEDS = (0, 1, 2)
BATCH, IMAGES_PER_CLASS = 256, 8
# Every loss of the registry (apl.losses), in the order of the table: `apl demo --all`.
LOSSES = ("ap", "tie-aware", "smoothap", "recall-at-k", "triplet", "contrastive", "multi-similarity", "fastap")
# `apl demo`: the AP loss, the strongest other listwise loss and the best pair/triplet baseline of
# the full table (experiments/results/demo/results.json), so that a first run fits in minutes.
DEFAULT_LOSSES = ("ap", "fastap", "triplet")

# loss -> TrainConfig changes chosen on the tuning split (experiments/results/tune_losses.json).
TUNED: dict[str, dict] = {
    "ap": {"lr": 0.016, "num_bins": 20},
    "tie-aware": {"lr": 0.032, "num_bins": 20},
    "smoothap": {"lr": 0.064, "rank_temperature": 0.01},
    "recall-at-k": {"lr": 0.016, "rank_temperature": 0.03},
    "triplet": {"lr": 0.064, "triplet_margin": 0.8},
    "contrastive": {"lr": 0.064, "contrastive_margin": 1.5},
    "multi-similarity": {"lr": 0.004, "ms_base": 0.25},
    "fastap": {"lr": 0.016, "num_bins": 40},
}


def base_config(epochs: int = EPOCHS, seed: int = 0, dataset: str = "glyphs") -> TrainConfig:
    """The setting every loss shares (the loss itself left at the default, "ap")."""
    return TrainConfig(dataset=dataset, backbone="tiny_cnn", dim=64, batch_size=BATCH, sampler="pk",
                       images_per_class=IMAGES_PER_CLASS, epochs=epochs, lr=1e-3, seed=seed)


def config(loss: str, epochs: int = EPOCHS, seed: int = 0, dataset: str = "glyphs", **changes) -> TrainConfig:
    """The demo's run of `loss`: the shared setting with the loss's tuned options (then `changes`)."""
    return dataclasses.replace(base_config(epochs, seed, dataset), loss=loss, **{**TUNED.get(loss, {}), **changes})
