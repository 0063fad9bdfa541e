"""What every notebook does first: which data (the shipped sample when nothing is configured, with sizes that
fit it and a note), the TrainConfig of its parameters (none typed twice), and refusing at once training that would
take far too long."""
from __future__ import annotations

import dataclasses
import shutil

import pytest
import torch

import cell_parameters
from wrnlib import TrainConfig, load_cifar10, train_val_split
from wrnlib import runfolder
from wrnlib.data import sample_dir
from wrnlib.study import notebook, profiles
from wrnlib.train import make_splits


@pytest.fixture
def nothing_configured(monkeypatch, tmp_path):
    """A person's machine with no CIFAR10_DIR and an empty cache folder."""
    monkeypatch.delenv("CIFAR10_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


def test_sample_size_is_the_shipped_sample():
    data = load_cifar10("sample")
    assert notebook.sample_size() == (len(data.train_labels), len(data.test_labels))


def test_no_data_configured_falls_back_to_the_sample_with_sizes_that_fit(nothing_configured):
    choice = notebook.choose_data(None, val_size=5000, train_limit=20_000, test_limit=2000)
    assert choice.is_sample and choice.data_dir == "sample"
    assert "not the benchmark" in choice.note and "No CIFAR-10 found" in choice.note
    assert "`val_size` 5,000 → 200" in choice.note
    data = load_cifar10(choice.data_dir)  # the fitted sizes work where the asked ones failed
    with pytest.raises(ValueError):
        train_val_split(data.train_labels, 5000, 0)
    config = TrainConfig(data_dir=choice.data_dir, val_size=choice.val_size, train_limit=choice.train_limit,
                         test_limit=choice.test_limit, depth=10, width=1.0, batch_size=50, device="cpu").validate()
    splits = make_splits(config, data, torch.device("cpu"))
    assert len(splits.val_y) == choice.val_size and len(splits.test_y) == len(data.test_labels)
    assert len(splits.train_y) == len(data.train_labels) - choice.val_size


def test_the_sample_asked_for_keeps_sizes_that_fit(nothing_configured):
    choice = notebook.choose_data("sample", val_size=100, train_limit=500, test_limit=300)
    assert (choice.data_dir, choice.val_size, choice.train_limit, choice.test_limit) == ("sample", 100, 500, 300)
    assert "not the benchmark" in choice.note and "fitted" not in choice.note


def test_configured_data_is_used_as_is(nothing_configured, monkeypatch):
    folder = str(nothing_configured / "cifar10")
    assert notebook.choose_data(folder, 5000) == notebook.DataChoice(folder, 5000, 0, 0, 50_000, 10_000)
    monkeypatch.setenv("CIFAR10_DIR", folder)
    choice = notebook.choose_data(None, 5000)
    assert (choice.data_dir, choice.note) == (None, "")  # the loader reads $CIFAR10_DIR itself


def test_data_in_the_cache_folder_is_used(nothing_configured):
    cache = nothing_configured / "cache" / "wrnlib"
    cache.mkdir(parents=True)
    for name in ("train_1.npz", "test.npz"):
        shutil.copy(sample_dir() / name, cache / name)
    choice = notebook.choose_data(None, 200)
    assert (choice.data_dir, choice.note) == (None, "")
    assert len(load_cifar10(choice.data_dir).train_labels) == notebook.sample_size()[0]


def test_training_far_over_the_limit_is_refused_at_once(nothing_configured):
    big = TrainConfig(depth=28, width=3.5, epochs=1000, device="cpu", data_dir="sample", val_size=200,
                      out_dir=str(nothing_configured / "runs"))
    with pytest.raises(notebook.TrainingTimeError, match=r"WRN-28-3.5 for 1000 epochs on cpu would take about .*"
                                                         r"max_train_minutes = 60"):
        notebook.check_training_time([big], 1200, 600, max_minutes=60)
    assert notebook.check_training_time([big], 1200, 600, max_minutes=None) > 60
    tiny = TrainConfig(depth=10, width=1.0, epochs=2, device="cpu", val_size=200, train_limit=1000,
                       out_dir=str(nothing_configured / "runs"))
    assert 0 < notebook.check_training_time([tiny], 1200, 600, max_minutes=60) < 5
    longer = TrainConfig(**{**tiny.to_dict(), "epochs": 4})
    assert notebook.estimate_minutes(longer, 1200, 600) == pytest.approx(2 * notebook.estimate_minutes(tiny, 1200, 600))


def test_finished_runs_cost_no_time():
    finished = runfolder.load_config(profiles.REPO_ROOT / "results" / "runs" / "wrn28-3.5-cutout-h200")
    finished.device = "cpu"  # 96 epochs of WRN-28-3.5 on a CPU would take days; it is read back instead
    assert notebook.check_training_time([finished], 50_000, 10_000, max_minutes=1) == 0


# --------------------------------------------------------------------------- the config of a notebook's parameters

FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
DATA_FIELDS = ("data_dir", "val_size", "train_limit", "test_limit")  # as the data choice fitted them


def test_every_parameter_of_02_named_like_a_trainconfig_field_reaches_its_config(monkeypatch):
    """Notebook 02 builds its config with notebook.train_config(globals(), source): each of its parameters that is a
    TrainConfig field arrives there (run_name as name), the data ones as the data choice fitted them, and the entries
    of extra_config; a parameter that is no field (n_wrong, figures_dir, ...) is left out."""
    params = cell_parameters.defaults(profiles.find_notebooks()["02"])
    named = FIELDS & set(params)
    assert {"depth", "width", "epochs", "lr", "schedule", "cutout", "seed", "device", "out_dir"} <= named
    marked = {name: object() for name in params}  # a value of its own for every parameter
    marked["extra_config"] = {"dropout": object()}
    received = {}

    class Recorder:  # stands in for TrainConfig: what reaches it, unchecked
        @classmethod
        def from_dict(cls, values, source):
            received.update(values)
            return cls()

        def validate(self):
            return self

    monkeypatch.setattr(notebook, "TrainConfig", Recorder)
    monkeypatch.setattr(notebook, "fit_to_sample", lambda config: (config, ""))  # (not the sample here)
    source = notebook.DataChoice("the chosen folder", 1, 2, 3, 50_000, 10_000)
    notebook.train_config(marked, source)
    assert {k: received[k] for k in named - set(DATA_FIELDS)} == {k: marked[k] for k in named - set(DATA_FIELDS)}
    assert [received[k] for k in DATA_FIELDS] == ["the chosen folder", 1, 2, 3]
    assert received["name"] is marked["run_name"] and received["dropout"] is marked["extra_config"]["dropout"]
    assert received["progress"] is False  # the notebook prints a line per epoch instead of a bar
    assert set(received) == named | {"name", "dropout", "progress"}  # n_wrong, figures_dir, ... are no fields


@pytest.mark.parametrize("profile", profiles.known_profiles())
def test_02s_parameters_under_each_profile_make_its_config(profile):
    params = cell_parameters.namespace(profile, "02")
    config = notebook.train_config(params, cell_parameters.on_cifar10(params))
    assert {k: getattr(config, k) for k in FIELDS & set(params)} == {k: params[k] for k in FIELDS & set(params)}
    assert config.name == params["run_name"] and config.progress is False
    assert all(getattr(config, k) == v for k, v in params["extra_config"].items())


def test_a_parameter_that_is_no_field_is_left_out_but_refused_in_extra_config():
    assert notebook.train_config({"n_wrong": 24, "depth": 16}).depth == 16
    with pytest.raises(ValueError, match=r"unknown TrainConfig field\(s\) \['n_wrong'\]"):
        notebook.train_config({"extra_config": {"n_wrong": 24}})
    with pytest.raises(ValueError, match="field 'depth' must be an integer"):  # checked like a config file
        notebook.train_config({"depth": "16"})


def test_a_notebook_run_without_a_name_is_named_after_its_settings():
    """02's run_name = None: other settings train another run (no "exists with other settings"), the same ones read
    it back; what only changes how a run runs (progress, where the data is) keeps the name."""
    base = {"depth": 16, "width": 2.0, "epochs": 4, "out_dir": "runs", "run_name": None}
    name = notebook.train_config(base).name
    assert name.startswith("wrn16-2-") and len(name) == len("wrn16-2-") + 8
    assert notebook.train_config(base).name == name
    assert notebook.train_config(base | {"data_dir": "/elsewhere", "eval_batch_size": 100}).name == name
    for changed in ({"depth": 22}, {"lr": 0.2}, {"epochs": 5}, {"seed": 1}):
        other = notebook.train_config(base | changed).name
        assert other != name and other.startswith(f"wrn{(base | changed)['depth']}-2-")
    assert notebook.train_config(base | {"run_name": "mine"}).name == "mine"


def test_on_the_sample_the_notebook_shows_what_fit_will_fit(capsys):
    source = notebook.choose_data("sample", 5000, 0, 0)
    config = notebook.train_config({"depth": 10, "width": 1.0, "batch_size": 512, "lr": 0.4, "run_name": "s"}, source)
    assert (config.val_size, config.batch_size, config.lr) == (200, 64, 0.05)
    assert "batch_size 512 -> 64, lr 0.4 -> 0.05" in capsys.readouterr().out
