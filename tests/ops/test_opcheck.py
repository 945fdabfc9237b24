"""The registered ops (AP and rank surrogates) pass torch.library.opcheck (schema, fake kernels,
autograd registration, AOT dispatch) on every device with compiled kernels, forward and backward
ops alike."""
import pytest
import torch

from helpers import KERNELS, random_labels, unit_rows

pytestmark = pytest.mark.parametrize("kernel", KERNELS)


def samples():
    x, y = unit_rows(10, 4, seed=30), random_labels(10, 3, seed=30)
    q, ql = unit_rows(6, 4, seed=31), random_labels(6, 3, seed=31)
    s = torch.rand(5, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(32)) * 2 - 1
    rel = s > 0.2
    for dtype in (torch.float64, torch.float32, torch.float16):
        for chunk in (0, 3):
            for variant in (0, 1, 2):
                yield f"ap_self-{dtype}-{chunk}-{variant}", "ap_self", (x.to(dtype), y, 8, -1.0, 1.0, variant, chunk)
                yield f"ap_ref-{dtype}-{chunk}-{variant}", "ap_ref", (q.to(dtype), ql, x.to(dtype), y, 8, -1.0, 1.0,
                                                                       variant, chunk)
        yield f"ap_scores-{dtype}", "ap_scores", (s.to(dtype), rel, 7, -1.0, 1.0, 0)
        for kind, mode in ((0, 0), (0, 1), (1, 0), (1, 2)):
            for chunk in (0, 3):
                params = (kind, 0.05, [1.0, 3.0], [1.0, 0.5], mode, chunk)
                yield f"rank_self-{dtype}-{kind}-{mode}-{chunk}", "rank_self", (x.to(dtype), y, *params)
                refs = torch.cat([q, x]).to(dtype)
                yield (f"rank_ref-{dtype}-{kind}-{mode}-{chunk}", "rank_ref",
                       (q.to(dtype), ql, refs, torch.cat([ql, y]), *params, 0 if mode else -1))


def _on(device, args):
    out = []
    for a in args:
        if isinstance(a, torch.Tensor):
            a = a.to(device)
            if a.is_floating_point():
                a.requires_grad_()
        out.append(a)
    return tuple(out)


@pytest.mark.parametrize("sample", list(samples()), ids=lambda s: s[0])
def test_opcheck(kernel, sample):
    _, name, args = sample
    torch.library.opcheck(getattr(torch.ops.apl, name).default, _on(kernel[1], args))


@pytest.mark.parametrize("chunk", [0, 3])
def test_backward_ops_opcheck(kernel, chunk):
    dev = kernel[1]
    x, y = unit_rows(8, 3, seed=33, device=dev), random_labels(8, 2, seed=33, device=dev)
    ap, npos, coef, scores = torch.ops.apl.ap_self(x, y, 6, -1.0, 1.0, 0, chunk)
    g = torch.full_like(ap, -0.125)
    torch.library.opcheck(torch.ops.apl.ap_self_backward.default, (g, x, y, coef, scores, 6, -1.0, 1.0, chunk))
    q, ql = unit_rows(5, 3, seed=34, device=dev), random_labels(5, 2, seed=34, device=dev)
    ap, npos, coef, scores = torch.ops.apl.ap_ref(q, ql, x, y, 6, -1.0, 1.0, 0, chunk)
    g = torch.full_like(ap, 0.25)
    torch.library.opcheck(torch.ops.apl.ap_ref_backward.default, (g, q, ql, x, y, coef, scores, 6, -1.0, 1.0, chunk))
    s = (torch.rand(4, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(35)) * 2 - 1).to(dev)
    rel = s > 0
    ap, npos, coef = torch.ops.apl.ap_scores(s, rel, 5, -1.0, 1.0, 0)
    torch.library.opcheck(torch.ops.apl.ap_scores_backward.default, (torch.ones_like(ap), s, rel, coef, 5, -1.0, 1.0))
    params = (0, 0.1, [], [], 0, chunk)
    value, _, saved = torch.ops.apl.rank_self(x, y, *params)
    torch.library.opcheck(torch.ops.apl.rank_self_backward.default, (torch.ones_like(value), x, y, saved, *params))
    params = (1, 0.1, [1.0, 2.0], [1.0, 1.0], 0, chunk)
    value, _, saved = torch.ops.apl.rank_ref(q, ql, x, y, *params, -1)
    torch.library.opcheck(torch.ops.apl.rank_ref_backward.default,
                          (torch.full_like(value, 0.5), q, ql, x, y, saved, *params, -1))


def test_op_compiles_fullgraph(kernel):
    dev = kernel[1]
    x, y = unit_rows(32, 8, torch.float32, seed=35, device=dev), random_labels(32, 4, seed=35, device=dev)

    def f(e):
        ap, npos, _coef, _s = torch.ops.apl.ap_self(e, y, 20, -1.0, 1.0, 0, 0)
        return (ap * (npos > 0)).sum()

    xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
    le = f(xe)
    torch._dynamo.reset()
    lc = torch.compile(f, backend="aot_eager", fullgraph=True)(xc)
    le.backward()
    lc.backward()
    torch.testing.assert_close(lc, le)
    torch.testing.assert_close(xc.grad, xe.grad)
