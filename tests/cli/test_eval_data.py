"""`apl eval`, `apl extract` and `apl show` use exactly the data the user names, whatever the
checkpoint was trained on, or refuse naming the option; `apl train` evaluates the --eval-dataset it
is given, also with a built-in training set."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from apl.cli import main
from apl.data import ImageList, eval_transform
from apl.evaluation import extract, load_descriptors, retrieval_metrics
from apl.train import TrainConfig, Trainer, load_model

from images import write_class_folders


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A checkpoint trained on the built-in digits (grey, 8 x 8)."""
    out = tmp_path_factory.mktemp("digits_run")
    Trainer(TrainConfig(dataset="digits", dim=8, batch_size=64, epochs=1, steps_per_epoch=1, threads=1), out,
            log=lambda m: None, progress=False).run()
    return out / "last.pt"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_class_folders(tmp_path_factory.mktemp("held") / "img", classes=3, per_class=5, sizes=((10, 12),))


def test_eval_of_a_builtin_checkpoint_on_a_folder_evaluates_the_folder(digits_run, folder, tmp_path, capsys):
    report = tmp_path / "e.json"
    assert main(["eval", str(digits_run), "--eval-dataset", str(folder), "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert f"evaluated {folder}: 15 images, 15 queries, image size longest side 64" in out
    got = json.loads(report.read_text())
    assert got["dataset"] == str(folder) and got["images"] == 15
    # the numbers are those of the folder's descriptors (read as grey: the network takes one channel)
    model, cfg = load_model(digits_run)
    ds = ImageList.from_folders(folder, transform=eval_transform(cfg.image_size), mode="L")
    d, y = extract(model, ds)
    assert got["metrics"]["map"] == pytest.approx(retrieval_metrics(d, y)["map"], abs=1e-9)


def test_extract_and_show_of_a_builtin_checkpoint_on_a_folder(digits_run, folder, tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["extract", str(digits_run), str(out), "--eval-dataset", str(folder)]) == 0
    d, y, paths, classes = load_descriptors(out)
    assert d.shape[0] == 15 and all(p.startswith(str(folder)) for p in paths) and set(classes) == {"class0", "class1", "class2"}
    assert main(["show", str(digits_run), "--eval-dataset", str(folder), "--queries", "2", "--top", "3",
                 "--out", str(tmp_path / "r.png")]) == 0
    assert f"queries of {folder}" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--eval-dataset", "glyphs"], "--eval-dataset glyphs: the built-in datasets come with their own held-out classes; "
                                   "name them with --dataset glyphs"),
    (["--image-size", "32"], "--image-size 32: the built-in 'digits' images are described at the size they come in"),
    (["--root", "/tmp"], "--root /tmp: the checkpoint was trained on the built-in 'digits', which reads no files"),
    (["--eval-root", "/tmp"], "--eval-root /tmp: there is no held-out image list for it to apply to"),
    (["--revisited", "/tmp", "--eval-dataset", "x"], "--eval-dataset does not apply with --revisited"),
    (["--revisited", "/tmp", "--dataset", "digits"], "--dataset does not apply with --revisited unless --whitening"),
    (["--threads", "0"], "--threads must be an integer >= 1, got 0"),
])
def test_options_that_would_not_apply_are_refused(digits_run, args, message, capsys):
    assert main(["eval", str(digits_run), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_extract_checks_its_output_folder_before_any_work(digits_run, tmp_path, capsys, monkeypatch):
    def no_work(*a, **k):
        raise AssertionError("the checkpoint was read before the output was checked")

    monkeypatch.setattr("apl.train.load_model", no_work)
    assert main(["extract", str(digits_run), str(tmp_path / "missing" / "d")]) == 2
    assert f"the folder {tmp_path / 'missing'} does not exist" in capsys.readouterr().err


def test_train_on_a_builtin_set_evaluates_the_eval_dataset_named(folder, tmp_path):
    logs = []
    cfg = TrainConfig(dataset="digits", eval_dataset=str(folder), dim=8, batch_size=64, epochs=1, steps_per_epoch=1,
                      threads=1)
    Trainer(cfg, tmp_path / "r", log=logs.append, progress=False).run()
    assert any(m.startswith("held-out set: 15 images, 3 classes") for m in logs), logs


def test_index_file_reads_back_names_with_tabs_and_newlines(tmp_path):
    from apl.evaluation import save_descriptors

    names = ["plain.png", "a\tb.png", "line\nbreak.png", "back\\slash\\t.png", "cr\r.png"]
    classes = ["c\t1", "c\n2", "c\\3", "4", ""]
    save_descriptors(tmp_path / "x", np.zeros((5, 2), np.float32), np.arange(5), names, classes)
    text = (tmp_path / "x.index.tsv").read_text()
    assert len(text.splitlines()) == 6 and all(len(l.split("\t")) == 3 for l in text.splitlines())
    d, y, paths, cls = load_descriptors(tmp_path / "x.npy")
    assert paths == names and cls == classes and y.tolist() == list(range(5))
