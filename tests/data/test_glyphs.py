"""apl.data.glyphs: the generated font-glyph retrieval data set."""

import math
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from apl.data.glyphs import cache, characters, distort
from apl.data.glyphs import (
    CHARACTERS,
    GlyphDataset,
    GlyphSet,
    default_cache_dir,
    glyph_subset,
    glyphs_cache_path,
    load_glyphs,
    make_glyphs,
    split_classes,
    split_glyphs,
    validation_split,
)

PER_CLASS = 3
FEW_CHARACTERS = "ABCOabco0lI1ΑΟοАОо+→"  # for the cache tests: a small set generates fast


@pytest.fixture(scope="module")
def glyphs() -> GlyphSet:
    return make_glyphs(size=32, per_class=PER_CLASS, seed=0)


def class_of(glyphs: GlyphSet, char: str) -> int:
    found = [k for k, name in enumerate(glyphs.class_names) if char in name]
    assert len(found) == 1, f"{char!r} in classes {found}"
    return found[0]


# ----------------------------------------------------------------------------- the generated set


def test_shapes_dtypes_and_ranges(glyphs):
    n = glyphs.num_classes * PER_CLASS
    assert glyphs.images.shape == (n, 1, 32, 32) and glyphs.images.dtype == torch.uint8
    assert glyphs.labels.shape == (n,) and glyphs.labels.dtype == torch.int64
    assert torch.equal(glyphs.labels, torch.arange(glyphs.num_classes).repeat_interleave(PER_CLASS))
    assert (glyphs.size, glyphs.per_class, glyphs.seed) == (32, PER_CLASS, 0)
    # ink bright on a dark background, the full range used
    assert glyphs.images.max() == 255 and glyphs.images.min() == 0
    x = glyphs.images.float() / 255
    assert (x.flatten(1).amax(1) > 0.25).all(), "an image without visible ink"
    assert x.mean() < 0.3, "background should be dark"


def test_number_of_classes(glyphs):
    c = glyphs.num_classes
    assert 100 <= c <= len(CHARACTERS)
    assert c == len(glyphs.class_names) == len(set(glyphs.class_names))
    chars = "".join(glyphs.class_names)
    assert len(chars) == len(set(chars)), "a character in two classes"
    assert set(chars) <= set(CHARACTERS)
    # every script is represented
    for sample in "Qq7ДжΩλ∑♥→":
        class_of(glyphs, sample)


def test_every_class_has_per_class_images(glyphs):
    counts = torch.bincount(glyphs.labels, minlength=glyphs.num_classes)
    assert (counts == PER_CLASS).all()


def test_images_of_a_class_vary(glyphs):
    x = glyphs.images.view(glyphs.num_classes, PER_CLASS, -1)
    same = (x[:, 1:] == x[:, :1]).all(-1)  # image k equal to image 0 of its class
    assert not same.any(), f"identical images in classes {torch.nonzero(same.any(1)).flatten().tolist()}"
    # and not only by noise: images of a class differ clearly (distortions, faces)
    diff = (x[:, 1:].float() - x[:, :1].float()).abs().mean(-1) / 255
    assert diff.median() > 0.03


def test_glyphs_are_centred_and_not_clipped(glyphs):
    x = glyphs.images[:, 0].float() / 255
    ring = torch.cat([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], dim=1)
    assert ring.amax() < 0.5, "ink on the image border: glyph clipped"
    coords = torch.arange(32, dtype=torch.float32)
    mass = x.sum((1, 2))
    cy = (x.sum(2) * coords).sum(1) / mass
    cx = (x.sum(1) * coords).sum(1) / mass
    assert (cx - 15.5).abs().amax() < 7 and (cy - 15.5).abs().amax() < 12  # "_" hangs lowest
    assert (cx - 15.5).abs().mean() < 2 and (cy - 15.5).abs().mean() < 4


def test_case_keeps_its_size_and_position(glyphs):
    """Glyphs share one font size and baseline: lower case is smaller, a comma hangs low."""

    def extent(char):
        c = class_of(glyphs, char)
        x = glyphs.images[c * PER_CLASS:(c + 1) * PER_CLASS, 0] > 127
        rows = [torch.nonzero(m.any(1)).flatten() for m in x]
        return np.mean([float(r[-1] - r[0] + 1) for r in rows]), np.mean([float(r.float().mean()) for r in rows])

    (h_o, y_o), (h_big_o, _) = extent("o"), extent("O")
    assert h_o < 0.85 * h_big_o
    (_, y_comma), (_, y_quote) = extent(","), extent("'")
    assert y_comma > y_o > y_quote  # rows grow downwards


