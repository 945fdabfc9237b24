"""The CUDA kernels (csrc/cuda/).

Without a GPU: nvcc compile checks of csrc/cuda/*.cu for sm_80 and sm_90 (skipped when nvcc is
not on the PATH), a check of the generated PTX that the bin position of a score is computed
without FMA contraction (as on the CPU), a syntax check of the ATen glue against the installed
torch headers, and the naive B x N x M benchmark formulation against the reference.

With a GPU (skipped cleanly when torch has no CUDA or apl was built without its CUDA kernels):
CUDA vs compiled-CPU kernel vs reference parity (self / reference set / score-matrix forms, the
three variants, streaming, float32/float64/float16/bfloat16), gradcheck in float64 on CUDA,
torch.library.opcheck on CUDA tensors, torch.compile, bitwise determinism run to run, CUDA-graph
capture of forward + backward, non-finite detection, the bin limit, and a second device.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.autograd import gradcheck

import apl
from conftest import VARIANTS, random_labels, unit_rows

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
CU_SOURCES = sorted((CSRC / "cuda").glob("*.cu"))
GLUE_SOURCES = sorted((CSRC / "cuda").glob("*.cpp"))
ARCHS = ("75", "80", "90", "120")  # Turing to Blackwell: the ends of the default list (apl/_arch.py)
NVCC = shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc is not on the PATH")


# ----------------------------------------------------------------------------------------------
# Compile checks (no GPU needed)
# ----------------------------------------------------------------------------------------------


def _run(cmd: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_cuda_sources_exist():
    assert CU_SOURCES, "no csrc/cuda/*.cu found"
    assert GLUE_SOURCES, "no csrc/cuda/*.cpp found"


@needs_nvcc
@pytest.mark.parametrize("src", CU_SOURCES, ids=lambda p: p.name)
def test_nvcc_compiles(src, tmp_path):
    out = tmp_path / (src.stem + ".o")
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in ARCHS]
    cmd = [NVCC, "-std=c++17", "-O3", "-I", str(CSRC), *gencode, "-c", str(src), "-o", str(out)]
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
    cands = []
    for env in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(env):
            cands.append(Path(os.environ[env]) / "include")
    try:
        from torch.utils.cpp_extension import CUDA_HOME

        if CUDA_HOME:
            cands.append(Path(CUDA_HOME) / "include")
    except Exception:
        pass
    if NVCC:
        # nvcc may be a wrapper script (as on the CPU build machine): ask it where it lives.
        res = _run([NVCC, "--dryrun", "--version"])
        for m in re.finditer(r"TOP=(\S+)", res.stderr + res.stdout):
            cands.append(Path(m.group(1)) / "include")
        cands.append(Path(NVCC).resolve().parent.parent / "include")
    cands += [Path("/usr/local/cuda/include")]
    for c in cands:
        if (c / "cuda_runtime_api.h").exists():
            return str(c)
    return None


@pytest.mark.skipif(shutil.which("g++") is None, reason="no g++")
@pytest.mark.parametrize("src", GLUE_SOURCES, ids=lambda p: p.name)
def test_glue_syntax(src):
    """The ATen glue parses against the installed torch headers and the CUDA runtime headers
    (it includes no cuBLAS/cuSPARSE header, so a CPU build of torch and a bare toolkit do)."""
    cuda_inc = _cuda_include_dir()
    if cuda_inc is None:
        pytest.skip("CUDA runtime headers (cuda_runtime_api.h) not found")
    inc = _torch_include_dirs()
    defines = []
    if not (Path(inc[0]) / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h").exists():
        defines.append("-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE")  # CPU wheels lack this generated file
    cmd = ["g++", "-std=c++17", "-fsyntax-only", "-w", *defines]
    for d in inc + [cuda_inc]:
        cmd += ["-isystem", d]
    cmd += ["-I", str(CSRC), str(src)]
    res = _run(cmd)
    assert res.returncode == 0, f"g++ -fsyntax-only failed:\n{res.stderr[-6000:]}"


# ----------------------------------------------------------------------------------------------
# The kernels' own source run on the CPU through a thread-per-CUDA-thread emulator
# (tests/cuda_emu/): the algorithm, indexing, barriers and fixed-point sums, checked against the
# compiled CPU kernel without a GPU. It cannot say anything about the GPU's own execution.
# ----------------------------------------------------------------------------------------------

EMU_DIR = Path(__file__).resolve().parent / "cuda_emu"
HAS_CPU_KERNEL = apl.available_backends()["cpu"].available


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    import ctypes

    if shutil.which("g++") is None:
        pytest.skip("no g++ for the CPU emulation of the CUDA kernels")
    if not HAS_CPU_KERNEL:
        pytest.skip("compiled CPU kernels not built (the emulated kernels are compared with them)")
    sys.path.insert(0, str(EMU_DIR))
    try:
        from transform import transform
    finally:
        sys.path.pop(0)
    d = tmp_path_factory.mktemp("cuda_emu")
    src = d / "ap_kernels_emu.cpp"
    src.write_text(transform((CSRC / "cuda" / "ap_kernels.cu").read_text()))
    lib = d / "apl_emu.so"
    cmd = ["g++", "-std=c++20", "-O1", "-pthread", "-shared", "-fPIC", "-I", str(EMU_DIR), "-I", str(CSRC / "cuda"),
           "-I", str(CSRC), f"-DAPL_EMU_KERNELS=\"{src}\"", str(EMU_DIR / "emu_capi.cpp"), "-o", str(lib)]
    res = _run(cmd)
    if res.returncode != 0 and "barrier" in res.stderr and "No such file" in res.stderr:
        pytest.skip("the C++ library has no <barrier> (C++20)")
    assert res.returncode == 0, f"building the emulated kernels failed:\n{res.stderr[-4000:]}"
    return _Emu(ctypes.CDLL(str(lib)))


class _Emu:
    """ctypes calls of tests/cuda_emu/emu_capi.cpp on CPU tensors; outputs are poisoned first."""

    def __init__(self, lib):
        import ctypes

        self.c = ctypes
        self.lib = lib

    def _p(self, t):
        return self.c.c_void_p(t.data_ptr() if t is not None and t.numel() else 0)

    def forward(self, S, ql=None, xl=None, self_offset=-1, mask=None, M=20, lo=-1.0, hi=1.0, variant=0, split=0):
        use_mask = mask is not None
        c = self.c
        R, N = S.shape
        ap = torch.full((R,), float("nan"), dtype=S.dtype)
        npos = torch.full((R,), -7, dtype=torch.int64)
        coef = torch.full((R, 2, M), float("nan"), dtype=torch.float64)
        flag = torch.zeros(1, dtype=torch.int32)
        fn = getattr(self.lib, "apl_emu_forward_" + ("f32" if S.dtype == torch.float32 else "f64"))
        rc = fn(self._p(S), c.c_int64(R), c.c_int64(N), self._p(ql), self._p(xl), c.c_int64(self_offset),
                self._p(mask), c.c_int(use_mask), c.c_int(M), c.c_double(lo), c.c_double(hi), c.c_int64(variant),
                self._p(ap), self._p(npos), self._p(coef), self._p(flag), c.c_int(split))
        return rc, ap, npos, coef, flag

    def backward(self, S, slopes, ql=None, xl=None, self_offset=-1, mask=None, M=20, lo=-1.0, hi=1.0):
        use_mask = mask is not None
        c = self.c
        R, N = S.shape
        G = torch.full((R, N), float("nan"), dtype=S.dtype)
        fn = getattr(self.lib, "apl_emu_backward_" + ("f32" if S.dtype == torch.float32 else "f64"))
        rc = fn(self._p(S), c.c_int64(R), c.c_int64(N), self._p(ql), self._p(xl), c.c_int64(self_offset),
                self._p(mask), c.c_int(use_mask), c.c_int(M), c.c_double(lo), c.c_double(hi), self._p(slopes), self._p(G))
        return rc, G

    def symmetric(self, S, labels, slopes, M=20, lo=-1.0, hi=1.0):
        c = self.c
        B = S.shape[0]
        H = torch.full((B, B), float("nan"), dtype=S.dtype)
        fn = getattr(self.lib, "apl_emu_symmetric_" + ("f32" if S.dtype == torch.float32 else "f64"))
        rc = fn(self._p(S), c.c_int64(B), self._p(labels), self._p(slopes), c.c_int(M), c.c_double(lo),
                c.c_double(hi), self._p(H))
        return rc, H

    def max_num_bins(self):
        return self.lib.apl_emu_max_num_bins()


def _slopes(coef, grad_ap, M, lo=-1.0, hi=1.0):
    """csrc/ap_ops.cpp make_slopes, in torch."""
    g = grad_ap.double().mul((M - 1) / (hi - lo)).unsqueeze(1)
    cp, cn = coef[:, 0], coef[:, 1]
    dn = cn[:, :-1] - cn[:, 1:]
    dp = cp[:, :-1] - cp[:, 1:]
    return torch.stack([g * dn, g * (dn + dp)], 1).contiguous()


def _emu_close(got, want, dtype):
    if dtype == torch.float32:
        torch.testing.assert_close(got, want, rtol=2e-7, atol=1e-12)
    else:
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("M", [2, 20, 67])
def test_emulated_forward_labels_matches_cpu_kernel(emu, dtype, M):
    x, y = unit_rows(40, 6, dtype, seed=M), random_labels(40, 4, seed=M)
    y[3] = 99  # a query without a positive
    for variant in (0, 1, 2):
        ap, npos, coef, _saved = torch.ops.apl.ap_self(x, y, M, -1.0, 1.0, variant, 0)
        S = x @ x.t()  # the op may save dAP/dS instead of the scores (CPU unit-gradient strategy)
        rc, eap, enpos, ecoef, flag = emu.forward(S, y, y, 0, M=M, variant=variant)
        assert rc == 0 and flag.item() == 0
        assert torch.equal(enpos, npos)
        _emu_close(eap, ap, dtype)
        _emu_close(ecoef, coef, dtype)
    # streaming blocks: the self column moves with the block offset
    for r0, R in ((0, 17), (17, 20), (37, 3)):
        rc, bap, bnpos, bcoef, _ = emu.forward(S[r0:r0 + R].contiguous(), y[r0:r0 + R].contiguous(), y, r0, M=M, variant=2)
        assert rc == 0 and torch.equal(bnpos, npos[r0:r0 + R])
        assert torch.equal(bap, eap[r0:r0 + R]) and torch.equal(bcoef, ecoef[r0:r0 + R])
    # reference set (no exclusion)
    q, ql = unit_rows(9, 6, dtype, seed=M + 1), random_labels(9, 4, seed=M + 1)
    ap, npos, coef, _saved = torch.ops.apl.ap_ref(q, ql, x, y, M, -1.0, 1.0, 0, 0)
    Sq = q @ x.t()
    rc, eap, enpos, ecoef, _ = emu.forward(Sq, ql, y, -1, M=M, variant=0)
    assert rc == 0 and torch.equal(enpos, npos)
    _emu_close(eap, ap, dtype)
    _emu_close(ecoef, coef, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_emulated_mask_forward_and_backward_match_cpu_kernel(emu, dtype):
    s, rel = _score_inputs(dtype, seed=13, B=11, N=2100)  # long rows: several backward blocks
    for variant in (0, 1, 2):
        ap, npos, coef = torch.ops.apl.ap_scores(s, rel, 20, -1.0, 1.0, variant)
        rc, eap, enpos, ecoef, flag = emu.forward(s, mask=rel, variant=variant)
        assert rc == 0 and flag.item() == 0 and torch.equal(enpos, npos)
        _emu_close(eap, ap, dtype)
        _emu_close(ecoef, coef, dtype)
        grad_ap = torch.linspace(-1, 2, s.shape[0], dtype=torch.float64)
        G = torch.ops.apl.ap_scores_backward(grad_ap, s, rel, coef, 20, -1.0, 1.0)
        rc, eG = emu.backward(s, _slopes(coef, grad_ap, 20), mask=rel)
        assert rc == 0
        assert torch.equal(eG, G)  # same slopes, same bins: bitwise


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("B", [1, 2, 33, 70])
def test_emulated_backward_kernels_match_cpu_kernel(emu, dtype, B):
    x, y = unit_rows(B, 5, dtype, seed=B + 50), random_labels(B, 3, seed=B + 50)
    M = 12
    ap, npos, coef, saved = torch.ops.apl.ap_self(x, y, M, -1.0, 1.0, 0, 0)
    S = x @ x.t()  # the op may save dAP/dS instead of the scores (CPU unit-gradient strategy)
    grad_ap = torch.linspace(0.5, 1.5, B, dtype=torch.float64)
    sl = _slopes(coef, grad_ap, M)
    # row kernel with self-exclusion, whole and in blocks
    rc, G = emu.backward(S, sl, y, y, 0, M=M)
    assert rc == 0 and torch.equal(torch.diagonal(G), torch.zeros(B, dtype=dtype))
    for r0, R in ((0, max(1, B // 2)), (max(1, B // 2), B - max(1, B // 2))):
        if R <= 0:
            continue
        rc, Gb = emu.backward(S[r0:r0 + R].contiguous(), sl[r0:r0 + R].contiguous(), y[r0:r0 + R].contiguous(), y, r0, M=M)
        assert rc == 0 and torch.equal(Gb, G[r0:r0 + R])
    # symmetric tile kernel: H = G + G^T (each entry summed in double, then rounded)
    rc, H = emu.symmetric(S, y, sl, M=M)
    assert rc == 0
    if dtype == torch.float64:
        assert torch.equal(H, G + G.t())
    else:
        # (float)(g_ij + g_ji) against (float)g_ij + (float)g_ji: round-off of the larger term
        torch.testing.assert_close(H, G + G.t(), rtol=2e-7, atol=2e-7 * G.abs().max().item())
    # and against the CPU kernel's self backward: dD = H @ D
    dD = torch.ops.apl.ap_self_backward(grad_ap, x, y, coef, saved, M, -1.0, 1.0, 0)
    torch.testing.assert_close(H @ x, dD, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=1e-6 if dtype == torch.float32 else 1e-14)
    # reference-set backward: dQ = G X, dX = G^T Q
    X, xl = unit_rows(B + 3, 5, dtype, seed=B + 51), random_labels(B + 3, 3, seed=B + 51)
    ap, npos, coef, saved = torch.ops.apl.ap_ref(x, y, X, xl, M, -1.0, 1.0, 0, 0)
    Sq = x @ X.t()
    sl = _slopes(coef, grad_ap, M)
    rc, Gq = emu.backward(Sq, sl, y, xl, -1, M=M)
    assert rc == 0
    dQ, dX = torch.ops.apl.ap_ref_backward(grad_ap, x, y, X, xl, coef, saved, M, -1.0, 1.0, 0)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(Gq @ X, dQ, **tol)
    torch.testing.assert_close(Gq.t() @ x, dX, **tol)


def test_emulated_edge_cases(emu):
    S = torch.rand(4, 50, dtype=torch.float64) * 2 - 1
    lab = torch.zeros(50, dtype=torch.int64)
    # non-finite scores are flagged, the self column included
    for col in (2, 7):
        bad = S.clone()
        bad[2, col] = float("nan")
        assert emu.forward(bad, lab[:4].contiguous(), lab, 0)[4].item() == 1
        bad[2, col] = float("inf")
        assert emu.forward(bad, lab[:4].contiguous(), lab, 0)[4].item() == 1
    assert emu.forward(S, lab[:4].contiguous(), lab, 0)[4].item() == 0
    # empty database, empty block
    rc, ap, npos, coef, flag = emu.forward(torch.empty(3, 0, dtype=torch.float64), lab[:3].contiguous(), lab[:0], -1)
    assert rc == 0 and torch.equal(ap, torch.zeros(3, dtype=torch.float64)) and torch.equal(npos, torch.zeros(3, dtype=torch.int64))
    assert torch.equal(coef, torch.zeros_like(coef))
    assert emu.forward(torch.empty(0, 5, dtype=torch.float32), lab[:0], lab[:5].contiguous(), -1)[0] == 0
    rc, ap, npos, coef, flag = emu.forward(torch.empty(2, 0, dtype=torch.float32), mask=torch.empty(2, 0, dtype=torch.bool))
    assert rc == 0 and torch.equal(ap, torch.zeros(2)) and torch.equal(coef, torch.zeros_like(coef))
    assert emu.backward(torch.empty(2, 0), torch.zeros(2, 2, 19, dtype=torch.float64), mask=torch.empty(2, 0, dtype=torch.bool))[0] == 0
    assert emu.symmetric(torch.empty(0, 0), lab[:0], torch.zeros(0, 2, 19, dtype=torch.float64))[0] == 0
    # the bin limit
    big = emu.max_num_bins()
    assert big == 3056
    assert emu.forward(S, mask=S > 0, M=big)[0] == 0
    assert emu.forward(S, mask=S > 0, M=big + 1)[0] != 0
    assert emu.backward(S, torch.zeros(4, 2, big - 1, dtype=torch.float64), mask=S > 0, M=big)[0] == 0


def test_emulated_launchers_reject_sizes_beyond_the_launch_limits(emu):
    """Issue 10, 2.5: the launchers refuse (cudaErrorInvalidValue, before any launch) query rows
    beyond grid.x and a symmetric backward beyond 65535 tiles of 32; the ops turn these limits
    into a ValueError that names them (test_launch_limits_raise_value_error on a GPU)."""
    c, lib = emu.c, emu.lib
    lib.apl_emu_max_rows.restype = c.c_int64
    lib.apl_emu_max_symmetric_batch.restype = c.c_int64
    assert lib.apl_emu_max_rows() == 2**31 - 1
    assert lib.apl_emu_max_symmetric_batch() == 65535 * 32
    null = c.c_void_p(0)
    rc = lib.apl_emu_forward_f32(null, c.c_int64(2**31), c.c_int64(0), null, null, c.c_int64(-1), null,
                                 c.c_int(1), c.c_int(20), c.c_double(-1.0), c.c_double(1.0), c.c_int64(0),
                                 null, null, null, null, c.c_int(0))
    assert rc == 1
    rc = lib.apl_emu_symmetric_f32(null, c.c_int64(65535 * 32 + 1), null, null, c.c_int(20), c.c_double(-1.0),
                                   c.c_double(1.0), null)
    assert rc == 1


@pytest.mark.parametrize("sanitizer", ["address,undefined", "thread"])
def test_emulated_kernels_under_sanitizers(sanitizer, tmp_path):
    """Every kernel, emulated on the CPU on assorted shapes (partial tiles, empty inputs, the bin
    limit), under AddressSanitizer + UBSan (out-of-bounds shared/global accesses, UB) or
    ThreadSanitizer (a race between the threads of a block, i.e. a missing __syncthreads): the
    CPU stand-ins of compute-sanitizer's memcheck and racecheck (tests/cuda_emu/emu_stress.cpp)."""
    if shutil.which("g++") is None:
        pytest.skip("no g++")
    sys.path.insert(0, str(EMU_DIR))
    try:
        from transform import transform
    finally:
        sys.path.pop(0)
    src = tmp_path / "ap_kernels_emu.cpp"
    src.write_text(transform((CSRC / "cuda" / "ap_kernels.cu").read_text()))
    exe = tmp_path / "emu_stress"
    cmd = ["g++", "-std=c++20", "-O1", "-g", "-pthread", f"-fsanitize={sanitizer}", "-fno-sanitize-recover=all",
           "-fno-omit-frame-pointer", "-I", str(EMU_DIR), "-I", str(CSRC / "cuda"), "-I", str(CSRC),
           f"-DAPL_EMU_KERNELS=\"{src}\"", str(EMU_DIR / "emu_stress.cpp"), "-o", str(exe)]
    res = _run(cmd)
    if res.returncode != 0 and re.search(r"cannot find -l\w*san|lib\w*san", res.stderr):
        pytest.skip(f"no {sanitizer} sanitizer runtime: {res.stderr.strip().splitlines()[-1]}")
    assert res.returncode == 0, f"building the emulated kernels failed:\n{res.stderr[-4000:]}"
    run = _run([str(exe)] + (["small"] if sanitizer == "thread" else []))
    out = run.stdout + run.stderr
    if "FATAL: ThreadSanitizer" in out and "memory mapping" in out:
        pytest.skip("ThreadSanitizer cannot run on this kernel's memory layout")
    assert run.returncode == 0 and "emu_stress: ok" in out, f"sanitizer {sanitizer} reported:\n{out[-6000:]}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_emulated_split_rows_are_bitwise_equal_to_one_block_per_row(emu, dtype):
    """Issue 10, 2.6: long rows split over several blocks (exact integer partial histograms summed
    by a second kernel) give bitwise the result of one block per row, whatever the split; with
    float32 scores the fixed-point histograms are the exact sums, so also bitwise the CPU kernel."""
    g = torch.Generator().manual_seed(5)
    R, N = 3, 5000
    S = (torch.rand(R, N, generator=g, dtype=torch.float64) * 2.2 - 1.1).to(dtype)
    S[1, :700] = 0.25  # a big tie
    rel = torch.rand(R, N, generator=g) < 0.2
    y = random_labels(N, 5, seed=5)
    for variant in (0, 1, 2):
        one = emu.forward(S, mask=rel, variant=variant, split=1)
        for split in (2, 3, 7, 0):  # 0: the launcher's own choice
            got = emu.forward(S, mask=rel, variant=variant, split=split)
            assert got[0] == 0
            for a, b in zip(got[1:], one[1:]):
                assert torch.equal(a, b), f"split={split} differs from one block per row"
        ap, npos, coef = torch.ops.apl.ap_scores(S, rel, 20, -1.0, 1.0, variant)
        assert torch.equal(one[2], npos)
        if dtype == torch.float32:
            assert torch.equal(one[1], ap) and torch.equal(one[3], coef)
        else:
            _emu_close(one[1], ap, dtype)
            _emu_close(one[3], coef, dtype)
    # labels with self-exclusion (a streaming block at offset 100), and a NaN in the last block
    ql = y[100:100 + R].contiguous()
    one = emu.forward(S, ql, y, 100, split=1)
    got = emu.forward(S, ql, y, 100, split=4)
    for a, b in zip(got[1:], one[1:]):
        assert torch.equal(a, b)
    bad = S.clone()
    bad[2, N - 1] = float("nan")
    assert emu.forward(bad, mask=rel, split=4)[4].item() == 1


