"""The run folder: refusal of non-empty folders, --overwrite, --resume (changed flags, extension,
killed before the first checkpoint), the metrics log, and nothing written on early errors."""
import json

import pytest
import torch

from apl.cli import main
from apl.train import TrainConfig, Trainer
from apl.train.run_folder import MetricsLog, plan_start

TINY = ["--dataset", "digits", "--dim", "8", "--batch-size", "64", "--steps-per-epoch", "2", "--threads", "1", "--quiet"]


def _lines(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_non_empty_folder_is_refused_and_overwrite_replaces_the_run(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(run)]) == 0
    before = (run / "last.pt").read_bytes()
    assert main(["train", *TINY, "--epochs", "1", "--lr", "0.01", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and "--resume" in err and "--overwrite" in err
    assert (run / "last.pt").read_bytes() == before  # untouched
    (run / "notes.txt").write_text("mine")
    assert main(["train", *TINY, "--epochs", "1", "--lr", "0.01", "--out", str(run), "--overwrite"]) == 0
    assert json.loads((run / "config.json").read_text())["optimiser"]["lr"] == 0.01
    assert (run / "notes.txt").read_text() == "mine"  # only the run's own files are replaced
    assert [r["epoch"] for r in _lines(run) if "train_loss" in r] == [1]


def test_early_error_writes_nothing(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", "--dataset", str(tmp_path / "missing"), "--eval-dataset", str(tmp_path), "--out", str(run)]) == 2
    assert "--dataset: not found" in capsys.readouterr().err
    assert not run.exists()
    assert main(["train", *TINY, "--workers", "-1", "--out", str(run)]) == 2
    assert "--workers must be an integer >= 0, got -1" in capsys.readouterr().err
    assert not run.exists()


def test_resume_refuses_changed_flags_and_lists_them(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(run)]) == 0
    assert main(["train", "--out", str(run), "--resume", "--lr", "0.5", "--dim", "16"]) == 2
    err = capsys.readouterr().err
    assert "--dim 16 (the run has 8)" in err and "--lr 0.5 (the run has 0.001)" in err and "cannot change on resume (--epochs may grow" in err
    assert main(["train", "--out", str(run), "--resume", "--overwrite"]) == 2
    assert "exclude each other" in capsys.readouterr().err


def test_resume_with_more_epochs_extends_the_run(tmp_path):
    run = tmp_path / "r"
    assert main(["train", *TINY, "--epochs", "2", "--out", str(run)]) == 0
    assert main(["train", "--out", str(run), "--resume", "--epochs", "3", "--quiet"]) == 0
    rows = _lines(run)
    assert [r["epoch"] for r in rows if "train_loss" in r] == [1, 2, 3]
    assert json.loads((run / "config.json").read_text())["optimiser"]["epochs"] == 3
    ck = torch.load(run / "last.pt", weights_only=True)
    assert ck["epoch"] == 3 and ck["step"] == 6
    # the schedule is recomputed for 6 steps: step 5 (index 4) of 6 under cosine
    lr_used = [r["lr"] for r in rows if "step" in r]
    assert lr_used[4] == pytest.approx(1e-3 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 4 / 6)).item()))


def test_resume_without_a_checkpoint_starts_from_the_beginning(tmp_path):
    cfg = TrainConfig(dataset="digits", dim=8, batch_size=64, epochs=1, steps_per_epoch=2, threads=1)
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))  # killed after writing its config
    logs = []
    hist = Trainer(cfg, run, log=logs.append, progress=False).run(resume=True)
    assert len(hist) == 1 and any("starting from the beginning" in m for m in logs)
    empty = tmp_path / "empty"
    empty.mkdir()  # made, then killed before its config was written
    assert len(Trainer(cfg, empty, log=logs.append, progress=False).run(resume=True)) == 1


def test_resume_of_a_folder_that_does_not_exist_is_refused(tmp_path, capsys):
    """Not a new run on the built-in digits: nothing is written."""
    assert main(["train", "--resume", "--out", str(tmp_path / "typo")]) == 2
    err = capsys.readouterr().err
    assert f"--resume: {tmp_path / 'typo'} does not exist, so there is no run to continue" in err
    assert not (tmp_path / "typo").exists()


