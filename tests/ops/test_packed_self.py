"""Self retrieval on the CPU keeps only the packed upper block rows of S = D D^T for backward
(csrc/packed_upper.h): about B^2 / 2 values instead of B^2. Its losses and gradients are checked
against the reference by the rest of the suite (every CPU self-retrieval test runs this path); here:
the layout, the fake kernel's shape, and the cases where a row's items come from several block rows."""
import pytest
import torch

import apl
from apl.ops.compiled import packed_upper_numel
from helpers import needs_cpu_kernel, random_labels, unit_rows

pytestmark = needs_cpu_kernel


def _packed_from_full(S: torch.Tensor, rows: int = 256) -> torch.Tensor:
    """The layout written out independently: block row I keeps S[I, 256 I:], rows one after another."""
    B = S.shape[0]
    return torch.cat([S[i0:i0 + rows, i0:].reshape(-1) for i0 in range(0, B, rows)])


@pytest.mark.parametrize("B", [1, 2, 255, 256, 257, 600, 1030])
def test_the_saved_tensor_is_the_packed_upper_block_rows_of_s(B):
    x, y = unit_rows(B, 16, torch.float64, seed=B), random_labels(B, 7, seed=B)
    saved = torch.ops.apl.ap_self(x, y, 20, -1.0, 1.0, 0, 0)[3]
    assert saved.shape == (packed_upper_numel(B),) == (sum(min(256, B - i) * (B - i) for i in range(0, B, 256)),)
    torch.testing.assert_close(saved, _packed_from_full(x @ x.t()), rtol=0, atol=1e-12)
    assert saved.numel() <= B * B / 2 + 128 * B


def test_the_fake_kernel_gives_the_saved_shape():
    """torch.compile and opcheck trace with the fake kernel: its shape must be the real one's."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    x, y = unit_rows(300, 8, torch.float32, seed=1), random_labels(300, 9, seed=1)
    real = torch.ops.apl.ap_self(x, y, 20, -1.0, 1.0, 0, 0)
    with FakeTensorMode() as mode:
        fake = torch.ops.apl.ap_self(mode.from_tensor(x), mode.from_tensor(y), 20, -1.0, 1.0, 0, 0)
    assert [tuple(t.shape) for t in fake] == [tuple(t.shape) for t in real]
    assert [t.dtype for t in fake] == [t.dtype for t in real]


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
@pytest.mark.parametrize("variant", ["ap_q", "tie_aware", "tie_aware_simplified"])
@pytest.mark.parametrize("case", ["one class", "singletons", "ties across blocks", "scores outside the range"])
def test_rows_spanning_several_block_rows_equal_the_reference(case, variant, dtype, tol):
    """B = 700: three block rows, the last one short. Each case makes the items of a row come from the
    transposed tiles of the earlier block rows and from its own row, with the edge cases of the loss."""
    B = 700
    x, y = unit_rows(B, 24, dtype, seed=3), random_labels(B, 40, seed=3)
    kwargs = {"variant": variant}
    if case == "one class":
        y = torch.zeros(B, dtype=torch.long)
    elif case == "singletons":
        y = torch.arange(B)  # no query has a positive: AP 0, gradient 0
    elif case == "ties across blocks":
        x = x[torch.arange(B) % 50]  # every descriptor 14 times, in all three block rows
        y = torch.arange(B) % 25
    else:
        kwargs["score_range"] = (-0.5, 0.5)  # many scores at or beyond the range's ends
    got_x, want_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    got = apl.ap_loss(got_x, y, backend="cpu", **kwargs)
    want = apl.ap_loss(want_x, y, backend="torch", **kwargs)
    got.backward(), want.backward()
    torch.testing.assert_close(got, want, rtol=0, atol=tol)
    torch.testing.assert_close(got_x.grad, want_x.grad, rtol=0, atol=tol * max(1.0, float(want_x.grad.abs().max())))


def test_a_dynamic_batch_size_compiles_once():
    """The fake kernel gives the saved tensor's size in closed form of B, so under dynamic shapes one
    graph serves every batch size (a Python loop over B's blocks specialised B: a graph per size)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    loss = apl.APLoss(num_bins=20, backend="cpu")
    step = torch.compile(lambda x, y: loss(x, y), backend="aot_eager", dynamic=True, fullgraph=True)
    for B in (300, 520, 700):
        x, y = unit_rows(B, 16, torch.float32, seed=B).requires_grad_(), random_labels(B, 30, seed=B)
        got = step(x, y)
        got.backward()
        want_x = x.detach().clone().requires_grad_()
        want = loss(want_x, y)
        want.backward()
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(x.grad, want_x.grad)
    assert counters["stats"]["unique_graphs"] == 1
    torch._dynamo.reset()


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("B", [1030, 1300, 2100])
def test_the_backward_over_several_column_tiles_equals_the_streaming_path(B, dtype, tol):
    """The backward builds H = G + G^T from the packed rows in tiles of 256 rows by up to 1024 columns
    on and above the diagonal, each tile multiplied twice (csrc/cpu/symmetric_product.h). These sizes
    give block rows with several column tiles, tiles that start inside a block row and short last
    ones. The streaming mode's backward (query blocks, G @ D and G^T @ Q) is the independent check."""
    x, y = unit_rows(B, 12, dtype, seed=B), random_labels(B, max(2, B // 8), seed=B)
    packed_x, stream_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    packed = apl.ap_loss(packed_x, y, backend="cpu")
    streamed = apl.ap_loss(stream_x, y, backend="cpu", chunk_size=300)
    packed.backward(), streamed.backward()
    torch.testing.assert_close(packed, streamed, rtol=0, atol=tol)
    scale = float(stream_x.grad.abs().max())
    torch.testing.assert_close(packed_x.grad, stream_x.grad, rtol=0, atol=tol * scale)


def test_the_backward_is_the_same_run_to_run_and_across_thread_counts():
    """Each tile entry is written by one task; the GEMMs are MKL's, which may round by the thread
    count: bitwise equal from run to run, equal to rounding across thread counts."""
    B = 1300
    x, y = unit_rows(B, 32, torch.float32, seed=5), random_labels(B, 160, seed=5)
    _, _, coef, saved = torch.ops.apl.ap_self(x, y, 20, -1.0, 1.0, 0, 0)
    g = torch.rand(B, generator=torch.Generator().manual_seed(5))
    backward = lambda: torch.ops.apl.ap_self_backward(g, x, y, coef, saved, 20, -1.0, 1.0, 0)  # noqa: E731
    threads = torch.get_num_threads()
    try:
        first = backward()
        assert torch.equal(first, backward())
        torch.set_num_threads(1)
        one = backward()
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(one, first, rtol=0, atol=1e-6 * float(first.abs().max()))

