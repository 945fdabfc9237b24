"""Building the CUDA kernels' own source for the CPU emulator (tests/cuda/cuda_emu/): the pieces the
emulator test files share (source rewriting, the compile commands, the skips when a compiler or a
sanitizer runtime is missing)."""
from __future__ import annotations

import ctypes
import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
EMU_DIR = Path(__file__).resolve().parent / "cuda" / "cuda_emu"


def _load_transform():
    """cuda_emu/transform.py by path (a tool of these tests, not a package)."""
    spec = importlib.util.spec_from_file_location("apl_cuda_emu_transform", EMU_DIR / "transform.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.transform


transform = _load_transform()


def run(cmd: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _compile(cmd: list[str], what: str, sanitizer: str | None = None) -> None:
    if shutil.which("g++") is None:
        pytest.skip("no g++ for the CPU emulation of the CUDA kernels")
    res = run(cmd)
    if res.returncode != 0 and "barrier" in res.stderr and "No such file" in res.stderr:
        pytest.skip("the C++ library has no <barrier> (C++20)")
    if sanitizer and res.returncode != 0 and re.search(r"cannot find -l\w*san|lib\w*san", res.stderr):
        pytest.skip(f"no {sanitizer} sanitizer runtime: {res.stderr.strip().splitlines()[-1]}")
    assert res.returncode == 0, f"building {what} failed:\n{res.stderr[-4000:]}"


def _kernels_source(kernels: str, folder: Path) -> Path:
    src = folder / f"{Path(kernels).stem}_emu.cpp"
    src.write_text(transform((CSRC / "cuda" / kernels).read_text()))
    return src


def _flags(src: Path) -> list[str]:
    return ["-I", str(EMU_DIR), "-I", str(CSRC / "cuda"), "-I", str(CSRC), f"-DAPL_EMU_KERNELS=\"{src}\""]


def build_library(kernels: str, capi: str, folder: Path) -> ctypes.CDLL:
    """csrc/cuda/`kernels` rewritten for the emulator, linked with cuda_emu/`capi` (its C API) into
    a shared library loaded with ctypes."""
    src = _kernels_source(kernels, folder)
    lib = folder / f"{Path(capi).stem}.so"
    _compile(["g++", "-std=c++20", "-O1", "-pthread", "-shared", "-fPIC", *_flags(src), str(EMU_DIR / capi),
              "-o", str(lib)], f"the emulated {kernels}")
    return ctypes.CDLL(str(lib))


def run_under_sanitizer(kernels: str, driver: str, sanitizer: str, folder: Path) -> str:
    """csrc/cuda/`kernels` with the stress driver cuda_emu/`driver`, built with -fsanitize=`sanitizer`
    and run (the thread sanitizer on the driver's small cases); its output, after asserting it passed."""
    src = _kernels_source(kernels, folder)
    exe = folder / Path(driver).stem
    _compile(["g++", "-std=c++20", "-O1", "-g", "-pthread", f"-fsanitize={sanitizer}", "-fno-sanitize-recover=all",
              "-fno-omit-frame-pointer", *_flags(src), str(EMU_DIR / driver), "-o", str(exe)],
             f"the emulated {kernels} with {sanitizer}", sanitizer)
    result = run([str(exe)] + (["small"] if sanitizer == "thread" else []))
    out = result.stdout + result.stderr
    if "FATAL: ThreadSanitizer" in out and "memory mapping" in out:
        pytest.skip("ThreadSanitizer cannot run on this kernel's memory layout")
    assert result.returncode == 0 and f"{Path(driver).stem}: ok" in out, f"sanitizer {sanitizer} reported:\n{out[-6000:]}"
    return out


def build_program(source: Path, folder: Path) -> Path:
    """A standalone CUDA source (the emulator's own tests) rewritten and compiled as a program."""
    src = folder / f"{source.stem}.cpp"
    src.write_text(transform(source.read_text(), need_extern=False))
    exe = folder / source.stem
    _compile(["g++", "-std=c++20", "-O1", "-pthread", "-I", str(EMU_DIR), "-include",
              str(EMU_DIR / "cuda_runtime_api.h"), str(src), "-o", str(exe)], source.name)
    return exe
