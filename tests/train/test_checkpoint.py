"""Checkpoints: safe loading of anything that is not an apl checkpoint, atomic saves that survive
a SIGKILL during the save, and exact resume after such a kill (a real training process)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from apl.cli import main
from apl.train import NotAnAplCheckpointError, TrainConfig, Trainer, atomic_save, load_checkpoint, load_model

ROOT = Path(__file__).resolve().parents[2]
CFG = dict(dataset="digits", dim=8, batch_size=64, epochs=3, steps_per_epoch=2, threads=1)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    Trainer(TrainConfig(**CFG), run, log=lambda m: None, progress=False).run()
    return run


def test_last_and_best_checkpoints(finished_run):
    last, best = load_checkpoint(finished_run / "last.pt"), load_checkpoint(finished_run / "best.pt")
    maps = [h["eval_map"] for h in last["history"]]
    assert last["epoch"] == 3 and last["evaluated"] and best["epoch"] == 1 + maps.index(max(maps))
    assert best["best_map"] == max(maps)
    model, cfg = load_model(finished_run / "best.pt")
    assert cfg.dim == 8 and not model.training


@pytest.mark.parametrize("content, reason", [
    (b"garbage bytes\n", "not a file written by torch.save"),
    (b"", "the file is empty"),
    ("truncated", "truncated or damaged"),
    ("state_dict", "not written by `apl train`"),
])
def test_files_that_are_not_apl_checkpoints(tmp_path, finished_run, content, reason, capsys):
    path = tmp_path / "x.pt"
    if content == "truncated":
        path.write_bytes((finished_run / "last.pt").read_bytes()[:5000])
    elif content == "state_dict":
        torch.save({"weight": torch.zeros(2)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(NotAnAplCheckpointError, match=f"not an apl checkpoint: .*x.pt .*{reason}"):
        load_model(path)
    assert main(["eval", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"not an apl checkpoint: {path}" in err and "Traceback" not in err


def test_a_folder_or_a_missing_file(tmp_path):
    with pytest.raises(NotAnAplCheckpointError, match="it is a folder"):
        load_model(tmp_path)
    with pytest.raises(NotAnAplCheckpointError, match="no such file"):
        load_model(tmp_path / "nope.pt")


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this would create the marker file
        return (Path.touch, (Path(self.marker),))


def test_a_checkpoint_crafted_to_run_code_does_not_run_it(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pt"
    torch.save({"format": "apl-checkpoint", "config": {}, "model": {}, "epoch": 1, "payload": _RunsCode(str(marker))}, path)
    with pytest.raises(NotAnAplCheckpointError, match="could run code"):
        load_model(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is real: an unsafe load does run it
    assert marker.exists()


def test_atomic_save_leaves_no_temporary(tmp_path):
    atomic_save({"a": torch.ones(3)}, tmp_path / "c.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


# A training process whose 3rd checkpoint save writes half a file, then stalls (to be killed there).
_SLOW_SAVE = r"""
import io, sys, time, torch
import apl.train.checkpoint as C
real, calls = torch.save, [0]
def slow(obj, f, *a, **k):
    calls[0] += 1
    if calls[0] == 3 and not isinstance(f, io.BytesIO):
        buf = io.BytesIO(); real(obj, buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2]); f.flush()
        open(sys.argv[2], "w").close()
        time.sleep(600)
    return real(obj, f, *a, **k)
C.torch.save = slow
from apl.train import TrainConfig, Trainer
cfg = TrainConfig(**__import__("json").loads(sys.argv[3]))
Trainer(cfg, sys.argv[1], log=lambda m: None, progress=False).run()
"""


def test_sigkill_during_a_save_then_resume_is_exact(tmp_path):
    run, marker = tmp_path / "killed", tmp_path / "saving"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen([sys.executable, "-c", _SLOW_SAVE, str(run), str(marker), json.dumps(CFG)], env=env)
    try:
        deadline = time.time() + 120
        while not marker.exists():
            assert p.poll() is None and time.time() < deadline, "the training process ended before its third save"
            time.sleep(0.05)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert list(run.glob(".last.pt.tmp-*"))  # killed mid-save: the half-written temporary is there
    ck = load_checkpoint(run / "last.pt")  # and the previous checkpoint is intact
    assert ck["epoch"] == 1
    logs = []
    resumed = Trainer(TrainConfig(**CFG), run, log=logs.append, progress=False).run(resume=True)
    assert not list(run.glob(".*.tmp-*"))
    full = Trainer(TrainConfig(**CFG), tmp_path / "full", log=lambda m: None, progress=False).run()
    assert resumed == [{**r, "time_s": resumed[i]["time_s"], "images_per_s": resumed[i]["images_per_s"],
                        "eval_time_s": resumed[i]["eval_time_s"]} for i, r in enumerate(full)]
    a, b = (torch.load(d / "last.pt", weights_only=True)["model"] for d in (run, tmp_path / "full"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    epochs = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines() if "train_loss" in x]
    assert epochs == [1, 2, 3]  # no epoch twice


@pytest.mark.slow
def test_killed_three_times_at_random_moments_ends_like_the_uninterrupted_run(tmp_path):
    from scripts import kill_resume
    args = ["--dataset", "digits", "--dim", "8", "--batch-size", "64", "--epochs", "8", "--steps-per-epoch", "3",
            "--threads", "1", "--quiet"]
    result = kill_resume.run(kills=3, workers=2, out=tmp_path, args=args, seed=1)
    assert result["kills"] == 3 and result["same_metrics"] and result["same_weights"], result
