"""TrainConfig validation, scales parsing and the learning-rate schedule."""
import math

import pytest

from apl.train import TrainConfig, parse_scales
from apl.train.optim import lr_factor


def test_parse_scales():
    assert parse_scales("1,0.707,0.5") == (1.0, 0.707, 0.5)
    assert parse_scales([1]) == (1.0,)
    for bad, msg in (("", "at least one scale"), ("1,1", "twice"), ("5", r"in \(0, 4\]"), ("x", "comma-separated")):
        with pytest.raises(ValueError, match=msg):
            parse_scales(bad)


@pytest.mark.parametrize("field, value, msg", [
    ("batch_size", 1, "--batch-size must be an integer >= 2"),
    ("epochs", 0, "--epochs must be an integer >= 1"),
    ("chunk_size", 0, "--chunk-size must be a positive integer"),
    ("lr", -1.0, "--lr must be a positive number"),
    ("loss", "hinge", "unknown loss 'hinge'"),
    ("dataset", "folder", "--eval-dataset is required"),
])
def test_bad_values_name_the_option(field, value, msg):
    with pytest.raises(ValueError, match=msg):
        TrainConfig(**{field: value}).validate()


def test_round_trip_and_differences():
    cfg = TrainConfig(scales="1,0.5").validate()
    again = TrainConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.differences(cfg) == []
    assert TrainConfig(lr=0.1).validate().differences(cfg) == ["lr", "scales"]
    with pytest.raises(ValueError, match="unknown configuration fields"):
        TrainConfig.from_dict({"nope": 1})


def test_schedules():
    assert lr_factor("cosine", 0, 10) == 1 and lr_factor("cosine", 10, 10) == pytest.approx(0)
    assert lr_factor("cosine", 5, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi / 2)))
    assert [lr_factor("step", k, 9) for k in (0, 3, 6)] == pytest.approx([1, 0.1, 0.01])
    assert lr_factor("none", 7, 9) == 1


def test_configs_written_before_the_loss_registry_still_load():
    """Older run folders stored num_bins=20 for every loss; a triplet run must still validate."""
    old = dict(TrainConfig(loss="triplet").to_dict(), num_bins=20)
    cfg = TrainConfig.from_dict(old).validate()
    assert cfg.num_bins is None
    assert TrainConfig.from_dict(dict(TrainConfig().to_dict(), num_bins=20)).num_bins == 20  # the AP loss keeps it


def test_a_folder_run_stores_no_builtin_dataset_fields():
    """config.json of a run on an image folder holds only what applies to it (not the digits'
    classes nor the glyphs' sizes); runs that stored them still load, and such fields never count
    as changed options on --resume."""
    cfg = TrainConfig(dataset="/data/train", eval_dataset="/data/val").validate()
    d = cfg.to_dict()
    assert not {"train_classes", "imbalance", "glyphs_per_class", "glyph_size"} & set(d)
    digits, glyphs = TrainConfig(dataset="digits").to_dict(), TrainConfig(dataset="glyphs").to_dict()
    assert "train_classes" in digits and "glyph_size" not in digits
    assert "glyph_size" in glyphs and "train_classes" not in glyphs
    assert TrainConfig.from_dict(d) == cfg
    old = TrainConfig.from_dict({**d, "train_classes": [0, 1], "glyph_size": 16})  # as earlier versions wrote
    assert old.differences(cfg) == []
    assert TrainConfig(dataset="digits").differences(cfg)[:2] == ["dataset", "eval_dataset"]
