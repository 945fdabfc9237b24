"""Training losses by name: apl's AP losses and pytorch-metric-learning baselines, for comparing
the AP loss ceteris paribus (same network, data, batches and budget).

`build_loss(name, ...)` returns a module called as `loss(embeddings, labels)`; `SPECS` says what
each loss is and which options it takes.
"""
from .pml_baselines import PMLLoss
from .registry import FLAGS, LOSSES, SPECS, LossSpec, build_loss, check_options, spec_of

__all__ = ["FLAGS", "LOSSES", "SPECS", "LossSpec", "PMLLoss", "build_loss", "check_options", "spec_of"]