def test_emulated_tiny_float64_weight_is_not_rounded_away(emu):
    """Issue 10, 2.2: a float64 score one ulp above the centre of bin 2 gives bin 1 a weight of
    about 1e-15, below the fixed point's 2^-44 (N = 2^17). Rounded to 0, bin 1 and every bin above
    it looked empty while the gradient pass still puts the score in (bin 1, bin 2): coefficients
    of bins 0-1 were 1/3 instead of 2/3 and the item's dAP/ds was -3.17 instead of the CPU's."""
    M, N = 20, 131072
    centre = 1.0 - 2 * (2.0 / (M - 1))
    s_top = float(torch.nextafter(torch.tensor(centre, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)))
    assert s_top == 0.78947368421052644
    g = torch.Generator().manual_seed(0)
    S = torch.rand(1, N, generator=g, dtype=torch.float64) * 1.7 - 1.0  # all below bin 2's centre
    S[0, 0] = s_top
    rel = torch.rand(1, N, generator=g) < 0.05
    rel[0, 0] = True
    ap, npos, coef = torch.ops.apl.ap_scores(S, rel, M, -1.0, 1.0, 0)
    rc, eap, enpos, ecoef, flag = emu.forward(S, mask=rel, M=M)
    assert rc == 0 and flag.item() == 0 and torch.equal(enpos, npos)
    torch.testing.assert_close(ecoef[0, :, :2], coef[0, :, :2], rtol=1e-9, atol=0)
    torch.testing.assert_close(ecoef, coef, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(eap, ap, rtol=1e-12, atol=0)
    grad_ap = torch.ones(1, dtype=torch.float64)
    G = torch.ops.apl.ap_scores_backward(grad_ap, S, rel, coef, M, -1.0, 1.0)
    rc, eG = emu.backward(S, _slopes(ecoef, grad_ap, M), mask=rel, M=M)
    assert rc == 0
    torch.testing.assert_close(eG[0, 0], G[0, 0], rtol=1e-9, atol=1e-12)


def test_emulated_forward_deterministic(emu):
    s = (torch.rand(3, 20000, dtype=torch.float64) * 0.2 - 0.1).to(torch.float64)  # crowded bins
    rel = torch.rand(3, 20000) < 0.1
    runs = [emu.forward(s, mask=rel) for _ in range(3)]
    for r in runs[1:]:
        for a, b in zip(r[1:4], runs[0][1:4]):
            assert torch.equal(a, b)
    want = torch.ops.apl.ap_scores(s, rel, 20, -1.0, 1.0, 0)
    _emu_close(runs[0][3], want[2], torch.float64)


# --- the emulator itself: deliberately broken kernels (tests/cuda_emu/emu_broken.cu) ------------


@pytest.fixture(scope="module")
def broken_kernels(tmp_path_factory):
    """The broken kernels, rewritten by transform.py and compiled against the emulator; returns a
    runner of one case (a subprocess, so that a hang cannot take the test session with it)."""
    if shutil.which("g++") is None:
        pytest.skip("no g++")
    sys.path.insert(0, str(EMU_DIR))
    try:
        from transform import transform
    finally:
        sys.path.pop(0)
    d = tmp_path_factory.mktemp("emu_broken")
    src = d / "emu_broken.cpp"
    src.write_text(transform((EMU_DIR / "emu_broken.cu").read_text(), need_extern=False))
    exe = d / "emu_broken"
    res = _run(["g++", "-std=c++20", "-O1", "-pthread", "-I", str(EMU_DIR), "-include",
                str(EMU_DIR / "cuda_runtime_api.h"), str(src), "-o", str(exe)])
    if res.returncode != 0 and "barrier" in res.stderr and "No such file" in res.stderr:
        pytest.skip("the C++ library lacks C++20 headers")
    assert res.returncode == 0, f"building the broken kernels failed:\n{res.stderr[-4000:]}"

    def run(case: str, **env) -> dict[str, dict[str, str]] | list[int]:
        r = subprocess.run([str(exe), case], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, **env))
        assert r.returncode == 0, r.stdout + r.stderr
        if r.stdout.startswith("values:"):
            return [int(v) for v in r.stdout.split()[1:]]
        out = {}
        for line in r.stdout.splitlines():
            name, rest = line.split(" ", 1)
            fields, msg = rest.split(" msg=", 1)
            out[name] = dict(kv.split("=") for kv in fields.split())
            out[name]["msg"] = msg
        return out

    return run


