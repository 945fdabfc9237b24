"""apl.selftest, `apl selftest`, and the self-check `backend="auto"` runs before trusting a compiled
kernel (apl/selftest.py, apl/backends.py). The CUDA decision logic is exercised on the CPU kernel
by adding "cpu" to the kinds that auto checks, with a fake check that fails or raises."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import apl
from apl import _ops, backends
from conftest import needs_cpu_kernel, random_labels, unit_rows

st = importlib.import_module("apl.selftest")  # `apl.selftest` itself is the function
ROOT = Path(__file__).resolve().parents[1]


@needs_cpu_kernel
def test_selftest_passes_on_the_cpu_kernel():
    r = apl.selftest(sizes=(9,))
    cpu = r["cpu"]
    assert cpu["ok"] and cpu["available"], cpu
    assert 0 <= cpu["max_error"] <= st.TOLERANCE[torch.float32]
    assert cpu["time"] > 0 and "matches the reference" in cpu["reason"]
    if not apl.available_backends()["cuda"].available:
        assert r["cuda"]["available"] is False and not r["cuda"]["ok"]
        assert r["cuda"]["reason"] == apl.available_backends()["cuda"].reason


def test_selftest_device_argument():
    r = apl.selftest("cuda", sizes=(5,))
    assert r["cpu"]["reason"] == "not requested"


@needs_cpu_kernel
@pytest.mark.parametrize("where", ["self", "ref", "scores"])
def test_selftest_catches_a_wrong_kernel(monkeypatch, where):
    """A kernel whose AP is off by 1e-3 in one form is reported, with that form in the reason."""
    name = {"self": "self_ap", "ref": "ref_ap", "scores": "scores_ap"}[where]
    real = getattr(_ops, name)

    def wrong(*args):
        ap, npos = real(*args)
        return ap + 1e-3, npos

    monkeypatch.setattr(_ops, name, wrong)
    r = st.check_backend("cpu", torch.device("cpu"), sizes=(8,), quick=True)
    assert not r["ok"] and r["max_error"] >= 1e-3
    assert {"self": "self/", "ref": "reference-set/", "scores": "scores/"}[where] in r["reason"]


@needs_cpu_kernel
def test_selftest_reports_a_raising_kernel(monkeypatch):
    def boom(*args):
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device")

    monkeypatch.setattr(_ops, "self_ap", boom)
    r = st.check_backend("cpu", torch.device("cpu"), sizes=(8,), quick=True)
    assert not r["ok"] and "no kernel image is available" in r["reason"]


# --- backend="auto": the once-per-device check and the fallback ---------------------------------


@pytest.fixture
def auto_checks_cpu(monkeypatch):
    """Make "auto" self-check the CPU kernel as it does the CUDA one; fresh caches."""
    if not apl.available_backends()["cpu"].available:
        pytest.skip("compiled CPU kernels not built")
    monkeypatch.setattr(st, "AUTO_CHECKED", ("cpu", "cuda"))
    monkeypatch.setattr(st, "_auto_results", {})
    monkeypatch.setattr(backends, "_warned", set())
    monkeypatch.delenv("APL_SKIP_SELFTEST", raising=False)
    calls = []

    def install(result=None, exc=None):
        def fake(kind, device, sizes, quick=False):
            calls.append((kind, str(device), tuple(sizes), quick))
            if exc is not None:
                raise exc
            return dict(ok=result[0], max_error=0.0, reason=result[1], time=0.0)

        monkeypatch.setattr(st, "check_backend", fake)
        return calls

    return install


def _loss(backend="auto"):
    x, y = unit_rows(20, 6, seed=1), random_labels(20, 4, seed=1)
    return apl.ap_loss(x, y, backend=backend)


def test_auto_falls_back_with_one_warning_when_the_check_fails(auto_checks_cpu):
    calls = auto_checks_cpu((False, "self/ap_q B=12 float32: error 0.3 > 0.0005"))
    with pytest.warns(RuntimeWarning) as rec:
        got = _loss()
    msgs = [str(w.message) for w in rec if "apl" in str(w.message)]
    assert len(msgs) == 1
    assert "failed apl's self-test on cpu" in msgs[0] and "error 0.3" in msgs[0]
    assert "run `apl selftest` and report" in msgs[0] and "pure-PyTorch reference" in msgs[0]
    assert torch.equal(got, _loss("torch"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning, no second check
        _loss()
        _loss()
    assert len(calls) == 1 and calls[0][2] == st.AUTO_SIZES and calls[0][3] is True


def test_auto_falls_back_when_a_launch_raises(auto_checks_cpu):
    auto_checks_cpu(exc=RuntimeError("no kernel image is available for execution on the device"))
    with pytest.warns(RuntimeWarning, match="no kernel image is available.*apl selftest"):
        assert backends.resolve("auto", torch.device("cpu")) == "torch"


def test_explicit_backend_is_not_self_checked(auto_checks_cpu):
    calls = auto_checks_cpu((False, "broken"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backends.resolve("cpu", torch.device("cpu")) == "cpu"
    assert calls == []


def test_auto_uses_the_kernel_when_the_check_passes_and_caches_it(auto_checks_cpu):
    calls = auto_checks_cpu((True, "fine"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            assert backends.resolve("auto", torch.device("cpu")) == "cpu"
    assert len(calls) == 1


def test_skip_selftest_env(auto_checks_cpu, monkeypatch):
    calls = auto_checks_cpu((False, "broken"))
    monkeypatch.setenv("APL_SKIP_SELFTEST", "1")
    assert backends.resolve("auto", torch.device("cpu")) == "cpu"
    assert calls == []


def test_auto_check_once_per_device(monkeypatch):
    monkeypatch.setattr(st, "_auto_results", {})
    monkeypatch.delenv("APL_SKIP_SELFTEST", raising=False)
    seen = []

    def check(d):
        seen.append(str(d))
        return dict(ok=str(d) != "cuda:1", reason="bad AP")

    for d in ("cuda:0", "cuda:1", "cuda:0", "cuda:1"):
        ok, why = st.auto_check(torch.device(d), check=check)
        assert ok == (d == "cuda:0")
    assert seen == ["cuda:0", "cuda:1"]
    assert "failed apl's self-test on cuda:1 (bad AP)" in why


@needs_cpu_kernel
def test_real_auto_check_is_small_and_passes(monkeypatch):
    """The auto check really runs the CPU kernel here (on CUDA it runs the CUDA kernel); it must
    stay well under 100 ms (measured here on one CPU thread: about 35 ms)."""
    monkeypatch.setattr(st, "_auto_results", {})
    monkeypatch.delenv("APL_SKIP_SELFTEST", raising=False)
    ok, why = st.auto_check(torch.device("cpu"))
    assert ok, why
    r = st.check_backend("cpu", torch.device("cpu"), st.AUTO_SIZES, quick=True)
    assert r["ok"] and r["time"] < 1.0  # generous: CI machines are slow and shared


# --- the command -----------------------------------------------------------------------------


def test_cli_exit_status_and_lines(monkeypatch, capsys):
    def fake(device=None, sizes=st.DEFAULT_SIZES):
        return {"cpu": dict(ok=False, max_error=0.25, reason="self/ap_q: error 0.25", time=0.1, available=True),
                "cuda": dict(ok=False, max_error=float("nan"), reason="no GPU", time=0.0, available=False)}

    monkeypatch.setattr(st, "selftest", fake)
    assert st.cli_main([]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert "cpu" in out[0] and "FAILED" in out[0] and "error 0.25" in out[0]
    assert "cuda" in out[1] and "not available (no GPU)" in out[1]


@needs_cpu_kernel
def test_apl_selftest_command():
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-m", "apl", "selftest", "--device", "cpu"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "apl selftest: cpu : ok" in res.stdout


@needs_cpu_kernel
def test_selftest_neither_warns_nor_uses_up_the_norm_warning(monkeypatch):
    """Its rows are not unit-norm on purpose: no warning, and the user's first bad call still warns."""
    import warnings

    import apl.functional as fn

    monkeypatch.setattr(fn, "_norm_warned", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        st.check_backend("cpu", torch.device("cpu"), st.AUTO_SIZES, quick=True)
    assert fn._norm_warned is False
    x = torch.nn.functional.normalize(torch.randn(8, 3, dtype=torch.float64), dim=1) * 5
    with pytest.warns(UserWarning, match="not L2-normalised"):
        apl.ap_loss(x, torch.arange(8) % 2, backend="torch")
