"""Training data: per-sample augmentation seeds (independent of workers, ranks and interruptions),
up-front checks of both sets, corrupt images met in training, and `apl check-images`."""
import json
import warnings
from collections import Counter

import pytest
import torch

from apl.cli import main
from apl.data import ClassSpreadBatchSampler, ImageList, train_transform
from apl.train import TrainConfig, Trainer
from apl.train.data import SeededBatches, train_loader
from images import write_class_folders


def _batches(dataset, sampler, workers, rank=0, world=1, epoch=0):
    seeded = SeededBatches(sampler, seed=7, rank=rank, world_size=world)
    seeded.set_epoch(epoch)
    return [x for x, _ in train_loader(dataset, seeded, workers, 2, torch.device("cpu"))]


def test_crops_do_not_depend_on_workers_or_ranks(tmp_path):
    root = write_class_folders(tmp_path / "img", sizes=[(16, 20), (20, 14)])
    ds = ImageList.from_folders(root, transform=train_transform(12))
    sampler = ClassSpreadBatchSampler(ds.targets, 6, num_batches=3, seed=0)
    one = _batches(ds, sampler, 0)
    assert all(torch.equal(a, b) for a, b in zip(one, _batches(ds, sampler, 2)))
    halves = [_batches(ds, sampler, 0, rank=r, world=2) for r in (0, 1)]
    assert all(torch.equal(a, torch.cat([h0, h1])) for a, h0, h1 in zip(one, *halves))
    other_epoch = _batches(ds, sampler, 0, epoch=1)
    assert not all(torch.equal(a, b) for a, b in zip(one, other_epoch))


def test_same_final_weights_with_0_or_2_workers(tmp_path):
    root = write_class_folders(tmp_path / "img", per_class=4, sizes=[(14, 14), (12, 16)])
    cfg = TrainConfig(dataset=str(root), eval_dataset=str(root), image_size=12, batch_size=6, epochs=2, dim=4, threads=1)
    weights = []
    for w in (0, 2):
        Trainer(cfg, tmp_path / f"w{w}", log=lambda m: None, progress=False, workers=w).run()
        weights.append(torch.load(tmp_path / f"w{w}" / "last.pt", weights_only=True)["model"])
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_all_missing_files_of_both_sets_are_reported_before_training(tmp_path, capsys):
    root = write_class_folders(tmp_path / "img")
    (tmp_path / "train.txt").write_text("class0/0.png 0\nclass0/9.png 0\nclass1/0.png 1\n")
    (tmp_path / "eval.txt").write_text("class2/0.png 2\nclass2/8.png 2\nclass2/9.png 2\n")
    run = tmp_path / "r"
    code = main(["train", "--dataset", str(tmp_path / "train.txt"), "--root", str(root), "--eval-dataset",
                 str(tmp_path / "eval.txt"), "--eval-root", str(root), "--batch-size", "4", "--out", str(run)])
    err = capsys.readouterr().err
    assert code == 2 and "3 listed image files not found" in err
    assert "training set: " in err and "class0/9.png (" in err and "train.txt, line 2" in err
    assert "held-out set: " in err and "class2/8.png" in err and "class2/9.png" in err
    assert not run.exists()


def test_eval_root_is_separate_from_root(tmp_path):
    write_class_folders(tmp_path / "a")
    write_class_folders(tmp_path / "b", seed=3)
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "train.txt").write_text("".join(f"class{c}/{i}.png {c}\n" for c in range(3) for i in range(6)))
    (tmp_path / "lists" / "eval.txt").write_text("".join(f"class{c}/{i}.png {c}\n" for c in range(3) for i in range(3)))
    code = main(["train", "--dataset", str(tmp_path / "lists" / "train.txt"), "--root", str(tmp_path / "a"),
                 "--eval-dataset", str(tmp_path / "lists" / "eval.txt"), "--eval-root", str(tmp_path / "b"),
                 "--image-size", "12", "--batch-size", "6", "--epochs", "1", "--dim", "4", "--threads", "1", "--quiet",
                 "--out", str(tmp_path / "r")])
    assert code == 0
    assert json.loads((tmp_path / "r" / "config.json").read_text())["data"]["eval_root"] == str(tmp_path / "b")


