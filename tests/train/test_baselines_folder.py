"""No baseline collapses on an image folder either: the bundled digits written as RGB
PNGs of mixed sizes in class folders, trained through `apl train` with random crops, each loss
with its defaults (4 epochs of 2 steps), then the unseen classes ranked. (With semi-hard or hard
triplet mining the triplet loss stalled here at the untrained network's mAP: the default mines
every margin-violating triplet.)"""
import json

import pytest

from apl.cli import main
from apl.train.losses import LOSSES
from experiments.digit_folders import write_digit_folders

pytest.importorskip("pytorch_metric_learning")

PER_CLASS = 40


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("digit_folders")
    write_digit_folders(root / "train", range(5), PER_CLASS)
    write_digit_folders(root / "eval", range(5, 10), PER_CLASS, seed=1)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("loss", LOSSES)
def test_no_loss_collapses_on_an_image_folder(loss, folders, tmp_path):
    out = tmp_path / loss
    args = ["train", "--dataset", str(folders / "train"), "--eval-dataset", str(folders / "eval"), "--loss", loss,
            "--image-size", "32", "--epochs", "4", "--batch-size", "100", "--dim", "64", "--threads", "1",
            "--device", "cpu", "--workers", "0", "--quiet", "--out", str(out)]
    if loss == "smoothap":
        args += ["--images-per-class", "20"]
    assert main(args) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if "eval_map" in line]
    # Collapsed descriptors tie every score: the exact mAP is then the fraction of positives.
    chance = (PER_CLASS - 1) / (5 * PER_CLASS - 1)
    maps, losses = [r["eval_map"] for r in rows], [r["train_loss"] for r in rows]
    assert min(maps) > chance + 0.04 and maps[-1] > chance + 0.07, f"{loss}: held-out mAP per epoch {maps}, chance {chance:.3f}"
    assert losses[-1] < losses[0], f"{loss}: training loss per epoch {losses} does not decrease"
