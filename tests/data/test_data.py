"""apl.data: image lists on real PNG files, transforms, samplers, Revisited ground truth, digits."""
import pickle
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from apl.data import (
    ClassBalancedBatchSampler,
    ClassSpreadBatchSampler,
    RandomBatchSampler,
    ColorJitter,
    CorruptImageError,
    ImageList,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    ResizeMax,
    crop_query,
    download_revisited,
    load_digits,
    load_revisited,
    split_digits,
    to_tensor,
    train_transform,
)


def write_png(path: Path, value: int, size=(6, 4), mode="RGB") -> np.ndarray:
    """A real PNG whose pixel (row r, column c) is (value + r + c) in every channel."""
    h, w = size
    arr = (value + np.add.outer(np.arange(h), np.arange(w))).astype(np.uint8)
    if mode == "RGB":
        arr = np.stack([arr, arr // 2, 255 - arr], axis=-1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode=mode).save(path)
    return arr


@pytest.fixture
def image_tree(tmp_path):
    """tmp/imgs/<class>/<i>.png for classes "cat" (2 images) and "dog" (3 images)."""
    arrays = {}
    for cls, n, base in (("cat", 2, 10), ("dog", 3, 100)):
        for i in range(n):
            arrays[f"{cls}/{i}.png"] = write_png(tmp_path / "imgs" / cls / f"{i}.png", base + 20 * i)
    return tmp_path / "imgs", arrays


# ----------------------------------------------------------------------------- ImageList


def test_image_list_from_list_file_reads_the_real_pixels(image_tree):
    root, arrays = image_tree
    lst = root / "list.txt"
    lst.write_text("# comment line\n\ndog/2.png 7\ncat/0.png,3\n  cat/1.png\t3\n")
    ds = ImageList.from_list_file(lst)
    assert len(ds) == 3 and ds.classes == [3, 7] and ds.targets == [1, 0, 0]
    x, t = ds[0]
    assert t == 1 and x.shape == (3, 6, 4) and x.dtype == torch.float32
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy() * 255, arrays["dog/2.png"], atol=1e-4)
    grey = ImageList.from_list_file(lst, mode="L")[1][0]
    assert grey.shape == (1, 6, 4)


def test_image_list_with_a_byte_order_mark(image_tree):
    """A list saved with a UTF-8 byte-order mark (some Windows editors): the mark is not part of the
    first path."""
    root, _ = image_tree
    lst = root / "bom.txt"
    lst.write_bytes("\ufeffcat/0.png 1\ndog/1.png 2\n".encode("utf-8"))
    ds = ImageList.from_list_file(lst)
    assert [str(p) for p in ds.paths] == ["cat/0.png", "dog/1.png"] and ds.missing_files() == []


def test_image_list_string_labels_suffix_and_explicit_root(image_tree, tmp_path):
    root, _ = image_tree
    lst = tmp_path / "elsewhere" / "train.txt"
    lst.parent.mkdir()
    lst.write_text("dog/0 landmark_b\ncat/0 landmark_a\n")
    ds = ImageList.from_list_file(lst, root=root, suffix=".png", transform=ResizeMax(3))
    assert ds.classes == ["landmark_a", "landmark_b"] and ds.targets == [1, 0]
    assert ds[0][0].shape == (3, 3, 2)


def test_image_list_from_folders(image_tree):
    root, arrays = image_tree
    (root / "cat" / "notes.txt").write_text("not an image")
    ds = ImageList.from_folders(root)
    assert ds.classes == ["cat", "dog"] and ds.targets == [0, 0, 1, 1, 1]
    assert ds.paths[2] == str(Path("dog") / "0.png")
    np.testing.assert_allclose(ds[1][0].permute(1, 2, 0).numpy() * 255, arrays["cat/1.png"], atol=1e-4)
    assert [str(s) for s in ds.skipped] == [f"{Path('cat/notes.txt')} (not an image file by its extension)"]
    ds.check_files()


def test_missing_list_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="image list not found: .*nope.txt"):
        ImageList.from_list_file(tmp_path / "nope.txt")


