"""Cross-batch memory: queries ranked against the batch plus a FIFO of past
descriptors, each query's own row excluded (`ref_includes_queries`), on every backend."""
import pytest
import torch

import apl
from apl.memory import CrossBatchMemory, with_memory
from helpers import CPU_BACKENDS, random_labels, unit_rows


@pytest.mark.parametrize("chunk_size", [None, 7])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_ref_includes_queries_equals_self_retrieval_over_the_union(backend, chunk_size):
    """Oracle: self retrieval over [batch; memory] with zero weight on the memory's queries."""
    x, y = unit_rows(20, 6, seed=60), random_labels(20, 4, seed=60)
    m, my = unit_rows(30, 6, seed=61), random_labels(30, 4, seed=61)
    for variant in ("ap_q", "tie_aware"):
        got, has = apl.per_query_ap(x, y, torch.cat([x, m]), torch.cat([y, my]), backend=backend,
                                    chunk_size=chunk_size, variant=variant, ref_includes_queries=True)
        want, want_has = apl.per_query_ap(torch.cat([x, m]), torch.cat([y, my]), backend="torch", variant=variant)
        torch.testing.assert_close(got, want[:20], rtol=0, atol=1e-12)
        assert torch.equal(has, want_has[:20])
    xx = x.clone().requires_grad_()
    loss = apl.ap_loss(xx, y, torch.cat([xx, m]), torch.cat([y, my]), backend=backend, chunk_size=chunk_size,
                       ref_includes_queries=True)
    (g,) = torch.autograd.grad(loss, xx)
    u = torch.cat([x, m]).requires_grad_()
    w = torch.cat([torch.ones(20), torch.zeros(30)]).double()
    (gu,) = torch.autograd.grad(apl.ap_loss(u, torch.cat([y, my]), query_weights=w, backend="torch"), u)
    torch.testing.assert_close(loss, apl.ap_loss(u.detach(), torch.cat([y, my]), query_weights=w, backend="torch"))
    torch.testing.assert_close(g, gu[:20], rtol=0, atol=1e-12)


def test_ref_includes_queries_errors():
    x, y = unit_rows(5, 3, seed=62), random_labels(5, 2, seed=62)
    with pytest.raises(ValueError, match="ref_includes_queries=True needs ref_embeddings"):
        apl.ap_loss(x, y, ref_includes_queries=True)
    with pytest.raises(ValueError, match="must start with the 5 queries, got only 3 rows"):
        apl.ap_loss(x, y, x[:3], y[:3], ref_includes_queries=True)
    with pytest.raises(TypeError, match="ref_includes_queries must be a bool"):
        apl.ap_loss(x, y, x, y, ref_includes_queries=1)


def test_op_rejects_a_bad_self_offset():
    pytest.importorskip("apl._C")
    if not apl.available_backends()["cpu"].available:
        pytest.skip("no compiled CPU kernel")
    x, y = unit_rows(5, 3, seed=63), random_labels(5, 2, seed=63)
    with pytest.raises(ValueError, match=r"self_offset must be -1 \(no exclusion\) or place the 5 queries inside the 6 refs"):
        torch.ops.apl.ap_ref(x, y, torch.cat([x, x[:1]]), torch.cat([y, y[:1]]), 20, -1.0, 1.0, 0, 0, 2)


def test_memory_is_a_fifo_with_state():
    mem = CrossBatchMemory(5, 2)
    assert len(mem) == 0
    for i in range(3):
        mem.enqueue(torch.full((2, 2), float(i)), torch.full((2,), i))
    e, y = mem.contents()
    assert y.tolist() == [0, 1, 1, 2, 2]  # the oldest item was overwritten, oldest first
    assert e[:, 0].tolist() == [0.0, 1.0, 1.0, 2.0, 2.0]
    copy = CrossBatchMemory(5, 2)
    copy.load_state_dict(mem.state_dict())
    assert torch.equal(copy.contents()[1], y)


def test_memory_loss_ranks_against_batch_plus_memory():
    torch.manual_seed(0)
    loss_fn = with_memory(apl.APLoss(backend="torch"), size=64, dim=6)
    batches = [(unit_rows(16, 6, seed=70 + i), random_labels(16, 3, seed=70 + i)) for i in range(3)]
    seen_e, seen_y = [], []
    for e, y in batches:
        got = loss_fn(e, y)
        refs = torch.cat([e] + seen_e)  # the batch, then the memory oldest first
        want = apl.ap_loss(e, y, refs, torch.cat([y] + seen_y), ref_includes_queries=True, backend="torch") if seen_e \
            else apl.ap_loss(e, y, backend="torch")
        torch.testing.assert_close(got, want)
        seen_e.append(e)
        seen_y.append(y)
    assert len(loss_fn.memory) == 48


