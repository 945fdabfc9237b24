"""No baseline collapses on an image folder either (issue 9): the bundled digits written as RGB
PNGs of mixed sizes in class folders, trained through `apl train` with random crops, each loss
with its defaults (4 epochs of 2 steps), then the unseen classes ranked. (With semi-hard or hard
triplet mining the triplet loss stalled here at the untrained network's mAP: the default mines
every margin-violating triplet.)"""
import json

import numpy as np
import pytest
from PIL import Image

from apl.cli import main
from apl.data import load_digits
from apl.losses import LOSSES

pytest.importorskip("pytorch_metric_learning")

PER_CLASS = 40


def _write_digit_folders(root, classes, seed=0):
    """root/<digit>/<i>.png: digits upsampled to 24-40 px, tinted, with noise (RGB, mixed shapes)."""
    images, labels = load_digits()
    rng = np.random.default_rng(seed)
    for c in classes:
        folder = root / f"digit{c}"
        folder.mkdir(parents=True)
        picks = (labels == c).nonzero().flatten()[:PER_CLASS]
        for i, k in enumerate(picks.tolist()):
            x = images[k, 0].numpy()
            x = (x - x.min()) / max(1e-6, float(x.max() - x.min()))
            size = (24 + 8 * (i % 3), 24 + 8 * ((i // 3) % 3))
            grey = np.asarray(Image.fromarray((x * 255).astype(np.uint8)).resize(size, Image.BILINEAR), dtype=np.float64)
            tint = rng.uniform(0.6, 1.0, 3)
            rgb = grey[..., None] * tint + rng.normal(0, 12, grey.shape + (3,))
            Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(folder / f"{i}.png")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("digit_folders")
    _write_digit_folders(root / "train", range(5))
    _write_digit_folders(root / "eval", range(5, 10), seed=1)
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