def test_malformed_line_names_file_and_line(tmp_path):
    lst = tmp_path / "bad.txt"
    lst.write_text("a.png 1\n# ok\nonly_a_path.png\n")
    with pytest.raises(ValueError, match=r"bad\.txt, line 3: malformed line 'only_a_path\.png'"):
        ImageList.from_list_file(lst)


def test_binary_file_as_list_names_file_and_line(tmp_path):
    lst = tmp_path / "img.png"
    lst.write_bytes(b"a.png 1\n\x89PNG\xff\xfe\n")
    with pytest.raises(ValueError, match=r"img\.png, line 2: not UTF-8 text"):
        ImageList.from_list_file(lst)


def test_empty_list(tmp_path):
    lst = tmp_path / "empty.txt"
    lst.write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="empty.txt has no images"):
        ImageList.from_list_file(lst)


def test_missing_image_names_the_path_and_list_line(image_tree):
    root, _ = image_tree
    lst = root / "list.txt"
    lst.write_text("cat/0.png 1\ncat/9.png 1\n")
    ds = ImageList.from_list_file(lst)
    with pytest.raises(FileNotFoundError, match=r"image file not found: .*cat/9\.png \(.*list\.txt, line 2\)"):
        ds[1]
    with pytest.raises(FileNotFoundError, match=r"cat/9\.png"):
        ds.check_files()


