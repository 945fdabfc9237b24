"""What a batch looks like to the loss, checked on a few batches and warned once per process:

- scores that all fall within one bin width: AP_Q then sees one big tie, and its gradient is that
  of a tie (the descriptors of an untrained network often look like this: docs/training.md);
- most queries without a positive: they are left out of the loss (a sampler that spreads a batch
  over many classes of few images each does this).

The checks run on the first `FIRST` calls of a process and on one call in `EVERY` after that, on a
sample of `SAMPLE` query rows (a `SAMPLE` x N product, against the loss's B x N), so that their cost
is negligible; never inside torch.compile.
"""
from __future__ import annotations

from typing import Optional

import torch

from . import notices

FIRST, EVERY, SAMPLE = 5, 100, 32
# Warn when the central 98% of the sampled scores span less than one bin width.
QUANTILES = (0.01, 0.99)
# Warn when more than this share of the queries has no positive.
NO_POSITIVE_SHARE = 0.5

_calls = 0


def due() -> bool:
    """Whether this call of the loss is one that gets checked (counts the call)."""
    global _calls
    if torch.compiler.is_compiling():
        return False
    _calls += 1
    return _calls <= FIRST or _calls % EVERY == 0


def score_span(queries: torch.Tensor, refs: Optional[torch.Tensor], self_offset: int = -1) -> tuple[float, float]:
    """(low, high): the 1% and 99% quantiles of the scores of up to SAMPLE query rows (their own
    score left out in self retrieval)."""
    with torch.no_grad():
        q = queries[:SAMPLE].detach().float()
        x = (queries if refs is None else refs).detach().float()
        s = q @ x.t()
        own = 0 if refs is None else self_offset
        if own >= 0:
            keep = torch.ones_like(s, dtype=torch.bool)
            rows = torch.arange(q.shape[0], device=s.device)
            keep[rows, rows + own] = False
            s = s[keep]
        s = s.flatten()
        if s.numel() < 2:
            return 0.0, 0.0
        lo, hi = torch.quantile(s, torch.tensor(QUANTILES, device=s.device, dtype=s.dtype)).tolist()
    return lo, hi


def check_scores(queries: torch.Tensor, refs: Optional[torch.Tensor], num_bins: int,
                 score_range: tuple[float, float], self_offset: int = -1) -> None:
    """Warns (once per process) when the sampled scores span less than one of the loss's bins."""
    if notices.given("tie"):
        return
    lo, hi = score_span(queries, refs, self_offset)
    width = (score_range[1] - score_range[0]) / (num_bins - 1)
    if hi - lo < width:
        notices.warn_once(
            "tie",
            f"apl: 98% of the scores of this batch lie between {lo:.4f} and {hi:.4f}, within one of the {num_bins} bins "
            f"of the AP loss (width {width:.3f}): the loss sees them as one big tie and learns slowly. Descriptors of an "
            "untrained network often look like this; a BatchNorm before the whitening layer (apl.nn.RetrievalNet's "
            "default head) spreads them (docs/training.md, 'What AP_Q needs from the scores').",
            UserWarning)


def check_positives(has_positive: torch.Tensor) -> None:
    """Warns (once per process) when most queries of the batch have no positive."""
    if notices.given("no-positive") or has_positive.numel() == 0:
        return
    share = 1.0 - float(has_positive.float().mean())
    if share > NO_POSITIVE_SHARE:
        notices.warn_once(
            "no-positive",
            f"apl: {share:.0%} of the queries of this batch have no positive (no other item of their class): they are "
            "left out of the loss, which then learns from few queries. Sample P classes x K images per batch "
            "(apl.data.ClassBalancedBatchSampler; `apl train --sampler pk`, the default).",
            UserWarning)


def reset() -> None:
    """Check the next calls again, as at the start of a process (for tests)."""
    global _calls
    _calls = 0
