"""`apl selftest`: one line per backend; exit 1 when a kernel disagrees or when the device asked
for has no working kernels; a bad --device is one line, not a traceback."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import apl
from apl.cli import main
from apl.ops import selftest as st
from helpers import needs_cpu_kernel

ROOT = Path(__file__).resolve().parents[2]


def test_exit_status_and_lines(monkeypatch, capsys):
    def fake(device=None, sizes=st.DEFAULT_SIZES):
        return {"cpu": dict(ok=False, max_error=0.25, reason="self/ap_q: error 0.25", time=0.1, available=True),
                "cuda": dict(ok=False, max_error=float("nan"), reason="no GPU", time=0.0, available=False)}

    monkeypatch.setattr(st, "selftest", fake)
    assert main(["selftest"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert "cpu" in out[0] and "FAILED" in out[0] and "error 0.25" in out[0]
    assert "cuda" in out[1] and "not available (no GPU)" in out[1]


@pytest.mark.parametrize("spec", ["foo", "mps", "cuda:x"])
def test_a_bad_device_is_one_line(spec, capsys):
    assert main(["selftest", "--device", spec]) == 2
    err = capsys.readouterr().err
    assert err.startswith("apl selftest: error: --device must be cpu, cuda or cuda:N") and spec in err
    assert "Traceback" not in err


@pytest.mark.skipif(apl.available_backends()["cuda"].available, reason="this build has working CUDA kernels")
def test_asking_for_cuda_without_cuda_kernels_fails(capsys):
    """A script that asks for the CUDA check expects a failure when there is nothing to check."""
    assert main(["selftest", "--device", "cuda"]) == 1
    out = capsys.readouterr().out
    assert "cuda: not available" in out and "cpu : not available (not requested)" in out


@needs_cpu_kernel
def test_apl_selftest_command():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-m", "apl", "selftest", "--device", "cpu"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "apl selftest: cpu : ok" in res.stdout
