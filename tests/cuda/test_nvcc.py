"""Compile checks of the CUDA sources without a GPU: nvcc builds csrc/cuda/*.cu for the ends of
the default architecture list (skipped when nvcc is not on the PATH), the generated PTX computes a
score's bin position without FMA contraction (as on the CPU), and the ATen glue passes a syntax
check against the installed torch headers."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from apl.toolchain.cuda_toolkit import CudaHomeError, find_cuda_home

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"
CU_SOURCES = sorted((CSRC / "cuda").glob("*.cu"))
GLUE_SOURCES = sorted((CSRC / "cuda").glob("*.cpp"))
ARCHS = ("75", "80", "90", "120")  # Turing to Blackwell: the ends of the default list (apl/toolchain/cuda_arch.py)
# setup.py leaves the standard to torch: C++17 up to torch 2.13, C++20 from 2.14. The sources must compile as both.
STANDARDS = ("c++17", "c++20")
NVCC = shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc is not on the PATH")


def _run(cmd: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_cuda_sources_exist():
    assert CU_SOURCES, "no csrc/cuda/*.cu found"
    assert GLUE_SOURCES, "no csrc/cuda/*.cpp found"


@needs_nvcc
@pytest.mark.parametrize("std", STANDARDS)
@pytest.mark.parametrize("src", CU_SOURCES, ids=lambda p: p.name)
def test_nvcc_compiles(src, std, tmp_path):
    """Every architecture of the default list's ends in the standard torch <= 2.13 builds with; the
    other standard for one architecture (the source does not depend on it)."""
    out = tmp_path / (src.stem + ".o")
    archs = ARCHS if std == "c++17" else ARCHS[2:3]
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    cmd = [NVCC, f"-std={std}", "-O3", "-I", str(CSRC), *gencode, "-c", str(src), "-o", str(out)]
    res = _run(cmd)
    assert res.returncode == 0, f"nvcc failed ({' '.join(cmd)}):\n{res.stdout}\n{res.stderr}"
    assert out.exists() and out.stat().st_size > 0, "nvcc wrote no object file"


def _ptx_entries(src: Path, tmp_path: Path, extra: tuple[str, ...] = ()) -> dict[str, str]:
    ptx = tmp_path / (src.stem + ".ptx")
    cmd = [NVCC, "-std=c++17", "-O3", "-I", str(CSRC), "-arch=sm_90", *extra, "-ptx", str(src), "-o", str(ptx)]
    res = _run(cmd)
    assert res.returncode == 0, f"nvcc -ptx failed:\n{res.stdout}\n{res.stderr}"
    text = ptx.read_text()
    entries = {}
    for chunk in text.split(".entry ")[1:]:
        name = re.match(r"(\S+?)\(", chunk).group(1)
        entries[name] = chunk
    assert entries, "no kernel entry in the PTX"
    return entries


@needs_nvcc
def test_bin_position_not_contracted(tmp_path):
    """The bin position t = (hi - clamp(s)) * inv_delta and frac = t - m must round exactly like
    the CPU kernel (x86-64 without FMA): no float32 FMA anywhere in the kernels, and no FMA at all
    in the backward kernels (whose only arithmetic is `locate`). A change of nvcc or of ap_math.h
    that makes the compiler contract them fails here."""
    src = CSRC / "cuda" / "ap_kernels.cu"
    entries = _ptx_entries(src, tmp_path)
    kinds = {k: [n for n in entries if k in n] for k in ("forward_kernel", "backward_kernel", "symmetric_kernel")}
    for kind, names in kinds.items():
        assert len(names) >= 2, f"expected float and double instances of {kind}, got {names}"
    for name, body in entries.items():
        assert "fma.rn.f32" not in body, f"float32 FMA in {name}"
    for name in kinds["backward_kernel"] + kinds["symmetric_kernel"]:
        assert "fma." not in entries[name], f"FMA in {name}: locate() was contracted"


def _torch_include_dirs() -> list[str]:
    base = Path(torch.__file__).resolve().parent / "include"
    return [str(base), str(base / "torch" / "csrc" / "api" / "include")]


def _cuda_include_dir() -> str | None:
    """The CUDA runtime headers, found as setup.py finds the toolkit."""
    try:
        found = find_cuda_home(None)
    except CudaHomeError:
        return None
    return str(Path(found.home) / "include") if found.home else None


@pytest.mark.skipif(shutil.which("g++") is None, reason="no g++")
@pytest.mark.parametrize("std", STANDARDS)
@pytest.mark.parametrize("src", GLUE_SOURCES, ids=lambda p: p.name)
def test_glue_syntax(src, std):
    """The ATen glue parses against the installed torch headers and the CUDA runtime headers
    (it includes no cuBLAS/cuSPARSE header, so a CPU build of torch and a bare toolkit do)."""
    cuda_inc = _cuda_include_dir()
    if cuda_inc is None:
        pytest.skip("CUDA runtime headers (cuda_runtime_api.h) not found")
    inc = _torch_include_dirs()
    defines = []
    if not (Path(inc[0]) / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h").exists():
        defines.append("-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE")  # CPU wheels lack this generated file
    cmd = ["g++", f"-std={std}", "-fsyntax-only", "-w", *defines]
    for d in inc + [cuda_inc]:
        cmd += ["-isystem", d]
    cmd += ["-I", str(CSRC), str(src)]
    res = _run(cmd)
    if std == "c++17" and "C++20 or later compatible compiler is required" in res.stderr:
        pytest.skip(f"torch {torch.__version__}'s headers need C++20")
    assert res.returncode == 0, f"g++ -fsyntax-only failed:\n{res.stderr[-6000:]}"
