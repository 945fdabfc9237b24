"""The CLI's user errors are one line without a traceback, and its help shows every default."""

import pytest
import torch

from apl.cli import build_parser, main


def test_every_option_has_help_and_a_shown_default():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in ("train", "eval", "extract", "show", "demo", "check-images"):
        p = sub.choices[name]
        for action in p._actions:
            assert action.help, f"apl {name} {action.option_strings} has no help"
        text = " ".join(p.format_help().split())
        if name == "train":
            assert "(default: 256)" in text and "(default: runs/train)" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_device_without_cuda(tmp_path, capsys):
    assert main(["train", "--device", "cuda", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--device cuda: this torch has no usable CUDA" in err and "use --device cpu" in err


def test_resnet_without_torchvision(tmp_path, capsys):
    try:
        import torchvision  # noqa: F401

        pytest.skip("torchvision is installed")
    except Exception:
        pass
    from images import write_class_folders

    root = write_class_folders(tmp_path / "img")
    assert main(["train", "--backbone", "resnet18", "--dataset", str(root), "--eval-dataset", str(root), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "needs torchvision" in err and "Traceback" not in err and not (tmp_path / "r").exists()
    # grey digits are accepted by a ResNet (repeated over its three channels): torchvision is what is missing
    assert main(["train", "--backbone", "resnet18", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "needs torchvision" in err and "channel" not in err
