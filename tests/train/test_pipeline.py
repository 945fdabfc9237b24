"""The training pipeline end to end: the loss factory, Trainer, exact resume, the apl CLI."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import apl
from apl.cli import main
from apl.train.losses import build_loss
from apl.evaluation import precision_recall_curve
from apl.train import TrainConfig, Trainer, load_model

TINY = dict(dataset="digits", dim=8, batch_size=64, epochs=3, steps_per_epoch=2, threads=1)


def test_build_loss_names_and_errors():
    assert isinstance(build_loss("ap"), apl.APLoss)
    assert build_loss("tie-aware").variant == "tie_aware"
    with pytest.raises(ValueError, match=r"unknown loss 'hinge'"):
        build_loss("hinge")
    with pytest.raises(ValueError, match=r"--triplet-margin must be a positive number, got -1"):
        build_loss("triplet", triplet_margin=-1)


def test_trainer_writes_metrics_checkpoint_and_curves(tmp_path):
    hist = Trainer(TrainConfig(**TINY), tmp_path, log=lambda m: None, progress=False).run()
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert sum("step" in l for l in lines) == 6 and sum("eval_map" in l for l in lines) == 3
    assert all(np.isfinite(l.get("loss", 0)) for l in lines)
    assert (tmp_path / "curves.png").stat().st_size > 1000
    model, cfg = load_model(tmp_path / "last.pt")
    assert cfg.dim == 8 and model(torch.rand(2, 1, 8, 8)).shape == (2, 8)


@pytest.mark.parametrize("loss", ["ap", "triplet", "contrastive"])
def test_resume_after_interruption_gives_the_same_weights(tmp_path, loss):
    cfg = TrainConfig(loss=loss, **TINY)
    Trainer(cfg, tmp_path / "full", log=lambda m: None, progress=False).run()
    Trainer(cfg, tmp_path / "cut", log=lambda m: None, progress=False).run(stop_after=1)  # "interrupted"
    Trainer(cfg, tmp_path / "cut", log=lambda m: None, progress=False).run(resume=True)
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["history"][-1]["eval_map"] == b["history"][-1]["eval_map"]


def test_multistage_training_matches_plain_training(tmp_path):
    plain = Trainer(TrainConfig(**TINY), tmp_path / "a", log=lambda m: None, progress=False).run()
    multi = Trainer(TrainConfig(chunk_size=16, **TINY), tmp_path / "b", log=lambda m: None, progress=False).run()
    for p, m in zip(plain, multi):
        assert p["train_loss"] == pytest.approx(m["train_loss"], abs=1e-4)


def test_resume_with_another_config_is_refused(tmp_path):
    Trainer(TrainConfig(**TINY), tmp_path, log=lambda m: None, progress=False).run(stop_after=1)
    with pytest.raises(ValueError, match=r"holds a run with other settings: --lr 0.5"):
        Trainer(TrainConfig(**{**TINY, "lr": 0.5}), tmp_path, log=lambda m: None, progress=False).run(resume=True)


def test_precision_recall_curve_of_a_perfect_ranking():
    d = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    r, p = precision_recall_curve(d, torch.tensor([0, 0, 1, 1]))
    assert r[0] == 0 and r[-1] == 1 and all(v == pytest.approx(1.0) for v in p)


def write_pngs(root, classes=3, per_class=6, size=12, seed=0):
    rng = np.random.default_rng(seed)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        base = rng.integers(0, 255, (size, size, 3))
        for i in range(per_class):
            img = np.clip(base + rng.integers(-20, 20, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / f"class{c}" / f"{i}.png")


def test_cli_train_eval_extract_on_png_folders(tmp_path, capsys):
    write_pngs(tmp_path / "train")
    write_pngs(tmp_path / "test", seed=1)
    out = tmp_path / "run"
    args = ["train", "--dataset", str(tmp_path / "train"), "--eval-dataset", str(tmp_path / "test"), "--image-size", "12",
            "--batch-size", "9", "--epochs", "2", "--dim", "4", "--threads", "1", "--out", str(out)]
    assert main(args) == 0
    assert (out / "last.pt").is_file() and (out / "curves.png").is_file()
    assert main(["train", "--out", str(out), "--resume"]) == 0  # already finished: resumes, trains nothing
    assert main(["eval", str(out / "last.pt"), "--json", str(tmp_path / "m.json")]) == 0
    report = json.loads((tmp_path / "m.json").read_text())
    assert 0 <= report["metrics"]["map"] <= 1 and "p@1" in report["metrics"]
    assert report["dataset"] == str(tmp_path / "test") and report["images"] == 18
    assert main(["extract", str(out / "last.pt"), str(tmp_path / "d.npy")]) == 0
    d = np.load(tmp_path / "d.npy")
    assert d.shape == (18, 4) and np.allclose(np.linalg.norm(d, axis=1), 1, atol=1e-5)
    assert np.load(tmp_path / "d.labels.npy").shape == (18,)


def test_cli_list_file_with_a_malformed_line_names_file_and_line(tmp_path, capsys):
    write_pngs(tmp_path / "img")
    lst = tmp_path / "train.txt"
    lst.write_text("img/class0/0.png 0\nimg/class0/1.png\n")
    code = main(["train", "--dataset", str(lst), "--eval-dataset", str(tmp_path / "img"), "--out", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err
    assert "train.txt" in err and "line 2" in err


def test_cli_corrupt_image_and_missing_dataset(tmp_path, capsys):
    write_pngs(tmp_path / "img")
    (tmp_path / "img" / "class1" / "3.png").write_bytes(b"not a png")
    code = main(["train", "--dataset", str(tmp_path / "img"), "--eval-dataset", str(tmp_path / "img"), "--image-size", "12",
                 "--batch-size", "9", "--epochs", "1", "--threads", "1", "--out", str(tmp_path / "r")])
    assert code == 2 and "3.png" in capsys.readouterr().err
    assert main(["train", "--dataset", str(tmp_path / "nope"), "--eval-dataset", "x", "--out", str(tmp_path / "r2")]) == 2
    assert "--dataset: not found" in capsys.readouterr().err


def test_cli_unknown_loss_or_backbone_is_rejected():
    for args, said in ((["train", "--loss", "hinge"], "unknown loss 'hinge'; choose from ap, tie-aware"),
                       (["train", "--backbone", "vgg99"], "invalid choice")):
        r = subprocess.run([sys.executable, "-m", "apl", *args], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and said in r.stderr


def test_cli_eval_on_a_revisited_style_dataset(tmp_path, capsys):
    """`apl eval --revisited` on a tiny dataset in the Revisited Oxford layout (gnd pickle + jpg/)."""
    import pickle

    write_pngs(tmp_path / "train")
    out = tmp_path / "run"
    assert main(["train", "--dataset", str(tmp_path / "train"), "--eval-dataset", str(tmp_path / "train"), "--image-size", "12",
                 "--batch-size", "9", "--epochs", "1", "--dim", "4", "--threads", "1", "--out", str(out)]) == 0
    root = tmp_path / "roxford5k"
    (root / "jpg").mkdir(parents=True)
    rng = np.random.default_rng(3)
    names = [f"img{i}" for i in range(6)] + ["q0", "q1"]
    for n in names:
        Image.fromarray(rng.integers(0, 255, (20, 24, 3)).astype(np.uint8)).save(root / "jpg" / f"{n}.jpg")
    gnd = [{"easy": [0, 1], "hard": [2], "junk": [3], "bbx": [2.0, 3.0, 18.5, 17.0]},
           {"easy": [4], "hard": [], "junk": [], "bbx": [0.0, 0.0, 24.0, 20.0]}]
    with open(root / "gnd_roxford5k.pkl", "wb") as f:
        pickle.dump({"imlist": names[:6], "qimlist": ["q0", "q1"], "gnd": gnd}, f)
    assert main(["eval", str(out / "last.pt"), "--revisited", str(root), "--image-size", "16", "--json", str(tmp_path / "r.json")]) == 0
    metrics = json.loads((tmp_path / "r.json").read_text())["metrics"]
    assert set(metrics) == {"easy", "medium", "hard"}
    assert all(0 <= metrics[p]["map"] <= 1 for p in metrics)
    assert "| medium |" in capsys.readouterr().out


def test_curves_of_a_one_epoch_run_show_points(tmp_path):
    """One epoch is one point per curve: drawn as a marker (a line of one point is invisible), and the
    title says "1 epoch"."""
    from apl.plots.curves import plot_curves

    history = [{"epoch": 1, "train_loss": 0.5, "eval_map": 0.3}]
    fig = plot_curves({"ap": history}, tmp_path / "c.png", "ap on digits: 1 epoch")
    for ax in fig.axes:
        (line,) = ax.get_lines()
        assert line.get_marker() == "o" and len(line.get_xdata()) == 1
    assert fig._suptitle.get_text() == "ap on digits: 1 epoch"
    Trainer(TrainConfig(**{**TINY, "epochs": 1}), tmp_path / "r", log=lambda m: None, progress=False).run()
    assert (tmp_path / "r" / "curves.png").stat().st_size > 1000
