"""`apl demo`: every loss trained alike on generated character classes and judged on 150 classes it
never saw (`comparison`, with the setting in `settings`), the paper's parameter studies at that
scale (`studies`, and the batch-size study in `batch_study`), and the cost of one loss step alone
(`step_cost`). `runs` and `tables` are their shared parts."""
from .batch_study import run_batch_study
from .comparison import run_demo
from .settings import EPOCHS, LOSSES, SEEDS, TUNED, base_config, config
from .studies import STUDIES, run_study

__all__ = ["EPOCHS", "LOSSES", "SEEDS", "STUDIES", "TUNED", "base_config", "config", "run_batch_study", "run_demo",
           "run_study"]
