"""Class folders with sub-folders: the class is the top-level folder, images are found at any depth
in a sorted order, and what is left out is recorded with its reason."""
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from apl.data import ImageList
from apl.data.folders import HIDDEN, LINK_LOOP, NOT_FILE, NOT_IMAGE, OUTSIDE, Skipped, scan_class_folders


def png(path: Path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 5, 3), value, np.uint8)).save(path)


@pytest.fixture
def nested(tmp_path):
    """Written in an order unlike the sorted one; "dog" has images in sub-folders only."""
    root = tmp_path / "imgs"
    for rel in ("dog/b/deep/x.png", "dog/a/y.JPG.png", "cat/z.png", "cat/sub/deeper/2.png", "cat/sub/1.png", "cat/0.png"):
        png(root / rel, len(rel))
    (root / "cat" / "notes.txt").write_text("not an image")
    png(root / "cat" / ".hidden.png")
    png(root / "cat" / ".cache" / "3.png")
    (root / "README.txt").write_text("about")
    (root / ".git").mkdir()
    return root


def test_images_in_sub_folders_belong_to_the_top_level_class(nested):
    ds = ImageList.from_folders(nested)
    assert ds.classes == ["cat", "dog"]
    assert ds.paths == [str(Path(p)) for p in ("cat/0.png", "cat/sub/1.png", "cat/sub/deeper/2.png", "cat/z.png",
                                                 "dog/a/y.JPG.png", "dog/b/deep/x.png")]
    assert ds.targets == [0, 0, 0, 0, 1, 1]
    assert ds[2][0].shape == (3, 4, 5)
    assert ds.skipped == [
        Skipped(".git", HIDDEN), Skipped("README.txt", OUTSIDE), Skipped(str(Path("cat/.cache")), HIDDEN),
        Skipped(str(Path("cat/.hidden.png")), HIDDEN), Skipped(str(Path("cat/notes.txt")), NOT_IMAGE),
    ]
    assert str(ds.skipped[-1]) == f"{Path('cat/notes.txt')} (not an image file by its extension)"


def test_the_order_does_not_depend_on_the_file_system(nested, tmp_path):
    first = scan_class_folders(nested)
    again = tmp_path / "again"  # the same tree written in the reverse order
    for rel in reversed(first.paths):
        png(again / rel)
    assert scan_class_folders(again).paths == first.paths == sorted(first.paths, key=lambda p: Path(p).parts)


def test_numeric_class_folders_stay_int_labels(tmp_path):
    for c in ("10", "9"):
        png(tmp_path / c / "sub" / "a.png")
    assert ImageList.from_folders(tmp_path).classes == [9, 10]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links here")
def test_links_are_followed_but_loops_and_broken_links_skipped(tmp_path):
    png(tmp_path / "elsewhere" / "e.png")
    png(tmp_path / "root" / "cat" / "a.png")
    root = tmp_path / "root"
    try:
        (root / "cat" / "loop").symlink_to(root / "cat", target_is_directory=True)
    except OSError:
        pytest.skip("cannot make symbolic links here")
    (root / "cat" / "outside").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "cat" / "gone.png").symlink_to(tmp_path / "missing.png")
    scan = scan_class_folders(root)
    assert scan.paths == [str(Path("cat/a.png")), str(Path("cat/outside/e.png"))]
    assert scan.skipped == [Skipped(str(Path("cat/gone.png")), NOT_FILE), Skipped(str(Path("cat/loop")), LINK_LOOP)]


def test_every_empty_class_is_named(tmp_path):
    png(tmp_path / "full" / "a.png")
    (tmp_path / "empty1" / "sub").mkdir(parents=True)
    (tmp_path / "empty2").mkdir()
    (tmp_path / "empty2" / "readme.txt").write_text("x")
    assert scan_class_folders(tmp_path).empty_classes == ["empty1", "empty2"]
    with pytest.raises(ValueError, match=r"empty class: 2 folders have no image files \(.*\), not even in sub-folders:\n  "
                                         r".*empty1\n  .*empty2$"):
        ImageList.from_folders(tmp_path)


def test_a_list_file_skips_nothing(tmp_path):
    png(tmp_path / "a.png")
    (tmp_path / "list.txt").write_text("a.png 1\n")
    assert ImageList.from_list_file(tmp_path / "list.txt").skipped == []
