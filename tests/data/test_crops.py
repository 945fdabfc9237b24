"""The training crop is a real random resized crop (no letterbox), a pure function of the seed of
torch's default generator; the evaluation transform is unchanged."""
import pytest
import torch

from apl.data import Resize, eval_transform, train_transform
from apl.data.transforms import TRAIN_RATIO, TRAIN_SCALE, RandomResizedCrop


def _under_seed(transform, x, seed):
    # as the trainer does it (apl/train/data.py, SeededDataset)
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        return transform(x)


def test_train_crops_differ_between_draws():
    x = torch.rand(3, 80, 120)  # 120 wide, 80 high
    tf = train_transform(32, flip=False, jitter=0.0)
    draws = [_under_seed(tf, x, s) for s in range(5)]
    assert all(d.shape == (3, 32, 32) for d in draws)
    assert len({tuple(d.flatten().tolist()) for d in draws}) == 5


def test_train_crops_depend_only_on_the_seed():
    x = torch.rand(3, 50, 70)
    tf = train_transform(24)  # with the flip and the colour jitter
    a, b = _under_seed(tf, x, 11), _under_seed(tf, x, 11)
    torch.manual_seed(123)  # the state outside the seeded block does not matter
    c = _under_seed(tf, x, 11)
    assert torch.equal(a, b) and torch.equal(a, c)
    assert not torch.equal(a, _under_seed(tf, x, 12))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(train_transform(24, generator=g1)(x), train_transform(24, generator=g2)(x))


@pytest.mark.parametrize("shape", [(3, 80, 120), (3, 120, 80), (1, 7, 9), (3, 1, 1), (3, 10, 1000), (3, 1000, 10), (3, 500, 400)])
def test_train_output_is_size_by_size(shape):
    out = _under_seed(train_transform(16), torch.rand(shape), 0)
    assert out.shape == (shape[0], 16, 16) and out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("shape", [(3, 80, 120), (3, 120, 80)])
def test_no_letterbox_rows_or_columns_when_the_source_is_not_square(shape):
    x = 0.2 + 0.8 * torch.rand(shape)  # no dark pixel anywhere
    for seed in range(10):
        plain = _under_seed(train_transform(32, flip=False, jitter=0.0), x, seed)
        assert plain.min() >= 0.2 - 1e-6  # bilinear weights are >= 0: nothing darker than the source
        out = _under_seed(train_transform(32), x, seed)
        assert (out.amax(dim=(0, 2)) > 0.05).all() and (out.amax(dim=(0, 1)) > 0.05).all()


def test_regions_follow_scale_and_ratio():
    crop = RandomResizedCrop(8, generator=torch.Generator().manual_seed(0))
    assert (crop.scale, crop.ratio) == (TRAIN_SCALE, TRAIN_RATIO) == ((0.35, 1.0), (3 / 4, 4 / 3))
    areas, ratios = [], []
    for _ in range(2000):
        top, left, h, w = crop.region(400, 400)
        assert 0 <= top and top + h <= 400 and 0 <= left and left + w <= 400
        areas.append(h * w / (400 * 400))
        ratios.append(w / h)
    assert 0.35 - 0.01 <= min(areas) < 0.4 and 0.95 < max(areas) <= 1.0
    assert 0.75 - 0.01 <= min(ratios) < 0.8 and 1.25 < max(ratios) <= 4 / 3 + 0.01
    # log-uniform ratio: as many draws below 1 as above (on a square image, where retries are symmetric)
    assert abs(sum(r < 1 for r in ratios) / len(ratios) - 0.5) < 0.05


def test_an_elongated_image_falls_back_to_a_centred_crop():
    crop = RandomResizedCrop(8, generator=torch.Generator().manual_seed(0))
    assert crop.region(10, 1000) == (0, (1000 - 13) // 2, 10, 13)  # widest allowed: 4/3
    assert crop.region(1000, 10) == ((1000 - 13) // 2, 0, 13, 10)  # tallest allowed: 3/4


def test_the_whole_image_resized_with_scale_and_ratio_one():
    x = torch.rand(3, 40, 40)
    out = RandomResizedCrop(16, scale=(1.0, 1.0), ratio=(1.0, 1.0))(x)
    torch.testing.assert_close(out, Resize(16)(x))  # antialiased bilinear


def test_crop_option_errors():
    with pytest.raises(ValueError, match=r"scale must be \(low, high\) with 0 < low <= high <= 1 \(area fractions\), got \(0, 1\)"):
        RandomResizedCrop(8, scale=(0, 1))
    with pytest.raises(ValueError, match=r"scale must be .*got \(0.9, 0.5\)"):
        train_transform(8, scale=(0.9, 0.5))
    with pytest.raises(ValueError, match=r"ratio must be \(low, high\) with 0 < low <= high \(width / height\), got \(2, 1\)"):
        RandomResizedCrop(8, ratio=(2, 1))
    with pytest.raises(ValueError, match="attempts must be >= 1, got 0"):
        RandomResizedCrop(8, attempts=0)
    with pytest.raises(ValueError, match="size must be positive, got 0"):
        RandomResizedCrop(0)


def test_eval_transform_is_unchanged():
    # Values computed with the code before the training crop changed (longest side, nothing else).
    x = torch.arange(2 * 5 * 7, dtype=torch.float32).reshape(2, 5, 7) / 69
    expected = torch.tensor([
        [[0.0511, 0.0736, 0.1003, 0.1228], [0.2105, 0.2330, 0.2597, 0.2823], [0.3699, 0.3925, 0.4191, 0.4417]],
        [[0.5583, 0.5809, 0.6075, 0.6301], [0.7177, 0.7403, 0.7670, 0.7895], [0.8772, 0.8997, 0.9264, 0.9489]],
    ])
    torch.testing.assert_close(eval_transform(4)(x), expected, atol=1e-4, rtol=0)
    up = eval_transform(10)(x[:1, :3, :4])
    assert up.shape == (1, 8, 10)
    torch.testing.assert_close(up[0, 0], torch.tensor([0.0, 0.0014, 0.0072, 0.013, 0.0188, 0.0246, 0.0304, 0.0362, 0.042, 0.0435]),
                               atol=1e-4, rtol=0)
    assert torch.equal(eval_transform(4)(x), eval_transform(4)(x))  # nothing random
