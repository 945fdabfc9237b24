"""The experiment scripts build their runs from TrainConfig field names; a renamed field must fail
here, not hours into a study (the batch-size study once passed the triplet margin under an old name)."""
import dataclasses
import json

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


def _final(loss, batch, values, budget="steps"):
    return [{"phase": "final", "loss": loss, "batch_size": batch, "budget": budget, "status": "ok", "map@r": v}
            for v in values]


def test_the_batch_size_claim_is_judged_against_the_spread_of_the_seeds():
    """A change counts when it exceeds the sum of the two points' standard deviations: AP gains and
    the triplet does not, yes; both gain, partly; AP within the spread, not shown; AP drops, no. A
    point with fewer than two seeds gives no verdict."""
    batches = [64, 4096]
    gain = lambda loss, lo, hi: batch_size.batch_gain(_final(loss, 64, lo) + _final(loss, 4096, hi), loss,  # noqa: E731
                                                      batches, "steps")
    ap = gain("ap", [0.50, 0.52, 0.51], [0.60, 0.61, 0.62])
    assert ap["gain"] == pytest.approx(0.10) and ap["spread"] == pytest.approx(0.02) and ap["best"] == 4096
    flat = gain("t", [0.40, 0.45, 0.50], [0.42, 0.44, 0.49])
    up, down = gain("t", [0.2, 0.21], [0.5, 0.51]), gain("ap", [0.6, 0.61], [0.5, 0.51])
    assert batch_size.claim_verdict(ap, flat, "t") == (
        "yes; AP_Q gains +0.100 from B = 64 to 4096 (spread 0.020, best at B = 4096); "
        f"t changes by {flat['gain']:+.3f} from B = 64 to 4096 (spread {flat['spread']:.3f}, best at B = 64)")
    assert batch_size.claim_verdict(ap, up, "t").startswith("partly: AP_Q gains, but so does the triplet; ")
    assert batch_size.claim_verdict(flat, up, "t").startswith("not shown: AP_Q's change is within the spread; ")
    assert "t gains +0.300" in batch_size.claim_verdict(flat, up, "t")
    assert batch_size.claim_verdict(down, flat, "t").startswith("no: AP_Q drops; AP_Q drops by -0.100")
    assert batch_size.batch_gain(_final("ap", 64, [0.5]) + _final("ap", 4096, [0.6, 0.7]), "ap", batches, "steps") is None
    assert batch_size.claim_verdict(None, flat).startswith("-: a point has fewer than two seeds")


def test_the_time_of_the_recorded_runs():
    runs = [{"phase": "tune", "seconds": 1800.0, "code": "abc"}, {"phase": "final", "seconds": 5400.0, "code": "abc"},
            {"phase": "final", "seconds": None, "code": "abd"}]
    assert batch_size.time_text(runs) == ("Time of the recorded runs, one run at a time (their wall time, data making "
                                          "included): tune 1 runs, 0.5 h; final 1 runs, 1.5 h. Code: abc, abd.\n")
    assert batch_size.time_text([]) == ""


@pytest.mark.slow
def test_the_batch_size_study_runs_end_to_end_at_a_tiny_budget(tmp_path):
    """Plumbing of `python -m experiments.batch_size --quick`: tuning, both budgets of the final
    phase, one record per run with the study's keys, its tables and its plot."""
    pytest.importorskip("matplotlib")
    out = tmp_path / "bs.json"
    batch_size.main(["--quick", str(out), "--losses", "ap", "--work", str(tmp_path / "runs")])
    report = json.loads(out.read_text())
    final = [r for r in report["runs"] if r["phase"] == "final"]
    assert {(r["batch_size"], r["budget"]) for r in final} == {(64, "images"), (128, "images"), (64, "steps"), (128, "steps")}
    keys = {"study", "setting", "loss", "batch_size", "sampler", "class_balanced", "seed", "map@r", "map", "p@1",
            "steps", "images_seen", "step_s"}
    assert all(r["status"] == "ok" and keys <= set(r) and r["study"] == "batch-size" for r in final), final
    assert all(r["images_seen"] == r["steps"] * r["batch_size"] for r in final)
    assert "| ap | " in batch_size.report_text(report) and out.with_suffix(".png").is_file()


def test_a_margin_is_chosen_at_its_batch_size_and_used_at_the_others():
    """The margin of a triplet loss is tuned at MARGIN_BATCH; a run at another B with another
    margin (made before that choice) is not chosen, however good."""
    def run(batch, lr, margin, score):
        return {"phase": "tune", "loss": "triplet-semihard", "batch_size": batch, "lr": lr, "margin": margin,
                "map@r": score, "status": "ok"}

    runs = [run(64, 0.004, 0.2, 0.9), run(64, 0.016, 0.1, 0.7), run(batch_size.MARGIN_BATCH, 0.016, 0.1, 0.8),
            run(batch_size.MARGIN_BATCH, 0.016, 0.2, 0.6)]
    chosen = batch_size.chosen_settings(runs)
    assert chosen[("triplet-semihard", batch_size.MARGIN_BATCH)]["margin"] == 0.1
    assert chosen[("triplet-semihard", 64)] == {"lr": 0.016, "margin": 0.1, "validation_map@r": 0.7}


def test_the_tuning_table_flags_a_rate_still_on_an_edge():
    def run(loss, lr, score, status="ok"):
        return {"phase": "tune", "loss": loss, "batch_size": 64, "margin": None, "lr": lr, "map@r": score,
                "status": status}

    runs = [run("ap", 0.004, 0.5), run("ap", 0.016, 0.7), run("ap", 0.064, 0.0, "diverged"),
            run("smoothap", 0.016, 0.5), run("smoothap", 0.064, 0.6)]
    text = batch_size.tuning_text({"runs": runs, "batches": [64], "losses": ["ap", "smoothap"]})
    assert "| ap | lr 0.016 (0.700) | 0 / 1 of 3 |" in text
    assert "| smoothap | lr 0.064 (0.600) at an edge of the grid | 0 / 0 of 2 |" in text


def test_a_diverged_seed_is_counted_and_a_batch_that_cannot_be_held_is_said():
    runs = _final("ap", 64, [0.5, 0.6]) + [{"phase": "final", "loss": "ap", "batch_size": 64, "budget": "steps",
                                             "status": "diverged", "reason": "loss is nan"}]
    runs += [{"phase": "final", "loss": "ap", "batch_size": 4096, "budget": "steps", "status": "memory",
              "reason": "over the 12 GB address-space limit"}]
    for r in runs:
        r.setdefault("step_s", 0.5)
    text = batch_size.report_text({"runs": runs, "batches": [64, 4096], "losses": ["ap"], "images": 1, "steps": 1,
                                   "seeds": [0, 1, 2]})
    assert "| ap | 0.550 ± 0.071 (0.50 s/step), 1 of 3 seeds diverged | cannot run (memory: over the 12 GB" in text
