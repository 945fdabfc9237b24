"""Training helpers: the multistage step that makes very large AP-loss batches fit in memory."""
from .multistage import MultistageStep, multistage_step

__all__ = ["multistage_step", "MultistageStep"]
