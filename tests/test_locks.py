"""One run folder, one writer: concurrent trainings and studies are refused at once, by real processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wrnlib import evaluation, files, runfolder
from wrnlib.model import param_count

REPO = Path(__file__).resolve().parents[1]
LOCKED = "is in use: another process is"


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("CIFAR10_DIR", None)
    return env


def _train(out: Path, name: str, width: int, epochs: int = 3) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "wrnlib", "train", "--data-dir", "sample", "--out-dir", str(out), "--name", name,
           "--depth", "10", "--width", str(width), "--epochs", str(epochs), "--batch-size", "64", "--val-size", "100",
           "--train-limit", "512", "--test-limit", "200", "--device", "cpu", "--no-progress", "--save-model"]
    return subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_until_locked(folder: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not files.is_locked(folder):
        assert proc.poll() is None, f"the first process ended before it locked {folder}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"{folder} was never locked"
        time.sleep(0.05)


def test_two_trainings_of_one_name_with_other_settings_one_trains_the_other_is_refused(tmp_path):
    first = _train(tmp_path, "same", width=1)
    _wait_until_locked(tmp_path / "same", first)
    second = _train(tmp_path, "same", width=2)
    out2, err2 = second.communicate(timeout=300)
    out1, err1 = first.communicate(timeout=300)
    assert first.returncode == 0, err1
    assert second.returncode == 2 and LOCKED in err2 and str(tmp_path / "same") in err2
    assert len(err2.strip().splitlines()) == 1  # one line: the folder, and that another process trains it
    # the folder holds the first run only, consistently: its config, its summary, its weights
    run_dir = tmp_path / "same"
    assert runfolder.load_config(run_dir).width == 1
    summary = json.loads((run_dir / runfolder.SUMMARY).read_text())
    assert summary["params"] == param_count(10, 1) and summary["epochs"] == 3
    assert evaluation.evaluate_run(run_dir, data_dir="sample", device="cpu")["test_acc"] == summary["test_acc"]
    assert not files.is_locked(run_dir)


def test_two_trainings_started_at_once_exactly_one_trains(tmp_path):
    procs = [_train(tmp_path, "race", width=1, epochs=4) for _ in range(2)]
    outcomes = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert sorted(code for code, _ in outcomes) == [0, 2], outcomes
    loser = next(err for code, err in outcomes if code == 2)
    assert LOCKED in loser, loser
    assert runfolder.status(tmp_path / "race") == "finished"
    assert len(runfolder.read_metrics(tmp_path / "race")) == 4


def test_a_killed_run_leaves_no_stale_lock(tmp_path):
    first = _train(tmp_path, "killed", width=1, epochs=50)
    _wait_until_locked(tmp_path / "killed", first)
    first.kill()
    first.wait(timeout=60)
    assert not files.is_locked(tmp_path / "killed")
    with files.folder_lock(tmp_path / "killed"):  # and the next process may take it
        assert files.is_locked(tmp_path / "killed")


def test_two_studies_at_once_the_second_is_refused(tmp_path):
    def study() -> subprocess.Popen:
        cmd = [sys.executable, "-m", "wrnlib", "study", "--profile", "quick", "--only", "01", "02",
               "--output-root", str(tmp_path / "executed"), "--results-root", str(tmp_path / "results"), "--no-stream"]
        return subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    first = study()
    _wait_until_locked(tmp_path / "results", first)
    second = study()
    out2, err2 = second.communicate(timeout=300)
    out1, err1 = first.communicate(timeout=600)
    assert first.returncode == 0, out1 + err1
    assert second.returncode == 2 and LOCKED in err2 and "running a study" in err2, err2
    assert not (tmp_path / "executed" / "quick" / "02_train.failed.ipynb").exists()
    assert runfolder.status(tmp_path / "results" / "runs" / "quick-wrn10-1") == "finished"


def test_a_sweep_refuses_an_ablation_folder_in_use(tmp_path):
    from wrnlib.study import sweep

    folder = tmp_path / "ablations" / "lr"
    with files.folder_lock(folder):
        with pytest.raises(files.FolderLockedError, match="running this ablation"):
            sweep.sweep_command(None, overrides={"ablation_dir": str(tmp_path / "ablations"), "ablation_name": "lr",
                                                 "schedules": ["cosine"], "seeds": [0]},
                                shared={"data_dir": "sample", "depth": 10, "width": 1.0, "epochs": 1,
                                        "val_size": 100, "train_limit": 256, "test_limit": 100, "batch_size": 64})
    assert not (folder / "runs").exists()  # refused before any run started
