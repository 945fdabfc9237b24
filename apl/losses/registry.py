"""The training losses by name: what each takes, its defaults, and how to build it.

apl's own: the AP losses and the rank surrogates (Smooth-AP, Recall@k) on apl's kernels; the
baselines are pytorch-metric-learning's (apl/losses/baselines.py).
Defaults of the baselines (margin, bins) were chosen on a validation split of the *training*
classes of the bundled digits, never on held-out classes, by the first version of
benchmarks/tune_losses.py (benchmarks/results/tune_baselines_digits.json). The demo trains each loss
with its own settings, tuned the same way on the glyphs (apl/demo/settings.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

from torch import nn

from . import baselines
from .ap import APLoss
from .recall_at_k import RecallAtKLoss
from .smooth_ap import SmoothAPLoss


@dataclass(frozen=True)
class LossSpec:
    name: str
    summary: str
    options: tuple = ()           # TrainConfig fields this loss takes (besides the common ones)
    defaults: dict = field(default_factory=dict)

    @property
    def apl(self) -> bool:
        """One of apl's own losses (they take a cross-batch memory)."""
        return "memory" in self.options


_APL = ("class_balanced", "memory")
SPECS: dict[str, LossSpec] = {s.name: s for s in (
    LossSpec("ap", "apl's AP_Q loss, 1 - mAP_Q (Revaud et al., ICCV 2019)", ("num_bins",) + _APL, {"num_bins": 20}),
    LossSpec("tie-aware", "apl's tie-aware AP_T loss", ("num_bins",) + _APL, {"num_bins": 20}),
    LossSpec("smoothap", "apl's Smooth-AP (Brown et al., ECCV 2020), any number of images per class",
             ("temperature",) + _APL, {"temperature": 0.01}),
    LossSpec("recall-at-k", "apl's Recall@k surrogate (Patel et al., CVPR 2022), k = 1, 2, 4, 8, 16",
             ("temperature", "recall_k", "k_temperature") + _APL,
             {"temperature": 0.01, "recall_k": (1, 2, 4, 8, 16), "k_temperature": 1.0}),
    LossSpec("triplet", "PML TripletMarginLoss with a TripletMarginMiner (all margin-violating triplets)", ("margin",),
             {"margin": 0.4}),
    LossSpec("triplet-hard", "PML TripletMarginLoss with a BatchHardMiner (each anchor's hardest positive and "
             "negative: hard-negative mining)", ("margin",), {"margin": 0.2}),
    LossSpec("contrastive", "PML ContrastiveLoss (positive margin 0, negative margin --margin)", ("margin",), {"margin": 0.5}),
    LossSpec("multi-similarity", "PML MultiSimilarityLoss (alpha 2, beta 50, base --margin) with its miner (epsilon 0.1)",
             ("margin",), {"margin": 0.5}),
    LossSpec("fastap", "PML FastAPLoss (Cakir et al., CVPR 2019)", ("num_bins",), {"num_bins": 10}),
)}
LOSSES = tuple(SPECS)
# Other spellings of the names (the functional API's variant names among them).
ALIASES = {"tie_aware": "tie-aware", "ap_q": "ap", "smooth-ap": "smoothap", "smooth_ap": "smoothap",
           "recall_at_k": "recall-at-k", "multi_similarity": "multi-similarity", "triplet_hard": "triplet-hard"}
# How each option is spelled on the command line, for error messages.
FLAGS = {"num_bins": "--bins", "class_balanced": "--class-balanced", "memory": "--memory", "margin": "--margin",
         "temperature": "--temperature", "recall_k": "--recall-k", "k_temperature": "--k-temperature"}


def canonical(loss: str) -> str:
    """The registry's name of `loss` (aliases such as "tie_aware" accepted)."""
    return ALIASES.get(loss, loss) if isinstance(loss, str) else loss


def check_options(loss: str, given: dict) -> None:
    """Refuses options that `loss` does not take. `given`: option name -> value, for the options
    the user set (None / False / 0 count as not set)."""
    spec = spec_of(loss)
    refused = [FLAGS[k] for k, v in given.items() if k not in spec.options and v not in (None, False, 0)]
    if refused:
        takes = ", ".join(FLAGS[k] for k in spec.options) or f"none of {', '.join(FLAGS.values())}"
        raise ValueError(f"loss {spec.name!r} does not take {', '.join(refused)} (it takes: {takes})")


def spec_of(loss: str) -> LossSpec:
    name = canonical(loss)
    if name not in SPECS:
        raise ValueError(f"unknown loss {loss!r}; choose from {', '.join(LOSSES)}")
    return SPECS[name]


def build_loss(name: str, num_bins: Optional[int] = None, class_balanced: bool = False, margin: Optional[float] = None,
               temperature: Optional[float] = None, recall_k: Optional[Sequence[int]] = None,
               k_temperature: Optional[float] = None, chunk_size: Optional[int] = None) -> nn.Module:
    """A training loss by name (see LOSSES; aliases such as "tie_aware" accepted). Each is called as
    `loss(embeddings (B, D), labels (B,))`. Options left to None take the loss's default (SPECS);
    an option the loss does not take is refused, as on the command line."""
    spec = spec_of(name)
    check_options(spec.name, {"num_bins": num_bins, "class_balanced": class_balanced, "margin": margin,
                              "temperature": temperature, "recall_k": recall_k, "k_temperature": k_temperature})
    pick = lambda key, value: spec.defaults.get(key) if value is None else value  # noqa: E731
    if spec.name in ("ap", "tie-aware"):
        return APLoss(num_bins=pick("num_bins", num_bins), variant="ap_q" if spec.name == "ap" else "tie_aware",
                      class_balanced=class_balanced, chunk_size=chunk_size)
    if spec.name == "smoothap":
        return SmoothAPLoss(temperature=pick("temperature", temperature), class_balanced=class_balanced,
                            chunk_size=chunk_size)
    if spec.name == "recall-at-k":
        return RecallAtKLoss(k=pick("recall_k", recall_k), temperature=pick("temperature", temperature),
                             k_temperature=pick("k_temperature", k_temperature), class_balanced=class_balanced,
                             chunk_size=chunk_size)
    return baselines.build(spec.name, margin=pick("margin", margin), num_bins=pick("num_bins", num_bins))