CUDA_INVALID_VALUE, CUDA_INVALID_CONFIGURATION, CUDA_LAUNCH_TIMEOUT = "1", "9", "702"


def _assert_launch_error(r: dict, code: str, msg: str):
    # cudaPeekAtLastError keeps the error, cudaGetLastError returns and clears it; nothing ran
    assert (r["peek"], r["peek2"], r["get"], r["after"]) == (code, code, code, "0"), r
    assert msg in r["msg"]


def test_emulator_accepts_launches_at_the_limits(broken_kernels):
    r = broken_kernels("limits_ok")
    assert r["smem48k_1024threads"]["peek"] == "0" and r["block_z64"]["peek"] == "0"
    assert r["block_z64"]["runs"] == str(3 * 2 * (2 * 64))  # threads with x == 0, in all 6 blocks


def test_emulator_rejects_too_many_threads(broken_kernels):
    r = broken_kernels("threads")
    _assert_launch_error(r["threads1025"], CUDA_INVALID_CONFIGURATION, "at most 1024 threads")
    _assert_launch_error(r["block_z65"], CUDA_INVALID_CONFIGURATION, "at most 1024 threads")
    assert r["block_z65"]["runs"] == "0"


def test_emulator_rejects_grid_beyond_limits(broken_kernels):
    r = broken_kernels("grid")
    _assert_launch_error(r["grid_y70000"], CUDA_INVALID_CONFIGURATION, "y, z <= 65535")
    _assert_launch_error(r["grid_z65536"], CUDA_INVALID_CONFIGURATION, "y, z <= 65535")
    assert r["grid_z65536"]["runs"] == "0"