def test_deterministic(glyphs):
    again = make_glyphs(size=32, per_class=PER_CLASS, seed=0)
    assert torch.equal(again.images, glyphs.images)
    assert torch.equal(again.labels, glyphs.labels)
    assert again.class_names == glyphs.class_names
    assert (again.train_classes, again.unseen_classes) == (glyphs.train_classes, glyphs.unseen_classes)


def test_seed_changes_images_not_classes(glyphs):
    other = make_glyphs(size=32, per_class=PER_CLASS, seed=1)
    assert other.class_names == glyphs.class_names and torch.equal(other.labels, glyphs.labels)
    assert (other.train_classes, other.unseen_classes) == (glyphs.train_classes, glyphs.unseen_classes)
    differs = (other.images != glyphs.images).flatten(1).any(1)
    assert differs.float().mean() > 0.99


def test_classes_do_not_depend_on_size(glyphs):
    small = make_glyphs(size=16, per_class=1, seed=0)
    assert small.class_names == glyphs.class_names
    assert small.images.shape == (glyphs.num_classes, 1, 16, 16)
    assert torch.equal(small.labels, torch.arange(glyphs.num_classes))


# ----------------------------------------------------------------------------- merged classes


@pytest.mark.parametrize("group", ["AΑА", "BΒВ", "EΕЕ", "HΗН", "MΜМ", "OΟО", "PΡР", "TΤТ", "XΧХ", "oοо", "aа", "eе", "pр"])
def test_homoglyphs_are_merged(glyphs, group):
    assert {class_of(glyphs, c) for c in group} == {class_of(glyphs, group[0])}
    assert set(group) <= set(glyphs.class_names[class_of(glyphs, group[0])])


@pytest.mark.parametrize("pair", ["AB", "oO", "O0", "lI", "l1", "I1", "AΛ", "nп", "☺☹", "+÷", "=≠", ",'", ".,"])
def test_distinct_shapes_are_not_merged(glyphs, pair):
    a, b = pair
    assert class_of(glyphs, a) != class_of(glyphs, b)


def test_class_names_follow_the_character_order(glyphs):
    firsts = [CHARACTERS.index(name[0]) for name in glyphs.class_names]
    assert firsts == sorted(firsts)
    for name in glyphs.class_names:
        assert [CHARACTERS.index(c) for c in name] == sorted(CHARACTERS.index(c) for c in name)
    assert glyphs.class_names[0] == "AΑА"


def test_affine_grid_matches_torch():
    theta = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(0))
    expected = F.affine_grid(theta, [5, 1, 24, 24], align_corners=False)
    assert torch.allclose(distort._affine_grid(theta, 24), expected, atol=1e-5)


# ----------------------------------------------------------------------------- class splits


def test_split_is_disjoint_and_covering(glyphs):
    train, unseen = glyphs.train_classes, glyphs.unseen_classes
    assert not set(train) & set(unseen)
    assert sorted(train + unseen) == list(range(glyphs.num_classes))
    assert abs(len(train) - len(unseen)) <= 1
    assert list(train) == sorted(train) and list(unseen) == sorted(unseen)
    assert (train, unseen) == split_classes(glyphs.num_classes)


def test_split_classes_is_seeded():
    a = split_classes(101, seed=0)
    assert a == split_classes(101, seed=0)
    assert a != split_classes(101, seed=1)
    assert (len(a[0]), len(a[1])) == (50, 51)
    assert a[0] != tuple(range(50)), "not permuted"
    with pytest.raises(ValueError):
        split_classes(1)


def test_validation_split(glyphs):
    fit, val = validation_split(glyphs.train_classes, fraction=0.25, seed=0)
    assert not set(fit) & set(val) and sorted(fit + val) == list(glyphs.train_classes)
    assert len(val) == round(0.25 * len(glyphs.train_classes))
    assert (fit, val) == validation_split(glyphs.train_classes, fraction=0.25, seed=0)
    assert (fit, val) != validation_split(glyphs.train_classes, fraction=0.25, seed=1)
    assert validation_split([3, 7], fraction=0.01) in (((3,), (7,)), ((7,), (3,)))
    for ids, fraction in (([1], 0.25), ([1, 2], 0.0), ([1, 2], 1.0)):
        with pytest.raises(ValueError):
            validation_split(ids, fraction=fraction)


