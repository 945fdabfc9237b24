"""The training losses (issue 9, item 1): apl's AP losses and pytorch-metric-learning baselines by
name, their options and refusals, and a short training of each that must learn."""
import dataclasses
import json

import pytest
import torch

from apl.cli import main
from apl.data import split_digits
from apl.losses import LOSSES, SPECS, PMLLoss, build_loss
from apl.train import TrainConfig, Trainer, extract, load_model
from apl.train.checkpoint import build_model
from apl.evaluation import mean_average_precision

pytest.importorskip("pytorch_metric_learning")


def test_every_loss_builds_and_gives_finite_gradients():
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(60, 8, generator=g), dim=1)
    y = torch.arange(60) % 6
    assert set(LOSSES) == {"ap", "tie-aware", "triplet", "contrastive", "multi-similarity", "fastap", "smoothap"}
    for name in LOSSES:
        e = x[torch.randperm(60, generator=g)].clone().requires_grad_()  # shuffled: smoothap sorts by class itself
        loss = build_loss(name)(e, y)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(e.grad).all(), name
        assert e.grad.abs().sum() > 0, name


def test_baselines_are_pml_with_the_documented_defaults():
    from pytorch_metric_learning import losses, miners

    t = build_loss("triplet")
    assert isinstance(t, PMLLoss) and isinstance(t.loss, losses.TripletMarginLoss)
    assert isinstance(t.miner, miners.TripletMarginMiner) and t.miner.type_of_triplets == "all"
    assert t.loss.margin == SPECS["triplet"].defaults["margin"]
    assert build_loss("contrastive", margin=0.3).loss.neg_margin == 0.3
    assert isinstance(build_loss("multi-similarity").miner, miners.MultiSimilarityMiner)
    assert build_loss("fastap").loss.num_bins == SPECS["fastap"].defaults["num_bins"]
    assert build_loss("smoothap", temperature=0.05).loss.temperature == 0.05
    assert build_loss("ap").num_bins == 20


def test_smoothap_needs_equal_class_counts():
    x = torch.nn.functional.normalize(torch.randn(10, 4), dim=1)
    with pytest.raises(ValueError, match=r"needs the same number of images of every class.*--sampler pk"):
        build_loss("smoothap")(x, torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2, 2]))


@pytest.mark.parametrize("changes,message", [
    (dict(loss="ap", margin=0.2), r"loss 'ap' does not take --margin \(it takes: --bins, --class-balanced\)"),
    (dict(loss="triplet", num_bins=30), r"loss 'triplet' does not take --bins \(it takes: --margin\)"),
    (dict(loss="triplet", class_balanced=True), r"does not take --class-balanced"),
    (dict(loss="fastap", temperature=0.1), r"loss 'fastap' does not take --temperature \(it takes: --bins\)"),
    (dict(loss="multi-similarity", margin=0.1), r"does not take --margin \(it takes: none of"),
    (dict(loss="smoothap", sampler="spread"), r"--loss smoothap needs the same number of images of every class in a batch: use --sampler pk"),
    (dict(loss="smoothap", sampler="pk", batch_size=100, images_per_class=30), r"--batch-size \(100\) must be a multiple of --images-per-class \(30\)"),
    (dict(memory=-1), r"--memory must be an integer >= 0"),
    (dict(loss="triplet", memory=64), r"--memory works with the AP losses"),
    (dict(loss="hinge"), r"unknown loss 'hinge'; choose from ap, tie-aware, triplet"),
])
def test_config_refuses_options_a_loss_does_not_take(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes).validate()


def test_cli_messages(tmp_path, capsys):
    assert main(["train", "--loss", "ap", "--margin", "0.1", "--out", str(tmp_path / "a")]) == 2
    assert "loss 'ap' does not take --margin" in capsys.readouterr().err
    assert main(["train", "--loss", "triplet", "--bins", "20", "--out", str(tmp_path / "b")]) == 2
    assert "loss 'triplet' does not take --bins" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--loss", "hinge"])
    err = capsys.readouterr().err.replace("'", "")
    assert "invalid choice: hinge (choose from ap, tie-aware, triplet, contrastive, multi-similarity, fastap, smoothap)" in err
    assert main(["train", "--memory", "-3", "--out", str(tmp_path / "c")]) == 2
    assert "--memory must be an integer >= 0" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()  # nothing written on a refused run


def test_cli_smoothap_picks_the_pk_sampler(tmp_path):
    out = tmp_path / "s"
    assert main(["train", "--loss", "smoothap", "--batch-size", "50", "--images-per-class", "10", "--epochs", "1",
                 "--steps-per-epoch", "1", "--dim", "8", "--threads", "1", "--device", "cpu", "--workers", "0",
                 "--quiet", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["sampler"] == "pk"


def _chance_map(labels: torch.Tensor) -> float:
    """Expected AP of a random ranking: the fraction of positives among the other items."""
    counts = torch.bincount(labels)[labels].double()
    return float(((counts - 1) / (len(labels) - 1)).mean())


@pytest.mark.slow
@pytest.mark.parametrize("loss", LOSSES)
def test_each_loss_learns_on_the_digits(loss, tmp_path):
    """A short training (the demo's P x K setting, 4 epochs): the mAP of the training classes
    (their images without augmentation) rises clearly above the untrained network's, and the
    held-out mAP stays far above chance: no baseline collapses with its defaults."""
    from apl.demo import comparison_config

    cfg = dataclasses.replace(comparison_config(4, seed=0), loss=loss, threads=1, device="cpu")
    torch.manual_seed(cfg.seed)
    untrained = build_model(cfg, 1).eval()
    seen, held_out = split_digits(cfg.train_classes)
    before = mean_average_precision(*extract(untrained, seen))
    history = Trainer(cfg, tmp_path / loss, log=lambda m: None, progress=False).run()
    model, _ = load_model(tmp_path / loss / "last.pt")
    after = mean_average_precision(*extract(model, seen))
    assert after > before + 0.1, f"{loss}: training-class mAP {before:.3f} untrained -> {after:.3f} trained"
    chance = _chance_map(torch.tensor(held_out.targets))
    assert history[-1]["eval_map"] > chance + 0.15, f"{loss}: held-out mAP {history[-1]['eval_map']:.3f}, chance {chance:.3f}"


@pytest.mark.slow
def test_trainer_with_memory_resumes_its_memory(tmp_path):
    from apl.demo import base_config

    cfg = dataclasses.replace(base_config(2, seed=0), memory=300, steps_per_epoch=2, batch_size=64, threads=1, device="cpu")
    full = Trainer(cfg, tmp_path / "full", log=lambda m: None, progress=False).run()
    Trainer(cfg, tmp_path / "cut", log=lambda m: None, progress=False).run(stop_after=1)
    resumed = Trainer(cfg, tmp_path / "cut", log=lambda m: None, progress=False).run(resume=True)
    assert [r["train_loss"] for r in resumed] == [r["train_loss"] for r in full]
    ck = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    assert ck["memory"]["count"].item() == 4 * 64