def test_emulator_rejects_too_much_shared_memory(broken_kernels):
    _assert_launch_error(broken_kernels("dynamic_smem")["dynamic"], CUDA_INVALID_VALUE, "shared memory")
    r = broken_kernels("static_smem")
    assert r["static40k_dynamic8k"]["peek"] == "0"  # 40 KiB static + 8 KiB dynamic: at the limit
    _assert_launch_error(r["static40k_dynamic9k"], CUDA_INVALID_VALUE, "static + dynamic")
    assert r["static40k_dynamic9k"]["runs"] == "1"  # the rejected launch did not run


POISON32 = 0xCDCDCDCD


def test_emulator_poisons_static_shared_memory(broken_kernels):
    assert broken_kernels("uninitialised") == [POISON32] * (3 * 64)  # never written: poison, not 0
    assert broken_kernels("carry_over") == [POISON32] * 8  # no value survives from another block


def test_emulator_shuffles_block_order(broken_kernels):
    order = broken_kernels("order")
    assert sorted(order) == list(range(64)) and order != list(range(64))
    assert broken_kernels("order", APL_EMU_SEED="7") != order  # the seed changes the order


def test_emulator_watchdog_turns_a_deadlock_into_an_error(broken_kernels):
    r = broken_kernels("deadlock", APL_EMU_WATCHDOG_S="1")
    _assert_launch_error(r["deadlock"], CUDA_LAUNCH_TIMEOUT, "barrier deadlock")
    assert "a __syncthreads not reached by every thread" in r["deadlock"]["msg"]
    assert r["after_deadlock"]["peek"] == "0" and r["after_deadlock"]["runs"] == "1"


