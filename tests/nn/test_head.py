"""The descriptor head (apl/nn/head.py): the BatchNorm before the whitening spreads the descriptors
of an untrained network (without it every cosine is 1.000), it is started from PCA on request, it
runs in float32 under autocast, and checkpoints of the flat network of earlier versions still load."""
import pytest
import torch

from apl.evaluation import PCAWhitening
from apl.nn import DescriptorHead, GeM, RetrievalNet


def _glyph_batch():
    from apl.data.glyphs import load_glyphs

    g = load_glyphs(size=16, per_class=4, seed=0)
    keep = g.labels < 40
    return g.images[keep].float() / 255, g.labels[keep]


def _offdiag(d):
    s = d @ d.t()
    return s[~torch.eye(len(d), dtype=torch.bool)]


def test_untrained_descriptors_are_spread_with_the_batchnorm_and_tied_without():
    x, _ = _glyph_batch()
    torch.manual_seed(0)
    plain = RetrievalNet("tiny_cnn", dim=32, in_channels=1, head="plain").train()
    torch.manual_seed(0)
    centred = RetrievalNet("tiny_cnn", dim=32, in_channels=1).train()
    with torch.no_grad():
        s_plain, s_bn = _offdiag(plain(x)), _offdiag(centred(x))
    assert s_plain.min() > 0.999  # the collapse the BatchNorm is there for: one big tie
    assert s_bn.std() > 0.1 and s_bn.max() - s_bn.min() > 1.0  # spread over many of the 20 bins of (-1, 1)
    bins = torch.histc(s_bn, bins=20, min=-1, max=1)
    assert int((bins / bins.sum() > 0.01).sum()) >= 8


def test_head_standardises_over_the_batch_and_keeps_running_statistics():
    torch.manual_seed(1)
    head = DescriptorHead(6, 4).train()
    pooled = torch.randn(50, 6, dtype=torch.float64).float() * 3 + 5
    head(pooled)
    torch.testing.assert_close(head.center.running_mean, 0.9 * torch.zeros(6) + 0.1 * pooled.mean(0))
    head.eval()
    a = head(pooled[:7])
    b = head(pooled)[:7]
    torch.testing.assert_close(a, b)  # eval mode: per image
    with pytest.raises(ValueError, match="at least 2 images"):
        head.train()(pooled[:1])


def test_pca_start_whitens_the_training_features():
    torch.manual_seed(2)
    pooled = torch.randn(300, 8, dtype=torch.float64) @ torch.randn(8, 8, dtype=torch.float64) + 3
    head = DescriptorHead(8, 5).eval()
    head.init_from_pca(pooled, lambda z, dim: PCAWhitening.fit(z, dim, power=0.5))
    torch.testing.assert_close(head.center.running_mean, pooled.mean(0).float())
    with torch.no_grad():
        z = (pooled - pooled.mean(0)) / (pooled.var(0) + head.center.eps).sqrt()
        want = PCAWhitening.fit(z, 5, power=0.5).transform(z)
        got = head(pooled.float()).double()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_gem_pools_in_float32_under_autocast():
    gem = GeM(p=3.0)
    x = torch.full((2, 4, 3, 3), 0.01, requires_grad=True)  # 0.01^3 = 1e-6 underflows in float16 on some paths
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = gem(x.to(torch.bfloat16))
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, torch.full((2, 4), 0.01), rtol=1e-3, atol=1e-6)
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad > 0).all()


def test_float16_gem_gradient_is_finite():
    """The reported failure: in float16, x^3 of small activations is 0 and the 1/p root's gradient
    infinite; GeM now computes in float32 whatever the input dtype."""
    gem = GeM(p=3.0)
    x = torch.full((1, 2, 4, 4), 1e-3, dtype=torch.float16, requires_grad=True)
    y = gem(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad.float()).all() and (x.grad > 0).all()


def test_state_dicts_of_the_flat_network_still_load():
    torch.manual_seed(3)
    net = RetrievalNet("tiny_cnn", dim=8, in_channels=1, head="plain")
    flat = {}
    for k, v in net.state_dict().items():  # the key layout of earlier versions
        for new, old in (("features.backbone.", "backbone."), ("features.pool.", "pool."), ("head.whiten.", "whiten.")):
            if k.startswith(new):
                k = old + k[len(new):]
        flat[k] = v
    assert "whiten.weight" in flat and "backbone.features.0.weight" in flat
    other = RetrievalNet("tiny_cnn", dim=8, in_channels=1, head="plain")
    other.load_state_dict(flat)
    x = torch.rand(3, 1, 16, 16)
    torch.testing.assert_close(other.eval()(x), net.eval()(x))
