"""`apl check-images` / `check_dataset`: every problem (missing, corrupt, empty class folders), the
unusual modes as warnings, what was skipped, one line of counts; exit status 1 only for problems."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from apl.cli import main
from apl.data import ImageList, find_bad_images
from apl.data.check import check_dataset, check_images


def png(path: Path, arr=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 5, 3), 90, np.uint8) if arr is None else arr).save(path)


@pytest.fixture
def messy(tmp_path):
    """Classes a (fine), b (a corrupt file, a 16-bit image), c (an RGBA image in a sub-folder), two
    empty class folders, a text file and a hidden file."""
    root = tmp_path / "imgs"
    png(root / "a" / "0.png")
    png(root / "a" / "1.png")
    (root / "b").mkdir()
    (root / "b" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    png(root / "b" / "deep16.png", (np.arange(20).reshape(4, 5) * 3000).astype(np.uint16))
    png(root / "c" / "sub" / "rgba.png", np.full((4, 5, 4), 200, np.uint8))
    (root / "empty1" / "sub").mkdir(parents=True)
    (root / "empty2").mkdir()
    (root / "a" / "notes.txt").write_text("x")
    png(root / "a" / ".hidden.png")
    return root


def test_every_problem_warning_and_skipped_file_is_reported(messy):
    r = check_dataset(messy, workers=0)
    assert r.checked == 5 and r.missing == 0
    assert len(r.bad) == 1 and "corrupt or unreadable image: " in r.bad[0] and "bad.png" in r.bad[0]
    assert r.empty_classes == [str(messy / "empty1"), str(messy / "empty2")]
    assert r.problems[1:] == [f"empty class folder: {messy / 'empty1'} (no image files, not even in sub-folders)",
                              f"empty class folder: {messy / 'empty2'} (no image files, not even in sub-folders)"]
    assert r.warnings == [
        f"{messy / 'b' / 'deep16.png'}: 16-bit greyscale (mode I;16): scaled to [0, 1] by 65535 and read with 8 bits",
        f"{messy / 'c' / 'sub' / 'rgba.png'}: transparency (mode RGBA) dropped: transparent pixels show their stored colour",
    ]
    assert r.skipped == [f"{Path('a/.hidden.png')} (hidden)", f"{Path('a/notes.txt')} (not an image file by its extension)"]
    assert r.summary() == "5 images checked, 1 bad (1 unreadable), 2 empty class folders, 2 warnings, 2 skipped"


def test_check_images_command(messy, capsys):
    assert main(["check-images", str(messy), "--workers", "2"]) == 1
    out = capsys.readouterr()
    lines = out.out.strip().splitlines()
    assert len(lines) == 7 and "bad.png" in lines[0] and lines[1].startswith("empty class folder: ")
    assert lines[3].startswith("warning: ") and "deep16.png" in lines[3] and "rgba.png" in lines[4]
    assert lines[5:] == [f"skipped: {Path('a/.hidden.png')} (hidden)", f"skipped: {Path('a/notes.txt')} (not an image file by its extension)"]
    assert out.err.strip().splitlines()[-1] == "5 images checked, 1 bad (1 unreadable), 2 empty class folders, 2 warnings, 2 skipped"
    # warnings and skipped files alone are no failure
    (messy / "b" / "bad.png").unlink()
    (messy / "empty1" / "sub").rmdir()
    (messy / "empty1").rmdir()
    (messy / "empty2").rmdir()
    assert main(["check-images", str(messy)]) == 0
    assert capsys.readouterr().err.strip().splitlines()[-1] == "4 images checked, 0 bad, 2 warnings, 2 skipped"


def test_list_file_with_missing_and_corrupt_images(messy, capsys):
    lst = messy / "list.txt"
    lst.write_text("a/0.png 1\na/9.png 1\nb/bad.png 2\nb/deep16.png 2\n")
    r = check_dataset(lst, workers=0)
    assert r.summary() == "4 images checked, 2 bad (1 missing, 1 unreadable), 1 warning, 0 skipped"
    assert "a/9.png (" in r.bad[0] and "list.txt, line 2)" in r.bad[0] and "list.txt, line 3)" in r.bad[1]
    assert "list.txt, line 4): 16-bit greyscale" in r.warnings[0]
    assert find_bad_images(ImageList.from_list_file(lst), workers=0) == r.bad  # the older function: problems only


def test_only_empty_class_folders(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    assert main(["check-images", str(tmp_path)]) == 1
    out = capsys.readouterr()
    assert out.out.count("empty class folder: ") == 2
    assert out.err.strip() == "0 images checked, 0 bad, 2 empty class folders, 0 warnings, 0 skipped"


def test_check_errors(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match=r"not found: .*nope \(expected an image-list file or a folder of class folders\)"):
        check_dataset(tmp_path / "nope")
    assert main(["check-images", str(tmp_path / "nope")]) == 2
    assert "apl check-images: error: not found: " in capsys.readouterr().err
    png(tmp_path / "a" / "0.png")
    with pytest.raises(ValueError, match="--workers must be >= 0, got -1"):
        check_images(ImageList.from_folders(tmp_path), workers=-1)
