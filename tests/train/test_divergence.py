"""A diverging run stops with one message that says where and what to try (never trains on NaN
weights): apl's losses refuse non-finite descriptors, and a NaN loss of any loss is caught."""
import math

import pytest
import torch

import apl
from apl.train import TrainConfig, Trainer
from apl.train.divergence import TrainingDiverged, checked_evaluation, checked_step

TINY = dict(dataset="digits", dim=8, batch_size=64, epochs=2, steps_per_epoch=2, threads=1)


def test_non_finite_descriptors_and_losses_are_divergence():
    x, y = torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2])
    x[2, 1] = float("nan")
    with pytest.raises(TrainingDiverged, match=r"training diverged at epoch 3, step 5: the descriptors are no longer "
                                               r"finite \(NaN or Inf\)\. X holds it\. This step's learning rate was 0\.5 "
                                               r"\(--lr with the cosine schedule\); start again with a lower --lr\."):
        checked_step(lambda a, b: apl.ap_loss(a, b), x, y, epoch=2, step=4, lr=0.5, on_disk="x holds it", schedule="cosine")
    with pytest.raises(TrainingDiverged, match=r"the loss is nan\. This step's learning rate was 0\.1; .*or with --amp bf16"):
        checked_step(lambda a, b: torch.tensor(float("nan")), x, y, epoch=0, step=0, lr=0.1, amp="fp16")
    with pytest.raises(ValueError, match="num_bins") as err:  # other errors pass through unchanged
        checked_step(lambda a, b: apl.ap_loss(a, b, num_bins=1), x.nan_to_num(), y, 0, 0, 0.1)
    assert not isinstance(err.value, TrainingDiverged)


def test_trainer_stops_on_a_nan_loss_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    import apl.train.loop as loop

    real, calls = loop.build_loss, []

    def nan_in_second_epoch(*a, **k):
        fn = real(*a, **k)

        def loss(d, y):
            calls.append(1)
            value = fn(d, y)
            return value * float("nan") if len(calls) > 2 else value
        return loss

    monkeypatch.setattr(loop, "build_loss", nan_in_second_epoch)
    with pytest.raises(TrainingDiverged) as err:
        Trainer(TrainConfig(**TINY), tmp_path / "r", log=lambda m: None, progress=False).run()
    # the rate of step 1 of epoch 2 (step 3 of 4 under the cosine schedule), not the base --lr 1e-3
    lr = 1e-3 * 0.5 * (1 + math.cos(math.pi * 2 / 4))
    assert str(err.value).startswith(f"training diverged at epoch 2, step 1: the loss is nan. {tmp_path / 'r' / 'last.pt'} "
                                     f"holds the run as it was after epoch 1. This step's learning rate was {lr:g} "
                                     "(--lr with the cosine schedule)")
    saved = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    assert saved["epoch"] == 1 and all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())


def test_divergence_in_the_first_epoch_says_no_checkpoint_exists(tmp_path, monkeypatch):
    import apl.train.loop as loop

    real = loop.build_loss
    monkeypatch.setattr(loop, "build_loss", lambda *a, **k: (lambda d, y: real(*a, **k)(d, y) * float("nan")))
    with pytest.raises(TrainingDiverged, match=r"the loss is nan\. No checkpoint was written \(it diverged in the "
                                               r"first epoch\)\. This step's learning rate was 0\.001 "):
        Trainer(TrainConfig(**TINY), tmp_path / "r", log=lambda m: None, progress=False).run()
    assert not (tmp_path / "r" / "last.pt").exists()


def test_held_out_descriptors_that_overflow_are_divergence(tmp_path, monkeypatch):
    """Training steps can stay finite while the network overflows on the held-out images: the run
    stops with the divergence message (the epoch, the rate of its last step, what is on disk), not
    with the evaluation's bare "embeddings contains NaN"."""
    import apl.train.loop as loop

    real, calls = loop.evaluate, []

    def overflow_in_second_epoch(model, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            with torch.no_grad():
                model.head.whiten.weight.fill_(float("inf"))
        return real(model, *a, **k)

    monkeypatch.setattr(loop, "evaluate", overflow_in_second_epoch)
    with pytest.raises(TrainingDiverged) as err:
        Trainer(TrainConfig(**TINY), tmp_path / "r", log=lambda m: None, progress=False).run()
    lr = 1e-3 * 0.5 * (1 + math.cos(math.pi * 3 / 4))  # the last step of epoch 2 (step 4 of 4, cosine)
    assert str(err.value) == (
        f"training diverged in epoch 2: evaluating it, the network's descriptors came out NaN or Inf. "
        f"{tmp_path / 'r' / 'last.pt'} holds this epoch's weights (--resume evaluates them first and stops here again); "
        f"{tmp_path / 'r' / 'best.pt'} the best epoch evaluated. The learning rate of epoch 2's last step was {lr:g} "
        "(--lr with the cosine schedule); start again with a lower --lr.")
    other = ValueError("embeddings must be a 2-D (N, D) array")  # other evaluation errors pass through unchanged
    with pytest.raises(ValueError, match="2-D") as caught:
        checked_evaluation(lambda: (_ for _ in ()).throw(other), epoch=0, lr=0.1)
    assert not isinstance(caught.value, TrainingDiverged)
