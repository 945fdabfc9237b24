"""Which backend runs (apl/ops/dispatch.py): each backend says why it cannot run, "auto" takes the
compiled kernels of the device when they passed the self-check, else the reference with one
warning. The CUDA logic is exercised on the CPU kernel by adding "cpu" to the device types that
"auto" self-checks, with a fake check that fails or raises."""
from __future__ import annotations

import warnings

import pytest
import torch

import apl
from apl.ops import dispatch, selftest as st
from helpers import random_labels, unit_rows


@pytest.fixture
def self_checks_cpu(monkeypatch):
    """Make "auto" self-check the CPU kernel as it does the CUDA one; `install` sets the check's result."""
    if not apl.available_backends()["cpu"].available:
        pytest.skip("compiled CPU kernels not built")
    monkeypatch.setattr(dispatch, "SELF_CHECKED", ("cpu", "cuda"))
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


def test_auto_falls_back_with_one_warning_when_the_check_fails(self_checks_cpu):
    calls = self_checks_cpu((False, "self/ap_q B=12 float32: error 0.3 > 0.0005"))
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


def test_auto_falls_back_when_a_launch_raises(self_checks_cpu):
    self_checks_cpu(exc=RuntimeError("no kernel image is available for execution on the device"))
    with pytest.warns(RuntimeWarning, match="no kernel image is available.*apl selftest"):
        assert dispatch.resolve("auto", torch.device("cpu")) == "torch"


def test_explicit_backend_is_not_self_checked(self_checks_cpu):
    calls = self_checks_cpu((False, "broken"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dispatch.resolve("cpu", torch.device("cpu")) == "cpu"
    assert calls == []


def test_auto_uses_the_kernel_when_the_check_passes_and_caches_it(self_checks_cpu):
    calls = self_checks_cpu((True, "fine"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            assert dispatch.resolve("auto", torch.device("cpu")) == "cpu"
    assert len(calls) == 1


def test_skip_selftest_env(self_checks_cpu, monkeypatch):
    calls = self_checks_cpu((False, "broken"))
    monkeypatch.setenv("APL_SKIP_SELFTEST", "1")
    assert dispatch.resolve("auto", torch.device("cpu")) == "cpu"
    assert calls == []


def test_self_check_once_per_device(monkeypatch):
    monkeypatch.delenv("APL_SKIP_SELFTEST", raising=False)
    seen = []

    def check(d):
        seen.append(str(d))
        return dict(ok=str(d) != "cuda:1", reason="bad AP")

    for d in ("cuda:0", "cuda:1", "cuda:0", "cuda:1"):
        ok, why = dispatch.self_check(torch.device(d), check=check)
        assert ok == (d == "cuda:0")
    assert seen == ["cuda:0", "cuda:1"]
    assert "failed apl's self-test on cuda:1 (bad AP)" in why


def test_why_not_names_the_reason():
    assert dispatch.why_not("torch", torch.device("cpu")) is None
    assert "cannot run on tensors on cpu" in dispatch.why_not("cuda", torch.device("cpu"))
    if not apl.available_backends()["cuda"].available and torch.cuda.is_available() is False:
        with pytest.raises(ValueError, match="backend='cuda' cannot run on tensors on cpu"):
            dispatch.resolve("cuda", torch.device("cpu"))


def test_available_backends_reports_reasons():
    status = apl.available_backends()
    assert set(status) == {"torch", "cpu", "cuda"}
    assert status["torch"].available
    for s in status.values():
        assert isinstance(s.reason, str) and s.reason
    if not torch.cuda.is_available():
        assert not status["cuda"].available


def test_auto_falls_back_to_reference_with_one_warning(monkeypatch):
    fake = {"torch": apl.BackendStatus(True, "ref"), "cpu": apl.BackendStatus(False, "kernel missing (test)"), "cuda": apl.BackendStatus(False, "no")}
    monkeypatch.setattr(dispatch, "available_backends", lambda: fake)
    x, y = unit_rows(6, 3), torch.tensor([0, 0, 1, 1, 2, 2])
    with pytest.warns(RuntimeWarning, match=r"pure-PyTorch reference backend: kernel missing \(test\)"):
        a = apl.ap_loss(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call stays silent
        b = apl.ap_loss(x, y)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, apl.ap_loss(x, y, backend="torch"))
    with pytest.raises(RuntimeError, match=r"backend='cpu' is not available: kernel missing \(test\)"):
        apl.ap_loss(x, y, backend="cpu")


def test_broken_extension_does_not_break_import(tmp_path):
    """A missing or broken apl._C is reported, never raised at import."""
    import subprocess
    import sys

    code = (
        "import sys, types\n"
        "class Boom(types.ModuleType):\n"
        "    def __getattr__(self, n): raise ImportError('simulated broken build')\n"
        "import importlib.abc\n"
        "class Finder(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'apl._C': raise ImportError('simulated broken build')\n"
        "sys.meta_path.insert(0, Finder())\n"
        "import warnings, torch, apl\n"
        "s = apl.available_backends()['cpu']\n"
        "assert not s.available and 'simulated broken build' in s.reason, s\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    l = apl.ap_loss(torch.nn.functional.normalize(torch.randn(4, 3), dim=1), torch.tensor([0, 0, 1, 1]))\n"
        "assert any('simulated broken build' in str(x.message) for x in w)\n"
        "print('ok', float(l))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


def test_a_sticky_error_is_raised_with_the_restart_advice_not_fallen_back_from(self_checks_cpu, monkeypatch):
    """After an illegal address the CUDA context is dead: the reference cannot run either, so "auto"
    says that the process must restart, naming the failing case, instead of falling back."""
    def dead(kind, device, sizes, quick=False):
        return dict(ok=False, max_error=float("inf"), time=0.0, sticky=True,
                    reason=f"{st.STICKY} (the first failing case: smooth_ap/long-row)")

    monkeypatch.setattr(st, "check_backend", dead)
    with pytest.raises(RuntimeError, match="restart it.*smooth_ap/long-row"):
        dispatch.resolve("auto", torch.device("cpu"))


@pytest.mark.parametrize("passes", [True, False])
def test_torch_compile_never_bakes_in_unchecked_kernels(self_checks_cpu, passes):
    """The self-check runs while torch.compile traces (not deferred to an eager call that a compiled loop
    never makes): a passing check puts the kernels in the graph, a failing one the reference."""
    calls = self_checks_cpu((passes, "fine" if passes else "self/ap_q B=12 float32: error 0.3 > 0.0005"))
    x, y = unit_rows(20, 6, seed=1), random_labels(20, 4, seed=1)
    torch._dynamo.reset()
    step = torch.compile(lambda e: apl.ap_loss(e, y), fullgraph=True, backend="aot_eager")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        got = step(x)
    assert len(calls) == 1, "the check did not run while compiling"
    fell_back = any("failed apl's self-test" in str(w.message) for w in rec)
    assert fell_back == (not passes)
    torch.testing.assert_close(got, apl.ap_loss(x, y, backend="cpu" if passes else "torch"), rtol=0, atol=0)
