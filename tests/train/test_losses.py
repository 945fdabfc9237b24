"""The trainer's losses by name (apl.train.losses): apl's losses (AP, tie-aware AP, Smooth-AP,
Recall@k) and pytorch-metric-learning baselines, their options (one meaning each), the command
line's aliases, refusals (in build_loss as on the command line), and a short training of each that
must learn."""
import dataclasses
import json

import pytest
import torch

from apl.cli import main
from apl.data import split_digits
from apl.train.baselines import PMLLoss
from apl.train.losses import LOSSES, SPECS, build_loss
from apl.evaluation import extract
from apl.train import TrainConfig, Trainer, load_model
from apl.train.model import build_model
from apl.evaluation import mean_average_precision

pytest.importorskip("pytorch_metric_learning")


def test_every_loss_builds_and_gives_finite_gradients():
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(60, 8, generator=g), dim=1)
    y = torch.arange(60) % 6
    assert set(LOSSES) == {"ap", "tie-aware", "smoothap", "recall-at-k", "triplet", "triplet-hard", "triplet-semihard",
                           "contrastive", "multi-similarity", "fastap"}
    for name in LOSSES:
        e = x[torch.randperm(60, generator=g)].clone().requires_grad_()
        loss = build_loss(name)(e, y)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(e.grad).all(), name
        assert e.grad.abs().sum() > 0, name


def test_baselines_are_pml_with_the_documented_defaults():
    from pytorch_metric_learning import losses, miners

    t = build_loss("triplet")
    assert isinstance(t, PMLLoss) and isinstance(t.loss, losses.TripletMarginLoss)
    assert isinstance(t.miner, miners.TripletMarginMiner) and t.miner.type_of_triplets == "all"
    assert t.loss.margin == SPECS["triplet"].defaults["triplet_margin"]
    hard = build_loss("triplet-hard")
    assert isinstance(hard.miner, miners.BatchHardMiner) and hard.loss.margin == SPECS["triplet-hard"].defaults["triplet_margin"]
    semi = build_loss("triplet-semihard", triplet_margin=0.1)
    assert isinstance(semi.miner, miners.BatchEasyHardMiner) and semi.loss.margin == 0.1
    assert (semi.miner.pos_strategy, semi.miner.neg_strategy) == ("easy", "semihard")
    assert build_loss("contrastive", contrastive_margin=0.3).loss.neg_margin == 0.3
    assert build_loss("multi-similarity", ms_base=0.7).loss.base == 0.7
    assert isinstance(build_loss("multi-similarity").miner, miners.MultiSimilarityMiner)
    assert build_loss("fastap").loss.num_bins == SPECS["fastap"].defaults["num_bins"]
    assert build_loss("ap").num_bins == 20


def test_apl_losses_by_name_one_spelling_each():
    import apl

    smooth = build_loss("smoothap", rank_temperature=0.05)
    assert isinstance(smooth, apl.SmoothAPLoss) and smooth.temperature == 0.05
    recall = build_loss("recall-at-k", recall_k=(1, 4), k_temperature=0.5)
    assert isinstance(recall, apl.RecallAtKLoss) and recall.k == (1, 4) and recall.k_temperature == (0.5, 0.5)
    assert build_loss("tie-aware").variant == "tie_aware"
    # the API takes each name in one spelling; the command line also takes the others
    with pytest.raises(ValueError, match=r"unknown loss 'tie_aware' \(did you mean 'tie-aware'\?\)"):
        build_loss("tie_aware")
    with pytest.raises(ValueError, match=r"unknown loss 'smooth_ap' \(did you mean 'smoothap'\?\)"):
        TrainConfig(loss="smooth_ap").validate()
    with pytest.raises(TypeError, match=r"build_loss: unknown options \['margin'\]"):
        build_loss("triplet", margin=0.2)
    x = torch.nn.functional.normalize(torch.randn(10, 4), dim=1)
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])  # unequal class counts: apl's Smooth-AP takes any layout
    assert torch.isfinite(smooth(x, labels))


@pytest.mark.parametrize("name,options,message", [
    ("ap", dict(triplet_margin=0.1), r"loss 'ap' does not take --triplet-margin \(it takes: --bins, --class-balanced, --memory\)"),
    ("triplet", dict(num_bins=7), r"loss 'triplet' does not take --bins \(it takes: --triplet-margin\)"),
    ("smoothap", dict(num_bins=7), r"does not take --bins \(it takes: --rank-temperature, --class-balanced, --memory\)"),
    ("contrastive", dict(triplet_margin=0.5), r"loss 'contrastive' does not take --triplet-margin \(it takes: --contrastive-margin\)"),
    ("contrastive", dict(recall_k=(1, 2)), r"does not take --recall-k"),
])
def test_build_loss_refuses_options_as_the_cli_does(name, options, message):
    with pytest.raises(ValueError, match=message):
        build_loss(name, **options)