# ----------------------------------------------------------------------------------------------
# The naive B x N x M formulation of the benchmark (device-agnostic, checked on the CPU here)
# ----------------------------------------------------------------------------------------------


def _naive_module():
    path = ROOT / "benchmarks" / "naive_ap.py"
    spec = importlib.util.spec_from_file_location("naive_ap", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _naive_vs_reference(device):
    naive = _naive_module()
    x, y = unit_rows(40, 6, seed=3).to(device), random_labels(40, 5, seed=3).to(device)
    y[0] = 1000  # a query without a positive
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ap_n, has_n = naive.naive_per_query_ap(xa, y, num_bins=12)
    ap_r, has_r = apl.per_query_ap(xb, y, num_bins=12, backend="torch")
    assert torch.equal(has_n, has_r)
    torch.testing.assert_close(ap_n, ap_r, rtol=0, atol=1e-12)
    ln = naive.naive_ap_loss(xa, y, num_bins=12)
    lr = apl.ap_loss(xb, y, num_bins=12, backend="torch")
    torch.testing.assert_close(ln, lr, rtol=0, atol=1e-12)
    ln.backward()
    lr.backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=0, atol=1e-10)


def test_naive_benchmark_formulation_matches_reference():
    _naive_vs_reference("cpu")


# ----------------------------------------------------------------------------------------------
# GPU runtime tests
# ----------------------------------------------------------------------------------------------


def _cuda_skip_reason() -> str | None:
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device (torch.version.cuda={torch.version.cuda})"
    ok, why = apl.available_backends()["cuda"]
    return None if ok else why


_SKIP = _cuda_skip_reason()
needs_cuda = pytest.mark.skipif(_SKIP is not None, reason=f"CUDA kernels cannot run: {_SKIP}")

LOW = (torch.float16, torch.bfloat16)
ALL_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def exact_rows(n: int, d: int = 16, seed: int = 0) -> torch.Tensor:
    """Rows with entries in {-1/4, 0, 1/4} and d = 16: every dot product is a multiple of 1/16,
    computed exactly by any GEMM (cuBLAS, MKL, TF32, any order) and in every dtype, so CUDA and
    CPU see bitwise the same scores. Norms are <= 1, no score sits on an interior bin centre
    (those are not multiples of 1/16 for M = 20), and many scores tie."""
    assert d == 16
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(-1, 2, (n, d), generator=g).to(torch.float64) / 4).contiguous()


def _tols(dtype, vs_reference: bool = False):
    """(ap/loss atol, gradient atol relative to the largest gradient entry).

    Against the compiled CPU kernel on bitwise-equal scores only round-off of the final GEMMs and
    of ap_math.h differs; the pure-PyTorch reference accumulates its float32 histograms and
    coefficients in float32, hence the looser bound against it."""
    if dtype == torch.float64:
        return (1e-10, 1e-9)
    ap_tol, grad_tol = (1e-5, 1e-4) if vs_reference else (2e-6, 2e-5)
    low = {torch.float16: 4e-3, torch.bfloat16: 2e-2}  # one ulp of the gradient's own dtype
    return ap_tol, max(grad_tol, low.get(dtype, 0.0))