def test_corrupt_image(image_tree):
    root, _ = image_tree
    (root / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    ds = ImageList.from_folders(root)
    index = ds.paths.index(str(Path("cat") / "broken.png"))
    with pytest.raises(CorruptImageError, match=r"corrupt or unreadable image: .*broken\.png"):
        ds[index]
    # a truncated file fails when decoded, not later
    data = (root / "dog" / "0.png").read_bytes()
    (root / "dog" / "0.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptImageError, match=r"dog/0\.png"):
        ds[ds.paths.index(str(Path("dog") / "0.png"))]


def test_empty_class_folder_and_no_class_folders(image_tree, tmp_path):
    root, _ = image_tree
    (root / "empty_class").mkdir()
    (root / "empty_class" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match=r"empty class: folder .*empty_class has no image files"):
        ImageList.from_folders(root)
    flat = tmp_path / "flat"
    flat.mkdir()
    with pytest.raises(ValueError, match="no class sub-folders"):
        ImageList.from_folders(flat)
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        ImageList.from_folders(tmp_path / "missing")


# ----------------------------------------------------------------------------- transforms


def test_to_tensor_and_resize_max():
    img = Image.fromarray(np.full((10, 20), 255, np.uint8), mode="L")
    x = to_tensor(img)
    assert x.shape == (1, 10, 20) and float(x.max()) == 1.0
    assert ResizeMax(8)(x).shape == (1, 4, 8)
    assert ResizeMax(40)(x).shape == (1, 20, 40)
    assert ResizeMax(40, upscale=False)(x).shape == (1, 10, 20)
    torch.testing.assert_close(ResizeMax(8)(x), torch.ones(1, 4, 8))  # a flat image stays flat


def test_random_crop_flip_are_reproducible_with_a_generator():
    x = torch.arange(2 * 6 * 7, dtype=torch.float32).reshape(2, 6, 7)
    a = RandomCrop(4, torch.Generator().manual_seed(3))(x)
    b = RandomCrop(4, torch.Generator().manual_seed(3))(x)
    assert a.shape == (2, 4, 4) and torch.equal(a, b)
    # the crop is a contiguous window of x
    top, left = int(a[0, 0, 0]) // 7, int(a[0, 0, 0]) % 7
    assert torch.equal(a, x[:, top : top + 4, left : left + 4])
    assert RandomCrop((8, 9))(x).shape == (2, 8, 9)  # padded when too small
    assert torch.equal(RandomHorizontalFlip(1.0)(x), x.flip(-1))
    assert torch.equal(RandomHorizontalFlip(0.0)(x), x)
    out = train_transform(12, generator=torch.Generator().manual_seed(0))(torch.rand(3, 30, 20))
    assert out.shape == (3, 12, 12) and out.min() >= 0 and out.max() <= 1


def test_color_jitter_and_normalize():
    x = torch.rand(3, 5, 5)
    assert torch.equal(ColorJitter()(x), x)  # zero strength: identity
    g = torch.Generator().manual_seed(0)
    y = ColorJitter(0.5, 0.5, 0.5, generator=g)(x)
    assert y.shape == x.shape and not torch.equal(y, x) and y.min() >= 0 and y.max() <= 1
    torch.testing.assert_close(Normalize([0.5] * 3, [0.25] * 3)(x), (x - 0.5) / 0.25)
    with pytest.raises(ValueError, match="brightness must be in"):
        ColorJitter(brightness=2)


# ----------------------------------------------------------------------------- samplers


LABELS = [c for c in range(6) for _ in range(3 + c)]  # class c has 3 + c images


def _no_repeats(batch):
    assert len(batch) == len(set(batch)), "an image is twice in a batch"


def test_class_balanced_sampler():
    s = ClassBalancedBatchSampler(LABELS, classes_per_batch=3, samples_per_class=4, num_batches=20, seed=1)
    batches = list(s)
    assert len(batches) == len(s) == 20
    for b in batches:
        _no_repeats(b)
        counts = Counter(LABELS[i] for i in b)
        assert len(b) == 12
        # three classes of 4; when class 0 (3 images) is drawn, no class is left with a single image:
        # its 3 and one more for a class with images to spare, or 2 of its 3 and a fourth class of 2
        assert sorted(counts.values()) in ([4, 4, 4], [3, 4, 5], [2, 2, 4, 4])
    assert batches == list(s)  # same seed and epoch: same batches
    s.set_epoch(1)
    assert list(s) != batches
    other = ClassBalancedBatchSampler(LABELS, 3, 4, num_batches=20, seed=2)
    assert list(other) != batches
    with pytest.raises(ValueError, match="only 6 classes with two or more images"):
        ClassBalancedBatchSampler(LABELS, 7, 2)


SHORT = [c for c in range(8) for _ in range((1, 1, 2, 3, 8, 9, 10, 12)[c])]  # two singletons, two classes short of K


def test_class_balanced_sampler_never_repeats_an_image():
    """A class with fewer than K images gives all of them once; the batch is filled from other classes;
    classes of one image are never drawn."""
    s = ClassBalancedBatchSampler(SHORT, classes_per_batch=4, samples_per_class=5, num_batches=200, seed=0)
    seen_short = Counter()
    for b in s:
        _no_repeats(b)
        assert len(b) == 20
        counts = Counter(SHORT[i] for i in b)
        assert 0 not in counts and 1 not in counts
        assert all(n >= 2 for n in counts.values())
        for c in (2, 3):
            if c in counts:
                assert counts[c] == (1, 1, 2, 3)[c]  # all its images, each once
                seen_short[c] += 1
    assert seen_short[2] > 0 and seen_short[3] > 0
    text = s.describe()
    assert "6 classes with two or more images" in text
    assert "2 of them have fewer than K = 5 images (2-3)" in text
    assert "2 classes with a single image are never drawn (no positive pair)" in text


def test_class_balanced_sampler_fills_from_spare_images():
    """More room than the classes' shares: the classes in the batch give more of their images."""
    labels = [0] * 3 + [1] * 3 + [2] * 10
    s = ClassBalancedBatchSampler(labels, classes_per_batch=2, samples_per_class=2, num_batches=50, seed=0, batch_size=14)
    for b in s:
        _no_repeats(b)
        assert len(b) == 14
    with pytest.raises(ValueError, match=r"batch_size=17 but the classes with two or more images hold only 16 images"):
        ClassBalancedBatchSampler(labels, 2, 2, batch_size=17)
    with pytest.raises(ValueError, match="samples_per_class must be an integer >= 2, got 1"):
        ClassBalancedBatchSampler(labels, 2, 1)
    with pytest.raises(ValueError, match="at least 2 classes of 2 or more images"):
        ClassBalancedBatchSampler([0, 0, 1, 2], 1, 2)


def test_class_spread_sampler():
    s = ClassSpreadBatchSampler(LABELS, batch_size=16, num_batches=10, seed=0)
    for b in s:
        counts = Counter(LABELS[i] for i in b)
        assert len(b) == 16 and len(set(b)) == 16
        assert set(counts) == set(range(6)) and set(counts.values()) <= {2, 3}  # 16 = 6 * 2 + 4
    assert list(s) == list(ClassSpreadBatchSampler(LABELS, 16, num_batches=10, seed=0))
    small = ClassSpreadBatchSampler(LABELS, batch_size=4, num_batches=3, seed=0)
    assert all(len({LABELS[i] for i in b}) == 4 for b in small)
    assert len(ClassSpreadBatchSampler(LABELS, batch_size=11)) == len(LABELS) // 11
    with pytest.raises(ValueError, match="batch_size must be"):
        ClassSpreadBatchSampler(LABELS, 0)
    with pytest.raises(ValueError, match="num_batches must be a positive int, got 0"):
        ClassSpreadBatchSampler(LABELS, 4, num_batches=0)
    with pytest.raises(ValueError, match=r"batch_size=34 but there are only 33 images"):
        ClassSpreadBatchSampler(LABELS, 34)


def test_class_spread_sampler_never_repeats_an_image():
    """Shares larger than the small classes: they give all their images, other classes the rest."""
    s = ClassSpreadBatchSampler(LABELS, batch_size=30, num_batches=30, seed=3)  # shares of 5, classes of 3..8
    for b in s:
        _no_repeats(b)
        assert len(b) == 30
        counts = Counter(LABELS[i] for i in b)
        assert counts[0] == 3 and counts[1] == 4  # all their images
    whole = ClassSpreadBatchSampler(LABELS, batch_size=len(LABELS), num_batches=2, seed=0)
    assert all(sorted(b) == list(range(len(LABELS))) for b in whole)


def test_random_sampler_is_uniform_and_deterministic():
    labels = [c for c in range(10) for _ in range(2 ** (c % 5) + 1)]  # long-tailed: 2 to 17 images
    n = len(labels)
    s = RandomBatchSampler(labels, batch_size=16, seed=4)
    assert len(s) == n // 16
    epoch0 = list(s)
    for b in epoch0:
        _no_repeats(b)
        assert len(b) == 16
    flat = [i for b in epoch0 for i in b]
    assert len(flat) == len(set(flat)), "an image twice in an epoch"
    assert epoch0 == list(RandomBatchSampler(labels, 16, seed=4))
    s.set_epoch(1)
    assert list(s) != epoch0
    s.set_epoch(0)
    assert list(s) == epoch0  # resuming an epoch gives its batches again
    # uniform: over many epochs each image is drawn about equally often, whatever its class size
    many = RandomBatchSampler(labels, batch_size=16, num_batches=4000, seed=0)
    hits = Counter(i for b in many for i in b)
    expected = 4000 * 16 / n
    assert set(hits) == set(range(n)) and max(abs(v - expected) for v in hits.values()) < 0.15 * expected
    assert "uniform random batches: 16 of" in s.describe()
    with pytest.raises(ValueError, match=r"batch_size=999 but there are only"):
        RandomBatchSampler(labels, 999)


def test_samplers_work_with_a_dataloader():
    tr, _ = split_digits()
    sampler = ClassSpreadBatchSampler(tr.targets, batch_size=50, num_batches=2, seed=0)
    loader = torch.utils.data.DataLoader(tr, batch_sampler=sampler)
    x, y = next(iter(loader))
    assert x.shape == (50, 1, 8, 8) and set(y.tolist()) == {0, 1, 2, 3, 4}


# ----------------------------------------------------------------------------- Revisited Oxford / Paris


def write_gnd(folder: Path, name="roxford5k", **override):
    cfg = {
        "imlist": ["all_souls_000001", "oxford_000002", "oxford_000003"],
        "qimlist": ["all_souls_000013"],
        "gnd": [{"easy": [0], "hard": [2], "junk": [1], "bbx": [1.5, 2.0, 5.2, 4.0]}],
    }
    cfg.update(override)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"gnd_{name}.pkl", "wb") as f:
        pickle.dump(cfg, f)


def test_load_revisited_and_crop_query(tmp_path):
    write_gnd(tmp_path / "roxford5k")
    ds = load_revisited(tmp_path)  # the one dataset present is found
    assert ds.name == "roxford5k" and len(ds.imlist) == 3 and ds.gnd[0]["easy"] == [0]
    assert ds.image_path(1) == tmp_path / "roxford5k" / "jpg" / "oxford_000002.jpg"
    assert ds.query_path(0).name == "all_souls_000013.jpg"
    assert load_revisited(tmp_path / "roxford5k" / "gnd_roxford5k.pkl").imlist == ds.imlist
    img = Image.fromarray(np.arange(6 * 8, dtype=np.uint8).reshape(6, 8))
    crop = crop_query(img, ds.query_box(0))  # x 1.5..5.2 -> columns 1..5, y 2..4 -> rows 2..3
    np.testing.assert_array_equal(np.asarray(crop), np.asarray(img)[2:4, 1:6])
    t = to_tensor(img)
    assert torch.equal(crop_query(t, ds.query_box(0)), t[:, 2:4, 1:6])
    with pytest.raises(ValueError, match="outside"):
        crop_query(img, (20, 20, 30, 30))


def test_load_revisited_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="ground truth not found"):
        load_revisited(tmp_path, "rparis6k")
    write_gnd(tmp_path / "rparis6k", name="rparis6k", gnd=[{"easy": [], "hard": [], "junk": []}])
    with pytest.raises(ValueError, match=r"gnd\[0\] lacks \['bbx'\]"):
        load_revisited(tmp_path, "rparis6k")
    (tmp_path / "bad.pkl").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read ground-truth pickle"):
        load_revisited(tmp_path / "bad.pkl")
    with pytest.raises(ValueError, match="unknown dataset 'oxford'"):
        download_revisited(tmp_path, "oxford")  # rejected before any network access


