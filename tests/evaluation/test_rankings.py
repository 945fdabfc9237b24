"""`apl show`, apl.evaluation.rankings / show and apl.plots.rankings: which results are framed correct / wrong / junk, the choice
of queries, and the picture end to end on the digits, on RGB images of mixed shapes and on a
Revisited-style dataset."""
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from apl.cli import main
from apl.data import Compose, Normalize, ResizeMax, split_digits
from apl.train import TrainConfig, Trainer, load_model
from apl.evaluation.rankings import (CORRECT, JUNK, WRONG, check_counts, choose_queries, rank_labelled, result_kinds,
                                     revisited_result_kinds)
from apl.plots.show import save_rankings
from apl.plots.rankings import FRAME_COLOURS, display_image
from images import write_class_folders

SHAPES = [(12, 12), (10, 16), (18, 9), (14, 11)]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("digits")
    cfg = TrainConfig(dataset="digits", dim=8, batch_size=64, epochs=1, steps_per_epoch=2, threads=1)
    Trainer(cfg, run, log=lambda m: None, progress=False).run()
    return run / "last.pt"


def _colour_pixels(png, kind, tol=30):
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    want = np.array([int(FRAME_COLOURS[kind][i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(rgb - want).max(axis=2) <= tol).sum())


# ----------------------------------------------------------------------------- pure logic


def test_result_kinds():
    assert result_kinds(3, [3, 1, 3, "3"]) == [CORRECT, WRONG, CORRECT, WRONG]
    assert result_kinds("cat", []) == []


def test_revisited_kinds_follow_the_protocol():
    gnd = {"easy": [0, 1], "hard": [2], "junk": [3], "bbx": [0, 0, 1, 1]}
    results = [2, 0, 3, 5, 1]
    assert revisited_result_kinds(results, gnd, "easy") == [JUNK, CORRECT, JUNK, WRONG, CORRECT]  # hard is junk
    assert revisited_result_kinds(results, gnd, "medium") == [CORRECT, CORRECT, JUNK, WRONG, CORRECT]
    assert revisited_result_kinds(results, gnd, "hard") == [CORRECT, JUNK, JUNK, WRONG, JUNK]  # easy is junk
    with pytest.raises(ValueError, match="protocol must be one of"):
        revisited_result_kinds(results, gnd, "extreme")


def test_choose_queries_is_seeded_and_spread_over_classes():
    labels = [0] * 10 + [1] * 3 + [2] * 5
    a = choose_queries(labels, 6, seed=0)
    assert a == choose_queries(labels, 6, seed=0) and len(set(a)) == 6
    assert sorted(labels[i] for i in a[:3]) == [0, 1, 2] and sorted(labels[i] for i in a[3:]) == [0, 1, 2]
    assert any(choose_queries(labels, 6, seed=s) != a for s in range(1, 5))
    # a class runs out: the others go on
    b = choose_queries(labels, 12, seed=1)
    assert sorted(labels[i] for i in b).count(1) == 3 and len(set(b)) == 12
    eligible = [i % 2 == 0 for i in range(len(labels))]
    assert all(eligible[i] for i in choose_queries(labels, 9, seed=2, eligible=eligible))
    with pytest.raises(ValueError, match="cannot choose 10 queries among 9 eligible items"):
        choose_queries(labels, 10, eligible=eligible)
    with pytest.raises(ValueError, match="count must be an int >= 1, got 0"):
        choose_queries(labels, 0)


def test_revisited_queries_are_spread_over_landmarks():
    from apl.plots.show import _landmark

    names = ["all_souls_000013", "all_souls_000026", "ashmolean_000058", "ashmolean_000000", "radcliffe_camera_000519", "odd"]
    assert [_landmark(n) for n in names] == ["all_souls", "all_souls", "ashmolean", "ashmolean", "radcliffe_camera", "odd"]
    first = choose_queries([_landmark(n) for n in names], 4, seed=0)
    assert len({_landmark(names[i]) for i in first}) == 4


def test_check_counts_names_the_option():
    check_counts(3, 9, 10, 3)
    with pytest.raises(ValueError, match=r"--queries must be an integer >= 1, got 0"):
        check_counts(0, 5, 10, 10, ("--queries", "--top"))
    with pytest.raises(ValueError, match=r"--top must be smaller than the number of images searched \(10 in the held-out set\), got 10"):
        check_counts(1, 10, 10, 10, ("--queries", "--top"))
    with pytest.raises(ValueError, match=r"queries 4 is more than the 3 possible queries"):
        check_counts(4, 1, 10, 3)


def test_rank_labelled_excludes_the_query_and_breaks_ties_by_index():
    d = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.6, 0.8]])
    rows = rank_labelled(d, [0, 1, 0, 0, 1], [0, 4], top=3, class_names=["a", "b"])
    assert rows[0].results == [1, 3, 4] and rows[0].kinds == [WRONG, CORRECT, WRONG]
    assert rows[1].results == [2, 0, 1] and rows[1].kinds == [WRONG, WRONG, CORRECT]
    # query 0 ranks 1 3 4 2 with positives 3, 2: AP = (1/2 + 2/4) / 2
    assert rows[0].ap == pytest.approx(0.5) and rows[0].title.startswith("class a") and "AP 0.500" in rows[0].title


