"""apl.selftest (apl/ops/selftest.py): the compiled kernels against the reference, on every device
present; it catches a wrong or raising kernel, and it neither warns nor uses up a warning."""
from __future__ import annotations

import warnings

import pytest
import torch

import apl
from apl.ops import compiled, notices, selftest as st
from helpers import needs_cpu_kernel


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
    real = getattr(compiled, name)

    def wrong(*args):
        ap, npos = real(*args)
        return ap + 1e-3, npos

    monkeypatch.setattr(compiled, name, wrong)
    r = st.check_backend("cpu", torch.device("cpu"), sizes=(8,), quick=True)
    assert not r["ok"] and r["max_error"] >= 1e-3
    assert {"self": "self/", "ref": "reference-set/", "scores": "scores/"}[where] in r["reason"]


@needs_cpu_kernel
@pytest.mark.parametrize("name", ["self_rank", "ref_rank"])
def test_selftest_catches_a_wrong_rank_kernel(monkeypatch, name):
    """The rank kernels are checked as the AP ones are: a Smooth-AP / Recall@k off by 1e-3 is reported."""
    real = getattr(compiled, name)

    def wrong(*args):
        value, npos = real(*args)
        return value + 1e-3, npos

    monkeypatch.setattr(compiled, name, wrong)
    r = st.check_backend("cpu", torch.device("cpu"), sizes=(8,), quick=True)
    assert not r["ok"] and r["max_error"] >= 1e-3
    assert "smooth_ap/" in r["reason"] or "recall_at_k/" in r["reason"]


@needs_cpu_kernel
@pytest.mark.parametrize("path, name, when", [
    ("long-row", "ref_rank", lambda args: args[2].shape[0] >= st.LONG_N),  # many tiles, spilled rows
    ("small-temperature", "self_rank", lambda args: args[3] < 0.01),  # the exponential-per-pair path
    ("includes-queries", "ref_ap", lambda args: args[-1] >= 0),  # self_offset: queries in the reference set
])
def test_the_quick_check_reaches_each_kernel_path(monkeypatch, path, name, when):
    """The check "auto" runs before trusting a GPU covers the long-row (multi-tile scan and spill
    kernel), small-temperature and reference-set-with-the-queries paths: a kernel wrong only there
    is caught, and the case is named."""
    real = getattr(compiled, name)

    def wrong_there(*args):
        out, npos = real(*args)
        return (out + 1e-3 if when(args) else out), npos

    monkeypatch.setattr(compiled, name, wrong_there)
    r = st.check_backend("cpu", torch.device("cpu"), sizes=st.AUTO_SIZES, quick=True)
    assert not r["ok"] and path in r["reason"], r["reason"]


@needs_cpu_kernel
def test_the_long_row_has_more_positives_than_the_gpu_table_holds():
    inputs = st._inputs(12, torch.float32, torch.device("cpu"), seed=12)
    x, y, rx, ry = st._long_row(inputs)
    positives = (ry[: st.LONG_QUERIES, None] == ry[None]).sum(1) - 1
    assert rx.shape[0] > 2 * 256 and int(positives.max()) > 480 and int(positives.min()) == 0
    assert torch.equal(rx[: st.LONG_QUERIES], x)


@needs_cpu_kernel
def test_a_sticky_error_is_named_with_its_case(monkeypatch):
    def illegal(*args):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(compiled, "ref_rank", illegal)
    monkeypatch.setattr(st, "context_alive", lambda device: False)
    r = st.check_backend("cpu", torch.device("cpu"), sizes=(8,), quick=True)
    assert not r["ok"] and r["sticky"]
    assert r["reason"].startswith(st.STICKY) and "first failing case: smooth_ap/long-row" in r["reason"]
    assert "illegal memory access" in r["reason"]


def test_cli_prints_a_failed_line_when_the_check_itself_crashes(monkeypatch, capsys):
    from apl.cli import main

    def crash(device=None, sizes=st.DEFAULT_SIZES):
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore")

    monkeypatch.setattr(st, "selftest", crash)
    assert main(["selftest"]) == 1
    assert "apl selftest: FAILED  raised RuntimeError: CUDA error: an illegal memory access" in capsys.readouterr().out


@needs_cpu_kernel
def test_selftest_reports_a_raising_kernel(monkeypatch):
    def boom(*args):
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device")

    monkeypatch.setattr(compiled, "self_ap", boom)
    r = st.check_backend("cpu", torch.device("cpu"), sizes=(8,), quick=True)
    assert not r["ok"] and "no kernel image is available" in r["reason"]


@needs_cpu_kernel
def test_quick_check_is_small_and_passes():
    """The check "auto" runs before trusting a device's kernels (here the CPU kernel; on CUDA the
    CUDA kernel): it must stay well under 100 ms (about 35 ms on one CPU thread here)."""
    r = st.quick_check(torch.device("cpu"))
    assert r["ok"], r["reason"]
    assert r["time"] < 1.0  # generous: CI machines are slow and shared


@needs_cpu_kernel
def test_selftest_neither_warns_nor_uses_up_the_norm_warning():
    """Its rows are not unit-norm on purpose: no warning, and the user's first bad call still warns."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        st.check_backend("cpu", torch.device("cpu"), st.AUTO_SIZES, quick=True)
    assert not notices.given("norm:")
    x = torch.nn.functional.normalize(torch.randn(8, 3, dtype=torch.float64), dim=1) * 5
    with pytest.warns(UserWarning, match="not L2-normalised"):
        apl.ap_loss(x, torch.arange(8) % 2, backend="torch")