@pytest.mark.parametrize("changes,message", [
    (dict(loss="ap", triplet_margin=0.2), r"loss 'ap' does not take --triplet-margin \(it takes: --bins, --class-balanced, --memory\)"),
    (dict(loss="triplet", num_bins=30), r"loss 'triplet' does not take --bins \(it takes: --triplet-margin\)"),
    (dict(loss="triplet", class_balanced=True), r"does not take --class-balanced"),
    (dict(loss="fastap", rank_temperature=0.1), r"loss 'fastap' does not take --rank-temperature \(it takes: --bins\)"),
    (dict(loss="multi-similarity", num_bins=10), r"loss 'multi-similarity' does not take --bins \(it takes: --ms-base\)"),
    (dict(loss="multi-similarity", ms_base=-1.0), r"--ms-base must be a positive number"),
    (dict(loss="contrastive", contrastive_margin=0.0), r"--contrastive-margin must be a positive number"),
    (dict(loss="smoothap", num_bins=10), r"loss 'smoothap' does not take --bins"),
    (dict(loss="recall-at-k", recall_k="1,x"), r"--recall-k must be comma-separated integers"),
    (dict(loss="ap", recall_k="1,2"), r"loss 'ap' does not take --recall-k"),
    (dict(memory=-1), r"--memory must be an integer >= 0"),
    (dict(loss="triplet", memory=64), r"loss 'triplet' does not take --memory"),
    (dict(loss="hinge"), r"unknown loss 'hinge'; choose from ap, tie-aware, smoothap, recall-at-k, triplet"),
])
def test_config_refuses_options_a_loss_does_not_take(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes).validate()


def test_cli_messages(tmp_path, capsys):
    assert main(["train", "--loss", "ap", "--triplet-margin", "0.1", "--out", str(tmp_path / "a")]) == 2
    assert "loss 'ap' does not take --triplet-margin" in capsys.readouterr().err
    assert main(["train", "--loss", "triplet", "--bins", "20", "--out", str(tmp_path / "b")]) == 2
    assert "loss 'triplet' does not take --bins" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--loss", "hinge"])
    err = capsys.readouterr().err.replace("'", "")
    assert "unknown loss hinge; choose from ap, tie-aware, smoothap, recall-at-k, triplet, triplet-hard, triplet-semihard, contrastive, multi-similarity, fastap" in err
    assert main(["train", "--memory", "-3", "--out", str(tmp_path / "c")]) == 2
    assert "--memory must be an integer >= 0" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()  # nothing written on a refused run


@pytest.mark.parametrize("loss,options", [("smoothap", ["--rank-temperature", "0.05"]),
                                          ("recall-at-k", ["--recall-k", "1,4", "--k-temperature", "0.5"]),
                                          ("tie_aware", [])])
def test_cli_trains_apl_losses_with_their_options(tmp_path, loss, options):
    out = tmp_path / "s"
    assert main(["train", "--loss", loss, *options, "--sampler", "spread", "--batch-size", "50", "--epochs", "1",
                 "--steps-per-epoch", "1", "--dim", "8", "--threads", "1", "--device", "cpu", "--workers", "0",
                 "--quiet", "--out", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["loss"]["loss"] == loss.replace("_", "-") and cfg["data"]["sampler"] == "spread"  # aliases stored by name


# The quick setting of the digits: the 5 training digits, P x K batches, 4 epochs on one thread.
DIGITS = TrainConfig(dataset="digits", backbone="small_cnn", dim=32, batch_size=250, sampler="pk", images_per_class=50,
                     epochs=4, lr=1e-3, seed=0, threads=1, device="cpu")


def _chance_map(labels: torch.Tensor) -> float:
    """Expected AP of a random ranking: the fraction of positives among the other items."""
    counts = torch.bincount(labels)[labels].double()
    return float(((counts - 1) / (len(labels) - 1)).mean())


@pytest.mark.slow
@pytest.mark.parametrize("loss", LOSSES)
def test_each_loss_learns_on_the_digits(loss, tmp_path):
    """A short training (P x K batches of the 5 training digits, 4 epochs): the mAP of the training
    classes (their images without augmentation) rises clearly above the untrained network's, and the
    held-out mAP stays far above chance: no loss collapses with its defaults."""
    cfg = dataclasses.replace(DIGITS, loss=loss)
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
    cfg = dataclasses.replace(DIGITS, epochs=2, memory=300, steps_per_epoch=2, batch_size=64, images_per_class=8)
    full = Trainer(cfg, tmp_path / "full", log=lambda m: None, progress=False).run()
    Trainer(cfg, tmp_path / "cut", log=lambda m: None, progress=False).run(stop_after=1)
    resumed = Trainer(cfg, tmp_path / "cut", log=lambda m: None, progress=False).run(resume=True)
    assert [r["train_loss"] for r in resumed] == [r["train_loss"] for r in full]
    ck = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    assert ck["memory"]["count"].item() == 4 * 64
