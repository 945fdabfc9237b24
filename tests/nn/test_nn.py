"""apl.nn: pooling, whitening, backbones and RetrievalNet."""
import importlib.util
import sys

import pytest
import torch

from apl.evaluation import PCAWhitening, mean_average_precision
from apl.nn import BACKBONES, GeM, L2Norm, RetrievalNet, SmallCNN, Whitening, build_backbone

HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None


def test_gem_special_cases_and_learnable_p():
    x = torch.rand(2, 3, 4, 5) + 0.1
    torch.testing.assert_close(GeM(p=1)(x), x.mean(dim=(2, 3)))
    torch.testing.assert_close(GeM(p=3)(x), x.pow(3).mean(dim=(2, 3)).pow(1 / 3))
    big = GeM(p=200.0, learn_p=False)(x.double())
    torch.testing.assert_close(big, x.double().amax(dim=(2, 3)), rtol=0.02, atol=0)
    gem = GeM()
    assert isinstance(gem.p, torch.nn.Parameter) and float(gem.p.detach()) == 3.0
    gem(x).sum().backward()
    assert gem.p.grad is not None and gem.p.grad.abs() > 0
    assert "p" not in dict(GeM(learn_p=False).named_parameters())
    with pytest.raises(ValueError, match="must be > 0"):
        GeM(p=0)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        GeM()(torch.rand(2, 3))


def test_gem_does_not_overflow_on_large_activations():
    """Activations of 1e9 with p = 4.5 overflow float32 in x^p (1e40); the pooled value must not."""
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64) * 1e9 + 1.0
    gem = GeM(p=4.5, learn_p=False)
    exact = x.pow(4.5).mean(dim=(2, 3)).pow(1 / 4.5)  # float64 holds 1e40
    out = gem(x.float())
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), exact, rtol=1e-5, atol=0)


def test_gem_gradient_at_large_activations_and_on_a_dead_map():
    """float32 backward at activations of 1e9 against float64 without the rescaling; a map clamped
    whole to eps (a dead channel) pools to eps with a zero gradient, as before."""
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64) * 1e9 + 1.0
    x[0, 1] = -1.0
    a = x.float().requires_grad_()
    GeM(p=4.5, learn_p=False)(a).sum().backward()
    b = x.clone().requires_grad_()
    b.clamp(min=1e-6).pow(4.5).mean(dim=(2, 3)).pow(1 / 4.5).sum().backward()
    assert torch.isfinite(a.grad).all()
    torch.testing.assert_close(a.grad.double(), b.grad, rtol=1e-4, atol=1e-12)
    assert GeM(p=4.5, learn_p=False)(x.float())[0, 1].item() == pytest.approx(1e-6) and a.grad[0, 1].abs().sum() == 0


def test_gem_gradients_are_exact_in_float64():
    x = (torch.rand(2, 3, 4, 5, dtype=torch.float64) + 0.1).requires_grad_()
    p = torch.tensor(2.5, dtype=torch.float64, requires_grad=True)
    gem = GeM(p=2.5)
    gem.p = torch.nn.Parameter(p)
    assert torch.autograd.gradcheck(lambda a: gem(a), (x,))
    a = x.detach().clone().requires_grad_()
    gem(a).sum().backward()
    b = x.detach().clone().requires_grad_()
    q = p.detach().clone().requires_grad_()
    b.pow(q).mean(dim=(2, 3)).pow(1 / q).sum().backward()
    torch.testing.assert_close(a.grad, b.grad)
    torch.testing.assert_close(gem.p.grad, q.grad)


def test_gem_clamps_negative_activations():
    x = torch.full((1, 1, 2, 2), -1.0)
    assert torch.isfinite(GeM()(x)).all()


def test_l2norm():
    y = L2Norm()(torch.randn(5, 7) * 10)
    torch.testing.assert_close(y.norm(dim=1), torch.ones(5))


def test_whitening_layer_from_pca_matches_pca_transform():
    x = torch.randn(200, 6, dtype=torch.float64) * torch.arange(1, 7) + 2
    pca = PCAWhitening.fit(x, dim=4)
    layer = Whitening(6, 4).double().init_from_pca(pca)
    torch.testing.assert_close(layer(x), pca.transform(x, normalize=False))
    with pytest.raises(ValueError, match="6 -> 4 dimensions, this layer 6 -> 3"):
        Whitening(6, 3).init_from_pca(pca)
    assert Whitening(5).out_features == 5


@pytest.mark.parametrize("channels, size", [(1, 8), (3, 32), (3, 13)])
def test_retrieval_net_descriptors(channels, size):
    torch.manual_seed(0)
    net = RetrievalNet("small_cnn", dim=16, in_channels=channels)
    y = net(torch.rand(4, channels, size, size))
    assert y.shape == (4, 16) and net.out_dim == 16
    torch.testing.assert_close(y.norm(dim=1), torch.ones(4))


def test_retrieval_net_features_do_not_depend_on_batch():
    # what the multistage backward relies on: recomputing one image alone gives the same features
    # (the head, which couples the batch, runs on the whole batch: apl.train.step); in eval mode
    # the whole network is per image
    torch.manual_seed(0)
    net = RetrievalNet(SmallCNN(1), dim=8).train()
    x = torch.rand(6, 1, 8, 8)
    torch.testing.assert_close(net.features(x)[2:3], net.features(x[2:3]), rtol=1e-5, atol=1e-6)
    net.eval()
    torch.testing.assert_close(net(x)[2:3], net(x[2:3]), rtol=1e-5, atol=1e-6)


