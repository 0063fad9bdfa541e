import json

import pytest

from wrnlib.config import TrainConfig, fit_to_sample, resume_conflicts
from wrnlib.data import ENV_VAR


def test_round_trip_through_json(tmp_path):
    config = TrainConfig(name="x", depth=16, width=2.5, step_milestones=(0.5, 0.75), mix="cutmix")
    config.save(tmp_path / "c.json")
    loaded = TrainConfig.load(tmp_path / "c.json")
    assert loaded == config
    assert json.loads((tmp_path / "c.json").read_text())["step_milestones"] == [0.5, 0.75]


def test_default_name_describes_the_model_and_when_it_was_made():
    import datetime
    import re

    before = datetime.datetime.now().replace(microsecond=0)
    name = TrainConfig(depth=16, width=2.5).name
    after = datetime.datetime.now()
    stamp = re.fullmatch(r"wrn16-2\.5-(\d{8}-\d{6})", name)
    assert stamp, name
    assert before <= datetime.datetime.strptime(stamp[1], "%Y%m%d-%H%M%S") <= after  # local time, to the second


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
    budgeted = TrainConfig(name="r", epochs=7, budget_minutes=1.0, budget_step_s=0.5)  # what its start settled
    assert resume_conflicts(budgeted, TrainConfig(name="r", budget_minutes=1.0, lr=0.1)) == ["lr"]
    assert resume_conflicts(budgeted, TrainConfig(name="r", budget_minutes=2.0)) == ["budget_minutes"]


def test_the_saved_config_is_indented_for_people_to_read(tmp_path):
    TrainConfig(name="r").save(tmp_path / "config.json")
    lines = (tmp_path / "config.json").read_text().splitlines()
    assert lines[0] == "{" and lines[1].startswith('  "') and not lines[1].startswith('   ')


