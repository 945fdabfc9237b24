"""Extraction and evaluation: images of real (mixed) shapes, multi-scale descriptors, deterministic
whitening and extraction, and what eval/extract report."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from apl.cli import main
from apl.data import ImageList, eval_transform
from apl.nn import RetrievalNet
from apl.evaluation import describe, extract
from images import write_class_folders

SHAPES = [(12, 12), (10, 16), (18, 9), (14, 11)]


@pytest.fixture()
def mixed(tmp_path):
    return write_class_folders(tmp_path / "train", sizes=SHAPES), write_class_folders(tmp_path / "test", sizes=SHAPES, seed=1)


def _net():
    torch.manual_seed(0)
    return RetrievalNet("small_cnn", dim=6, in_channels=3).eval()


def test_mixed_shapes_grouped_equal_one_by_one(mixed):
    ds = ImageList.from_folders(mixed[1], transform=eval_transform(16))
    assert len({tuple(ds[i][0].shape) for i in range(len(ds))}) == 4
    net = _net()
    d, y = extract(net, ds, batch_size=7)
    with torch.no_grad():
        one = torch.cat([net(ds[i][0][None]) for i in range(len(ds))])
    torch.testing.assert_close(d, one, atol=1e-6, rtol=0)
    assert y.tolist() == ds.targets


def test_multiscale_is_the_normalised_mean_over_scales():
    net = _net()
    x = torch.rand(3, 3, 20, 14)
    with torch.no_grad():
        d = describe(net, x, (1.0, 0.5))
        half = net(F.interpolate(x, size=(10, 7), mode="bilinear", align_corners=False, antialias=True))
        want = F.normalize(net(x) + half, dim=1)
        torch.testing.assert_close(d, want)
        assert torch.equal(describe(net, x, (1.0,)), net(x))


def test_train_eval_extract_on_mixed_shapes_end_to_end(mixed, tmp_path, capsys):
    train, test = mixed
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(train), "--eval-dataset", str(test), "--image-size", "16", "--batch-size", "12",
                 "--epochs", "2", "--dim", "4", "--threads", "1", "--scales", "1,0.707", "--quiet", "--out", str(run)]) == 0
    hist = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if "train_loss" in x]
    assert len(hist) == 2 and all(0 < h["eval_map"] <= 1 for h in hist)
    assert all(0 < h["eval_map@r"] <= 1 and h["eval_recall@10"] >= h["eval_recall@1"] == h["eval_p@1"] for h in hist)
    assert main(["eval", str(run / "last.pt"), "--scales", "1,0.707,0.5", "--image-size", "20", "--json", str(tmp_path / "e.json")]) == 0
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["dataset"] == str(test) and report["images"] == 18 and report["queries"] == 18
    assert report["scales"] == [1, 0.707, 0.5] and report["image_size"] == "longest side 20"
    assert list(report["metrics"]) == ["map", "map@r", "r-precision", "p@1", "p@10", "recall@1", "recall@10"]
    out = capsys.readouterr().out
    assert f"evaluated {test}: 18 images, 18 queries, image size longest side 20, scales 1,0.707,0.5" in out
    assert f"| MAP@R | {report['metrics']['map@r']:.4f} |" in out and "| Recall@10 |" in out
    assert main(["extract", str(run / "last.pt"), str(tmp_path / "desc"), "--split", "train", "--scales", "1,0.5"]) == 0
    d = np.load(tmp_path / "desc.npy")
    assert d.shape == (18, 4) and np.allclose(np.linalg.norm(d, axis=1), 1, atol=1e-5)
    rows = (tmp_path / "desc.index.tsv").read_text().splitlines()
    assert rows[0] == "row\tpath\tclass" and rows[1].split("\t")[1].endswith("class0/0.png") and rows[1].split("\t")[2] == "class0"
    assert "to " + str(tmp_path / "desc.npy") in capsys.readouterr().out


def test_eval_dataset_alone_is_what_gets_evaluated(mixed, tmp_path, capsys):
    train, test = mixed
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(train), "--eval-dataset", str(test), "--image-size", "16", "--batch-size", "12",
                 "--epochs", "1", "--dim", "4", "--threads", "1", "--quiet", "--out", str(run)]) == 0
    other = write_class_folders(tmp_path / "other", classes=2, per_class=5, sizes=SHAPES, seed=5)
    capsys.readouterr()
    assert main(["eval", str(run / "best.pt"), "--eval-dataset", str(other)]) == 0
    assert f"evaluated {other}: 10 images" in capsys.readouterr().out
    assert main(["extract", str(run / "best.pt"), str(tmp_path / "o.npy"), "--eval-dataset", str(other)]) == 0
    assert np.load(tmp_path / "o.npy").shape == (10, 4)


def test_evaluation_and_extraction_are_deterministic(mixed, tmp_path):
    train, test = mixed
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(train), "--eval-dataset", str(test), "--image-size", "16", "--batch-size", "12",
                 "--epochs", "1", "--dim", "4", "--threads", "1", "--quiet", "--out", str(run)]) == 0
    reports = []
    for i in range(2):
        assert main(["eval", str(run / "last.pt"), "--whitening", "--json", str(tmp_path / f"w{i}.json")]) == 0
        reports.append(json.loads((tmp_path / f"w{i}.json").read_text())["metrics"])
        assert main(["extract", str(run / "last.pt"), str(tmp_path / f"t{i}.npy"), "--split", "train"]) == 0
    assert reports[0] == reports[1]
    assert np.array_equal(np.load(tmp_path / "t0.npy"), np.load(tmp_path / "t1.npy"))


def test_digits_checkpoint_on_rgb_images_reads_them_as_grey_and_says_so(mixed, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--dim", "4", "--batch-size", "64", "--steps-per-epoch", "1", "--epochs", "1", "--threads", "1",
                 "--quiet", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["eval", str(run / "last.pt"), "--dataset", str(mixed[0]), "--eval-dataset", str(mixed[1])]) == 0
    out = capsys.readouterr().out
    assert (f"notice: the network takes grey images (it was trained on grey ones): the images of {mixed[1]} and "
            f"{mixed[0]} are read as grey") in out
    assert f"evaluated {mixed[1]}:" in out


def test_bad_scales_are_refused(capsys):
    assert main(["train", "--scales", "0,-1", "--out", "unused"]) == 2
    assert "--scales must be in (0, 4], got 0.0, -1.0" in capsys.readouterr().err
    assert main(["train", "--scales", "1,a", "--out", "unused"]) == 2
    assert "--scales must be comma-separated positive numbers" in capsys.readouterr().err