# ----------------------------------------------------------------------------- datasets


def test_dataset_items():
    images = torch.tensor([[[[0, 255], [128, 0]]], [[[255, 255], [0, 0]]]], dtype=torch.uint8)
    ds = GlyphDataset(images, torch.tensor([4, 9]), transform=lambda x: x * 2)
    assert len(ds) == 2 and ds.targets == [4, 9]
    x, y = ds[0]
    assert x.dtype == torch.float32 and x.shape == (1, 2, 2) and y == 4 and isinstance(y, int)
    assert torch.allclose(x, torch.tensor([[[0.0, 2.0], [256 / 255, 0.0]]]))
    x, _ = GlyphDataset(images, torch.tensor([4, 9]))[1]
    assert x.min() >= 0 and x.max() <= 1 and x[0, 0, 0] == 1.0
    with pytest.raises(ValueError):
        GlyphDataset(images, torch.tensor([1]))


def test_split_glyphs(glyphs):
    train, unseen = split_glyphs(glyphs, transform=lambda x: x + 10, eval_transform=lambda x: x - 10)
    assert len(train) == len(glyphs.train_classes) * PER_CLASS
    assert len(unseen) == len(glyphs.unseen_classes) * PER_CLASS
    assert set(train.targets) == set(glyphs.train_classes) and set(unseen.targets) == set(glyphs.unseen_classes)
    x, y = train[0]
    assert x.shape == (1, 32, 32) and x.min() >= 10 and y == glyphs.train_classes[0]
    x, y = unseen[len(unseen) - 1]
    assert x.max() <= -9 and y == glyphs.unseen_classes[-1]
    # a validation split of the training classes, as datasets
    fit, val = validation_split(glyphs.train_classes)
    fit_ds, val_ds = glyph_subset(glyphs, fit), glyph_subset(glyphs, val)
    assert len(fit_ds) + len(val_ds) == len(train) and set(val_ds.targets) == set(val)
    with pytest.raises(ValueError):
        glyph_subset(glyphs, [glyphs.num_classes])


def test_invalid_parameters():
    with pytest.raises(ValueError):
        make_glyphs(size=4)
    with pytest.raises(ValueError):
        make_glyphs(per_class=0)
    with pytest.raises(TypeError):
        make_glyphs(size=32.0)
    with pytest.raises(TypeError):
        load_glyphs(seed="0")


# ----------------------------------------------------------------------------- cache


@pytest.fixture
def few_characters(monkeypatch):
    monkeypatch.setattr(characters, "CHARACTERS", FEW_CHARACTERS)