# ----------------------------------------------------------------------------- bundled digits


def test_bundled_digits_are_the_uci_data():
    images, labels = load_digits()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == torch.float32
    assert float(images.min()) == 0.0 and float(images.max()) == 1.0
    # the class sizes of the UCI test set and the known first image (a zero)
    assert torch.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert (images[0, 0, 0] * 16).round().tolist() == [0, 0, 5, 13, 9, 1, 0, 0]
    assert labels[:3].tolist() == [0, 1, 2]
    note = (Path(__file__).parents[2] / "apl" / "data" / "DIGITS.md").read_text()
    assert "Alpaydin" in note and "Kaynak" in note and "CC BY 4.0" in note


def test_split_digits_holds_out_classes():
    tr, ev = split_digits((1, 3, 5))
    assert set(tr.targets) == {1, 3, 5} and set(ev.targets) == {0, 2, 4, 6, 7, 8, 9}
    assert len(tr) + len(ev) == 1797
    x, y = tr[0]
    assert x.shape == (1, 8, 8) and y in (1, 3, 5)
    with pytest.raises(ValueError, match="proper subset"):
        split_digits(range(10))


def test_works_without_sklearn_and_torchvision():
    # None in sys.modules makes any import of them fail, even where they are installed
    code = (
        "import sys; sys.modules.update(sklearn=None, torchvision=None); "
        "import apl.data, apl.nn, apl.evaluation; "
        "x, y = apl.data.load_digits(); "
        "d = apl.nn.RetrievalNet('small_cnn', dim=8, in_channels=1)(x[:20]); "
        "apl.evaluation.mean_average_precision(d.detach(), y[:20])"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_class_balanced_sampler_fills_batches_of_small_classes_exactly():
    """Classes of 2 to 8 images (shorter than K) and batch sizes of every parity: full batches, no
    repeat, and every class of a batch with two images at least whenever the data allow it."""
    labels = [c for c in range(60) for _ in range(2 + c % 7)]
    for batch in (17, 64, 65, 101):
        s = ClassBalancedBatchSampler(labels, classes_per_batch=8, samples_per_class=8, num_batches=40, seed=batch,
                                      batch_size=batch)
        for b in s:
            _no_repeats(b)
            assert len(b) == batch
            assert min(Counter(labels[i] for i in b).values()) >= 2
    pairs = [c for c in range(10) for _ in range(2)]  # only pairs and an odd batch: one image must stand alone
    b = next(iter(ClassBalancedBatchSampler(pairs, 2, 2, batch_size=5, seed=0)))
    _no_repeats(b)
    assert len(b) == 5 and sorted(Counter(pairs[i] for i in b).values()) == [1, 2, 2]