def _run_api(backend, x, y, rx=None, ry=None, **kw):
    x = x.detach().clone().requires_grad_()
    rx = None if rx is None else rx.detach().clone().requires_grad_()
    ap, has = apl.per_query_ap(x, y, rx, ry, backend=backend, **kw)
    loss = apl.ap_loss(x, y, rx, ry, backend=backend, **kw)
    grads = torch.autograd.grad(loss, [x] if rx is None else [x, rx])
    return ap.detach(), has, loss.detach(), [g.detach() for g in grads]


def _assert_results_close(got, want, dtype, vs_reference=False):
    atol, grel = _tols(dtype, vs_reference)
    dev = got[0].device
    torch.testing.assert_close(got[0].to(dev), want[0].to(dev), rtol=0, atol=atol)
    assert torch.equal(got[1].cpu(), want[1].cpu())
    torch.testing.assert_close(got[2].to(dev), want[2].to(dev), rtol=0, atol=atol)
    for g, w in zip(got[3], want[3]):
        g, w = g.double().cpu(), w.double().cpu()
        scale = max(w.abs().max().item(), 1e-30)
        torch.testing.assert_close(g, w, rtol=0, atol=grel * scale)
        assert torch.isfinite(g).all()


def _inputs(dtype, form, seed):
    if dtype == torch.float64:
        x, y = unit_rows(48, 7, seed=seed), random_labels(48, 6, seed=seed)
        rx, ry = unit_rows(37, 7, seed=seed + 1), random_labels(37, 6, seed=seed + 1)
    else:  # bitwise identical scores on both devices (see exact_rows)
        x, y = exact_rows(48, seed=seed), random_labels(48, 6, seed=seed)
        rx, ry = exact_rows(37, seed=seed + 1), random_labels(37, 6, seed=seed + 1)
    x, rx = x.to(dtype), rx.to(dtype)
    if form == "self":
        return x, y, None, None
    return x, y, rx, ry


@needs_cuda
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("form", ["self", "ref"])
@pytest.mark.parametrize("chunk_size", [None, 5])
def test_parity_embeddings(dtype, variant, form, chunk_size):
    x, y, rx, ry = _inputs(dtype, form, seed=7)
    kw = dict(num_bins=20, variant=variant, chunk_size=chunk_size)
    cuda = lambda t: None if t is None else t.cuda()
    got = _run_api("cuda", cuda(x), cuda(y), cuda(rx), cuda(ry), **kw)
    ref = _run_api("torch", cuda(x), cuda(y), cuda(rx), cuda(ry), **kw)
    _assert_results_close(got, ref, dtype, vs_reference=True)
    if HAS_CPU_KERNEL:
        cpu = _run_api("cpu", x, y, rx, ry, **kw)
        _assert_results_close(got, cpu, dtype)


def _score_inputs(dtype, seed, B=9, N=57, M=20):
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(B, N, generator=g, dtype=torch.float64) * 2.4 - 1.2
    lo, hi = -1.0, 1.0
    centres = torch.tensor([hi - m * (hi - lo) / (M - 1) for m in range(M)], dtype=torch.float64)
    s[0, :M] = centres  # scores on bin centres
    s[1, :4] = torch.tensor([-1.0, 1.0, -1.5, 1.5], dtype=torch.float64)  # range edges and outside
    s[2, :] = 0.3  # one big tie
    rel = torch.rand(B, N, generator=g) < 0.3
    rel[3] = False  # a row without a relevant item
    return s.to(dtype), rel


@needs_cuda
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("variant", VARIANTS)
def test_parity_score_form(dtype, variant):
    s, rel = _score_inputs(dtype, seed=11)

    def run(backend, device):
        t = s.to(device).requires_grad_()
        ap = apl.quantized_ap(t, rel.to(device), num_bins=20, variant=variant, backend=backend)
        w = torch.linspace(0.5, 1.5, ap.shape[0], device=device, dtype=ap.dtype)
        (gs,) = torch.autograd.grad((ap * w).sum(), [t])
        return ap.detach(), gs.detach()

    ap_c, g_c = run("cuda", "cuda")
    assert ap_c.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert g_c.dtype == dtype
    others = [("torch", "cuda")] + ([("cpu", "cpu")] if HAS_CPU_KERNEL else [])
    for backend, device in others:
        atol, grel = _tols(dtype, vs_reference=backend == "torch")
        ap_o, g_o = run(backend, device)
        torch.testing.assert_close(ap_c.cpu(), ap_o.cpu(), rtol=0, atol=atol)
        scale = g_o.double().abs().max().item()
        torch.testing.assert_close(g_c.double().cpu(), g_o.double().cpu(), rtol=0, atol=grel * scale)


@needs_cuda
@pytest.mark.skipif(not HAS_CPU_KERNEL, reason="compiled CPU kernels not built")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("variant", VARIANTS)
def test_row_kernels_match_cpu_kernel_on_same_scores(dtype, variant):
    """Same scores on both devices, ops called directly: the per-row AP, counts and coefficients
    agree to double round-off (FMA contraction in ap_math.h is the only allowed difference), and
    the score gradient takes the same bin everywhere."""
    s, rel = _score_inputs(dtype, seed=12, B=33, N=300)
    outs = {}
    for dev in ("cpu", "cuda"):
        ap, npos, coef = torch.ops.apl.ap_scores(s.to(dev), rel.to(dev), 20, -1.0, 1.0, VARIANTS.index(variant))
        grad_ap = torch.linspace(-1, 1, s.shape[0], dtype=torch.float64, device=dev)
        G = torch.ops.apl.ap_scores_backward(grad_ap, s.to(dev), rel.to(dev), coef, 20, -1.0, 1.0)
        outs[dev] = [t.cpu() for t in (ap, npos, coef, G)]
    (ap0, n0, c0, g0), (ap1, n1, c1, g1) = outs["cpu"], outs["cuda"]
    assert torch.equal(n0, n1)
    torch.testing.assert_close(ap1, ap0, rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=0)
    torch.testing.assert_close(c1, c0, rtol=1e-10, atol=1e-13)
    # slopes are differences of adjacent coefficients: allow their round-off relative to max |G|
    g_tol = 1e-6 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(g1, g0, rtol=g_tol, atol=g_tol * 1e-2 * g0.abs().max().item())
    edge = ~((s > -1) & (s < 1))  # on or outside the range edges: zero gradient on both
    assert torch.equal(g1[edge], torch.zeros_like(g1[edge])) and torch.equal(g0[edge], g1[edge])


@needs_cuda
@pytest.mark.parametrize("chunk_size", [1, 7, 1000])
def test_streaming_equals_default(chunk_size):
    x, y = unit_rows(40, 8, seed=5).cuda(), random_labels(40, 4, seed=5).cuda()
    a = _run_api("cuda", x, y)
    b = _run_api("cuda", x, y, chunk_size=chunk_size)
    _assert_results_close(b, a, torch.float64)