def test_cache_round_trip(tmp_path, monkeypatch, few_characters):
    first = load_glyphs(size=16, per_class=2, seed=3, cache_dir=tmp_path)
    path = glyphs_cache_path(size=16, per_class=2, seed=3, cache_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "one file, no temporary left"
    assert path.suffix == ".npz" and "s16" in path.name and "seed3" in path.name
    assert "AΑА" in first.class_names and first.images.shape == (2 * first.num_classes, 1, 16, 16)
    assert set("".join(first.class_names)) <= set(FEW_CHARACTERS), "CHARACTERS patched where it is not read"

    # the second load reads the file: generating again would fail
    def no_generation(*args, **kwargs):
        raise AssertionError("regenerated instead of reading the cache")

    real = cache.make_glyphs  # load_glyphs calls it from there
    monkeypatch.setattr(cache, "make_glyphs", no_generation)
    second = load_glyphs(size=16, per_class=2, seed=3, cache_dir=tmp_path)
    assert torch.equal(second.images, first.images) and torch.equal(second.labels, first.labels)
    assert second.class_names == first.class_names
    assert (second.train_classes, second.unseen_classes) == (first.train_classes, first.unseen_classes)
    assert (second.size, second.per_class, second.seed) == (16, 2, 3)
    monkeypatch.setattr(cache, "make_glyphs", real)

    # a corrupt file is regenerated (and rewritten), not fatal
    for garbage in (b"not an npz file", path.read_bytes()[:100]):
        path.write_bytes(garbage)
        third = load_glyphs(size=16, per_class=2, seed=3, cache_dir=tmp_path)
        assert torch.equal(third.images, first.images) and third.class_names == first.class_names
        assert cache._read(path, 16, 2, 3) is not None
    assert len(list(tmp_path.iterdir())) == 1


def test_cache_file_with_wrong_contents_is_regenerated(tmp_path, few_characters):
    first = load_glyphs(size=16, per_class=1, seed=0, cache_dir=tmp_path)
    path = glyphs_cache_path(size=16, per_class=1, seed=0, cache_dir=tmp_path)
    with np.load(path) as data:
        contents = dict(data)
    contents["images"] = contents["images"][:-1]  # inconsistent with the labels
    np.savez(path, **contents)
    assert cache._read(path, 16, 1, 0) is None
    again = load_glyphs(size=16, per_class=1, seed=0, cache_dir=tmp_path)
    assert torch.equal(again.images, first.images)


def test_cache_write_failure_only_warns(tmp_path, monkeypatch, few_characters):
    def failing_savez(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(cache.np, "savez", failing_savez)
    with pytest.warns(RuntimeWarning, match="could not write"):
        glyphs = load_glyphs(size=16, per_class=1, seed=0, cache_dir=tmp_path)
    assert glyphs.images.shape[0] == glyphs.num_classes
    assert list(tmp_path.iterdir()) == [], "temporary file left behind"


def test_cache_path_depends_on_parameters_and_versions(tmp_path, monkeypatch):
    base = glyphs_cache_path(32, 16, 0, tmp_path)
    assert base.parent == tmp_path
    others = {glyphs_cache_path(*params, cache_dir=tmp_path) for params in ((33, 16, 0), (32, 15, 0), (32, 16, 1))}
    assert base not in others and len(others) == 3
    monkeypatch.setattr(cache, "FORMAT_VERSION", cache.FORMAT_VERSION + 1)
    assert glyphs_cache_path(32, 16, 0, tmp_path) != base
    monkeypatch.undo()
    monkeypatch.setattr(cache.ft2font, "__freetype_version__", "0.0.0")
    assert glyphs_cache_path(32, 16, 0, tmp_path) != base


def test_default_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("APL_CACHE_DIR", str(tmp_path / "apl-cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "apl-cache"
    assert glyphs_cache_path().parent == tmp_path / "apl-cache"
    monkeypatch.delenv("APL_CACHE_DIR")
    assert default_cache_dir() == tmp_path / "xdg" / "apl"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "apl"


def test_long_tail_sizes_follow_a_power_law():
    from apl.data.glyphs import long_tail_sizes

    sizes = long_tail_sizes(149, 200, 2, seed=0)
    ranked = sorted(sizes, reverse=True)
    assert ranked[0] == 200 and ranked[-1] == 2 and len(sizes) == 149
    assert all(a >= b for a, b in zip(ranked, ranked[1:]))
    # a power law: rank r has about 200 (r + 1)^-a images, a = log(100) / log(149)
    a = math.log(100) / math.log(149)
    assert all(abs(n - max(2, round(200 * (r + 1) ** -a))) == 0 for r, n in enumerate(ranked))
    assert sizes != ranked  # assigned to the classes in a seeded random order
    assert long_tail_sizes(149, 200, 2, seed=0) == sizes


def test_long_tail_subset_keeps_the_first_images_of_each_class(glyphs):
    from apl.data.glyphs import long_tail_sizes, long_tail_subset

    ids = glyphs.train_classes[:10]
    sub = long_tail_subset(glyphs, ids, largest=PER_CLASS, smallest=2, seed=3)
    sizes = dict(zip(sorted(ids), long_tail_sizes(10, PER_CLASS, 2, seed=3)))
    got = {c: sub.targets.count(c) for c in set(sub.targets)}
    assert got == sizes
    for c in ids:  # the first n_c images of the class, in order
        mine = sub.images[sub.labels == c]
        torch.testing.assert_close(mine, glyphs.images[glyphs.labels == c][:sizes[c]], rtol=0, atol=0)
    with pytest.raises(ValueError, match=f"needs glyphs of per_class >= {PER_CLASS + 1}"):
        long_tail_subset(glyphs, ids, largest=PER_CLASS + 1)