def test_display_image_undoes_normalisation_and_shrinks():
    x = torch.rand(3, 5, 7)
    tf = Compose([ResizeMax(7), Normalize([0.5, 0.4, 0.3], [0.2, 0.25, 0.5])])
    shown = display_image(tf(x), tf)
    assert shown.shape == (5, 7, 3) and np.allclose(shown, x.permute(1, 2, 0).numpy(), atol=1e-6)
    grey = display_image(torch.full((1, 400, 200), 2.0))
    assert grey.shape == (160, 80) and grey.max() == 1.0  # clipped to [0, 1], longest side 160


# ----------------------------------------------------------------------------- end to end


def test_show_digits_end_to_end(digits_run, tmp_path, capsys):
    png = tmp_path / "ranks.png"
    assert main(["show", str(digits_run), "--queries", "3", "--top", "4", "--out", str(png), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "drew 3 queries of digits (held-out classes) with their top 4 results" in out and str(png) in out
    w, h = Image.open(png).size
    assert 450 < w < 800 and 350 < h < 700 and png.stat().st_size > 5000
    # the same picture from the library, with the rows to check the frames against
    model, _ = load_model(digits_run)
    _, held_out = split_digits()
    rows = save_rankings(model, held_out, tmp_path / "again.png", queries=3, top=4)
    assert (tmp_path / "again.png").read_bytes() == png.read_bytes()  # deterministic
    labels = held_out.targets
    assert len({labels[r.query] for r in rows}) == 3  # three different classes
    for r in rows:
        assert r.query not in r.results and r.kinds == result_kinds(labels[r.query], [labels[i] for i in r.results])
    correct = sum(k == CORRECT for r in rows for k in r.kinds)
    assert (_colour_pixels(png, CORRECT) > 0) == (correct > 0) and (_colour_pixels(png, WRONG) > 0) == (correct < 12)
    other = save_rankings(model, held_out, tmp_path / "seed1.png", queries=3, top=4, seed=1)
    assert [r.query for r in other] != [r.query for r in rows]


def test_show_on_rgb_images_of_mixed_shapes(tmp_path, capsys):
    train = write_class_folders(tmp_path / "train", sizes=SHAPES)
    test = write_class_folders(tmp_path / "test", sizes=SHAPES, seed=1)
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(train), "--eval-dataset", str(test), "--image-size", "16", "--batch-size", "12",
                 "--epochs", "1", "--dim", "4", "--threads", "1", "--quiet", "--out", str(run)]) == 0
    png = tmp_path / "r.png"
    assert main(["show", str(run / "last.pt"), "--queries", "3", "--top", "5", "--image-size", "20", "--out", str(png)]) == 0
    assert f"drew 3 queries of {test} with their top 5 results" in capsys.readouterr().out
    w, h = Image.open(png).size
    assert 550 < w < 900 and 350 < h < 700 and _colour_pixels(png, CORRECT) + _colour_pixels(png, WRONG) > 0