@needs_cuda
def test_no_positive_gives_zero_loss_and_gradient():
    x = unit_rows(16, 8, torch.float32, seed=6).cuda()
    y = torch.arange(16, device="cuda")  # every label distinct: no query has a positive
    ap, has, loss, (g,) = _run_api("cuda", x, y)
    assert not has.any() and torch.equal(ap, torch.zeros_like(ap))
    assert loss.item() == 0.0 and torch.equal(g, torch.zeros_like(g))


@needs_cuda
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_embeddings_raise(bad):
    x, y = unit_rows(12, 4, torch.float32, seed=8).cuda(), random_labels(12, 3, seed=8).cuda()
    x[3, 1] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        apl.ap_loss(x, y, backend="cuda")
    with pytest.raises(ValueError, match="NaN or Inf"):
        apl.ap_loss(x, y, backend="cuda", chunk_size=5)


@needs_cuda
def test_launch_limits_raise_value_error():
    """Sizes past a launch's limits raise a ValueError naming the limit, before any allocation
    (empty or narrow tensors: nothing large is needed to reach them)."""
    s = torch.empty(2**31, 0, device="cuda")
    with pytest.raises(ValueError, match=r"at most 2147483647 query rows per launch"):
        torch.ops.apl.ap_scores(s, torch.empty(2**31, 0, dtype=torch.bool, device="cuda"), 20, -1.0, 1.0, 0)
    B = 65535 * 32 + 1
    x, y = torch.zeros(B, 1, device="cuda"), torch.zeros(B, dtype=torch.int64, device="cuda")
    with pytest.raises(ValueError, match=r"B <= 2097120 .*got B = 2097121; pass chunk_size"):
        torch.ops.apl.ap_self(x, y, 20, -1.0, 1.0, 0, 0)


@needs_cuda
def test_bin_limit():
    x, y = unit_rows(12, 4, seed=9).cuda(), random_labels(12, 3, seed=9).cuda()
    big = 3056  # the largest M the CUDA kernels handle (csrc/cuda/ap_kernels.cuh)
    _assert_results_close(_run_api("cuda", x, y, num_bins=big), _run_api("torch", x, y, num_bins=big),
                          torch.float64, vs_reference=True)
    with pytest.raises((ValueError, RuntimeError), match="num_bins"):
        torch.ops.apl.ap_self(x, y, big + 1, -1.0, 1.0, 0, 0)


@needs_cuda
@pytest.mark.parametrize("M", [2, 3, 64, 257])
def test_other_bin_counts(M):
    x, y = unit_rows(30, 6, seed=10).cuda(), random_labels(30, 3, seed=10).cuda()
    for variant in VARIANTS:
        _assert_results_close(_run_api("cuda", x, y, num_bins=M, variant=variant),
                              _run_api("torch", x, y, num_bins=M, variant=variant), torch.float64,
                              vs_reference=True)


# --- gradcheck (float64, on CUDA; same points as tests/test_gradcheck.py) ----------------------


@needs_cuda
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("chunk_size", [None, 4])
def test_gradcheck_self_cuda(variant, chunk_size):
    x, y = unit_rows(12, 5, seed=20).cuda().requires_grad_(), random_labels(12, 3, seed=20).cuda()
    w = torch.linspace(0.5, 2.0, 12, dtype=torch.float64, device="cuda")
    f = lambda e: apl.ap_loss(e, y, query_weights=w, num_bins=10, variant=variant, backend="cuda", chunk_size=chunk_size)
    assert gradcheck(f, (x,), eps=1e-6, atol=1e-7)


@needs_cuda
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("chunk_size", [None, 3])
def test_gradcheck_reference_set_cuda(variant, chunk_size):
    q, ql = unit_rows(7, 4, seed=21).cuda().requires_grad_(), random_labels(7, 2, seed=21).cuda()
    x, xl = unit_rows(11, 4, seed=22).cuda().requires_grad_(), random_labels(11, 2, seed=22).cuda()
    f = lambda a, b: apl.per_query_ap(a, ql, b, xl, num_bins=9, variant=variant, backend="cuda", chunk_size=chunk_size)[0]
    assert gradcheck(f, (q, x), eps=1e-6, atol=1e-7)


@needs_cuda
@pytest.mark.parametrize("variant", VARIANTS)
def test_gradcheck_score_form_cuda(variant):
    g = torch.Generator().manual_seed(23)
    s = (torch.rand(5, 17, generator=g, dtype=torch.float64) * 2.4 - 1.2).cuda().requires_grad_()
    rel = (torch.rand(5, 17, generator=g) < 0.4).cuda()
    f = lambda t: apl.quantized_ap(t, rel, num_bins=6, variant=variant, backend="cuda")
    assert gradcheck(f, (s,), eps=1e-6, atol=1e-7)


# --- opcheck and torch.compile ------------------------------------------------------------------


def _opcheck_samples():
    x, y = unit_rows(10, 4, seed=30), random_labels(10, 3, seed=30)
    q, ql = unit_rows(6, 4, seed=31), random_labels(6, 3, seed=31)
    s = torch.rand(5, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(32)) * 2 - 1
    rel = s > 0.2
    for dtype in (torch.float64, torch.float32, torch.float16):
        for chunk in (0, 3):
            for variant in (0, 1, 2):
                yield f"ap_self-{dtype}-{chunk}-{variant}", "ap_self", (x.to(dtype), y, 8, -1.0, 1.0, variant, chunk)
                yield f"ap_ref-{dtype}-{chunk}-{variant}", "ap_ref", (q.to(dtype), ql, x.to(dtype), y, 8, -1.0, 1.0, variant, chunk)
        yield f"ap_scores-{dtype}", "ap_scores", (s.to(dtype), rel, 7, -1.0, 1.0, 0)


def _to_cuda(args, grad: bool):
    out = []
    for a in args:
        if isinstance(a, torch.Tensor):
            a = a.cuda()
            if grad and a.is_floating_point():
                a.requires_grad_()
        out.append(a)
    return tuple(out)


@needs_cuda
@pytest.mark.parametrize("sample", list(_opcheck_samples()), ids=lambda s: s[0])
def test_opcheck_cuda(sample):
    _, name, args = sample
    torch.library.opcheck(getattr(torch.ops.apl, name).default, _to_cuda(args, grad=True))