@pytest.mark.parametrize("workers", [0, 2])
def test_a_corrupt_image_stops_training_with_its_path(tmp_path, capsys, workers):
    root = write_class_folders(tmp_path / "img")
    (root / "class1" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    code = main(["train", "--dataset", str(root), "--eval-dataset", str(root), "--image-size", "12", "--batch-size", "18", "--sampler", "spread",
                 "--epochs", "1", "--threads", "1", "--workers", str(workers), "--quiet", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2
    assert "training stopped in epoch 1: corrupt or unreadable image: " in err and "class1/3.png" in err
    assert "apl check-images" in err and "--resume" in err and "Traceback" not in err


def test_check_images_lists_every_bad_file(tmp_path, capsys):
    root = write_class_folders(tmp_path / "img")
    (root / "class0" / "2.png").write_bytes(b"junk")
    (root / "class2" / "5.png").write_bytes(b"")
    assert main(["check-images", str(root), "--workers", "2"]) == 1
    out = capsys.readouterr()
    bad = out.out.strip().splitlines()
    assert len(bad) == 2 and "class0/2.png" in bad[0] and "class2/5.png" in bad[1]
    assert "18 images checked, 2 bad" in out.err
    (root / "class0" / "2.png").unlink()
    (root / "class2" / "5.png").unlink()
    assert main(["check-images", str(root)]) == 0


def test_batch_larger_than_the_training_set_is_capped_with_one_line(tmp_path):
    """No raw Python warning and no batch of repeated images (trivial positives): one plain line,
    and batches of the training set's size."""
    root = write_class_folders(tmp_path / "img", per_class=2)
    cfg = TrainConfig(dataset=str(root), eval_dataset=str(root), image_size=12, batch_size=64, epochs=1, dim=4, threads=1)
    lines = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        history = Trainer(cfg, tmp_path / "r", log=lines.append, progress=False).run()
    n = len(ImageList.from_folders(root))
    assert f"--batch-size 64 is larger than the training set ({n} images in classes of two or more): batches of {n}" in lines
    assert history[0]["images_per_s"] > 0
    # said once, at the start: the classes are short of K = 8
    assert sum("3 of them have fewer than K = 8 images (2-2)" in ln for ln in lines) == 1


def test_a_one_image_class_is_never_drawn_and_said_so(tmp_path):
    """A class of one image cannot form a positive pair: P x K leaves it out (and the batch cap counts
    only the images it can draw); the run says so once."""
    root = write_class_folders(tmp_path / "img", classes=3, per_class=4)
    for f in sorted((root / "class2").glob("*.png"))[1:]:
        f.unlink()
    cfg = TrainConfig(dataset=str(root), eval_dataset=str(root), image_size=12, batch_size=12, images_per_class=4,
                      epochs=1, dim=4, threads=1)
    lines = []
    Trainer(cfg, tmp_path / "r", log=lines.append, progress=False).run()
    assert "P x K batches: 2 classes with two or more images; 1 class with a single image is never drawn (no positive pair)" in lines
    assert "--batch-size 12 is larger than the training set (8 images in classes of two or more): batches of 8" in lines


def test_default_sampler_gives_every_query_positives():
    """P x K by default: B // K classes (at least 2, at most all of them), the batch split evenly, so
    that every query has positives; with fewer classes than B // K each class gets more images."""
    from apl.train.data import build_sampler

    labels = [c for c in range(5) for _ in range(60)]
    cfg = TrainConfig(batch_size=256)
    assert cfg.sampler == "pk"
    batch = next(iter(build_sampler(cfg, labels)))
    counts = sorted(Counter(labels[i] for i in batch).values())
    assert len(batch) == 256 and counts == [51, 51, 51, 51, 52]
    many = [c for c in range(100) for _ in range(12)]
    batch = next(iter(build_sampler(TrainConfig(batch_size=64, images_per_class=8), many)))
    assert sorted(Counter(many[i] for i in batch).values()) == [8] * 8
    small = next(iter(build_sampler(TrainConfig(batch_size=6, images_per_class=8), many)))
    assert sorted(Counter(many[i] for i in small).values()) == [3, 3]  # two classes at least


def test_training_starts_with_a_dataset_summary(tmp_path):
    root = write_class_folders(tmp_path / "img")
    (root / "class1" / "notes.txt").write_text("not an image")
    lines = []
    cfg = TrainConfig(dataset=str(root), eval_dataset=str(root), image_size=12, batch_size=12, epochs=1, dim=4, threads=1)
    Trainer(cfg, tmp_path / "r", log=lines.append, progress=False).run()
    assert any(ln.startswith("training set: ") and "images" in ln and "skipped" in ln for ln in lines)
    assert any(ln.startswith("held-out set: ") for ln in lines)
    assert any(ln.startswith("warning: ") and "training set" in ln for ln in lines)  # the same files in both


def test_check_images_up_front_lists_every_bad_file(tmp_path, capsys):
    root = write_class_folders(tmp_path / "img")
    (root / "class1" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "class0" / "1.png").write_bytes(b"garbage")
    code = main(["train", "--dataset", str(root), "--eval-dataset", str(root), "--image-size", "12", "--epochs", "1",
                 "--threads", "1", "--workers", "0", "--check-images", "--quiet", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "--check-images: 4 bad images" in err  # two files, in both sets
    assert "class1/3.png" in err and "class0/1.png" in err and not (tmp_path / "r").exists()
