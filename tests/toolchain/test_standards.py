"""The CPU sources parse as C++20 against the installed torch headers. setup.py leaves the standard
to torch (C++17 up to torch 2.13, C++20 from 2.14), so both must work whichever torch a user has: a
build against torch 2.13 compiles them as C++17, and this test adds C++20 there (against torch 2.14
the build itself is C++20)."""
from __future__ import annotations

import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"
TORCH = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
SOURCES = sorted(CSRC.glob("*.cpp")) + sorted((CSRC / "cpu").glob("*.cpp"))


@pytest.mark.skipif(shutil.which("g++") is None, reason="no g++")
@pytest.mark.skipif(TORCH >= (2, 14), reason="torch >= 2.14 builds apl as C++20 itself")
def test_cpu_sources_parse_as_cpp20():
    base = Path(torch.__file__).resolve().parent / "include"
    cmd = ["g++", "-std=c++20", "-fsyntax-only", "-w", "-fopenmp", "-isystem", str(base),
           "-isystem", str(base / "torch" / "csrc" / "api" / "include"), "-isystem", sysconfig.get_paths()["include"],
           "-I", str(CSRC)]
    res = subprocess.run(cmd + [str(s) for s in SOURCES], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stderr[-6000:]}"
