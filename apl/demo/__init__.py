"""`apl demo`: losses trained alike on generated character classes and judged on 150 classes they
never saw (`comparison`, with the setting in `settings`), the paper's parameter studies at that
scale (`studies`, one record per run: `records`), and the cost of one loss step alone (`step_cost`).
`runs` and `tables` are their shared parts. The batch-size study, which needs a grid of learning
rates and hours, is experiments/batch_size.py."""
from .comparison import run_demo
from .settings import DEFAULT_LOSSES, EPOCHS, LOSSES, SEEDS, TUNED, base_config, config
from .studies import STUDIES, run_study

__all__ = ["DEFAULT_LOSSES", "EPOCHS", "LOSSES", "SEEDS", "STUDIES", "TUNED", "base_config", "config", "run_demo",
           "run_study"]
