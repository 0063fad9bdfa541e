"""`python -m wrnlib runs`: real run folders in each state of their life, listed with the numbers they hold."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from wrnlib import TrainConfig, fit, load_cifar10
from wrnlib import files, runfolder
from wrnlib.study import formats, run_list


def tiny(out_dir: Path, name: str, **overrides) -> TrainConfig:
    """A WRN-10-1 on a small part of the shipped sample: a few seconds per run on two cores."""
    base = dict(name=name, out_dir=str(out_dir), data_dir="sample", depth=10, width=1, epochs=2, batch_size=64,
                lr=0.1, val_size=100, train_limit=256, test_limit=200, warmup_epochs=0.0, progress=False)
    return TrainConfig(**(base | overrides))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """finished (2/2 epochs), interrupted (Ctrl-C after epoch 1 of 3), unstarted (config only), a folder of
    notes (not a run), an empty folder and a hidden one."""
    out = tmp_path_factory.mktemp("runs")
    data = load_cifar10("sample")
    fit(tiny(out, "a-finished"), data=data)

    def stop(row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(tiny(out, "b-interrupted", epochs=3), data=data, on_epoch_end=stop)
    runfolder.create(tiny(out, "c-unstarted", epochs=4), {"device": "cpu"})
    (out / "d-notes").mkdir()
    (out / "d-notes" / "todo.txt").write_text("try WRN-16-8")
    (out / "e-empty").mkdir()
    (out / ".hidden").mkdir()
    (out / ".hidden" / "config.json").write_text("{}")
    return out


def by_name(rows):
    return {r["name"]: r for r in rows}


def test_each_state_is_listed_with_its_epochs_accuracy_and_time(folder):
    rows = by_name(run_list.list_runs(folder))
    assert list(rows) == ["a-finished", "b-interrupted", "c-unstarted", "d-notes"]  # no empty or hidden folder
    summary = json.loads((folder / "a-finished" / runfolder.SUMMARY).read_text())
    finished, interrupted, unstarted = rows["a-finished"], rows["b-interrupted"], rows["c-unstarted"]

    assert (finished["status"], finished["model"], finished["epochs_done"], finished["epochs"]) == (
        "finished", "WRN-10-1", 2, 2)
    assert finished["test_acc"] == summary["test_acc"]
    assert finished["train_time_s"] == pytest.approx(summary["train_time_s"])

    assert (interrupted["status"], interrupted["epochs_done"], interrupted["epochs"]) == ("interrupted", 1, 3)
    assert interrupted["test_acc"] is None  # its epoch-1 test accuracy is no final result
    first_epoch = runfolder.read_metrics(folder / "b-interrupted")[-1]
    assert interrupted["train_time_s"] == pytest.approx(first_epoch["train_time_s"]) and first_epoch["train_time_s"] > 0

    assert (unstarted["status"], unstarted["epochs_done"], unstarted["epochs"]) == ("unstarted", 0, 4)
    assert unstarted["test_acc"] is None and unstarted["train_time_s"] is None

    assert rows["d-notes"]["status"] == run_list.NOT_A_RUN and "model" not in rows["d-notes"]


def test_the_table_shows_the_runs_numbers_formatted(folder):
    table = run_list.format_runs(run_list.list_runs(folder)).splitlines()
    assert table[0].split() == ["name", "status", "model", "epochs", "test", "acc", "train", "time", "date"]
    lines = {line.split()[0]: line.split() for line in table[1:]}
    summary = json.loads((folder / "a-finished" / runfolder.SUMMARY).read_text())
    config_time = (folder / "a-finished" / runfolder.CONFIG).stat().st_mtime
    assert lines["a-finished"][:5] == ["a-finished", "finished", "WRN-10-1", "2/2", f"{100 * summary['test_acc']:.2f}%"]
    finished = next(line for line in table[1:] if line.startswith("a-finished "))
    train_time, date = table[0].index("train time"), table[0].index("date")  # a duration may be several words
    assert finished[train_time:date].rstrip() == formats.duration(summary["train_time_s"], missing="-")
    assert finished[date:] == time.strftime("%Y-%m-%d %H:%M", time.localtime(config_time))
    assert lines["b-interrupted"][1:5] == ["interrupted", "WRN-10-1", "1/3", "-"]
    assert lines["c-unstarted"][1:6] == ["unstarted", "WRN-10-1", "0/4", "-", "-"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", " ".join(lines["c-unstarted"][6:]))
    assert lines["d-notes"][1:] == ["not", "a", "run", "-", "-", "-", "-", "-"]
    assert {line.find("WRN-10-1") for line in table[1:4]} == {table[0].index("model")}  # aligned columns


def test_a_run_held_by_a_live_process_is_locked(folder, monkeypatch):
    held = folder / "b-interrupted"
    monkeypatch.setattr(files, "is_locked", lambda run_dir: Path(run_dir) == held)
    rows = by_name(run_list.list_runs(folder))
    assert rows["b-interrupted"]["status"] == "locked"
    assert [rows[n]["status"] for n in ("a-finished", "c-unstarted")] == ["finished", "unstarted"]


def test_the_command_prints_the_table_or_says_there_are_no_runs(folder, tmp_path, capsys):
    assert run_list.runs_command(str(folder)) == 0
    out = capsys.readouterr().out
    assert out == run_list.format_runs(run_list.list_runs(folder)) + "\n"
    for missing in (tmp_path / "nowhere", tmp_path):  # absent, and a folder without runs
        assert run_list.runs_command(str(missing)) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"no runs in {missing} ") and out.count("\n") == 1 and "python -m wrnlib train" in out


def test_a_run_a_process_is_training_shows_as_locked(folder):
    with files.folder_lock(folder / "c-unstarted"):  # as fit holds it while it trains
        assert by_name(run_list.list_runs(folder))["c-unstarted"]["status"] == "locked"
    assert by_name(run_list.list_runs(folder))["c-unstarted"]["status"] == "unstarted"
    assert not any(r["name"].startswith(".") for r in run_list.list_runs(folder))  # its lock file is no run