def test_show_on_a_revisited_style_dataset(tmp_path, capsys):
    train = write_class_folders(tmp_path / "train")
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(train), "--eval-dataset", str(train), "--image-size", "12", "--batch-size", "9",
                 "--epochs", "1", "--dim", "4", "--threads", "1", "--quiet", "--out", str(run)]) == 0
    root = tmp_path / "roxford5k"
    (root / "jpg").mkdir(parents=True)
    rng = np.random.default_rng(3)
    names = [f"img{i}" for i in range(6)] + ["all_souls_000001", "radcliffe_000002"]
    for n in names:
        Image.fromarray(rng.integers(0, 255, (20, 24, 3)).astype(np.uint8)).save(root / "jpg" / f"{n}.jpg")
    gnd = [{"easy": [0, 1], "hard": [2], "junk": [3, 4], "bbx": [2.0, 3.0, 18.5, 17.0]},
           {"easy": [4], "hard": [], "junk": [0, 1, 2, 3, 5], "bbx": [0.0, 0.0, 24.0, 20.0]}]
    with open(root / "gnd_roxford5k.pkl", "wb") as f:
        pickle.dump({"imlist": names[:6], "qimlist": names[6:], "gnd": gnd}, f)
    png = tmp_path / "rev.png"
    # every database image is shown: the second query's are all junk but one
    assert main(["show", str(run / "last.pt"), "--revisited", str(root), "--image-size", "16", "--queries", "2", "--top", "5",
                 "--out", str(png)]) == 0
    assert "drew 2 queries of roxford5k (Revisited" in capsys.readouterr().out
    assert _colour_pixels(png, JUNK, tol=3) > 200 and Image.open(png).size[0] > 500
    # the hard protocol has a positive for the first query only
    assert main(["show", str(run / "last.pt"), "--revisited", str(root), "--protocol", "hard", "--queries", "2", "--top", "5",
                 "--out", str(png)]) == 2
    assert ("--queries 2 is more than the 1 possible queries of roxford5k (queries with a positive under the hard protocol)"
            in capsys.readouterr().err)
    assert main(["show", str(run / "last.pt"), "--revisited", str(root), "--top", "6", "--out", str(png)]) == 2
    assert "--top must be smaller than the number of images searched (6 in roxford5k), got 6" in capsys.readouterr().err


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("args, message", [
    (["--queries", "0"], "--queries must be an integer >= 1, got 0"),
    (["--top", "0"], "--top must be an integer >= 1, got 0"),
    (["--top", "896"], "--top must be smaller than the number of images searched (896 in the held-out set), got 896"),
    (["--queries", "897"], "--queries 897 is more than the 896 possible queries of the held-out set "
                           "(images with another image of their class)"),
])
def test_bad_counts_are_one_line_errors(digits_run, tmp_path, capsys, args, message):
    assert main(["show", str(digits_run), "--out", str(tmp_path / "x.png"), *args]) == 2
    err = capsys.readouterr().err
    assert err == f"apl show: error: {message}\n" and not (tmp_path / "x.png").exists()


def test_out_in_a_missing_folder(digits_run, tmp_path, capsys):
    assert main(["show", str(digits_run), "--out", str(tmp_path / "no" / "x.png")]) == 2
    assert capsys.readouterr().err == f"apl show: error: --out {tmp_path / 'no' / 'x.png'}: the folder {tmp_path / 'no'} does not exist\n"


def test_missing_checkpoint(tmp_path, capsys):
    assert main(["show", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"apl show: error: not an apl checkpoint: {tmp_path / 'nope.pt'}") and "no such file" in err
    assert len(err.strip().splitlines()) == 1
