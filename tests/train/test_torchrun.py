"""`apl train` under torchrun (two gloo processes on the CPU): the global batch is split over the
ranks and ranked as one, so the run follows the one-process run; rank 0 alone writes; resume works."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from apl.cli import main
from apl.train.launch import check_batch

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--dataset", "digits", "--batch-size", "128", "--seed", "0", "--threads", "1", "--device", "cpu", "--dim", "16",
        "--steps-per-epoch", "3", "--quiet"]


def _torchrun(*args, nproc=2):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           "-m", "apl", "train", *args], capture_output=True, text=True, env=env, timeout=300)


def _epochs(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if "train_loss" in x]


def _steps(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"step"' in x]


def _assert_follows(one, two):
    """The step is the same computation (tests/test_distributed.py checks it exactly, in float64);
    in float32 the ranks sum gradients in another order, and the training amplifies those roundings
    step after step (as changing the number of threads of one process does, by as much): the first
    steps agree to float32 rounding, the later ones to a few 1e-3."""
    a, b = _steps(one), _steps(two)
    assert len(a) == len(b) > 3
    assert abs(a[0]["loss"] - b[0]["loss"]) < 1e-6
    assert all(abs(x["loss"] - y["loss"]) < 1e-5 for x, y in zip(a[:3], b[:3])), (a[:3], b[:3])
    for x, y in zip(_epochs(one), _epochs(two)):
        assert abs(x["train_loss"] - y["train_loss"]) < 5e-3 and abs(x["eval_map"] - y["eval_map"]) < 2e-2


@pytest.mark.slow
def test_two_processes_follow_the_one_process_run_and_resume(tmp_path):
    assert main(["train", *ARGS, "--epochs", "3", "--out", str(tmp_path / "one")]) == 0
    r = _torchrun(*ARGS, "--epochs", "3", "--out", str(tmp_path / "two"))
    assert r.returncode == 0, r.stderr
    assert [e["epoch"] for e in _epochs(tmp_path / "two")] == [1, 2, 3]
    _assert_follows(tmp_path / "one", tmp_path / "two")
    assert torch.load(tmp_path / "two" / "last.pt", weights_only=True)["world_size"] == 2
    assert len(_steps(tmp_path / "two")) == 9  # one line per step: only rank 0 writes
    r = _torchrun(*ARGS, "--epochs", "4", "--resume", "--out", str(tmp_path / "two"))  # extends under torchrun
    assert r.returncode == 0, r.stderr
    assert [e["epoch"] for e in _epochs(tmp_path / "two")] == [1, 2, 3, 4]


@pytest.mark.slow
def test_cross_batch_memory_under_torchrun_follows_one_process(tmp_path):
    """Every rank puts the same global batch into its memory: two processes follow one."""
    args = [*ARGS, "--memory", "200", "--epochs", "2"]
    assert main(["train", *args, "--out", str(tmp_path / "one")]) == 0
    r = _torchrun(*args, "--out", str(tmp_path / "two"))
    assert r.returncode == 0, r.stderr
    _assert_follows(tmp_path / "one", tmp_path / "two")
    assert torch.load(tmp_path / "two" / "last.pt", weights_only=True)["memory"]["count"].item() == 2 * 3 * 128


@pytest.mark.slow
def test_a_global_batch_that_does_not_split_is_refused_on_every_rank(tmp_path):
    r = _torchrun(*[a if a != "128" else "63" for a in ARGS], "--epochs", "1", "--out", str(tmp_path / "r"))
    assert r.returncode != 0
    assert r.stderr.count("--batch-size 63 is the global batch and must split evenly over the 2 processes") == 2
    assert not (tmp_path / "r").exists()


def test_batch_split_checks():
    check_batch(128, 2)
    with pytest.raises(ValueError, match="cannot be split over 8 processes"):
        check_batch(4, 8)
    with pytest.raises(ValueError, match="use a multiple of 3"):
        check_batch(128, 3)
