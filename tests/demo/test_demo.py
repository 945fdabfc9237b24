"""`apl demo` end to end at a tiny budget (the full run's time is in the README): the table's rows,
their seeds and means, the cost columns, the plots; the parameter studies; a diverged run counted
with what it kept; and the demo's tuned settings equal to the tuning results they were copied from.
The batch-size study's plumbing is in test_experiment_configs.py."""
import contextlib
import json
from pathlib import Path

import pytest

from apl.cli import main
from apl.demo import LOSSES, TUNED, config

ROOT = Path(__file__).resolve().parents[2]


def test_demo_table_and_pictures(tmp_path, capsys):
    assert main(["demo", "--epochs", "1", "--seeds", "0", "1", "--losses", "ap", "smoothap", "triplet",
                 "--glyphs-per-class", "4", "--threads", "1", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [r["loss"] for r in rows] == ["untrained network", "ap", "smoothap", "triplet"]
    assert all(0 < r["map@r"] <= 1 and 0 < r["map"] <= 1 and r["seeds"] == 2 and len(r["runs"]) == 2 for r in rows)
    for r in rows:  # the mean is the mean of the per-seed results
        assert r["map@r"] == pytest.approx(sum(x["eval_map@r"] for x in r["runs"]) / 2)
    assert all(r["step_ms"] > 0 and r["peak_mb"] is not None for r in rows[1:])  # each loss step measured alone
    for name in ("curves.png", "pr_curves.png", "ranks.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    out = capsys.readouterr().out
    assert "150 unseen classes ranked" in out and "| held-out MAP@R |" in out and "loss step (ms, 1 thread)" in out
    assert "| untrained network |" in out and "| smoothap |" in out


def test_a_study_writes_its_table_and_plot(tmp_path):
    assert main(["demo", "--study", "whitening", "--epochs", "1", "--seeds", "0", "--threads", "1",
                 "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "whitening" / "results.json").read_text())
    assert [r["setting"] for r in rows] == ["off", "on"] and all("map@r" in r for r in rows)
    assert (tmp_path / "whitening" / "study_whitening.png").is_file()


def test_every_loss_has_tuned_settings_from_the_tuning_results():
    results = ROOT / "experiments" / "results" / "tune_losses.json"
    if not results.is_file():
        pytest.skip("experiments/results/tune_losses.json is only in a source checkout")
    chosen = json.loads(results.read_text())["chosen"]
    assert set(TUNED) == set(LOSSES) == set(chosen)
    for loss, values in chosen.items():
        assert TUNED[loss] == {k: v for k, v in values.items() if k != "validation_map@r"}, loss
        cfg = config(loss)
        assert all(getattr(cfg, k) == v for k, v in TUNED[loss].items())


@pytest.mark.parametrize("nan_from_call", [1, 4])
def test_a_diverged_run_counts_with_what_it_kept(tmp_path, monkeypatch, nan_from_call):
    """The demo goes on past a run that diverges, counting it as its last checkpoint (or the untrained
    network when it diverged in the first epoch), and the table says so."""
    import apl.train.loop as loop
    from apl.demo.runs import train
    from apl.demo.tables import markdown, summary

    real, calls = loop.build_loss, []

    def nan_later(*a, **k):
        fn = real(*a, **k)

        def loss(d, y):
            calls.append(1)
            return fn(d, y) * (float("nan") if len(calls) >= nan_from_call else 1.0)
        return loss

    monkeypatch.setattr(loop, "build_loss", nan_later)
    cfg = config("ap", epochs=3, glyphs_per_class=4, steps_per_epoch=2)
    logged = []
    history, _ = train(cfg, tmp_path / "ap" / "seed0", logged.append)
    assert "training diverged" in history[-1]["diverged"] and "DIVERGED" in logged[0]
    assert history[-1]["epoch"] == (0 if nan_from_call == 1 else 1) and 0 < history[-1]["eval_map@r"] <= 1
    row = summary("loss", "ap", [history[-1]], [1.0])
    assert row["diverged"] == 1 and "| ap (1 of 1 runs diverged) |" in markdown([row], "loss")



def test_demo_defaults_to_three_losses_and_all_gives_every_one(monkeypatch, tmp_path):
    """`apl demo` trains AP, FastAP and triplet; --all every loss; arguments are checked first."""
    import apl.demo as demo_pkg

    seen = {}
    monkeypatch.setattr(demo_pkg, "run_demo", lambda out, **kw: seen.update(kw))
    assert main(["demo", "--out", str(tmp_path)]) == 0
    assert seen["losses"] == ("ap", "fastap", "triplet")
    assert main(["demo", "--all", "--out", str(tmp_path)]) == 0
    assert seen["losses"] == LOSSES
    assert main(["demo", "--losses", "tie_aware", "ap", "--out", str(tmp_path)]) == 0
    assert seen["losses"] == ("tie-aware", "ap")


@pytest.mark.parametrize("args, message", [
    (["--losses", "ap", "hinge"], "argument --losses: unknown loss 'hinge'; choose from ap, tie-aware"),
    (["--all", "--losses", "ap"], "--all and --losses exclude each other"),
    (["--losses", "ap", "ap"], "--losses names a loss twice"),
    (["--study", "bins", "--losses", "ap"], "--study bins trains the AP loss only"),
    (["--threads", "0"], "--threads must be an integer >= 1, got 0"),
])
def test_demo_refuses_bad_arguments_before_any_work(monkeypatch, tmp_path, capsys, args, message):
    import apl.demo as demo_pkg

    def no_work(*a, **k):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(demo_pkg, "run_demo", no_work)
    monkeypatch.setattr(demo_pkg, "run_study", no_work)
    with pytest.raises(SystemExit) if "argument --losses" in message else contextlib.nullcontext():
        assert main(["demo", *args, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_imbalance_study_writes_one_record_per_run(tmp_path, monkeypatch):
    """Plumbing of `apl demo --study imbalance` at a tiny budget (the long tail cut to 8 down to 2
    images so that the glyphs generate in seconds): the record keys, the sampler and weights of each
    setting, the paired differences."""
    import apl.train.data as data
    from apl.demo.records import RECORD_KEYS
    from apl.demo.studies import run_study

    monkeypatch.setattr(data, "LONG_TAIL", (8, 2))
    run_study("imbalance", tmp_path, epochs=1, seeds=(0, 1), log=lambda m: None)
    records = json.loads((tmp_path / "imbalance" / "records.json").read_text())
    assert len(records) == 6 and all(set(RECORD_KEYS) <= set(r) for r in records)
    assert {(r["sampler"], r["class_balanced"]) for r in records} == {("random", False), ("random", True), ("pk", False)}
    assert all(r["study"] == "imbalance" and r["steps"] == 9 and r["images_seen"] == 9 * r["batch_size"]
               and 0 < r["map@r"] <= 1 and r["step_s"] > 0 for r in records)
    paired = json.loads((tmp_path / "imbalance" / "paired.json").read_text())
    assert [p["seeds"] for p in paired] == [[0, 1], [0, 1]]
    first = paired[0]
    by = {(r["setting"], r["seed"]): r["map@r"] for r in records}
    assert first["differences"] == [round(by[(first["a"], s)] - by[(first["b"], s)], 4) for s in (0, 1)]
    assert "| random batches, class-balanced weights - random batches, uniform weights |" in \
        (tmp_path / "imbalance" / "paired.md").read_text()
