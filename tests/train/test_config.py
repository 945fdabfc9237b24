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
    with pytest.raises(ValueError, match=r"unknown loss fields \['nope'\]"):
        TrainConfig.from_dict({"loss": {"nope": 1}})
    with pytest.raises(ValueError, match=r"unknown model fields \['lr'\]"):  # a field in the wrong group
        TrainConfig.from_dict({"model": {"lr": 0.1}})
    with pytest.raises(ValueError, match="an earlier development version wrote them flat"):
        TrainConfig.from_dict({"dataset": "digits", "lr": 0.1})


def test_schedules():
    assert lr_factor("cosine", 0, 10) == 1 and lr_factor("cosine", 10, 10) == pytest.approx(0)
    assert lr_factor("cosine", 5, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi / 2)))
    assert [lr_factor("step", k, 9) for k in (0, 3, 6)] == pytest.approx([1, 0.1, 0.01])
    assert lr_factor("none", 7, 9) == 1


def test_configuration_is_grouped_and_every_field_describes_itself():
    """config.json stores the fields by group; every field has a group, a help text and a flag, from
    which `apl train`'s options are built (one text for both)."""
    import dataclasses

    from apl.cli import build_parser
    from apl.train.config import GROUPS, flag_of

    d = TrainConfig().validate().to_dict()
    assert list(d) == list(GROUPS)
    assert d["data"]["dataset"] == "digits" and d["optimiser"]["lr"] == 1e-3 and d["loss"]["loss"] == "ap"
    assert d["model"]["backbone"] == "small_cnn" and d["run"]["seed"] == 0
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    by_flag = {a.option_strings[0]: a for a in train._actions if a.option_strings}
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata["group"] in GROUPS and f.metadata["help"], f.name
        if f.metadata["cli"]:
            assert by_flag[flag_of(f.name)].help.startswith(f.metadata["help"][:40]), f.name
    assert flag_of("num_bins") == "--bins" and flag_of("triplet_margin") == "--triplet-margin"


def test_each_loss_option_has_one_meaning():
    """--margin meant three things and --temperature two: each option now names what it is."""
    from apl.train.losses import SPECS

    takes = {name: set(spec.options) for name, spec in SPECS.items()}
    assert takes["triplet"] & takes["triplet-hard"] == {"triplet_margin"}
    assert "triplet_margin" not in takes["contrastive"] | takes["multi-similarity"]
    assert "contrastive_margin" in takes["contrastive"] and "ms_base" in takes["multi-similarity"]
    assert {n for n, t in takes.items() if "rank_temperature" in t} == {"smoothap", "recall-at-k"}


def test_a_folder_run_stores_no_builtin_dataset_fields():
    """config.json of a run on an image folder holds only what applies to it (not the digits'
    classes nor the glyphs' sizes); such fields never count as changed options on --resume."""
    cfg = TrainConfig(dataset="/data/train", eval_dataset="/data/val").validate()
    d = cfg.to_dict()
    assert not {"train_classes", "imbalance", "glyphs_per_class", "glyph_size"} & set(d["data"])
    digits, glyphs = TrainConfig(dataset="digits").to_dict()["data"], TrainConfig(dataset="glyphs").to_dict()["data"]
    assert "train_classes" in digits and "glyph_size" not in digits
    assert "glyph_size" in glyphs and "train_classes" not in glyphs
    assert TrainConfig.from_dict(d) == cfg
    other = TrainConfig.from_dict({**d, "data": {**d["data"], "train_classes": [0, 1], "glyph_size": 16}})
    assert other.differences(cfg) == []  # fields that do not apply to the dataset never count as changed
    assert TrainConfig(dataset="digits").differences(cfg)[:2] == ["dataset", "eval_dataset"]
