"""The CUDA kernels' own source (csrc/cuda/ap_kernels.cu), run on the CPU through a
thread-per-CUDA-thread emulator (tests/cuda/cuda_emu/): the algorithm, indexing, barriers and
fixed-point sums, checked against the compiled CPU kernel without a GPU, also under the address,
undefined-behaviour and thread sanitizers (the emulator's own rules are checked in
test_emulator_rules.py). It cannot say anything about the GPU's own
execution: that is tests/cuda/test_runtime.py, on a GPU.
"""
from __future__ import annotations

import pytest
import torch

import apl
from cuda_emulation import build_library, run_under_sanitizer
from helpers import random_labels, score_matrix, unit_rows

HAS_CPU_KERNEL = apl.available_backends()["cpu"].available


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    if not HAS_CPU_KERNEL:
        pytest.skip("compiled CPU kernels not built (the emulated kernels are compared with them)")
    return _Emu(build_library("ap_kernels.cu", "emu_capi.cpp", tmp_path_factory.mktemp("cuda_emu")))


class _Emu:
    """ctypes calls of tests/cuda/cuda_emu/emu_capi.cpp on CPU tensors; outputs are poisoned first."""

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
    s, rel = score_matrix(dtype, seed=13, B=11, N=2100)  # long rows: several backward blocks
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
    """The launchers refuse (cudaErrorInvalidValue, before any launch) query rows
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
    CPU stand-ins of compute-sanitizer's memcheck and racecheck (tests/cuda/cuda_emu/emu_stress.cpp)."""
    run_under_sanitizer("ap_kernels.cu", "emu_stress.cpp", sanitizer, tmp_path)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_emulated_split_rows_are_bitwise_equal_to_one_block_per_row(emu, dtype):
    """Long rows split over several blocks (exact integer partial histograms summed
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
    """A float64 score one ulp above the centre of bin 2 gives bin 1 a weight of
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