# (field overrides, the whole error, or None where the value is just inside what is allowed)
BOUNDARIES = [
    ({"lr": 1e-9}, None), ({"lr": 0.0}, "lr must be a finite number in (0.0, inf); got 0.0"),
    ({"lr": float("inf")}, "lr must be a finite number in (0.0, inf); got inf"),
    ({"momentum": 0.0}, None), ({"momentum": 1.0}, "momentum must be a finite number in [0.0, 1.0); got 1.0"),
    ({"momentum": -0.1}, "momentum must be a finite number in [0.0, 1.0); got -0.1"),
    ({"weight_decay": 0.0}, None),
    ({"weight_decay": -1e-4}, "weight_decay must be a finite number in [0.0, inf); got -0.0001"),
    ({"label_smoothing": 0.99}, None),
    ({"label_smoothing": 1.0}, "label_smoothing must be a finite number in [0.0, 1.0); got 1.0"),
    ({"mix_prob": 0.0}, None), ({"mix_prob": 1.0}, None),
    ({"mix_prob": 1.01}, "mix_prob must be a finite number in [0.0, 1.0]; got 1.01"),
    ({"mix_alpha": 0.0}, "mix_alpha must be a finite number in (0.0, inf); got 0.0"),
    ({"sam_rho": 0.0}, None),  # not used by plain SGD
    ({"optimizer": "sam", "sam_rho": 0.0}, "sam_rho must be a finite number in (0.0, inf); got 0.0"),
    ({"ema_decay": 0.0}, None),  # off
    ({"ema_decay": 1.0}, "ema_decay must be a finite number in (0.0, 1.0); got 1.0"),
    ({"ema_decay": -0.5}, "ema_decay must be a finite number in (0.0, 1.0); got -0.5"),
    ({"budget_minutes": -1.0}, "budget_minutes must be a finite number in [0.0, inf); got -1.0"),
    ({"budget_minutes": 1.0, "budget_step_s": 1e-9}, None),
    ({"budget_minutes": 1.0, "budget_step_s": -0.1}, "budget_step_s must be a finite number in [0.0, inf); got -0.1"),
    ({"budget_step_s": 0.25}, "budget_step_s=0.25 divides a time budget, and there is none: set budget_minutes or "
                              "leave budget_step_s 0"),
    ({"epochs": 1}, None), ({"epochs": 0}, "epochs must be an integer >= 1; got 0"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1; got 0"),
    ({"eval_batch_size": 0}, "eval_batch_size must be an integer >= 1; got 0"),
    ({"policy_group": 0}, "policy_group must be an integer >= 1; got 0"),
    ({"val_size": 0, "train_limit": 0, "test_limit": 0, "checkpoint_every": 0, "cutout": 0, "crop_padding": 0}, None),
    ({"val_size": -1}, "val_size must be an integer >= 0; got -1"),
    ({"train_limit": -1}, "train_limit must be an integer >= 0; got -1"),
    ({"test_limit": -1}, "test_limit must be an integer >= 0; got -1"),
    ({"checkpoint_every": -1}, "checkpoint_every must be an integer >= 0; got -1"),
    ({"cutout": -1}, "cutout must be an integer >= 0; got -1"),
    ({"crop_padding": -1}, "crop_padding must be an integer >= 0; got -1"),
    ({"crop_padding": 31}, None), ({"crop_padding": 40, "pad_mode": "constant"}, None),  # zero padding may be wider
    ({"crop_padding": 32}, "crop_padding must be < 32 (the image side) with reflect padding; got 32: lower "
                           "crop_padding or use pad_mode='constant'"),
    ({"schedule": "linear"}, "unknown schedule 'linear'; choose one of: constant, step, cosine, sgdr, onecycle"),
    ({"name": "a\\b"}, "name must be a plain folder name (no '/'); got 'a\\\\b'"),
    ({"name": "."}, "name must be a plain folder name (no '/'); got '.'"),
    ({"name": ".."}, "name must be a plain folder name (no '/'); got '..'"),
    ({"name": "é" * 100}, None),  # 200 bytes
    ({"name": "é" * 100 + "x"}, "name is 201 bytes long; a folder name can have at most 200: choose a shorter name"),
    ({"dropout": 0.5, "depth": 10, "width": 0.5}, None),
    ({"dropout": 1.0}, "dropout must be a probability in [0, 1); got 1.0"),
]


@pytest.mark.parametrize("overrides, error", BOUNDARIES)
def test_each_limit_is_where_the_help_says_and_the_error_says_so(overrides, error):
    config = TrainConfig(**({"name": "ok"} | overrides))
    if error is None:
        assert config.validate() is config
        return
    with pytest.raises(ValueError) as raised:
        config.validate()
    assert str(raised.value) == error


@pytest.mark.parametrize("field, value, expected", [
    ("nesterov", 1, "must be true or false; got 1 (int)"),
    ("epochs", 2.0, "must be an integer; got 2.0 (float)"),
    ("epochs", True, "must be an integer; got True (bool)"),
    ("lr", "0.1", "must be a number; got '0.1' (str)"),
    ("lr", False, "must be a number; got False (bool)"),
    ("schedule", 3, "must be a string; got 3 (int)"),
    ("data_dir", 3, "must be a string or null; got 3 (int)"),
    ("step_milestones", [0.5, "x"], "must be a list of numbers; got [0.5, 'x'] (list)"),
    ("step_milestones", [0.5, True], "must be a list of numbers; got [0.5, True] (list)"),
    ("step_milestones", "0.5", "must be a list of numbers; got '0.5' (str)"),
])
def test_a_value_of_the_wrong_type_names_the_field_its_source_and_the_type_wanted(field, value, expected):
    with pytest.raises(ValueError) as raised:
        TrainConfig.from_dict({field: value}, source="my.json")
    assert str(raised.value) == f"my.json: field {field!r} {expected}"
    if isinstance(value, list):
        return  # the constructor keeps milestones as a tuple; from_dict checks them as JSON gives them
    with pytest.raises(ValueError) as raised:
        TrainConfig(name="ok", **{field: value}).validate()
    assert str(raised.value) == f"config: field {field!r} {expected}"


def test_values_of_the_right_type_pass_including_null_and_integers_for_numbers():
    config = TrainConfig.from_dict({"name": "ok", "data_dir": None, "lr": 1, "step_milestones": [1, 0.5]})
    assert config.lr == 1 and config.step_milestones == (1, 0.5) and config.data_dir is None
    assert TrainConfig.from_dict({"name": "ok", "data_dir": "sample"}).data_dir == "sample"


def test_a_config_file_that_is_not_a_json_object_or_not_readable_says_where(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{\n  "lr": 0.1,\n  oops\n}\n')
    with pytest.raises(ValueError) as raised:
        TrainConfig.load(path)
    assert str(raised.value) == (f"{path} is not valid JSON: Expecting property name enclosed in double quotes at "
                                 "line 3, column 3; fix that line")
    path.write_text("[1, 2]")
    with pytest.raises(ValueError) as raised:
        TrainConfig.load(path)
    assert str(raised.value) == f"{path} must be a JSON object of TrainConfig fields; got list"
    path.write_bytes(b'{"name": "\xff"}')
    with pytest.raises(ValueError, match=f"^cannot read {path}: 'utf-8' codec can't decode"):
        TrainConfig.load(path)
    with pytest.raises(ValueError, match=f"^cannot read {tmp_path / 'missing.json'}: "):
        TrainConfig.load(tmp_path / "missing.json")
    path.write_text('{"lr": "fast"}')
    with pytest.raises(ValueError) as raised:
        TrainConfig.load(path)
    assert str(raised.value).startswith(f"{path}: ")  # a field's error names the file it is in
    with pytest.raises(ValueError) as raised:
        TrainConfig.from_dict([("lr", 0.1)], source="my settings")  # from Python: not a dict
    assert str(raised.value) == "my settings must be a JSON object of TrainConfig fields; got list"
    with pytest.raises(ValueError) as raised:
        TrainConfig.from_dict({"bogus": 1, "lr": 0.1, "aaa": 2})
    assert str(raised.value).startswith("config: unknown TrainConfig field(s) ['aaa', 'bogus']; known fields: ['batch_")


def test_resuming_may_change_how_a_run_runs_but_not_what_it_computes():
    saved = TrainConfig(name="r")
    how = {"out_dir": "elsewhere", "data_dir": "sample", "download": True, "progress": False, "compile": True,
           "compile_mode": "max-autotune", "checkpoint_every": 5, "save_model": True, "eval_batch_size": 7}
    assert resume_conflicts(saved, TrainConfig(name="r", **how)) == []
    for field, value in {"seed": 1, "mix": "cutmix", "step_milestones": (0.2,), "deterministic": True}.items():
        assert resume_conflicts(saved, TrainConfig(name="r", **{field: value})) == [field]


def test_the_sample_named_by_the_environment_is_fitted_and_nothing_to_fit_says_nothing(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "sample")
    fitted, line = fit_to_sample(TrainConfig())  # data_dir unset: the environment's folder is the data
    assert (fitted.val_size, fitted.batch_size) == (200, 64) and line.startswith("the sample shipped with wrnlib")
    assert fit_to_sample(TrainConfig(data_dir="/data/cifar10")) == (TrainConfig(data_dir="/data/cifar10"), "")
    given = TrainConfig(val_size=100, batch_size=32, lr=0.01)
    assert fit_to_sample(given) == (given, "")  # every setting the sample needs was given
