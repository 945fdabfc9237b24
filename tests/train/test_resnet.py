"""The ResNet backbones through `apl train` and `apl eval`, as a user with torchvision runs them:
from scratch on an RGB image folder with multistage chunks, multi-scale evaluation, grey built-in
images fed to a ResNet, and the learning rate a ResNet gets by default. Skipped without torchvision
(CI's torch 2.14 leg has it)."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from apl.cli import main
from apl.train import TrainConfig, Trainer, load_model
from apl.train.config import DEFAULT_LR

from images import write_class_folders

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torchvision") is None,
                                reason="torchvision is not installed (the ResNet backbones need it)")


def test_resnet18_trains_with_multistage_and_evaluates_multiscale(tmp_path, capsys):
    train = write_class_folders(tmp_path / "train", classes=4, per_class=6, sizes=((40, 48), (36, 36)))
    held = write_class_folders(tmp_path / "held", classes=3, per_class=4, sizes=((44, 40),), seed=1)
    out = tmp_path / "run"
    assert main(["train", "--dataset", str(train), "--eval-dataset", str(held), "--backbone", "resnet18", "--dim", "16",
                 "--image-size", "32", "--batch-size", "12", "--images-per-class", "3", "--chunk-size", "5",
                 "--epochs", "2", "--steps-per-epoch", "2", "--threads", "2", "--workers", "0", "--quiet",
                 "--out", str(out)]) == 0
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert sum("step" in l for l in lines) == 4
    assert all(torch.isfinite(torch.tensor(l["loss"])) for l in lines if "loss" in l)
    model, cfg = load_model(out / "last.pt")
    assert cfg.backbone == "resnet18" and cfg.lr == DEFAULT_LR["resnet"] and cfg.chunk_size == 5
    capsys.readouterr()
    report = tmp_path / "eval.json"
    assert main(["eval", str(out / "best.pt"), "--scales", "1,0.707", "--workers", "0", "--json", str(report)]) == 0
    text = capsys.readouterr().out
    assert f"evaluated {held}: 12 images, 12 queries" in text and "scales 1,0.707" in text
    metrics = json.loads(report.read_text())["metrics"]
    assert 0.0 <= metrics["map"] <= 1.0


def test_grey_builtin_images_go_to_a_resnet_as_three_channels(tmp_path):
    logs = []
    cfg = TrainConfig(dataset="digits", backbone="resnet18", dim=8, batch_size=20, images_per_class=4, epochs=1,
                      steps_per_epoch=1, threads=2)
    Trainer(cfg, tmp_path, log=logs.append, progress=False).run()
    assert any("notice: resnet18 takes RGB images: the grey images of 'digits' are repeated over its three input "
               "channels" in m for m in logs), logs
    model, _ = load_model(tmp_path / "last.pt")
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 8)


def test_resnet_default_learning_rate():
    assert TrainConfig(backbone="resnet101").validate().lr == DEFAULT_LR["resnet"] < DEFAULT_LR["small"]
    assert TrainConfig(backbone="tiny_cnn").validate().lr == DEFAULT_LR["small"]
    assert TrainConfig(backbone="resnet50", lr=0.01).validate().lr == 0.01  # what the user asks for wins
