"""Fault injection: bad input and faults on purpose, through the command line as a user meets them.

Every case checks four things: the exit code, one ``error:`` line that names the problem and the
fix, no traceback, and that nothing which existed before was changed (byte-identical files).
Runs use a WRN-10-1 on the shipped real sample, so each takes a second or two.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from wrnlib import TrainConfig, fit
from wrnlib import checkpoints, files, runfolder
from wrnlib.cli import main
from wrnlib.study import runner

TINY = ["--data-dir", "sample", "--depth", "10", "--width", "1", "--batch-size", "64", "--val-size", "200",
        "--train-limit", "256", "--test-limit", "200", "--no-progress"]


def tiny_config(out_dir: Path, name: str = "run", **overrides) -> TrainConfig:
    base = dict(name=name, out_dir=str(out_dir), data_dir="sample", depth=10, width=1, epochs=1, batch_size=64,
                val_size=200, train_limit=256, test_limit=200, progress=False, save_model=True)
    return TrainConfig(**(base | overrides))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished tiny run (model_fp16.pt and state.pt kept), trained once for the module."""
    out = tmp_path_factory.mktemp("finished")
    fit(tiny_config(out))
    return out / "run"


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory) -> Path:
    """A 3-epoch run stopped (Ctrl-C) after its first epoch: state.pt at epoch 1, no summary."""
    out = tmp_path_factory.mktemp("interrupted")

    def stop(row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(tiny_config(out, epochs=3, save_model=False), on_epoch_end=stop)
    return out / "run"


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def copy_run(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "runs" / run.name
    shutil.copytree(run, target)
    return target


def fails_cleanly(capsys, argv: list[str], *needles: str, code: int = 2) -> str:
    """Run the CLI in-process; check the exit code and a single error line holding every needle."""
    rc = main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert rc == code, captured
    assert "Traceback" not in captured.err + captured.out
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for needle in needles:
        assert needle.lower() in err.lower(), (needle, err)
    return err


def cli_subprocess(args: list[str], *, preexec=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wrnlib", *args], capture_output=True, text=True, timeout=timeout,
                          preexec_fn=preexec)


def one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle.lower() in errors[0].lower(), (needle, errors[0])


class Payload:
    """A pickle that runs code when loaded: what a crafted checkpoint would carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# --------------------------------------------------------------------------- checkpoints and models


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on the crafted file's protocol
@pytest.mark.parametrize("target", [runfolder.STATE, runfolder.MODEL_FP16])
def test_a_crafted_checkpoint_is_refused_and_runs_nothing(finished_run, tmp_path, capsys, target):
    run = copy_run(finished_run, tmp_path)
    marker = tmp_path / "code-ran"
    (run / runfolder.MODEL_FP16).unlink()  # so that evaluate reads the target
    with open(run / target, "wb") as f:
        pickle.dump({"model": Payload(marker)}, f)
    before = snapshot(tmp_path)
    fails_cleanly(capsys, ["evaluate", str(run), "--device", "cpu"], "refusing to load", target, "re-train")
    assert not marker.exists()
    assert snapshot(tmp_path) == before


def test_a_truncated_model_file_is_a_clear_error(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path)
    data = (run / runfolder.MODEL_FP16).read_bytes()
    (run / runfolder.MODEL_FP16).write_bytes(data[:len(data) // 3])
    before = snapshot(tmp_path)
    fails_cleanly(capsys, ["evaluate", str(run), "--device", "cpu"], "truncated or corrupt", runfolder.MODEL_FP16)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_damaged_resume_checkpoint_is_a_clear_error(interrupted_run, tmp_path, capsys, damage):
    run = copy_run(interrupted_run, tmp_path)
    data = (run / runfolder.STATE).read_bytes()
    (run / runfolder.STATE).write_bytes(data[:1000] if damage == "truncate" else os.urandom(5000))
    before = snapshot(tmp_path)
    fails_cleanly(capsys, ["train", "--resume", "--name", run.name, "--out-dir", str(run.parent)],
                  "truncated or corrupt", runfolder.STATE)
    assert snapshot(tmp_path) == before


def test_weights_of_another_model_are_a_clear_error(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path)
    checkpoints.save_fp16(torch.nn.Linear(3, 2), run / runfolder.MODEL_FP16)
    before = snapshot(tmp_path)
    fails_cleanly(capsys, ["evaluate", str(run), "--device", "cpu"], "do not fit WRN-10-1")
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------- run folders


def test_ctrl_c_in_a_command_says_how_many_epochs_are_done_and_the_command_that_goes_on(tmp_path):
    args = ["train", *TINY, "--epochs", "50", "--progress", "--out-dir", str(tmp_path), "--name", "stopped"]
    # SIGINT as a terminal delivers it, even where this test itself runs with it ignored (a background job)
    proc = subprocess.Popen([sys.executable, "-m", "wrnlib", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    metrics, deadline = tmp_path / "stopped" / runfolder.METRICS, time.monotonic() + 120
    while (not metrics.exists() or len(metrics.read_text().splitlines()) < 2) and time.monotonic() < deadline:
        time.sleep(0.02)  # the first epoch is written
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130
    said = re.search(r"\nInterrupted with (\d+) of 50 epochs done\. The checkpoint at the end of epoch (\d+) is intact "
                     r"in (.*); continue with `python -m wrnlib train --resume --name stopped --out-dir (.*)`\.\n", out)
    assert said and said[1] == said[2] != "0", out  # every epoch checkpointed (checkpoint_every 1)
    assert (said[3], said[4]) == (str(tmp_path / "stopped"), str(tmp_path))
    assert torch.load(tmp_path / "stopped" / runfolder.STATE, weights_only=True)["epoch"] == int(said[2])


def test_a_run_killed_before_its_first_checkpoint_restarts_under_the_same_name(tmp_path):
    args = ["train", *TINY, "--train-limit", "0", "--depth", "16", "--width", "2", "--epochs", "1",
            "--out-dir", str(tmp_path), "--name", "killed"]
    proc = subprocess.Popen([sys.executable, "-m", "wrnlib", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    config = tmp_path / "killed" / runfolder.CONFIG
    deadline = time.monotonic() + 120
    while not config.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert config.exists() and not (tmp_path / "killed" / runfolder.STATE).exists()
    again = cli_subprocess(["train", *TINY, "--epochs", "1", "--out-dir", str(tmp_path), "--name", "killed"])
    assert again.returncode == 0, again.stderr
    assert "stopped before its first checkpoint: starting it again" in again.stdout
    assert (tmp_path / "killed" / runfolder.SUMMARY).exists()


def test_a_full_disk_keeps_the_previous_checkpoint_and_leaves_no_temporary_file(interrupted_run, tmp_path):
    run = copy_run(interrupted_run, tmp_path)
    before = snapshot(tmp_path)
    limit = 64 * 1024  # metrics and config fit; the ~1 MB checkpoint does not

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = cli_subprocess(["train", "--resume", "--name", run.name, "--out-dir", str(run.parent)],
                          preexec=small_files)
    one_error_line(proc, "could not write", runfolder.STATE, "the previous file is intact", "free disk space")
    assert not list(run.glob("*.tmp"))
    assert snapshot(tmp_path) == before
    assert cli_subprocess(["train", "--resume", "--name", run.name, "--out-dir", str(run.parent)]).returncode == 0


def test_a_read_only_output_folder_is_a_clear_error(tmp_path):
    folder = tmp_path / "readonly"
    folder.mkdir()
    (folder / "kept.txt").write_text("existing")
    folder.chmod(0o555)
    # root ignores permissions: drop its capabilities for the child (util-linux setpriv)
    prefix = ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"] if os.geteuid() == 0 else []
    if prefix and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permissions cannot be enforced")
    try:
        proc = subprocess.run([*prefix, sys.executable, "-m", "wrnlib", "train", *TINY, "--epochs", "1",
                               "--out-dir", str(folder), "--name", "ro"], capture_output=True, text=True, timeout=300)
        one_error_line(proc, "permission denied", str(folder))
        assert sorted(p.name for p in folder.iterdir()) == ["kept.txt"]
    finally:
        folder.chmod(0o755)


def test_a_finished_run_is_never_overwritten(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path)
    before = snapshot(tmp_path)
    fails_cleanly(capsys, ["train", *TINY, "--epochs", "1", "--out-dir", str(run.parent), "--name", run.name],
                  "already exists", "--resume", "--name")
    assert snapshot(tmp_path) == before


def test_resuming_with_other_settings_is_refused(interrupted_run, tmp_path, capsys):
    run = copy_run(interrupted_run, tmp_path)
    before = snapshot(tmp_path)
    fails_cleanly(capsys, ["train", "--resume", "--name", run.name, "--out-dir", str(run.parent), "--lr", "0.3"],
                  "lr: saved 0.4 vs requested 0.3", "another --name")
    assert snapshot(tmp_path) == before


def test_resuming_a_run_that_does_not_exist(tmp_path, capsys):
    fails_cleanly(capsys, ["train", "--resume", "--name", "ghost", "--out-dir", str(tmp_path)],
                  "no run in", "without --resume")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_is_not_a_run_is_left_alone(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    fails_cleanly(capsys, ["train", *TINY, "--out-dir", str(tmp_path), "--name", "mine"], "not a run folder",
                  "--name")
    assert snapshot(tmp_path) == before


def test_evaluate_on_a_folder_that_is_not_a_run(tmp_path, capsys):
    fails_cleanly(capsys, ["evaluate", str(tmp_path)], "not a run folder", "results/runs/")


# --------------------------------------------------------------------------- bad values


@pytest.mark.parametrize("value", ["inf", "nan", "-1"])
def test_a_non_finite_or_negative_learning_rate_is_refused_before_anything_runs(tmp_path, capsys, value):
    fails_cleanly(capsys, ["train", *TINY, "--out-dir", str(tmp_path), "--name", "x", "--lr", value],
                  "lr must be a finite number")
    assert list(tmp_path.iterdir()) == []


def test_weights_that_blow_up_stop_the_run(tmp_path, capsys):
    fails_cleanly(capsys, ["train", *TINY, "--epochs", "2", "--out-dir", str(tmp_path), "--name", "x",
                           "--lr", "1e30", "--warmup-epochs", "0"],
                  "became NaN or infinite", "epoch 1", "lower --lr")
    assert not (tmp_path / "x" / runfolder.SUMMARY).exists()


@pytest.mark.parametrize("field,value,needle", [
    ("tta", "false", "'tta' must be true or false"),
    ("save_model", "false", "'save_model' must be true or false"),
    ("name", 5, "'name' must be a string"),
    ("step_milestones", 5, "'step_milestones' must be a list of numbers"),
    ("epochs", 2.5, "'epochs' must be an integer"),
    ("bogus", 1, "unknown TrainConfig field"),
])
def test_config_file_fields_of_the_wrong_type_are_named(tmp_path, capsys, field, value, needle):
    path = tmp_path / "c.json"
    path.write_text(__import__("json").dumps({field: value}))
    err = fails_cleanly(capsys, ["train", "--config", str(path), *TINY, "--out-dir", str(tmp_path)], needle)
    assert str(path) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json"]


def test_a_malformed_config_file_names_the_file_and_the_line(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text('{\n  "epochs": 3,\n  "lr": 0.1,,\n}\n')
    fails_cleanly(capsys, ["train", "--config", str(path)], str(path), "line 3", "fix that line")


@pytest.mark.parametrize("argv,needles", [
    (["train", "--device", "foo"], ("unknown device 'foo'", "cpu")),
    (["train", "--device", "cuda:0"], ("no CUDA GPU is visible", "--device cpu")),
    (["train", "--width", "-1"], ("width", "> 0")),
    (["train", "--depth", "20"], ("6n + 4",)),
    (["train", "--schedule", "exp"], ("invalid choice: 'exp'", "cosine", "--help")),
    (["train", "--batch-size", "5000"], ("--batch-size 5000 is larger", "lower it")),
    (["train", "--train-limit", "100000"], ("--train-limit 100000 exceeds", "--val-size")),
    (["train", "--epochs", "0"], ("epochs must be an integer >= 1",)),
])
def test_bad_training_values_get_one_line_and_leave_no_folder(tmp_path, capsys, argv, needles):
    if "cuda" in " ".join(argv) and torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    fails_cleanly(capsys, [*argv[:1], *TINY, "--out-dir", str(tmp_path), "--name", "x", *argv[1:]], *needles)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv,needles", [
    (["params", "--batch-size", "-5"], ("--batch-size", "integer >= 1")),
    (["params", "--depth", "1000000000"], ("parameters", "smaller depth or width")),
    (["params", "--width", "1e6"], ("parameters", "smaller depth or width")),
    (["evaluate", "x", "--batch-size", "0"], ("--batch-size", "integer >= 1")),
    (["bench", "--modes", "fp8", "--device", "cpu"], ("unknown bench mode 'fp8'", "bf16")),
    (["study", "--profile", "nope"], ("unknown study profile 'nope'", "quick")),
])
def test_other_commands_reject_bad_values_at_once(capsys, argv, needles):
    started = time.perf_counter()
    fails_cleanly(capsys, argv, *needles)
    assert time.perf_counter() - started < 10  # refused from the estimate, nothing allocated


# --------------------------------------------------------------------------- data


def test_missing_data_points_to_the_fix_that_the_command_has(finished_run, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CIFAR10_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    run = copy_run(finished_run, tmp_path)
    files.write_json(run / runfolder.CONFIG, runfolder.load_config(run).to_dict() | {"data_dir": None})
    err = fails_cleanly(capsys, ["evaluate", str(run)], "No CIFAR-10 found", "--download")
    assert "--download" in err  # and evaluate has that flag:
    assert main(["evaluate", "--help"]) == 0 and "--download" in capsys.readouterr().out


def test_a_truncated_data_file_is_named(tmp_path, capsys):
    from wrnlib.data import sample_dir

    data = tmp_path / "cifar"
    shutil.copytree(sample_dir(), data)
    (data / "MANIFEST.json").unlink()
    (data / "test.npz").write_bytes((data / "test.npz").read_bytes()[:5000])
    before = snapshot(tmp_path)
    fails_cleanly(capsys, ["train", *TINY, "--data-dir", str(data), "--out-dir", str(tmp_path / "o"), "--name", "x"],
                  "test.npz", "truncated or corrupt", "re-copy")
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------- the study


def test_a_failing_study_keeps_the_last_good_executed_notebook(tmp_path):
    import json

    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    notebooks, profiles = tmp_path / "notebooks", tmp_path / "profiles"
    notebooks.mkdir()
    profiles.mkdir()
    nb = new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    cell = new_code_cell("fail = False")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [new_markdown_cell("# t"), cell, new_code_cell("assert not fail, 'asked to fail'")]
    nbformat.write(nb, str(notebooks / "01_t.ipynb"))
    for name, fail in (("good", False), ("bad", True)):
        (profiles / f"{name}.json").write_text(json.dumps({"notebooks": {"01": {"fail": fail}}}))
    out = tmp_path / "out"
    kwargs = dict(output_root=out, notebooks_dir=notebooks, profiles_dir=profiles, progress_bar=False)
    assert runner.run_study("good", **kwargs) == 0
    (out / "bad").mkdir()
    shutil.copy(out / "good" / "01_t.ipynb", out / "bad" / "01_t.ipynb")  # the last good copy of profile "bad"
    before = (out / "bad" / "01_t.ipynb").read_bytes()
    log = __import__("io").StringIO()
    assert runner.run_study("bad", stream=log, **kwargs) == 1
    assert (out / "bad" / "01_t.ipynb").read_bytes() == before
    assert "asked to fail" in (out / "bad" / "01_t.failed.ipynb").read_text()
    assert "01_t.failed.ipynb" in log.getvalue()
