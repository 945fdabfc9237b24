"""Dataset summaries for the start of `apl train`: images and classes of a split, skipped files,
single-image classes, and held-out images that are also training images."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from apl.data import ImageList, split_digits
from apl.data.glyphs.dataset import GlyphDataset
from apl.data.summary import compare_splits, describe_split, shared_items, single_image_classes


def png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(path)


@pytest.fixture
def tree(tmp_path):
    """cat: 3 images (one in a sub-folder), dog: 1, emu: 1; a text file and a hidden file."""
    root = tmp_path / "imgs"
    for rel in ("cat/0.png", "cat/1.png", "cat/sub/2.png", "dog/0.png", "emu/0.png"):
        png(root / rel)
    (root / "cat" / "notes.txt").write_text("x")
    png(root / "dog" / ".thumb.png")
    return root


def test_describe_an_image_folder(tree):
    ds = ImageList.from_folders(tree)
    assert single_image_classes(ds) == ["dog", "emu"]
    assert describe_split("training set", ds) == (
        "training set: 5 images, 3 classes (1 to 3 images per class, median 1); 2 classes with a single image "
        "(never a query with a positive): dog, emu; 2 skipped (1 not an image file by its extension, 1 hidden)")


def test_same_files_in_both_splits(tree, tmp_path):
    ds = ImageList.from_folders(tree)
    assert shared_items(ds, ds) == 5
    assert compare_splits(ds, ImageList.from_folders(tree))[0] == (
        "the held-out set is the training set (the same 5 files): its scores measure recall of training images, "
        "not retrieval of unseen ones")
    # the same files reached through a list file in another folder, with another root spelling
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "eval.txt").write_text("cat/0.png 1\n./cat/sub/2.png 1\nemu/0.png 2\nemu/0.png 2\n")
    held = ImageList.from_list_file(tmp_path / "lists" / "eval.txt", root=tmp_path / "lists" / ".." / "imgs")
    assert shared_items(ds, held) == 4
    assert compare_splits(ds, held)[0] == (
        "4 of the held-out set's 4 images are also in the training set (the same files): their scores are optimistic")


def test_disjoint_splits_give_no_warning(tree, tmp_path):
    png(tmp_path / "other" / "x" / "0.png")
    png(tmp_path / "other" / "x" / "1.png")
    held = ImageList.from_folders(tmp_path / "other")
    assert shared_items(ImageList.from_folders(tree), held) == 0
    assert compare_splits(ImageList.from_folders(tree), held) == []


def test_single_image_classes_in_the_held_out_set(tree, tmp_path):
    train = ImageList.from_folders(tree)
    png(tmp_path / "held" / "x" / "0.png")
    png(tmp_path / "held" / "x" / "1.png")
    png(tmp_path / "held" / "y" / "0.png")
    assert compare_splits(train, ImageList.from_folders(tmp_path / "held")) == [
        "1 held-out class with a single image: those queries have no positive and are left out of the scores "
        "(they stay in the gallery)"]
    (tmp_path / "held" / "x" / "1.png").unlink()
    singles = ImageList.from_folders(tmp_path / "held")
    assert compare_splits(singles, singles)[1:] == [
        "every held-out class has a single image: no held-out query has a positive, so the held-out scores are undefined",
        "every training class has a single image: no training query has a positive to learn from"]


def test_in_memory_digits():
    train, held = split_digits()
    assert describe_split("training set", train) == "training set: 901 images, 5 classes (177 to 183 images per class, median 181)"
    assert compare_splits(train, held) == []
    assert shared_items(train, held) == 0
    assert compare_splits(train, train)[0].startswith("the held-out set is the training set (the same 901 images, pixel for pixel): ")


def test_in_memory_glyphs_use_the_class_names():
    images = torch.arange(4 * 9, dtype=torch.uint8).reshape(4, 1, 3, 3)
    train = GlyphDataset(images[:3], torch.tensor([0, 0, 2]))
    train.classes = ["Oo", "Ss", "Xx"]
    assert describe_split("training set", train) == (
        "training set: 3 images, 2 classes (1 to 2 images per class, median 1.5); 1 class with a single image "
        "(never a query with a positive): Xx")
    held = GlyphDataset(images[2:], torch.tensor([1, 1]))
    assert shared_items(train, held) == 1  # image 2 is in both
    assert compare_splits(train, held) == [
        "1 of the held-out set's 2 images is also in the training set (the same pixels): their scores are optimistic"]
    assert shared_items(train, split_digits()[1]) == 0  # other pixels, other dtype


def test_files_and_memory_cannot_be_compared(tree):
    assert shared_items(ImageList.from_folders(tree), split_digits()[1]) is None


def test_a_dataset_without_targets_is_refused():
    with pytest.raises(TypeError, match=r"dataset must be a dataset with `targets` \(one class per item\), got list"):
        describe_split("training set", [1, 2])
    with pytest.raises(TypeError, match=r"held_out must be a dataset with `targets` \(one class per item\), got Subset"):
        compare_splits(split_digits()[0], torch.utils.data.Subset(split_digits()[1], [0]))
