"""What a new user meets first: evaluate never disagrees silently, the command line fits the sample, scratch runs
stay out of git's way, estimates never read as zero, and mistakes end in one line with the right cause."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from wrnlib import evaluation, runfolder
from wrnlib.cli import main
from wrnlib.config import TrainConfig
from wrnlib.data import sample_dir
from wrnlib.study import notebook
from wrnlib import fit
from wrnlib.progress import duration

REPO = Path(__file__).resolve().parents[1]


def tiny(tmp_path, name: str, **overrides) -> TrainConfig:
    base = dict(name=name, out_dir=str(tmp_path), data_dir="sample", depth=10, width=1, epochs=1, batch_size=64,
                val_size=100, train_limit=256, test_limit=0, warmup_epochs=0.0, progress=False, save_model=True)
    return TrainConfig(**(base | overrides))


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two finished runs of the same shape whose accuracies differ by far more than rounding."""
    root = tmp_path_factory.mktemp("runs")
    fit(tiny(root, "a", epochs=1, lr=0.01))
    fit(tiny(root, "b", epochs=3, lr=0.1, seed=1))
    a, b = (json.loads((root / n / runfolder.SUMMARY).read_text())["test_acc"] for n in "ab")
    assert abs(a - b) * 600 > 10, "the two runs must differ to test disagreement"
    return root


def test_weights_of_another_run_are_reported_and_never_recorded(two_runs, tmp_path, capsys):
    swapped = tmp_path / "a"
    shutil.copytree(two_runs / "a", swapped)
    shutil.copy(two_runs / "b" / runfolder.MODEL_FP16, swapped / runfolder.MODEL_FP16)
    before = (swapped / runfolder.SUMMARY).read_text()
    report = evaluation.evaluate_run(swapped, device="cpu")
    assert report["agrees"] is False and "do not belong to the run" in report["disagreement"]
    rc = main(["evaluate", str(swapped), "--device", "cpu", "--record"])
    captured = capsys.readouterr()
    assert rc == 2 and "Nothing was recorded" in captured.err and "do not belong" in captured.err
    assert (swapped / runfolder.SUMMARY).read_text() == before and not (swapped / runfolder.EVALUATION).exists()
    assert main(["evaluate", str(swapped), "--device", "cpu"]) == 1  # a plain evaluate says so too
    assert "warning:" in capsys.readouterr().err


def test_its_own_weights_agree_and_are_recorded(two_runs, tmp_path, capsys):
    own = tmp_path / "b"
    shutil.copytree(two_runs / "b", own)
    assert main(["evaluate", str(own), "--device", "cpu", "--record"]) == 0
    assert json.loads((own / runfolder.EVALUATION).read_text())["agrees"] is True


def test_other_test_images_are_named_as_the_cause(two_runs, tmp_path):
    moved = tmp_path / "a"
    shutil.copytree(two_runs / "a", moved)
    env = json.loads((moved / runfolder.ENV).read_text())
    env["test_data_checksum"] = "0" * 64  # as if the run had been scored on other images
    (moved / runfolder.ENV).write_text(json.dumps(env))
    shutil.copy(two_runs / "b" / runfolder.MODEL_FP16, moved / runfolder.MODEL_FP16)
    assert "test images differ" in evaluation.evaluate_run(moved, device="cpu")["disagreement"]


def test_a_quick_look_reads_only_the_test_file_and_is_not_recorded(two_runs, tmp_path, capsys):
    only_test = tmp_path / "cifar10"
    only_test.mkdir()
    shutil.copy(sample_dir() / "test.npz", only_test / "test.npz")  # no training files at all
    rc = main(["evaluate", str(two_runs / "b"), "--data-dir", str(only_test), "--test-limit", "100", "--no-tta",
               "--device", "cpu"])
    captured = capsys.readouterr()
    assert rc == 0 and "on 100 test images: roughly" in captured.err.splitlines()[0]
    report = json.loads(captured.out)
    assert report["test_images"] == 100 and report["test_acc_tta"] is None and "agrees" not in report
    rc = main(["evaluate", str(two_runs / "b"), "--data-dir", str(only_test), "--no-tta", "--record",
               "--device", "cpu"])
    assert rc == 2 and "drop --test-limit and --no-tta" in capsys.readouterr().err


def test_train_on_the_sample_fits_the_split_like_the_notebooks(tmp_path, capsys):
    assert main(["train", "--data-dir", "sample", "--out-dir", str(tmp_path), "--name", "s", "--depth", "10",
                 "--width", "1", "--epochs", "1", "--train-limit", "256", "--batch-size", "64", "--device", "cpu",
                 "--no-progress"]) == 0
    assert "val_size 5,000 -> 200" in capsys.readouterr().out
    assert runfolder.load_config(tmp_path / "s").val_size == 200
    # an explicit choice is kept, and its error names the fix
    assert main(["train", "--data-dir", "sample", "--out-dir", str(tmp_path), "--name", "t", "--val-size",
                 "5000", "--depth", "10", "--width", "1", "--epochs", "1", "--device", "cpu"]) == 2
    assert "val_size" in capsys.readouterr().err


def test_scratch_runs_default_to_a_git_ignored_folder():
    out_dir = TrainConfig.__dataclass_fields__["out_dir"].default
    assert not out_dir.startswith("results")
    ignored = subprocess.run(["git", "check-ignore", "-q", f"{out_dir}/my-run/config.json"], cwd=REPO)
    assert ignored.returncode == 0


@pytest.mark.parametrize("argv,needles", [
    (["train", "--name", "x" * 300], ("300 bytes", "shorter --name")),
    (["train", "--data-dir", "sample", "--out-dir", "FILE", "--depth", "10", "--width", "1", "--epochs", "1"],
     ("is a file, not a folder", "--out-dir")),
])
def test_first_stumbles_end_in_one_line_with_the_fix(tmp_path, capsys, argv, needles):
    (tmp_path / "FILE").write_text("not a folder")
    argv = [str(tmp_path / "FILE") if a == "FILE" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Errno" not in err
    assert all(n in err for n in needles), err


def test_random_bytes_are_a_corrupt_file_not_advice_to_unpickle(tmp_path, capsys):
    (tmp_path / "train_1.npz").write_bytes(bytes(range(256)) * 40)
    shutil.copy(sample_dir() / "test.npz", tmp_path / "test.npz")
    assert main(["train", "--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "r"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "train_1.npz" in err and "corrupt" in err and "allow_pickle" not in err and "unsafely" not in err


def test_estimates_never_read_as_zero():
    assert duration(0.02) == "under 1 s" and duration(7.9) == "8 s" and duration(600) == "10.0 min"
    assert "0 s" not in notebook.describe_estimate(0.001) and "1 s" in notebook.describe_estimate(0.001)
    assert notebook.describe_estimate(0.0).startswith("nothing to train")
    assert "36 s" in notebook.describe_estimate(0.6)
