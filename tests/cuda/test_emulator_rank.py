"""The CUDA row kernel of the rank surrogates (csrc/cuda/rank_kernels.cu: Smooth-AP, Recall@k) run
on the CPU through the thread-per-CUDA-thread emulator (tests/cuda/cuda_emu/), against the compiled
CPU kernel (torch.ops.apl.rank_self / rank_ref with chunk_size 0, whose saved output is
U = d value / d scores): values, positive counts and U, for both dtypes, both losses, the three
query modes, rows with no positive and with only positives, long rows with few and with more
positives than the kernel keeps in shared memory, both sigmoid paths, non-finite scores, U written
over the scores, bitwise determinism and the launcher's limits. It says nothing about a GPU's own
execution (tests/cuda/test_runtime.py does, on a GPU).
"""
from __future__ import annotations

import pytest
import torch

import apl
from cuda_emulation import build_library, run_under_sanitizer
from helpers import random_labels, unit_rows

KS = [1.0, 2.0, 4.0, 8.0, 16.0]
KT = [1.0] * len(KS)
# (id, kind, temperature, ks, k temperatures)
LOSSES = [("smooth_ap-0.01", 0, 0.01, [], []), ("smooth_ap-0.1", 0, 0.1, [], []),
          ("recall_at_k", 1, 0.01, KS, KT)]
LOSS_IDS = [c[0] for c in LOSSES]
MODES = [0, 1, 2]  # the query left out; an item and a positive; an item only


def _has_cpu_rank_kernel() -> bool:
    return apl.available_backends()["cpu"].available and hasattr(torch.ops.apl, "rank_ref")


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    if not _has_cpu_rank_kernel():
        pytest.skip("compiled CPU rank kernels not built (the emulated kernel is compared with them)")
    return _RankEmu(build_library("rank_kernels.cu", "emu_rank_capi.cpp", tmp_path_factory.mktemp("cuda_emu_rank")))


class _RankEmu:
    """ctypes calls of tests/cuda/cuda_emu/emu_rank_capi.cpp on CPU tensors; outputs are poisoned."""

    def __init__(self, lib):
        import ctypes

        self.c = ctypes
        self.lib = lib
        lib.apl_emu_rank_max_rows.restype = ctypes.c_int64
        lib.apl_emu_last_message.restype = ctypes.c_char_p

    def _p(self, t):
        return self.c.c_void_p(t.data_ptr() if t is not None and t.numel() else 0)

    def forward(self, S, ql, xl, self_offset, kind, tau, ks=(), kts=(), mode=0, spill_blocks=0, U=None):
        """(rc, value, npos, nonfinite, U); U: the output buffer (S itself to write over the scores)."""
        c = self.c
        R, N = S.shape
        value = torch.full((R,), float("nan"), dtype=S.dtype)
        npos = torch.full((R,), -7, dtype=torch.int64)
        flag = torch.zeros(1, dtype=torch.int32)
        if U is None:
            U = torch.full((R, N), float("nan"), dtype=S.dtype)
        k = torch.tensor(list(ks) + [0.0], dtype=torch.float64)
        kt = torch.tensor(list(kts) + [0.0], dtype=torch.float64)
        fn = getattr(self.lib, "apl_emu_rank_forward_" + ("f32" if S.dtype == torch.float32 else "f64"))
        rc = fn(self._p(S), c.c_int64(R), c.c_int64(N), self._p(ql), self._p(xl), c.c_int64(self_offset),
                c.c_int64(kind), c.c_double(tau), self._p(k), self._p(kt), c.c_int(len(ks)), c.c_int64(mode),
                c.c_int64(spill_blocks), self._p(value), self._p(npos), self._p(flag), self._p(U))
        return rc, value, npos, flag, U

    def table_positives(self) -> int:
        return self.lib.apl_emu_rank_table_positives()


def _close(got, want, dtype, tau=None):
    """Double round-off (the CPU kernel accumulates in double too, in another order). For U (tau
    given) the absolute tolerance follows its largest entry, or 1e-4 / tau where all of U is
    round-off (a row of positives only: the terms cancel exactly but for rounding)."""
    scale = want.abs().max().item() if want.numel() else 1.0
    if tau is not None:
        scale = max(scale, 1e-4 / tau)
    if dtype == torch.float64:
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12 * scale)
    else:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6 * scale)