@needs_cuda
@pytest.mark.parametrize("chunk", [0, 3])
def test_backward_ops_opcheck_cuda(chunk):
    x, y = unit_rows(8, 3, seed=33).cuda(), random_labels(8, 2, seed=33).cuda()
    ap, npos, coef, scores = torch.ops.apl.ap_self(x, y, 6, -1.0, 1.0, 0, chunk)
    g = torch.full_like(ap, -0.125)
    torch.library.opcheck(torch.ops.apl.ap_self_backward.default, (g, x, y, coef, scores, 6, -1.0, 1.0, chunk))
    q, ql = unit_rows(5, 3, seed=34).cuda(), random_labels(5, 2, seed=34).cuda()
    ap, npos, coef, scores = torch.ops.apl.ap_ref(q, ql, x, y, 6, -1.0, 1.0, 0, chunk)
    g = torch.full_like(ap, 0.25)
    torch.library.opcheck(torch.ops.apl.ap_ref_backward.default, (g, q, ql, x, y, coef, scores, 6, -1.0, 1.0, chunk))
    s = torch.rand(4, 9, dtype=torch.float64, device="cuda") * 2 - 1
    rel = s > 0
    ap, npos, coef = torch.ops.apl.ap_scores(s, rel, 5, -1.0, 1.0, 0)
    torch.library.opcheck(torch.ops.apl.ap_scores_backward.default, (torch.ones_like(ap), s, rel, coef, 5, -1.0, 1.0))


@needs_cuda
@pytest.mark.parametrize("compile_backend", ["aot_eager", "inductor"])
@pytest.mark.parametrize("chunk_size", [None, 16])
def test_torch_compile_cuda(compile_backend, chunk_size):
    if compile_backend == "inductor" and importlib.util.find_spec("triton") is None:
        pytest.skip("inductor on CUDA needs triton")
    x, y = unit_rows(64, 16, torch.float32, seed=34).cuda(), random_labels(64, 6, seed=34).cuda()
    loss_fn = apl.APLoss(backend="cuda", chunk_size=chunk_size)

    def step(e):
        return loss_fn(torch.nn.functional.normalize(e * 2.0, dim=1), y)

    compiled = torch.compile(step, backend=compile_backend, fullgraph=True)
    xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
    le, lc = step(xe), compiled(xc)
    le.backward()
    lc.backward()
    torch.testing.assert_close(lc, le, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(xc.grad, xe.grad, rtol=1e-4, atol=1e-6)


@needs_cuda
def test_torch_compile_fullgraph_op():
    x, y = unit_rows(32, 8, torch.float32, seed=35).cuda(), random_labels(32, 4, seed=35).cuda()

    def f(e):
        ap, npos, _coef, _s = torch.ops.apl.ap_self(e, y, 20, -1.0, 1.0, 0, 0)
        return (ap * (npos > 0)).sum()

    xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
    le = f(xe)
    lc = torch.compile(f, backend="aot_eager", fullgraph=True)(xc)
    le.backward()
    lc.backward()
    torch.testing.assert_close(lc, le)
    torch.testing.assert_close(xc.grad, xe.grad)


# --- determinism, CUDA graphs, devices ----------------------------------------------------------


def _fwd_bwd(x, y, **kw):
    x = x.detach().clone().requires_grad_()
    loss = apl.ap_loss(x, y, backend="cuda", **kw)
    (g,) = torch.autograd.grad(loss, [x])
    return loss.detach(), g


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("chunk_size", [None, 300])
def test_bitwise_deterministic(dtype, chunk_size):
    # Large enough that many warps and blocks contend for the same bins.
    x, y = unit_rows(1024, 64, dtype, seed=40).cuda(), random_labels(1024, 50, seed=40).cuda()
    runs = [_fwd_bwd(x, y, chunk_size=chunk_size) for _ in range(3)]
    for loss, g in runs[1:]:
        assert torch.equal(loss, runs[0][0])
        assert torch.equal(g, runs[0][1])
    outs = [torch.ops.apl.ap_self(x, y, 20, -1.0, 1.0, v, 0) for v in (0, 1, 2) for _ in range(2)]
    for a, b in zip(outs[::2], outs[1::2]):
        for ta, tb in zip(a, b):
            assert torch.equal(ta, tb)
    # score form, one long row per query
    s = (torch.rand(64, 50000, device="cuda") * 2 - 1).to(dtype)
    rel = torch.rand(64, 50000, device="cuda") < 0.05
    r1 = torch.ops.apl.ap_scores(s, rel, 20, -1.0, 1.0, 0)
    r2 = torch.ops.apl.ap_scores(s, rel, 20, -1.0, 1.0, 0)
    for ta, tb in zip(r1, r2):
        assert torch.equal(ta, tb)


@needs_cuda
@pytest.mark.parametrize("chunk_size", [None, 24])
@pytest.mark.parametrize("form", ["self", "ref"])
def test_cuda_graph_capture_forward_backward(chunk_size, form):
    B, D = 96, 32
    y = random_labels(B, 8, seed=41).cuda()
    static_x = unit_rows(B, D, torch.float32, seed=41).cuda().requires_grad_()
    static_r = unit_rows(70, D, torch.float32, seed=42).cuda().requires_grad_() if form == "ref" else None
    ry = random_labels(70, 8, seed=42).cuda() if form == "ref" else None
    params = [static_x] if static_r is None else [static_x, static_r]

    def step():
        loss = apl.ap_loss(static_x, y, static_r, ry, backend="cuda", chunk_size=chunk_size)
        loss.backward()
        return loss

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture, as torch.cuda.graphs requires
        for _ in range(3):
            for p in params:
                p.grad = None
            step()
    torch.cuda.current_stream().wait_stream(side)
    for p in params:
        p.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = step()

    for seed in (43, 44):
        new = [unit_rows(p.shape[0], D, torch.float32, seed=seed + i).cuda() for i, p in enumerate(params)]
        with torch.no_grad():
            for p, n in zip(params, new):
                p.copy_(n)
        graph.replay()
        torch.cuda.synchronize()
        eager = [n.clone().requires_grad_() for n in new]
        loss = apl.ap_loss(eager[0], y, eager[1] if form == "ref" else None, ry, backend="cuda", chunk_size=chunk_size)
        loss.backward()
        torch.testing.assert_close(static_loss, loss.detach(), rtol=0, atol=1e-6)
        for p, e in zip(params, eager):
            torch.testing.assert_close(p.grad, e.grad, rtol=1e-5, atol=1e-7)


@needs_cuda
def test_current_stream_is_used():
    x, y = unit_rows(256, 32, torch.float32, seed=45).cuda(), random_labels(256, 10, seed=45).cuda()
    want = _fwd_bwd(x, y)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        got = _fwd_bwd(x, y)
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@needs_cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_second_device():
    x, y = unit_rows(40, 8, torch.float32, seed=46), random_labels(40, 4, seed=46)
    a = _run_api("cuda", x.to("cuda:0"), y.to("cuda:0"))
    b = _run_api("cuda", x.to("cuda:1"), y.to("cuda:1"))
    assert b[0].device == torch.device("cuda:1")
    _assert_results_close(b, a, torch.float32)


@needs_cuda
def test_naive_benchmark_formulation_matches_reference_cuda():
    _naive_vs_reference("cuda")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
