"""Mixed precision (bf16 on the CPU; fp16's gradient scaler saved with the checkpoint) and
`--init` from weights on disk."""
import json

import pytest
import torch

from apl.cli import main
from apl.nn import RetrievalNet
from apl.train import TrainConfig, Trainer, load_init_weights

TINY = dict(dataset="digits", dim=8, batch_size=64, epochs=2, steps_per_epoch=2, threads=1)


@pytest.mark.parametrize("chunk", [None, 16])
def test_bf16_trains_and_the_loss_runs_in_float32(tmp_path, monkeypatch, chunk):
    seen = []
    import apl.train.loop as loop

    real = loop.build_loss

    def spy(*a, **k):
        fn = real(*a, **k)
        return lambda d, y: (seen.append(d.dtype), fn(d, y))[1]

    monkeypatch.setattr(loop, "build_loss", spy)
    amp = Trainer(TrainConfig(amp="bf16", chunk_size=chunk, **TINY), tmp_path / "a", log=lambda m: None, progress=False).run()
    fp32 = Trainer(TrainConfig(chunk_size=chunk, **TINY), tmp_path / "b", log=lambda m: None, progress=False).run()
    assert set(seen) == {torch.float32}
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in amp)
    assert amp[0]["train_loss"] != fp32[0]["train_loss"]  # the forward did run in bf16
    assert abs(amp[0]["train_loss"] - fp32[0]["train_loss"]) < 0.05


def test_fp16_scaler_is_saved_and_restored(tmp_path):
    cfg = TrainConfig(amp="fp16", **TINY)
    Trainer(cfg, tmp_path / "full", log=lambda m: None, progress=False).run()
    Trainer(cfg, tmp_path / "cut", log=lambda m: None, progress=False).run(stop_after=1)
    Trainer(cfg, tmp_path / "cut", log=lambda m: None, progress=False).run(resume=True)
    a, b = (torch.load(tmp_path / d / "last.pt", weights_only=True) for d in ("full", "cut"))
    assert a["scaler"] is not None and a["scaler"] == b["scaler"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_bad_amp_is_refused(capsys):
    with pytest.raises(ValueError, match="--amp must be one of bf16, fp16, got 'fp8'"):
        TrainConfig(amp="fp8").validate()
    with pytest.raises(SystemExit):
        main(["train", "--amp", "fp8"])
    assert "argument --amp: invalid choice: 'fp8'" in capsys.readouterr().err


def _net(seed):
    torch.manual_seed(seed)
    return RetrievalNet("small_cnn", dim=8, in_channels=1)


def test_init_from_a_whole_model_or_a_backbone(tmp_path):
    src = _net(1)
    torch.save({"state_dict": {"module." + k: v for k, v in src.state_dict().items()}}, tmp_path / "full.pt")
    torch.save(src.backbone.state_dict(), tmp_path / "backbone.pt")
    for name, want in (("full.pt", "model"), ("backbone.pt", "backbone")):
        dst = _net(2)
        assert load_init_weights(dst, tmp_path / name) == want
        assert torch.equal(dst.backbone.features[0].weight, src.backbone.features[0].weight)


def test_init_maps_torchvision_resnet_keys():
    from apl.train.weights import _torchvision_to_features

    sd = {"conv1.weight": torch.zeros(1), "layer4.2.bn3.bias": torch.zeros(1), "fc.weight": torch.zeros(1)}
    assert set(_torchvision_to_features(sd)) == {"features.0.weight", "features.7.2.bn3.bias"}


def test_init_errors_list_mismatched_keys(tmp_path, capsys):
    torch.save({"encoder.weight": torch.zeros(3), "head.bias": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"--init .*other.pt: its keys match neither .*not in the .*encoder.weight"):
        load_init_weights(_net(0), tmp_path / "other.pt")
    run = tmp_path / "r"
    assert main(["train", "--dim", "8", "--init", str(tmp_path / "nope.pt"), "--out", str(run)]) == 2
    assert "--init: no such file" in capsys.readouterr().err and not run.exists()
    assert main(["train", "--dim", "8", "--init", str(tmp_path / "other.pt"), "--out", str(run)]) == 2
    assert "missing in the file" in capsys.readouterr().err and not run.exists()


def test_train_from_init_starts_from_those_weights(tmp_path):
    src = _net(5)
    torch.save(src.state_dict(), tmp_path / "w.pt")
    cfg = TrainConfig(init=str(tmp_path / "w.pt"), **{**TINY, "epochs": 1, "lr": 1e-12})
    Trainer(cfg, tmp_path / "r", log=lambda m: None, progress=False).run()
    got = torch.load(tmp_path / "r" / "last.pt", weights_only=True)["model"]
    torch.testing.assert_close(got["features.backbone.features.0.weight"], src.state_dict()["features.backbone.features.0.weight"])
    assert json.loads((tmp_path / "r" / "config.json").read_text())["init"] == str(tmp_path / "w.pt")