def test_memory_matches_pml_cross_batch_memory_value():
    """apl.pml.APLoss inside PML's CrossBatchMemory ranks each query against the memory minus its
    own copy: the same value as apl.memory while the memory is not full."""
    from apl.pml import APLoss as PMLAPLoss, CrossBatchMemory as PMLMemory

    pml = PMLMemory(PMLAPLoss(), 6, memory_size=100)
    ours = with_memory(apl.APLoss(), size=100, dim=6)
    for i in range(4):
        e, y = unit_rows(16, 6, torch.float64, seed=80 + i).float(), random_labels(16, 3, seed=80 + i)
        torch.testing.assert_close(pml(e, y), ours(e, y), rtol=0, atol=1e-5)


def test_full_memories_differ_by_the_batch_as_documented():
    """Once full, PML's memory of N items holds the batch among them (each query ranked against
    N - 1 other items) while apl.memory ranks against the batch plus N earlier items: equal to PML's
    with a memory of N + B (apl/pml.py says so)."""
    from apl.pml import APLoss as PMLAPLoss, CrossBatchMemory as PMLMemory

    B, N = 16, 32
    pml_same = PMLMemory(PMLAPLoss(), 6, memory_size=N)
    pml_larger = PMLMemory(PMLAPLoss(), 6, memory_size=N + B)
    ours = with_memory(apl.APLoss(), size=N, dim=6)
    for i in range(6):  # well past full
        e, y = unit_rows(B, 6, torch.float64, seed=60 + i).float(), random_labels(B, 3, seed=60 + i)
        a, b, c = pml_same(e, y), pml_larger(e, y), ours(e, y)
        torch.testing.assert_close(b, c, rtol=0, atol=1e-5)
        if i >= 3:
            assert abs(a.item() - c.item()) > 1e-4


def test_memory_errors():
    with pytest.raises(ValueError, match="memory size must be a positive integer, got -1"):
        CrossBatchMemory(-1, 4)
    loss_fn = with_memory(apl.APLoss(), size=8, dim=4)
    with pytest.raises(ValueError, match=r"memory holds 4-dimensional descriptors but the batch has shape \(6, 3\)"):
        loss_fn(unit_rows(6, 3), random_labels(6, 2))
    with pytest.raises(TypeError, match=r"with_memory needs one of apl.s losses \(apl.APLoss, apl.SmoothAPLoss"):
        with_memory(torch.nn.MSELoss(), size=8, dim=4)
    # the width is not guessed: the message says what to pass
    with pytest.raises(TypeError, match=r"dim= \(the descriptor width, e.g. 512 for \(B, 512\) embeddings\); dim missing"):
        with_memory(apl.APLoss(), size=4096)
    with pytest.raises(TypeError, match=r"size and dim missing"):
        with_memory(apl.APLoss())
    with pytest.raises(TypeError, match="not both"):
        with_memory(apl.APLoss(), CrossBatchMemory(8, 4), size=8)


@pytest.mark.cuda
@pytest.mark.skipif(not apl.available_backends()["cuda"].available, reason="needs the compiled CUDA kernels and a GPU")
@pytest.mark.parametrize("chunk_size", [None, 7])
def test_ref_includes_queries_on_cuda(chunk_size):
    x, y = unit_rows(20, 6, torch.float64, seed=64), random_labels(20, 4, seed=64)
    m, my = unit_rows(30, 6, torch.float64, seed=65), random_labels(30, 4, seed=65)
    refs, ref_y = torch.cat([x, m]), torch.cat([y, my])
    want = apl.per_query_ap(refs, ref_y, backend="torch")[0][:20]
    got = apl.per_query_ap(x.cuda(), y.cuda(), refs.cuda(), ref_y.cuda(), backend="cuda", chunk_size=chunk_size,
                           ref_includes_queries=True)[0]
    torch.testing.assert_close(got.cpu(), want, rtol=0, atol=1e-10)
    xc = x.cuda().requires_grad_()
    loss = apl.ap_loss(xc, y.cuda(), torch.cat([xc, m.cuda()]), ref_y.cuda(), backend="cuda", chunk_size=chunk_size,
                       ref_includes_queries=True)
    (g,) = torch.autograd.grad(loss, xc)
    xr = x.clone().requires_grad_()
    (gr,) = torch.autograd.grad(apl.ap_loss(xr, y, torch.cat([xr, m]), ref_y, backend="torch",
                                            ref_includes_queries=True), xr)
    torch.testing.assert_close(g.cpu(), gr, rtol=0, atol=1e-10)
