"""Build configuration (setup.py, apl/toolchain/cuda_arch.py), without a GPU: the GPU architectures the CUDA
kernels are built for, and a clear message when torch is missing at build time."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from apl.toolchain.cuda_arch import cuda_arch_list, parse_nvcc_version

ROOT = Path(__file__).resolve().parents[2]


def test_visible_gpu_architecture_is_built():
    assert cuda_arch_list([(7, 5)], (13, 0)) == "7.5+PTX"  # a T4 gets its own image
    assert cuda_arch_list([(9, 0), (8, 0), (9, 0)], (12, 4)) == "8.0;9.0+PTX"
    assert cuda_arch_list([(12, 0)], (12, 8)) == "12.0+PTX"


def test_default_list_without_a_gpu_ends_in_ptx():
    assert cuda_arch_list([], (12, 4)) == "7.5;8.0;8.6;8.9;9.0+PTX"
    assert cuda_arch_list([], (13, 0)) == "7.5;8.0;8.6;8.9;9.0;10.0;12.0+PTX"
    assert cuda_arch_list([], None) == "7.5;8.0;8.6;8.9;9.0+PTX"  # nvcc unknown: no Blackwell
    # Turing (T4, sm_75) and Blackwell are covered: the defect of the old "8.0;9.0" default
    assert "7.5" in cuda_arch_list([], (13, 0)).split(";")
    assert cuda_arch_list([], (13, 0)).split(";")[-1] == "12.0+PTX"


def test_override_wins():
    assert cuda_arch_list([(7, 5)], (13, 0), override="8.0;9.0") == "8.0;9.0"


def test_parse_nvcc_version():
    assert parse_nvcc_version("Cuda compilation tools, release 13.0, V13.0.88") == (13, 0)
    assert parse_nvcc_version("Cuda compilation tools, release 12.8, V12.8.61") == (12, 8)
    assert parse_nvcc_version("nothing") is None


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on the PATH")
def test_installed_nvcc_supports_the_default_list():
    out = subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout
    supported = subprocess.run(["nvcc", "--list-gpu-arch"], capture_output=True, text=True).stdout.split()
    for arch in cuda_arch_list([], parse_nvcc_version(out)).split(";"):
        code = "compute_" + arch.replace("+PTX", "").replace(".", "")
        assert code in supported, f"nvcc {parse_nvcc_version(out)} cannot build {arch}"


def test_setup_without_torch_says_what_is_missing(tmp_path):
    fake = tmp_path / "torch"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    res = subprocess.run([sys.executable, "setup.py", "--name"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    assert "PyTorch is needed to build apl's kernels" in res.stderr
    assert "No module named 'torch'" in res.stderr
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in res.stderr
    assert "--no-build-isolation" in res.stderr
