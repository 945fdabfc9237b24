"""`apl demo`: the AP losses against the baselines, same network, batches and budget for every
loss, judged on classes the training never saw (`comparison`), the paper's parameter studies at
this scale, and the cost of one loss step alone (`step_cost`)."""
from .comparison import (DEMO_EPOCHS, DEMO_LOSSES, DEMO_SEEDS, STUDIES, base_config, comparison_config, run_demo,
                         run_study)

__all__ = ["DEMO_EPOCHS", "DEMO_LOSSES", "DEMO_SEEDS", "STUDIES", "base_config", "comparison_config", "run_demo",
           "run_study"]
