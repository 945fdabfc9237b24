"""The training losses by name: what each takes, its defaults, and how to build it.

The AP losses are apl's own; the baselines are pytorch-metric-learning's (apl/losses/baselines.py).
Defaults of the baselines (margin, temperature, bins) were chosen on a validation split of the
*training* classes of the bundled digits, never on held-out classes: see
benchmarks/tune_baselines.py and benchmarks/results/tune_baselines.json.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from torch import nn

from . import baselines
from .ap import APLoss


@dataclass(frozen=True)
class LossSpec:
    name: str
    summary: str
    options: tuple = ()           # TrainConfig fields this loss takes (besides the common ones)
    defaults: dict = field(default_factory=dict)
    needs_pk: bool = False        # needs equal class counts per batch (the P x K sampler)


SPECS: dict[str, LossSpec] = {s.name: s for s in (
    LossSpec("ap", "apl's AP_Q loss, 1 - mAP_Q (Revaud et al., ICCV 2019)", ("num_bins", "class_balanced"), {"num_bins": 20}),
    LossSpec("tie-aware", "apl's tie-aware AP_T loss", ("num_bins", "class_balanced"), {"num_bins": 20}),
    LossSpec("triplet", "PML TripletMarginLoss with a TripletMarginMiner (all margin-violating triplets)", ("margin",),
             {"margin": 0.4}),
    LossSpec("contrastive", "PML ContrastiveLoss (positive margin 0, negative margin --margin)", ("margin",), {"margin": 0.5}),
    LossSpec("multi-similarity", "PML MultiSimilarityLoss (alpha 2, beta 50, base 0.5) with its miner (epsilon 0.1)"),
    LossSpec("fastap", "PML FastAPLoss (Cakir et al., CVPR 2019)", ("num_bins",), {"num_bins": 10}),
    LossSpec("smoothap", "PML SmoothAPLoss (Brown et al., ECCV 2020); needs the P x K sampler", ("temperature",),
             {"temperature": 0.01}, needs_pk=True),
)}
LOSSES = tuple(SPECS)
# How each option is spelled on the command line, for error messages.
FLAGS = {"num_bins": "--bins", "class_balanced": "--class-balanced", "margin": "--margin", "temperature": "--temperature"}


def check_options(loss: str, given: dict) -> None:
    """Refuses options that `loss` does not take. `given`: option name -> value, for the options
    the user set (None / False / the generic default count as not set)."""
    spec = spec_of(loss)
    refused = [FLAGS[k] for k in given if k not in spec.options]
    if refused:
        takes = ", ".join(FLAGS[k] for k in spec.options) or "none of --bins, --class-balanced, --margin, --temperature"
        raise ValueError(f"loss {loss!r} does not take {', '.join(refused)} (it takes: {takes})")


def spec_of(loss: str) -> LossSpec:
    if loss not in SPECS:
        raise ValueError(f"unknown loss {loss!r}; choose from {', '.join(LOSSES)}")
    return SPECS[loss]


def build_loss(name: str, num_bins: Optional[int] = None, class_balanced: bool = False, margin: Optional[float] = None,
               temperature: Optional[float] = None, chunk_size: Optional[int] = None) -> nn.Module:
    """A training loss by name (see LOSSES). Each takes (embeddings (B, D), labels (B,)); options
    left to None take the loss's default (SPECS)."""
    spec = spec_of(name)
    pick = lambda key, value: spec.defaults.get(key) if value is None else value  # noqa: E731
    if name in ("ap", "tie-aware"):
        return APLoss(num_bins=pick("num_bins", num_bins), variant="ap_q" if name == "ap" else "tie_aware",
                      class_balanced=class_balanced, chunk_size=chunk_size)
    return baselines.build(name, margin=pick("margin", margin), num_bins=pick("num_bins", num_bins),
                               temperature=pick("temperature", temperature))
