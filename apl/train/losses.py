"""The trainer's losses by name (`apl train --loss NAME`): what each is, which of the run's options
it takes, their defaults, and how to build it. apl's own losses come from `apl.losses`; the
baselines are pytorch-metric-learning's (`apl.train.baselines`, the extra apl[pml]).

Each option has one meaning, and a name that says it (the flag is the field name with dashes):
`num_bins` the histogram bins (ap, tie-aware, fastap), `rank_temperature` the sigmoid temperature
that approximates a rank (smoothap, recall-at-k), `k_temperature` and `recall_k` the rest of
Recall@k, `triplet_margin` the margin of the triplet losses, `contrastive_margin` the distance
beyond which a negative pair costs nothing, `ms_base` multi-similarity's base similarity lambda.

Defaults of the baselines were chosen on a validation split of the *training* classes of the bundled
digits, never on held-out classes (experiments/results/tune_baselines_digits.json); the demo trains
each loss with its own settings, tuned the same way on the glyphs (apl/demo/settings.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from torch import nn

from ..losses import APLoss, RecallAtKLoss, SmoothAPLoss
from . import baselines


@dataclass(frozen=True)
class LossSpec:
    """A loss of the trainer: its name, one line on what it is, the options it takes (run-config
    field names, besides the common ones), their defaults, and how to build it from them."""

    name: str
    summary: str
    options: tuple = ()
    defaults: dict = field(default_factory=dict)
    build: Callable[..., nn.Module] = None  # type: ignore[assignment]

    @property
    def apl(self) -> bool:
        """One of apl's own losses (they take the class-balanced weights and a cross-batch memory)."""
        return "memory" in self.options


_APL = ("class_balanced", "memory")
SPECS: dict[str, LossSpec] = {s.name: s for s in (
    LossSpec("ap", "apl's AP_Q loss, 1 - mAP_Q (Revaud et al., ICCV 2019)", ("num_bins",) + _APL, {"num_bins": 20},
             lambda o: APLoss(num_bins=o["num_bins"], class_balanced=o["class_balanced"])),
    LossSpec("tie-aware", "apl's tie-aware AP_T loss", ("num_bins",) + _APL, {"num_bins": 20},
             lambda o: APLoss(num_bins=o["num_bins"], variant="tie_aware", class_balanced=o["class_balanced"])),
    LossSpec("smoothap", "apl's Smooth-AP (Brown et al., ECCV 2020), any number of images per class",
             ("rank_temperature",) + _APL, {"rank_temperature": 0.01},
             lambda o: SmoothAPLoss(temperature=o["rank_temperature"], class_balanced=o["class_balanced"])),
    LossSpec("recall-at-k", "apl's Recall@k surrogate (Patel et al., CVPR 2022), k = 1, 2, 4, 8, 16",
             ("rank_temperature", "recall_k", "k_temperature") + _APL,
             {"rank_temperature": 0.01, "recall_k": (1, 2, 4, 8, 16), "k_temperature": 1.0},
             lambda o: RecallAtKLoss(k=o["recall_k"], temperature=o["rank_temperature"], k_temperature=o["k_temperature"],
                                     class_balanced=o["class_balanced"])),
    LossSpec("triplet", "PML TripletMarginLoss with a TripletMarginMiner (all margin-violating triplets)",
             ("triplet_margin",), {"triplet_margin": 0.4}, lambda o: baselines.triplet(o["triplet_margin"])),
    LossSpec("triplet-hard", "PML TripletMarginLoss with a BatchHardMiner (each anchor's hardest positive and "
             "negative: hard-negative mining)", ("triplet_margin",), {"triplet_margin": 0.2},
             lambda o: baselines.triplet_hard(o["triplet_margin"])),
    LossSpec("triplet-semihard", "PML TripletMarginLoss with a BatchEasyHardMiner (each anchor's closest positive "
             "and the closest negative farther than it: semi-hard negative mining)", ("triplet_margin",),
             {"triplet_margin": 0.2}, lambda o: baselines.triplet_semihard(o["triplet_margin"])),
    LossSpec("contrastive", "PML ContrastiveLoss (positive margin 0, negative margin --contrastive-margin)",
             ("contrastive_margin",), {"contrastive_margin": 0.5}, lambda o: baselines.contrastive(o["contrastive_margin"])),
    LossSpec("multi-similarity", "PML MultiSimilarityLoss (alpha 2, beta 50, base --ms-base) with its miner (epsilon 0.1)",
             ("ms_base",), {"ms_base": 0.5}, lambda o: baselines.multi_similarity(o["ms_base"])),
    LossSpec("fastap", "PML FastAPLoss (Cakir et al., CVPR 2019)", ("num_bins",), {"num_bins": 10},
             lambda o: baselines.fastap(o["num_bins"])),
)}
LOSSES = tuple(SPECS)
# The options a loss may take, with their flags (every one is a run-config field of the same name).
OPTIONS = ("num_bins", "class_balanced", "memory", "triplet_margin", "contrastive_margin", "ms_base",
           "rank_temperature", "recall_k", "k_temperature")
# Other spellings of the names that the command line accepts (the API takes the names above only).
ALIASES = {"tie_aware": "tie-aware", "ap_q": "ap", "smooth-ap": "smoothap", "smooth_ap": "smoothap",
           "recall_at_k": "recall-at-k", "multi_similarity": "multi-similarity", "triplet_hard": "triplet-hard",
           "triplet_semihard": "triplet-semihard"}


def flag(option: str) -> str:
    """The command-line flag of a loss option ("num_bins" -> "--bins", else the field name)."""
    return "--bins" if option == "num_bins" else "--" + option.replace("_", "-")


def cli_name(value: str) -> str:
    """A loss name as typed on the command line, other spellings accepted ("tie_aware")."""
    return ALIASES.get(value, value)


def spec_of(loss: str) -> LossSpec:
    if loss not in SPECS:
        hint = f" (did you mean {ALIASES[loss]!r}?)" if loss in ALIASES else ""
        raise ValueError(f"unknown loss {loss!r}{hint}; choose from {', '.join(LOSSES)}")
    return SPECS[loss]


def check_options(loss: str, given: dict) -> None:
    """Refuses options that `loss` does not take. `given`: option name -> value, for the options
    the user set (None / False / 0 count as not set)."""
    spec = spec_of(loss)
    refused = [flag(k) for k, v in given.items() if k not in spec.options and v not in (None, False, 0)]
    if refused:
        takes = ", ".join(flag(k) for k in spec.options) or "none of the loss options"
        raise ValueError(f"loss {spec.name!r} does not take {', '.join(refused)} (it takes: {takes})")


def build_loss(name: str, **options) -> nn.Module:
    """A training loss by name (see `LOSSES`), called as `loss(embeddings (B, D), labels (B,))`.
    `options` are those of `OPTIONS` the loss takes; one left out (or None) takes the loss's
    default (`SPECS[name].defaults`); an option the loss does not take is refused, as on the
    command line. `memory` is not built here (the trainer wraps the loss with `apl.memory`)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TypeError(f"build_loss: unknown options {unknown}; the loss options are {', '.join(OPTIONS)}")
    spec = spec_of(name)
    check_options(name, options)
    resolved = {k: (spec.defaults.get(k) if options.get(k) is None else options[k]) for k in spec.options}
    resolved["class_balanced"] = bool(options.get("class_balanced"))
    return spec.build(resolved)