def test_retrieval_net_without_whitening_and_pca_init():
    torch.manual_seed(0)
    backbone = SmallCNN(1, widths=(8, 16))
    net = RetrievalNet(backbone, dim=None)
    assert net.whiten is None and net.out_dim == 16
    with pytest.raises(ValueError, match="no whitening layer"):
        net.init_whitening(None)
    net = RetrievalNet(backbone, dim=4, head="plain")
    x = torch.rand(40, 1, 8, 8)
    with torch.no_grad():
        pooled = net.pooled(x)
        pca = PCAWhitening.fit(pooled, dim=4)
        net.init_whitening(pca)
        torch.testing.assert_close(net(x), pca.transform(pooled), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="out_channels"):
        RetrievalNet(torch.nn.ReLU(), dim=4)
    with pytest.raises(ValueError, match="dim must be"):
        RetrievalNet(backbone, dim=0)


def test_small_cnn_learns_on_cpu():
    # a few steps of a simple pairwise loss on digit-like data must raise the training mAP
    from apl.data import load_digits

    torch.manual_seed(0)
    images, labels = load_digits()
    x, y = images[:64], labels[:64]
    net = RetrievalNet("small_cnn", dim=16, in_channels=1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    with torch.no_grad():
        before = mean_average_precision(net(x), y)
    eye = torch.eye(len(y), dtype=torch.bool)
    same = (y[:, None] == y[None]) & ~eye
    for _ in range(15):
        e = net(x)
        s = e @ e.T
        loss = torch.relu(s[~same & ~eye] - 0.5).mean() - s[same].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = mean_average_precision(net(x), y)
    assert after > before + 0.2, (before, after)


@pytest.mark.parametrize("norm", ["none", "batch", "group"])
def test_small_cnn_norm_options(norm):
    out = SmallCNN(3, widths=(8, 16), norm=norm)(torch.rand(2, 3, 8, 8))
    assert out.shape == (2, 16, 4, 4)


def test_build_backbone_errors():
    with pytest.raises(ValueError, match="unknown backbone 'vgg16'; available: small_cnn, tiny_cnn, resnet18"):
        build_backbone("vgg16")
    with pytest.raises(ValueError, match="unknown backbone"):
        RetrievalNet("nope", dim=8)
    with pytest.raises(ValueError, match="norm must be"):
        SmallCNN(norm="layer")
    with pytest.raises(ValueError, match="no pretrained weights"):
        build_backbone("small_cnn", pretrained=True)
    with pytest.raises(ValueError, match=r"takes RGB \(3-channel\) or grey \(1-channel\) images, got in_channels=2"):
        build_backbone("resnet18", in_channels=2)
    assert "small_cnn" in BACKBONES and "resnet50" in BACKBONES


def test_resnet_without_torchvision_is_a_clear_error(monkeypatch):
    # None in sys.modules makes the import fail, whether or not torchvision is installed
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.models", None)
    with pytest.raises(ImportError, match="needs torchvision.*pip install torchvision"):
        build_backbone("resnet50")


def test_resnet_wrapper_with_a_stand_in_torchvision(monkeypatch):
    # a stand-in torchvision.models with ResNet's attribute layout checks the wrapper logic here,
    # where torchvision is not installed, and that it never asks for weights unless told to
    import types

    asked = []

    def resnet18(weights=None):
        asked.append(weights)
        nn = torch.nn
        net = nn.Module()
        net.conv1, net.bn1, net.relu, net.maxpool = nn.Conv2d(3, 4, 3, 2, 1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2)
        net.layer1, net.layer2 = nn.Conv2d(4, 4, 3, 1, 1), nn.Sequential(nn.Conv2d(4, 6, 3, 2, 1), nn.BatchNorm2d(6))
        net.layer3, net.layer4, net.fc = nn.Identity(), nn.Identity(), nn.Linear(6, 10)
        return net

    models = types.SimpleNamespace(resnet18=resnet18)
    monkeypatch.setitem(sys.modules, "torchvision", types.SimpleNamespace(models=models))
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    net = RetrievalNet("resnet18", dim=5).train()
    assert asked == [None] and net.backbone.out_channels == 6
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(not m.training and not m.weight.requires_grad for m in bns)
    y = net(torch.rand(2, 3, 32, 32))
    assert y.shape == (2, 5)
    build_backbone("resnet18", pretrained=True)
    assert asked[-1] == "DEFAULT"
    # grey images are repeated over the three channels the ResNet takes
    grey = RetrievalNet("resnet18", dim=5, in_channels=1).eval()
    g = torch.rand(2, 1, 32, 32)
    rgb = RetrievalNet("resnet18", dim=5).eval()
    rgb.load_state_dict(grey.state_dict())
    torch.testing.assert_close(grey(g), rgb(g.expand(-1, 3, -1, -1)))
    assert grey.backbone.in_channels == 1
    assert all(m.training for m in build_backbone("resnet18", freeze_batchnorm=False).modules())


@pytest.mark.skipif(not HAS_TORCHVISION, reason="torchvision is not installed")
def test_resnet_backbone_random_weights():
    net = RetrievalNet("resnet18", dim=32)  # weights=None: nothing is downloaded
    net.train()
    assert all(not m.training for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert net(torch.rand(2, 3, 64, 64)).shape == (2, 32)