def test_runtime_options_may_change_on_resume(tmp_path, capsys):
    """--threads and --device do not change what the run computes: a resume may set them; a setting
    that does is refused."""
    base = ["train", "--dim", "8", "--batch-size", "64", "--steps-per-epoch", "1", "--quiet", "--out", str(tmp_path / "r")]
    assert main(base + ["--epochs", "1", "--threads", "1"]) == 0
    assert main(base + ["--epochs", "2", "--threads", "2", "--device", "cpu", "--workers", "0", "--resume"]) == 0
    assert json.loads((tmp_path / "r" / "config.json").read_text())["run"]["threads"] == 2
    capsys.readouterr()
    assert main(base + ["--epochs", "3", "--lr", "0.5", "--resume"]) == 2
    assert "--lr 0.5 (the run has 0.001)" in capsys.readouterr().err


def test_metrics_log_keeps_no_epoch_twice(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"epoch": 1, "step": 1}, {"epoch": 1, "train_loss": 1}, {"epoch": 2, "step": 1}, {"epoch": 2, "train_loss": 1},
            {"epoch": 3, "step": 1}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"epoch": 3, "st')  # cut mid-line by a kill
    MetricsLog(path).keep_until(2, epoch_evaluated=False)
    assert [json.loads(x) for x in path.read_text().splitlines()] == rows[:3]


def test_step_lines_log_the_learning_rate_the_step_used(tmp_path):
    run = tmp_path / "r"
    assert main(["train", *TINY, "--epochs", "2", "--out", str(run)]) == 0
    lrs = [r["lr"] for r in _lines(run) if "step" in r]
    assert lrs[0] == pytest.approx(1e-3)  # the first step runs at the base rate
    assert lrs == sorted(lrs, reverse=True) and len(lrs) == 4


def test_plan_start_for_a_file_and_an_orphaned_checkpoint(tmp_path):
    cfg = TrainConfig()
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        plan_start(tmp_path / "f", cfg, resume=False, overwrite=False)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "last.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="no config.json"):
        plan_start(tmp_path / "r", cfg, resume=True, overwrite=False)


def test_runs_are_not_tied_to_the_folder_they_started_in(tmp_path, monkeypatch, capsys):
    """Paths are stored absolute; resume and eval work from another folder; the same folder spelled
    another way is not "other settings"; eval needs only the held-out set."""
    from images import write_class_folders

    write_class_folders(tmp_path / "data" / "train")
    write_class_folders(tmp_path / "data" / "held")
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(work)
    args = ["--dataset", "../data/train", "--eval-dataset", "../data/held", "--image-size", "12", "--batch-size", "18",
            "--dim", "4", "--threads", "1", "--quiet"]
    assert main(["train", *args, "--epochs", "1", "--out", "run"]) == 0
    saved = json.loads((work / "run" / "config.json").read_text())["data"]
    assert saved["dataset"] == str(tmp_path / "data" / "train") and saved["eval_dataset"] == str(tmp_path / "data" / "held")
    monkeypatch.chdir(elsewhere)
    assert main(["eval", str(work / "run" / "best.pt")]) == 0  # the run's own held-out set, from anywhere
    # the training set is not read without --whitening: gone, eval still works
    (tmp_path / "data" / "train").rename(tmp_path / "data" / "moved")
    assert main(["eval", str(work / "run" / "best.pt"), "--eval-dataset", str(tmp_path / "data" / "held")]) == 0
    (tmp_path / "data" / "moved").rename(tmp_path / "data" / "train")
    # resume from another folder, with the same dataset spelled absolutely
    absolute = [a if not a.startswith("../") else str(work / a) for a in args]
    assert main(["train", *absolute, "--epochs", "2", "--resume", "--out", str(work / "run")]) == 0
    assert "other settings" not in capsys.readouterr().err
    assert [json.loads(x)["epoch"] for x in (work / "run" / "metrics.jsonl").read_text().splitlines()
            if "train_loss" in x] == [1, 2]


def test_a_missing_revisited_folder_is_named(tmp_path, capsys):
    cfg = TrainConfig(dataset="digits", dim=4, batch_size=32, epochs=1, steps_per_epoch=1, threads=1)
    Trainer(cfg, tmp_path / "r", log=lambda m: None, progress=False).run()
    for command in ("eval", "show"):
        assert main([command, str(tmp_path / "r" / "last.pt"), "--revisited", str(tmp_path / "nope")]) == 2
        err = capsys.readouterr().err
        assert f"--revisited {tmp_path / 'nope'}: no such folder" in err and "Traceback" not in err
