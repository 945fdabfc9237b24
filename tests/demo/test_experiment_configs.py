"""The experiment scripts build their runs from TrainConfig field names; a renamed field must fail
here, not hours into a study (the batch-size study once passed the triplet margin under an old name)."""
import dataclasses

import pytest

from apl.train.config import TrainConfig
from experiments import batch_size, tune_backbone_lr, tune_losses

FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


@pytest.mark.parametrize("loss", batch_size.LOSSES)
def test_batch_size_configs_build(loss):
    cfg = batch_size.study_config(loss, 1024, 40, 1e-3, 0, "glyphs-val", margin=0.3)
    assert cfg.loss == loss and cfg.batch_size == 1024 and cfg.chunk_size == batch_size.CHUNK
    if loss.startswith("triplet"):
        assert cfg.triplet_margin == 0.3


def test_tuned_options_are_config_fields():
    assert {option for option, _ in tune_losses.OPTION.values()} <= FIELDS


def test_backbone_lr_configs_build():
    cfg = tune_backbone_lr.config("ap", 1, 0, dataset="glyphs-val", backbone="resnet18", lr=1e-4)
    assert cfg.backbone == "resnet18" and cfg.lr == 1e-4


def test_a_run_over_its_memory_limit_is_recorded_as_such(tmp_path):
    """A batch that cannot be held is a result of the study (status "memory" and why), not a crash."""
    spec = {"loss": "ap", "batch_size": 64, "steps": 1, "lr": 1e-3, "margin": None, "seed": 0,
            "dataset": "glyphs", "memory_gb": 0.25, "glyphs_per_class": 16, "out": str(tmp_path / "run")}
    rec = batch_size.record("final", "ap", 64, "steps", 1e-3, None, 0, batch_size.run(spec, timeout_s=300))
    assert rec["status"] == "memory" and "over the 0.25 GB address-space limit" in rec["reason"]
    assert rec["study"] == "batch-size" and "map@r" not in rec


def test_a_best_rate_on_an_edge_of_the_grid_extends_it():
    """A tuned rate is a choice only inside the grid: best at the top, try 4 times more; at the
    bottom, a quarter; inside, stop. Diverged runs and other settings do not count."""
    def run(lr, score, status="ok", batch=4096, margin=None):
        return {"phase": "tune", "loss": "ap", "batch_size": batch, "margin": margin, "lr": lr, "map@r": score,
                "status": status}

    rates = [0.004, 0.016, 0.064]
    top = [run(0.004, 0.33), run(0.016, 0.51), run(0.064, 0.57), run(0.256, 0.9, batch=1024)]
    assert batch_size.next_rate(top, "ap", 4096, None, rates) == 0.256
    bottom = [run(0.004, 0.6), run(0.016, 0.5), run(0.064, 0.0, status="diverged")]
    assert batch_size.next_rate(bottom, "ap", 4096, None, rates) == 0.001
    inside = [run(0.004, 0.3), run(0.016, 0.6), run(0.064, 0.7, status="diverged")]
    assert batch_size.next_rate(inside + [run(0.064, 0.9, margin=0.2)], "ap", 4096, None, rates) is None
    assert batch_size.next_rate([], "ap", 4096, None, rates) is None
