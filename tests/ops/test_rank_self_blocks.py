"""Self retrieval of the CPU rank kernels at sizes where S is in blocks (csrc/cpu/rank_cpu.cpp,
symmetric_product.cpp): from B = 512 the forward gets only S's block rows on and above the diagonal
(blocks of 256 rows) and reads each row's left part from the columns, last block first, writing U
over S; the backward builds H = G + G^T a (256 x 1024) tile at a time, upper block rows only, each
tile multiplied twice. The small-batch tests never reach either; here both are compared with the
plain paths: the same rows through a reference set (whole S, no gather), and the backward's two
GEMMs written out from the saved U."""
import pytest
import torch

from helpers import needs_cpu_kernel, random_labels, unit_rows

pytestmark = needs_cpu_kernel
SMOOTH_AP = (0, 0.05, [], [])
RECALL = (1, 0.05, [1.0, 2.0, 4.0], [1.0, 1.0, 1.0])
# sizes around the first block, the gather's 32-row groups and 8-lane blocks, and H's 1024 columns
SIZES = [511, 512, 520, 777, 1300]


def _self(x, y, loss, mode):
    return torch.ops.apl.rank_self(x, y, *loss, mode, 0)


def _through_refs(x, y, loss, mode):
    # a copy as the reference set: a separate tensor, so the op multiplies S whole
    return torch.ops.apl.rank_ref(x, y, x.clone(), y, *loss, mode, 0, 0)


@pytest.mark.parametrize("B", SIZES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("loss", [SMOOTH_AP, RECALL], ids=["smooth_ap", "recall"])
@pytest.mark.parametrize("mode", [0, 1, 2], ids=["excluded", "item_and_positive", "item_only"])
def test_blocked_forward_equals_whole_scores(B, dtype, loss, mode):
    x, y = unit_rows(B, 24, dtype, seed=B), random_labels(B, B // 6, seed=B)
    value, npos, U = _self(x, y, loss, mode)
    want_value, want_npos, want_U = _through_refs(x, y, loss, mode)
    assert torch.equal(npos, want_npos)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(value, want_value, rtol=0, atol=tol)
    torch.testing.assert_close(U, want_U, rtol=0, atol=tol * float(want_U.abs().max()))


@pytest.mark.parametrize("B", [7, 256, 257] + SIZES + [2100])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_symmetric_backward_equals_two_products(B, dtype):
    x, y = unit_rows(B, 24, dtype, seed=B + 1), random_labels(B, max(1, B // 6), seed=B + 1)
    _, _, U = _self(x, y, SMOOTH_AP, 0)
    g = torch.rand(B, dtype=dtype, generator=torch.Generator().manual_seed(B)) - 0.5
    got = torch.ops.apl.rank_self_backward(g, x, y, U, *SMOOTH_AP, 0, 0)
    want = g[:, None] * (U @ x) + U.t() @ (g[:, None] * x)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got, want, rtol=0, atol=tol * float(want.abs().max()))


@pytest.mark.parametrize("loss", [SMOOTH_AP, RECALL], ids=["smooth_ap", "recall"])
def test_blocked_paths_and_the_thread_count(loss):
    """The forward's outputs are the kernel's own: bitwise the same for 1, 2, 3 threads. The backward
    is GEMMs on the kernel's tiles, whose rounding MKL may make depend on the thread count: the same
    from run to run, and equal to rounding across thread counts."""
    x, y = unit_rows(777, 24, torch.float32, seed=5), random_labels(777, 100, seed=5)
    g = torch.full((777,), 1.0 / 777)
    before = torch.get_num_threads()
    runs = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            value, _, U = _self(x, y, loss, 0)
            backward = [torch.ops.apl.rank_self_backward(g, x, y, U, *loss, 0, 0) for _ in range(2)]
            assert torch.equal(backward[0], backward[1])
            runs.append((value, U, backward[0]))
    finally:
        torch.set_num_threads(before)
    for value, U, dD in runs[1:]:
        assert torch.equal(value, runs[0][0]) and torch.equal(U, runs[0][1])
        torch.testing.assert_close(dD, runs[0][2], rtol=0, atol=1e-6 * float(dD.abs().max()))


@pytest.mark.parametrize("row", [3, 300, 700])
def test_a_non_finite_embedding_in_any_block_is_reported(row):
    x, y = unit_rows(777, 24, torch.float32, seed=6), random_labels(777, 100, seed=6)
    x[row, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        _self(x, y, SMOOTH_AP, 0)


@pytest.mark.parametrize("loss", [SMOOTH_AP, RECALL], ids=["smooth_ap", "recall"])
def test_the_portable_reciprocal_path_agrees(monkeypatch, loss):
    """CPUs without AVX-512 take the item-major passes with the float-division reciprocal: forced
    here with APL_RANK_RECIPROCAL=portable, it equals the default path to double rounding (on an
    AVX-512 CPU the default is the hardware estimate; elsewhere both runs take the same path)."""
    x, y = unit_rows(777, 24, torch.float64, seed=8), random_labels(777, 100, seed=8)
    runs = []
    for mode in ("auto", "portable"):
        monkeypatch.setenv("APL_RANK_RECIPROCAL", mode)
        value, npos, U = _self(x, y, loss, 0)
        runs.append((value, npos, U, torch.ops.apl.rank_self_backward(torch.ones(777, dtype=x.dtype), x, y, U,
                                                                        *loss, 0, 0)))
    (v0, n0, u0, d0), (v1, n1, u1, d1) = runs
    assert torch.equal(n0, n1)
    torch.testing.assert_close(v1, v0, rtol=0, atol=1e-13)
    torch.testing.assert_close(u1, u0, rtol=0, atol=1e-12 * float(u0.abs().max()))
    torch.testing.assert_close(d1, d0, rtol=0, atol=1e-12 * float(d0.abs().max()))
    monkeypatch.setenv("APL_RANK_RECIPROCAL", "fast")
    with pytest.raises(RuntimeError, match="APL_RANK_RECIPROCAL must be auto or portable, got 'fast'"):
        _self(x, y, loss, 0)
