"""`--init`: starting weights from a file on disk (a whole model, a backbone, torchvision ResNet
keys), and the messages for files that do not fit."""
import json

import pytest
import torch

from apl.cli import main
from apl.nn import RetrievalNet
from apl.train import TrainConfig, Trainer, load_init_weights

TINY = dict(dataset="digits", dim=8, batch_size=64, epochs=2, steps_per_epoch=2, threads=1)


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
    from apl.train.weights import _torchvision_name

    names = {k: _torchvision_name(k) for k in ("conv1.weight", "layer4.2.bn3.bias", "fc.weight")}
    assert names == {"conv1.weight": "features.0.weight", "layer4.2.bn3.bias": "features.7.2.bn3.bias",
                     "fc.weight": None}


def test_init_errors_name_the_files_own_keys(tmp_path):
    # torchvision-style keys that do not fit: the message lists them as the file spells them,
    # not as the internal renaming ("features.4....") would.
    sd = {"conv1.weight": torch.zeros(3), "layer1.0.conv9.weight": torch.zeros(2)}
    torch.save(sd, tmp_path / "tv.pt")
    with pytest.raises(ValueError) as err:
        load_init_weights(_net(0), tmp_path / "tv.pt")
    assert "layer1.0.conv9.weight" in str(err.value) and "features.4.0.conv9" not in str(err.value)


def test_init_shape_mismatch_is_called_so(tmp_path):
    torch.save(RetrievalNet("small_cnn", dim=16, in_channels=1).state_dict(), tmp_path / "dim16.pt")
    with pytest.raises(ValueError, match=r"--init .*dim16.pt: its keys match the model, but \d+ tensor shape\(s\) "
                                         r"differ: .*file \(16, .*Check --backbone and --dim"):
        load_init_weights(_net(0), tmp_path / "dim16.pt")


def test_init_refuses_pickled_objects_without_advising_to_run_them(tmp_path):
    torch.save({"model": _net(0)}, tmp_path / "whole.pt")  # a pickled module, not a state dict
    with pytest.raises(ValueError) as err:
        load_init_weights(_net(0), tmp_path / "whole.pt")
    msg = str(err.value)
    assert "holds Python objects" in msg and "state_dict()" in msg and "weights_only=False" not in msg


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
    assert json.loads((tmp_path / "r" / "config.json").read_text())["model"]["init"] == str(tmp_path / "w.pt")


def test_pca_start_reads_image_folders_of_mixed_shapes(tmp_path):
    """`--whitening-init pca` describes training images at their own shapes (they cannot be stacked)
    and starts the head from them: the run's first held-out descriptors differ from a plain start."""
    from images import write_class_folders

    data = write_class_folders(tmp_path / "img", classes=3, per_class=6, sizes=((12, 12), (16, 10)))
    common = dict(dataset=str(data), eval_dataset=str(data), image_size=16, dim=8, batch_size=9, epochs=1,
                  steps_per_epoch=1, threads=1, lr=1e-12)
    pca = Trainer(TrainConfig(whitening_init="pca", **common), tmp_path / "pca", log=lambda m: None, progress=False).run()
    plain = Trainer(TrainConfig(**common), tmp_path / "plain", log=lambda m: None, progress=False).run()
    assert pca[-1]["eval_map"] != plain[-1]["eval_map"]
    head = torch.load(tmp_path / "pca" / "last.pt", weights_only=True)["model"]
    assert torch.isfinite(head["head.whiten.weight"]).all()


@pytest.mark.parametrize("make, reason", [
    (lambda p: p.write_text("hello world\n"), "not a weights file written by torch.save: it is a text file (it starts with 'hello world')"),
    (lambda p: p.write_bytes(b""), "not a weights file written by torch.save: the file is empty"),
    (lambda p: p.write_bytes(bytes([0xff, 0xd8, 0xff, 0xe0, 1, 2, 3, 4])), "it is neither a zip archive nor a pickle (it starts with bytes ff d8 ff e0"),
    (lambda p: p.mkdir(), "a folder, not a weights file"),
])
def test_init_says_what_the_file_really_is(tmp_path, make, reason):
    """A text file is not "pickled objects", a folder is not "no such file"."""
    path = tmp_path / "weights.pt"
    make(path)
    with pytest.raises((ValueError, IsADirectoryError)) as err:
        load_init_weights(_net(0), path)
    assert reason in str(err.value) and "Python objects" not in str(err.value) and "no such file" not in str(err.value)