def _check_ref(emu, Q, ql, X, xl, self_offset, kind, tau, ks, kts, mode, spill_blocks=0):
    """The emulated kernel on S = Q X^T against torch.ops.apl.rank_ref; returns the emulated outputs."""
    want_v, want_n, want_U = torch.ops.apl.rank_ref(Q, ql, X, xl, kind, tau, ks, kts, mode, 0, self_offset)
    S = Q @ X.t()
    rc, v, n, flag, U = emu.forward(S, ql, xl, self_offset, kind, tau, ks, kts, mode, spill_blocks)
    assert rc == 0 and flag.item() == 0
    assert torch.equal(n, want_n)
    _close(v, want_v, Q.dtype)
    _close(U, want_U, Q.dtype, tau)
    return v, n, U


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("loss", LOSSES, ids=LOSS_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_self_retrieval_matches_cpu_kernel(emu, dtype, loss, mode):
    _, kind, tau, ks, kts = loss
    x, y = unit_rows(40, 6, dtype, seed=mode + 3), random_labels(40, 4, seed=mode + 3)
    y[3] = 99  # no positive (mode 1: the query itself only)
    want_v, want_n, want_U = torch.ops.apl.rank_self(x, y, kind, tau, ks, kts, mode, 0)
    S = x @ x.t()
    rc, v, n, flag, U = emu.forward(S, y, y, 0, kind, tau, ks, kts, mode)
    assert rc == 0 and flag.item() == 0
    assert torch.equal(n, want_n) and n[3].item() == (1 if mode == 1 else 0)
    _close(v, want_v, dtype)
    _close(U, want_U, dtype, tau)
    # streaming blocks of queries: the own column moves with the block offset; bitwise the same rows
    for r0, R in ((0, 17), (17, 23)):
        rc, bv, bn, _, bU = emu.forward(S[r0:r0 + R].contiguous(), y[r0:r0 + R].contiguous(), y, r0, kind, tau,
                                        ks, kts, mode)
        assert rc == 0
        assert torch.equal(bv, v[r0:r0 + R]) and torch.equal(bn, n[r0:r0 + R]) and torch.equal(bU, U[r0:r0 + R])


@pytest.mark.parametrize("loss", [LOSSES[0], LOSSES[2]], ids=[LOSS_IDS[0], LOSS_IDS[2]])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_reference_set_matches_cpu_kernel(emu, dtype, loss):
    _, kind, tau, ks, kts = loss
    Q, ql = unit_rows(9, 6, dtype, seed=21), random_labels(9, 3, seed=21)
    M, ml = unit_rows(50, 6, dtype, seed=22), random_labels(50, 3, seed=22)
    # queries not among the items
    _check_ref(emu, Q, ql, M, ml, -1, kind, tau, ks, kts, 0)
    # the reference set holds the queries at columns 5 + r: every query mode
    X, xl = torch.cat([M[:5], Q, M[5:]]), torch.cat([ml[:5], ql, ml[5:]])
    for mode in MODES:
        _check_ref(emu, Q, ql, X, xl, 5, kind, tau, ks, kts, mode)


@pytest.mark.parametrize("loss", [LOSSES[0], LOSSES[2]], ids=[LOSS_IDS[0], LOSS_IDS[2]])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_rows_without_a_positive_and_with_only_positives(emu, dtype, loss):
    _, kind, tau, ks, kts = loss
    Q = unit_rows(4, 5, dtype, seed=31)
    X = unit_rows(30, 5, dtype, seed=32)
    ql = torch.tensor([7, 99, 7, 98])
    xl = torch.full((30,), 7, dtype=torch.int64)
    v, n, U = _check_ref(emu, Q, ql, X, xl, -1, kind, tau, ks, kts, 0)
    assert n.tolist() == [30, 0, 30, 0]
    assert v[1].item() == 0 and v[3].item() == 0 and not U[1].any() and not U[3].any()
    # one class: every item is a positive, with the query in each of its places
    x, y = unit_rows(20, 5, dtype, seed=33), torch.zeros(20, dtype=torch.int64)
    for mode in MODES:
        want_v, want_n, want_U = torch.ops.apl.rank_self(x, y, kind, tau, ks, kts, mode, 0)
        rc, v, n, _, U = emu.forward(x @ x.t(), y, y, 0, kind, tau, ks, kts, mode)
        assert rc == 0 and torch.equal(n, want_n) and n[0].item() == (20 if mode == 1 else 19)
        _close(v, want_v, dtype)
        _close(U, want_U, dtype, tau)


def _long_rows(dtype, table):
    """4 queries against N = 2600 items: 5 positives, 1300 and 1295 (more than the shared-memory
    table of `table` positives: the spill kernel, pass 2 in several tiles), none; a big tie."""
    N = 2600
    assert 1295 > 2 * table
    Q, X = unit_rows(4, 8, dtype, seed=41), unit_rows(N, 8, dtype, seed=42)
    X[2000:2300] = X[2000]  # 300 items tied on every row
    xl = torch.full((N,), 2, dtype=torch.int64)
    xl[:5], xl[5:1305] = 0, 1
    xl = xl[torch.randperm(N, generator=torch.Generator().manual_seed(43))]
    ql = torch.tensor([0, 1, 2, 3])
    return Q, ql, X, xl


@pytest.mark.parametrize("loss", [LOSSES[0], LOSSES[2]], ids=[LOSS_IDS[0], LOSS_IDS[2]])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_long_rows_with_few_and_many_positives(emu, dtype, loss):
    _, kind, tau, ks, kts = loss
    Q, ql, X, xl = _long_rows(dtype, emu.table_positives())
    v, n, U = _check_ref(emu, Q, ql, X, xl, -1, kind, tau, ks, kts, 0)
    assert n.tolist() == [5, 1300, 1295, 0]
    # one block walking both long rows (the spill kernel's grid-stride loop): bitwise the same
    rc, v1, n1, _, U1 = emu.forward(Q @ X.t(), ql, xl, -1, kind, tau, ks, kts, 0, spill_blocks=1)
    assert rc == 0 and torch.equal(v1, v) and torch.equal(n1, n) and torch.equal(U1, U)
    # the query among the items (columns 0..3), as an item and a positive
    Xs, xls = torch.cat([Q, X]), torch.cat([ql, xl])
    _check_ref(emu, Q, ql, Xs, xls, 0, kind, tau, ks, kts, 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_exp_per_pair_path(emu, dtype):
    """Scores spread over more than 700 temperatures (tau = 1e-3, scores in [-1, 1]): the rows take
    the exp-per-pair path, as on the CPU; also a long row with many positives."""
    x, y = unit_rows(40, 3, dtype, seed=51), random_labels(40, 3, seed=51)
    S = x @ x.t()
    assert ((S.max(1).values - S.min(1).values) / 1e-3 > 700).all()
    for kind, ks, kts in ((0, [], []), (1, KS, KT)):
        for mode in (0, 1):
            want_v, want_n, want_U = torch.ops.apl.rank_self(x, y, kind, 1e-3, ks, kts, mode, 0)
            rc, v, n, _, U = emu.forward(S, y, y, 0, kind, 1e-3, ks, kts, mode)
            assert rc == 0 and torch.equal(n, want_n)
            _close(v, want_v, dtype)
            _close(U, want_U, dtype, 1e-3)
    Q, ql, X, xl = _long_rows(dtype, emu.table_positives())
    _check_ref(emu, Q[1:3].contiguous(), ql[1:3].contiguous(), X, xl, -1, 0, 1e-3, [], [], 0)


def _autograd(S, ql, xl, self_offset, kind, tau, ks, kts, mode):
    """value and d value / d S straight from the definitions (csrc/rank_math.h), by float64
    autograd, row by row: an oracle that shares no formula with either kernel."""
    S = S.detach().double().requires_grad_(True)
    cols = torch.arange(S.shape[1])
    values = []
    for r in range(S.shape[0]):
        own = cols == (self_offset + r if self_offset >= 0 else -1)
        items = ~own if mode == 0 else torch.ones_like(own)
        pos = items & (xl == ql[r]) & ~(own & (mode == 2))
        if not pos.any():
            values.append(S[r].sum() * 0)
            continue
        sig = torch.sigmoid((S[r][None, :] - S[r][pos][:, None]) / tau)  # (P, N): sigma(s_j - s_i)
        T = (sig * items).sum(1) - 0.5
        if kind == 0:
            values.append(((1 + (sig * pos).sum(1) - 0.5) / (1 + T)).mean())
        else:
            v = 0
            for k, t2 in zip(ks, kts):
                hits = torch.sigmoid((k - (1 + T)) / t2).sum()
                v = v + torch.clamp(hits, max=k) / min(k, int(pos.sum()))
            values.append(v / len(ks))
    value = torch.stack(values)
    value.sum().backward()
    return value.detach(), S.grad


def test_shared_exp_path_without_underflow(emu):
    """Two cases where the CPU kernel's formulas overflow or underflow to NaN (rank_cpu.cpp: the
    slope E_j E_i / d^2 when both exponentials are below ~1e-162, scores more than ~373 tau under
    the row's top with a spread within 700 tau; and E of a left-out own column more than ~709 tau
    above the items): the CUDA kernel stays finite and agrees with autograd of the reference."""
    g = torch.Generator().manual_seed(61)
    R, N, tau = 6, 64, 0.004
    S = torch.rand(R, N, generator=g, dtype=torch.float64) * 2.4 - 1.2  # spread < 700 tau, > 373 tau
    S[:, 0], S[:, 1] = 1.2, -1.2
    S[2, 2] = 9.0  # row 2's own column (self_offset 0), left out, far above its items
    ql = torch.arange(R) % 2
    xl = torch.arange(N) % 2
    for kind, ks, kts in ((0, [], []), (1, KS, KT)):
        want_v, want_U = _autograd(S, ql, xl, 0, kind, tau, ks, kts, 0)
        rc, v, n, _, U = emu.forward(S, ql, xl, 0, kind, tau, ks, kts, 0)
        assert rc == 0 and torch.isfinite(U).all()
        torch.testing.assert_close(v, want_v, rtol=1e-10, atol=0)
        torch.testing.assert_close(U, want_U, rtol=1e-9, atol=1e-10 * want_U.abs().max().item())
        assert U[2, 2].item() == 0.0


def test_nonfinite_scores_set_the_flag(emu):
    """A NaN or Inf score (the own column included) sets the flag and counts as 0, as on the CPU: the
    outputs are bitwise those of the scores with 0 in its place. Also in a spilled long row."""
    x, y = unit_rows(12, 4, torch.float64, seed=71), random_labels(12, 3, seed=71)
    S = x @ x.t()
    rc, *_, flag, _ = emu.forward(S, y, y, 0, 0, 0.01)
    assert rc == 0 and flag.item() == 0
    bad, zero = S.clone(), S.clone()
    bad[2, 7], bad[5, 5] = float("nan"), float("inf")  # (5, 5): row 5's own column, left out
    zero[2, 7], zero[5, 5] = 0.0, 0.0
    got, want = emu.forward(bad, y, y, 0, 0, 0.01), emu.forward(zero, y, y, 0, 0, 0.01)
    assert got[3].item() == 1 and want[3].item() == 0
    for a, b in zip(got[1:3] + got[4:], want[1:3] + want[4:]):
        assert torch.equal(a, b)
    Q, ql, X, xl = _long_rows(torch.float32, emu.table_positives())
    S = Q @ X.t()
    S[1, 2599] = float("-inf")
    assert emu.forward(S, ql, xl, -1, 0, 0.01)[3].item() == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_U_may_be_the_scores(emu, dtype):
    """U written over S (the ops pass the same tensor): each row is read before it is overwritten,
    for short rows and for long ones (the spill kernel's tiles)."""
    x, y = unit_rows(30, 5, dtype, seed=81), random_labels(30, 3, seed=81)
    Q, ql, X, xl = _long_rows(dtype, emu.table_positives())
    for S, ql_, xl_, so in ((x @ x.t(), y, y, 0), (Q @ X.t(), ql, xl, -1)):
        for kind, ks, kts in ((0, [], []), (1, KS, KT)):
            rc, v, n, _, U = emu.forward(S, ql_, xl_, so, kind, 0.01, ks, kts, 1 if so == 0 else 0)
            buf = S.clone()
            rc2, v2, n2, _, U2 = emu.forward(buf, ql_, xl_, so, kind, 0.01, ks, kts, 1 if so == 0 else 0, U=buf)
            assert rc == 0 and rc2 == 0 and U2.data_ptr() == buf.data_ptr()
            assert torch.equal(v2, v) and torch.equal(n2, n) and torch.equal(U2, U)


def test_bitwise_deterministic(emu, monkeypatch):
    """Fixed reduction orders: the same bits whatever the order the blocks run in."""
    Q, ql, X, xl = _long_rows(torch.float64, emu.table_positives())
    x, y = unit_rows(30, 5, torch.float64, seed=91), random_labels(30, 3, seed=91)
    runs = []
    for seed in ("1", "7", "12345"):
        monkeypatch.setenv("APL_EMU_SEED", seed)
        runs.append([emu.forward(Q @ X.t(), ql, xl, -1, 1, 0.01, KS, KT, 0, spill_blocks=2),
                     emu.forward(x @ x.t(), y, y, 0, 0, 0.01)])
    for run in runs[1:]:
        for got, want in zip(run, runs[0]):
            for a, b in zip(got[1:], want[1:]):
                assert torch.equal(a, b)


@pytest.mark.parametrize("sanitizer", ["address,undefined", "thread"])
def test_emulated_rank_kernel_under_sanitizers(sanitizer, tmp_path):
    """Every path of the kernel, emulated under AddressSanitizer + UBSan (out-of-bounds shared or
    global accesses, UB) or ThreadSanitizer (a race between the threads of a block: a missing
    __syncthreads), by tests/cuda/cuda_emu/emu_rank_stress.cpp."""
    run_under_sanitizer("rank_kernels.cu", "emu_rank_stress.cpp", sanitizer, tmp_path)


def test_launcher_limits(emu):
    """cudaErrorInvalidValue (1), before any launch, for what the kernel cannot take."""
    c, lib = emu.c, emu.lib
    assert lib.apl_emu_rank_max_ks() == 32
    assert lib.apl_emu_rank_max_rows() == 2**31 - 1
    x, y = unit_rows(6, 3, torch.float64, seed=1), random_labels(6, 2, seed=1)
    S = x @ x.t()
    ks = [float(k) for k in range(1, 34)]
    assert emu.forward(S, y, y, 0, 1, 0.01, ks[:32], [1.0] * 32)[0] == 0
    assert emu.forward(S, y, y, 0, 1, 0.01, ks, [1.0] * 33)[0] == 1  # too many ks
    assert emu.forward(S, y, y, 0, 1, 0.01, [], [])[0] == 1  # Recall@k without a k
    assert emu.forward(S, y, y, 0, 0, 0.0)[0] == 1  # temperature
    assert emu.forward(S, y, y, 0, 2, 0.01)[0] == 1  # kind
    assert emu.forward(S, y, y, 0, 0, 0.01, mode=3)[0] == 1
    null = c.c_void_p(0)
    rc = lib.apl_emu_rank_forward_f32(null, c.c_int64(2**31), c.c_int64(0), null, null, c.c_int64(-1), c.c_int64(0),
                                      c.c_double(0.01), null, null, c.c_int(0), c.c_int64(0), c.c_int64(0), null,
                                      null, null, null)
    assert rc == 1  # rows beyond grid.x
    # empty shapes: no items (value 0, no positive), no rows
    rc, v, n, flag, _ = emu.forward(torch.empty(3, 0, dtype=torch.float64), y[:3].contiguous(), y[:0], -1, 0, 0.01)
    assert rc == 0 and not v.any() and not n.any() and flag.item() == 0
    assert emu.forward(torch.empty(0, 5), y[:0], y[:5].contiguous(), -1, 0, 0.01)[0] == 0


def test_spill_grid_fills_the_gpu_within_a_proportionate_workspace(emu):
    """The spill kernel's grid: one block per SM where the workspace (64 N bytes a block) stays
    within the larger of 64 MiB and the scores' own size; never more blocks than rows. The budget
    alone gave 16 blocks at N = 65536 and one from N = 2^20."""
    lib, c = emu.lib, emu.c
    lib.apl_emu_rank_spill_blocks.restype = c.c_int64
    lib.apl_emu_rank_spill_blocks.argtypes = [c.c_int64, c.c_int64, c.c_int64, c.c_int]

    def blocks(R, N, sms, f32=True):
        return lib.apl_emu_rank_spill_blocks(R, N, sms, int(f32))

    table = emu.table_positives()
    assert blocks(65536, table, 132) == 0  # no row can spill
    assert blocks(65536, 65536, 0) == 16  # SM count unknown: the 64 MiB budget
    assert blocks(65536, 65536, 132) == 132  # one block per SM
    assert blocks(4096, 2**20, 132) == 132 and blocks(4096, 2**20, 0) == 1
    assert blocks(256, 65536, 132) == 16  # a streaming block of 256 rows: workspace <= its scores
    assert blocks(100, 4096, 132) == 100  # at most one block per row
    for R in (1, 7, 256, 4096, 65536):
        for N in (table + 1, 4096, 65536, 2**20):
            for sms in (0, 16, 132):
                for f32, size in ((True, 4), (False, 8)):
                    b = blocks(R, N, sms, f32)
                    assert 1 <= b <= R
                    assert b * 64 * N <= max(64 * 2**20, R * N * size) or b == 1
