"""The first compiler error of a failed build log (apl/toolchain/build_log.py), which install.sh
prints instead of pip's traceback."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from apl.toolchain.build_log import first_error

ROOT = Path(__file__).resolve().parents[2]
LOG = Path(__file__).parent / "data" / "pip_build_failed.log"  # torch 2.14 headers built as C++17


def test_real_log_gives_the_compiler_line_not_pips():
    line = first_error(LOG.read_text().splitlines())
    assert line == ("/venv/lib/python3.11/site-packages/torch/include/ATen/ATen.h:5:2: error: "
                    "#error C++20 or later compatible compiler is required to use ATen.")


def test_other_tools_errors():
    assert first_error(["  x.cu(12): error: identifier \"foo\" is undefined"]) == 'x.cu(12): error: identifier "foo" is undefined'
    assert first_error(["a.cpp:3:10: fatal error: cuda_runtime.h: No such file or directory"]).startswith("a.cpp:3:10: fatal")
    assert first_error(["ld: x.o: undefined reference to `foo'"]) == "ld: x.o: undefined reference to `foo'"
    assert first_error(["apl setup.py: building the CUDA kernels for 9.0",
                        "apl setup.py: error: CUDA_HOME=/x is not a usable CUDA toolkit"]) == \
        "apl setup.py: error: CUDA_HOME=/x is not a usable CUDA toolkit"
    assert first_error(["  error: subprocess-exited-with-error", "RuntimeError: Error compiling objects"]) is None


def test_command_line(tmp_path):
    script = ROOT / "apl" / "toolchain" / "build_log.py"
    res = subprocess.run([sys.executable, str(script), str(LOG)], capture_output=True, text=True)
    assert res.returncode == 0 and "#error C++20" in res.stdout
    empty = tmp_path / "ok.log"
    empty.write_text("all good\n")
    res = subprocess.run([sys.executable, str(script), str(empty)], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout == ""
