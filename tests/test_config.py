import json

import pytest

from wrnlib.config import TrainConfig, resume_conflicts


def test_round_trip_through_json(tmp_path):
    config = TrainConfig(name="x", depth=16, width=2.5, step_milestones=(0.5, 0.75), mix="cutmix")
    config.save(tmp_path / "c.json")
    loaded = TrainConfig.load(tmp_path / "c.json")
    assert loaded == config
    assert json.loads((tmp_path / "c.json").read_text())["step_milestones"] == [0.5, 0.75]


def test_default_name_describes_the_model():
    assert TrainConfig(depth=16, width=2.5).name.startswith("wrn16-2.5-")


def test_unknown_fields_are_rejected_by_name():
    with pytest.raises(ValueError, match="bogus"):
        TrainConfig.from_dict({"bogus": 1})


@pytest.mark.parametrize("field,value", [
    ("depth", 20), ("width", -1), ("epochs", 0), ("batch_size", 0), ("lr", 0.0), ("lr", float("nan")),
    ("momentum", 1.0), ("weight_decay", -1e-4), ("label_smoothing", 1.0), ("schedule", "linear"),
    ("optimizer", "adam"), ("precision", "fp8"), ("mix", "mosaic"), ("policy", "randaugment"),
    ("pad_mode", "wrap"), ("mix_prob", 1.5), ("ema_decay", 1.0), ("val_size", -1), ("cutout", -4),
    ("warmup_epochs", 99.0), ("name", "a/b"), ("policy_group", 0),
])
def test_every_bad_value_names_its_field(field, value):
    config = TrainConfig(name="ok", **{field: value}) if field != "name" else TrainConfig(name=value)
    with pytest.raises(ValueError) as err:
        config.validate()
    message = str(err.value).lower()
    assert field.split("_")[0] in message or (field == "depth" and "6n + 4" in message)


def test_resume_conflicts_ignore_execution_only_fields():
    saved = TrainConfig(name="r", epochs=10)
    assert resume_conflicts(saved, TrainConfig(name="r", epochs=10, compile=True, progress=False)) == []
    assert resume_conflicts(saved, TrainConfig(name="r", epochs=12, lr=0.1)) == ["epochs", "lr"]


def test_the_saved_config_is_indented_for_people_to_read(tmp_path):
    TrainConfig(name="r").save(tmp_path / "config.json")
    lines = (tmp_path / "config.json").read_text().splitlines()
    assert lines[0] == "{" and lines[1].startswith('  "') and not lines[1].startswith('   ')
